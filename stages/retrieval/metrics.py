"""Exact, scalable retrieval ranks and metrics (R@K, MdR, MnR, std, Geom).

Conventions (see shared/specs/evaluation.md, "Retrieval metrics")
----------------------------------------------------------------
* A rank is 0-based: the number of gallery items that beat the ground truth. Reported MdR/MnR are
  1-based (rank + 1).
* Tie policies (`ties=`), for a query whose ground-truth score is ``s``:
    - ``"optimistic"`` (vtpipe default): count of scores strictly greater than ``s``;
    - ``"pessimistic"``: count of the *other* items scoring ``>= s`` (the ground truth itself excluded);
    - ``"average"``: mean of the two (may be x.5). This is *not* the collaborative-experts / QB-Norm
      metric: that one averages too, but counts R@1 only for a rank of exactly 0 and, in multi-caption
      v2t, also averages over the video's own other captions tied with its best one - see
      :mod:`.conventions` (``"collaborative-experts"``), which the evaluate stage uses;
    - ``"clip4clip"``: reproduces CLIP4Clip/DRL/VT-TWINS ``compute_metrics`` (sort the row, take every
      position where the sorted value equals the diagonal): a row with ``e`` items tied with its ground
      truth contributes the ``e + 1`` entries ``optimistic, ..., pessimistic``; a row whose ground-truth
      score is not finite contributes none (``inf - inf`` is NaN there). The result is therefore *not*
      one rank per query, and R@K/MdR/MnR are computed over the entries, as the reference code does.
      vtpipe computes it from the two counts, so it is exact and blockwise too; it exists only to
      reproduce published numbers (the reference itself needs the full sorted square matrix).
* Exact ranks never need a sorted matrix: one pass over the row counts the items that beat the ground
  truth. From features, the similarity is computed a block of query rows at a time (``block`` rows x the
  full gallery, float32 BLAS) and each block is counted by a numba kernel, so no Q x G matrix is held.
* The ground-truth score of a row is read from the *same* GEMM output as the rest of the row, so ties are
  judged on identical float values.
* Scores are ranked in float64 as ``scale * s + bias[j]`` (``s`` the float32/float64 dot product), the
  same expression the dense reference uses, so blockwise and dense ranks agree bit for bit.
* A NaN ground-truth score raises ``ValueError`` (its rank is undefined); NaN gallery scores never beat
  anything.

Multi-caption datasets
----------------------
* t2v: each caption is a query, its ground truth is its video's gallery index: use
  :func:`ranks_from_features` with ``gt = caption_to_video``.
* v2t (:func:`v2t_ranks_multi`), ``gallery="captions"`` (default; the collaborative-experts gallery, but
  see :mod:`.conventions` for its tie rule, which also counts the video's own tied captions): every video is a
  query and the gallery is all captions. The rank of caption ``c`` (of video ``v``) for ``v`` counts the
  captions of *other* videos scoring strictly above ``c`` (optimistic; ``>=`` for pessimistic); the
  video's rank is the minimum over its captions, i.e. the rank of its best-scoring caption. (For
  optimistic ties it makes no difference whether the video's own other captions are counted: none can
  score strictly above the best one; for pessimistic ones they are excluded because they are correct
  answers too.)
* v2t, ``gallery="videos"`` (CLIP4Clip ``tensor_video_to_text_sim``): each video group is scored by its
  best caption (max over the group's captions of the similarity) and the query video is ranked among the
  V groups as usual.
* :func:`t2v_v2t_ranks` computes t2v ranks and v2t ranks (``gallery="captions"``) in *one* pass over the
  caption x video similarity: rows are counted for t2v, columns for v2t. The per-video v2t thresholds
  (the best own-caption score) are computed first from small GEMM tiles; the main pass re-reads every
  own-caption score and, should BLAS ever have rounded a tile differently, the affected videos are
  recounted by a separate video-major pass whose threshold comes from the same GEMM output.

Medians
-------
``median="numpy"`` averages the two middle ranks (MdR can be x.5); ``median="torch"`` takes the lower
middle value (``torch.median``; CLIP4Clip's multi-caption t2v path).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ._numba import KIND_AFFINE
from .blocks import DEFAULT_MAX_BLOCK_BYTES, ScoreFn, _affine_params, _as_index, _as_matrix, _as_vector, _rows_per_block, _score_block
from .rank_kernels import NO_BEFORE, _row_kernel

__all__ = [
    "TIES",
    "MEDIANS",
    "ranks_from_scores",
    "ranks_from_features",
    "retrieval_metrics",
]

TIES = ("optimistic", "pessimistic", "average", "clip4clip")
MEDIANS = ("numpy", "torch")
V2T_GALLERIES = ("captions", "videos")


def _check_ties(ties: str) -> None:
    if ties not in TIES:
        raise ValueError(f"ties={ties!r} is not one of {TIES}")


def _finish(n_gt: np.ndarray, n_ge: np.ndarray, thr: np.ndarray, ties: str, what: str) -> np.ndarray:
    """Turn the two counts into ranks under `ties` (float64)."""
    if ties == "clip4clip":
        ok = np.isfinite(thr)
        lo = n_gt[ok].astype(np.int64)
        hi = n_ge[ok].astype(np.int64)
        lengths = hi - lo + 1
        total = int(lengths.sum())
        starts = np.repeat(lo, lengths)
        offsets = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        return (starts + offsets).astype(np.float64)
    nan = np.isnan(thr)
    if nan.any():
        bad = np.flatnonzero(nan)
        raise ValueError(
            f"{what}: the ground-truth score is NaN for {bad.size} queries (first: index {int(bad[0])}); "
            "their rank is undefined - check the features for NaN"
        )
    if ties == "optimistic":
        return n_gt.astype(np.float64)
    if ties == "pessimistic":
        return n_ge.astype(np.float64)
    return (n_gt.astype(np.float64) + n_ge.astype(np.float64)) / 2.0


def ranks_from_scores(scores, gt=None, ties: str = "optimistic") -> np.ndarray:
    """0-based ranks of each row's ground truth in a dense score matrix (higher = better).

    ``gt[i]`` is the gallery column of query ``i``'s ground truth; ``None`` means the diagonal
    (``gt = arange(Q)``). Returns float64 ranks of shape ``[Q]`` (for ``ties="clip4clip"`` the entries of
    CLIP4Clip's ``compute_metrics``, see the module doc). One pass per row, no sort.
    """
    _check_ties(ties)
    S = _as_matrix(scores, "scores")
    q, g = S.shape
    if gt is None:
        if g < q:
            raise ValueError(f"gt=None means the diagonal, but scores has {q} rows and only {g} columns")
        gt = np.arange(q)
    gt = _as_index(gt, q, g, "gt")
    ra, rc, cx = _affine_params(q, g, 1.0, None)
    n_gt = np.empty(q, np.int64)
    n_ge = np.empty(q, np.int64)
    thr = np.empty(q)
    if q:
        _row_kernel(S, gt, KIND_AFFINE, ra, rc, cx, n_gt, n_ge, thr, NO_BEFORE)
    return _finish(n_gt, n_ge, thr, ties, "ranks_from_scores")


def ranks_from_features(
    queries,
    gallery,
    gt,
    ties: str = "optimistic",
    block: int = 4096,
    bias=None,
    score_fn: ScoreFn | None = None,
    *,
    scale: float = 1.0,
    max_block_bytes: int | None = DEFAULT_MAX_BLOCK_BYTES,
) -> np.ndarray:
    """Exact ranks for ``score_ij = scale * (queries_i . gallery_j) + bias_j`` without holding Q x G.

    The similarity is computed ``block`` query rows at a time against the full gallery (``block`` is
    lowered so one block stays under ``max_block_bytes``); memory is O((Q + G) * D + block * G).
    ``bias`` (shape ``[G]``) is a per-gallery-column additive term - how SK-norm is applied (with
    ``scale`` = the logit scale). ``score_fn(query_block, gallery) -> [b, G]`` replaces the dot product
    (e.g. a token-wise similarity); callers L2-normalise first for cosine.
    """
    _check_ties(ties)
    Qf = _as_matrix(queries, "queries")
    Gf = _as_matrix(gallery, "gallery")
    if score_fn is None and Qf.shape[1] != Gf.shape[1]:
        raise ValueError(f"queries have dim {Qf.shape[1]} but gallery has dim {Gf.shape[1]}")
    q, ng = Qf.shape[0], Gf.shape[0]
    gt = _as_index(gt, q, ng, "gt")
    if bias is not None:
        bias = _as_vector(bias, ng, "bias")
    ra, rc, cx = _affine_params(q, ng, scale, bias)
    rows = _rows_per_block(block, ng, 8 if Qf.dtype == np.float64 else 4, max_block_bytes)
    n_gt = np.empty(q, np.int64)
    n_ge = np.empty(q, np.int64)
    thr = np.empty(q)
    for r0 in range(0, q, rows):
        r1 = min(q, r0 + rows)
        S = _score_block(score_fn, Qf[r0:r1], Gf)
        _row_kernel(S, gt[r0:r1], KIND_AFFINE, ra[r0:r1], rc[r0:r1], cx,
                    n_gt[r0:r1], n_ge[r0:r1], thr[r0:r1], NO_BEFORE)
        del S
    return _finish(n_gt, n_ge, thr, ties, "ranks_from_features")


def _median(r: np.ndarray, median: str) -> float:
    if median == "numpy":
        return float(np.median(r))
    s = np.sort(r)
    return float(s[(s.size - 1) // 2])


def retrieval_metrics(
    ranks,
    ks: Sequence[int] = (1, 5, 10, 50),
    median: str = "numpy",
    *,
    ties: str = "optimistic",
    n_queries: int | None = None,
) -> dict:
    """R@K (percent), MdR, MnR, StdR, Geom from 0-based ranks.

    * ``R@K`` = 100 * fraction of ranks < K (over the entries given; CLIP4Clip-style expanded ranks use
      their own count as the denominator, as the reference does);
    * ``MdR`` = median(rank) + 1 (``median="numpy"``: mean of the two middle values; ``"torch"``: the
      lower middle value);
    * ``MnR`` = mean(rank) + 1; ``StdR`` = population std (ddof=0) of rank + 1;
    * ``Geom`` = geometric mean of R@1, R@5, R@10 (0 if any is 0), computed whatever ``ks`` is.
    ``ties`` is only recorded (it is how the ranks were made); ``n_queries`` is recorded when given
    (``ties="clip4clip"`` ranks may have more entries than queries).
    """
    if median not in MEDIANS:
        raise ValueError(f"median={median!r} is not one of {MEDIANS}")
    _check_ties(ties)
    r = np.asarray(ranks, dtype=np.float64).ravel()
    if r.size == 0:
        raise ValueError("retrieval_metrics: no ranks given")
    if np.isnan(r).any() or (r < 0).any():
        raise ValueError("retrieval_metrics: ranks must be non-negative numbers (0-based)")
    out: dict = {}
    for k in ks:
        out[f"R@{int(k)}"] = 100.0 * float(np.count_nonzero(r < k)) / r.size
    r1, r5, r10 = (100.0 * float(np.count_nonzero(r < k)) / r.size for k in (1, 5, 10))
    out["MdR"] = _median(r, median) + 1.0
    out["MnR"] = float(r.mean()) + 1.0
    out["StdR"] = float((r + 1.0).std())
    out["Geom"] = 0.0 if min(r1, r5, r10) <= 0 else float(math.exp((math.log(r1) + math.log(r5) + math.log(r10)) / 3))
    out["n_queries"] = int(n_queries) if n_queries is not None else int(r.size)
    out["n_ranks"] = int(r.size)
    out["ties"] = ties
    out["median"] = median
    return out
