"""The `vtpipe` command line. Orchestration only: every command builds a config, plans a stage, runs it."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from pathlib import Path

import click

from pipeline import __version__, config as config_mod
from pipeline.executors import LocalExecutor, make_executor
from pipeline.runner import run_lock, run_pipeline, run_stage, slice_tasks
from pipeline.status import format_status
from stages.contract.errors import VtpipeError
from stages.contract.layout import Layout

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 110}


def _terminate_cleanly(signum, frame) -> None:
    """SIGTERM (a scheduler's cancel, `kill`) unwinds like Ctrl-C: temporaries are removed, no manifest is
    written for the interrupted task, finished tasks stay finished."""
    raise KeyboardInterrupt(f"signal {signum}")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


def _fail(e: Exception) -> None:
    click.secho(f"error: {e}", fg="red", err=True)
    sys.exit(2)


def _shard_defaults(shard_index: int | None, num_shards: int | None) -> tuple[int | None, int | None]:
    """SLURM array variables are used when --shard-index/--num-shards are not given."""
    if shard_index is None and "SLURM_ARRAY_TASK_ID" in os.environ and num_shards is None:
        if "SLURM_ARRAY_TASK_COUNT" in os.environ:
            return int(os.environ["SLURM_ARRAY_TASK_ID"]), int(os.environ["SLURM_ARRAY_TASK_COUNT"])
    if (shard_index is None) != (num_shards is None):
        raise VtpipeError("--shard-index and --num-shards go together")
    return shard_index, num_shards


def _run_one_stage(stage: str, cfg: dict, layout: Layout, lock_dir: Path, overwrite: bool,
                   shard_index: int | None = None, num_shards: int | None = None):
    from pipeline.runner import plan_stage

    executor = make_executor(cfg)
    shard_index, num_shards = _shard_defaults(shard_index, num_shards)
    try:
        with run_lock(lock_dir, shard_index):
            tasks = slice_tasks(plan_stage(stage, cfg, layout), shard_index, num_shards)
            rep = run_stage(stage, tasks, executor, overwrite=overwrite, echo=click.echo,
                            clean_temporaries=shard_index is None)
    finally:
        executor.close()
    if not rep.complete:
        sys.exit(1)
    return rep


@click.group(context_settings=CONTEXT)
@click.version_option(version=__version__, prog_name="vtpipe", message="%(prog)s %(version)s")
@click.option("-v", "--verbose", is_flag=True, help="Log progress details (INFO level).")
def main(verbose: bool) -> None:
    """vtpipe: video-text feature extraction and retrieval evaluation, resumable at every stage.

    \b
    Stages:  compress -> extract -> concat -> index -> evaluate
    Start:   vtpipe demo   (the embedded sample, every stage; then: vtpipe run PIPELINE.yaml)
    Models:  vtpipe models
    Every command skips work that is already complete; run it again after a crash to finish.
    """
    _setup_logging(verbose)
    signal.signal(signal.SIGTERM, _terminate_cleanly)


class PipelineFile(click.ParamType):
    """A pipeline YAML file, or the name of a shipped pipeline (configs/pipelines/NAME.yaml, also in a wheel),
    or of a paper preset (configs/presets/NAME.yaml: `vtpipe presets`)."""

    name = "PIPELINE"

    def convert(self, value, param, ctx):
        if Path(value).is_file():
            return value
        if not value.endswith((".yaml", ".yml")) and "/" not in value and os.sep not in value:
            from stages.contract.assets import presets_dir

            try:
                folder = presets_dir("pipelines")
            except VtpipeError as e:
                self.fail(str(e), param, ctx)
            if (folder / f"{value}.yaml").is_file():
                return str(folder / f"{value}.yaml")
            from pipeline.presets import list_presets

            papers = sorted(p.name for p in list_presets())
            if value in papers:
                return config_mod.PAPER_PRESET_PREFIX + value
            self.fail(f"{value!r} is neither a file, a shipped pipeline nor a paper preset; pipelines: "
                      f"{', '.join(sorted(p.stem for p in folder.glob('*.yaml')))} (in {folder}); paper presets "
                      f"(`vtpipe presets`): {', '.join(papers)}", param, ctx)
        self.fail(f"pipeline file {value!r} does not exist", param, ctx)


@main.command(context_settings=CONTEXT)
@click.argument("pipeline_yaml", type=PipelineFile())
@click.option("--output", "-o", type=click.Path(file_okay=False), help="Run directory [default: outputs/<name>].")
@click.option("--executor", type=click.Choice(["local", "dask", "slurm", "pbs"]), help="Where tasks run.")
@click.option("--workers", type=int, help="Parallel workers for CPU stages / dask workers.")
@click.option("--scheduler", help="Address of a running dask scheduler (tcp://host:8786).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override a config value, e.g. --set extract.shards=4 --set model.name=clip-vit-b-32.")
@click.option("--overwrite", is_flag=True, help="Redo tasks whose config or inputs changed.")
@click.option("--stage", "only", multiple=True, type=click.Choice(["compress", "extract", "concat", "index", "evaluate"]),
              help="Run only this stage of the pipeline (repeatable); the others' outputs are read as inputs.")
@click.option("--shard-index", type=int,
              help="Array-job mode: run only this slice of the stage's tasks [default: $SLURM_ARRAY_TASK_ID].")
@click.option("--num-shards", type=int, help="Array-job mode: number of slices [default: $SLURM_ARRAY_TASK_COUNT].")
def run(pipeline_yaml, output, executor, workers, scheduler, sets, overwrite, only, shard_index, num_shards):
    """Run every stage of PIPELINE_YAML into one run directory. PIPELINE_YAML is a file, the name of a
    shipped pipeline (`vtpipe run msrvtt-1ka --set input.videos=...`; configs/pipelines/), or the name of a
    paper preset (`vtpipe run clip4clip-msrvtt --set input.videos=... --set dataset.root=...`; `vtpipe presets`).

    A second run of a finished pipeline does no work. A run stopped by Ctrl-C, kill -9 or a crash finishes
    when the same command is run again. Exit status 0 when every stage finished (failed videos are recorded,
    not fatal), 1 when a task failed, 2 for a config error.
    """
    try:
        over = config_mod.parse_overrides(sets)
        ex = over.setdefault("executor", {})
        if executor:
            ex["kind"] = executor
        if workers:
            ex["workers"] = workers
        if scheduler:
            ex["scheduler"] = scheduler
        cfg = config_mod.load_pipeline(pipeline_yaml, overrides=over)
        run_dir = Path(output) if output else Path("outputs") / cfg["name"]
        shard_index, num_shards = _shard_defaults(shard_index, num_shards)
        click.echo(f"vtpipe run {cfg['name']}: stages {' -> '.join(cfg['stages'])}; output {run_dir}")
        ex_obj = make_executor(cfg, log_dir=run_dir / "logs")
        try:
            reports = run_pipeline(cfg, run_dir, ex_obj, overwrite=overwrite, shard_index=shard_index,
                                   num_shards=num_shards, echo=click.echo, only=list(only) or None)
        finally:
            ex_obj.close()
    except VtpipeError as e:
        _fail(e)
    if not all(r.complete for r in reports):
        sys.exit(1)
    if all(r.ran == 0 for r in reports):
        click.echo("every stage is already complete: nothing to do")
    _print_results(run_dir / "eval")


def _print_results(eval_root: Path) -> None:
    from stages.retrieval.report_table import collect_results, write_comparison

    rows = collect_results([eval_root]) if eval_root.is_dir() else []
    if rows:
        table = write_comparison(rows, eval_root / "summary.md", eval_root / "summary.csv")
        click.echo("")
        click.echo(table)
        _echo_warnings(rows)


def _echo_warnings(rows: list[dict]) -> None:
    """Every warning of the results (tied ground truths, missing videos), on stderr."""
    for m in rows:
        for w in m.get("warnings") or []:
            click.echo(f"WARNING ({m.get('model', '')} {m.get('task', '')}): {w}", err=True)


@main.command(context_settings=CONTEXT)
@click.argument("results", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--output", "-o", type=click.Path(dir_okay=False),
              help="Write the table to OUTPUT (markdown) and OUTPUT with .csv [default: print only].")
def table(results, output):
    """Paper-style comparison table of retrieval results across models and re-rankers.

    RESULTS are evaluate output folders (searched for metrics.json) or metrics.json files. The caption
    lists the conventions of every number (ties and their reference, median, v2t gallery, re-ranker and
    bank) and every warning.

    \b
    vtpipe table outputs/run1/eval outputs/sknorm-eval -o comparison.md
    """
    from stages.retrieval.report_table import collect_results, comparison_table, write_comparison

    rows = collect_results(results)
    if not rows:
        _fail(VtpipeError(f"no t2v / v2t metrics.json under {', '.join(results)}"))
    if output:
        md = write_comparison(rows, Path(output), Path(output).with_suffix(".csv"))
    else:
        md, _ = comparison_table(rows)
    click.echo(md)
    _echo_warnings(rows)


@main.command(context_settings=CONTEXT)
@click.argument("input_path", metavar="INPUT", type=click.Path(exists=True))
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False), help="Folder for <id>.mp4 outputs.")
@click.option("--fps", default=3.0, show_default=True, help="Output frame rate.")
@click.option("--size", default=224, show_default=True, help="Short side in pixels (long side keeps the aspect, even).")
@click.option("--crop", type=click.Choice(["none", "center", "square"]), default="none", show_default=True,
              help="none: keep aspect; center: short side then centre crop SIZE x SIZE; square: VT-TWINS "
                   "centre square of side min(w,h) scaled to SIZE x SIZE.")
@click.option("--aspect", type=click.Choice(["stored", "display"]), default="stored", show_default=True,
              help="Anamorphic sources (pixel aspect != 1): stored: scale the stored pixels and keep the pixel "
                   "aspect ratio (what CLIP4Clip's script and every reference reader see); display: resize to "
                   "the displayed shape with square pixels.")
@click.option("--workers", default=2, show_default=True, help="ffmpeg processes at a time.")
@click.option("--ext", "extensions", multiple=True, metavar="EXT",
              help="Video file extensions to take from a folder (repeatable) [default: .mp4 .avi .mkv .webm .mov .m4v].")
@click.option("--overwrite", is_flag=True, help="Redo videos compressed with other settings.")
def compress(input_path, output, fps, size, crop, aspect, workers, extensions, overwrite):
    """Re-encode every video under INPUT (a folder, searched recursively, or a CSV of paths).

    Video ids are paths relative to INPUT without the extension, so equal file names in different folders
    never collide: INPUT/a/x.mp4 -> OUTPUT/a/x.mp4. Failed videos are listed with their reason.
    """
    try:
        inp: dict = {"videos": str(Path(input_path).resolve())}
        if extensions:
            inp["extensions"] = [e if e.startswith(".") else f".{e}" for e in extensions]
        cfg = config_mod.resolve({"input": inp,
                                  "compress": {"fps": float(fps), "size": size, "crop": crop, "aspect": aspect,
                                               "workers": workers}})
        _run_one_stage("compress", cfg, Layout.custom(output, compress_dir=output), Path(output), overwrite)
    except VtpipeError as e:
        _fail(e)


@main.command(context_settings=CONTEXT)
@click.option("--model", "-m", required=True, help="A registered model name (see `vtpipe models`).")
@click.option("--weights", "-w", type=click.Path(exists=True), help="Checkpoint file (the model's first file).")
@click.option("--file", "files", multiple=True, metavar="NAME=PATH",
              help="Another file the model needs, by the name `vtpipe models` lists (e.g. --file vocab=vocab.txt "
                   "for locvtp, --file dict=s3d_dict.npy for s3d-howto100m).")
@click.option("--videos", required=True, type=click.Path(exists=True), help="Folder of videos or CSV of paths.")
@click.option("--captions", type=click.Path(exists=True, dir_okay=False), help="Caption file to encode too.")
@click.option("--caption-format", default="msrvtt-jsfusion", show_default=True, help="Format of --captions.")
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False), help="Folder for shard-*.h5.")
@click.option("--shards", default=1, show_default=True, help="Number of shards (tasks) to split the videos into.")
@click.option("--shard-index", type=int, help="Run only this shard (array jobs; default $SLURM_ARRAY_TASK_ID).")
@click.option("--num-shards", type=int, help="Total shards when using --shard-index.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--batch-size", default=64, show_default=True, help="Units (frames or clips) per forward pass.")
@click.option("--decode-workers", default=1, show_default=True, help="Decoding processes feeding the model.")
@click.option("--decode-device", type=click.Choice(["cpu", "gpu"]), default="cpu", show_default=True,
              help="gpu: decord's NVDEC decoding where decord was built with CUDA (else the CPU, with a warning).")
@click.option("--protocol", help="One of the model's protocols (reader + preprocessing + precision of a "
                                 "reference script; `vtpipe models` lists them) [default: the model's default].")
@click.option("--amp", type=click.Choice(["auto", "fp32", "fp16", "bf16"]), default="auto", show_default=True,
              help="Precision on CUDA: auto = what the protocol's reference ran; fp16/bf16 autocast are opt-in "
                   "(recorded in the store). The CPU always runs fp32.")
@click.option("--allow-random", is_flag=True, help="Without --weights, use random weights (plumbing checks only).")
@click.option("--allow-torchscript", is_flag=True,
              help="Load a TorchScript archive (OpenAI's CLIP .pt files); loading one runs the code inside it.")
@click.option("--allow-global", "allow_globals", multiple=True, metavar="MODULE.NAME",
              help="Let the checkpoint's pickle hold objects of this class besides tensors (e.g. a trainer's "
                   "argparse.Namespace); repeatable; only for files you trust. Without it such files are refused "
                   "with the types named.")
@click.option("--overwrite", is_flag=True, help="Redo shards made with another config.")
def extract(model, weights, files, videos, captions, caption_format, output, shards, shard_index, num_shards, device,
            batch_size, decode_workers, decode_device, protocol, amp, allow_random, allow_torchscript, allow_globals,
            overwrite):
    """Extract per-frame (or per-clip) and pooled video features, and caption features, into sharded HDF5.

    Each shard is one task writing OUTPUT/shard-NNNNN.h5 (captions: OUTPUT/text.h5); merge them with
    `vtpipe concat OUTPUT -o STORE.h5`. On a cluster, run one shard per array task with --shard-index.
    """
    try:
        weight_files = _weight_files(model, weights, files)
        shard_index, num_shards = _shard_defaults(shard_index, num_shards)
        if num_shards:
            shards = num_shards  # array mode: one shard per array task
        cfg = config_mod.resolve({
            "stages": ["extract"],
            "input": {"videos": str(Path(videos).resolve())},
            "dataset": {"captions": str(Path(captions).resolve()) if captions else None, "format": caption_format},
            "model": {"name": model, "weights": weight_files, "allow_random": allow_random,
                      "allow_torchscript": allow_torchscript, "protocol": protocol,
                      "allow_globals": list(allow_globals)},
            "extract": {"shards": shards, "device": device, "batch_size": batch_size, "decode_workers": decode_workers,
                        "decode_device": decode_device, "amp": amp},
        })
        _run_one_stage("extract", cfg, Layout.custom(output, extract_dir=output), Path(output), overwrite,
                       shard_index, num_shards)
    except VtpipeError as e:
        _fail(e)


def _weight_files(model: str, weights: str | None, files: tuple[str, ...]):
    """--weights and --file NAME=PATH -> the model.weights config value (a path, or {file name: path})."""
    from stages.backbones.registry import model_config

    if not files:
        return str(Path(weights).resolve()) if weights else None
    names = list(model_config(model).files)
    out: dict[str, str] = {}
    if weights:
        out[names[0]] = str(Path(weights).resolve())
    for item in files:
        name, sep, path = item.partition("=")
        if not sep or not path:
            raise VtpipeError(f"--file takes NAME=PATH, got {item!r}; {model} takes: {names}")
        if not Path(path).exists():
            raise VtpipeError(f"--file {name}: {path} does not exist")
        out[name] = str(Path(path).resolve())
    return out


@main.command(context_settings=CONTEXT)
@click.argument("shards_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False), help="The merged STORE.h5.")
@click.option("--layout", type=click.Choice(["flat", "locvtp"]), default="flat", show_default=True,
              help="locvtp: also write STORE.locvtp.h5 with one group per video (<key>/c3d_features) and "
                   "STORE.locvtp.failed.csv listing the videos that failed (they have no group).")
@click.option("--locvtp-ids", type=click.Choice(["stem", "path"]), default="stem", show_default=True,
              help="Group names in the LocVTP file: stem (train/v_x -> v_x, what LocVTP's grounding code looks "
                   "up; two videos with one stem are refused) or path (the whole id; '/' makes nested groups).")
def concat(shards_dir, output, layout, locvtp_ids):
    """Merge the shards of SHARDS_DIR (found from its manifests) into one feature store."""
    from pipeline.runner import run_stage
    from stages import concat as concat_stage

    try:
        out = Path(output)
        cfg = config_mod.resolve({"stages": ["concat"], "concat": {"layout": layout, "locvtp_ids": locvtp_ids}})
        lay = Layout.custom(out.parent, features=out, concat_dir=out.parent)
        with run_lock(out.parent):
            tasks = concat_stage.plan(cfg, lay, extract_dir=Path(shards_dir))
            rep = run_stage("concat", tasks, LocalExecutor(1), overwrite=True, echo=click.echo)
        if not rep.complete:
            sys.exit(1)
    except VtpipeError as e:
        _fail(e)


@main.command(context_settings=CONTEXT)
@click.option("--features", required=True, type=click.Path(exists=True, dir_okay=False), help="A video STORE.h5.")
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False), help="Folder for the index.")
@click.option("--index", "index_kind", default="auto", show_default=True,
              help="auto (candidates trialled on a sample of the data, within --max-memory) or any FAISS factory "
                   "string, e.g. IVF1024,Flat.")
@click.option("--max-memory", default="4G", show_default=True, help="Memory budget for the index.")
@click.option("--metric", type=click.Choice(["ip", "l2"]), default="ip", show_default=True,
              help="ip: inner product on L2-normalised vectors (cosine).")
@click.option("--level", type=click.Choice(["video", "unit"]), default="video", show_default=True,
              help="video: one vector per video; unit: one per frame/clip, with a (video, time) id map.")
@click.option("--target-recall", type=float, default=0.95, show_default=True,
              help="recall@10 vs exact search that the search parameters (nprobe, efSearch) are tuned for.")
@click.option("--build-budget", type=float, default=None,
              help="auto only: seconds a candidate's predicted build may take (default: no limit).")
@click.option("--tune-queries", type=click.Path(exists=True, dir_okay=False),
              help="Caption store of the same model to tune and measure with (text-to-video queries); "
                   "default: the gallery's own vectors.")
def index(features, output, index_kind, max_memory, metric, level, target_recall, build_budget, tune_queries):
    """Build a FAISS index over a feature store; writes video.faiss, ids.json and index_infos.json."""
    from pipeline.runner import run_stage
    from stages import index as index_stage

    try:
        cfg = config_mod.resolve({"stages": ["index"], "index": {
            "index": index_kind, "max_memory": max_memory, "metric": metric, "level": level,
            "target_recall": float(target_recall), "build_budget": build_budget,
            "tune_queries": str(Path(tune_queries).resolve()) if tune_queries else None}})
        lay = Layout.custom(output, index_dir=output)
        with run_lock(Path(output)):
            tasks = index_stage.plan(cfg, lay, features=Path(features))
            rep = run_stage("index", tasks, LocalExecutor(1), overwrite=True, echo=click.echo)
        if not rep.complete:
            sys.exit(1)
        click.echo(json.dumps(json.loads((Path(output) / "index_infos.json").read_text()), indent=2))
    except VtpipeError as e:
        _fail(e)


@main.command(context_settings=CONTEXT)
@click.option("--index", "index_dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--text", help="A caption to search for (encoded with the index's model).")
@click.option("--video", help="A video id whose pooled vector is the query.")
@click.option("-k", default=10, show_default=True)
@click.option("--features", type=click.Path(exists=True, dir_okay=False),
              help="Store for --video (default: the one the index was built from).")
@click.option("--weights", type=click.Path(exists=True), help="Checkpoint for the text encoder.")
@click.option("--allow-random", is_flag=True, help="Allow random weights (plumbing checks only).")
def search(index_dir, text, video, k, features, weights, allow_random):
    """Query an index with a caption or a video id and print the top-k videos with scores."""
    import numpy as np

    from stages.backbones.registry import load_model
    from stages.ann.io import open_index
    from stages.index import video_queries

    try:
        if bool(text) == bool(video):
            raise VtpipeError("give exactly one of --text or --video")
        ix = open_index(index_dir, device="auto")
        if text:
            model = load_model(ix.infos["model"], weights=weights, allow_random=allow_random)
            q = model.encode_text([text]).pooled.astype(np.float32)
        else:
            from stages.index import infos_store_path

            q = video_queries(index_dir, features or infos_store_path(index_dir, ix.infos), [video])
        scores, ids = ix.search(q, k, model=ix.infos["model"])
        for rank, (s, hit) in enumerate(zip(scores[0], ids[0]), 1):
            if hit is None:
                break
            label = hit if isinstance(hit, str) else f"{hit[0]} @ {hit[1]:.2f}s"
            click.echo(f"{rank:>3}  {s:8.4f}  {label}")
    except (VtpipeError, KeyError) as e:
        _fail(e)


@main.command(context_settings=CONTEXT)
@click.option("--task", "tasks", multiple=True, required=True,
              type=click.Choice(["t2v", "v2t", "zeroshot", "linear-probe", "crosstask"]), help="Evaluation task; repeatable.")
@click.option("--features", required=True, type=click.Path(exists=True, dir_okay=False), help="Video STORE.h5.")
@click.option("--text-features", type=click.Path(exists=True, dir_okay=False),
              help="Caption store (t2v/v2t) [default: STORE.text.h5 beside --features].")
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False), help="Folder for the results.")
@click.option("--rerank", type=click.Choice(["none", "sk-norm", "dsl", "qb-norm"]), default="none", show_default=True,
              help="Inference-time re-ranking; sk-norm and qb-norm need --bank-text-features (t2v) and "
                   "--bank-video-features (v2t).")
@click.option("--bank-text-features", type=click.Path(exists=True, dir_okay=False),
              help="Training-caption store of the same model: the query bank for sk-norm / qb-norm (t2v).")
@click.option("--bank-video-features", type=click.Path(exists=True, dir_okay=False),
              help="Training-video store of the same model: the bank for sk-norm / qb-norm v2t (UCoFiA, QB-Norm).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Re-ranker and dataset parameters, e.g. --set evaluate.sk_norm.scale=100 "
                   "--set dataset.preset=ucf101 --set dataset.root=/data/ucf101.")
@click.option("--ties", type=click.Choice(["optimistic", "pessimistic", "average", "clip4clip", "collaborative-experts"]),
              default="optimistic", show_default=True,
              help="Tie convention. optimistic: rank = number of strictly higher scores; pessimistic: higher or "
                   "equal; average: their mean; clip4clip: CLIP4Clip metrics.py (compute_metrics / "
                   "tensor_text_to_video_metrics); collaborative-experts: CE / QB-Norm metric.py (averaged ties, "
                   "R@1 = rank exactly 0, v2t ties with the video's own captions count).")
@click.option("--median", type=click.Choice(["auto", "numpy", "torch"]), default="auto", show_default=True,
              help="auto: the convention's own; numpy: MdR averages the two middle ranks; torch: the lower middle.")
@click.option("--missing", type=click.Choice(["drop", "miss"]), default="drop", show_default=True,
              help="Captions whose video has no features (missing or failed): drop them (warned), or count "
                   "each as a miss (rank = gallery size).")
@click.option("--candidates", type=click.Choice(["exact", "faiss"]), default="exact", show_default=True,
              help="faiss: t2v ranks from the top-k of --index (exact for R@K up to -k; MnR becomes a lower bound).")
@click.option("--index", "index_dir", type=click.Path(exists=True, file_okay=False), help="Index folder for --candidates faiss.")
@click.option("-k", "candidates_k", default=100, show_default=True, help="Candidates per query with --candidates faiss.")
@click.option("--model", "model_name", help="Model for zero-shot prompts [default: the store's model].")
@click.option("--weights", type=click.Path(exists=True),
              help="Checkpoint of the model (zero-shot prompts; DRL TI/WTI retrieval: temporal module and weight heads).")
@click.option("--similarity", type=click.Choice(["auto", "dp", "ti", "wti", "ucofia"]), default="auto", show_default=True,
              help="auto: the model's own (dot product, DRL's token-wise TI/WTI, or UCoFiA's three levels with SK-norm per level; needs --weights).")
def evaluate(tasks, features, text_features, output, rerank, bank_text_features, bank_video_features, sets, ties,
             median, missing, candidates, index_dir, candidates_k, model_name, weights, similarity):
    """Retrieval (R@1/5/10/50, MdR, MnR) and recognition metrics from feature stores.

    \b
    vtpipe evaluate --task t2v --task v2t --features clip.h5 -o eval/
    vtpipe evaluate --task t2v --features clip.h5 --rerank sk-norm --bank-text-features clip.bank.text.h5 -o eval/
    vtpipe evaluate --task linear-probe --features s3d.h5 --set dataset.preset=ucf101 --set dataset.root=/data/ucf -o eval/
    """
    from pipeline.runner import run_stage
    from stages import evaluate as eval_stage
    from stages.features.store import VideoStore

    try:
        feats = Path(features).resolve()
        if model_name is None:
            with VideoStore(feats) as s:
                model_name = s.model
        over = config_mod.parse_overrides(sets)
        user = {"stages": ["evaluate"],
                "model": {"name": model_name, "weights": str(Path(weights).resolve()) if weights else None},
                "evaluate": {"tasks": list(tasks), "rerank": rerank, "ties": ties, "median": median, "missing": missing,
                             "candidates": candidates, "candidates_k": candidates_k, "similarity": similarity}}
        if candidates == "faiss" and not index_dir:
            raise VtpipeError("--candidates faiss needs --index (a folder made by `vtpipe index`)")
        cfg = config_mod.resolve(user, base_dir=Path.cwd(), overrides=over)
        lay = Layout.custom(output, eval_dir=output, features=feats, index_dir=index_dir)
        with run_lock(Path(output)):
            plan = eval_stage.plan(cfg, lay, features=feats,
                                   text_features=Path(text_features).resolve() if text_features else None,
                                   bank_features=Path(bank_text_features).resolve() if bank_text_features else None,
                                   bank_video_features=(Path(bank_video_features).resolve()
                                                        if bank_video_features else None))
            rep = run_stage("evaluate", plan, LocalExecutor(1), overwrite=True, echo=click.echo)
        if not rep.complete:
            sys.exit(1)
        rows = [json.loads((Path(output) / t / "metrics.json").read_text()) for t in tasks]
        retrieval = [r for r in rows if r.get("task") in ("t2v", "v2t")]
        if retrieval:
            click.echo(eval_stage.metrics_table(retrieval, ks=cfg["evaluate"]["ks"]))
            _echo_warnings(retrieval)
        for r in rows:
            if r.get("task") in ("zeroshot", "linear-probe"):
                click.echo(f"{r['task']}: top-1 {r.get('top1', float('nan')):.1f}")
    except VtpipeError as e:
        _fail(e)


@main.command(context_settings=CONTEXT)
@click.argument("pipeline_yaml", type=PipelineFile())
@click.option("--output", "-o", type=click.Path(file_okay=False), help="Run directory [default: outputs/<name>].")
@click.option("--scripts", type=click.Path(file_okay=False), help="Where to write the scripts [default: RUN/slurm].")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Config override, passed on to every job.")
@click.option("--check", is_flag=True, help="Print what each stage's job asks for (array size, partition, cores, "
                                            "memory, GPUs, time, environment) and write nothing.")
def slurm(pipeline_yaml, output, scripts, sets, check):
    """Write SLURM array-job scripts, one per stage, and submit.sh that chains them.

    \b
    Array task i of a stage runs slice i of that stage's plan (`vtpipe run ... --stage S --shard-index i`);
    the next stage starts when every slice succeeded (afterok). A failed or killed slice is fixed by
    submitting the same script again: finished tasks are skipped. Cluster settings come from the
    `cluster:` section of the pipeline config (queue, account, walltime, cpu/gpu cores, memory, gpus,
    env_setup, extra_directives); gpus "auto" asks for a GPU only where sinfo lists GPUs, and env_setup
    unset activates the environment this vtpipe runs from.
    """
    from pipeline.cluster_defaults import site_cluster_config
    from pipeline.jobqueue import job_summary, sbatch_script, submit_script
    from pipeline.runner import plan_stage

    try:
        over = config_mod.parse_overrides(sets)
        cfg = config_mod.load_pipeline(pipeline_yaml, overrides=over)
        cluster = site_cluster_config(cfg["cluster"], "slurm")
        run_dir = Path(output or Path("outputs") / cfg["name"]).resolve()
        out = Path(scripts) if scripts else run_dir / "slurm"
        if not check:
            out.mkdir(parents=True, exist_ok=True)
            (run_dir / "logs").mkdir(parents=True, exist_ok=True)
        layout = Layout(run_dir)
        names = {}
        click.echo(f"GPUs per model-stage job: {cluster['gpu']['gpus']} ({cluster['gpu']['gpus_reason']}); "
                   f"environment: {'; '.join(cluster['env_setup']) or '(none)'}")
        for stage in cfg["stages"]:
            tasks = plan_stage(stage, cfg, layout)
            gpu = any(t.resources.get("GPU") for t in tasks)
            names[stage] = f"{stage}.sbatch"
            if check:
                click.echo(f"{stage}: {job_summary(len(tasks), cluster, gpu)}")
                continue
            text = sbatch_script(stage, len(tasks), Path(pipeline_yaml).resolve(), run_dir, cluster,
                                 list(sets), gpu, cfg["name"])
            (out / names[stage]).write_text(text)
            click.echo(f"{out / names[stage]}: {len(tasks)} task(s); {job_summary(len(tasks), cluster, gpu)}")
        if check:
            return
        sub = out / "submit.sh"
        sub.write_text(submit_script(cfg["stages"], names))
        sub.chmod(0o755)
        click.echo(f"submit with: bash {sub}")
    except VtpipeError as e:
        _fail(e)


@main.command(context_settings=CONTEXT)
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
def status(run_dir):
    """Per stage: tasks done / failed / pending, throughput, failed videos by reason, and the results.

    Read from the run directory alone (config.yaml, manifests, failure markers), so it works from a login
    node while jobs run."""
    try:
        click.echo(format_status(Path(run_dir)))
    except VtpipeError as e:
        _fail(e)


@main.command(context_settings=CONTEXT)
@click.option("--output", "-o", type=click.Path(file_okay=False), default="outputs/sample", show_default=True,
              help="Run directory.")
@click.option("--videos", type=click.Path(file_okay=False),
              help="Folder to generate the sample clips in [default: OUTPUT/sample-videos].")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Config override, e.g. --set model.name=clip-vit-b-32 --set model.allow_random=true.")
@click.option("--overwrite", is_flag=True, help="Redo tasks whose config or inputs changed.")
@click.pass_context
def demo(ctx, output, videos, sets, overwrite):
    """Generate the embedded sample (24 synthetic clips of moving shapes with captions) and run the sample
    pipeline on it with shapes-tiny: every stage, then the retrieval table.

    Needs only the installed package: the preset, the weights and the generator ship inside it.
    """
    from pipeline import demo as demo_mod

    try:
        pipeline_yaml = demo_mod.sample_pipeline()
        video_dir = Path(videos or Path(output) / "sample-videos").resolve()
        demo_mod.make_sample_videos(video_dir, echo=click.echo)
    except VtpipeError as e:
        _fail(e)
    ctx.invoke(run, pipeline_yaml=str(pipeline_yaml), output=output, executor=None, workers=None, scheduler=None,
               sets=(f"input.videos={json.dumps(str(video_dir))}", *sets), overwrite=overwrite, only=(),
               shard_index=None, num_shards=None)


@main.command(context_settings=CONTEXT)
def models():
    """List the registered models: feature size, unit, files, and each protocol (* = default) with its
    sampling policy, resize geometry, precision on CUDA and pixel aspect."""
    from stages.backbones.registry import list_models

    try:
        infos = list_models()
    except VtpipeError as e:
        _fail(e)
    from stages.backbones.registry import model_config

    for m in infos:
        files = ", ".join(m.files) or "-"
        click.echo(f"{m.name:<22} {m.embed_dim:>5}-d  per {m.unit:<5}  files: {files}")
        if m.description:
            click.echo(f"{'':<24}{m.description}")
        for pname in [m.protocol, *m.protocols]:
            p = m if pname == m.protocol else model_config(m.name, pname)
            sampling = ",".join(f"{k}={v}" for k, v in p.sampling.items())
            pre = p.preprocess
            backend = pre.get("backend", "torch")
            if backend == "torch":
                backend += ", antialias" if pre.get("antialias", True) else ", no antialias"
            geometry = (f"{pre.get('resize', 'short')} {pre.get('resize_to') or pre.get('size', 224)} "
                        f"{pre.get('interpolation', 'bicubic')} ({backend}), "
                        f"crop {pre.get('crop', 'center')} {pre.get('size', 224)}")
            tag = "protocol" if pname != m.protocol else "protocol*"
            click.echo(f"{'':<24}{tag} {pname}: sampling {sampling}; {geometry}; {p.precision} on CUDA; "
                       f"{p.aspect} pixels")


@main.command(context_settings=CONTEXT)
@click.option("--show", metavar="NAME", help="Print one preset's whole config (as YAML) and its notes.")
def presets(show):
    """List the paper presets: one per table a published system reports, each naming the reference code its
    settings come from. Use one with `preset: NAME` in a pipeline YAML or `vtpipe run ... --set preset=NAME`;
    keys you set yourself win over the preset's."""
    import yaml

    from pipeline.presets import list_presets, load_preset

    try:
        if show:
            p = load_preset(show)
            click.echo(f"# {p.name}: {p.paper}\n# reference: {p.reference}")
            if p.notes:
                click.echo("".join(f"# {line}\n" for line in p.notes.strip().splitlines()), nl=False)
            click.echo(yaml.safe_dump(p.config, sort_keys=False).rstrip())
            return
        found = list_presets()
        if not found:
            from pipeline.presets import presets_dir

            _fail(VtpipeError(f"no paper presets found in {presets_dir()}"))
        for p in found:
            click.echo(f"{p.name:<30} {p.paper}")
            click.echo(f"{'':<30} from {p.reference}")
    except VtpipeError as e:
        _fail(e)


def _register_info() -> None:
    from pipeline.info import info

    main.add_command(info)


_register_info()


def run_main() -> None:
    """Console entry point: Ctrl-C / SIGTERM end with a one-line message and exit status 130."""
    try:
        main(standalone_mode=False)
    except click.ClickException as e:  # usage errors: click's own message and exit status
        e.show()
        sys.exit(e.exit_code)
    except OSError as e:  # disk full, read-only or missing folder: a message, not a traceback
        click.secho(f"error: {e}", fg="red", err=True)
        sys.exit(1)
    except (KeyboardInterrupt, click.exceptions.Abort):
        click.secho("interrupted: finished tasks are kept; run the same command again to finish", fg="yellow", err=True)
        sys.exit(130)

