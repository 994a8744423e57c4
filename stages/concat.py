"""Stage 3, concat: merge the extract shards of one model into one video store (and place its text store).

Shards are found from the extract stage's manifests, so any number of shards, written by any processes,
merge without a hard-coded count. Duplicated ids and shards made with different fingerprints are errors;
missing and failed videos are reported. `layout: locvtp` also exports LocVTP's group-per-video file.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import h5py
import numpy as np

from stages.contract.errors import VtpipeError
from stages.contract.layout import Layout
from stages.features.store import VideoStore, VideoStoreWriter, abandon_h5
from stages.contract.tasks import Result, Task, atomic_path, fingerprint, load_manifests, register_stage

STAGE = "concat"
SPEC = register_stage(STAGE, version=1, neutral={"layout": "flat"})


TEXT_TASKS = ("text", "bank")  # extract's caption tasks: the test captions and the re-ranking query bank
BANK_VIDEOS = "bank-videos"  # extract's training-video store: the v2t re-ranking bank, copied beside the features


def shard_manifests(extract_dir: Path) -> tuple[list[dict], dict[str, dict]]:
    """(video shard manifests sorted by task id, {text task id: manifest})."""
    ms = load_manifests(extract_dir)
    shards = sorted((m for m in ms if m["task_id"].startswith("shard-")), key=lambda m: m["task_id"])
    texts = {m["task_id"]: m for m in ms if m["task_id"] in TEXT_TASKS + (BANK_VIDEOS,)}
    return shards, texts


def _shard_model(shards: list[dict]) -> str:
    """The model attribute of the first readable shard ('' when none): `vtpipe concat DIR` is named after
    the model that made the shards, not the config's default."""
    for m in shards:
        try:
            with h5py.File(m["outputs"]["shard"], "r") as f:
                v = f.attrs.get("model", "")
        except (OSError, KeyError):
            continue
        v = v.decode() if isinstance(v, bytes) else str(v)
        return "".join(c if c.isalnum() or c in "-_." else "_" for c in v)
    return ""


def plan(cfg: dict, layout: Layout, extract_dir: Path | None = None) -> list[Task]:
    model = cfg["model"]["name"]
    given = extract_dir is not None
    extract_dir = Path(extract_dir or layout.extract_dir(model))
    shards, texts = shard_manifests(extract_dir)
    if given:
        model = _shard_model(shards) or model
    dest = {"text": layout.text_features(model), "bank": layout.bank_features(model),
            BANK_VIDEOS: layout.bank_video_features(model)}
    params = {
        "extract_dir": str(extract_dir),
        "shards": [[m["task_id"], m["fingerprint"], m["outputs"]["shard"]] for m in shards],
        "texts": {k: [m["fingerprint"], m["outputs"].get("text") or m["outputs"]["shard"], str(dest[k])]
                  for k, m in sorted(texts.items())},
        "out": str(layout.features(model)),
        "layout": cfg["concat"]["layout"],
    }
    if params["layout"] == "locvtp":  # only where it changes the output (keeps flat runs' fingerprints)
        params["locvtp_ids"] = cfg["concat"]["locvtp_ids"]
    return [Task(STAGE, f"concat-{model}", str(layout.concat_dir()), params, root=str(layout.root))]


_PER_SHARD = ("shard", "fingerprint", "vtpipe_version", "store_format", "kind", "embed_dim", "dtype", "input_fingerprint",
              "precision", "stage_version")


def concat_stores(shard_paths: list[str], out: str | Path, dtype: str | None = None,
                  fingerprint_: str = "") -> dict:
    """Merge video stores in the given order into `out` (atomically). Returns counts.

    Shards of other models, weights (checkpoint sha256), sampling or preprocessing presets, or inputs
    prepared otherwise (compress settings) are refused. The merged store keeps the shards' provenance and
    adds its own: fingerprint (`fingerprint_`), shard_fingerprints, shard_input_fingerprints, and an
    input_fingerprint over them."""
    from stages.features.provenance import MERGE_KEYS

    if not shard_paths:
        raise VtpipeError("nothing to concatenate: no extract shards were found (did `vtpipe extract` run?)")
    first = VideoStore(shard_paths[0])
    attrs = {k: v for k, v in first.attrs.items() if k not in _PER_SHARD}
    dim, dt = first.embed_dim, dtype or first.attrs.get("dtype", "float32")
    first.close()
    shard_fps, shard_inputs, precisions = [], [], []
    for sp in shard_paths:
        with VideoStore(sp) as s:
            if s.embed_dim != dim or s.model != attrs.get("model"):
                raise VtpipeError(f"{sp}: model {s.model!r} dim {s.embed_dim} differs from {shard_paths[0]}")
            for key in MERGE_KEYS:
                if s.attrs.get(key) != attrs.get(key):
                    raise VtpipeError(f"{sp} was made with {key}={s.attrs.get(key)!r} but {shard_paths[0]} with "
                                      f"{attrs.get(key)!r}: shards of different models, weights, presets or inputs "
                                      "are never merged; re-extract them with one config")
            shard_fps.append(str(s.attrs.get("fingerprint", "")))
            shard_inputs.append(str(s.attrs.get("input_fingerprint", "")))
            precisions.append(str(s.attrs.get("precision", "")))
    provenance = {"fingerprint": fingerprint_ or fingerprint(shard_fps), "stage_version": SPEC.version,
                  "shard_fingerprints": shard_fps,
                  "shard_input_fingerprints": shard_inputs, "input_fingerprint": fingerprint(shard_inputs),
                  "precision": precisions[0] if len(set(precisions)) == 1 else sorted(set(precisions))}
    seen: dict[str, str] = {}
    n_units = 0
    with atomic_path(out, suffix=".h5") as tmp:
        w = VideoStoreWriter(tmp, dim, {**attrs, **provenance, "shards": len(shard_paths)}, dtype=dt)
        try:
            for sp in shard_paths:
                with VideoStore(sp) as s:
                    for v in s.iter_videos():
                        if v.id in seen:
                            raise VtpipeError(f"video id {v.id!r} is in both {seen[v.id]} and {sp}")
                        seen[v.id] = sp
                        w.add(v.id, v.unit_features, v.unit_times_s, v.unit_mask, v.pooled)
                        n_units += len(v.unit_features)
        finally:
            w.close()
    return {"videos": len(seen), "units": n_units, "shards": len(shard_paths)}


