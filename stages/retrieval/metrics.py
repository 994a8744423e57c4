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
from typing import Callable, Sequence

import numba
import numpy as np
from numba import njit, prange

from ._numba import KIND_AFFINE, affine_value, col_counts, dsl_value, row_counts, value

__all__ = [
    "TIES",
    "MEDIANS",
    "ranks_from_scores",
    "ranks_from_features",
    "t2v_v2t_ranks",
    "v2t_ranks_multi",
    "v2t_ranks_multi_from_scores",
    "retrieval_metrics",
]

TIES = ("optimistic", "pessimistic", "average", "clip4clip")
MEDIANS = ("numpy", "torch")
V2T_GALLERIES = ("captions", "videos")

#: Default cap on one similarity block (rows x gallery) in bytes; ``block`` is lowered to fit.
DEFAULT_MAX_BLOCK_BYTES = 256 * 2**20

ScoreFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


# --------------------------------------------------------------------------------------------------
# numba kernels (compiled without fastmath: comparisons must round identically everywhere)
# --------------------------------------------------------------------------------------------------


@njit(parallel=True, cache=True)
def _row_kernel(S, gt, kind, ra, rc, cx, out_gt, out_ge, out_thr):  # pragma: no cover - compiled
    """Per row i: count v_ij > v_i,gt and v_ij >= v_i,gt (self excluded), v = value(kind, S, ra_i, rc_i, cx_j)."""
    n = S.shape[0]
    for i in prange(n):
        g = gt[i]
        a = ra[i]
        c = rc[i]
        thr = value(kind, S[i, g], a, c, cx[g])
        if kind == KIND_AFFINE:
            n_gt, n_ge = row_counts(affine_value, S, i, a, c, cx, thr)
        else:
            n_gt, n_ge = row_counts(dsl_value, S, i, a, c, cx, thr)
        out_gt[i] = n_gt
        out_ge[i] = n_ge - 1 if thr == thr else n_ge
        out_thr[i] = thr


@njit(parallel=True, cache=True)
def _fused_kernel(S, gt, kind, ra, rc, cx, ca, cc, rx, col_thr,
                  out_gt, out_ge, out_thr, acc_gt, acc_ge):  # pragma: no cover - compiled
    """Row counts (t2v, as `_row_kernel`) and column counts (v2t) over one block of rows.

    Column j compares w_ij = value(kind, S_ij, ca_j, cc_j, rx_i) with col_thr[j]; per-thread accumulators
    (local, then added to acc_*[t]) avoid races. Own-caption corrections are applied by `_fused_own`.
    """
    n, m = S.shape
    nt = acc_gt.shape[0]
    for t in prange(nt):
        lo = t * n // nt
        hi = (t + 1) * n // nt
        agt = np.zeros(m, np.int32)
        age = np.zeros(m, np.int32)
        for i in range(lo, hi):
            g = gt[i]
            a = ra[i]
            c = rc[i]
            thr = value(kind, S[i, g], a, c, cx[g])
            if kind == KIND_AFFINE:
                n_gt, n_ge = row_counts(affine_value, S, i, a, c, cx, thr)
                col_counts(affine_value, S, i, ca, cc, rx[i], col_thr, agt, age)
            else:
                n_gt, n_ge = row_counts(dsl_value, S, i, a, c, cx, thr)
                col_counts(dsl_value, S, i, ca, cc, rx[i], col_thr, agt, age)
            out_gt[i] = n_gt
            out_ge[i] = n_ge - 1 if thr == thr else n_ge
            out_thr[i] = thr
        for j in range(m):
            acc_gt[t, j] += agt[j]
            acc_ge[t, j] += age[j]


@njit(cache=True)
def _fused_own(S, gt, kind, ca, cc, rx, col_thr, col_gt, col_ge, col_seen, col_eq):  # pragma: no cover
    """Remove each row's own column from that column's counts; count the own captions equal to the
    threshold (col_eq); record the max own score seen."""
    for i in range(S.shape[0]):
        j = gt[i]
        w = value(kind, S[i, j], ca[j], cc[j], rx[i])
        if w > col_thr[j]:
            col_gt[j] -= 1
        if w >= col_thr[j]:
            col_ge[j] -= 1
        if w == col_thr[j]:
            col_eq[j] += 1
        if w > col_seen[j] or col_seen[j] != col_seen[j]:
            col_seen[j] = w


