"""Argument checks and the blockwise similarity shared by the rank, re-ranking and token-similarity code:
arrays made contiguous float32/float64 matrices and int64 indices, how many query rows fit one block of
``max_block_bytes``, and one block of scores from ``score_fn`` (default: the dot product)."""

from __future__ import annotations

from typing import Callable

import numpy as np

#: Default cap on one similarity block (rows x gallery) in bytes; ``block`` is lowered to fit.
DEFAULT_MAX_BLOCK_BYTES = 256 * 2**20

ScoreFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _as_matrix(x, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array, got shape {x.shape}")
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64)
    return np.ascontiguousarray(x)


def _as_index(gt, n: int, upper: int, name: str) -> np.ndarray:
    gt = np.asarray(gt)
    if gt.ndim != 1 or gt.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},), got {gt.shape}")
    if gt.size and not np.issubdtype(gt.dtype, np.integer):
        raise ValueError(f"{name} must hold integer indices, got dtype {gt.dtype}")
    gt = gt.astype(np.int64, copy=False)
    if gt.size and (gt.min() < 0 or gt.max() >= upper):
        bad = int(np.flatnonzero((gt < 0) | (gt >= upper))[0])
        raise ValueError(f"{name}[{bad}] = {int(gt[bad])} is out of range [0, {upper})")
    return np.ascontiguousarray(gt)


def _as_vector(x, n: int, name: str) -> np.ndarray:
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float64))
    if x.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {x.shape}")
    return x


def _rows_per_block(block: int, n_cols: int, itemsize: int, max_block_bytes: int | None) -> int:
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    if max_block_bytes:
        block = min(block, max(1, int(max_block_bytes) // max(1, n_cols * itemsize)))
    return int(block)


def _default_score(q: np.ndarray, g: np.ndarray) -> np.ndarray:
    return q @ g.T


def _score_block(score_fn: ScoreFn | None, q: np.ndarray, g: np.ndarray) -> np.ndarray:
    s = (score_fn or _default_score)(q, g)
    s = np.asarray(s)
    if s.shape != (q.shape[0], g.shape[0]):
        raise ValueError(f"score_fn returned shape {s.shape}, expected {(q.shape[0], g.shape[0])}")
    if s.dtype not in (np.float32, np.float64):
        s = s.astype(np.float64)
    return np.ascontiguousarray(s)


def _affine_params(n_rows: int, n_cols: int, scale: float, bias: np.ndarray | None):
    ra = np.full(n_rows, float(scale))
    rc = np.ones(n_rows) if bias is not None else np.zeros(n_rows)
    cx = bias if bias is not None else np.zeros(n_cols)
    return ra, rc, cx
