"""The index folder: atomic write, checked load (tuned search parameters set again), search by id.

Files (every one written atomically; index_infos.json last, holding the sizes of the other two, so an
interrupted write is detected on load):  video.faiss, ids.json, index_infos.json.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from stages.ann import gpu
from stages.ann.params import is_hnsw, on_gpu, set_search_params
from stages.ann.vectors import prepare
from stages.contract.errors import VtpipeError
from stages.contract.faults import fault_point
from stages.contract.tasks import atomic_path

INDEX_FILE = "video.faiss"
IDS_FILE = "ids.json"
INFOS_FILE = "index_infos.json"
INFOS_FORMAT = 1


def write_index_dir(out_dir: str | os.PathLike, index: faiss.Index, ids: Sequence[Any], infos: dict) -> dict:
    """Write video.faiss, ids.json and index_infos.json atomically, index_infos.json last.

    The old index_infos.json is removed just before the new files are renamed into place, so a kill at any
    moment leaves either the old set, or the new set, or a folder without infos that load_index refuses.
    """
    out = Path(out_dir)
    if index.ntotal != len(ids):
        raise VtpipeError(f"index holds {index.ntotal} vectors but the id map has {len(ids)} entries")
    with contextlib.ExitStack() as stack:
        t_infos = stack.enter_context(atomic_path(out / INFOS_FILE))
        t_ids = stack.enter_context(atomic_path(out / IDS_FILE))
        t_index = stack.enter_context(atomic_path(out / INDEX_FILE, suffix=".faiss"))
        cpu = gpu.to_cpu(index) if on_gpu(index) else index
        faiss.write_index(cpu, str(t_index))
        t_ids.write_text(json.dumps(list(ids), separators=(",", ":")), encoding="utf-8")
        infos = {**infos, "format": INFOS_FORMAT, "size_bytes": t_index.stat().st_size,
                 "files": {INDEX_FILE: t_index.stat().st_size, IDS_FILE: t_ids.stat().st_size}}
        t_infos.write_text(json.dumps(infos, indent=2, sort_keys=True, default=str), encoding="utf-8")
        fault_point("index_write")  # every file written under its temporary name, none renamed yet
        (out / INFOS_FILE).unlink(missing_ok=True)
    return infos


def read_infos(index_dir: str | os.PathLike) -> dict:
    """index_infos.json of an index folder (or of the folder holding a video.faiss path)."""
    d = Path(index_dir)
    if d.suffix == ".faiss":
        d = d.parent
    p = d / INFOS_FILE
    if not p.is_file():
        if (d / INDEX_FILE).exists():
            raise VtpipeError(f"{d} has {INDEX_FILE} but no {INFOS_FILE}: an interrupted write? rebuild the index")
        raise VtpipeError(f"{d} holds no index (no {INFOS_FILE}); run `vtpipe index` first")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise VtpipeError(f"{p} is not valid JSON ({e}); rebuild the index") from e


def _check_files(d: Path, infos: dict) -> None:
    for name, size in infos.get("files", {}).items():
        p = d / name
        if not p.is_file():
            raise VtpipeError(f"{p} is missing; rebuild the index")
        if p.stat().st_size != size:
            raise VtpipeError(f"{p} has {p.stat().st_size} bytes, {INFOS_FILE} says {size}: the folder mixes two "
                              f"builds (an interrupted write?); rebuild the index")


def load_index(index_dir: str | os.PathLike, device: str = "cpu") -> faiss.Index:
    """The index of a folder (or a video.faiss path) with its tuned search parameters set.

    device: cpu (default), gpu (error if FAISS sees none), auto (GPU when there is one and the type has a GPU
    version, else CPU).
    """
    d = Path(index_dir)
    if d.suffix == ".faiss":
        d = d.parent
    infos = read_infos(d)
    _check_files(d, infos)
    try:
        index = faiss.read_index(str(d / INDEX_FILE))
    except RuntimeError as e:
        raise VtpipeError(f"{d / INDEX_FILE} is not a readable FAISS index: {e}") from e
    if index.ntotal != infos.get("vectors", index.ntotal):
        raise VtpipeError(f"{d / INDEX_FILE} holds {index.ntotal} vectors, {INFOS_FILE} says {infos['vectors']}")
    if device not in ("cpu", "gpu", "auto"):
        raise VtpipeError(f"device must be cpu, gpu or auto, got {device!r}")
    if device == "gpu" and gpu.num_gpus() == 0:
        raise VtpipeError("device 'gpu' asked for, but FAISS sees no GPU")
    if device != "cpu" and gpu.num_gpus() > 0 and not is_hnsw(index):
        try:
            index = gpu.to_gpu(index)
        except RuntimeError:
            if device == "gpu":
                raise
    set_search_params(index, infos.get("search_params", {}))
    return index


@dataclass
class OpenIndex:
    """A loaded index folder: search it many times without reloading."""

    index: faiss.Index
    ids: list
    infos: dict

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def search(self, queries: np.ndarray, k: int = 10, model: str | None = None) -> tuple[np.ndarray, list[list]]:
        """Top-k for each query: (scores [Q, k] float32, ids [Q] lists of k entries).

        Queries are L2-normalised when the index is cosine. Where the index finds fewer than k (IVF with a
        small nprobe), the missing entries are None with score -inf (ip) / +inf (l2).
        `model`, when given, must be the model the index was built from.
        """
        if model is not None and self.infos.get("model") and model != self.infos["model"]:
            raise VtpipeError(f"queries come from model {model!r} but the index was built from "
                              f"{self.infos['model']!r}; encode them with {self.infos['model']!r}")
        q = np.asarray(queries, dtype=np.float32)
        if q.ndim == 1:
            q = q[None, :]
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise VtpipeError(f"queries have shape {tuple(np.shape(queries))}; this index needs [Q, {self.dim}]")
        if k < 1:
            raise VtpipeError(f"k must be >= 1, got {k}")
        q = prepare(q, "ip" if self.infos.get("normalised") else "l2", "queries")
        kk = min(k, self.index.ntotal)
        scores, rows = self.index.search(q, kk)
        miss = -np.inf if self.infos.get("metric", "ip") == "ip" else np.inf
        out_s = np.full((len(q), k), miss, dtype=np.float32)
        out_s[:, :kk] = np.where(rows >= 0, scores, miss)
        out_ids = [[self.ids[int(r)] if r >= 0 else None for r in row] + [None] * (k - kk) for row in rows]
        return out_s, out_ids


def open_index(index_dir: str | os.PathLike, device: str = "cpu") -> OpenIndex:
    d = Path(index_dir)
    if d.suffix == ".faiss":
        d = d.parent
    index = load_index(d, device=device)
    infos = read_infos(d)
    try:
        ids = json.loads((d / IDS_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise VtpipeError(f"{d / IDS_FILE} is unreadable ({e}); rebuild the index") from e
    if len(ids) != index.ntotal:
        raise VtpipeError(f"{d / IDS_FILE} has {len(ids)} ids for {index.ntotal} vectors; rebuild the index")
    return OpenIndex(index, ids, infos)


def search(index_dir: str | os.PathLike | OpenIndex, queries: np.ndarray, k: int = 10,
           model: str | None = None, device: str = "cpu") -> tuple[np.ndarray, list[list]]:
    """search(index_dir, queries [Q, D], k) -> (scores [Q, k], ids: Q lists of k ids). See OpenIndex.search."""
    ix = index_dir if isinstance(index_dir, OpenIndex) else open_index(index_dir, device=device)
    return ix.search(queries, k, model=model)