@njit(cache=True)
def _values_at(T, rows, cols, kind, a_cols, c_cols, x_rows, out):  # pragma: no cover - compiled
    """out[k] = value(kind, T[rows[k], cols[k]], a_cols[k], c_cols[k], x_rows[k])."""
    for k in range(rows.shape[0]):
        out[k] = value(kind, T[rows[k], cols[k]], a_cols[k], c_cols[k], x_rows[k])


@njit(parallel=True, cache=True)
def _v2t_caps_kernel(S, vids, ptr, idx, kind, ra, rc, cx,
                     out_gt, out_ge, out_thr, out_own):  # pragma: no cover - compiled
    """Rows = videos (global ids `vids`), columns = all captions; own captions = idx[ptr[v]:ptr[v+1]].

    thr = max over own captions; count captions with value > thr (own ones never are) and the other
    videos' captions with value >= thr; out_own = the video's *other* own captions equal to thr.
    """
    n, m = S.shape
    for r in prange(n):
        v = vids[r]
        a = ra[r]
        c = rc[r]
        thr = -np.inf
        has_nan = False
        for k in range(ptr[v], ptr[v + 1]):
            cap = idx[k]
            w = value(kind, S[r, cap], a, c, cx[cap])
            if w != w:
                has_nan = True
            elif w > thr:
                thr = w
        if has_nan and thr == -np.inf:
            thr = np.nan
        if kind == KIND_AFFINE:
            n_gt, n_ge = row_counts(affine_value, S, r, a, c, cx, thr)
        else:
            n_gt, n_ge = row_counts(dsl_value, S, r, a, c, cx, thr)
        n_eq = 0
        for k in range(ptr[v], ptr[v + 1]):
            cap = idx[k]
            w = value(kind, S[r, cap], a, c, cx[cap])
            n_ge -= 1 if w >= thr else 0
            n_eq += 1 if w == thr else 0
        out_gt[r] = n_gt
        out_ge[r] = n_ge
        out_thr[r] = thr
        out_own[r] = max(n_eq - 1, 0)


@njit(parallel=True, cache=True)
def _v2t_groups_kernel(S, vids, c2v, n_videos, kind, ra, rc, cx,
                       out_gt, out_ge, out_thr, nt):  # pragma: no cover - compiled
    """Rows = videos, columns = captions; each video group is scored by its best caption."""
    n, m = S.shape
    nt = min(nt, max(n, 1))
    for t in prange(nt):
        gmax = np.empty(n_videos)
        lo = t * n // nt
        hi = (t + 1) * n // nt
        for r in range(lo, hi):
            v = vids[r]
            a = ra[r]
            c = rc[r]
            gmax[:] = -np.inf
            for j in range(m):
                w = value(kind, S[r, j], a, c, cx[j])
                u = c2v[j]
                if w > gmax[u]:
                    gmax[u] = w
            thr = gmax[v]
            n_gt = 0
            n_ge = 0
            for u in range(n_videos):
                if u != v:
                    n_gt += 1 if gmax[u] > thr else 0
                    n_ge += 1 if gmax[u] >= thr else 0
            out_gt[r] = n_gt
            out_ge[r] = n_ge
            out_thr[r] = thr


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def _check_ties(ties: str) -> None:
    if ties not in TIES:
        raise ValueError(f"ties={ties!r} is not one of {TIES}")


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


def _affine_params(n_rows: int, n_cols: int, scale: float, bias: np.ndarray | None):
    ra = np.full(n_rows, float(scale))
    rc = np.ones(n_rows) if bias is not None else np.zeros(n_rows)
    cx = bias if bias is not None else np.zeros(n_cols)
    return ra, rc, cx


# --------------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------------


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
        _row_kernel(S, gt, KIND_AFFINE, ra, rc, cx, n_gt, n_ge, thr)
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
                    n_gt[r0:r1], n_ge[r0:r1], thr[r0:r1])
        del S
    return _finish(n_gt, n_ge, thr, ties, "ranks_from_features")


