"""Stage 2, extract: a backbone over every video (sharded HDF5) and every caption (one text store).

Plan: the sorted video list split into N contiguous shards, each a task writing <extract_dir>/shard-NNNNN.h5
(one writer per file, any process can run any shard), plus one `text` task for the captions.
Each shard file is written under a temporary name and renamed when complete; the manifest comes last.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from stages.backbones.registry import load_model, model_config
from stages.backbones.text_length import check_max_words, set_max_words
from stages.datasets.captions import read_captions
from stages.features.engine import run_engine
from stages.contract.errors import ConfigError, VtpipeError
from stages.contract.faults import fault_point
from stages.contract.layout import Layout
from stages.contract.progress import progress_bar
from stages.features.store import VideoStoreWriter, write_text_store
from stages.contract.tasks import Result, Task, atomic_path, fingerprint, register_stage

STAGE = "extract"
# version: bump when a code change makes the features differ. neutral: params added after version 1 with the
# value that keeps version 1's output. ignore: where the checkpoint, caption file and videos are (their content
# identities are hashed: checkpoint_sha256, input_identity), so moved inputs leave a run complete.
SPEC = register_stage(STAGE, version=1, neutral={"fast_resize": False, "segments": False},
                      ignore=("weights", "captions", "videos"))
# the plan hashes the source videos' identities, not the compress stage's results (see pipeline.status)
PLANS_FROM_RESULTS = False
log = logging.getLogger("vtpipe.extract")


def input_videos(cfg: dict, layout: Layout) -> list[tuple[str, str]]:
    """(id, path) pairs the extract stage reads: compressed outputs when the run compresses, else sources."""
    return [(vid, path) for vid, path, _ in input_videos_with_identity(cfg, layout)]


def input_videos_with_identity(cfg: dict, layout: Layout) -> list[tuple[str, str, str]]:
    """(id, path, identity): the identity is the content identity of the source video (stages.features.identity),
    also when the run compresses it first (the compressed file is then a function of the source and the
    compress settings, which the fingerprint holds as `upstream`), so it is known before compress ran."""
    from stages import compress

    sources = compress.source_videos(cfg)
    ident = compress.source_identities(sources)
    if "compress" in cfg["stages"]:
        return [(vid, str(compress.output_path(layout, vid)), ident[vid]) for vid, _ in sources]
    return [(vid, str(p), ident[vid]) for vid, p in sources]


def segment_items(cfg: dict, layout: Layout, spec: dict) -> list[list]:
    """extract.segments: one item per caption segment, [caption id, video path, {segment bounds}]."""
    from stages.video.sampling import make_policy

    ds = cfg["dataset"]
    if not ds["captions"]:
        raise ConfigError("extract.segments needs dataset.captions with start_s / end_s (e.g. the crosstask format)")
    try:
        make_policy({**spec, "segment_start_s": 0.0, "segment_end_s": 1.0})
    except ConfigError as e:
        raise ConfigError(f"extract.segments needs a sampling policy that takes segment bounds "
                          f"(milnce-retrieval); {spec.get('policy')!r} does not ({e})") from None
    df = read_captions(ds["format"], ds["captions"], **ds["options"])
    if "start_s" not in df.columns:
        raise ConfigError(f"extract.segments: format {ds['format']!r} has no start_s / end_s columns")
    paths = dict(input_videos(cfg, layout))
    items, missing = [], 0  # segment items: their identity is their video's (input_identity below)
    for cid, vid, a, b in zip(df["caption_id"], df["video_id"], df["start_s"], df["end_s"]):
        if vid not in paths:
            missing += 1
            continue
        items.append([cid, paths[vid], {"segment_start_s": float(a), "segment_end_s": float(b)}])
    if missing:
        log.warning("%d caption segment(s) name videos that are not in the input; they are skipped", missing)
    return items


BANK_VIDEOS = "bank-videos"  # the v2t re-ranking bank: training-split videos, one store of their own


def bank_video_items(cfg: dict) -> list[tuple[str, str]]:
    """(id, path) of the training videos (dataset.train_videos, restricted to dataset.train_split's ids when
    given) when v2t is re-ranked with a bank (sk-norm / qb-norm); [] otherwise. Read from the sources (the
    compress stage only handles input.videos)."""
    from stages import compress
    from stages.datasets.captions import _read_csv
    from stages.datasets.common import read_id_list

    ds, ev = cfg["dataset"], cfg["evaluate"]
    if not ds.get("train_videos") or ev["rerank"] not in ("sk-norm", "qb-norm") or "v2t" not in ev["tasks"]:
        return []
    videos = compress.source_videos({**cfg, "input": {**cfg["input"], "videos": ds["train_videos"]}})
    split = ds.get("train_split")
    if split:
        keep = (set(_read_csv(Path(split), ["video_id"])["video_id"]) if Path(split).suffix.lower() == ".csv"
                else set(read_id_list(Path(split))))
        videos = [(vid, p) for vid, p in videos if vid in keep or Path(vid).name in keep]
    if not videos:
        raise ConfigError(f"dataset.train_videos {ds['train_videos']} holds no training video"
                          + (f" listed in {split}" if split else ""))
    return [(vid, str(p)) for vid, p in videos]


def sampling_spec(cfg: dict) -> dict:
    info = model_config(cfg["model"]["name"], cfg["model"].get("protocol"))
    spec = cfg["model"]["sampling"] or info.sampling
    if isinstance(spec, str):
        spec = {"policy": spec}
    if not spec:
        raise ConfigError(f"model {info.name!r} declares no sampling policy; set model.sampling")
    return dict(spec)


def text_length_params(cfg: dict) -> dict:
    """{"max_words": n} when model.max_words is set (a text task's fingerprint then depends on it), else {}."""
    n = check_max_words(cfg["model"].get("max_words"))
    return {"max_words": n} if n else {}


def _model_params(cfg: dict) -> dict:
    """The model as the fingerprint sees it: its name, the sha256 of every weight file it loads (the paths
    are not hashed: a checkpoint copied elsewhere is the same checkpoint)."""
    from stages.features.provenance import checkpoint_sha256

    m = cfg["model"]
    w = m["weights"]
    info = model_config(m["name"], m.get("protocol"))
    return {"model": m["name"], "weights": w, "checkpoint_sha256": checkpoint_sha256(m["name"], w),
            "allow_random": m["allow_random"], "allow_torchscript": m["allow_torchscript"],
            "protocol": info.protocol,
            **({"allow_globals": list(m["allow_globals"])} if m.get("allow_globals") else {})}


def input_identity(items: list, identity_of: dict[str, str]) -> str:
    """One hash of what a shard reads: each item's id, its video's content identity and segment bounds."""
    return fingerprint([[it[0], identity_of.get(it[1], it[1]), *it[2:]] for it in items])


def caption_identity(path: str) -> str:
    from stages.features.identity import file_sha256

    try:
        return "sha256:" + file_sha256(path)
    except OSError as e:
        raise VtpipeError(f"caption file {path} cannot be read ({e.strerror})") from e


def _upstream(cfg: dict) -> str:
    """What the inputs depend on: the compress settings when this run compresses."""
    if "compress" not in cfg["stages"]:
        return "sources"
    # what changes the compressed pixels; not how many ffmpeg processes made them
    return fingerprint({k: v for k, v in cfg["compress"].items() if k not in ("workers", "videos_per_task")})


def plan(cfg: dict, layout: Layout) -> list[Task]:
    e = cfg["extract"]
    model = cfg["model"]["name"]
    out_dir = layout.extract_dir(model)
    spec = sampling_spec(cfg)
    with_ident = input_videos_with_identity(cfg, layout)
    identity_of = {path: ident for _, path, ident in with_ident}
    videos = segment_items(cfg, layout, spec) if e["segments"] else [(vid, path) for vid, path, _ in with_ident]
    n_shards = max(1, min(int(e["shards"]), max(1, len(videos))))
    runtime = {"device": e["device"], "decode_workers": e["decode_workers"], "threads": e["threads"],
               "decode_device": e["decode_device"]}
    # precision changes the features (bf16 autocast moves LocVTP's output by ~2e-2): part of the fingerprint
    common = {**_model_params(cfg), "dtype": e["dtype"], "segments": e["segments"], "amp": e["amp"]}
    # what only the video side depends on (caption features do not change with the frame sampling); the
    # protocol's preprocessing and aspect are part of what the features are: a change re-extracts
    info = model_config(model, cfg["model"].get("protocol"))
    aspect = e.get("aspect", "auto")
    video_common = {"sampling": spec, "preprocess": dict(info.preprocess), "upstream": _upstream(cfg),
                    "fast_resize": e["fast_resize"], "aspect": info.aspect if aspect == "auto" else aspect}
    tasks = []
    for k, chunk in enumerate(np.array_split(np.arange(len(videos)), n_shards)):
        params = {
            **common,
            **video_common,
            "kind": "videos",
            "videos": [list(videos[i]) for i in chunk],
            "input_identity": input_identity([videos[i] for i in chunk], identity_of),
            "batch_size": e["batch_size"],
            "out": str(out_dir / f"shard-{k:05d}.h5"),
        }
        tasks.append(Task(STAGE, f"shard-{k:05d}", str(out_dir), params, resources={"GPU": 1}, runtime=dict(runtime),
                          root=str(layout.root)))
    ds = cfg["dataset"]
    text_sets = []
    if ds["captions"] and ds["kind"] == "retrieval":
        text_sets.append(("text", ds["captions"], ds["format"], dict(ds["options"])))
    if ds["train_captions"] and cfg["evaluate"]["rerank"] in ("sk-norm", "qb-norm"):
        opts = {"split_csv": ds["train_split"]} if ds["train_split"] and ds["train_format"] == "msrvtt-json" else {}
        text_sets.append(("bank", ds["train_captions"], ds["train_format"], opts))
    bank = bank_video_items(cfg)
    if bank:
        params = {**common, **video_common, "kind": "videos", "videos": [list(v) for v in bank], "batch_size": e["batch_size"],
                  "out": str(out_dir / f"{BANK_VIDEOS}.h5")}
        tasks.append(Task(STAGE, BANK_VIDEOS, str(out_dir), params, resources={"GPU": 1}, runtime=dict(runtime)))
    for task_id, path, fmt, options in text_sets:
        params = {
            **common,
            "kind": "text",
            **text_length_params(cfg),
            "captions": path,
            "input_identity": caption_identity(path),
            "format": fmt,
            "options": options,
            "batch_size": e["text_batch_size"],
            "out": str(out_dir / f"{task_id}.h5"),
        }
        tasks.append(Task(STAGE, task_id, str(out_dir), params, resources={"GPU": 1}, runtime=dict(runtime),
                          root=str(layout.root)))
    return tasks


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        warnings.warn("device 'cuda' was asked for but no CUDA device is visible; running on the CPU")
        return "cpu"
    return device


def _load(task: Task):
    p, r = task.params, task.runtime
    device = resolve_device(r.get("device", "auto"))
    amp = p.get("amp", r.get("amp", "auto"))
    amp = None if amp in ("none", "fp32") else amp
    model = load_model(p["model"], weights=p["weights"], device=device, amp_dtype=amp, allow_random=p["allow_random"],
                       allow_torchscript=p.get("allow_torchscript", False), protocol=p.get("protocol"),
                       allow_globals=p.get("allow_globals", ()))
    if p.get("max_words"):  # model.max_words: the caption tokenizer's length (stages/backbones/text_length.py)
        set_max_words(model, p["max_words"])
    if getattr(model, "random_weights", False):
        log.warning("model %s runs with RANDOM weights: its features mean nothing (plumbing check only)", p["model"])
    return model, device


def _attrs(task: Task, model, device: str, extra: dict | None = None) -> dict:
    """The store's provenance (see stages.features.provenance)."""
    p = task.params
    random = bool(getattr(model, "random_weights", False))
    return {
        "model": p["model"],
        "unit": model.unit,
        **({"sampling": p["sampling"], "preprocess": {**p["preprocess"], "fast_resize": bool(p["fast_resize"])}}
           if "sampling" in p else {}),
        "checkpoint_sha256": {} if random else p.get("checkpoint_sha256", {}),
        "input_fingerprint": p.get("input_identity", ""),
        **({"upstream": p["upstream"]} if "upstream" in p else {}),
        "fingerprint": task.fingerprint,
        "stage_version": SPEC.version,
        "random_weights": random,
        "protocol": model.info.protocol,
        "precision": model.precision,  # what the forward passes ran in (fp32 on the CPU whatever was asked)
        **({"aspect": p.get("aspect", model.info.aspect)} if "sampling" in p else {}),
        **(extra or {}),
    }


def set_threads(threads: int) -> None:
    """CPU float results depend on how reductions are split over threads: fix the count, so the local, dask
    and array-job executors (whose workers start with OMP_NUM_THREADS=1) produce the same bits."""
    torch.set_num_threads(int(threads) if threads and threads > 0 else min(4, os.cpu_count() or 1))


def run_task(task: Task) -> Result:
    torch.set_grad_enabled(False)
    set_threads(task.runtime.get("threads", 0))
    if task.params["kind"] == "text":
        return _run_text(task)
    return _run_videos(task)


def _run_videos(task: Task) -> Result:
    p = task.params
    t0 = time.perf_counter()
    model, device = _load(task)
    failures: list[dict] = []
    videos = [tuple(item) for item in p["videos"]]  # (id, path) or (segment id, path, {segment bounds})
    with atomic_path(p["out"], suffix=".h5") as tmp:
        writer = VideoStoreWriter(tmp, model.embed_dim, _attrs(task, model, device, {"shard": task.id}), dtype=p["dtype"])
        try:
            with progress_bar(len(videos), f"extract {task.id}") as bar:
                stats = run_engine(
                    model,
                    videos,
                    p["sampling"],
                    on_video=lambda vid, f, t, m, pooled: (writer.add(vid, f, t, m, pooled), fault_point("written")),
                    on_failure=lambda vid, reason, detail: failures.append(
                        {"id": vid, "stage": STAGE, "reason": reason, "detail": detail}
                    ),
                    batch_size=int(p["batch_size"]),
                    decode_workers=int(task.runtime.get("decode_workers", 1)),
                    progress=bar.advance,
                    fast_resize=bool(p.get("fast_resize", False)),
                    decode_device=task.runtime.get("decode_device", "cpu"),
                    aspect=p.get("aspect", model.info.aspect),
                )
            written = len(writer)
        finally:
            writer.close()
    secs = time.perf_counter() - t0
    counts = {"videos": len(videos), "written": written, "failed": len(failures),
              "frames": int(stats["frames"]), "units": int(stats["units"]), "batches": int(stats["batches"])}
    info = {"device": device, "random_weights": bool(getattr(model, "random_weights", False)),
            "decode_workers": int(stats["decode_workers"]),
            "videos_per_s": round(written / max(secs, 1e-9), 3), "frames_per_s": round(stats["frames"] / max(secs, 1e-9), 2)}
    return Result(task.id, outputs={"shard": p["out"]}, counts=counts, failures=failures, info=info, seconds=secs)


def _run_text(task: Task) -> Result:
    p = task.params
    t0 = time.perf_counter()
    model, device = _load(task)
    df = read_captions(p["format"], p["captions"], **p.get("options", {}))
    captions = df["caption"].tolist()
    bs = max(1, int(p["batch_size"]))
    pooled, tokens, masks = [], [], []
    for a in range(0, len(captions), bs):
        tf = model.encode_text(captions[a : a + bs])
        pooled.append(np.asarray(tf.pooled, np.float32))
        if tf.tokens is not None:
            tokens.append(np.asarray(tf.tokens, np.float32))
            masks.append(np.asarray(tf.mask, bool))
    if tokens:  # each batch is padded to its own longest caption: pad all to the longest before joining
        width = max(t.shape[1] for t in tokens)
        tokens = [np.pad(t, ((0, 0), (0, width - t.shape[1]), (0, 0))) for t in tokens]
        masks = [np.pad(m, ((0, 0), (0, width - m.shape[1]))) for m in masks]
    # in segment mode every caption is matched with its own segment, whose store id is the caption id
    video_ids = df["caption_id"].tolist() if p.get("segments") else df["video_id"].tolist()
    with atomic_path(p["out"], suffix=".h5") as tmp:
        write_text_store(
            tmp,
            df["caption_id"].tolist(),
            video_ids,
            captions,
            np.concatenate(pooled),
            _attrs(task, model, device, {"captions_file": str(Path(p["captions"]).name),
                                         **({"max_words": p["max_words"]} if p.get("max_words") else {})}),
            tokens=np.concatenate(tokens) if tokens else None,
            token_mask=np.concatenate(masks) if masks else None,
            dtype=p["dtype"],
        )
    secs = time.perf_counter() - t0
    return Result(task.id, outputs={"text": p["out"]}, counts={"captions": len(captions)},
                  info={"device": device}, seconds=secs)
