"""Stage 4, index: a FAISS index over a model's vectors, with an id map, tuned search parameters and recall.

Outputs in <index_dir> (see stages/ann/io.py: written atomically, index_infos.json last):
    video.faiss        the index (CPU form, whatever device built it)
    ids.json           index row -> id: video ids (level "video"), or [video id, unit start time s] (level
                       "unit"); the rows held out for tuning come last (index_infos "rows_added_last")
    index_infos.json   type/factory, search params, build time, size, recall@1/@10 vs exact, queries/s

The store is never loaded whole: vectors are read in blocks (a training sample in one pass, the additions in
a second). Level "video" indexes the pooled vectors; level "unit" every unit row (frame or clip) whose mask
is set (zero-padding units are left out).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from stages import __version__
from stages.ann.build import DEFAULT_TARGET_RECALL, add_vectors, build, index_order
from stages.ann.io import IDS_FILE, INDEX_FILE, INFOS_FILE, open_index, read_infos, write_index_dir
from stages.contract.errors import VtpipeError
from stages.contract.layout import Layout
from stages.features.provenance import store_fingerprint
from stages.features.store import VideoStore
from stages.contract.tasks import Result, Task, clean_stale_temporaries, register_stage

STAGE = "index"
SPEC = register_stage(STAGE, version=1, neutral={"tune_queries": None})
LEVELS = ("video", "unit")


def plan(cfg: dict, layout: Layout, features: Path | None = None) -> list[Task]:
    model = cfg["model"]["name"]
    feats = Path(features or layout.features(model))
    ix = cfg["index"]
    params = {
        "features": str(feats),
        # the store's own fingerprint (its provenance), not its path or mtime: the same after a copy
        "features_fingerprint": store_fingerprint(feats),
        "index": ix["index"],
        "metric": ix["metric"],
        "max_memory": ix["max_memory"],
        "level": ix["level"],
        "target_recall": float(ix.get("target_recall", DEFAULT_TARGET_RECALL)),
        "k": int(ix.get("k", 10)),
        "tune_queries": ix.get("tune_queries"),
        "build_budget": ix.get("build_budget"),
        "out_dir": str(layout.index_dir(model)),
    }
    name = _store_model(feats) or model  # `vtpipe index --features X` names the task after X's model
    return [Task(STAGE, f"index-{name}-{ix['level']}", str(layout.index_dir(model)), params, root=str(layout.root))]


def _store_model(path: Path) -> str:
    """The model attribute of a store, '' when unreadable (plan must not fail on a missing input)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            v = f.attrs.get("model", "")
    except OSError:
        return ""
    v = v.decode() if isinstance(v, bytes) else str(v)
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in v)


class StoreVectors:
    """A feature store as a vector source (stages.ann.vectors.VectorSource), at video or unit level."""

    def __init__(self, store: VideoStore, level: str = "video"):
        if level not in LEVELS:
            raise VtpipeError(f"index level must be one of {LEVELS}, got {level!r}")
        self.store, self.level = store, level
        self.d = store.embed_dim
        if level == "video":
            self.n = len(store)
            self._keep = None
        else:
            mask = np.asarray(store.unit_mask(), dtype=bool)
            self._keep = mask
            self.n = int(mask.sum())

    def blocks(self, batch: int) -> Iterator[np.ndarray]:
        if self.level == "video":
            for _, block in self.store.iter_pooled(batch):
                yield block
            return
        total = len(self._keep)
        for a in range(0, total, batch):
            b = min(a + batch, total)
            keep = self._keep[a:b]
            if keep.any():
                block = self.store.unit_features(slice(a, b))
                yield block if keep.all() else block[keep]

    def ids(self) -> list[Any]:
        """Row -> id: the video id, or [video id, unit start time in seconds]."""
        if self.level == "video":
            return list(self.store.ids)
        vidx, times = self.store.unit_table()
        keep = self._keep
        names = self.store.ids
        return [[names[int(v)], float(t)] for v, t in zip(vidx[keep], times[keep])]


def _open_store(path: str | Path) -> VideoStore:
    return VideoStore(path)


def build_from_store(features: str | Path, out_dir: str | Path, index: str = "auto", metric: str = "ip",
                     level: str = "video", max_memory: str | int = "4G",
                     target_recall: float = DEFAULT_TARGET_RECALL, k: int = 10, batch: int = 65536,
                     device: str = "auto", seed: int = 0, tune_queries: str | Path | None = None,
                     build_budget: float | None = None) -> dict[str, Any]:
    """Build an index folder from a feature store; returns index_infos (also written to the folder).

    tune_queries: a caption (text) store of the same model whose vectors tune and measure the index
    (text-to-video queries); default: rows of the store, held out of the index until tuned.
    build_budget: seconds the automatic choice lets a candidate's predicted build take (None: no limit).
    """
    t0 = time.perf_counter()
    queries = _text_queries(tune_queries) if tune_queries else None
    with _open_store(features) as store:
        if len(store) == 0:
            raise VtpipeError(f"{features} holds no videos: nothing to index")
        src = StoreVectors(store, level)
        if src.n == 0:
            raise VtpipeError(f"{features} holds no valid units (every unit_mask entry is False): nothing to index")
        where = f"{features} ({level} level)"
        if queries is not None and queries[0] and store.model and queries[0] != store.model:
            raise VtpipeError(f"tuning queries {tune_queries} come from model {queries[0]!r}, the features from "
                              f"{store.model!r}")
        ix, infos = build(src, factory=index, metric=metric, max_memory=max_memory, target_recall=target_recall,
                             k=k, seed=seed, batch=batch, device=device, where=where,
                             queries=None if queries is None else queries[1], build_budget_s=build_budget)
        ids = src.ids()
        ids = [ids[int(r)] for r in index_order(len(ids), infos)]  # held-out rows were added last
        infos.update({
            "model": store.model,
            "level": level,
            "features": str(features),
            # the store relative to the index folder: a run moved or copied whole still finds it
            "features_relative": os.path.relpath(os.path.abspath(features), os.path.abspath(out_dir)),
            "features_fingerprint": store.attrs.get("fingerprint") or store_fingerprint(features) or "",
            "unit": store.attrs.get("unit", ""),
            **{k: store.attrs[k] for k in ("checkpoint_sha256", "random_weights", "sampling", "preprocess", "precision",
                                           "input_fingerprint") if k in store.attrs},
            "vtpipe_version": __version__,
            "total_seconds": round(time.perf_counter() - t0, 3),
        })
    clean_stale_temporaries(out_dir)
    return write_index_dir(out_dir, ix, ids, infos)


