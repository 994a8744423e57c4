"""One command per stage, outside a pipeline config: `vtpipe compress`, `extract`, `concat`, `index`,
`evaluate`. Each builds a config from its options, plans that stage and runs it (resumable like `vtpipe run`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from pipeline import config as config_mod
from pipeline.cli.common import CONTEXT, _echo_warnings, _fail, _run_one_stage, _shard_defaults
from pipeline.executors import LocalExecutor
from pipeline.runner import run_lock, run_stage
from stages.contract.errors import VtpipeError
from stages.contract.layout import Layout


@click.command(context_settings=CONTEXT)
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


@click.command(context_settings=CONTEXT)
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


@click.command(context_settings=CONTEXT)
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


@click.command(context_settings=CONTEXT)
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


@click.command(context_settings=CONTEXT)
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
@click.option("--similarity", type=click.Choice(["auto", "dp", "dot", "ti", "wti", "ucofia"]), default="auto", show_default=True,
              help="auto: the model's own (dot product, DRL's token-wise TI/WTI, or UCoFiA's three levels with SK-norm per level; needs --weights); "
                   "dp: cosine; dot: un-normalised dot product (MIL-NCE / VT-TWINS eval scripts).")
def evaluate(tasks, features, text_features, output, rerank, bank_text_features, bank_video_features, sets, ties,
             median, missing, candidates, index_dir, candidates_k, model_name, weights, similarity):
    """Retrieval (R@1/5/10/50, MdR, MnR) and recognition metrics from feature stores.

    \b
    vtpipe evaluate --task t2v --task v2t --features clip.h5 -o eval/
    vtpipe evaluate --task t2v --features clip.h5 --rerank sk-norm --bank-text-features clip.bank.text.h5 -o eval/
    vtpipe evaluate --task linear-probe --features s3d.h5 --set dataset.preset=ucf101 --set dataset.root=/data/ucf -o eval/
    """
    from stages import evaluate as eval_stage
    from stages.features.store import VideoStore

    try:
        feats = Path(features).resolve()
        if model_name is None:
            with VideoStore(feats) as s:
                model_name = s.model
        over = config_mod.parse_overrides(sets)
        ev_user = {"tasks": list(tasks), "rerank": rerank, "ties": ties, "median": median, "missing": missing,
                   "candidates": candidates, "candidates_k": candidates_k, "similarity": similarity}
        from pipeline.cli.preset_options import given_only  # a paper preset's conventions win over options left at default

        ev_user = given_only(ev_user, {k: k for k in ("rerank", "ties", "median", "missing", "candidates", "similarity")}
                             | {"candidates_k": "candidates_k"}, over.get("preset"))
        user = {"stages": ["evaluate"],
                "model": {"name": model_name, "weights": str(Path(weights).resolve()) if weights else None},
                "evaluate": ev_user}
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
