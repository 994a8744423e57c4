"""Every numba kernel called directly, each against a NumPy statement of what its docstring promises, on
small seeded blocks full of ties, NaNs and -inf where the kernel has a branch for them.

mutmut cannot mutate compiled functions (it skips decorated ones), so these are the tests that
bench/mutation_kernels.py (cosmic-ray) runs first against each kernel mutant. They run compiled here and
as plain Python under NUMBA_DISABLE_JIT=1 (the mutation run); the references never call the kernels.
"""

from __future__ import annotations

import numpy as np
import pytest

from stages.retrieval._numba import KIND_AFFINE, KIND_DSL, affine_value, dsl_value, exp_f32acc, fast_exp, value
from stages.retrieval.rank_kernels import (NO_BEFORE, _fused_kernel, _fused_own, _row_kernel, _v2t_caps_kernel,
                                           _v2t_groups_kernel, _values_at)
from stages.retrieval.rerank import _argmax_rows_cols, _lse_rows_cols
from stages.retrieval.similarity import _token_wise_kernel
from stages.retrieval.sk_norm import (_sk_first_pass, _sk_iter_from_scores, _sk_iter_kernel, _sk_kernel_first_pass,
                                      _sk_kernel_first_pass_inplace)

KINDS = (KIND_AFFINE, KIND_DSL)


def _tied(n, m, seed, dtype=np.float64):
    """Scores on a coarse grid (many exact ties), in [-1, 1]."""
    return (np.random.default_rng(seed).integers(-4, 5, (n, m)) / 4.0).astype(dtype)


def _ref_values(kind, S, a, c, x):
    """value(kind, s, a, c, x) elementwise: affine a*s + c*x, DSL L*exp(L*c - x) with L = a*s (np.exp)."""
    L = np.asarray(a, np.float64) * np.asarray(S, np.float64)
    if kind == KIND_AFFINE:
        return L + np.asarray(c) * np.asarray(x)
    return L * np.exp(L * np.asarray(c) - np.asarray(x))


def _params(n, m, seed):
    """Per-row a, c and per-column x of a value() call, away from the plain (1, 0) case."""
    r = np.random.default_rng(seed)
    return (r.choice([0.5, 2.0, 3.0], n), r.choice([0.25, 1.0, 1.5], n), r.integers(-2, 3, m) / 8.0)


# ---------------------------------------------------------------------------------------------- _numba


def test_fast_exp_is_exp_to_1e_15_and_clamps():
    xs = np.concatenate([np.linspace(-708.0, 709.0, 1201), [-707.5, -1e-9, 0.0, 1e-9, 0.3465, -0.3466, 708.9]])
    got = np.array([fast_exp(float(x)) for x in xs])
    np.testing.assert_allclose(got, np.exp(xs), rtol=1e-15, atol=0)
    assert fast_exp(0.0) == 1.0
    # below -708 and above 709 the argument is clamped (not left to overflow the exponent bits)
    assert fast_exp(-1000.0) == fast_exp(-708.0) and fast_exp(-708.5) == fast_exp(-708.0)
    assert fast_exp(1000.0) == fast_exp(709.0) and fast_exp(709.5) == fast_exp(709.0)
    assert np.isfinite(fast_exp(709.0)) and fast_exp(-708.0) > 0


def test_exp_f32acc_is_exp_to_7_5e_9_for_non_positive_arguments_and_clamps():
    xs = np.concatenate([np.linspace(-708.0, 0.0, 1201), [-707.5, -0.3465, -0.3466, -1e-9]])
    got = np.array([exp_f32acc(float(x)) for x in xs])
    np.testing.assert_allclose(got, np.exp(xs), rtol=7.5e-9, atol=0)
    # the error model of SK-norm's float32 kernel charges exactly this bound per exponential
    from stages.retrieval.sk_norm import _EPS_EXP
    assert np.max(np.abs(got / np.exp(xs) - 1)) <= _EPS_EXP
    assert exp_f32acc(0.0) == 1.0
    assert exp_f32acc(-1000.0) == exp_f32acc(-708.0) and exp_f32acc(-708.5) == exp_f32acc(-708.0)
    assert exp_f32acc(709.5) == exp_f32acc(709.0) and np.isfinite(exp_f32acc(709.0))
    # degree 7, not fast_exp's 12: the two differ by more than float64 rounding somewhere
    assert max(abs(exp_f32acc(float(x)) / fast_exp(float(x)) - 1) for x in np.linspace(-5, 0, 101)) > 1e-12


