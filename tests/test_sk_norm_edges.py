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