LOCVTP_IDS = ("stem", "path")


def locvtp_keys(ids: list[str], mode: str = "stem") -> dict[str, str]:
    """{video id: group name in the LocVTP file}.

    stem: the file name without folders (`train/v_x` -> `v_x`), what LocVTP's grounding code looks up and
    what its `concatHDF5.py` loop over top-level keys sees; two videos with one stem are refused, naming both.
    path: the id as it is; a `/` in it makes nested groups (`f["train/v_x"]` still reads them)."""
    if mode not in LOCVTP_IDS:
        raise VtpipeError(f"concat.locvtp_ids must be one of {LOCVTP_IDS}, got {mode!r}")
    if mode == "path":
        return {i: i for i in ids}
    out: dict[str, str] = {}
    seen: dict[str, str] = {}
    for i in ids:
        key = i.rsplit("/", 1)[-1]
        if key in seen:
            raise VtpipeError(f"LocVTP export keyed by file stem: {seen[key]!r} and {i!r} both become {key!r}; "
                              f"rename one, or key by the whole id with --locvtp-ids path (concat.locvtp_ids)")
        seen[key] = i
        out[i] = key
    return out


def export_locvtp(store_path: str | Path, out: str | Path, ids: str = "stem") -> int:
    """LocVTP's layout: one group per video with dataset `c3d_features`, float32 [clips, 1, D]; group names
    from `locvtp_keys(ids)`."""
    n = 0
    with VideoStore(store_path) as s:
        keys = locvtp_keys(list(s.ids), ids)  # collisions refused before anything is written
        with atomic_path(out, suffix=".h5") as tmp:
            f = h5py.File(tmp, "w")
            try:
                for k, v in s._f.attrs.items():  # the merged store's provenance, on the file's root
                    f.attrs[k] = v
                f.attrs["kind"] = "locvtp-export"
                f.attrs["locvtp_ids"] = ids
                for v in s.iter_videos():
                    g = f.create_group(keys[v.id])
                    g.create_dataset("c3d_features", data=v.unit_features.astype(np.float32)[:, None, :])
                    n += 1
                f.flush()
            except BaseException:
                abandon_h5(f)  # a full disk must not leave a crashing handle behind
                raise
            f.close()
    return n


def write_locvtp_failed(failures: list[dict], out: str | Path, ids: str = "stem") -> Path:
    """`<export>.failed.csv` beside the LocVTP file: the videos that have no group in it (id, key, reason,
    detail), header only when none failed, so a lookup that misses can be told from a bug."""
    import csv

    failed = sorted({f["id"]: f for f in failures if f.get("id")}.values(), key=lambda f: f["id"])
    keys = {f["id"]: (f["id"].rsplit("/", 1)[-1] if ids == "stem" else f["id"]) for f in failed}
    path = Path(str(out)[: -len(".h5")] + ".failed.csv" if str(out).endswith(".h5") else f"{out}.failed.csv")
    with atomic_path(path, suffix=".csv") as tmp:
        with open(tmp, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["id", "key", "reason", "detail"])
            for f in failed:
                w.writerow([f["id"], keys[f["id"]], f.get("reason", ""), f.get("detail", "")])
    return path


def run_task(task: Task) -> Result:
    p = task.params
    t0 = time.perf_counter()
    extract_dir = Path(p["extract_dir"])
    shards, _ = shard_manifests(extract_dir)
    fps_now = {m["task_id"]: m["fingerprint"] for m in shards}
    planned = {tid: fp for tid, fp, _ in p["shards"]}
    if fps_now != planned:
        raise VtpipeError(f"the shards in {extract_dir} changed while concat ran; run it again")
    counts = concat_stores([path for _, _, path in p["shards"]], p["out"], fingerprint_=task.fingerprint)
    failures = [f for m in shards for f in m.get("failures", [])]
    outputs = {"features": p["out"]}
    for kind, (_fp, src, dst) in p["texts"].items():
        with atomic_path(dst, suffix=".h5") as tmp:
            shutil.copyfile(src, tmp)
        outputs[f"{kind}_features"] = dst
    if p["layout"] == "locvtp":
        locvtp = str(Path(p["out"]).with_suffix("")) + ".locvtp.h5"
        ids = p.get("locvtp_ids", "stem")
        export_locvtp(p["out"], locvtp, ids)
        outputs["locvtp"] = locvtp
        outputs["locvtp_failed"] = str(write_locvtp_failed(failures, locvtp, ids))
    counts["failed"] = len(failures)
    return Result(task.id, outputs=outputs, counts=counts, failures=failures, seconds=time.perf_counter() - t0)
