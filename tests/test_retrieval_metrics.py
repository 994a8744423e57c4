"""Retrieval ranks and metrics vs naive references written straight from shared/specs/evaluation.md."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stages.retrieval.metrics import ranks_from_features, ranks_from_scores, retrieval_metrics
from stages.retrieval.pair_ranks import t2v_v2t_ranks, v2t_ranks_multi, v2t_ranks_multi_from_scores

TIES = ("optimistic", "pessimistic", "average")


# ------------------------------------------------------------------------------------------------
# naive references
# ------------------------------------------------------------------------------------------------


def naive_ranks(S, gt, ties):
    """rank = count of strictly greater (optimistic) / other >= (pessimistic) / their mean."""
    S = np.asarray(S, dtype=np.float64)
    out = []
    for i in range(S.shape[0]):
        s = S[i, gt[i]]
        opt = sum(1 for j in range(S.shape[1]) if S[i, j] > s)
        pess = sum(1 for j in range(S.shape[1]) if j != gt[i] and S[i, j] >= s)
        out.append({"optimistic": opt, "pessimistic": pess, "average": (opt + pess) / 2}[ties])
    return np.array(out, dtype=np.float64)


def sort_ranks(S, gt):
    """Sort-based rank (position of the gt in a stable descending sort) - the untied reference."""
    order = np.argsort(-np.asarray(S, dtype=np.float64), axis=1, kind="stable")
    return np.array([int(np.flatnonzero(order[i] == gt[i])[0]) for i in range(S.shape[0])], dtype=float)


def clip4clip_compute_metrics(x):
    """CLIP4Clip / DRL `compute_metrics`, verbatim in substance."""
    sx = np.sort(-x, axis=1)
    d = np.diag(-x)
    d = d[:, np.newaxis]
    with np.errstate(invalid="ignore"):  # inf - inf on a non-finite diagonal, as in the original
        ind = sx - d
    ind = np.where(ind == 0)
    ind = ind[1]
    metrics = {}
    metrics["R1"] = float(np.sum(ind == 0)) * 100 / len(ind)
    metrics["R5"] = float(np.sum(ind < 5)) * 100 / len(ind)
    metrics["R10"] = float(np.sum(ind < 10)) * 100 / len(ind)
    metrics["MR"] = np.median(ind) + 1
    metrics["MeanR"] = np.mean(ind) + 1
    metrics["cols"] = [int(i) for i in ind]
    return metrics


def naive_v2t_captions(S_vc, c2v, ties):
    """v2t, gallery = all captions: min over the video's captions c of the count of other videos'
    captions scoring above c (> optimistic, >= pessimistic, mean for average)."""
    S_vc = np.asarray(S_vc, dtype=np.float64)
    nv, nc = S_vc.shape
    out = []
    for v in range(nv):
        best = None
        for c in range(nc):
            if c2v[c] != v:
                continue
            s = S_vc[v, c]
            opt = sum(1 for c2 in range(nc) if S_vc[v, c2] > s)
            pess = sum(1 for c2 in range(nc) if c2v[c2] != v and S_vc[v, c2] >= s)
            r = {"optimistic": opt, "pessimistic": pess, "average": (opt + pess) / 2}[ties]
            best = r if best is None else min(best, r)
        out.append(best)
    return np.array(out, dtype=np.float64)


def naive_v2t_videos(S_vc, c2v, ties):
    """CLIP4Clip v2t: group score = max over the group's captions, then rank among the V groups."""
    S_vc = np.asarray(S_vc, dtype=np.float64)
    nv = S_vc.shape[0]
    G = np.full((nv, nv), -np.inf)
    for c, v in enumerate(c2v):
        G[:, v] = np.maximum(G[:, v], S_vc[:, c])
    return naive_ranks(G, np.arange(nv), ties)


def normed(rng, n, d, dtype=np.float32):
    x = rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(dtype)


def quantised(rng, n, d, levels=3):
    """Small-integer features: every dot product is exact in float32, and ties are frequent."""
    return rng.integers(-1, levels - 1, size=(n, d)).astype(np.float32)