def test_value_helpers_hand_worked():
    # s = 0.5, a = 2, c = 3, x = 0.25: affine 2*0.5 + 3*0.25 = 1.75; DSL L = 1, 1*exp(3 - 0.25) = e^2.75
    for s in (0.5, np.float32(0.5)):
        assert value(KIND_AFFINE, s, 2.0, 3.0, 0.25) == affine_value(s, 2.0, 3.0, 0.25) == 1.75
        assert value(KIND_DSL, s, 2.0, 3.0, 0.25) == pytest.approx(np.exp(2.75), rel=1e-15)
        assert dsl_value(s, 2.0, 3.0, 0.25) == pytest.approx(np.exp(2.75), rel=1e-15)
    # float32 s is widened exactly before the multiply
    s32 = np.float32(0.1)
    assert affine_value(s32, 3.0, 0.0, 0.0) == 3.0 * float(s32)
    assert dsl_value(-0.5, 4.0, 0.5, 1.0) == pytest.approx(-2.0 * np.exp(-2.0), rel=1e-15)


# ---------------------------------------------------------------------------------------- rank kernels


def _row_ref(kind, S, gt, a, c, x):
    v = _ref_values(kind, S, a[:, None], c[:, None], x[None, :])
    thr = v[np.arange(len(gt)), gt]
    n_gt = (v > thr[:, None]).sum(1)
    n_ge = (v >= thr[:, None]).sum(1) - (~np.isnan(thr))  # the ground truth itself is not counted
    before = np.array([(v[i, :g] == thr[i]).sum() for i, g in enumerate(gt)])
    return v, thr, n_gt, n_ge, before


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_row_kernel_counts_above_and_tied_with_the_ground_truth(kind, dtype):
    n, m = 9, 11
    S = _tied(n, m, 1, dtype)
    S[3, 4] = np.nan  # a NaN ground truth: counts 0, its own entry not subtracted
    S[5, 0] = np.nan  # a NaN elsewhere in a row is never above nor tied
    gt = np.array([0, 10, 3, 4, 7, 2, 2, 9, 5], np.int64)
    a, c, x = _params(n, m, 2)
    v, thr, n_gt, n_ge, before = _row_ref(kind, S, gt, a, c, x)
    o_gt, o_ge, o_thr, o_before = (np.full(n, -7, np.int64), np.full(n, -7, np.int64), np.empty(n),
                                   np.full(n, -7, np.int64))
    _row_kernel(S, gt, kind, a, c, x, o_gt, o_ge, o_thr, o_before)
    np.testing.assert_array_equal(o_gt, n_gt)
    np.testing.assert_array_equal(o_ge, n_ge)
    np.testing.assert_allclose(o_thr, thr, rtol=1e-15)
    np.testing.assert_array_equal(o_before, before)
    assert o_gt[3] == 0 and o_ge[3] == 0 and np.isnan(o_thr[3])
    assert before.max() > 0 and (n_ge > n_gt).any()  # the data has ties before and after the ground truth
    # without the tied-before output the counts are the same
    o_gt2, o_ge2, o_thr2 = np.zeros(n, np.int64), np.zeros(n, np.int64), np.empty(n)
    _row_kernel(S, gt, kind, a, c, x, o_gt2, o_ge2, o_thr2, NO_BEFORE)
    np.testing.assert_array_equal(o_gt2, n_gt)
    np.testing.assert_array_equal(o_ge2, n_ge)
    # a block of one row still counts the tied-before items
    o1 = [np.zeros(1, np.int64), np.zeros(1, np.int64), np.empty(1), np.full(1, -7, np.int64)]
    _row_kernel(S[7:8], gt[7:8], kind, a[7:8], c[7:8], x, *o1)
    assert o1[3][0] == before[7] == 1 and o1[0][0] == n_gt[7]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("nt", [1, 3])