def _prepare_pairs(text_feats, video_feats, caption_to_video, ties: str, ties_v2t: str | None, require_all: bool):
    """Checked inputs of a caption x video evaluation: (text matrix, video matrix, caption -> video index,
    its CSR pointers and indices, the v2t tie policy). caption_to_video=None pairs caption i with video i."""
    ties_v2t = ties if ties_v2t is None else ties_v2t
    _check_ties(ties)
    _check_ties(ties_v2t)
    Tf = _as_matrix(text_feats, "text_feats")
    Vf = _as_matrix(video_feats, "video_feats")
    nc, nv = Tf.shape[0], Vf.shape[0]
    if caption_to_video is None:
        if nc != nv:
            raise ValueError(f"caption_to_video=None needs as many captions as videos, got {nc} and {nv}")
        caption_to_video = np.arange(nc)
    c2v, ptr, idx = _caption_index(caption_to_video, nc, nv, require_all=require_all)
    return Tf, Vf, c2v, ptr, idx, ties_v2t


def _caption_index(caption_to_video, n_captions: int, n_videos: int, require_all: bool):
    c2v = _as_index(caption_to_video, n_captions, n_videos, "caption_to_video")
    counts = np.bincount(c2v, minlength=n_videos)
    if require_all and (counts == 0).any():
        bad = int(np.flatnonzero(counts == 0)[0])
        raise ValueError(
            f"video {bad} has no caption in caption_to_video ({int((counts == 0).sum())} such videos): "
            "v2t needs at least one caption per video - drop those videos from the gallery"
        )
    ptr = np.zeros(n_videos + 1, np.int64)
    np.cumsum(counts, out=ptr[1:])
    idx = np.argsort(c2v, kind="stable").astype(np.int64)
    return c2v, ptr, idx


def _v2t_pass(Vf, Cf, c2v, ptr, idx, kind, ra, rc, cx, gallery, block, score_fn, max_block_bytes,
              videos=None):
    """Video-major v2t pass over all captions for the given videos (default: all)."""
    nv = Vf.shape[0]
    vids_all = np.arange(nv, dtype=np.int64) if videos is None else np.asarray(videos, np.int64)
    n = vids_all.shape[0]
    n_gt = np.empty(n, np.int64)
    n_ge = np.empty(n, np.int64)
    thr = np.empty(n)
    own = np.zeros(n, np.int64)
    rows = _rows_per_block(block, Cf.shape[0], 8 if Vf.dtype == np.float64 else 4, max_block_bytes)
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        vids = np.ascontiguousarray(vids_all[r0:r1])
        S = _score_block(score_fn, Vf[vids] if videos is not None else Vf[r0:r1], Cf)
        if gallery == "captions":
            _v2t_caps_kernel(S, vids, ptr, idx, kind, ra[vids], rc[vids], cx,
                             n_gt[r0:r1], n_ge[r0:r1], thr[r0:r1], own[r0:r1])
        else:
            _v2t_groups_kernel(S, vids, c2v, nv, kind, ra[vids], rc[vids], cx,
                               n_gt[r0:r1], n_ge[r0:r1], thr[r0:r1], numba.get_num_threads())
        del S
    return n_gt, n_ge, thr, own


def v2t_ranks_multi(
    video_feats,
    caption_feats,
    caption_to_video,
    ties: str = "optimistic",
    block: int = 4096,
    caption_bias=None,
    score_fn: ScoreFn | None = None,
    *,
    gallery: str = "captions",
    scale: float = 1.0,
    max_block_bytes: int | None = DEFAULT_MAX_BLOCK_BYTES,
) -> np.ndarray:
    """v2t ranks with several captions per video (one rank per video; see the module doc).

    ``score_vc = scale * (video_v . caption_c) + caption_bias_c`` (``caption_bias``: the v2t SK-norm
    per-text bias). ``gallery="captions"``: min over the video's captions of the caption's rank among all
    other videos' captions (the collaborative-experts gallery). ``gallery="videos"``: CLIP4Clip, videos ranked by
    their best caption. Blockwise over videos: memory O((V + C) * D + block * C).
    """
    _check_ties(ties)
    if gallery not in V2T_GALLERIES:
        raise ValueError(f"gallery={gallery!r} is not one of {V2T_GALLERIES}")
    Vf = _as_matrix(video_feats, "video_feats")
    Cf = _as_matrix(caption_feats, "caption_feats")
    nv, nc = Vf.shape[0], Cf.shape[0]
    c2v, ptr, idx = _caption_index(caption_to_video, nc, nv, require_all=True)
    if caption_bias is not None:
        caption_bias = _as_vector(caption_bias, nc, "caption_bias")
    ra, rc, cx = _affine_params(nv, nc, scale, caption_bias)
    n_gt, n_ge, thr, _own = _v2t_pass(Vf, Cf, c2v, ptr, idx, KIND_AFFINE, ra, rc, cx, gallery, block,
                                      score_fn, max_block_bytes)
    return _finish(n_gt, n_ge, thr, ties, "v2t_ranks_multi")


