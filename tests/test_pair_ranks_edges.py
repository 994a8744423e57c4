"""stages.retrieval.pair_ranks (and the ranks of stages.retrieval.metrics) against a dense numpy reference on
seeded data: the whole caption x video score matrix is built with numpy, and every rank is counted from it
with vectorised comparisons (no code of vtpipe's in the reference). Written for the mutants of the fused
t2v/v2t pass that bench/mutation.sh left alive: the t2v and v2t tie rules must each reach their own ranks,
``score_fn`` / biases / ``scale`` (at its default too) must reach every pass, the own-caption tie count and
the recount of videos whose thresholds disagree must match the reference."""

from __future__ import annotations

import numpy as np
import pytest

from stages.retrieval import metrics as M
from stages.retrieval import pair_ranks as P

POLICIES = ("optimistic", "pessimistic", "average")


# ------------------------------------------------------------------------------------------------
# dense reference
# ------------------------------------------------------------------------------------------------
def _pick(opt, pess, ties):
    opt, pess = np.asarray(opt, np.float64), np.asarray(pess, np.float64)
    return {"optimistic": opt, "pessimistic": pess, "average": (opt + pess) / 2}[ties]


def dense_t2v(S, c2v, ties):
    """S: [C, V] scores; caption c's rank among the videos: > its own video's score (optimistic),
    other videos >= it (pessimistic)."""
    S = np.asarray(S, np.float64)
    own = S[np.arange(S.shape[0]), c2v][:, None]
    return _pick((S > own).sum(1), (S >= own).sum(1) - 1, ties)


def dense_v2t_captions(S_vc, c2v, ties):
    """S_vc: [V, C]; gallery = all captions, the video's rank is its best own caption's: captions above it
    (optimistic), other videos' captions >= it (pessimistic). Also returns the own ties: the video's other
    captions equal to its best one."""
    S_vc = np.asarray(S_vc, np.float64)
    c2v = np.asarray(c2v)
    own = c2v[None, :] == np.arange(S_vc.shape[0])[:, None]
    best = np.where(own, S_vc, -np.inf).max(1)[:, None]
    opt = (S_vc > best).sum(1)
    pess = ((S_vc >= best) & ~own).sum(1)
    own_ties = ((S_vc == best) & own).sum(1) - 1
    return _pick(opt, pess, ties), opt, pess, best[:, 0], own_ties


def dense_v2t_videos(S_vc, c2v, ties):
    """CLIP4Clip: each video group scored by its best caption, the query video ranked among the groups."""
    S_vc = np.asarray(S_vc, np.float64)
    nv = S_vc.shape[0]
    G = np.full((nv, nv), -np.inf)
    np.maximum.at(G.T, np.asarray(c2v), S_vc.T)
    return dense_t2v(G, np.arange(nv), ties)


def quantised(rng, n, d):
    """Integer features in {-1, 0, 1}: exact dot products, many ties."""
    return rng.integers(-1, 2, size=(n, d)).astype(np.float32)


def pairs(rng, nv, extra, d):
    c2v = np.concatenate([np.arange(nv), rng.integers(0, nv, size=extra)])
    rng.shuffle(c2v)
    return quantised(rng, len(c2v), d), quantised(rng, nv, d), c2v


def neg_l1(q, g):
    """A score that is not a dot product: minus the L1 distance."""
    return -np.abs(q[:, None, :].astype(np.float64) - g[None, :, :]).sum(-1)


def _differs(a, b):
    assert not np.array_equal(a, b), "the seeded data must tell the two cases apart"