# ------------------------------------------------------------------------------------------------
# hand-worked examples
# ------------------------------------------------------------------------------------------------


def test_hand_worked_untied_4x4_both_medians():
    # rows: gt on the diagonal
    # row0: gt .9, nothing above          -> rank 0 (1-based 1)
    # row1: gt .4, .5 and .6 above         -> rank 2 (3)
    # row2: gt .7, .8 above                -> rank 1 (2)
    # row3: gt .1, .9 .8 .7 above          -> rank 3 (4)
    # R@1 = 25, R@5 = 100; MnR = (1+3+2+4)/4 = 2.5
    # MdR numpy: median(0,1,2,3) = 1.5 -> 2.5 ; torch: lower middle = 1 -> 2
    # StdR = std(1,3,2,4) = sqrt(1.25)
    S = np.array([[0.9, 0.1, 0.2, 0.3],
                  [0.5, 0.4, 0.6, 0.1],
                  [0.3, 0.8, 0.7, 0.2],
                  [0.9, 0.8, 0.7, 0.1]])
    for ties in TIES:
        r = ranks_from_scores(S, ties=ties)
        assert r.tolist() == [0, 2, 1, 3]
    m = retrieval_metrics(r, ks=(1, 5), median="numpy")
    assert m["R@1"] == 25.0 and m["R@5"] == 100.0
    assert m["MdR"] == 2.5 and m["MnR"] == 2.5
    assert m["StdR"] == pytest.approx(math.sqrt(1.25))
    assert m["Geom"] == pytest.approx((25.0 * 100.0 * 100.0) ** (1 / 3))
    mt = retrieval_metrics(r, ks=(1, 5), median="torch")
    assert mt["MdR"] == 2.0 and mt["MnR"] == 2.5
    assert m["median"] == "numpy" and mt["median"] == "torch" and m["ties"] == "optimistic"
    assert m["n_queries"] == 4


def test_hand_worked_tied_3x3_all_policies():
    # row0: gt .5, others .5 .1 -> optimistic 0, pessimistic 1; clip4clip entries [0, 1]
    # row1: gt .2, others .2 .2 -> optimistic 0, pessimistic 2; entries [0, 1, 2]
    # row2: gt .3, others .9 .1 -> optimistic 1, pessimistic 1; entries [1]
    S = np.array([[0.5, 0.5, 0.1],
                  [0.2, 0.2, 0.2],
                  [0.9, 0.1, 0.3]])
    opt = ranks_from_scores(S, ties="optimistic")
    pess = ranks_from_scores(S, ties="pessimistic")
    avg = ranks_from_scores(S, ties="average")
    c4c = ranks_from_scores(S, ties="clip4clip")
    assert opt.tolist() == [0, 0, 1]
    assert pess.tolist() == [1, 2, 1]
    assert avg.tolist() == [0.5, 1.0, 1.0]
    assert sorted(c4c.tolist()) == [0, 0, 1, 1, 1, 2]
    # optimistic: R@1 = 2/3, MdR = 0+1 = 1, MnR = 1/3 + 1
    m = retrieval_metrics(opt, ks=(1,))
    assert m["R@1"] == pytest.approx(200 / 3) and m["MdR"] == 1.0 and m["MnR"] == pytest.approx(4 / 3)
    # pessimistic: R@1 = 0, MdR = 1+1 = 2, MnR = 4/3 + 1
    m = retrieval_metrics(pess, ks=(1,), ties="pessimistic")
    assert m["R@1"] == 0.0 and m["MdR"] == 2.0 and m["MnR"] == pytest.approx(7 / 3) and m["Geom"] == 0.0
    # average: R@1 = 1/3 (0.5 < 1), MdR = 1+1 = 2, MnR = 2.5/3 + 1
    m = retrieval_metrics(avg, ks=(1,), ties="average")
    assert m["R@1"] == pytest.approx(100 / 3) and m["MdR"] == 2.0 and m["MnR"] == pytest.approx(1 + 2.5 / 3)
    # clip4clip entries [0,0,1,1,1,2]: R@1 = 2/6, numpy median 1 -> 2, torch lower middle 1 -> 2,
    # MnR = 5/6 + 1
    ref = clip4clip_compute_metrics(S)
    for med in ("numpy", "torch"):
        m = retrieval_metrics(c4c, ks=(1, 5, 10), median=med, ties="clip4clip", n_queries=3)
        assert m["R@1"] == pytest.approx(ref["R1"]) == pytest.approx(100 / 3)
        assert m["MdR"] == 2.0 == ref["MR"]
        assert m["MnR"] == pytest.approx(ref["MeanR"]) == pytest.approx(1 + 5 / 6)
        assert m["n_ranks"] == 6 and m["n_queries"] == 3


