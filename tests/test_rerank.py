"""Re-rankers (SK-norm, DSL, QB-Norm) and evaluate_retrieval vs naive references from the spec."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stages.retrieval import (
    RERANKERS,
    apply_rerank,
    dsl,
    evaluate_retrieval,
    qb_norm,
    ranks_from_features,
    ranks_from_scores,
    retrieval_metrics,
    sk_norm_bias,
    sk_norm_bias_dense,
    sk_norm_text_bias_v2t,
    v2t_ranks_multi_from_scores,
)


def normed(rng, n, d):
    x = rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


# ------------------------------------------------------------------------------------------------
# naive references, straight from shared/specs/evaluation.md
# ------------------------------------------------------------------------------------------------


def naive_sk_bias(B, n_iters=4):
    """m = max(B); K = exp(B - m); b = 1/K.sum(0); n_iters x (a = 1/(K b); b = 1/(a K)); g = log b."""
    B = np.asarray(B, dtype=np.float64)
    n, m = B.shape
    mx = max(B[i, j] for i in range(n) for j in range(m))
    K = [[math.exp(B[i, j] - mx) for j in range(m)] for i in range(n)]
    b = [1.0 / sum(K[i][j] for i in range(n)) for j in range(m)]
    for _ in range(n_iters):
        a = [1.0 / sum(K[i][j] * b[j] for j in range(m)) for i in range(n)]
        b = [1.0 / sum(a[i] * K[i][j] for i in range(n)) for j in range(m)]
    return np.log(np.array(b))


def naive_dsl(S, T=1.0):
    S = np.asarray(S, dtype=np.float64)
    out = np.empty_like(S)
    for j in range(S.shape[1]):
        col = [math.exp(S[i, j] / T) for i in range(S.shape[0])]
        z = sum(col)
        for i in range(S.shape[0]):
            out[i, j] = S[i, j] * col[i] / z
    return out


def naive_qb(S, B, beta=20.0, k=1):
    S = np.asarray(S, dtype=np.float64)
    B = np.asarray(B, dtype=np.float64)
    R = set()
    for row in B:
        order = sorted(range(len(row)), key=lambda j: (-row[j], j))
        R.update(order[:k])
    Z = [sum(math.exp(beta * B[i, j]) for i in range(B.shape[0])) for j in range(B.shape[1])]
    out = S.copy()
    for q in range(S.shape[0]):
        if int(np.argmax(S[q])) in R:
            out[q] = [math.exp(beta * S[q, j]) / Z[j] for j in range(S.shape[1])]
    return out


# ------------------------------------------------------------------------------------------------
# dense forms vs naive
# ------------------------------------------------------------------------------------------------


def test_sk_dense_matches_naive():
    rng = np.random.default_rng(0)
    B = 100.0 * (normed(rng, 30, 16) @ normed(rng, 12, 16).T).astype(np.float64)
    np.testing.assert_allclose(sk_norm_bias_dense(B), naive_sk_bias(B), rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(sk_norm_bias_dense(B / 100.0, scale=100.0), naive_sk_bias(B), rtol=1e-12,
                               atol=1e-10)


def test_sk_hand_worked_2x2():
    # B = [[0, 0], [0, log 3]] (logits). m = log 3; K = [[1/3, 1/3], [1/3, 1]].
    # b0 = 1/colsum = [3/2, 3/4]; a = 1/(K b0) = [1/(1/2 + 1/4), 1/(1/2 + 3/4)] = [4/3, 4/5];
    # b1 = 1/(a K) = [1/(4/9 + 4/15), 1/(4/9 + 4/5)] = [45/32, 45/56]  (n_iters = 1)
    B = np.array([[0.0, 0.0], [0.0, math.log(3.0)]])
    np.testing.assert_allclose(sk_norm_bias_dense(B, n_iters=1), np.log([45 / 32, 45 / 56]), rtol=1e-14)
    # the hub (column 1, liked by the bank) gets the lower bias
    g = sk_norm_bias_dense(B)
    assert g[1] < g[0]


def test_dsl_matches_naive_and_hand_example():
    rng = np.random.default_rng(1)
    S = 10 * rng.standard_normal((9, 7))
    np.testing.assert_allclose(dsl(S), naive_dsl(S), rtol=1e-12)
    np.testing.assert_allclose(dsl(S, temperature=2.5), naive_dsl(S, 2.5), rtol=1e-12)
    # S = I: column softmax of [1, 0] is [e/(e+1), 1/(e+1)] -> diagonal e/(e+1), off-diagonal 0
    e = math.e
    np.testing.assert_allclose(dsl(np.eye(2)), [[e / (e + 1), 0], [0, e / (e + 1)]], rtol=1e-15)


@pytest.mark.parametrize("k", [1, 3])
def test_qb_norm_matches_naive(k):
    rng = np.random.default_rng(2 + k)
    S = normed(rng, 20, 8) @ normed(rng, 15, 8).T
    B = normed(rng, 12, 8) @ normed(rng, 15, 8).T
    np.testing.assert_allclose(qb_norm(S, B, k=k), naive_qb(S, B, k=k), rtol=1e-12)
    # a one-row bank whose top-1 is query 0's top-1: row 0 is replaced, rows with another top-1 stay raw
    out = qb_norm(S, S[:1], k=1)
    assert not (out[0] == S[0]).all()
    assert (out == S).all(axis=1).any() and not (out == S).all()


def test_apply_rerank_dispatch_and_errors():
    rng = np.random.default_rng(4)
    S = rng.standard_normal((5, 4))
    B = rng.standard_normal((6, 4))
    np.testing.assert_array_equal(apply_rerank("none", S), S)
    np.testing.assert_allclose(apply_rerank("dsl", S), dsl(S))
    np.testing.assert_allclose(apply_rerank("sk-norm", S, B), S + sk_norm_bias_dense(B)[None, :])
    np.testing.assert_allclose(apply_rerank("qb-norm", S, B), qb_norm(S, B))
    with pytest.raises(ValueError, match="needs a bank"):
        apply_rerank("sk-norm", S)
    with pytest.raises(ValueError, match="not one of"):
        apply_rerank("hubness", S, B)


# ------------------------------------------------------------------------------------------------
# SK-norm blockwise == dense
# ------------------------------------------------------------------------------------------------


def gemm_by_blocks(bank, gal, rows: int) -> np.ndarray:
    """The similarity matrix as the blockwise code computes it: one float32 GEMM per block of `rows` bank rows.
    BLAS may round a block's GEMM differently from the whole matrix's (numpy 2.4's OpenBLAS does), and the
    SK-norm contracts are about the algorithm given those scores, so the dense reference starts from them."""
    from stages.retrieval.blocks import _score_block

    return np.concatenate([_score_block(None, bank[r:r + rows], gal) for r in range(0, len(bank), rows)])


@pytest.mark.parametrize("d", [512, 12])  # 12-d: wide logits (rows span > 100 logit units)
@pytest.mark.parametrize("cache", ["stream", "partial", "full"])
def test_sk_blockwise_equals_dense(d, cache):
    """kernel="exact": the raw GEMM output is cached, so any cache size gives the streaming result bit for bit."""
    rng = np.random.default_rng(d)
    bank, gal = normed(rng, 700, d), normed(rng, 230, d)
    cache_bytes = {"stream": 0, "partial": 3 * 64 * 230 * 4, "full": 2**30}[cache]
    for block in (64, 100, 4096):
        g, info = sk_norm_bias(bank, gal, block=block, cache_bytes=cache_bytes, kernel="exact", return_info=True)
        want = sk_norm_bias_dense(100.0 * gemm_by_blocks(bank, gal, info["block_rows"]).astype(np.float64))
        np.testing.assert_allclose(g, want, rtol=1e-6, atol=0)
        np.testing.assert_array_equal(g, sk_norm_bias(bank, gal, block=block, cache_bytes=0))
        assert info["passes"] == 5 and info["kernel"] == "exact" and info["g_error_bound"] is None
        if cache == "stream":
            assert info["bank_gemms"] == 5 * info["blocks"]
        if cache == "full":
            assert info["bank_gemms"] == info["blocks"] == info["cached_blocks"]
        if cache == "partial" and block == 64:
            assert info["cached_blocks"] == 3 and info["bank_gemms"] == 3 + 5 * (info["blocks"] - 3)


# The accuracy contract of the default kernel="float32" (module doc of stages.retrieval.rerank):
#   |g - g_exact| <= info["g_error_bound"] <= max_error (1e-6), absolute, whatever |g| is;
#   otherwise it recomputes with kernel="exact" and says so. Ranks move only at near-ties (< 2e-6 apart).
@pytest.mark.parametrize("d", [512, 12, 3])  # 3-d: rows span ~200 logit units, entries underflow float32
@pytest.mark.parametrize("cache", ["partial", "full"])
def test_sk_float32_kernel_accuracy_contract(d, cache):
    rng = np.random.default_rng(100 + d)
    bank, gal, q = normed(rng, 700, d), normed(rng, 230, d), normed(rng, 230, d)
    cache_bytes = {"partial": 3 * 64 * 230 * 4, "full": 2**30}[cache]
    for block in (64, 100, 4096):
        g, info = sk_norm_bias(bank, gal, block=block, cache_bytes=cache_bytes, return_info=True)
        want = sk_norm_bias_dense(100.0 * gemm_by_blocks(bank, gal, info["block_rows"]).astype(np.float64))
        assert info["fallback"] is None
        if info["cached_blocks"] == 0:  # nothing fits the budget (partial, block 4096): streamed exactly
            assert info["kernel"] == "exact" and info["g_error_bound"] is None
            np.testing.assert_allclose(g, want, rtol=1e-9, atol=1e-12)
        else:
            assert info["kernel"] == "float32"
            assert 0 < info["g_error_bound"] <= 1e-6
            assert np.max(np.abs(g - want)) <= info["g_error_bound"]
            assert np.max(np.abs(g - want)) <= 1e-7  # what it really achieves (~2e-8)
        if cache == "partial" and block == 64:  # uncached blocks are streamed (and exact)
            assert info["cached_blocks"] == 3 and info["bank_gemms"] == 3 + 5 * (info["blocks"] - 3)
        if cache == "full":
            assert info["bank_gemms"] == info["blocks"] == info["cached_blocks"]
        # identical t2v ranks to the dense pipeline (S + g_dense, float64)
        S = 100.0 * (q @ gal.T).astype(np.float64)
        np.testing.assert_array_equal(ranks_from_features(q, gal, np.arange(230), bias=g, scale=100.0),
                                      ranks_from_scores(S + want[None, :]))


def test_sk_float32_kernel_with_float64_features():
    rng = np.random.default_rng(3)
    bank, gal = normed(rng, 300, 24).astype(np.float64), normed(rng, 90, 24).astype(np.float64)
    want = sk_norm_bias_dense(100.0 * (bank @ gal.T))
    g, info = sk_norm_bias(bank, gal, block=50, return_info=True)
    assert info["kernel"] == "float32" and info["cached_blocks"] == info["blocks"] == 6
    assert np.max(np.abs(g - want)) <= info["g_error_bound"] <= 1e-6


def test_sk_float32_kernel_falls_back_when_the_bound_is_too_loose():
    rng = np.random.default_rng(4)
    bank, gal = normed(rng, 200, 12), normed(rng, 70, 12)
    exact = sk_norm_bias(bank, gal, block=64, kernel="exact")
    # a stricter max_error than the bound can promise
    g, info = sk_norm_bias(bank, gal, block=64, max_error=1e-9, return_info=True)
    assert info["kernel"] == "exact" and "recomputed exactly" in info["fallback"]
    assert info["rejected_bound"] > 1e-9 and info["bank_gemms"] == 2 * info["blocks"]
    np.testing.assert_array_equal(g, exact)
    # more iterations: 2n+1 rounded sums, ~6.6e-8 each -> 8 iterations exceed 1e-6
    g8, info8 = sk_norm_bias(bank, gal, n_iters=8, block=64, return_info=True)
    assert info8["kernel"] == "exact" and info8["fallback"]
    np.testing.assert_array_equal(g8, sk_norm_bias(bank, gal, n_iters=8, block=64, kernel="exact"))
    _, info6 = sk_norm_bias(bank, gal, n_iters=6, block=64, return_info=True)
    assert info6["kernel"] == "float32" and info6["g_error_bound"] <= 1e-6
    # logits so wide (scale 1000 on 12-d) that float32 underflow could matter: the bound says so
    g, info = sk_norm_bias(bank, gal, scale=1000.0, block=64, return_info=True)
    want = sk_norm_bias_dense(1000.0 * gemm_by_blocks(bank, gal, info["block_rows"]).astype(np.float64))
    assert info["kernel"] == "exact" and info["fallback"]
    np.testing.assert_allclose(g, want, rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="kernel"):
        sk_norm_bias(bank, gal, kernel="float16")


def test_sk_ranks_applied_as_bias_match_dense_pipeline():
    rng = np.random.default_rng(6)
    bank, q, gal = normed(rng, 400, 64), normed(rng, 150, 64), normed(rng, 150, 64)
    g = sk_norm_bias(bank, gal, block=50)
    S_dense = 100.0 * (q @ gal.T).astype(np.float64)
    g_dense = sk_norm_bias_dense(100.0 * (bank @ gal.T).astype(np.float64))
    want = ranks_from_scores(S_dense + g_dense[None, :])
    got = ranks_from_features(q, gal, np.arange(150), block=32, bias=g, scale=100.0)
    np.testing.assert_array_equal(got, want)


def test_sk_v2t_orientation():
    rng = np.random.default_rng(7)
    bank_videos, texts = normed(rng, 90, 32), normed(rng, 60, 32)
    # bank rows = bank videos, columns = test texts; the bias is per text
    want = sk_norm_bias_dense(100.0 * (bank_videos @ texts.T).astype(np.float64))
    np.testing.assert_allclose(sk_norm_text_bias_v2t(bank_videos, texts, block=16), want, rtol=1e-6)


# ------------------------------------------------------------------------------------------------
# evaluate_retrieval (blockwise) == dense pipelines
# ------------------------------------------------------------------------------------------------


def _data(seed, nv=60, extra=90, d=32):
    rng = np.random.default_rng(seed)
    c2v = np.concatenate([np.arange(nv), rng.integers(0, nv, size=extra)])
    rng.shuffle(c2v)
    T, V = normed(rng, len(c2v), d), normed(rng, nv, d)
    BT, BV = normed(rng, 200, d), normed(rng, 120, d)
    return T, V, c2v, BT, BV


def _dense_scores(method, T, V, BT, BV, scale=100.0):
    S = (T @ V.T).astype(np.float64)
    if method == "none":
        return S, S.T
    if method == "sk-norm":
        return (apply_rerank("sk-norm", scale * S, scale * (BT @ V.T).astype(np.float64)),
                apply_rerank("sk-norm", scale * S.T, scale * (BV @ T.T).astype(np.float64)))
    if method == "dsl":
        return dsl(scale * S), dsl(scale * S.T)
    return qb_norm(S, BT @ V.T), qb_norm(S.T, BV @ T.T)


@pytest.mark.parametrize("method", RERANKERS)
@pytest.mark.parametrize("v2t_gallery", ["captions", "videos"])
def test_evaluate_retrieval_matches_dense(method, v2t_gallery):
    T, V, c2v, BT, BV = _data(20)
    St, Sv = _dense_scores(method, T, V, BT, BV)
    want_t2v = ranks_from_scores(St, c2v)
    want_v2t = v2t_ranks_multi_from_scores(Sv, c2v, gallery=v2t_gallery)
    for block in (16, 1000):
        res = evaluate_retrieval(T, V, c2v, rerank=method, bank_text_feats=BT, bank_video_feats=BV,
                                 block=block, v2t_gallery=v2t_gallery, return_ranks=True, median="torch")
        np.testing.assert_array_equal(res["ranks"]["t2v"], want_t2v)
        np.testing.assert_array_equal(res["ranks"]["v2t"], want_v2t)
        assert res["t2v"]["rerank"] == method and res["v2t"]["rerank"] == method
        added = ("rerank", "convention_reference", "tie_diagnostics", "warnings")
        assert res["t2v"] == {**retrieval_metrics(want_t2v, median="torch", n_queries=len(c2v)),
                              **{k: v for k, v in res["t2v"].items() if k.startswith(added)}}
        assert res["v2t"]["n_queries"] == V.shape[0] and res["v2t"]["v2t_gallery"] == v2t_gallery


def test_evaluate_retrieval_ties_and_missing_bank():
    rng = np.random.default_rng(21)
    T = rng.integers(-1, 2, size=(80, 6)).astype(np.float32)
    V = rng.integers(-1, 2, size=(40, 6)).astype(np.float32)
    c2v = np.concatenate([np.arange(40), rng.integers(0, 40, size=40)])
    S = (T @ V.T).astype(np.float64)
    for ties in ("optimistic", "pessimistic", "average"):
        res = evaluate_retrieval(T, V, c2v, ties=ties, ties_v2t="average", block=9, return_ranks=True)
        np.testing.assert_array_equal(res["ranks"]["t2v"], ranks_from_scores(S, c2v, ties))
        np.testing.assert_array_equal(res["ranks"]["v2t"], v2t_ranks_multi_from_scores(S.T, c2v, "average"))
        assert res["t2v"]["ties"] == ties and res["v2t"]["ties"] == "average"
    # SK-norm requested with only a text bank: v2t is evaluated without re-ranking and says so
    res = evaluate_retrieval(T, V, c2v, rerank="sk-norm", bank_text_feats=T[:20], block=9)
    assert res["t2v"]["rerank"] == "sk-norm"
    assert res["v2t"]["rerank"] == "none" and res["v2t"]["rerank_requested"] == "sk-norm"


def test_evaluate_retrieval_t2v_only_and_errors():
    T, V, c2v, BT, _ = _data(22)
    res = evaluate_retrieval(T, V, c2v, directions=("t2v",), rerank="sk-norm", bank_text_feats=BT,
                             return_ranks=True)
    assert set(res) == {"t2v", "ranks", "counts"}
    with pytest.raises(ValueError, match="rerank"):
        evaluate_retrieval(T, V, c2v, rerank="bogus")
    with pytest.raises(ValueError, match="direction"):
        evaluate_retrieval(T, V, c2v, directions=("t2t",))
