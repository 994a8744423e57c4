"""stages.retrieval.metrics at its edges, on hand-worked inputs: each refused input with the message that
names it, input conversion (integer scores, lists), block sizing under a byte cap, the clip4clip entries and
the torch median, and the metric dictionary's bookkeeping keys. Written for the mutants of metrics.py that
the naive-reference tests of tests/test_retrieval_metrics.py leave alive (bench/mutation.sh)."""

from __future__ import annotations

import numpy as np
import pytest

from stages.retrieval import metrics as M
from stages.retrieval import pair_ranks as P


def test_as_matrix_converts_and_refuses():
    x = M._as_matrix([[1, 2], [3, 4]], "scores")
    assert x.dtype == np.float64 and x.flags["C_CONTIGUOUS"]
    f = np.asfortranarray(np.ones((3, 2), np.float32))
    y = M._as_matrix(f, "q")
    assert y.dtype == np.float32 and y.flags["C_CONTIGUOUS"]
    with pytest.raises(ValueError, match=r"^queries must be a 2-D array, got shape \(3,\)$"):
        M._as_matrix(np.ones(3), "queries")


def test_as_index_refusals():
    assert M._as_index([0, 2], 2, 3, "gt").tolist() == [0, 2]
    assert M._as_index(np.array([], np.int64), 0, 3, "gt").dtype == np.int64
    with pytest.raises(ValueError, match=r"^gt must have shape \(3,\), got \(2,\)$"):
        M._as_index([0, 1], 3, 3, "gt")
    with pytest.raises(ValueError, match=r"^gt must have shape \(2,\), got \(2, 1\)$"):
        M._as_index([[0], [1]], 2, 3, "gt")
    with pytest.raises(ValueError, match=r"^gt must hold integer indices, got dtype float64$"):
        M._as_index([0.0, 1.0], 2, 3, "gt")
    with pytest.raises(ValueError, match=r"^caption_to_video\[1\] = 3 is out of range \[0, 3\)$"):
        M._as_index([0, 3, 5], 3, 3, "caption_to_video")
    with pytest.raises(ValueError, match=r"^gt\[2\] = -1 is out of range \[0, 3\)$"):
        M._as_index([0, 1, -1], 3, 3, "gt")


def test_as_vector_and_block_rows():
    v = M._as_vector([1, 2], 2, "bias")
    assert v.dtype == np.float64 and v.tolist() == [1.0, 2.0]
    with pytest.raises(ValueError, match=r"^bias must have shape \(3,\), got \(2,\)$"):
        M._as_vector([1, 2], 3, "bias")
    with pytest.raises(ValueError, match="^block must be >= 1, got 0$"):
        M._rows_per_block(0, 10, 4, None)
    assert M._rows_per_block(100, 10, 4, None) == 100
    assert M._rows_per_block(100, 10, 4, 0) == 100
    assert M._rows_per_block(100, 10, 4, 400) == 10  # 400 bytes / (10 columns x 4 bytes)
    assert M._rows_per_block(100, 10, 8, 400) == 5
    assert M._rows_per_block(3, 10, 4, 400) == 3
    assert M._rows_per_block(100, 10, 4, 1) == 1  # at least one row
    assert M._rows_per_block(100, 0, 4, 400) == 100  # no columns: the byte cap does not bind


def test_score_block_checks_the_score_function():
    q, g = np.ones((2, 3)), np.ones((4, 3))
    assert M._score_block(None, q, g).tolist() == [[3.0] * 4] * 2
    ints = M._score_block(lambda a, b: np.ones((2, 4), np.int32), q, g)
    assert ints.dtype == np.float64
    with pytest.raises(ValueError, match=r"^score_fn returned shape \(4, 2\), expected \(2, 4\)$"):
        M._score_block(lambda a, b: np.ones((4, 2)), q, g)