def test_median_conventions_even_and_odd():
    r = np.array([0, 4, 1, 7], dtype=float)
    assert retrieval_metrics(r, median="numpy")["MdR"] == 3.5  # (1+4)/2 + 1
    assert retrieval_metrics(r, median="torch")["MdR"] == 2.0  # lower middle 1, + 1
    r = np.array([0, 4, 1], dtype=float)
    assert retrieval_metrics(r, median="numpy")["MdR"] == retrieval_metrics(r, median="torch")["MdR"] == 2.0


# ------------------------------------------------------------------------------------------------
# dense ranks vs naive
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ties", TIES)
@pytest.mark.parametrize("levels", [2, 3, 0])
def test_ranks_from_scores_matches_naive(ties, levels):
    rng = np.random.default_rng(levels)
    if levels:
        S = rng.integers(0, levels, size=(60, 45)).astype(np.float32)  # heavy ties
    else:
        S = rng.standard_normal((60, 45))
    gt = rng.integers(0, 45, size=60)
    np.testing.assert_array_equal(ranks_from_scores(S, gt, ties), naive_ranks(S, gt, ties))


def test_untied_equals_sort_based_and_clip4clip():
    rng = np.random.default_rng(3)
    S = rng.standard_normal((80, 80)).astype(np.float32)
    r = ranks_from_scores(S)
    np.testing.assert_array_equal(r, sort_ranks(S, np.arange(80)))
    np.testing.assert_array_equal(np.sort(ranks_from_scores(S, ties="clip4clip")), np.sort(r))
    for ties in TIES:
        np.testing.assert_array_equal(ranks_from_scores(S, ties=ties), r)


@pytest.mark.parametrize("levels", [2, 3])
def test_clip4clip_ties_match_reference(levels):
    rng = np.random.default_rng(10 + levels)
    S = rng.integers(0, levels, size=(40, 40)).astype(np.float32)
    S[3, 3] = -np.inf  # a non-finite diagonal contributes no entry in the reference
    ref = clip4clip_compute_metrics(S)
    mine = ranks_from_scores(S, ties="clip4clip")
    np.testing.assert_array_equal(np.sort(mine), np.sort(np.array(ref["cols"], dtype=float)))
    m = retrieval_metrics(mine, ks=(1, 5, 10), ties="clip4clip")
    assert m["R@1"] == pytest.approx(ref["R1"])
    assert m["R@5"] == pytest.approx(ref["R5"])
    assert m["R@10"] == pytest.approx(ref["R10"])
    assert m["MdR"] == ref["MR"]
    assert m["MnR"] == pytest.approx(ref["MeanR"])


def test_metrics_match_naive_formulas():
    rng = np.random.default_rng(5)
    r = rng.integers(0, 200, size=1001).astype(float)
    m = retrieval_metrics(r, ks=(1, 5, 10, 50))
    for k in (1, 5, 10, 50):
        assert m[f"R@{k}"] == pytest.approx(100 * np.mean(r < k))
    assert m["MdR"] == np.median(r) + 1
    assert m["MnR"] == pytest.approx(np.mean(r) + 1)
    assert m["StdR"] == pytest.approx(np.std(r + 1))
    rk = [100 * np.mean(r < k) for k in (1, 5, 10)]
    assert m["Geom"] == pytest.approx(np.prod(rk) ** (1 / 3))


