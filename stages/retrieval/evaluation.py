"""The evaluate stage's retrieval call: t2v / v2t metrics under a named convention, with a re-ranker,
blockwise from features (no N x M matrix), with tie diagnostics.

Re-rankers and their banks (formulas: :mod:`.rerank`): SK-norm and QB-Norm take the *training captions*
as the t2v bank and the *training videos* as the v2t bank (UCoFiA ``eval_v2t``; QB-Norm's v2t); DSL
needs no bank. Conventions (``ties``): :mod:`.conventions`. Diagnostics: :mod:`.diagnostics`.
"""

from __future__ import annotations

from typing import Sequence

import numba
import numpy as np

from ._numba import KIND_AFFINE, KIND_DSL
from .conventions import (
    RankCounts,
    check_convention,
    median_for,
    metrics_for,
    needs_before,
    ranks_for,
    v2t_gallery_for,
)
from .diagnostics import tie_diagnostics
from .blocks import DEFAULT_MAX_BLOCK_BYTES, ScoreFn, _rows_per_block, _score_block
from .metrics import V2T_GALLERIES
from .pair_ranks import _fused_counts, _prepare_pairs, _v2t_pass
from .rank_kernels import NO_BEFORE, _row_kernel
from .rerank import RERANKERS, _argmax_rows_cols, _bank_log_z, _bank_topk_set, _lse_rows_cols
from .sk_norm import DEFAULT_SK_CACHE_BYTES, DEFAULT_SK_MAX_ERROR, sk_norm_bias

__all__ = ["evaluate_retrieval"]


def _rerank_params(rerank, directions, applied, Tf, Vf, scale, bank_text_feats, bank_video_feats, n_iters,
                   temperature, beta, k, sk_cache_bytes, sk_kernel, sk_max_error, kw):
    """(kind, t2v params (ra, rc, cx), v2t params (ca, cc, rx), extra info per direction)."""
    nc, nv = Tf.shape[0], Vf.shape[0]
    block, score_fn, max_block_bytes = kw["block"], kw["score_fn"], kw["max_block_bytes"]
    kind = KIND_AFFINE
    # t2v params: per caption (ra, rc), per video cx; v2t params: per video (ca, cc), per caption rx
    ra, rc, cx = np.ones(nc), np.zeros(nc), np.zeros(nv)
    ca, cc, rx = np.ones(nv), np.zeros(nv), np.zeros(nc)
    extra: dict = {}
    if rerank == "sk-norm":
        sk = dict(scale=scale, n_iters=n_iters, cache_bytes=sk_cache_bytes, kernel=sk_kernel, max_error=sk_max_error,
                  return_info=True, **kw)
        if applied["t2v"] == "sk-norm" and "t2v" in directions:
            g, info = sk_norm_bias(bank_text_feats, Vf, **sk)
            ra[:], rc[:], cx = scale, 1.0, g
            extra["t2v"] = {"sk_norm": info, "bank": "training captions", "bank_size": int(len(bank_text_feats))}
        if applied["v2t"] == "sk-norm" and "v2t" in directions:
            h, info = sk_norm_bias(bank_video_feats, Tf, **sk)
            ca[:], cc[:], rx = scale, 1.0, h
            extra["v2t"] = {"sk_norm": info, "bank": "training videos", "bank_size": int(len(bank_video_feats))}
    elif rerank == "dsl":
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        kind = KIND_DSL
        row_lse = np.empty(nc)
        col_max = np.full(nv, -np.inf)
        col_sum = np.zeros(nv)
        lse_acc = np.zeros((max(1, numba.get_num_threads()), nv))
        rows = _rows_per_block(block, nv, 4, max_block_bytes)
        for r0 in range(0, nc, rows):
            S = _score_block(score_fn, Tf[r0:r0 + rows], Vf)
            _lse_rows_cols(S, float(scale), 1.0 / temperature, row_lse[r0:r0 + rows], col_max, col_sum, lse_acc)
        col_lse = col_max + np.log(col_sum)
        # t2v: softmax over captions (queries) per video column; v2t: over videos per caption
        ra[:], rc[:], cx = scale, 1.0 / temperature, col_lse
        ca[:], cc[:], rx = scale, 1.0 / temperature, row_lse
    elif rerank == "qb-norm":
        row_arg = np.empty(nc, np.int64)
        col_best = np.full(nv, -np.inf)
        col_arg = np.zeros(nv, np.int64)
        need = [d for d in directions if applied[d] == "qb-norm"]
        if need:
            rows = _rows_per_block(block, nv, 4, max_block_bytes)
            for r0 in range(0, nc, rows):
                S = _score_block(score_fn, Tf[r0:r0 + rows], Vf)
                _argmax_rows_cols(S, r0, row_arg[r0:r0 + rows], col_best, col_arg)
        if "t2v" in need:
            in_r = _bank_topk_set(bank_text_feats, Vf, k, block, score_fn, max_block_bytes)
            use = in_r[row_arg]
            ra[use], rc[use] = beta, 1.0
            cx = -_bank_log_z(bank_text_feats, Vf, beta, block, score_fn, max_block_bytes)
            extra["t2v"] = {"qb_norm_rows": int(use.sum()), "bank": "training captions",
                            "bank_size": int(len(bank_text_feats))}
        if "v2t" in need:
            in_r = _bank_topk_set(bank_video_feats, Tf, k, block, score_fn, max_block_bytes)
            use = in_r[col_arg]
            ca[use], cc[use] = beta, 1.0
            rx = -_bank_log_z(bank_video_feats, Tf, beta, block, score_fn, max_block_bytes)
            extra["v2t"] = {"qb_norm_rows": int(use.sum()), "bank": "training videos",
                            "bank_size": int(len(bank_video_feats))}
    return kind, (ra, rc, cx), (ca, cc, rx), extra