def test_finish_by_hand():
    n_gt, n_ge, thr = np.array([0, 2, 1]), np.array([1, 2, 3]), np.array([0.1, 0.2, 0.3])
    assert M._finish(n_gt, n_ge, thr, "optimistic", "x").tolist() == [0, 2, 1]
    assert M._finish(n_gt, n_ge, thr, "pessimistic", "x").tolist() == [1, 2, 3]
    assert M._finish(n_gt, n_ge, thr, "average", "x").tolist() == [0.5, 2, 2]
    # entries optimistic..pessimistic; a non-finite ground truth contributes none
    assert M._finish(n_gt, n_ge, thr, "clip4clip", "x").tolist() == [0, 1, 2, 1, 2, 3]
    inf = np.array([0.1, np.inf, 0.3])
    assert M._finish(n_gt, n_ge, inf, "clip4clip", "x").tolist() == [0, 1, 1, 2, 3]
    with pytest.raises(ValueError, match=r"^where: the ground-truth score is NaN for 2 queries \(first: index 0\); "
                                         r"their rank is undefined - check the features for NaN$"):
        M._finish(n_gt, n_ge, np.array([np.nan, 0.1, np.nan]), "optimistic", "where")


def test_median_conventions_by_hand():
    r = np.array([3.0, 0.0, 1.0, 2.0])
    assert M._median(r, "numpy") == 1.5 and M._median(r, "torch") == 1.0
    assert M._median(np.array([2.0, 0.0, 1.0]), "torch") == 1.0
    assert M._median(np.array([5.0]), "torch") == 5.0


def test_retrieval_metrics_keys_and_refusals():
    m = M.retrieval_metrics([0, 1, 4, 9], ks=(1, 5), median="torch", ties="average", n_queries=3)
    assert m == {"R@1": 25.0, "R@5": 75.0, "MdR": 2.0, "MnR": 4.5, "StdR": pytest.approx(np.std([1, 2, 5, 10])),
                 "Geom": pytest.approx((25.0 * 75.0 * 100.0) ** (1 / 3)), "n_queries": 3, "n_ranks": 4,
                 "ties": "average", "median": "torch"}
    assert M.retrieval_metrics([0.0, 0.5])["n_queries"] == 2
    assert M.retrieval_metrics([2.0, 3.0])["Geom"] == 0.0  # R@1 = 0
    with pytest.raises(ValueError, match=r"^median='mean' is not one of \('numpy', 'torch'\)$"):
        M.retrieval_metrics([0.0], median="mean")
    with pytest.raises(ValueError, match="^retrieval_metrics: no ranks given$"):
        M.retrieval_metrics([])
    with pytest.raises(ValueError, match=r"^retrieval_metrics: ranks must be non-negative numbers \(0-based\)$"):
        M.retrieval_metrics([0.0, -1.0])
    with pytest.raises(ValueError, match="^retrieval_metrics: ranks must be non-negative"):
        M.retrieval_metrics([0.0, np.nan])
    with pytest.raises(ValueError, match=r"^ties='best' is not one of \('optimistic', 'pessimistic', 'average', "
                                         r"'clip4clip'\)$"):
        M.retrieval_metrics([0.0], ties="best")


def test_public_entry_points_refuse_bad_shapes():
    with pytest.raises(ValueError, match=r"^gt=None means the diagonal, but scores has 3 rows and only 2 columns$"):
        M.ranks_from_scores(np.ones((3, 2)))
    assert M.ranks_from_scores(np.ones((2, 3)), ties="pessimistic").tolist() == [2.0, 2.0]
    assert M.ranks_from_scores(np.ones((0, 3))).tolist() == []
    with pytest.raises(ValueError, match=r"^queries have dim 3 but gallery has dim 2$"):
        M.ranks_from_features(np.ones((2, 3)), np.ones((2, 2)), [0, 1])
    # a score function may take other dimensions
    got = M.ranks_from_features(np.ones((2, 3)), np.ones((2, 2)), [0, 1],
                                score_fn=lambda a, b: np.array([[1.0, 0.0], [1.0, 0.0]]))
    assert got.tolist() == [0.0, 1.0]
    with pytest.raises(ValueError, match=r"^gallery='all' is not one of \('captions', 'videos'\)$"):
        P.v2t_ranks_multi(np.eye(2), np.eye(2), [0, 1], gallery="all")
    with pytest.raises(ValueError, match=r"^gallery='all' is not one of \('captions', 'videos'\)$"):
        P.v2t_ranks_multi_from_scores(np.eye(2), [0, 1], gallery="all")
    with pytest.raises(ValueError, match=r"^caption_to_video=None needs as many captions as videos, got 3 and 2$"):
        P.t2v_v2t_ranks(np.ones((3, 2)), np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"^video 1 has no caption in caption_to_video \(2 such videos\): v2t needs "
                                         r"at least one caption per video - drop those videos from the gallery$"):
        P.t2v_v2t_ranks(np.ones((2, 2)), np.ones((3, 2)), [0, 0])
    with pytest.raises(ValueError, match=r"^video_bias must have shape \(2,\), got \(3,\)$"):
        P.t2v_v2t_ranks(np.eye(2), np.eye(2), video_bias=np.zeros(3))
    with pytest.raises(ValueError, match=r"^text_bias must have shape \(2,\), got \(1,\)$"):
        P.t2v_v2t_ranks(np.eye(2), np.eye(2), text_bias=np.zeros(1))
    with pytest.raises(ValueError, match=r"^caption_bias must have shape \(2,\), got \(1,\)$"):
        P.v2t_ranks_multi(np.eye(2), np.eye(2), [0, 1], caption_bias=np.zeros(1))
    with pytest.raises(ValueError, match="ties_v2t|ties='x' is not one of"):
        P.t2v_v2t_ranks(np.eye(2), np.eye(2), ties_v2t="x")