# ------------------------------------------------------------------------------------------------
# blockwise from features == dense
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ties", TIES + ("clip4clip",))
@pytest.mark.parametrize("block", [1, 7, 64, 4096])
@pytest.mark.parametrize("quant", [False, True])
def test_ranks_from_features_blockwise_equals_dense(ties, block, quant):
    rng = np.random.default_rng(block)
    if quant:
        Q, G = quantised(rng, 150, 8), quantised(rng, 120, 8)
    else:
        Q, G = normed(rng, 150, 32), normed(rng, 120, 32)
    gt = rng.integers(0, 120, size=150)
    dense = ranks_from_scores(Q @ G.T, gt, ties)
    np.testing.assert_array_equal(ranks_from_features(Q, G, gt, ties=ties, block=block), dense)
    if ties != "clip4clip":
        np.testing.assert_array_equal(dense, naive_ranks(Q @ G.T, gt, ties))


@pytest.mark.parametrize("ties", TIES)
def test_ranks_from_features_bias_and_scale(ties):
    rng = np.random.default_rng(7)
    Q, G = quantised(rng, 90, 6), quantised(rng, 70, 6)
    bias = rng.integers(-2, 3, size=70).astype(np.float64)  # keeps ties after the bias
    gt = rng.integers(0, 70, size=90)
    S = 3.0 * (Q @ G.T).astype(np.float64) + bias[None, :]
    want = naive_ranks(S, gt, ties)
    for block in (5, 33, 1000):
        got = ranks_from_features(Q, G, gt, ties=ties, block=block, bias=bias, scale=3.0)
        np.testing.assert_array_equal(got, want)


def test_ranks_from_features_score_fn_and_max_block_bytes():
    rng = np.random.default_rng(8)
    Q, G = normed(rng, 50, 16), normed(rng, 40, 16)
    gt = rng.integers(0, 40, size=50)
    calls = []

    def score_fn(q, g):
        calls.append(q.shape[0])
        return -(q @ g.T)

    got = ranks_from_features(Q, G, gt, score_fn=score_fn, max_block_bytes=40 * 4 * 8)
    np.testing.assert_array_equal(got, ranks_from_scores(-(Q @ G.T), gt))
    assert max(calls) == 8 and sum(calls) == 50


def test_nan_ground_truth_raises_and_bad_inputs():
    S = np.array([[np.nan, 1.0], [0.0, 1.0]])
    with pytest.raises(ValueError, match="NaN"):
        ranks_from_scores(S)
    with pytest.raises(ValueError, match="ties"):
        ranks_from_scores(np.eye(2), ties="best")
    with pytest.raises(ValueError, match="out of range"):
        ranks_from_scores(np.eye(2), gt=[0, 2])
    with pytest.raises(ValueError, match="median"):
        retrieval_metrics([0.0], median="mean")
    # NaN elsewhere in the row never beats the ground truth
    assert ranks_from_scores(np.array([[0.5, np.nan, 0.7]]), gt=[0]).tolist() == [1.0]


# ------------------------------------------------------------------------------------------------
# multi-caption
# ------------------------------------------------------------------------------------------------


def _multi_caption(rng, nv, extra, d, quant):
    c2v = np.concatenate([np.arange(nv), rng.integers(0, nv, size=extra)])
    rng.shuffle(c2v)
    if quant:
        return quantised(rng, len(c2v), d), quantised(rng, nv, d), c2v
    return normed(rng, len(c2v), d), normed(rng, nv, d), c2v


@pytest.mark.parametrize("ties", TIES)
@pytest.mark.parametrize("quant", [False, True])
def test_multi_caption_t2v(ties, quant):
    rng = np.random.default_rng(11)
    T, V, c2v = _multi_caption(rng, 40, 90, 8, quant)
    want = naive_ranks(T @ V.T, c2v, ties)
    for block in (3, 50, 999):
        np.testing.assert_array_equal(ranks_from_features(T, V, c2v, ties=ties, block=block), want)


