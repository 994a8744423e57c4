"""The numba kernels behind the exact rank counts (compiled without fastmath: comparisons must round
identically everywhere). Each counts, per query row of one similarity block, the items scoring above and at
least as high as the ground truth; the value of an entry is ``_numba.value(kind, ...)`` (affine: scale *
s + bias, or DSL). Callers: stages.retrieval.metrics (one row per query), .pair_ranks (caption x video,
t2v and v2t), .evaluation (re-ranked rows)."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._numba import KIND_AFFINE, affine_value, col_counts, dsl_value, row_counts, value

#: out_before argument of _row_kernel when the tied-before count is not wanted
NO_BEFORE = np.empty(0, np.int64)


@njit(inline="always")
def _gt_counts(S, i, g, kind, a, c, cx):  # pragma: no cover - compiled
    """Row i of a block with its ground truth at column g: (thr = the ground truth's value, count of values
    > thr, count of the *other* items with values >= thr). Inlined into the row and fused kernels."""
    thr = value(kind, S[i, g], a, c, cx[g])
    if kind == KIND_AFFINE:
        n_gt, n_ge = row_counts(affine_value, S, i, a, c, cx, thr)
    else:
        n_gt, n_ge = row_counts(dsl_value, S, i, a, c, cx, thr)
    return thr, n_gt, (n_ge - 1 if thr == thr else n_ge)


@njit(parallel=True, cache=True)
def _row_kernel(S, gt, kind, ra, rc, cx, out_gt, out_ge, out_thr, out_before):  # pragma: no cover - compiled
    """Per row i: count v_ij > v_i,gt and v_ij >= v_i,gt (self excluded), v = value(kind, S, ra_i, rc_i, cx_j).

    When out_before has rows (the collaborative-experts convention needs it), also out_before[i] = items
    j < gt[i] whose value equals the ground truth's; pass NO_BEFORE (empty) to skip that count."""
    n = S.shape[0]
    before = out_before.shape[0] > 0
    for i in prange(n):
        g = gt[i]
        a = ra[i]
        c = rc[i]
        thr, out_gt[i], out_ge[i] = _gt_counts(S, i, g, kind, a, c, cx)
        out_thr[i] = thr
        if before:
            nb = 0
            for j in range(g):
                nb += 1 if value(kind, S[i, j], a, c, cx[j]) == thr else 0
            out_before[i] = nb


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
            out_thr[i], out_gt[i], out_ge[i] = _gt_counts(S, i, gt[i], kind, ra[i], rc[i], cx)
            if kind == KIND_AFFINE:
                col_counts(affine_value, S, i, ca, cc, rx[i], col_thr, agt, age)
            else:
                col_counts(dsl_value, S, i, ca, cc, rx[i], col_thr, agt, age)
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