def _t2v_counts(Tf, Vf, c2v, kind, params, before: bool, kw) -> RankCounts:
    """t2v counts from a caption-major pass (with the tied-before counts when ``before``)."""
    ra, rc, cx = params
    nc, nv = Tf.shape[0], Vf.shape[0]
    n_gt, n_ge, thr = np.empty(nc, np.int64), np.empty(nc, np.int64), np.empty(nc)
    nb = np.zeros(nc, np.int64)
    rows = _rows_per_block(kw["block"], nv, 4, kw["max_block_bytes"])
    for r0 in range(0, nc, rows):
        r1 = min(nc, r0 + rows)
        S = _score_block(kw["score_fn"], Tf[r0:r1], Vf)
        _row_kernel(S, c2v[r0:r1], kind, ra[r0:r1], rc[r0:r1], cx, n_gt[r0:r1], n_ge[r0:r1], thr[r0:r1],
                    nb[r0:r1] if before else NO_BEFORE)
    return RankCounts(n_gt, n_ge, thr, before=nb if before else None)


def evaluate_retrieval(
    text_feats,
    video_feats,
    caption_to_video=None,
    *,
    rerank: str = "none",
    directions: Sequence[str] = ("t2v", "v2t"),
    ties: str = "optimistic",
    ties_v2t: str | None = None,
    median: str = "numpy",
    ks: Sequence[int] = (1, 5, 10, 50),
    v2t_gallery: str = "captions",
    scale: float = 100.0,
    bank_text_feats=None,
    bank_video_feats=None,
    n_iters: int = 4,
    temperature: float = 1.0,
    beta: float = 20.0,
    k: int = 1,
    block: int = 4096,
    max_block_bytes: int | None = DEFAULT_MAX_BLOCK_BYTES,
    sk_cache_bytes: int = DEFAULT_SK_CACHE_BYTES,
    sk_kernel: str = "float32",
    sk_max_error: float = DEFAULT_SK_MAX_ERROR,
    score_fn: ScoreFn | None = None,
    misses: dict | None = None,
    return_ranks: bool = False,
) -> dict:
    """t2v / v2t retrieval metrics with an optional re-ranker, blockwise from features.

    ``text_feats [C, D]`` (test captions), ``video_feats [V, D]``, ``caption_to_video [C]`` (``None``:
    caption i pairs with video i). Similarity = dot product (L2-normalise first for cosine), times
    ``scale`` where the method needs logits (SK-norm, DSL). ``ties`` (and ``ties_v2t``, default
    ``ties``) is a convention of :mod:`.conventions`; ``clip4clip`` and ``collaborative-experts`` fix
    the v2t gallery to their reference's (``videos`` / ``captions``), the others use ``v2t_gallery``.
    ``median="auto"`` takes the convention's own. Re-rankers:

    * ``"sk-norm"``: t2v bias per video from ``bank_text_feats`` (training captions); v2t bias per text
      from ``bank_video_feats`` (training videos); ``sk_kernel`` / ``sk_max_error`` / ``sk_cache_bytes``
      as ``kernel`` / ``max_error`` / ``cache_bytes`` of :func:`sk_norm_bias` (the info, with its error
      bound, is reported under ``rerank_info.sk_norm``);
    * ``"dsl"``: no bank; ``temperature``;
    * ``"qb-norm"``: t2v bank ``bank_text_feats``, v2t bank ``bank_video_feats``; ``beta``, ``k``.

    A direction whose bank is missing is evaluated without re-ranking, and its metrics say so
    (``"rerank": "none"`` with ``"rerank_requested"``). ``misses = {"t2v": n, "v2t": m}`` appends ``n``
    / ``m`` queries ranked last (rank = gallery size; e.g. captions whose video failed). Every result
    has ``tie_diagnostics`` (and ``warnings`` when ties move R@K by more than 0.1 points).
    Returns ``{"t2v": metrics, "v2t": metrics}`` (+ ``"ranks"`` and ``"counts"`` when ``return_ranks``).
    """
    if rerank not in RERANKERS:
        raise ValueError(f"rerank={rerank!r} is not one of {RERANKERS}")
    for d in directions:
        if d not in ("t2v", "v2t"):
            raise ValueError(f"direction {d!r} is not 't2v' or 'v2t'")
    if v2t_gallery not in V2T_GALLERIES:
        raise ValueError(f"v2t_gallery={v2t_gallery!r} is not one of {V2T_GALLERIES}")
    ties_v2t = ties if ties_v2t is None else ties_v2t
    check_convention(ties)
    check_convention(ties_v2t)
    gallery = v2t_gallery_for(ties_v2t, v2t_gallery)
    Tf, Vf, c2v, ptr, idx, _ = _prepare_pairs(text_feats, video_feats, caption_to_video, "optimistic", None,
                                              require_all="v2t" in directions)
    nc, nv = Tf.shape[0], Vf.shape[0]
    single = nc == nv and bool(np.all(np.bincount(c2v, minlength=nv) == 1))
    kw = dict(block=block, score_fn=score_fn, max_block_bytes=max_block_bytes)

    applied = {"t2v": rerank, "v2t": rerank}
    if rerank in ("sk-norm", "qb-norm"):
        if bank_text_feats is None:
            applied["t2v"] = "none"
        if bank_video_feats is None:
            applied["v2t"] = "none"
    kind, t2v_p, v2t_p, extra = _rerank_params(rerank, directions, applied, Tf, Vf, scale, bank_text_feats,
                                               bank_video_feats, n_iters, temperature, beta, k, sk_cache_bytes,
                                               sk_kernel, sk_max_error, kw)

    counts: dict[str, RankCounts] = {}
    t2v_before = "t2v" in directions and needs_before(ties, "t2v", single)
    if "v2t" in directions and gallery == "captions":
        t_c, v_c, _info = _fused_counts(Tf, Vf, c2v, ptr, idx, kind, t2v_p, v2t_p, block, score_fn, max_block_bytes)
        counts["v2t"] = RankCounts(*v_c[:3], own_ties=v_c[3])
        if "t2v" in directions:
            counts["t2v"] = _t2v_counts(Tf, Vf, c2v, kind, t2v_p, True, kw) if t2v_before else RankCounts(*t_c)
    else:
        if "t2v" in directions:
            counts["t2v"] = _t2v_counts(Tf, Vf, c2v, kind, t2v_p, t2v_before, kw)
        if "v2t" in directions:
            ca, cc, rx = v2t_p
            n_gt, n_ge, thr, own = _v2t_pass(Vf, Tf, c2v, ptr, idx, kind, ca, cc, rx, gallery, block, score_fn,
                                             max_block_bytes)
            counts["v2t"] = RankCounts(n_gt, n_ge, thr, own_ties=own if gallery == "captions" else None)

    misses = dict(misses or {})
    out: dict = {"ranks": {}, "counts": {}}
    for d in directions:
        conv = ties if d == "t2v" else ties_v2t
        c = counts[d]
        r = ranks_for(c, conv, d, single)
        n_miss = int(misses.get(d, 0))
        if n_miss:
            size = nv if (d == "t2v" or gallery == "videos") else nc
            r = np.concatenate([r, np.full(n_miss, float(size))])
        med = median_for(conv, median, d, single)
        m = metrics_for(r, conv, med, ks, n_queries=(nc if d == "t2v" else nv) + n_miss)
        m["rerank"] = applied[d]
        if applied[d] != rerank:
            m["rerank_requested"] = rerank
        if d == "v2t":
            m["v2t_gallery"] = gallery
        if n_miss:
            m["queries_counted_as_misses"] = n_miss
        if d in extra:
            m["rerank_info"] = extra[d]
        diag = tie_diagnostics(c.n_gt, c.n_ge, ks, m, d, misses=n_miss)
        m["tie_diagnostics"] = diag
        m["warnings"] = [diag["warning"]] if diag["warning"] else []
        if applied[d] != rerank:
            bank = "training captions" if d == "t2v" else "training videos"
            m["warnings"].append(f"{d}: {rerank} was requested but no bank of {bank} was given: evaluated "
                                 "without re-ranking")
        out[d] = m
        out["ranks"][d] = r
        out["counts"][d] = c
    if not return_ranks:
        out.pop("ranks")
        out.pop("counts")
    return out
