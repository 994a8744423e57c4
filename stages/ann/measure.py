"""Exact neighbours (the ground truth), recall@k, and timed searches on held-out queries."""

from __future__ import annotations

import time
from dataclasses import dataclass

import faiss
import numpy as np


def _merge_topk(d_acc, i_acc, d_new, i_new, k: int, larger_better: bool):
    d = np.concatenate([d_acc, d_new], axis=1)
    i = np.concatenate([i_acc, i_new], axis=1)
    order = np.argsort(-d if larger_better else d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, order, 1), np.take_along_axis(i, order, 1)


class ExactTopK:
    """Exact top-k of fixed queries over a gallery seen block by block (the ground truth)."""

    def __init__(self, queries: np.ndarray, k: int, metric: str):
        self.q, self.k, self.metric = queries, k, metric
        self.larger = metric == "ip"
        fill = -np.inf if self.larger else np.inf
        self.D = np.full((len(queries), k), fill, dtype=np.float32)
        self.I = np.full((len(queries), k), -1, dtype=np.int64)
        self.seconds = 0.0

    def add(self, block: np.ndarray, first_row: int) -> None:
        t0 = time.perf_counter()
        flat = faiss.IndexFlatIP(block.shape[1]) if self.larger else faiss.IndexFlatL2(block.shape[1])
        flat.add(block)
        d, i = flat.search(self.q, min(self.k, len(block)))
        self.D, self.I = _merge_topk(self.D, self.I, d, i + first_row, self.k, self.larger)
        self.seconds += time.perf_counter() - t0


def drop_self(rows: np.ndarray, self_rows: np.ndarray, k: int) -> np.ndarray:
    """Each result row without the query's own id (and without -1 fillers), cut to k."""
    out = np.full((len(rows), k), -1, dtype=np.int64)
    for j, (r, s) in enumerate(zip(rows, self_rows)):
        keep = r[(r != s) & (r >= 0)][:k]
        out[j, : len(keep)] = keep
    return out


def recall_per_query(got: np.ndarray, truth: np.ndarray, k: int) -> np.ndarray:
    """For each query, the fraction of its true top-k found in the returned top-k."""
    k = min(k, truth.shape[1])
    return np.array([len(set(g[:k][g[:k] >= 0]) & set(t[:k][t[:k] >= 0])) / max(1, int((t[:k] >= 0).sum()))
                     for g, t in zip(got, truth)], dtype=np.float64)


def recall_at(got: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Mean fraction of the true top-k found in the returned top-k."""
    hits = recall_per_query(got, truth, k)
    return float(hits.mean()) if len(hits) else 1.0


def timed_search(index: faiss.Index, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, float]:
    index.search(q[: min(len(q), 8)], k)  # warm-up
    t0 = time.perf_counter()
    d, i = index.search(q, k)
    return d, i, time.perf_counter() - t0


@dataclass
class HeldOut:
    """Query vectors with their exact neighbours; rows: the queries' own gallery rows (-1: not in it)."""

    q: np.ndarray
    rows: np.ndarray
    truth: np.ndarray  # [Q, k] exact neighbours without self

    def evaluate(self, index: faiss.Index, k: int) -> dict[str, float]:
        if len(self.q) == 0:
            return {"recall_at_1": 1.0, f"recall_at_{k}": 1.0, "queries_per_s": 0.0, "seconds": 0.0}
        kk = min(k + 1, index.ntotal)
        _, got, secs = timed_search(index, self.q, kk)
        got = drop_self(got, self.rows, k)
        per_query = recall_per_query(got, self.truth, k)
        return {"recall_at_1": recall_at(got, self.truth, 1), f"recall_at_{k}": float(per_query.mean()),
                "stderr": float(per_query.std(ddof=1) / np.sqrt(len(per_query))) if len(per_query) > 1 else 0.0,
                "queries_per_s": round(len(self.q) / max(secs, 1e-9), 1), "seconds": secs}


def held_out(queries: np.ndarray, rows: np.ndarray, gallery: np.ndarray, k: int, metric: str) -> HeldOut:
    """Queries with their exact top-k over an in-memory gallery (rows: each query's own row there, or -1)."""
    ex = ExactTopK(queries, min(k + 1, len(gallery)), metric)
    ex.add(gallery, 0)
    return HeldOut(queries, rows, drop_self(ex.I, rows, min(k, len(gallery) - (rows >= 0).any())))