@pytest.mark.parametrize("ties", TIES)
@pytest.mark.parametrize("gallery", ["captions", "videos"])
@pytest.mark.parametrize("quant", [False, True])
def test_multi_caption_v2t(ties, gallery, quant):
    rng = np.random.default_rng(12)
    T, V, c2v = _multi_caption(rng, 30, 70, 8, quant)
    S_vc = V @ T.T
    ref = naive_v2t_captions if gallery == "captions" else naive_v2t_videos
    want = ref(S_vc, c2v, ties)
    np.testing.assert_array_equal(v2t_ranks_multi_from_scores(S_vc, c2v, ties, gallery=gallery), want)
    for block in (1, 7, 1000):
        got = v2t_ranks_multi(V, T, c2v, ties=ties, block=block, gallery=gallery)
        np.testing.assert_array_equal(got, want)


def test_v2t_captions_one_caption_per_video_is_square_v2t():
    rng = np.random.default_rng(13)
    T, V = quantised(rng, 50, 6), quantised(rng, 50, 6)
    for ties in TIES:
        want = ranks_from_scores((V @ T.T), None, ties)
        np.testing.assert_array_equal(v2t_ranks_multi(V, T, np.arange(50), ties=ties), want)
        np.testing.assert_array_equal(v2t_ranks_multi(V, T, np.arange(50), ties=ties, gallery="videos"), want)


def test_v2t_requires_a_caption_per_video():
    rng = np.random.default_rng(14)
    with pytest.raises(ValueError, match="no caption"):
        v2t_ranks_multi(normed(rng, 3, 4), normed(rng, 2, 4), [0, 1])


@pytest.mark.parametrize("ties", TIES)
@pytest.mark.parametrize("quant", [False, True])
def test_fused_t2v_v2t_matches_separate(ties, quant):
    rng = np.random.default_rng(15)
    T, V, c2v = _multi_caption(rng, 35, 80, 8, quant)
    vb = rng.integers(-1, 2, size=35).astype(np.float64) if quant else rng.standard_normal(35)
    tb = rng.integers(-1, 2, size=len(c2v)).astype(np.float64) if quant else rng.standard_normal(len(c2v))
    S = 2.0 * (T @ V.T).astype(np.float64)
    want_t2v = naive_ranks(S + vb[None, :], c2v, ties)
    want_v2t = naive_v2t_captions((S + tb[:, None]).T, c2v, "average")
    for block in (1, 16, 500):
        t2v, v2t, info = t2v_v2t_ranks(T, V, c2v, ties=ties, ties_v2t="average", block=block, video_bias=vb,
                                       text_bias=tb, scale=2.0, return_info=True)
        np.testing.assert_array_equal(t2v, want_t2v)
        np.testing.assert_array_equal(v2t, want_v2t)
        if quant:  # exact small-integer products: the threshold tiles cannot round differently
            assert info["v2t_recounted_videos"] == 0


def test_fused_square_equals_two_dense_passes():
    rng = np.random.default_rng(16)
    T, V = normed(rng, 300, 64), normed(rng, 300, 64)
    t2v, v2t = t2v_v2t_ranks(T, V, block=128)
    S = T @ V.T
    np.testing.assert_array_equal(t2v, ranks_from_scores(S))
    np.testing.assert_array_equal(v2t, ranks_from_scores(np.ascontiguousarray(S.T)))


def test_fused_recounts_when_thresholds_round_differently():
    """If the threshold tiles ever round differently from the main pass, the affected videos are
    recounted from a pass whose threshold comes from the same GEMM output."""
    rng = np.random.default_rng(17)
    T, V, c2v = _multi_caption(rng, 300, 200, 16, quant=False)
    nv, nc = V.shape[0], T.shape[0]

    def skewed(q, g):  # perturbs only the small phase-1 tiles (neither nv nor nc gallery rows)
        s = q @ g.T
        return s + 1e-3 if g.shape[0] not in (nv, nc) else s

    t2v, v2t, info = t2v_v2t_ranks(T, V, c2v, block=64, score_fn=skewed, return_info=True)
    assert info["v2t_recounted_videos"] > 0
    np.testing.assert_array_equal(t2v, naive_ranks(T @ V.T, c2v, "optimistic"))
    np.testing.assert_array_equal(v2t, naive_v2t_captions(V @ T.T, c2v, "optimistic"))


# ------------------------------------------------------------------------------------------------
# DRL token-wise similarity as a score_fn
# ------------------------------------------------------------------------------------------------


