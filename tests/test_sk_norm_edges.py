"""SK-norm's v2t entry point passes every argument on (surviving mutants of sk_norm_text_bias_v2t dropped
scale, n_iters or the keyword arguments): checked against the dense formula on seeded features, with values
other than the defaults so that a dropped argument changes the answer."""

import numpy as np

from stages.retrieval.sk_norm import sk_norm_bias_dense, sk_norm_text_bias_v2t


def _feats(n, d, seed):
    x = np.random.default_rng(seed).standard_normal((n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_v2t_bias_uses_the_given_scale_and_iterations():
    bank, texts = _feats(40, 16, 0), _feats(12, 16, 1)
    for scale, n_iters in ((20.0, 2), (50.0, 1), (100.0, 4)):
        got = sk_norm_text_bias_v2t(bank, texts, scale=scale, n_iters=n_iters, kernel="exact")
        want = sk_norm_bias_dense(scale * bank @ texts.T, n_iters=n_iters)
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    # the settings matter on this data: a dropped argument would give another bias
    assert not np.allclose(sk_norm_bias_dense(20.0 * bank @ texts.T, n_iters=2),
                           sk_norm_bias_dense(100.0 * bank @ texts.T, n_iters=2), atol=1e-3)
    assert not np.allclose(sk_norm_bias_dense(20.0 * bank @ texts.T, n_iters=2),
                           sk_norm_bias_dense(20.0 * bank @ texts.T, n_iters=4), atol=1e-3)


def test_v2t_bias_passes_keyword_arguments_on():
    bank, texts = _feats(30, 8, 2), _feats(9, 8, 3)
    out = sk_norm_text_bias_v2t(bank, texts, scale=30.0, n_iters=3, kernel="exact", return_info=True)
    assert isinstance(out, tuple) and len(out) == 2
    g, info = out
    assert info["kernel"] == "exact" and info["g_error_bound"] is None
    np.testing.assert_allclose(g, sk_norm_bias_dense(30.0 * bank @ texts.T, n_iters=3), rtol=1e-10, atol=1e-10)


# ---- survivors of the sk_norm.py mutation run: messages, helpers, info fields counted by hand ----

import math  # noqa: E402

import pytest  # noqa: E402

from stages.retrieval.sk_norm import _log_err, _merge_colsum, sk_norm_bias  # noqa: E402

_E32 = 2.0**-24
_EEXP = 7.5e-9
_E64 = 2.0**-53


def _lerr(e):
    return -math.log1p(-e)


def test_messages_and_one_row_bank():
    with pytest.raises(ValueError, match=r"^sk_norm_bias: the bank is empty$"):
        sk_norm_bias(np.zeros((0, 4)), _feats(3, 4, 0))
    with pytest.raises(ValueError, match=r"^bank_feats must be a 2-D array"):
        sk_norm_bias(np.zeros(4), _feats(3, 4, 0))
    with pytest.raises(ValueError, match=r"^gallery_feats must be a 2-D array"):
        sk_norm_bias(_feats(3, 4, 0), np.zeros(4))
    with pytest.raises(ValueError, match=r"^kernel='f16' is not one of \('float32', 'exact'\)$"):
        sk_norm_bias(_feats(3, 4, 0), _feats(3, 4, 1), kernel="f16")
    with pytest.raises(ValueError, match=r"^B must be 2-D, got shape \(3,\)$"):
        sk_norm_bias_dense(np.zeros(3))
    bank, gal = _feats(1, 4, 2), _feats(5, 4, 3)
    g = sk_norm_bias(bank, gal, scale=10.0, kernel="exact")
    np.testing.assert_allclose(g, sk_norm_bias_dense(10.0 * bank @ gal.T), rtol=1e-10, atol=1e-10)


def test_dense_reference_is_float64_for_float32_input():
    B = (_feats(6, 4, 4) @ _feats(5, 4, 5).T * 30).astype(np.float32)
    K = np.exp(B.astype(np.float64) - float(B.max()))
    b = 1.0 / K.sum(0)
    for _ in range(2):
        b = 1.0 / ((1.0 / (K @ b)) @ K)
    np.testing.assert_allclose(sk_norm_bias_dense(B, n_iters=2), np.log(b), rtol=1e-13, atol=1e-13)


def test_merge_colsum_and_log_err():
    # colsum relative to gmax = -inf holds no mass: the block's sums replace it
    c, m = _merge_colsum(np.array([5.0, 7.0]), -np.inf, np.array([1.0, 2.0]), 0.0)
    assert m == 0.0 and c.tolist() == [1.0, 2.0]
    c, m = _merge_colsum(np.array([1.0, 2.0]), 1.0, np.array([4.0, 8.0]), 1.0 + math.log(2.0))
    np.testing.assert_allclose(c, [4.5, 9.0], rtol=1e-15)
    assert _log_err(1.0) == math.inf and _log_err(1.5) == math.inf
    assert _log_err(0.5) == pytest.approx(math.log(2.0), rel=1e-15)


def _expected_bound(nb, ng, n_iters):
    # underflow terms are < 1e-30 at scale 10 on unit features
    return _lerr(_EEXP + 2 * nb * _E64) + n_iters * (_lerr(_E32 + _EEXP + ng * _E64) + _lerr(_E32 + _EEXP + nb * _E64))


def test_info_counted_by_hand_float64_features_partial_cache():
    # nb=25, ng=10, block=8: blocks of 8, 8, 8, 1 rows; float32-kernel cost 8*10*4 = 320 bytes (last 40).
    # cache 700: blocks 0, 1 kernel-cached (60 left), block 2 streamed, block 3 (40) kernel-cached.
    bank, gal = _feats(25, 6, 6), _feats(10, 6, 7)
    g, info = sk_norm_bias(bank, gal, scale=10.0, n_iters=3, block=8, cache_bytes=700, return_info=True)
    assert info == {"passes": 4, "bank_gemms": 4 + 3, "cached_blocks": 3, "blocks": 4, "cache_bytes_used": 680,
                    "block_rows": 8, "kernel": "float32", "g_error_bound": info["g_error_bound"], "fallback": None}
    assert info["g_error_bound"] == pytest.approx(_expected_bound(25, 10, 3), rel=1e-12, abs=0)
    want = sk_norm_bias_dense(10.0 * bank @ gal.T, n_iters=3)
    assert np.abs(g - want).max() <= info["g_error_bound"]


def test_info_one_kernel_row_and_exact_budget_boundaries():
    bank, gal = _feats(25, 6, 8), _feats(10, 6, 9)
    want = sk_norm_bias_dense(10.0 * bank @ gal.T, n_iters=2)
    # only the 1-row last block (40 bytes) fits: the float32 kernel is still used
    g, info = sk_norm_bias(bank, gal, scale=10.0, n_iters=2, block=8, cache_bytes=40, return_info=True)
    assert info["kernel"] == "float32" and info["cached_blocks"] == 1 and info["cache_bytes_used"] == 40
    assert info["bank_gemms"] == 4 + 2 * 3
    assert info["g_error_bound"] == pytest.approx(_expected_bound(25, 10, 2), rel=1e-12, abs=0)
    assert np.abs(g - want).max() <= info["g_error_bound"]
    # exact kernel, float64 scores: a block costs 8*10*8 = 640 bytes; a budget of exactly 640 keeps one
    g, info = sk_norm_bias(bank, gal, scale=10.0, n_iters=2, block=8, kernel="exact", cache_bytes=640,
                           return_info=True)
    assert (info["cached_blocks"], info["cache_bytes_used"], info["bank_gemms"]) == (1, 640, 4 + 2 * 3)
    assert info["kernel"] == "exact" and info["g_error_bound"] is None
    np.testing.assert_allclose(g, want, rtol=1e-10, atol=1e-10)
    # float32 kernel, budget exactly one block's 320 bytes
    _, info = sk_norm_bias(bank, gal, scale=10.0, n_iters=2, block=8, cache_bytes=320, return_info=True)
    assert (info["cached_blocks"], info["cache_bytes_used"], info["bank_gemms"]) == (1, 320, 4 + 2 * 3)
    # float32 features: exact kernel caches float32 scores at 4 bytes each
    _, info = sk_norm_bias(bank.astype(np.float32), gal.astype(np.float32), scale=10.0, n_iters=2, block=8,
                           kernel="exact", cache_bytes=320, return_info=True)
    assert (info["cached_blocks"], info["cache_bytes_used"], info["bank_gemms"]) == (1, 320, 4 + 2 * 3)


def test_block_rows_from_max_block_bytes_per_dtype():
    bank, gal = _feats(7, 4, 10), _feats(10, 4, 11)
    _, info = sk_norm_bias(bank, gal, max_block_bytes=240, return_info=True)  # 240 // (10 * 8) = 3
    assert (info["block_rows"], info["blocks"]) == (3, 3)
    _, info = sk_norm_bias(bank.astype(np.float32), gal.astype(np.float32), max_block_bytes=120,
                           return_info=True)  # 120 // (10 * 4) = 3
    assert (info["block_rows"], info["blocks"]) == (3, 3)
    _, info = sk_norm_bias(bank, gal, return_info=True)
    assert info["block_rows"] == 4096


def _half(q, g):
    return 0.5 * (q @ g.T)


def test_score_fn_used_in_every_pass_and_in_the_fallback():
    bank, gal = _feats(20, 5, 12), _feats(9, 5, 13)
    want = sk_norm_bias_dense(0.5 * 20.0 * bank @ gal.T, n_iters=2)
    for cb in (0, 10**6):
        g = sk_norm_bias(bank, gal, scale=20.0, n_iters=2, block=6, kernel="exact", cache_bytes=cb, score_fn=_half)
        np.testing.assert_allclose(g, want, rtol=1e-10, atol=1e-10)
    # fallback (max_error too small): recomputed exactly with the same score_fn, block size and cache
    g = sk_norm_bias(bank, gal, scale=20.0, n_iters=2, block=6, cache_bytes=240, max_error=1e-12,
                     max_block_bytes=9 * 8 * 4, score_fn=_half)
    assert isinstance(g, np.ndarray)
    np.testing.assert_allclose(g, want, rtol=1e-10, atol=1e-10)
    g, info = sk_norm_bias(bank, gal, scale=20.0, n_iters=2, block=6, cache_bytes=240, max_error=1e-12,
                           max_block_bytes=9 * 8 * 4, score_fn=_half, return_info=True)
    np.testing.assert_allclose(g, want, rtol=1e-10, atol=1e-10)
    # rows = min(6, 288 // 72) = 4: 5 blocks; first try: kernel cost 144 -> one cached, 5 + 2*4 GEMMs;
    # exact retry: float64 cost 288 > 240 -> none cached, 5 * 3 GEMMs
    assert info["block_rows"] == 4 and info["blocks"] == 5 and info["kernel"] == "exact"
    assert info["cached_blocks"] == 0 and info["bank_gemms"] == (5 + 2 * 4) + 5 * 3
    assert info["fallback"].startswith("float32-kernel error bound ") and info["rejected_bound"] > 1e-12


def test_max_error_equal_to_the_bound_is_accepted():
    bank, gal = _feats(12, 4, 14), _feats(6, 4, 15)
    _, info = sk_norm_bias(bank, gal, scale=10.0, n_iters=2, return_info=True)
    _, info2 = sk_norm_bias(bank, gal, scale=10.0, n_iters=2, max_error=info["g_error_bound"], return_info=True)
    assert info2["fallback"] is None and info2["kernel"] == "float32"


def _bound_with_underflow_terms(X, n_iters, kernel_rows):
    """The float32-kernel bound of the module doc, underflow terms included, from a float64 replica of the
    run: K = float32(exp(x - rowmax)), b0 = 1 / sum_i exp(x - max), then per iteration the row sums s,
    a = 1/s, the column sums c and b = 1/c; smin / amax over the kernel rows, cmin and bmax over all."""
    nb, ng = X.shape
    K = np.exp(X - X.max(1, keepdims=True)).astype(np.float32).astype(np.float64)
    b = 1.0 / np.exp(X - X.max()).sum(0)
    bound = _lerr(_EEXP + 2 * nb * _E64)
    for _ in range(n_iters):
        s = K @ b
        a = 1.0 / s
        c = a @ K
        smin, amax = s[kernel_rows].min(), a[kernel_rows].max()
        n_k = int(np.count_nonzero(kernel_rows))
        bound += _lerr(_E32 + _EEXP + ng * _E64 + ng * 2.0**-126 * b.max() / smin)
        bound += _lerr(_E32 + _EEXP + nb * _E64 + n_k * 2.0**-126 * amax / c.min())
        b = 1.0 / c
    return bound


@pytest.mark.parametrize("nb, ng", [(25, 10), (3, 40)])  # (3, 40): every a_i < 1 (wide rows, few of them)
def test_bound_charges_the_underflow_terms_when_a_column_is_far_below_every_row_max(nb, ng):
    # Scores given through score_fn (rows and columns are ids): column 0 lies 65 nats below every row's max,
    # so its b is ~e^65 and its column sums ~e^-65: the underflow terms n 2^-126 max(b) / min(s) and
    # n 2^-126 max(a) / min(c) reach ~1e-10 .. 1e-8 of the ~5e-7 bound (on unit features they are < 1e-30).
    r = np.random.default_rng(30)
    X = r.uniform(0.0, 5.0, (nb, ng))
    X[:, 0] = X.max(1) - 65.0
    ids_b, ids_g = np.arange(nb, dtype=np.float64)[:, None], np.arange(ng, dtype=np.float64)[:, None]

    def score(q, g):
        return X[q[:, 0].astype(int)][:, g[:, 0].astype(int)]

    want_g = sk_norm_bias_dense(X, n_iters=3)
    # all four blocks (8, 8, 8, 1 rows) kernel-cached; then the first two only (block 2 and 3 streamed exactly)
    cases = [(10**6, np.ones(nb, bool))] + ([(640, np.arange(nb) < 16)] if nb == 25 else [])
    for cache, kernel_rows in cases:
        g, info = sk_norm_bias(ids_b, ids_g, scale=1.0, n_iters=3, block=8, cache_bytes=cache, score_fn=score,
                               return_info=True)
        assert info["kernel"] == "float32" and info["fallback"] is None
        want_bound = _bound_with_underflow_terms(X, 3, kernel_rows)
        no_underflow = _expected_bound(nb, ng, 3)
        assert want_bound - no_underflow > 1e-10  # the underflow terms matter here
        if nb == 3:  # the maximum a_i is below 1, so the running maximum must start below it
            K = np.exp(X - X.max(1, keepdims=True))
            assert (1.0 / (K @ (1.0 / np.exp(X - X.max()).sum(0)))).max() < 1
        assert info["g_error_bound"] == pytest.approx(want_bound, rel=1e-8, abs=0)
        assert np.abs(g - want_g).max() <= info["g_error_bound"]