def test_caption_index_by_hand():
    c2v, ptr, idx = P._caption_index([2, 0, 2, 1, 0], 5, 4, require_all=False)
    assert c2v.tolist() == [2, 0, 2, 1, 0]
    assert ptr.tolist() == [0, 2, 3, 5, 5]  # video 3 has none
    assert idx.tolist() == [1, 4, 3, 0, 2]  # captions grouped by video, in caption order
    with pytest.raises(ValueError, match="^video 3 has no caption"):
        P._caption_index([2, 0, 2, 1, 0], 5, 4, require_all=True)


def test_small_hand_worked_multi_caption_and_fused():
    # captions x videos: c0, c1 of video 0; c2 of video 1
    S = np.array([[0.9, 0.1], [0.2, 0.3], [0.4, 0.8]])
    T, V = S, np.eye(2)
    t2v = M.ranks_from_features(T, V, [0, 0, 1])
    assert t2v.tolist() == [0.0, 1.0, 0.0]
    # v2t over captions: video 0's best caption c0 (0.9) beats everything; video 1's best c2 (0.8), c0 has 0.1
    assert P.v2t_ranks_multi(V, T, [0, 0, 1]).tolist() == [0.0, 0.0]
    assert P.v2t_ranks_multi_from_scores(S.T, [0, 0, 1]).tolist() == [0.0, 0.0]
    # videos gallery: video 1 scored by its best caption's value for each query video
    assert P.v2t_ranks_multi_from_scores(np.array([[0.5, 0.6, 0.6], [0.7, 0.1, 0.2]]), [0, 0, 1],
                                         gallery="videos", ties="pessimistic").tolist() == [1.0, 1.0]
    t, v, info = P.t2v_v2t_ranks(T, V, [0, 0, 1], return_info=True)
    assert t.tolist() == [0.0, 1.0, 0.0] and v.tolist() == [0.0, 0.0] and info == {"v2t_recounted_videos": 0}
    t, v = P.t2v_v2t_ranks(T, V, [0, 0, 1], ties="pessimistic", ties_v2t="optimistic")
    assert t.tolist() == [0.0, 1.0, 0.0] and v.tolist() == [0.0, 0.0]
    # scale and bias: score = 2 * s + bias_j
    got = M.ranks_from_features(T, V, [0, 0, 1], bias=[0.0, 0.5], scale=2.0)
    assert got.tolist() == [0.0, 1.0, 0.0]  # c0: 1.8 vs 0.7; c1: 0.4 vs 1.1; c2: 0.8 vs 2.1
    got = M.ranks_from_features(T, V, [1, 0, 1], bias=[0.0, 1.7], scale=1.0)
    assert got.tolist() == [0.0, 1.0, 0.0]  # c0: 0.9 vs 1.8 (gt 1: rank 0); c1: 0.2 vs 2.0; c2: 0.4 vs 2.5