def naive_drl(t, tm, v, vm, mode, tw=None, vw=None):
    """DRL wti_interaction with loops: masked sims (padding -> 0), max, mean or weighted sum."""
    def unit(x):
        return x / np.linalg.norm(x)

    def softmax(logits, mask):
        e = [math.exp(l) if m else 0.0 for l, m in zip(logits, mask)]
        s = sum(e)
        return [x / s for x in e]

    out = np.zeros((t.shape[0], v.shape[0]))
    for a in range(t.shape[0]):
        for b in range(v.shape[0]):
            A = np.array([[float(unit(t[a, i]) @ unit(v[b, j])) * tm[a, i] * vm[b, j]
                           for j in range(v.shape[1])] for i in range(t.shape[1])])
            if mode == "ti":
                t2v = A.max(axis=1).sum() / tm[a].sum()
                v2t = A.max(axis=0).sum() / vm[b].sum()
            else:
                t2v = float(np.dot(A.max(axis=1), softmax(tw[a], tm[a])))
                v2t = float(np.dot(A.max(axis=0), softmax(vw[b], vm[b])))
            out[a, b] = (t2v + v2t) / 2
    return out


@pytest.mark.parametrize("mode", ["ti", "wti"])
def test_drl_similarity_and_score_fn(mode):
    from stages.retrieval.similarity import drl_score_fn, drl_similarity, pack_tokens

    rng = np.random.default_rng(30)
    nt, nv, Lt, Lv, d = 14, 9, 5, 4, 8
    t = rng.standard_normal((nt, Lt, d)).astype(np.float32)
    v = rng.standard_normal((nv, Lv, d)).astype(np.float32)
    tm = (rng.random((nt, Lt)) < 0.7).astype(np.float32)
    tm[:, 0] = 1
    vm = (rng.random((nv, Lv)) < 0.7).astype(np.float32)
    vm[:, 0] = 1
    tw, vw = rng.standard_normal((nt, Lt)), rng.standard_normal((nv, Lv))
    S = drl_similarity(t, tm, v, vm, mode, tw, vw)
    np.testing.assert_allclose(S, naive_drl(t, tm, v, vm, mode, tw, vw), rtol=1e-5, atol=1e-6)
    c2v = np.concatenate([np.arange(nv), rng.integers(0, nv, size=nt - nv)])
    T, V = pack_tokens(t, tm, tw), pack_tokens(v, vm, vw)
    got = ranks_from_features(T, V, c2v, block=4, score_fn=drl_score_fn(Lt, Lv, d, mode))
    np.testing.assert_array_equal(got, ranks_from_scores(S, c2v))
    got = v2t_ranks_multi(V, T, c2v, block=3, score_fn=drl_score_fn(Lt, Lv, d, mode, queries="video"))
    np.testing.assert_array_equal(got, v2t_ranks_multi_from_scores(np.ascontiguousarray(S.T), c2v))


# ---- named conventions (stages.retrieval.conventions), hand-worked ------------------------------------------
def _conv(T, V, c2v, ties, **kw):
    from stages.retrieval import evaluate_retrieval

    return evaluate_retrieval(np.asarray(T, np.float32), np.asarray(V, np.float32), c2v, ties=ties, median="auto",
                              ks=(1, 5), return_ranks=True, **kw)


S3 = np.array([[1, 1, 0], [0, 1, 0], [1, 1, 0.5]])  # captions x videos (videos = e0, e1, e2; captions = rows)


