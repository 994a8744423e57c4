"""Zero-shot accuracy, linear probe and VT-TWINS CrossTask segment accuracy: hand-worked examples and naive
references on seeded data."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.svm import LinearSVC

from stages.recognition.segment_accuracy import METRIC_NAME, crosstask_vt_twins
from stages.contract.errors import VtpipeError
from stages.recognition.action import (
    classname_words,
    linear_probe,
    linear_probe_splits,
    prompt_classnames,
    select_videos,
    zeroshot_accuracy,
)

# ------------------------------------------------------------------------------------------------
# prompts
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, words", [
    ("ApplyEyeMakeup", "apply eye makeup"), ("YoYo", "yo yo"), ("brush_hair", "brush hair"),
    ("TVShow", "tv show"), ("Skijet", "skijet"), ("HandstandPushups", "handstand pushups"),
    ("Basketball-Dunk", "basketball dunk"), ("PlayingDaf", "playing daf"), ("shoot_ball", "shoot ball"),
    ("Rowing2", "rowing 2"),
])
def test_classname_words(name, words):
    assert classname_words(name) == words


def test_prompt_classnames():
    assert prompt_classnames(["ApplyEyeMakeup", "ride_bike"]) == ["a video of a person apply eye makeup.",
                                                                   "a video of a person ride bike."]
    assert prompt_classnames(["YoYo"], template="{}") == ["yo yo"]
    with pytest.raises(VtpipeError, match="exactly one"):
        prompt_classnames(["YoYo"], template="a video")
    with pytest.raises(VtpipeError, match="no letters"):
        classname_words("__")


# ------------------------------------------------------------------------------------------------
# zero-shot
# ------------------------------------------------------------------------------------------------


def test_zeroshot_hand_worked():
    # normalised: classes c0 = (1, 0), c1 = (0, 1) (c1 given with norm 2: cosine ignores it)
    V = np.array([[1.0, 0.0], [0.0, 1.0], [3.0, 3.0]])
    T = np.array([[1.0, 0.0], [0.0, 2.0]])
    # video 0 (label 0): 1 vs 0 -> right; video 1 (label 0): 0 vs 1 -> rank 1 (top-2 only);
    # video 2 (label 1): 0.707 vs 0.707 -> tie, optimistic -> right
    out = zeroshot_accuracy(V, T, [0, 0, 1], ks=(1, 2))
    assert out["top1"] == pytest.approx(200 / 3)
    assert out["top2"] == 100.0
    assert out["predictions"] == [0, 1, 0]  # argmax takes the first of tied maxima
    assert out["n_videos"] == 3 and out["n_classes"] == 2 and out["ties"] == "optimistic"


def test_zeroshot_naive_reference_seeded():
    rng = np.random.default_rng(0)
    N, C, D = 60, 7, 16
    V = rng.normal(size=(N, D)).astype(np.float32)
    T = rng.normal(size=(C, D)).astype(np.float32)
    y = rng.integers(0, C, size=N)
    out = zeroshot_accuracy(V, T, y, ks=(1, 3, 5))

    def cos(a, b):
        a, b = [float(x) for x in a], [float(x) for x in b]
        return sum(x * z for x, z in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(z * z for z in b))

    hits = {1: 0, 3: 0, 5: 0}
    for i in range(N):
        s = [cos(V[i], T[c]) for c in range(C)]
        order = sorted(range(C), key=lambda c: -s[c])
        for k in hits:
            hits[k] += y[i] in order[:k]
    for k in hits:
        assert out[f"top{k}"] == pytest.approx(100 * hits[k] / N)
    assert 0 < out["top1"] < out["top3"] < out["top5"] <= 100


def test_zeroshot_errors():
    with pytest.raises(VtpipeError, match="16-d but class text features 8-d"):
        zeroshot_accuracy(np.zeros((2, 16)), np.zeros((3, 8)), [0, 1])
    with pytest.raises(VtpipeError, match="must lie in 0..2"):
        zeroshot_accuracy(np.ones((2, 4)), np.ones((3, 4)), [0, 3])
    with pytest.raises(VtpipeError, match="one label per video \\(2\\)"):
        zeroshot_accuracy(np.ones((2, 4)), np.ones((3, 4)), [0])
    with pytest.raises(VtpipeError, match="NaN"):
        zeroshot_accuracy(np.full((2, 4), np.nan), np.ones((3, 4)), [0, 1])


# ------------------------------------------------------------------------------------------------
# linear probe
# ------------------------------------------------------------------------------------------------


def test_linear_probe_sums_scores_not_votes():
    # 1-D, two classes symmetric about 0: f(x) = w x + b with w > 0, b ~ 0.
    train = np.array([[[-2.0], [-1.0]], [[-1.5], [-2.5]], [[1.0], [2.0]], [[1.5], [2.5]]])
    ytr = [0, 0, 1, 1]
    # test video 0: two clips vote class 0 (-0.5, -0.5) but the summed score is 4w > 0 -> class 1.
    # test video 1: clips (-3, 1): sum -2w -> class 0.
    test = np.array([[[-0.5], [-0.5], [5.0]], [[-3.0], [1.0], [0.0]]])
    out = linear_probe(train, ytr, test, [1, 0])
    assert out["predictions"] == [1, 0]
    assert out["top1"] == 100.0
    assert out["train_clips"] == 2 and out["test_clips"] == 3 and out["n_classes"] == 2


def _blobs(rng, centers, n_videos, clips=10, spread=0.3):
    """Videos of `clips` clips drawn around their class center; labels cycle through the classes."""
    y = np.arange(n_videos) % len(centers)
    X = centers[y][:, None, :] + spread * rng.normal(size=(n_videos, clips, centers.shape[1]))
    return X.astype(np.float32), y


def test_linear_probe_separable_and_equals_direct_computation():
    rng = np.random.default_rng(1)
    centers = rng.normal(size=(3, 32)) * 3.0
    Xtr, ytr = _blobs(rng, centers, 30)
    Xte, yte = _blobs(rng, centers, 12)
    out = linear_probe(Xtr, ytr, Xte, yte)
    assert out["top1"] == 100.0

    # direct computation with sklearn's own decision_function, as the MIL-NCE / VT-TWINS script does it
    clf = LinearSVC(C=100.0, dual=True, max_iter=1000, random_state=0)
    clf.fit(Xtr.reshape(-1, 32), np.repeat(ytr, 10))
    scores = clf.decision_function(Xte.reshape(-1, 32)).reshape(12, 10, -1).sum(axis=1)
    pred = np.argmax(scores, axis=1)
    assert out["predictions"] == pred.tolist()
    assert out["top1"] == 100.0 * np.mean(pred == yte)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_linear_probe_noisy_equals_direct_and_is_deterministic():
    rng = np.random.default_rng(4)
    centers = rng.normal(size=(4, 8)) * 3.0
    Xtr, ytr = _blobs(rng, centers, 40, clips=5, spread=8.0)  # overlapping classes: accuracy < 100
    Xte, yte = _blobs(rng, centers, 20, clips=5, spread=8.0)
    a = linear_probe(Xtr, ytr, Xte, yte, C=1.0)
    b = linear_probe(Xtr, ytr, Xte, yte, C=1.0)
    assert a == b
    clf = LinearSVC(C=1.0, dual=True, max_iter=1000, random_state=0).fit(Xtr.reshape(-1, 8), np.repeat(ytr, 5))
    pred = clf.classes_[clf.decision_function(Xte.reshape(-1, 8)).reshape(20, 5, -1).sum(axis=1).argmax(axis=1)]
    assert a["predictions"] == pred.tolist()
    assert a["top1"] == pytest.approx(100.0 * np.mean(pred == yte))
    assert 0 < a["top1"] < 100
    assert a["C"] == 1.0 and a["dual"] is True and a["random_state"] == 0 and isinstance(a["converged"], bool)


def test_linear_probe_splits_average():
    rng = np.random.default_rng(6)
    centers = rng.normal(size=(2, 6)) * 3.0
    Xtr, ytr = _blobs(rng, centers, 20, clips=3, spread=2.5)
    Xte, yte = _blobs(rng, centers, 10, clips=3, spread=2.5)
    s1 = (Xtr, ytr, Xte, yte)
    s2 = (Xte, yte, Xtr, ytr)
    out = linear_probe_splits([s1, s2])
    one, two = linear_probe(*s1), linear_probe(*s2)
    assert out["top1_per_split"] == [one["top1"], two["top1"]]
    assert out["top1"] == pytest.approx((one["top1"] + two["top1"]) / 2)
    with pytest.raises(VtpipeError, match="at least one split"):
        linear_probe_splits([])


def test_linear_probe_errors():
    with pytest.raises(VtpipeError, match=r"3-D array \[videos, clips, D\]"):
        linear_probe(np.zeros((4, 8)), [0, 1, 0, 1], np.zeros((2, 1, 8)), [0, 1])
    with pytest.raises(VtpipeError, match="fewer than 2 classes"):
        linear_probe(np.zeros((2, 1, 8)), [0, 0], np.zeros((2, 1, 8)), [0, 1])
    with pytest.raises(VtpipeError, match="8-d but test features 4-d"):
        linear_probe(np.zeros((2, 1, 8)), [0, 1], np.zeros((2, 1, 4)), [0, 1])


def test_select_videos():
    split = pd.DataFrame({"video_id": ["c/b", "c/x", "c/a"], "label": [1, 0, 2]})
    feats = np.arange(2 * 2 * 3).reshape(2, 2, 3)
    X, y, missing = select_videos(split, ["c/a", "c/b"], feats)
    assert X.tolist() == [feats[1].tolist(), feats[0].tolist()]
    assert y.tolist() == [1, 2] and missing == ["c/x"]


# ------------------------------------------------------------------------------------------------
# CrossTask (VT-TWINS)
# ------------------------------------------------------------------------------------------------


def test_crosstask_hand_worked_with_ties():
    V = np.array([
        [2.0, 1.0],   # A, step 1: cos with (1,0) = 2/sqrt5 > 1/sqrt5 -> right
        [1.0, 3.0],   # A, step 2: 3/sqrt10 > 1/sqrt10 -> right
        [0.0, 1.0],   # A, step 1: 0 < 1 -> wrong
        [1.0, 0.0],   # B, step 1: both step texts are (1,1): tie -> right
        [0.0, -1.0],  # B, step 2: tie again (both -0.707) -> right
    ])
    T = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [1.0, 1.0]])
    out = crosstask_vt_twins(V, T, ["A", "A", "A", "B", "B"], [1, 2, 1, 1, 2])
    assert out["per_task"] == {"A": pytest.approx(200 / 3), "B": 100.0}
    assert out["ctr"] == pytest.approx((200 / 3 + 100) / 2)  # mean over tasks (83.3), not over segments (80)
    assert out["correct"] == [True, True, False, True, True]
    assert out["n_segments_per_task"] == {"A": 3, "B": 2}
    assert out["metric"] == METRIC_NAME == "VT-TWINS CrossTask segment accuracy"


def test_crosstask_candidates_are_the_tasks_segments_steps_only():
    # task A has a segment of step 1 only: one candidate text, always right, whatever the video
    out = crosstask_vt_twins(np.array([[0.0, 1.0]]), np.array([[1.0, 0.0]]), ["A"], [1])
    assert out["ctr"] == 100.0


def naive_crosstask(V, T, task, step, strict=False):
    """Per task, the per-segment text matrix of the spec, with plain Python dot products (identical text rows
    give bit-identical scores, so ties are exact). strict=True counts a tie as wrong (for contrast only)."""
    def norm(r):
        n = math.sqrt(sum(float(x) * float(x) for x in r))
        return [float(x) / n for x in r]

    Vn, Tn = [norm(r) for r in V], [norm(r) for r in T]
    accs = []
    for t in dict.fromkeys(task):
        idx = [i for i in range(len(task)) if task[i] == t]
        right = 0
        for i in idx:
            row = [sum(a * b for a, b in zip(Vn[i], Tn[j])) for j in idx]
            own = row[idx.index(i)]
            if strict:
                right += all(own > row[k] for k, j in enumerate(idx) if step[j] != step[i])
            else:
                right += own == max(row)
        accs.append(100.0 * right / len(idx))
    return sum(accs) / len(accs)


def test_crosstask_naive_reference_seeded():
    rng = np.random.default_rng(8)
    D, rows_v, rows_t, tasks, steps = 12, [], [], [], []
    for t in range(4):
        n_steps = int(rng.integers(3, 7))
        texts = rng.normal(size=(n_steps, D)).astype(np.float32)
        texts[1] = texts[0]  # two steps with the same text: ties must count as right
        for _ in range(int(rng.integers(5, 15))):
            s = int(rng.integers(0, n_steps))
            tasks.append(f"task{t}")
            steps.append(s + 1)
            rows_t.append(texts[s])
            # half the time a video close to its step text, else random
            rows_v.append(texts[s] + rng.normal(size=D) * (0.5 if rng.random() < 0.5 else 5.0))
    V, T = np.array(rows_v, dtype=np.float32), np.array(rows_t, dtype=np.float32)
    out = crosstask_vt_twins(V, T, tasks, steps)
    assert out["ctr"] == pytest.approx(naive_crosstask(V, T, tasks, steps))
    assert 0 < out["ctr"] < 100
    # the data has ties (duplicated step texts winning): counting them wrong would score lower
    assert naive_crosstask(V, T, tasks, steps, strict=True) < out["ctr"]
    assert out["n_tasks"] == 4 and out["n_segments"] == len(tasks)


def test_crosstask_inconsistent_step_text_errors():
    T = np.array([[1.0, 0.0], [0.0, 1.0]])
    with pytest.raises(VtpipeError, match="task 'A': segments of step 1 carry different step-text embeddings"):
        crosstask_vt_twins(np.ones((2, 2)), T, ["A", "A"], [1, 1])
    with pytest.raises(VtpipeError, match="same shape"):
        crosstask_vt_twins(np.ones((2, 2)), np.ones((3, 2)), ["A", "A"], [1, 1])
    with pytest.raises(VtpipeError, match="one entry per segment"):
        crosstask_vt_twins(np.ones((2, 2)), np.ones((2, 2)), ["A"], [1, 1])
