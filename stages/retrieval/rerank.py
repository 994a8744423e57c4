"""Inference-time re-rankers (hubness correction) and the evaluate stage's retrieval entry point.

Formulas: shared/specs/evaluation.md, "Inference-time re-ranking". Higher scores are better. ``S`` is a
test similarity (queries x gallery), ``B`` a bank similarity (bank queries x the same gallery).

SK-norm (UCoFiA, Sinkhorn-Knopp)
    ``m = max(B); K = exp(B - m); b = 1/K.sum(0)``; ``n_iters`` times ``a = 1/(K b); b = 1/(a K)``;
    ``g = log b``; ``S' = S + g[None, :]``. ``B`` and ``S`` are at the model's logit scale
    (``scale * cos``, UCoFiA/CLIP default ``scale = 100``; it matters because ``K = exp(B)``).
    * :func:`sk_norm_bias_dense` - the formula on a given dense ``B`` (float64), the reference.
    * :func:`sk_norm_bias` - the same from features without the bank matrix: the bank similarity is
      computed a block of bank rows at a time (float32 BLAS) and reduced by numba kernels. Rows are
      exponentiated with their own max subtracted, ``K'_ij = exp(x_ij - m_i)`` (never overflows, only
      underflows where the dense float64 form does too); this is ``K' = D K`` with ``D`` diagonal, and
      Sinkhorn's ``b`` is invariant to row scaling, so after the first ``b`` (computed with the global
      max by an online log-sum-exp, as in the dense form) the iterates are exactly the dense ones. One
      Sinkhorn iteration (``a`` for a row block, then its contribution to ``a K``) is one pass over the
      blocks, so the bias costs ``1 + n_iters`` passes. What is kept between passes (``kernel=``):

      - ``"float32"`` (default): up to ``cache_bytes`` of the *kernel* ``K'`` itself, rounded to float32,
        written in place of each block's GEMM output during the first pass (which also accumulates the
        first column sums, in float64, from the unrounded values). Each iteration is then one read of
        the cached kernel with float64 accumulation (``a_i = 1/sum_j K'_ij b_j`` and ``a_i K'_i.`` in
        the same sweep over row ``i``): no GEMM and no exponential after the first pass. Accuracy
        contract: ``|g - g_exact| <= g_error_bound`` (absolute, in log space - a relative error of
        ``b``), where the bound is computed a posteriori from the run: every one of the ``2 n_iters + 1``
        sums of positive terms contributes ``-log(1 - eps)``, ``eps = 2^-24`` (float32 rounding of an
        entry) ``+ 6e-9`` (the exponential) ``+ n 2^-53`` (float64 accumulation) ``+`` an underflow term
        ``n 2^-126 max(weight) / min(sum)`` for entries that fell below float32's normal range. For the
        default 4 iterations the bound is ~6.3e-7 unless underflow matters; the measured error is ~1e-9.
        If the bound exceeds ``max_error`` (default 1e-6: e.g. more than 6 iterations, or logits so wide
        that float32 underflow could matter) the bias is recomputed with ``kernel="exact"`` and the info
        says so (``fallback``). Ranks can differ from the exact ones only where two scores are within
        ``2 g_error_bound`` of each other.
      - ``"exact"``: the raw float32 GEMM output is cached instead and re-exponentiated (float64) in
        every pass, so the result is bit-identical to streaming (~1e-12 relative to the dense form).

      Blocks beyond ``cache_bytes`` are recomputed by the bank GEMM in every pass and handled exactly;
      ``cache_bytes=0`` is the strict streaming mode (the bank GEMM runs ``1 + n_iters`` times). Memory:
      O((B + G) * D + block * G) plus the cache (at most ``B * G * 4`` bytes, when the whole bank fits:
      then the bank GEMM runs once).
    * v2t: the bank is training *videos* and the bias is per test *text*:
      :func:`sk_norm_text_bias_v2t` (= ``sk_norm_bias(bank_video_feats, test_text_feats)``), added to
      the v2t scores over the text columns.

DSL (dual softmax at inference)
    ``S' = S * softmax(S / T, axis=0)``: the softmax runs over the *queries* for each gallery column;
    ``S`` is used as given (callers pass logit-scale ``S = scale * cos``), ``T = 1``. This is the variant
    without the extra factor (some repos multiply by the number of rows, or use ``softmax(100 * cos)``
    on raw cosines); a per-column constant factor would not change the per-row ranking anyway,
    but the scale of ``S`` does. v2t applies it to the v2t matrix (the transpose).

QB-Norm (dynamic inverted softmax), defaults ``beta = 20, k = 1``
    ``R`` = gallery items in the top-k of any bank row (ties: lower index first); each test query whose
    top-1 item (``argmax``, first on ties) is in ``R`` has its row replaced by
    ``exp(beta * S_row) / sum_bank exp(beta * B)`` (per-column sums), computed as
    ``exp(beta * S_row - logsumexp_bank(beta * B))`` to avoid overflow; other rows keep raw ``S``.
    Operates on the raw similarity (cosine): the blockwise path ranks the flagged rows by
    ``beta * S_ij - logZ_j``, which orders them exactly as the exponential does.

:func:`stages.retrieval.evaluation.evaluate_retrieval` is the call the evaluate stage makes: t2v and v2t
metrics, with any of these re-rankers, blockwise from features (no N x M matrix).
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import njit, prange

from ._numba import exp_f32acc, fast_exp
from .metrics import DEFAULT_MAX_BLOCK_BYTES, ScoreFn, _as_matrix, _rows_per_block, _score_block

__all__ = [
    "RERANKERS",
    "SK_KERNELS",
    "sk_norm_bias",
    "sk_norm_bias_dense",
    "sk_norm_text_bias_v2t",
    "dsl",
    "qb_norm",
    "apply_rerank",
]

RERANKERS = ("none", "sk-norm", "dsl", "qb-norm")

#: Default budget for keeping SK-norm's first-pass blocks between passes (see the module doc).
DEFAULT_SK_CACHE_BYTES = 2 * 2**30
#: What SK-norm keeps between passes: the float32 kernel (fast, error-bounded) or the raw scores (exact).
SK_KERNELS = ("float32", "exact")
#: Default largest accepted a-posteriori bound on |g - g_exact| for kernel="float32".
DEFAULT_SK_MAX_ERROR = 1e-6

# error model of the cached float32 kernel (see the module doc)
_EPS_F32 = 2.0**-24  # rounding an entry to float32
_EPS_EXP = 6e-9  # exp_f32acc's relative error
_EPS_F64 = 2.0**-53  # per term of a float64 sum of positive terms
_TINY_F32 = 2.0**-126  # absolute error of an entry below float32's normal range (flushed to zero or not)


# --------------------------------------------------------------------------------------------------
# numba kernels (fastmath: these are sums, not comparisons)
# --------------------------------------------------------------------------------------------------


@njit(parallel=True, fastmath=True, cache=True)
def _sk_first_pass(S, scale, rowmax, acc):  # pragma: no cover - compiled
    """Row maxes m_i of x = scale*S (into rowmax); acc[t, j] += exp(x_ij - M_blk), M_blk = block max.
    Returns M_blk."""
    n, m = S.shape
    nt = acc.shape[0]
    for i in prange(n):
        mx = -np.inf
        for j in range(m):
            mx = max(mx, scale * np.float64(S[i, j]))
        rowmax[i] = mx
    mblk = -np.inf
    for i in range(n):
        mblk = max(mblk, rowmax[i])
    for t in prange(nt):
        lo = t * n // nt
        hi = (t + 1) * n // nt
        at = np.zeros(m)
        for i in range(lo, hi):
            for j in range(m):
                at[j] += fast_exp(scale * np.float64(S[i, j]) - mblk)
        acc[t, :] += at
    return mblk


@njit(parallel=True, fastmath=True, cache=True)
def _sk_iter_from_scores(S, scale, rowmax, b, acc):  # pragma: no cover - compiled
    """One Sinkhorn iteration over a block: a_i = 1/sum_j K'_ij b_j; acc[t, j] += a_i K'_ij."""
    n, m = S.shape
    nt = acc.shape[0]
    for t in prange(nt):
        e = np.empty(m)
        at = np.zeros(m)
        lo = t * n // nt
        hi = (t + 1) * n // nt
        for i in range(lo, hi):
            mi = rowmax[i]
            s = 0.0
            for j in range(m):
                v = fast_exp(scale * np.float64(S[i, j]) - mi)
                e[j] = v
                s += v * b[j]
            a = 1.0 / s
            for j in range(m):
                at[j] += a * e[j]
        acc[t, :] += at


@njit(parallel=True, fastmath=True, cache=True)
def _sk_kernel_first_pass(S, scale, rowmax, K, acc, tref):  # pragma: no cover - compiled
    """First pass of kernel="float32", one sweep per row (the row stays in cache): m_i = row max of
    x = scale*S (into rowmax); K_ij = float32(exp(x_ij - m_i)) (K may be S itself: in place); and
    acc[t, j] = sum over thread t's rows of exp(x_ij - tref[t]), float64, from the unrounded values, where
    tref[t] is the running max of the thread's m_i (acc[t] is rescaled when it grows: online
    log-sum-exp). Call with tref = -inf and acc = 0 for a new pass; blocks accumulate."""
    n, m = S.shape
    nt = acc.shape[0]
    for t in prange(nt):
        lo = t * n // nt
        hi = (t + 1) * n // nt
        at = acc[t]
        ref = tref[t]
        for i in range(lo, hi):
            mi = -np.inf
            for j in range(m):
                mi = max(mi, scale * np.float64(S[i, j]))
            rowmax[i] = mi
            if mi > ref:
                if ref > -np.inf:
                    f = np.exp(ref - mi)
                    for j in range(m):
                        at[j] *= f
                ref = mi
            d = np.exp(mi - ref)
            for j in range(m):
                e = exp_f32acc(scale * np.float64(S[i, j]) - mi)
                K[i, j] = e
                at[j] += d * e
        tref[t] = ref


@njit(parallel=True, fastmath=True, cache=True)
def _sk_kernel_first_pass_inplace(S, scale, rowmax, acc, tref):  # pragma: no cover - compiled
    """`_sk_kernel_first_pass` with K = S (one array argument, so that LLVM sees no aliasing)."""
    n, m = S.shape
    nt = acc.shape[0]
    for t in prange(nt):
        lo = t * n // nt
        hi = (t + 1) * n // nt
        at = acc[t]
        ref = tref[t]
        for i in range(lo, hi):
            mi = -np.inf
            for j in range(m):
                mi = max(mi, scale * np.float64(S[i, j]))
            rowmax[i] = mi
            if mi > ref:
                if ref > -np.inf:
                    f = np.exp(ref - mi)
                    for j in range(m):
                        at[j] *= f
                ref = mi
            d = np.exp(mi - ref)
            for j in range(m):
                e = exp_f32acc(scale * np.float64(S[i, j]) - mi)
                S[i, j] = e
                at[j] += d * e
        tref[t] = ref


@njit(parallel=True, fastmath=True, cache=True)
def _sk_iter_kernel(K, b, acc, stats):  # pragma: no cover - compiled
    """One Sinkhorn iteration over a cached float32 kernel block, one sweep per row: a_i = 1/sum_j K_ij b_j
    (float64 accumulation), then acc[t, j] += a_i K_ij. stats[t] = (min row sum, max a_i), running."""
    n, m = K.shape
    nt = acc.shape[0]
    for t in prange(nt):
        lo = t * n // nt
        hi = (t + 1) * n // nt
        at = acc[t]
        smin = stats[t, 0]
        amax = stats[t, 1]
        for i in range(lo, hi):
            s = 0.0
            for j in range(m):
                s += np.float64(K[i, j]) * b[j]
            a = 1.0 / s
            smin = min(smin, s)
            amax = max(amax, a)
            for j in range(m):
                at[j] += a * np.float64(K[i, j])
        stats[t, 0] = smin
        stats[t, 1] = amax


@njit(parallel=True, fastmath=True, cache=True)
def _lse_rows_cols(S, a, c, row_lse, col_max, col_sum, acc):  # pragma: no cover - compiled
    """z = (a*S)*c. row_lse[i] = logsumexp_j z_ij; per column, the running (max, sum exp(z - max)) is
    updated with this block (online log-sum-exp over row blocks). acc: [threads, m] scratch."""
    n, m = S.shape
    nt = acc.shape[0]
    for i in prange(n):
        mx = -np.inf
        for j in range(m):
            mx = max(mx, a * np.float64(S[i, j]) * c)
        s = 0.0
        for j in range(m):
            s += fast_exp(a * np.float64(S[i, j]) * c - mx)
        row_lse[i] = mx + np.log(s)
    newm = col_max.copy()
    for i in range(n):
        for j in range(m):
            newm[j] = max(newm[j], a * np.float64(S[i, j]) * c)
    for t in prange(nt):
        at = acc[t]
        at[:] = 0.0
        lo = t * n // nt
        hi = (t + 1) * n // nt
        for i in range(lo, hi):
            for j in range(m):
                at[j] += fast_exp(a * np.float64(S[i, j]) * c - newm[j])
    for j in range(m):
        s = col_sum[j] * fast_exp(col_max[j] - newm[j]) if col_max[j] > -np.inf else 0.0
        for t in range(nt):
            s += acc[t, j]
        col_sum[j] = s
        col_max[j] = newm[j]


@njit(cache=True)
def _argmax_rows_cols(S, row0, row_arg, col_best, col_arg):  # pragma: no cover - compiled
    """Row argmax (first max) and running column argmax (first max in row order) for one row block."""
    n, m = S.shape
    for i in range(n):
        best = -np.inf
        arg = 0
        for j in range(m):
            v = S[i, j]
            if v > best:
                best = v
                arg = j
            if v > col_best[j]:
                col_best[j] = v
                col_arg[j] = row0 + i
        row_arg[i] = arg


# --------------------------------------------------------------------------------------------------
# SK-norm
# --------------------------------------------------------------------------------------------------


def sk_norm_bias_dense(B, n_iters: int = 4, scale: float = 1.0) -> np.ndarray:
    """SK-norm gallery bias ``g = log b`` straight from the spec formula on a dense bank similarity.

    ``B`` is ``[bank, gallery]`` at logit scale (``scale`` multiplies it first; leave 1 if ``B`` already
    is ``100 * cos``). float64 throughout. Returns ``g`` of shape ``[gallery]``; apply as
    ``S' = S + g[None, :]`` with ``S`` at the same scale.
    """
    B = np.asarray(B, dtype=np.float64) * float(scale)
    if B.ndim != 2:
        raise ValueError(f"B must be 2-D, got shape {B.shape}")
    m = B.max()
    K = np.exp(B - m)
    b = 1.0 / K.sum(axis=0)
    for _ in range(int(n_iters)):
        a = 1.0 / (K @ b)
        b = 1.0 / (a @ K)
    return np.log(b)


def _merge_colsum(colsum, gmax, blocksum, mblk):
    """Online log-sum-exp over row blocks: colsum (relative to gmax) += blocksum (relative to mblk)."""
    if mblk > gmax:
        return colsum * (math.exp(gmax - mblk) if gmax > -np.inf else 0.0) + blocksum, mblk
    return colsum + blocksum * math.exp(mblk - gmax), gmax


def _log_err(eps: float) -> float:
    """Bound on |log(x~/x)| for a relative error eps of a sum of positive terms."""
    return math.inf if eps >= 1.0 else -math.log1p(-eps)


def sk_norm_bias(
    bank_feats,
    gallery_feats,
    scale: float = 100.0,
    n_iters: int = 4,
    block: int = 4096,
    *,
    kernel: str = "float32",
    max_error: float = DEFAULT_SK_MAX_ERROR,
    cache_bytes: int = DEFAULT_SK_CACHE_BYTES,
    max_block_bytes: int | None = DEFAULT_MAX_BLOCK_BYTES,
    score_fn: ScoreFn | None = None,
    return_info: bool = False,
):
    """SK-norm gallery bias (float64 ``log b``, shape ``[G]``) from features, blockwise.

    Equals ``sk_norm_bias_dense(scale * bank @ gallery.T, n_iters)`` without holding the bank matrix:
    with ``kernel="exact"`` to ~1e-12 relative (bit-identical whatever ``cache_bytes``); with the default
    ``kernel="float32"`` to within ``info["g_error_bound"]`` absolute (<= ``max_error``, 1e-6, else it
    falls back to the exact path). See the module doc for the algorithm, passes, error bound and memory.
    Apply as ``score = scale * cos + g`` (e.g. ``ranks_from_features(..., scale=scale, bias=g)``).
    t2v: bank = training captions, gallery = test videos. For v2t see :func:`sk_norm_text_bias_v2t`.
    ``info`` (``return_info=True``): passes, bank_gemms, blocks, cached_blocks, cache_bytes_used,
    block_rows, kernel (what was used), g_error_bound (float32 kernel; None for exact), fallback.
    """
    if kernel not in SK_KERNELS:
        raise ValueError(f"kernel={kernel!r} is not one of {SK_KERNELS}")
    Bf = _as_matrix(bank_feats, "bank_feats")
    Gf = _as_matrix(gallery_feats, "gallery_feats")
    nb, ng = Bf.shape[0], Gf.shape[0]
    if nb == 0:
        raise ValueError("sk_norm_bias: the bank is empty")
    n_iters = int(n_iters)
    use_kernel = kernel == "float32"
    rows = _rows_per_block(block, ng, 8 if Bf.dtype == np.float64 else 4, max_block_bytes)
    nt = max(1, numba.get_num_threads())
    acc = np.zeros((nt, ng))
    rowmax = np.empty(nb)
    colsum = np.zeros(ng)
    gmax = -np.inf
    cache: dict[int, np.ndarray] = {}
    budget = int(cache_bytes or 0)
    starts = list(range(0, nb, rows))
    n_gemm = 0
    n_kernel_rows = 0
    kacc = np.zeros((nt, ng)) if use_kernel else None  # kernel blocks: per-thread online log-sum-exp
    tref = np.full(nt, -np.inf)
    for bi, r0 in enumerate(starts):
        r1 = min(nb, r0 + rows)
        S = _score_block(score_fn, Bf[r0:r1], Gf)
        n_gemm += 1
        cost = S.shape[0] * S.shape[1] * (4 if use_kernel else S.itemsize)
        if use_kernel and budget >= cost:
            if S.dtype == np.float32:
                _sk_kernel_first_pass_inplace(S, float(scale), rowmax[r0:r1], kacc, tref)
                K = S
            else:
                K = np.empty(S.shape, np.float32)
                _sk_kernel_first_pass(S, float(scale), rowmax[r0:r1], K, kacc, tref)
            cache[bi] = K
            budget -= cost
            n_kernel_rows += r1 - r0
        else:
            acc[:] = 0.0
            mblk = _sk_first_pass(S, float(scale), rowmax[r0:r1], acc)
            colsum, gmax = _merge_colsum(colsum, gmax, acc.sum(axis=0), mblk)
            if budget >= cost:
                cache[bi] = S
                budget -= cost
        del S
    for t in range(nt):
        if tref[t] > -np.inf:
            colsum, gmax = _merge_colsum(colsum, gmax, kacc[t], float(tref[t]))
    del kacc
    b = 1.0 / colsum
    # a-posteriori error bound (kernel blocks only; exact blocks add nothing beyond float64 rounding)
    kernel_used = use_kernel and n_kernel_rows > 0
    bound = _log_err(_EPS_EXP + 2 * nb * _EPS_F64) if kernel_used else 0.0
    stats = np.empty((nt, 2))
    for _ in range(n_iters):
        acc[:] = 0.0
        stats[:, 0], stats[:, 1] = np.inf, 0.0
        bmax = float(b.max())
        for bi, r0 in enumerate(starts):
            r1 = min(nb, r0 + rows)
            S = cache.get(bi)
            if S is None:
                S = _score_block(score_fn, Bf[r0:r1], Gf)
                n_gemm += 1
                _sk_iter_from_scores(S, float(scale), rowmax[r0:r1], b, acc)
            elif use_kernel:
                _sk_iter_kernel(S, b, acc, stats)
            else:
                _sk_iter_from_scores(S, float(scale), rowmax[r0:r1], b, acc)
            del S
        csum = acc.sum(axis=0)
        if kernel_used:
            smin, amax, cmin = float(stats[:, 0].min()), float(stats[:, 1].max()), float(csum.min())
            if not (smin > 0 and cmin > 0 and math.isfinite(amax) and math.isfinite(bmax)):
                bound = math.inf  # a kernel row or column underflowed entirely: only the exact path is valid
                break
            eps_row = _EPS_F32 + _EPS_EXP + ng * _EPS_F64 + ng * _TINY_F32 * bmax / smin
            eps_col = _EPS_F32 + _EPS_EXP + nb * _EPS_F64 + n_kernel_rows * _TINY_F32 * amax / cmin
            bound += _log_err(eps_row) + _log_err(eps_col)
        with np.errstate(divide="ignore"):
            b = 1.0 / csum
    g = np.log(b)
    fallback = None
    if kernel_used and not bound <= max_error:
        fallback = f"float32-kernel error bound {bound:.2e} > max_error {max_error:.1e}: recomputed exactly"
        cache.clear()
        g, info = sk_norm_bias(Bf, Gf, scale=scale, n_iters=n_iters, block=block, kernel="exact",
                               cache_bytes=cache_bytes, max_block_bytes=max_block_bytes, score_fn=score_fn,
                               return_info=True)
        info["bank_gemms"] += n_gemm
        info["fallback"] = fallback
        info["rejected_bound"] = bound
        return (g, info) if return_info else g
    if return_info:
        info = {
            "passes": 1 + n_iters,
            "bank_gemms": n_gemm,
            "cached_blocks": len(cache),
            "blocks": len(starts),
            "cache_bytes_used": int(sum(a.nbytes for a in cache.values())),
            "block_rows": rows,
            "kernel": "float32" if kernel_used else "exact",
            "g_error_bound": bound if kernel_used else None,
            "fallback": fallback,
        }
        return g, info
    return g


def sk_norm_text_bias_v2t(bank_video_feats, test_text_feats, scale: float = 100.0, n_iters: int = 4,
                          **kwargs) -> np.ndarray:
    """v2t SK-norm: bank rows = training videos, columns = test texts; returns the per-text bias to add
    to the v2t scores (``S'_v2t = scale * cos + bias[None, :]`` over the text columns)."""
    return sk_norm_bias(bank_video_feats, test_text_feats, scale=scale, n_iters=n_iters, **kwargs)


# --------------------------------------------------------------------------------------------------
# DSL and QB-Norm (dense, reference forms)
# --------------------------------------------------------------------------------------------------


def dsl(S, temperature: float = 1.0) -> np.ndarray:
    """Dual softmax at inference: ``S * softmax(S / T, axis=0)`` (softmax over queries per column).

    ``S`` at logit scale (~100 x cosine), float64 result. v2t: pass the v2t matrix (the transpose).
    """
    S = np.asarray(S, dtype=np.float64)
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    Z = S / float(temperature)
    Z = Z - Z.max(axis=0, keepdims=True)
    P = np.exp(Z)
    P /= P.sum(axis=0, keepdims=True)
    return S * P


def _logsumexp_cols(X: np.ndarray) -> np.ndarray:
    m = X.max(axis=0)
    return m + np.log(np.exp(X - m).sum(axis=0))


def qb_norm(S, B, beta: float = 20.0, k: int = 1) -> np.ndarray:
    """QB-Norm with the dynamic inverted softmax (dense reference form; see the module doc).

    ``S``: test ``[Q, G]``, ``B``: bank ``[N, G]``, raw similarities. Returns float64 ``S'``.
    """
    S = np.asarray(S, dtype=np.float64)
    B = np.asarray(B, dtype=np.float64)
    if S.ndim != 2 or B.ndim != 2 or S.shape[1] != B.shape[1]:
        raise ValueError(f"S {S.shape} and B {B.shape} must be 2-D with the same gallery size")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    top = np.argsort(-B, axis=1, kind="stable")[:, :k]
    in_r = np.zeros(S.shape[1], dtype=bool)
    in_r[top.ravel()] = True
    use = in_r[np.argmax(S, axis=1)]
    log_z = _logsumexp_cols(beta * B)
    out = S.copy()
    out[use] = np.exp(beta * S[use] - log_z[None, :])
    return out


def apply_rerank(method: str, S, B=None, *, n_iters: int = 4, temperature: float = 1.0,
                 beta: float = 20.0, k: int = 1) -> np.ndarray:
    """Dense re-ranking of a score matrix ``S`` (queries x gallery) with bank matrix ``B`` where needed.

    ``"sk-norm"``: ``S + sk_norm_bias_dense(B)`` (``S``, ``B`` at logit scale); ``"dsl"``:
    :func:`dsl`; ``"qb-norm"``: :func:`qb_norm` (raw similarities); ``"none"``: ``S``. For v2t pass the
    v2t matrix and the video bank. Holds full matrices: for small data and references;
    :func:`evaluate_retrieval` is the blockwise path.
    """
    if method not in RERANKERS:
        raise ValueError(f"rerank method {method!r} is not one of {RERANKERS}")
    S = np.asarray(S)
    if method == "none":
        return S
    if method == "dsl":
        return dsl(S, temperature)
    if B is None:
        raise ValueError(f"rerank {method!r} needs a bank similarity B (bank queries x the same gallery)")
    if method == "sk-norm":
        return np.asarray(S, dtype=np.float64) + sk_norm_bias_dense(B, n_iters=n_iters)[None, :]
    return qb_norm(S, B, beta=beta, k=k)


# --------------------------------------------------------------------------------------------------
# blockwise evaluation
# --------------------------------------------------------------------------------------------------


def _bank_topk_set(bank, gallery, k, block, score_fn, max_block_bytes) -> np.ndarray:
    Bf = _as_matrix(bank, "bank")
    ng = gallery.shape[0]
    rows = _rows_per_block(block, ng, 4, max_block_bytes)
    in_r = np.zeros(ng, dtype=bool)
    for r0 in range(0, Bf.shape[0], rows):
        S = _score_block(score_fn, Bf[r0:r0 + rows], gallery)
        if k == 1:
            in_r[np.argmax(S, axis=1)] = True
        else:
            in_r[np.argsort(-S, axis=1, kind="stable")[:, :k].ravel()] = True
    return in_r


def _bank_log_z(bank, gallery, beta, block, score_fn, max_block_bytes) -> np.ndarray:
    """log sum_bank exp(beta * B) per gallery column, blockwise (online max)."""
    Bf = _as_matrix(bank, "bank")
    ng = gallery.shape[0]
    rows = _rows_per_block(block, ng, 4, max_block_bytes)
    nt = max(1, numba.get_num_threads())
    acc = np.zeros((nt, ng))
    colsum = np.zeros(ng)
    gmax = -np.inf
    for r0 in range(0, Bf.shape[0], rows):
        S = _score_block(score_fn, Bf[r0:r0 + rows], gallery)
        acc[:] = 0.0
        rowmax = np.empty(S.shape[0])
        mblk = _sk_first_pass(S, float(beta), rowmax, acc)
        colsum, gmax = _merge_colsum(colsum, gmax, acc.sum(axis=0), mblk)
    return gmax + np.log(colsum)
