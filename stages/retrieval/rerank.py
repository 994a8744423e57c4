"""Inference-time re-rankers (hubness correction): DSL and QB-Norm, and the dense apply_rerank over all three.

Formulas: shared/specs/evaluation.md, "Inference-time re-ranking". Higher scores are better. ``S`` is a
test similarity (queries x gallery), ``B`` a bank similarity (bank queries x the same gallery).

SK-norm (UCoFiA, Sinkhorn-Knopp): stages.retrieval.sk_norm (the dense reference and the blockwise bias).

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

import numba
import numpy as np
from numba import njit, prange

from ._numba import fast_exp
from .blocks import _as_matrix, _rows_per_block, _score_block
from .sk_norm import _merge_colsum, _sk_first_pass, sk_norm_bias_dense

__all__ = ["RERANKERS", "dsl", "qb_norm", "apply_rerank"]

RERANKERS = ("none", "sk-norm", "dsl", "qb-norm")


# --------------------------------------------------------------------------------------------------
# numba kernels of the blockwise DSL (row and column log-sum-exp) and QB-Norm (row and column argmax)
# --------------------------------------------------------------------------------------------------


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
# blockwise QB-Norm pieces (used by stages.retrieval.evaluation)
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
