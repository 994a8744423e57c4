"""stages.retrieval.conventions on hand-worked rank counts, without the evaluate stage around it: which v2t
gallery and median each convention takes, the ranks each makes from the same counts, and the
collaborative-experts metric's R@1 (rank == 0) and Geom. Written to kill the mutants of conventions.py that
survived tests/test_retrieval_metrics.py (bench/mutation.sh; see bench/mutation_survivors.md)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from stages.retrieval import conventions as C


def _counts(**kw):
    base = dict(n_gt=np.array([0, 1, 2]), n_ge=np.array([1, 1, 3]), thr=np.array([0.5, 0.5, 0.5]),
                own_ties=np.array([1, 0, 2]), before=np.array([1, 0, 0]))
    return C.RankCounts(**{**base, **kw})


def test_check_convention():
    for t in C.CONVENTIONS:
        C.check_convention(t)
    with pytest.raises(ValueError, match=r"ties='best' is not one of \('optimistic', 'pessimistic'"):
        C.check_convention("best")


def test_v2t_gallery_needs_before_and_median():
    assert C.v2t_gallery_for("clip4clip", "captions") == "videos"
    assert C.v2t_gallery_for("collaborative-experts", "videos") == "captions"
    for t in ("optimistic", "pessimistic", "average"):
        assert C.v2t_gallery_for(t, "videos") == "videos" and C.v2t_gallery_for(t, "captions") == "captions"
    assert C.needs_before("clip4clip", "t2v", single=False)
    assert not C.needs_before("clip4clip", "t2v", single=True)
    assert not C.needs_before("clip4clip", "v2t", single=False)
    assert not C.needs_before("average", "t2v", single=False)
    assert C.median_for("clip4clip", "auto", "t2v", single=False) == "torch"
    assert C.median_for("clip4clip", "auto", "t2v", single=True) == "numpy"
    assert C.median_for("clip4clip", "auto", "v2t", single=False) == "numpy"
    assert C.median_for("optimistic", "auto", "t2v", single=False) == "numpy"
    assert C.median_for("clip4clip", "numpy", "t2v", single=False) == "numpy"
    assert C.median_for("optimistic", "torch", "v2t", single=True) == "torch"


@pytest.mark.parametrize("ties,direction,single,want", [
    ("optimistic", "t2v", True, [0, 1, 2]),
    ("pessimistic", "t2v", False, [1, 1, 3]),
    ("average", "v2t", False, [0.5, 1, 2.5]),
    # compute_metrics entries: optimistic .. pessimistic of each query
    ("clip4clip", "t2v", True, [0, 1, 1, 2, 3]),
    ("clip4clip", "v2t", False, [0, 1, 1, 2, 3]),
    # tensor_text_to_video_metrics: argsort position = strictly above + tied earlier in the gallery
    ("clip4clip", "t2v", False, [1, 1, 2]),
    # averaged; v2t over captions adds the video's own tied captions to the pessimistic count
    ("collaborative-experts", "t2v", False, [0.5, 1, 2.5]),
    ("collaborative-experts", "v2t", False, [1, 1, 3.5]),
])
def test_ranks_for_hand_worked(ties, direction, single, want):
    got = C.ranks_for(_counts(), ties, direction, single)
    assert got.dtype == np.float64
    assert got.tolist() == want


def test_collaborative_experts_v2t_without_own_ties_is_plain_average():
    assert C.ranks_for(_counts(own_ties=None), "collaborative-experts", "v2t", False).tolist() == [0.5, 1, 2.5]


def test_ranks_for_refusals():
    with pytest.raises(ValueError, match="^clip4clip multi-caption t2v needs the tied-before counts$"):
        C.ranks_for(_counts(before=None), "clip4clip", "t2v", False)
    nan = _counts(thr=np.array([0.5, np.nan, 0.5]))
    with pytest.raises(ValueError, match=r"^t2v: the ground-truth score is NaN for 1 queries \(first: index 1\)"):
        C.ranks_for(nan, "clip4clip", "t2v", False)
    with pytest.raises(ValueError, match=r"^v2t: the ground-truth score is NaN"):
        C.ranks_for(nan, "collaborative-experts", "v2t", False)
    with pytest.raises(ValueError, match=r"^mine: the ground-truth score is NaN"):
        C.ranks_for(nan, "optimistic", "t2v", True, what="mine")
    with pytest.raises(ValueError, match="is not one of"):
        C.ranks_for(_counts(), "nope", "t2v", True)
    # compute_metrics drops a NaN ground truth (no entries) instead of refusing
    assert C.ranks_for(nan, "clip4clip", "t2v", True).tolist() == [0, 1, 2, 3]


def test_metrics_for_collaborative_experts_r1_and_geom():
    ranks = np.array([0.0, 0.5, 3.0, 7.0])
    m = C.metrics_for(ranks, "collaborative-experts", "numpy", (1, 5, 10), n_queries=4)
    assert m["R@1"] == 25.0 and m["R@5"] == 75.0 and m["R@10"] == 100.0  # 0.5 is not exactly 0: a miss
    assert m["Geom"] == pytest.approx((25.0 * 75.0 * 100.0) ** (1 / 3))
    assert m["MdR"] == 2.75 and m["MnR"] == 3.625 and m["n_queries"] == 4
    assert m["ties"] == "collaborative-experts"
    assert m["convention_reference"] == C.REFERENCES["collaborative-experts"]
    assert "R@1 counts rank == 0" in m["convention_reference"]
    # the same ranks averaged by vtpipe: 0.5 < 1 counts
    a = C.metrics_for(ranks, "average", "numpy", (1, 5, 10), n_queries=4)
    assert a["R@1"] == 50.0 and a["Geom"] == pytest.approx((50.0 * 75.0 * 100.0) ** (1 / 3))
    assert a["ties"] == "average" and a["convention_reference"] == C.REFERENCES["average"]


def test_metrics_for_geom_zero_and_ks_without_r1():
    m = C.metrics_for(np.array([0.5, 1.0]), "collaborative-experts", "numpy", (1, 5), n_queries=2)
    assert m["R@1"] == 0.0 and m["Geom"] == 0.0
    m = C.metrics_for(np.array([0.0, 6.0]), "collaborative-experts", "numpy", (5,), n_queries=2)
    assert "R@1" not in m and m["R@5"] == 50.0
    assert m["Geom"] == pytest.approx((50.0 * 50.0 * 100.0) ** (1 / 3))  # R@1 50, R@5 50, R@10 100
    m = C.metrics_for(np.array([0.0, 12.0]), "collaborative-experts", "numpy", (1, 10), n_queries=2)
    assert m["Geom"] == pytest.approx(50.0)
    m = C.metrics_for(np.array([0.0, 7.0]), "collaborative-experts", "numpy", (1,), n_queries=2)
    assert m["Geom"] == pytest.approx((50.0 * 50.0 * 100.0) ** (1 / 3))


def test_metrics_for_median_and_each_convention_recorded():
    ranks = np.array([0.0, 1.0, 2.0, 3.0])
    assert C.metrics_for(ranks, "clip4clip", "torch", (1,), n_queries=3)["MdR"] == 2.0
    assert C.metrics_for(ranks, "clip4clip", "numpy", (1,), n_queries=3)["MdR"] == 2.5
    for t in C.CONVENTIONS:
        m = C.metrics_for(ranks, t, "numpy", (1,), n_queries=3)
        assert m["ties"] == t and m["convention_reference"] == C.REFERENCES[t] and m["n_queries"] == 3
        assert m["R@1"] == 25.0
    with pytest.raises(ValueError, match="is not one of"):
        C.metrics_for(ranks, "nope", "numpy", (1,), n_queries=3)


def test_ce_recall_boundaries_and_a_small_r1_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a zero recall must give Geom 0 without log(0) warnings
        m = C.metrics_for(np.array([0.0, 5.0, 10.0]), "collaborative-experts", "numpy", (1, 5, 10), n_queries=3)
        assert m["R@5"] == pytest.approx(100 / 3) and m["R@10"] == pytest.approx(200 / 3)
        assert m["Geom"] == pytest.approx((100 / 3 * 100 / 3 * 200 / 3) ** (1 / 3))
        for ranks in ([1.0, 2.0], [0.5, 7.0], [0.0, 12.0, 12.0], [6.0, 6.0]):
            m = C.metrics_for(np.array(ranks), "collaborative-experts", "numpy", (1,), n_queries=len(ranks))
            want = 0.0 if 0.0 not in ranks else (100 / len(ranks)) ** (1 / 3) * (
                100 * sum(r < 5 for r in ranks) / len(ranks) * 100 * sum(r < 10 for r in ranks) / len(ranks)) ** (1 / 3)
            assert m["Geom"] == pytest.approx(want), ranks
        # R@1 of half a percent: a real, small Geom (not 0)
        m = C.metrics_for(np.array([0.0] + [3.0] * 199), "collaborative-experts", "numpy", (1,), n_queries=200)
        assert m["R@1"] == 0.5 and m["Geom"] == pytest.approx((0.5 * 100 * 100) ** (1 / 3))