# ------------------------------------------------------------------------------------------------
# fused t2v + v2t
# ------------------------------------------------------------------------------------------------
def test_fused_each_direction_keeps_its_own_tie_rule():
    rng = np.random.default_rng(101)
    T, V, c2v = pairs(rng, 30, 40, 3)
    S = (T @ V.T).astype(np.float64)
    _differs(dense_t2v(S, c2v, "optimistic"), dense_t2v(S, c2v, "pessimistic"))
    _differs(dense_v2t_captions(S.T, c2v, "optimistic")[0], dense_v2t_captions(S.T, c2v, "pessimistic")[0])
    for t_ties in POLICIES:
        for v_ties in POLICIES:
            t2v, v2t = P.t2v_v2t_ranks(T, V, c2v, ties=t_ties, ties_v2t=v_ties, block=7)
            np.testing.assert_array_equal(t2v, dense_t2v(S, c2v, t_ties), err_msg=f"t2v {t_ties}/{v_ties}")
            np.testing.assert_array_equal(v2t, dense_v2t_captions(S.T, c2v, v_ties)[0],
                                          err_msg=f"v2t {t_ties}/{v_ties}")
        # ties_v2t left out: v2t follows ties
        t2v, v2t = P.t2v_v2t_ranks(T, V, c2v, ties=t_ties)
        np.testing.assert_array_equal(t2v, dense_t2v(S, c2v, t_ties))
        np.testing.assert_array_equal(v2t, dense_v2t_captions(S.T, c2v, t_ties)[0])
    # all defaults: optimistic both ways, one caption per video when caption_to_video is left out
    t2v, v2t = P.t2v_v2t_ranks(T, V, c2v)
    np.testing.assert_array_equal(t2v, dense_t2v(S, c2v, "optimistic"))
    np.testing.assert_array_equal(v2t, dense_v2t_captions(S.T, c2v, "optimistic")[0])
    Ts = T[:30]
    t2v, v2t = P.t2v_v2t_ranks(Ts, V, ties="pessimistic")
    Ss = (Ts @ V.T).astype(np.float64)
    np.testing.assert_array_equal(t2v, dense_t2v(Ss, np.arange(30), "pessimistic"))
    np.testing.assert_array_equal(v2t, dense_t2v(Ss.T, np.arange(30), "pessimistic"))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_passes_score_fn_biases_and_scale_everywhere(dtype):
    # 300 captions: two threshold tiles of 256; 150 videos: more than the tile's 128 padding columns
    rng = np.random.default_rng(102)
    T, V, c2v = pairs(rng, 150, 150, 3)
    T, V = T.astype(dtype), V.astype(dtype)
    S = neg_l1(T, V)
    _differs(dense_t2v(S, c2v, "optimistic"), dense_t2v((T @ V.T).astype(np.float64), c2v, "optimistic"))
    vb = rng.integers(-2, 3, size=150).astype(np.float64)
    tb = rng.integers(-2, 3, size=300).astype(np.float64)
    for scale in (1.0, 3.0):
        t2v, v2t, info = P.t2v_v2t_ranks(T, V, c2v, ties="average", ties_v2t="pessimistic", block=33,
                                         video_bias=vb, text_bias=tb, score_fn=neg_l1, scale=scale,
                                         max_block_bytes=64 * 150 * 8, return_info=True)
        np.testing.assert_array_equal(t2v, dense_t2v(scale * S + vb[None, :], c2v, "average"))
        np.testing.assert_array_equal(v2t, dense_v2t_captions((scale * S + tb[:, None]).T, c2v, "pessimistic")[0])
        assert info == {"v2t_recounted_videos": 0}
    # scale left at its default, with biases (a scale of 1 is then not the same as any other)
    t2v, v2t = P.t2v_v2t_ranks(T, V, c2v, video_bias=vb, text_bias=tb, score_fn=neg_l1)
    _differs(t2v, dense_t2v(2 * S + vb[None, :], c2v, "optimistic"))
    np.testing.assert_array_equal(t2v, dense_t2v(S + vb[None, :], c2v, "optimistic"))
    np.testing.assert_array_equal(v2t, dense_v2t_captions((S + tb[:, None]).T, c2v, "optimistic")[0])