@pytest.mark.parametrize("ties, t2v_ranks, t2v_r1, v2t_ranks, v2t_r1", [
    # q0 ties its video with video 1; q1 alone on top; q2 has two items above it
    ("optimistic", [0, 0, 2], 200 / 3, [0, 0, 0], 100.0),
    ("pessimistic", [1, 0, 2], 100 / 3, [1, 2, 0], 100 / 3),
    ("average", [0.5, 0, 2], 200 / 3, [0.5, 1, 0], 200 / 3),
    # collaborative-experts: the same averaged ranks, but R@1 counts only rank == 0
    ("collaborative-experts", [0.5, 0, 2], 100 / 3, [0.5, 1, 0], 100 / 3),
    # clip4clip compute_metrics: one entry per tied position (0 and 1 for q0); v2t video 1 ties all three
    ("clip4clip", [0, 1, 0, 2], 50.0, [0, 1, 0, 1, 2, 0], 50.0),
])
def test_conventions_hand_worked_square(ties, t2v_ranks, t2v_r1, v2t_ranks, v2t_r1):
    res = _conv(S3, np.eye(3), None, ties)
    assert sorted(res["ranks"]["t2v"]) == sorted(t2v_ranks) and res["t2v"]["R@1"] == pytest.approx(t2v_r1)
    assert sorted(res["ranks"]["v2t"]) == sorted(v2t_ranks) and res["v2t"]["R@1"] == pytest.approx(v2t_r1)
    assert res["t2v"]["ties"] == ties and res["t2v"]["convention_reference"]
    if ties == "clip4clip":  # numpy median of the entries 0, 0, 1, 2 -> 0.5 -> MdR 1.5
        assert res["t2v"]["MdR"] == 1.5 and res["t2v"]["MnR"] == 1.75 and res["t2v"]["n_queries"] == 3


def test_collaborative_experts_counts_the_videos_own_tied_captions():
    """Video 0 has two identical captions: CE averages their positions (0.5, an R@1 miss); plain averaged ties
    leave the video's own captions out (rank 0)."""
    T, V, c2v = [[1, 0], [1, 0], [0, 1]], np.eye(2), np.array([0, 0, 1])
    ce, avg = _conv(T, V, c2v, "collaborative-experts"), _conv(T, V, c2v, "average")
    assert list(ce["ranks"]["v2t"]) == [0.5, 0.0] and ce["v2t"]["R@1"] == 50.0
    assert list(avg["ranks"]["v2t"]) == [0.0, 0.0] and avg["v2t"]["R@1"] == 100.0
    assert ce["v2t"]["v2t_gallery"] == "captions"


def test_clip4clip_multi_caption_t2v_breaks_ties_in_gallery_order():
    """tensor_text_to_video_metrics: the argsort position; a tied item earlier in the gallery comes first."""
    T = [[1, 1, 0], [1, 1, 0], [0, 0, 1], [0, 0, 1]]
    res = _conv(T, np.eye(3), np.array([1, 0, 2, 2]), "clip4clip")
    assert list(res["ranks"]["t2v"]) == [1, 0, 0, 0]  # caption 0's video 1 comes after the tied video 0
    assert res["t2v"]["R@1"] == 75.0 and res["t2v"]["median"] == "torch" and res["t2v"]["MdR"] == 1.0
    assert res["v2t"]["v2t_gallery"] == "videos"
    d = res["t2v"]["tie_diagnostics"]
    assert d["queries_tied"] == 2 and d["R@K_pessimistic"]["R@1"] == 50.0 and d["R@K_optimistic"]["R@1"] == 100.0
    assert res["t2v"]["warnings"] and "75.0 under ties=clip4clip but 50.0 under pessimistic" in res["t2v"]["warnings"][0]


def test_tie_diagnostics_and_misses():
    res = _conv(S3, np.eye(3), None, "optimistic", misses={"t2v": 1})
    m = res["t2v"]
    # ranks 0, 0, 2 and a miss ranked 3 (the gallery size: below all 3 videos, so still within the top 5)
    assert m["n_queries"] == 4 and m["R@1"] == 50.0 and m["R@5"] == 100.0 and m["queries_counted_as_misses"] == 1
    assert m["MnR"] == pytest.approx((1 + 1 + 3 + 4) / 4)
    d = m["tie_diagnostics"]
    assert d["queries_tied"] == 1 and d["tied_in_top_k"] == {"R@1": 1, "R@5": 1}
    assert d["R@K_pessimistic"]["R@1"] == 25.0 and d["max_gap"] == 25.0 and m["warnings"]
    untied = _conv(np.eye(3), np.eye(3), None, "optimistic")
    assert untied["t2v"]["tie_diagnostics"]["queries_tied"] == 0 and untied["t2v"]["warnings"] == []
