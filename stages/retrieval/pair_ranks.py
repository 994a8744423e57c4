"""Caption x video ranks with several captions per video: v2t ranks (captions or videos as the gallery, see
the conventions in stages.retrieval.metrics) and the fused pass that counts t2v rows and v2t columns from
one blockwise caption x video similarity."""

from __future__ import annotations

import numba
import numpy as np

from ._numba import KIND_AFFINE
from .blocks import DEFAULT_MAX_BLOCK_BYTES, ScoreFn, _affine_params, _as_index, _as_matrix, _as_vector, _rows_per_block, _score_block
from .metrics import V2T_GALLERIES, _check_ties, _finish
from .rank_kernels import _fused_kernel, _fused_own, _v2t_caps_kernel, _v2t_groups_kernel, _values_at

__all__ = ["t2v_v2t_ranks", "v2t_ranks_multi", "v2t_ranks_multi_from_scores"]


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