def test_fused_counts_own_ties_and_recount():
    rng = np.random.default_rng(103)
    T, V, c2v = pairs(rng, 20, 60, 2)  # 2-D {-1,0,1} features: a video's captions often tie
    Tf, Vf, c2v_, ptr, idx, _ = P._prepare_pairs(T, V, c2v, "optimistic", None, require_all=True)
    S = (T @ V.T).astype(np.float64)
    tb = rng.integers(-1, 2, size=80).astype(np.float64)
    Sb = S + tb[:, None]
    _, opt, pess, best, own_ties = dense_v2t_captions(Sb.T, c2v, "optimistic")
    assert own_ties.max() > 0
    t2v_p = P._affine_params(80, 20, 1.0, None)
    v2t_p = P._affine_params(20, 80, 1.0, tb)
    (n_gt, n_ge, thr), (v_gt, v_ge, v_thr, v_own), info = P._fused_counts(
        Tf, Vf, c2v_, ptr, idx, P.KIND_AFFINE, t2v_p, v2t_p, 5, None, None)
    np.testing.assert_array_equal(n_gt, dense_t2v(S, c2v, "optimistic"))
    np.testing.assert_array_equal(n_ge, dense_t2v(S, c2v, "pessimistic"))
    np.testing.assert_array_equal(thr, S[np.arange(80), c2v])
    np.testing.assert_array_equal(v_gt, opt)
    np.testing.assert_array_equal(v_ge, pess)
    np.testing.assert_array_equal(v_thr, best)
    np.testing.assert_array_equal(v_own, own_ties)
    assert info == {"v2t_recounted_videos": 0}

    # phase-1 tiles read 0.5 high for even videos: those thresholds disagree with the main pass, and
    # exactly those videos are recounted, own ties included
    nv = 40
    T2, V2, c2v2 = pairs(rng, nv, 60, 2)  # 100 captions: one tile, padded to all 40 videos
    Tf, Vf, c2v_, ptr, idx, _ = P._prepare_pairs(T2, V2, c2v2, "optimistic", None, require_all=True)
    S2 = (T2 @ V2.T).astype(np.float64)
    _, opt, pess, best, own_ties = dense_v2t_captions(S2.T, c2v2, "optimistic")

    def skew_tiles(q, g):  # phase 1 has 100 caption rows and 40 video columns: the main pass has 7 rows
        s = (q @ g.T).astype(np.float64)
        if q.shape[0] == 100 and g.shape[0] == nv:
            s[:, 0::2] += 0.5
        return s

    (n_gt, n_ge, _thr), (v_gt, v_ge, v_thr, v_own), info = P._fused_counts(
        Tf, Vf, c2v_, ptr, idx, P.KIND_AFFINE, P._affine_params(100, nv, 1.0, None),
        P._affine_params(nv, 100, 1.0, None), 7, skew_tiles, None)
    assert info == {"v2t_recounted_videos": nv // 2}
    np.testing.assert_array_equal(n_gt, dense_t2v(S2, c2v2, "optimistic"))
    np.testing.assert_array_equal(n_ge, dense_t2v(S2, c2v2, "pessimistic"))
    np.testing.assert_array_equal(v_gt, opt)
    np.testing.assert_array_equal(v_ge, pess)
    np.testing.assert_array_equal(v_thr, best)
    np.testing.assert_array_equal(v_own, own_ties)
    t2v, v2t = P.t2v_v2t_ranks(T2, V2, c2v2, ties="pessimistic", ties_v2t="average", block=7,
                               score_fn=skew_tiles)
    np.testing.assert_array_equal(t2v, dense_t2v(S2, c2v2, "pessimistic"))
    np.testing.assert_array_equal(v2t, (opt + pess) / 2)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_fused_refusals():
    with pytest.raises(ValueError, match=r"^caption_to_video=None needs as many captions as videos, got 3 and 2$"):
        P.t2v_v2t_ranks(np.ones((3, 2)), np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"^ties='x' is not one of"):
        P.t2v_v2t_ranks(np.eye(2), np.eye(2), ties="x")
    with pytest.raises(ValueError, match=r"^ties='y' is not one of"):
        P.t2v_v2t_ranks(np.eye(2), np.eye(2), ties_v2t="y")
    with pytest.raises(ValueError, match=r"^video 1 has no caption in caption_to_video \(2 such videos\)"):
        P.t2v_v2t_ranks(np.eye(3), np.eye(3), [0, 0, 0])
    with pytest.raises(ValueError, match=r"^video_bias must have shape \(2,\)"):
        P.t2v_v2t_ranks(np.eye(2), np.eye(2), video_bias=[1.0])
    with pytest.raises(ValueError, match=r"^text_bias must have shape \(2,\)"):
        P.t2v_v2t_ranks(np.eye(2), np.eye(2), text_bias=[1.0])
    V = np.eye(2)
    V[1, 1] = np.nan
    with pytest.raises(ValueError, match=r"^t2v_v2t_ranks: NaN own-caption score for video 1; check"):
        P.t2v_v2t_ranks(np.eye(2), V)


# ------------------------------------------------------------------------------------------------
# v2t with several captions per video
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_v2t_multi_both_galleries_score_fn_bias_scale(dtype):
    rng = np.random.default_rng(104)
    T, V, c2v = pairs(rng, 25, 35, 3)
    T, V = T.astype(dtype), V.astype(dtype)
    S_vc = neg_l1(V, T)
    cb = rng.integers(-2, 3, size=60).astype(np.float64)
    _differs(dense_v2t_captions(S_vc, c2v, "optimistic")[0], dense_v2t_videos(S_vc, c2v, "optimistic"))
    for ties in POLICIES:
        for scale in (1.0, 2.5):
            Sb = scale * S_vc + cb[None, :]
            got = P.v2t_ranks_multi(V, T, c2v, ties=ties, block=4, caption_bias=cb, score_fn=neg_l1,
                                    scale=scale, max_block_bytes=3 * 60 * 8)
            np.testing.assert_array_equal(got, dense_v2t_captions(Sb, c2v, ties)[0], err_msg=ties)
            got = P.v2t_ranks_multi(V, T, c2v, ties=ties, block=4, caption_bias=cb, score_fn=neg_l1,
                                    scale=scale, gallery="videos")
            np.testing.assert_array_equal(got, dense_v2t_videos(Sb, c2v, ties), err_msg=ties)
    # defaults: optimistic, the captions gallery, scale 1 (with a bias), dot product
    Sd = (V @ T.T).astype(np.float64)
    np.testing.assert_array_equal(P.v2t_ranks_multi(V, T, c2v), dense_v2t_captions(Sd, c2v, "optimistic")[0])
    got = P.v2t_ranks_multi(V, T, c2v, caption_bias=cb)
    _differs(got, dense_v2t_captions(2 * Sd + cb, c2v, "optimistic")[0])
    np.testing.assert_array_equal(got, dense_v2t_captions(Sd + cb, c2v, "optimistic")[0])


def test_v2t_from_scores_both_galleries():
    rng = np.random.default_rng(105)
    c2v = np.concatenate([np.arange(12), rng.integers(0, 12, size=18)])
    rng.shuffle(c2v)
    S_vc = rng.integers(0, 4, size=(12, 30)).astype(np.float64)
    _differs(dense_v2t_captions(S_vc, c2v, "optimistic")[0], dense_v2t_captions(S_vc, c2v, "pessimistic")[0])
    _differs(dense_v2t_videos(S_vc, c2v, "optimistic"), dense_v2t_videos(S_vc, c2v, "pessimistic"))
    for ties in POLICIES:
        np.testing.assert_array_equal(P.v2t_ranks_multi_from_scores(S_vc, c2v, ties=ties),
                                      dense_v2t_captions(S_vc, c2v, ties)[0])
        np.testing.assert_array_equal(P.v2t_ranks_multi_from_scores(S_vc, c2v, ties, gallery="videos"),
                                      dense_v2t_videos(S_vc, c2v, ties))
    np.testing.assert_array_equal(P.v2t_ranks_multi_from_scores(S_vc, c2v),
                                  dense_v2t_captions(S_vc, c2v, "optimistic")[0])
    # integer scores and lists are converted
    np.testing.assert_array_equal(P.v2t_ranks_multi_from_scores(S_vc.astype(np.int64).tolist(), list(c2v)),
                                  dense_v2t_captions(S_vc, c2v, "optimistic")[0])


def test_v2t_refusals():
    for fn, args in ((P.v2t_ranks_multi, (np.eye(2), np.eye(2), [0, 1])),
                     (P.v2t_ranks_multi_from_scores, (np.eye(2), [0, 1]))):
        with pytest.raises(ValueError, match=r"^gallery='groups' is not one of \('captions', 'videos'\)$"):
            fn(*args, gallery="groups")
        with pytest.raises(ValueError, match=r"^ties='z' is not one of"):
            fn(*args, ties="z")
        with pytest.raises(ValueError, match=r"^video 1 has no caption in caption_to_video \(1 such videos\)"):
            fn(*args[:-1], [0, 0])
    with pytest.raises(ValueError, match=r"^caption_to_video must have shape \(2,\), got \(3,\)$"):
        P.v2t_ranks_multi(np.eye(2), np.eye(2), [0, 1, 1])
    with pytest.raises(ValueError, match=r"^scores_vc must be a 2-D array"):
        P.v2t_ranks_multi_from_scores(np.ones(3), [0, 0, 0])
    with pytest.raises(ValueError, match=r"^caption_feats must be a 2-D array"):
        P.v2t_ranks_multi(np.eye(2), np.ones(2), [0, 1])
    with pytest.raises(ValueError, match=r"^v2t_ranks_multi_from_scores: the ground-truth score is NaN"):
        P.v2t_ranks_multi_from_scores(np.array([[np.nan, 0.0], [0.0, 1.0]]), [0, 1])
    with pytest.raises(ValueError, match=r"^v2t_ranks_multi: the ground-truth score is NaN"):
        P.v2t_ranks_multi(np.array([[np.nan, 0.0], [0.0, 1.0]]), np.eye(2), [0, 1])


def test_caption_index_counts_and_order():
    c2v, ptr, idx = P._caption_index(np.array([3, 1, 3, 0, 1, 3], np.int32), 6, 5, require_all=False)
    assert c2v.dtype == np.int64 and ptr.dtype == np.int64 and idx.dtype == np.int64
    assert ptr.tolist() == [0, 1, 3, 3, 6, 6]
    assert idx.tolist() == [3, 1, 4, 0, 2, 5]
    with pytest.raises(ValueError, match=r"^video 2 has no caption in caption_to_video \(2 such videos\): v2t"):
        P._caption_index([3, 1, 3, 0, 1, 3], 6, 5, require_all=True)


# ------------------------------------------------------------------------------------------------
# t2v ranks from features (stages.retrieval.metrics)
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ranks_from_features_against_dense(dtype):
    rng = np.random.default_rng(106)
    T, V, c2v = pairs(rng, 20, 30, 3)
    T, V = T.astype(dtype), V.astype(dtype)
    S = (T @ V.T).astype(np.float64)
    b = rng.integers(-2, 3, size=20).astype(np.float64)
    for ties in POLICIES:
        got = M.ranks_from_features(T, V, c2v, ties=ties, block=6, bias=b, scale=2.0, max_block_bytes=4 * 20 * 8)
        np.testing.assert_array_equal(got, dense_t2v(2.0 * S + b, c2v, ties), err_msg=ties)
        got = M.ranks_from_features(T, V, c2v, ties, 7, None, neg_l1)
        np.testing.assert_array_equal(got, dense_t2v(neg_l1(T, V), c2v, ties), err_msg=ties)
        np.testing.assert_array_equal(M.ranks_from_scores(S, c2v, ties), dense_t2v(S, c2v, ties))
    got = M.ranks_from_features(T, V, c2v, bias=b)  # defaults: optimistic, scale 1
    _differs(got, dense_t2v(2.0 * S + b, c2v, "optimistic"))
    np.testing.assert_array_equal(got, dense_t2v(S + b, c2v, "optimistic"))
    np.testing.assert_array_equal(M.ranks_from_scores(S[:20]), dense_t2v(S[:20], np.arange(20), "optimistic"))


def test_rank_entry_points_name_their_arguments():
    with pytest.raises(ValueError, match=r"^scores must be a 2-D array, got shape \(3,\)$"):
        M.ranks_from_scores(np.ones(3))
    with pytest.raises(ValueError, match=r"^gt must have shape \(2,\), got \(3,\)$"):
        M.ranks_from_scores(np.eye(2), [0, 1, 1])
    with pytest.raises(ValueError, match=r"^queries must be a 2-D array, got shape \(2,\)$"):
        M.ranks_from_features(np.ones(2), np.eye(2), [0])
    with pytest.raises(ValueError, match=r"^gallery must be a 2-D array, got shape \(2,\)$"):
        M.ranks_from_features(np.eye(2), np.ones(2), [0, 1])
    with pytest.raises(ValueError, match=r"^gt must have shape \(2,\), got \(1,\)$"):
        M.ranks_from_features(np.eye(2), np.eye(2), [0])
    with pytest.raises(ValueError, match=r"^bias must have shape \(2,\), got \(3,\)$"):
        M.ranks_from_features(np.eye(2), np.eye(2), [0, 1], bias=np.zeros(3))
    nan_row = np.array([[np.nan, 0.0], [0.0, 1.0]])
    with pytest.raises(ValueError, match=r"^ranks_from_scores: the ground-truth score is NaN for 1 queries"):
        M.ranks_from_scores(nan_row)
    with pytest.raises(ValueError, match=r"^ranks_from_features: the ground-truth score is NaN for 1 queries"):
        M.ranks_from_features(nan_row, np.eye(2), [0, 1])


def test_extreme_scores_are_ranked_as_given():
    # an infinite score beats every finite one; scores near the float64 maximum stay distinct
    S = np.array([[0.0, np.inf, -1.0], [1e308, 1.7e308, 0.0], [np.inf, np.inf, 0.0]])
    assert M.ranks_from_scores(S, [0, 0, 0]).tolist() == [1.0, 1.0, 0.0]
    assert M.ranks_from_scores(S, [0, 0, 0], "pessimistic").tolist() == [1.0, 1.0, 1.0]


def test_metrics_of_float32_ranks_are_computed_in_float64():
    # ranks 0, 0, 1: MnR = 1 + 1/3 and StdR = sqrt(2)/3 in float64 (float32 arithmetic would round both)
    for ranks in (np.array([0, 0, 1], np.float32), [0, 0, 1]):
        m = M.retrieval_metrics(ranks, ks=(1,))
        assert m["MnR"] == 1.0 + 1.0 / 3.0
        assert m["StdR"] == float(np.std(np.array([1.0, 1.0, 2.0])))
        assert m["R@1"] == 100.0 * 2.0 / 3.0 and m["MdR"] == 1.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_blocks_are_the_largest_under_the_byte_cap(dtype):
    """``block`` is lowered to the most rows whose scores fit ``max_block_bytes`` (one row = gallery size x
    the features' item size), in the fused pass, its recount pass and the t2v pass of metrics."""
    rng = np.random.default_rng(107)
    nv, item = 40, np.dtype(dtype).itemsize
    T, V, c2v = pairs(rng, nv, 60, 3)  # 100 captions: one threshold tile, the first score_fn call
    T, V = T.astype(dtype), V.astype(dtype)
    cap = 5 * nv * item + 3
    calls = []

    def recorded(q, g):  # minus L1 distance; the threshold tile reads 0.5 high for even videos
        calls.append((q.shape[0], g.shape[0]))
        s = neg_l1(q, g)
        if len(calls) == 1:
            s[:, 0::2] += 0.5
        return s

    t2v, v2t, info = P.t2v_v2t_ranks(T, V, c2v, ties="pessimistic", block=1000, score_fn=recorded,
                                     max_block_bytes=cap, return_info=True)
    assert info == {"v2t_recounted_videos": nv // 2}
    S = neg_l1(T, V)
    np.testing.assert_array_equal(t2v, dense_t2v(S, c2v, "pessimistic"))
    np.testing.assert_array_equal(v2t, dense_v2t_captions(S.T, c2v, "pessimistic")[0])
    main = [r for r, g in calls[1:] if g == nv]
    recount = [r for r, g in calls[1:] if g == 100]
    assert max(main) == 5 and sum(main) == 100
    assert max(recount) == cap // (100 * item) and sum(recount) == nv // 2
    # the t2v pass of metrics
    calls.clear()
    got = M.ranks_from_features(T, V, c2v, block=1000, score_fn=lambda q, g: calls.append(q.shape[0]) or q @ g.T,
                                max_block_bytes=cap)
    np.testing.assert_array_equal(got, dense_t2v((T @ V.T).astype(np.float64), c2v, "optimistic"))
    assert max(calls) == 5 and sum(calls) == 100
    # the v2t pass over videos (rows = videos, one row = all captions)
    calls.clear()
    got = P.v2t_ranks_multi(V, T, c2v, block=1000, score_fn=lambda q, g: calls.append(q.shape[0]) or q @ g.T,
                            max_block_bytes=cap)
    np.testing.assert_array_equal(got, dense_v2t_captions((V @ T.T).astype(np.float64), c2v, "optimistic")[0])
    assert max(calls) == cap // (100 * item) and sum(calls) == nv


def test_default_block_is_4096_rows():
    rng = np.random.default_rng(108)
    c2v = rng.integers(0, 3, size=4100)
    c2v[:3] = np.arange(3)
    T, V = quantised(rng, 4100, 2), quantised(rng, 3, 2)
    rows = []

    def recorded(q, g):
        rows.append(q.shape[0])
        return q @ g.T

    M.ranks_from_features(T, V, c2v, score_fn=recorded)
    assert rows == [4096, 4]
    rows.clear()
    P.t2v_v2t_ranks(T, V, c2v, score_fn=recorded)
    assert [r for r in rows if r > 256] == [4096]  # the threshold tiles have at most 256 rows


def test_fused_names_its_inputs_in_errors():
    with pytest.raises(ValueError, match=r"^text_feats must be a 2-D array, got shape \(2,\)$"):
        P.t2v_v2t_ranks(np.ones(2), np.eye(2))
    with pytest.raises(ValueError, match=r"^video_feats must be a 2-D array, got shape \(2,\)$"):
        P.t2v_v2t_ranks(np.eye(2), np.ones(2))
    with pytest.raises(ValueError, match=r"^video_feats must be a 2-D array, got shape \(2,\)$"):
        P.v2t_ranks_multi(np.ones(2), np.eye(2), [0, 1])
    # a NaN video bias makes a t2v ground-truth score NaN (the v2t thresholds stay finite)
    with pytest.raises(ValueError, match=r"^t2v: the ground-truth score is NaN for 1 queries \(first: index 1\)"):
        P.t2v_v2t_ranks(np.eye(2), np.eye(2), video_bias=[0.0, np.nan])


def test_v2t_from_scores_near_the_float64_maximum():
    S_vc = np.array([[1e308, 1.7e308, 0.0], [0.0, 0.0, 1.0]])  # video 0: caption 0; video 1: captions 1, 2
    for gallery in ("captions", "videos"):
        assert P.v2t_ranks_multi_from_scores(S_vc, [0, 1, 1], gallery=gallery).tolist() == [1.0, 0.0]
    S_vc = np.array([[0.0, np.inf, -1.0], [0.0, 0.0, 1.0]])  # an infinite score beats every finite one
    for gallery in ("captions", "videos"):
        assert P.v2t_ranks_multi_from_scores(S_vc, [0, 1, 1], gallery=gallery).tolist() == [1.0, 0.0]