def v2t_ranks_multi_from_scores(scores_vc, caption_to_video, ties: str = "optimistic",
                                gallery: str = "captions") -> np.ndarray:
    """:func:`v2t_ranks_multi` on a dense ``[V, C]`` video x caption score matrix (e.g. a transposed t2v
    matrix or a re-ranked one)."""
    _check_ties(ties)
    if gallery not in V2T_GALLERIES:
        raise ValueError(f"gallery={gallery!r} is not one of {V2T_GALLERIES}")
    S = _as_matrix(scores_vc, "scores_vc")
    nv, nc = S.shape
    c2v, ptr, idx = _caption_index(caption_to_video, nc, nv, require_all=True)
    ra, rc, cx = _affine_params(nv, nc, 1.0, None)
    n_gt = np.empty(nv, np.int64)
    n_ge = np.empty(nv, np.int64)
    thr = np.empty(nv)
    vids = np.arange(nv, dtype=np.int64)
    if nv:
        if gallery == "captions":
            _v2t_caps_kernel(S, vids, ptr, idx, KIND_AFFINE, ra, rc, cx, n_gt, n_ge, thr, np.zeros(nv, np.int64))
        else:
            _v2t_groups_kernel(S, vids, c2v, nv, KIND_AFFINE, ra, rc, cx, n_gt, n_ge, thr,
                               numba.get_num_threads())
    return _finish(n_gt, n_ge, thr, ties, "v2t_ranks_multi_from_scores")


def _fused_ranks(Tf, Vf, c2v, ptr, idx, kind, t2v_params, v2t_params, ties_t2v, ties_v2t, block,
                 score_fn, max_block_bytes, tile: int = 256):
    """One pass over the caption x video similarity; see :func:`t2v_v2t_ranks`. Returns (t2v, v2t, info)."""
    t2v_c, v2t_c, info = _fused_counts(Tf, Vf, c2v, ptr, idx, kind, t2v_params, v2t_params, block, score_fn,
                                       max_block_bytes, tile)
    t2v = _finish(*t2v_c[:3], ties_t2v, "t2v")
    v2t = _finish(*v2t_c[:3], ties_v2t, "v2t")
    return t2v, v2t, info


