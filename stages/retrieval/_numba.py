"""Low-level numba helpers shared by the retrieval metrics and the re-rankers (private module).

- `fast_exp(x)`: float64 exp that LLVM can vectorise (numba has no SVML here, so `np.exp` in a loop
  is a scalar libm call). Cody-Waite range reduction + degree-12 Taylor polynomial; relative error
  < 1e-15 over [-708, 709] (tested against `np.exp`); inputs below -708 are clamped (result ~3e-308,
  i.e. negligible next to the 1.0 that every row-shifted kernel row contains).
- `value(kind, s, a, c, x)` (and its two branch-free halves `affine_value` / `dsl_value`, which the hot
  loops take as an inlined function argument so that the loops vectorise): the one place that defines how a raw similarity `s` becomes the score that
  is ranked, so that every kernel (row counts, fused row+column counts, v2t passes) and the dense
  references agree bit for bit:
    kind 0 (affine):  a*s + c*x        (plain: a=1,c=0; SK-norm/QB-Norm bias: a=scale, c=1, x=bias)
    kind 1 (dsl):     L*exp(L*c - x)   with L = a*s, c = 1/T, x = logsumexp of L*c over the softmax axis
  All arithmetic is float64; `s` may be float32 (converted exactly).
Both helpers are inlined at the numba IR level, so they are compiled with the *caller's* fastmath flags:
every kernel that compares scores (metrics) is compiled without fastmath, so a threshold computed in one
kernel and the values compared against it in another round identically.
"""

from __future__ import annotations

import os

# numba's OpenMP workers otherwise spin-wait after every parallel kernel and steal the cores that the
# next BLAS call needs (measured on 2 cores: the fused t2v+v2t pass went from 1.5x to 1.15x the bare
# matmul's CPU time). Only a default: a value the user set wins. Must happen before numba's OpenMP pool
# loads (first parallel kernel call).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
from llvmlite import ir  # noqa: E402
from numba import config as numba_config  # noqa: E402
from numba import njit  # noqa: E402
from numba.core import types  # noqa: E402
from numba.extending import intrinsic  # noqa: E402

KIND_AFFINE = 0
KIND_DSL = 1


@intrinsic
def _i64_as_f64(typingctx, x):  # pragma: no cover - compiled
    sig = types.float64(types.int64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return sig, codegen


if numba_config.DISABLE_JIT:
    # NUMBA_DISABLE_JIT=1 runs the kernels as plain Python (bench/mutation_kernels.py does, to mutate
    # them); an intrinsic has no Python body, so the same bit cast is done by NumPy there.
    def _i64_as_f64(x):  # noqa: F811
        return np.array(x, dtype=np.int64).view(np.float64)[()]


@njit(inline="always")
def fast_exp(x):  # pragma: no cover - compiled
    if x < -708.0:
        x = -708.0
    if x > 709.0:
        x = 709.0
    k = np.floor(x * 1.4426950408889634 + 0.5)
    r = (x - k * 6.93147180369123816490e-01) - k * 1.90821492927058770002e-10
    p = 2.08767569878680989792e-09  # 1/12!
    p = p * r + 2.50521083854417187751e-08
    p = p * r + 2.75573192239858906526e-07
    p = p * r + 2.75573192239858906526e-06
    p = p * r + 2.48015873015873015873e-05
    p = p * r + 1.98412698412698412698e-04
    p = p * r + 1.38888888888888888889e-03
    p = p * r + 8.33333333333333333333e-03
    p = p * r + 4.16666666666666666667e-02
    p = p * r + 1.66666666666666666667e-01
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    return p * _i64_as_f64((np.int64(k) + 1023) << 52)


@njit(inline="always")
def value(kind, s, a, c, x):  # pragma: no cover - compiled
    if kind == KIND_AFFINE:
        return a * np.float64(s) + c * x
    L = a * np.float64(s)
    return L * fast_exp(L * c - x)


@njit(inline="always")
def affine_value(s, a, c, x):  # pragma: no cover - compiled
    return a * np.float64(s) + c * x


@njit(inline="always")
def dsl_value(s, a, c, x):  # pragma: no cover - compiled
    L = a * np.float64(s)
    return L * fast_exp(L * c - x)


@njit(inline="always")
def row_counts(f, S, i, a, c, cx, thr):  # pragma: no cover - compiled
    """(count of f(S_ij, a, c, cx_j) > thr, count >= thr) over row i; f is inlined (no branch in the loop)."""
    n_gt = 0
    n_ge = 0
    for j in range(S.shape[1]):
        v = f(S[i, j], a, c, cx[j])
        n_gt += v > thr
        n_ge += v >= thr
    return n_gt, n_ge


@njit(inline="always")
def col_counts(f, S, i, ca, cc, xr, col_thr, agt, age):  # pragma: no cover - compiled
    """agt[j] += f(S_ij, ca_j, cc_j, xr) > col_thr[j]; age[j] += ... >= ... over row i."""
    for j in range(S.shape[1]):
        w = f(S[i, j], ca[j], cc[j], xr)
        agt[j] += w > col_thr[j]
        age[j] += w >= col_thr[j]


@njit(inline="always")
def exp_f32acc(x):  # pragma: no cover - compiled
    """exp(x) for x <= 0 to float32 accuracy, in float64: relative error < 7.5e-9 (degree-7 Taylor after the
    same Cody-Waite reduction as `fast_exp`, |r| <= ln2/2: the remainder is at most |r|^8/8! = 5.2e-9 of
    1, i.e. 5.2e-9 * e^(ln2/2) = 7.3e-9 relative to exp(r) at r = -ln2/2; measured 7.03e-9 on 2e7 points
    of [-708, 0], tests/test_numba_kernels.py). Used where the result is
    rounded to float32 anyway (SK-norm's cached kernel); inputs below -708 are clamped (result ~3e-308,
    0 once rounded to float32)."""
    if x < -708.0:
        x = -708.0
    if x > 709.0:
        x = 709.0
    k = np.floor(x * 1.4426950408889634 + 0.5)
    r = (x - k * 6.93147180369123816490e-01) - k * 1.90821492927058770002e-10
    p = 1.98412698412698412698e-04  # 1/7!
    p = p * r + 1.38888888888888888889e-03
    p = p * r + 8.33333333333333333333e-03
    p = p * r + 4.16666666666666666667e-02
    p = p * r + 1.66666666666666666667e-01
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    return p * _i64_as_f64((np.int64(k) + 1023) << 52)
