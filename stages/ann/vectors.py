"""Vector sources (n rows of dimension d read block by block), validation and normalisation, metrics."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import faiss
import numpy as np

from stages.contract.errors import VtpipeError


class VectorSource(Protocol):
    """n rows of dimension d, read in consecutive blocks (float32 [b, d]), in the same order every time."""

    n: int
    d: int

    def blocks(self, batch: int) -> Iterator[np.ndarray]: ...


class ArrayVectors:
    """An in-memory (or memory-mapped) [n, d] array as a vector source."""

    def __init__(self, x: np.ndarray):
        if x.ndim != 2:
            raise VtpipeError(f"vectors must be a 2-d array [n, d], got shape {x.shape}")
        self.x = x
        self.n, self.d = int(x.shape[0]), int(x.shape[1])

    def blocks(self, batch: int) -> Iterator[np.ndarray]:
        for a in range(0, self.n, batch):
            yield np.asarray(self.x[a : a + batch], dtype=np.float32)


def prepare(x: np.ndarray, metric: str, where: str = "vectors", first_row: int = 0) -> np.ndarray:
    """float32, C-contiguous, finite (else VtpipeError naming the rows), L2-normalised for metric 'ip'."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        rows = ", ".join(str(first_row + int(i)) for i in bad[:5])
        raise VtpipeError(
            f"{where}: {len(bad)} vector(s) contain NaN or Inf (rows {rows}{', ...' if len(bad) > 5 else ''}); "
            f"nothing was indexed. Re-extract those videos or drop them from the store."
        )
    if metric == "ip":
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        x = x / np.maximum(norms, 1e-12)
    return x


def check_metric(metric: str) -> int:
    if metric not in ("ip", "l2"):
        raise VtpipeError(f"metric must be 'ip' (cosine on normalised vectors) or 'l2', got {metric!r}")
    return faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2


def collect(source: VectorSource, metric: str, rows: np.ndarray, batch: int, where: str) -> np.ndarray:
    """Read the given (sorted, unique) rows in one pass, validating every block on the way."""
    out = np.empty((len(rows), source.d), dtype=np.float32)
    a = got = 0
    for block in source.blocks(batch):
        b = a + len(block)
        block = prepare(block, metric, where, first_row=a)
        lo, hi = np.searchsorted(rows, [a, b])
        out[got : got + hi - lo] = block[rows[lo:hi] - a]
        got += hi - lo
        a = b
    if a != source.n:
        raise VtpipeError(f"{where}: expected {source.n} vectors, read {a}")
    return out
