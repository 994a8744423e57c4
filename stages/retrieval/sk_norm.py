"""SK-norm (UCoFiA's Sinkhorn-Knopp re-ranker): the gallery bias from a query bank, dense and blockwise.

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
        entry) ``+ 7.5e-9`` (the exponential) ``+ n 2^-53`` (float64 accumulation) ``+`` an underflow term
        ``n 2^-126 max(weight) / min(sum)`` for entries that fell below float32's normal range. For the
        default 4 iterations the bound is ~5.4e-7 (plus the n 2^-53 terms for large banks) unless underflow
        matters; the measured error is ~1e-9.
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

The other re-rankers (DSL, QB-Norm) and the dense apply_rerank are in stages.retrieval.rerank.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import njit, prange

from ._numba import exp_f32acc, fast_exp
from .blocks import DEFAULT_MAX_BLOCK_BYTES, ScoreFn, _as_matrix, _rows_per_block, _score_block

__all__ = ["SK_KERNELS", "sk_norm_bias", "sk_norm_bias_dense", "sk_norm_text_bias_v2t"]

#: Default budget for keeping SK-norm's first-pass blocks between passes (see the module doc).
DEFAULT_SK_CACHE_BYTES = 2 * 2**30
#: What SK-norm keeps between passes: the float32 kernel (fast, error-bounded) or the raw scores (exact).
SK_KERNELS = ("float32", "exact")
#: Default largest accepted a-posteriori bound on |g - g_exact| for kernel="float32".
DEFAULT_SK_MAX_ERROR = 1e-6

# error model of the cached float32 kernel (see the module doc)
_EPS_F32 = 2.0**-24  # rounding an entry to float32
_EPS_EXP = 7.5e-9  # exp_f32acc's relative error (< 7.3e-9, see _numba.exp_f32acc; it was 6e-9, too low)
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


@njit(inline="always", fastmath=True)
def _kernel_rows(S, K, scale, rowmax, at, ref, lo, hi):  # pragma: no cover - compiled
    """Rows lo..hi of the float32-kernel first pass (one thread's share; see `_sk_kernel_first_pass`).
    Returns the thread's new reference max. Inlined into both first-pass kernels below, so each keeps its
    own signature (K a separate array, or K = S) while the arithmetic is written once."""
    m = S.shape[1]
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
    return ref


@njit(parallel=True, fastmath=True, cache=True)
def _sk_kernel_first_pass(S, scale, rowmax, K, acc, tref):  # pragma: no cover - compiled
    """First pass of kernel="float32", one sweep per row (the row stays in cache): m_i = row max of
    x = scale*S (into rowmax); K_ij = float32(exp(x_ij - m_i)); and acc[t, j] = sum over thread t's rows of
    exp(x_ij - tref[t]), float64, from the unrounded values, where tref[t] is the running max of the
    thread's m_i (acc[t] is rescaled when it grows: online log-sum-exp). Call with tref = -inf and acc = 0
    for a new pass; blocks accumulate. K = S (in place): `_sk_kernel_first_pass_inplace`."""
    n = S.shape[0]
    nt = acc.shape[0]
    for t in prange(nt):
        tref[t] = _kernel_rows(S, K, scale, rowmax, acc[t], tref[t], t * n // nt, (t + 1) * n // nt)


@njit(parallel=True, fastmath=True, cache=True)
def _sk_kernel_first_pass_inplace(S, scale, rowmax, acc, tref):  # pragma: no cover - compiled
    """`_sk_kernel_first_pass` with K = S. A kernel of its own (one array argument) rather than a call with
    K=S: compiled for two distinct arrays, LLVM may assume K and S do not alias."""
    n = S.shape[0]
    nt = acc.shape[0]
    for t in prange(nt):
        tref[t] = _kernel_rows(S, S, scale, rowmax, acc[t], tref[t], t * n // nt, (t + 1) * n // nt)


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
