"""Where an artifact came from: the facts every store, index folder and metrics file carries.

Video and text stores (HDF5 attributes, JSON strings for mappings; read them with plain h5py):
    vtpipe_version      the vtpipe that wrote the file (stages.__version__, the one place it is set)
    model               registered model name
    checkpoint_sha256   {file name: sha256 of the file} for every weight file the model loaded; {} with
                        random weights (then random_weights is true)
    sampling            the frame-sampling preset (policy and its parameters)
    preprocess          the model's preprocessing preset (size, resize, crop, mean/std), plus fast_resize
    precision           what the model computed in: "fp32", or "fp16" / "bf16" (autocast, CUDA only)
    dtype               the store's float type
    input_fingerprint   the content identity of its inputs (videos: size + sampled-block hashes; captions:
                        sha256), hashed
    fingerprint         the fingerprint of the task that wrote it
    stage_version       the version of the stage (stages.contract.tasks.register_stage) that wrote it
merged stores also:
    shard_fingerprints  [fingerprint of each shard, in merge order]
    shard_input_fingerprints

Index folders carry the same keys in index_infos.json (from the store they index, plus features_fingerprint);
evaluate's metrics.json names its stores under "stores" with their fingerprints and checkpoint hashes.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from stages.contract.errors import VtpipeError

# store attributes that must agree before shards are merged or stores are evaluated together
MERGE_KEYS = ("model", "unit", "sampling", "preprocess", "random_weights", "checkpoint_sha256", "upstream")
PAIR_KEYS = ("model", "random_weights", "checkpoint_sha256")
PROVENANCE_KEYS = ("vtpipe_version", "model", "checkpoint_sha256", "random_weights", "sampling", "preprocess",
                   "precision", "dtype", "unit", "input_fingerprint", "upstream", "fingerprint", "stage_version",
                   "shard_fingerprints", "shard_input_fingerprints", "kind", "embed_dim")


def checkpoint_files(model: str, weights: str | dict | None) -> dict[str, str]:
    """{file name: path} of the weight files a model loads: those given, else its family's default file
    (shapes-tiny's committed checkpoint). Files that do not exist are left out (the loader says so)."""
    from stages.backbones.registry import FAMILIES, model_config

    info = model_config(model)
    names = list(info.files)
    if isinstance(weights, (str, os.PathLike)):
        given = {names[0] if names else "weights": str(weights)}
    else:
        given = {k: str(v) for k, v in (weights or {}).items() if v}
    if not given and names:
        module = importlib.import_module(FAMILIES[info.family].split(":")[0])
        default = getattr(module, "DEFAULT_WEIGHTS", None)
        if default is not None:
            given = {names[0]: str(default)}
    return {k: p for k, p in sorted(given.items()) if Path(p).is_file()}


def checkpoint_sha256(model: str, weights: str | dict | None) -> dict[str, str]:
    """{file name: sha256 hex} of the model's weight files (cached by stages.features.identity)."""
    from stages.features.identity import file_sha256

    try:
        return {k: file_sha256(p) for k, p in checkpoint_files(model, weights).items()}
    except OSError as e:
        raise VtpipeError(f"model {model!r}: cannot read weight file {e.filename}: {e.strerror}") from e


def store_fingerprint(path: str | os.PathLike) -> str | None:
    """What a downstream task's fingerprint holds for a store it reads: the store's `fingerprint` attribute
    (the same wherever the file is copied); for a store without one (older vtpipe, or not made by vtpipe)
    its content identity; None when it does not exist yet."""
    import h5py

    if not Path(path).is_file():
        return None
    try:
        with h5py.File(path, "r") as f:
            v = f.attrs.get("fingerprint", "")
    except OSError:
        v = ""
    v = v.decode() if isinstance(v, bytes) else str(v)
    if v:
        return v
    from stages.features.identity import video_identity

    return video_identity(path)


def store_provenance(path: str | os.PathLike) -> dict[str, Any]:
    """The provenance attributes of a store file, JSON values decoded."""
    import h5py

    from stages.features.store import read_attrs

    try:
        with h5py.File(path, "r") as f:
            attrs = read_attrs(f)
            if "kind" not in attrs:  # e.g. LocVTP's group-per-video export
                attrs["kind"] = "locvtp-export" if len(f) else "unknown"
            n = f["ids"].shape[0] if "ids" in f else (f["caption_ids"].shape[0] if "caption_ids" in f else len(f))
    except OSError as e:
        raise VtpipeError(f"{path} is not a readable HDF5 file: {e}") from e
    out = {k: attrs[k] for k in PROVENANCE_KEYS if k in attrs}
    out["items"] = int(n)
    for k in ("shards", "shard", "captions_file"):
        if k in attrs:
            out[k] = attrs[k]
    return out


def store_summary(path: str | os.PathLike) -> dict[str, Any]:
    """What metrics.json says about a store it used: path, fingerprint, model, checkpoint hashes."""
    p = store_provenance(path)
    return {"path": str(path), "fingerprint": p.get("fingerprint", ""),
            "input_fingerprint": p.get("input_fingerprint", ""), "model": p.get("model", ""),
            "checkpoint_sha256": p.get("checkpoint_sha256", {}), "random_weights": p.get("random_weights")}


def check_same_source(a: dict, b: dict, what_a: str, what_b: str, keys=PAIR_KEYS) -> None:
    """Refuse to use two stores together when they come from other models or other weights."""
    for k in keys:
        va, vb = a.get(k), b.get(k)
        if k == "checkpoint_sha256" and (not va or not vb):
            continue  # a store written before checkpoints were recorded: nothing to compare
        if va != vb:
            raise VtpipeError(f"{what_a} was made with {k}={va!r} but {what_b} with {vb!r}: results of "
                              "different models, weights or presets are never mixed; re-extract one of them")


def stores_used(p: dict, metrics_dir: str | Path | None = None) -> dict:
    """metrics.json "stores": every store the task read, by fingerprint and checkpoint sha256, and by path
    relative to the metrics file's folder (so a moved run still names its own stores)."""
    out = {}
    for key, name in (("features", "video"), ("text_features", "text"), ("bank_features", "bank")):
        if p.get(key) and Path(p[key]).is_file():
            out[name] = store_summary(p[key])
            out[name]["path"] = os.path.relpath(os.path.abspath(p[key]),
                                                os.path.abspath(metrics_dir or p["out_dir"]))
    return out



def check_store_pair(video_path: str, text_path: str) -> None:
    """A video store and a caption store are evaluated together only when made by the same model and weights."""
    check_same_source(store_provenance(video_path), store_provenance(text_path), f"video store {video_path}",
                      f"text store {text_path}")