def _fused_counts(Tf, Vf, c2v, ptr, idx, kind, t2v_params, v2t_params, block, score_fn, max_block_bytes,
                  tile: int = 256):
    """The counts behind :func:`_fused_ranks`: ((n_gt, n_ge, thr) per caption, (n_gt, n_ge, thr, own ties)
    per video, info). ``own ties`` = the video's other captions scoring exactly its best caption's score."""
    nc, nv = Tf.shape[0], Vf.shape[0]
    ra, rc, cx = t2v_params  # per caption, per caption, per video
    ca, cc, rx = v2t_params  # per video, per video, per caption

    # phase 1: per-video threshold = best own-caption score, from GEMM tiles of >= `tile` columns
    col_thr = np.full(nv, -np.inf)
    for c0 in range(0, nc, tile):
        c1 = min(nc, c0 + tile)
        vids = c2v[c0:c1]
        cols = np.unique(vids)
        if cols.size < min(tile // 2, nv):  # keep the GEMM shape BLAS-regular (small shapes may round differently)
            cols = np.union1d(cols, np.arange(min(tile // 2, nv)))
        T = _score_block(score_fn, Tf[c0:c1], Vf[cols])
        pos = np.searchsorted(cols, vids)
        w = np.empty(c1 - c0)
        _values_at(T, np.arange(c1 - c0, dtype=np.int64), pos.astype(np.int64), kind,
                   ca[vids], cc[vids], rx[c0:c1], w)
        np.maximum.at(col_thr, vids, w)
    if np.isnan(col_thr).any():
        bad = int(np.flatnonzero(np.isnan(col_thr))[0])
        raise ValueError(f"t2v_v2t_ranks: NaN own-caption score for video {bad}; check the features for NaN")

    nt = max(1, numba.get_num_threads())
    acc_gt = np.zeros((nt, nv), np.int64)
    acc_ge = np.zeros((nt, nv), np.int64)
    own_gt = np.zeros(nv, np.int64)
    own_ge = np.zeros(nv, np.int64)
    col_seen = np.full(nv, -np.inf)
    col_eq = np.zeros(nv, np.int64)
    n_gt = np.empty(nc, np.int64)
    n_ge = np.empty(nc, np.int64)
    thr = np.empty(nc)
    rows = _rows_per_block(block, nv, 8 if Tf.dtype == np.float64 else 4, max_block_bytes)
    for r0 in range(0, nc, rows):
        r1 = min(nc, r0 + rows)
        S = _score_block(score_fn, Tf[r0:r1], Vf)
        gtb = c2v[r0:r1]
        _fused_kernel(S, gtb, kind, ra[r0:r1], rc[r0:r1], cx, ca, cc, rx[r0:r1], col_thr,
                      n_gt[r0:r1], n_ge[r0:r1], thr[r0:r1], acc_gt, acc_ge)
        _fused_own(S, gtb, kind, ca, cc, rx[r0:r1], col_thr, own_gt, own_ge, col_seen, col_eq)
        del S
    v_gt = acc_gt.sum(axis=0) + own_gt
    v_ge = acc_ge.sum(axis=0) + own_ge
    v_own = np.maximum(col_eq - 1, 0)
    # verification: the thresholds must be the max of the own-caption scores as seen by the main pass
    bad = np.flatnonzero(col_seen != col_thr)
    if bad.size:
        b_gt, b_ge, b_thr, b_own = _v2t_pass(Vf, Tf, c2v, ptr, idx, kind, ca, cc, rx, "captions", block,
                                             score_fn, max_block_bytes, videos=bad)
        v_gt[bad] = b_gt
        v_ge[bad] = b_ge
        col_thr[bad] = b_thr
        v_own[bad] = b_own
    return (n_gt, n_ge, thr), (v_gt, v_ge, col_thr, v_own), {"v2t_recounted_videos": int(bad.size)}


def t2v_v2t_ranks(
    text_feats,
    video_feats,
    caption_to_video=None,
    ties: str = "optimistic",
    block: int = 4096,
    video_bias=None,
    text_bias=None,
    score_fn: ScoreFn | None = None,
    *,
    ties_v2t: str | None = None,
    scale: float = 1.0,
    max_block_bytes: int | None = DEFAULT_MAX_BLOCK_BYTES,
    return_info: bool = False,
):
    """t2v and v2t ranks from one blockwise pass over the caption x video similarity.

    ``caption_to_video[c]`` = gallery index of caption ``c``'s video (``None``: one caption per video,
    caption ``i`` pairs with video ``i``). t2v: each caption ranked among the videos by
    ``scale * s + video_bias[v]``; v2t: each video ranked among all captions by ``scale * s +
    text_bias[c]`` with the ``gallery="captions"`` convention of :func:`v2t_ranks_multi` (for one caption
    per video that is the usual square-matrix v2t rank). ``ties_v2t`` defaults to ``ties`` (TVTSv2 uses
    optimistic t2v and averaged v2t). Costs one similarity GEMM (plus ~``256 / G`` of one for the
    thresholds); memory O((C + V) * D + block * V).
    """
    Tf, Vf, c2v, ptr, idx, ties_v2t = _prepare_pairs(text_feats, video_feats, caption_to_video, ties, ties_v2t,
                                                     require_all=True)
    nc, nv = Tf.shape[0], Vf.shape[0]
    if video_bias is not None:
        video_bias = _as_vector(video_bias, nv, "video_bias")
    if text_bias is not None:
        text_bias = _as_vector(text_bias, nc, "text_bias")
    t2v_p = _affine_params(nc, nv, scale, video_bias)
    ca, cc, rx = _affine_params(nv, nc, scale, text_bias)
    t2v, v2t, info = _fused_ranks(Tf, Vf, c2v, ptr, idx, KIND_AFFINE, t2v_p, (ca, cc, rx), ties,
                                  ties_v2t, block, score_fn, max_block_bytes)
    return (t2v, v2t, info) if return_info else (t2v, v2t)


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