def _text_queries(path: str | Path) -> tuple[str, np.ndarray]:
    from stages.features.store import TextStore

    with TextStore(path) as ts:
        if len(ts) == 0:
            raise VtpipeError(f"tuning query store {path} holds no captions")
        return str(ts.attrs.get("model", "")), ts.pooled()


def run_task(task: Task) -> Result:
    p = task.params
    t0 = time.perf_counter()
    out_dir = Path(p["out_dir"])
    infos = build_from_store(p["features"], out_dir, index=p["index"], metric=p["metric"], level=p["level"],
                             max_memory=p["max_memory"], target_recall=p.get("target_recall", 0.95),
                             k=p.get("k", 10), tune_queries=p.get("tune_queries"),
                             build_budget=p.get("build_budget"))
    summary = {key: infos.get(key) for key in (
        "factory", "device", "vectors", "dim", "search_params", "recall_at_1", "recall_at_10", "queries_per_s",
        "exact_queries_per_s", "size_bytes", "build_seconds", "target_reached")}
    return Result(task.id, outputs={"index": str(out_dir / INDEX_FILE), "ids": str(out_dir / IDS_FILE),
                                    "infos": str(out_dir / INFOS_FILE)},
                  counts={"vectors": int(infos["vectors"])}, info=summary, seconds=time.perf_counter() - t0)


def add_store(index_dir: str | Path, features: str | Path, batch: int = 65536) -> dict[str, Any]:
    """Append a store's vectors to an existing index folder (no retraining; same model, dim and level).

    The recall in index_infos.json stays the one measured at build time; `vectors_at_measurement` says on how
    many vectors. Rebuild when the gallery has grown a lot.
    """
    index_dir = Path(index_dir)
    infos = read_infos(index_dir)
    with _open_store(features) as store:
        if infos.get("model") and store.model != infos["model"]:
            raise VtpipeError(f"{features} holds features of model {store.model!r}, the index at {index_dir} was "
                              f"built from {infos['model']!r}; index each model separately")
        if infos.get("checkpoint_sha256") and store.attrs.get("checkpoint_sha256") and \
                infos["checkpoint_sha256"] != store.attrs["checkpoint_sha256"]:
            raise VtpipeError(f"{features} was extracted with other weights (checkpoint sha256) than the store the "
                              f"index at {index_dir} was built from; results of different weights are never mixed")
        if store.embed_dim != infos["dim"]:
            raise VtpipeError(f"{features} has dimension {store.embed_dim}, the index at {index_dir} has "
                              f"{infos['dim']}")
        level = infos.get("level", "video")
        src = StoreVectors(store, level)
        if src.n == 0:
            raise VtpipeError(f"{features} holds no vectors to add")
        opened = open_index(index_dir)
        new_ids = src.ids()
        if level == "video":
            dup = set(opened.ids) & set(new_ids)
            if dup:
                raise VtpipeError(f"{len(dup)} video id(s) of {features} are already in the index "
                                  f"(e.g. {sorted(dup)[0]!r}); nothing was added")
        added = add_vectors(opened.index, src, infos["metric"], batch=batch, where=str(features))
        infos = {**infos, "vectors": int(opened.index.ntotal),
                 "vectors_at_measurement": infos.get("vectors_at_measurement", infos["vectors"]),
                 "additions": infos.get("additions", []) + [{"features": str(features), "vectors": added}]}
        infos.pop("files", None)
    return write_index_dir(index_dir, opened.index, opened.ids + new_ids, infos)


def video_queries(index_dir: str | Path, features: str | Path, video_ids: list[str]) -> np.ndarray:
    """Pooled vectors of some videos of a store, as queries for an index (checks the store's model)."""
    infos = read_infos(index_dir)
    with _open_store(features) as store:
        if infos.get("model") and store.model != infos["model"]:
            raise VtpipeError(f"{features} holds features of model {store.model!r}, the index was built from "
                              f"{infos['model']!r}")
        missing = [v for v in video_ids if v not in store]
        if missing:
            raise VtpipeError(f"video id {missing[0]!r} is not in {features}")
        return np.stack([store.get(v).pooled for v in video_ids]).astype(np.float32)


def infos_store_path(index_dir: str | Path, infos: dict) -> str:
    """The store an index was built from: beside it as it was (a moved run), else the path recorded."""
    rel = infos.get("features_relative")
    if rel:
        p = Path(index_dir) / rel
        if p.is_file():
            return str(p)
    return str(infos.get("features", ""))