def test_fused_kernel_row_and_column_counts(kind, nt):
    n, m = 8, 6
    S = _tied(n, m, 3)
    S[2, 1] = np.nan
    gt = np.array([0, 1, 2, 3, 4, 5, 1, 0], np.int64)
    ra, rc, cx = _params(n, m, 4)
    ca, cc, rx = _params(m, n, 5)  # per-column a, c; per-row x
    col_thr = np.random.default_rng(6).integers(-2, 3, m) / 2.0
    v, thr, n_gt, n_ge, _ = _row_ref(kind, S, gt, ra, rc, cx)
    w = _ref_values(kind, S, ca[None, :], cc[None, :], rx[:, None])
    o_gt, o_ge, o_thr = np.zeros(n, np.int64), np.zeros(n, np.int64), np.empty(n)
    acc_gt = np.arange(nt * m, dtype=np.int64).reshape(nt, m)  # kernels add to what is there
    acc_ge = 2 * np.arange(nt * m, dtype=np.int64).reshape(nt, m)
    base_gt, base_ge = acc_gt.sum(0), acc_ge.sum(0)
    _fused_kernel(S, gt, kind, ra, rc, cx, ca, cc, rx, col_thr, o_gt, o_ge, o_thr, acc_gt, acc_ge)
    np.testing.assert_array_equal(o_gt, n_gt)
    np.testing.assert_array_equal(o_ge, n_ge)
    np.testing.assert_allclose(o_thr, thr, rtol=1e-15)
    np.testing.assert_array_equal(acc_gt.sum(0) - base_gt, (w > col_thr).sum(0))
    np.testing.assert_array_equal(acc_ge.sum(0) - base_ge, (w >= col_thr).sum(0))
    assert ((w >= col_thr).sum(0) > (w > col_thr).sum(0)).any()
    if nt == 3:  # each thread's share is its own rows: thread t holds rows t*n//nt .. (t+1)*n//nt
        for t in range(nt):
            rows = slice(t * n // nt, (t + 1) * n // nt)
            np.testing.assert_array_equal(acc_gt[t] - np.arange(t * m, (t + 1) * m), (w[rows] > col_thr).sum(0))


@pytest.mark.parametrize("kind", KINDS)
def test_fused_own_removes_each_rows_own_column(kind):
    n, m = 10, 4
    S = _tied(n, m, 7)
    gt = np.array([0, 1, 2, 3, 0, 1, 2, 0, 0, 3], np.int64)
    ca, cc, rx = _params(m, n, 8)
    w = _ref_values(kind, S, ca[None, :], cc[None, :], rx[:, None])[np.arange(n), gt]
    col_thr = np.array([w[gt == j].min() for j in range(m)])  # each column has an own score on its threshold
    col_gt, col_ge, col_eq = np.full(m, 20, np.int64), np.full(m, 30, np.int64), np.full(m, 1, np.int64)
    col_seen = np.array([-np.inf, np.nan, 0.0, 1e9])
    _fused_own(S, gt, kind, ca, cc, rx, col_thr, col_gt, col_ge, col_seen, col_eq)
    for j in range(m):
        wj = w[gt == j]
        assert col_gt[j] == 20 - (wj > col_thr[j]).sum()
        assert col_ge[j] == 30 - (wj >= col_thr[j]).sum()
        assert col_eq[j] == 1 + (wj == col_thr[j]).sum()
    np.testing.assert_allclose(col_seen[:3], [w[gt == j].max() for j in range(3)], rtol=1e-15)
    assert col_seen[3] == 1e9  # a larger seen value stays; a NaN one is replaced (column 1)


@pytest.mark.parametrize("kind", KINDS)
def test_values_at_gathers_the_value_of_each_position(kind):
    T = _tied(5, 7, 9, np.float32)
    r = np.random.default_rng(10)
    rows, cols = r.integers(0, 5, 12).astype(np.int64), r.integers(0, 7, 12).astype(np.int64)
    a, c, x = r.choice([0.5, 2.0], 12), r.choice([0.25, 1.5], 12), r.integers(-2, 3, 12) / 8.0
    out = np.full(12, np.nan)
    _values_at(T, rows, cols, kind, a, c, x, out)
    np.testing.assert_allclose(out, _ref_values(kind, T[rows, cols], a, c, x), rtol=1e-15)


def _caption_groups(c2v, nv):
    idx = np.argsort(c2v, kind="stable").astype(np.int64)
    ptr = np.zeros(nv + 1, np.int64)
    np.cumsum(np.bincount(c2v, minlength=nv), out=ptr[1:])
    return ptr, idx


@pytest.mark.parametrize("kind", KINDS)
def test_v2t_caps_kernel_scores_each_video_by_its_best_own_caption(kind):
    nv, m = 6, 14
    c2v = np.array([0, 0, 1, 2, 2, 2, 3, 4, 4, 5, 5, 1, 3, 0], np.int64)
    ptr, idx = _caption_groups(c2v, nv)
    vids = np.array([5, 0, 1, 2, 3, 4, 2], np.int64)  # rows are these videos (one twice, out of order)
    S = _tied(len(vids), m, 11)
    S[4, [6, 12]] = np.nan  # video 3: all its own captions NaN -> NaN threshold
    S[1, 1] = np.nan  # video 0: one own caption NaN, the others decide
    ra, rc, cx = _params(len(vids), m, 12)
    S[1, [0, 1, 13]] = [1.0, 1.0, np.nan]  # video 0 (row 1): two own captions tied at the top, one NaN
    if kind == KIND_AFFINE:  # (DSL turns -inf into NaN in NumPy, -inf in the clamped kernel)
        S[0, [9, 10]] = -np.inf  # video 5 (row 0): every own caption -inf (no NaN): the threshold stays -inf
    cx[1] = cx[0] = 0.25
    w = _ref_values(kind, S, ra[:, None], rc[:, None], cx[None, :])
    o_gt, o_ge, o_own = (np.full(len(vids), -1, np.int64) for _ in range(3))
    o_thr = np.empty(len(vids))
    _v2t_caps_kernel(S, vids, ptr, idx, kind, ra, rc, cx, o_gt, o_ge, o_thr, o_own)
    for r, v in enumerate(vids):
        own = c2v == v
        wo = w[r, own]
        thr = np.nan if np.isnan(wo).all() else np.nanmax(wo)
        if np.isnan(thr):
            assert np.isnan(o_thr[r]) and o_gt[r] == 0 and o_ge[r] == 0 and o_own[r] == 0
            continue
        assert o_thr[r] == pytest.approx(thr, rel=1e-15)
        assert o_gt[r] == (w[r] > thr).sum()
        assert o_ge[r] == (w[r, ~own] >= thr).sum()
        assert o_own[r] == max((wo == thr).sum() - 1, 0)
    assert o_own.max() > 0 and (o_ge > o_gt).any()
    assert o_thr[1] == pytest.approx(_ref_values(kind, 1.0, ra[1], rc[1], 0.25), rel=1e-15)  # NaN passed over
    assert o_thr[0] == -np.inf or kind != KIND_AFFINE


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("nt", [1, 2, 50])
def test_v2t_groups_kernel_compares_video_groups_by_their_best_caption(kind, nt):
    nv, m = 6, 13
    c2v = np.array([0, 0, 1, 2, 2, 2, 3, 1, 3, 0, 5, 5, 1], np.int64)  # video 4 has no caption (-inf group)
    vids = np.array([3, 0, 1, 2, 4, 5], np.int64)
    S = _tied(len(vids), m, 13)
    ra, rc, cx = _params(len(vids), m, 14)
    S[0, [6, 2]], S[0, [8, 7, 12]] = 1.0, -1.0  # row 0 (video 3): its group ties with video 1's
    cx[6] = cx[2] = 0.25
    w = _ref_values(kind, S, ra[:, None], rc[:, None], cx[None, :])
    o_gt, o_ge, o_thr = np.full(len(vids), -1, np.int64), np.full(len(vids), -1, np.int64), np.empty(len(vids))
    _v2t_groups_kernel(S, vids, c2v, nv, kind, ra, rc, cx, o_gt, o_ge, o_thr, nt)
    for r, v in enumerate(vids):
        g = np.array([w[r, c2v == u].max() if (c2v == u).any() else -np.inf for u in range(nv)])
        others = np.arange(nv) != v
        assert o_thr[r] == pytest.approx(g[v], rel=1e-15)
        assert o_gt[r] == (g[others] > g[v]).sum()
        assert o_ge[r] == (g[others] >= g[v]).sum()
    assert o_thr[4] == -np.inf and o_gt[4] == 5 and o_ge[4] == 5  # every other group beats an empty one
    assert (o_ge > o_gt).any()


# ------------------------------------------------------------------------------------------ SK-norm


def _sk_scores(n, m, seed, dtype=np.float64):
    return np.random.default_rng(seed).uniform(-1, 1, (n, m)).astype(dtype)


@pytest.mark.parametrize("nt", [1, 3])
@pytest.mark.parametrize("shift", [0.0, -2.0])  # -2: every score negative, so no maximum is 0 or above
def test_sk_first_pass_row_max_and_column_sums_relative_to_the_block_max(nt, shift):
    S, scale = _sk_scores(7, 5, 20) + shift, 30.0
    x = scale * S
    rowmax, acc = np.empty(7), np.full((nt, 5), 0.5)
    mblk = _sk_first_pass(S, scale, rowmax, acc)
    np.testing.assert_array_equal(rowmax, x.max(1))
    assert mblk == x.max()
    np.testing.assert_allclose(acc.sum(0), 0.5 * nt + np.exp(x - x.max()).sum(0), rtol=1e-13)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sk_iteration_from_scores_is_one_sinkhorn_step(dtype):
    S, scale = _sk_scores(6, 8, 21, dtype), 20.0
    x = scale * S.astype(np.float64)
    rowmax = x.max(1) - 0.25  # any row shift: the kernel uses the one given
    b = np.random.default_rng(22).uniform(0.5, 2.0, 8)
    E = np.exp(x - rowmax[:, None])
    a = 1.0 / (E @ b)
    acc = np.ones((2, 8))
    _sk_iter_from_scores(S, scale, rowmax, b, acc)
    np.testing.assert_allclose(acc.sum(0), 2.0 + a @ E, rtol=1e-13)


def _kernel_first_pass_checks(S, scale, rowmax, K, acc, tref, blocks):
    """After calls on row blocks `blocks` (lists of row slices per call): rowmax, K and the per-thread
    online log-sum-exp against the dense formula."""
    x = scale * S.astype(np.float64)
    np.testing.assert_array_equal(rowmax, x.max(1))
    Kref = np.exp(x - x.max(1, keepdims=True))
    np.testing.assert_allclose(K, Kref.astype(np.float32), rtol=1.2e-7, atol=0)
    assert K.dtype == np.float32
    M = x.max()
    total = sum(acc[t] * np.exp(tref[t] - M) for t in range(acc.shape[0]) if tref[t] > -np.inf)
    np.testing.assert_allclose(total, np.exp(x - M).sum(0), rtol=1e-8)
    # each thread's reference is the max of the row maxima it saw
    nt = acc.shape[0]
    for t in range(nt):
        seen = [rowmax[r0 + t * (r1 - r0) // nt: r0 + (t + 1) * (r1 - r0) // nt] for r0, r1 in blocks]
        seen = np.concatenate(seen)
        assert tref[t] == (seen.max() if seen.size else -np.inf)


@pytest.mark.parametrize("nt", [1, 2])
def test_sk_kernel_first_pass_in_two_blocks_with_growing_row_maxima(nt):
    n, m, scale = 8, 5, 25.0
    S = _sk_scores(n, m, 23)
    S += np.linspace(0, 1.5, n)[:, None]  # row maxima grow down the rows: every new row rescales the sums
    S[2] -= 3.0  # and one row lower than the rest
    rowmax, K = np.empty(n), np.zeros((n, m), np.float32)
    acc, tref = np.zeros((nt, m)), np.full(nt, -np.inf)
    for r0, r1 in ((0, 4), (4, 8)):
        _sk_kernel_first_pass(S[r0:r1], scale, rowmax[r0:r1], K[r0:r1], acc, tref)
    _kernel_first_pass_checks(S, scale, rowmax, K, acc, tref, [(0, 4), (4, 8)])


def test_sk_kernel_first_pass_in_place_overwrites_the_scores_with_the_kernel():
    n, m, scale = 6, 4, 40.0
    S = (_sk_scores(n, m, 24) + np.array([1.0, 0.0, 2.0, -1.0, 0.5, 3.0])[:, None]).astype(np.float32)
    S0 = S.copy()
    rowmax, acc, tref = np.empty(n), np.zeros((2, m)), np.full(2, -np.inf)
    _sk_kernel_first_pass_inplace(S, scale, rowmax, acc, tref)
    _kernel_first_pass_checks(S0, scale, rowmax, S, acc, tref, [(0, n)])


def test_sk_iteration_over_a_cached_kernel_and_its_stats():
    K = np.random.default_rng(25).uniform(0.0, 1.0, (7, 5)).astype(np.float32)
    K[:, 0] = 1.0
    b = np.random.default_rng(26).uniform(0.5, 2.0, 5)
    s = K.astype(np.float64) @ b
    a = 1.0 / s
    acc = np.full((2, 5), 3.0)
    stats = np.array([[np.inf, 0.0], [np.inf, 0.0]])
    _sk_iter_kernel(K, b, acc, stats)
    np.testing.assert_allclose(acc.sum(0), 6.0 + a @ K.astype(np.float64), rtol=1e-13)
    assert stats[:, 0].min() == pytest.approx(s.min(), rel=1e-15)
    assert stats[:, 1].max() == pytest.approx(a.max(), rel=1e-15)
    assert stats[0, 0] == pytest.approx(s[:3].min(), rel=1e-15) and stats[1, 1] == pytest.approx(a[3:].max(), rel=1e-15)
    # the stats are running: a tighter value already there is kept
    stats2 = np.array([[1e-9, 1e9], [1e-9, 1e9]])
    _sk_iter_kernel(K, b, np.zeros((2, 5)), stats2)
    np.testing.assert_array_equal(stats2, [[1e-9, 1e9], [1e-9, 1e9]])


# ------------------------------------------------------------------------------------ DSL, QB-Norm


@pytest.mark.parametrize("nt", [1, 3])
@pytest.mark.parametrize("a, c", [(2.0, 1.5), (100.0, 10.0)])  # the second: logits to +-1000, where a wrong
def test_lse_rows_cols_online_over_two_blocks(nt, a, c):  # shift over- or underflows exp
    S = _sk_scores(9, 6, 27) * 3.0
    S[5:, 2] += 4.0  # column 2's max arrives in the second block
    S[:5, 4] += 4.0  # column 4's max in the first
    if a > 10:
        S = np.clip(S / 8.0, -1, 1)
        S[7] = -0.2 * np.abs(S[7]) - 0.78  # a row of logits below -708 only (exp of each underflows)
    z = a * S * c
    row_lse = np.empty(9)
    col_max, col_sum = np.full(6, -np.inf), np.zeros(6)  # as the callers start it
    acc = np.empty((nt, 6))
    for r0, r1 in ((0, 5), (5, 9)):
        _lse_rows_cols(S[r0:r1], a, c, row_lse[r0:r1], col_max, col_sum, acc)
    zmax = z.max(1, keepdims=True)
    np.testing.assert_allclose(row_lse, (zmax + np.log(np.exp(z - zmax).sum(1, keepdims=True)))[:, 0], rtol=1e-14)
    np.testing.assert_allclose(col_max, z.max(0), rtol=1e-15)  # fastmath may reassociate a*s*c
    np.testing.assert_allclose(col_max + np.log(col_sum), np.log(np.exp(z - z.max(0)).sum(0)) + z.max(0),
                               rtol=1e-14)


def test_argmax_rows_cols_first_maximum_in_row_and_running_column_order():
    S = _tied(6, 5, 28)
    S[3] = -np.inf  # a row with no finite entry: argmax 0
    S[4] = [-3.0, -2.0, -1.0, -2.5, -1.0]  # a row of negative scores only: its maximum is not at 0
    row_arg = np.full(6, -1, np.int64)
    col_best, col_arg = np.full(5, -np.inf), np.full(5, -1, np.int64)
    _argmax_rows_cols(S[:3], 0, row_arg[:3], col_best, col_arg)
    _argmax_rows_cols(S[3:], 3, row_arg[3:], col_best, col_arg)
    want_rows = np.argmax(S, axis=1)  # first maximum
    want_rows[3] = 0
    np.testing.assert_array_equal(row_arg, want_rows)
    np.testing.assert_array_equal(col_best, S.max(0))
    np.testing.assert_array_equal(col_arg, np.argmax(S, axis=0))  # first maximum in row order
    assert any((S[:, j] == S[:, j].max()).sum() > 1 for j in range(5))  # ties decided by order


# ------------------------------------------------------------------------------------ token-wise


def test_token_wise_kernel_is_the_mean_of_both_weighted_max_sums():
    r = np.random.default_rng(29)
    qlen, glen = [2, 3, 1], [3, 1, 2, 2]
    qoff = np.concatenate([[0], np.cumsum(qlen)]).astype(np.int64)
    goff = np.concatenate([[0], np.cumsum(glen)]).astype(np.int64)
    G = r.uniform(-1, 1, (qoff[-1], goff[-1])).astype(np.float32)
    G[0, 0] = G[1, 0]  # a tie inside a block
    qw, gw = r.uniform(0.1, 1.0, qoff[-1]), r.uniform(0.1, 1.0, goff[-1])
    qpad, gpad = np.array([False, True, False]), np.array([True, False, False, True])
    out = np.full((3, 4), np.nan)
    _token_wise_kernel(G, qoff, goff, qw, gw, qpad, gpad, out)
    for a in range(3):
        for b in range(4):
            blk = G[qoff[a]:qoff[a + 1], goff[b]:goff[b + 1]].astype(np.float64)
            rmax = blk.max(1)
            cmax = blk.max(0)
            if gpad[b]:  # padded gallery item: a row maximum starts at 0 (the pad token)
                rmax = np.maximum(rmax, 0.0)
            if qpad[a]:
                cmax = np.maximum(cmax, 0.0)
            want = 0.5 * (qw[qoff[a]:qoff[a + 1]] @ rmax + gw[goff[b]:goff[b + 1]] @ cmax)
            assert out[a, b] == pytest.approx(want, rel=1e-12), (a, b)
    assert (G < 0).any(1).all()  # negative entries, so the padded maxima at 0 change the answer
