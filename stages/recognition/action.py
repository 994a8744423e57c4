"""Action-recognition scoring (pure numpy / scikit-learn; no file IO): zero-shot by prompts, linear probe.

- Zero-shot (TVTSv2 style): class names -> prompts -> text features (by the caller's text encoder); each video
  is scored against every class by cosine similarity; top-k accuracy in %.
- Linear probe (MIL-NCE / VT-TWINS protocol): `sklearn.svm.LinearSVC(C=100)` trained on every clip of every
  training video as one sample with its video's label; a test video's class is the argmax of the sum of its
  clips' decision_function scores; top-1 accuracy in %, averaged over the dataset's splits.
"""

from __future__ import annotations

import re
import warnings
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from stages.contract.errors import VtpipeError

DEFAULT_TEMPLATE = "a video of a person {}."

_WORD = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")


def classname_words(name: str) -> str:
    """A dataset class name as lower-case words: CamelCase, snake_case and dashes are split.
    'ApplyEyeMakeup' -> 'apply eye makeup', 'YoYo' -> 'yo yo', 'brush_hair' -> 'brush hair',
    'TVShow' -> 'tv show' (an upper-case run followed by a capitalised word is an acronym), 'Skijet' -> 'skijet'.
    Characters other than letters and digits separate words and are dropped."""
    words = [w.lower() for part in re.split(r"[^A-Za-z0-9]+", name) for w in _WORD.findall(part)]
    if not words:
        raise VtpipeError(f"class name {name!r} has no letters or digits")
    return " ".join(words)


def prompt_classnames(names: Iterable[str], template: str = DEFAULT_TEMPLATE) -> list[str]:
    """One prompt per class: `template` with '{}' replaced by classname_words(name).
    prompt_classnames(["ApplyEyeMakeup"]) == ["a video of a person apply eye makeup."]."""
    if template.count("{}") != 1:
        raise VtpipeError(f"prompt template {template!r} must contain exactly one '{{}}' for the class name")
    return [template.format(classname_words(n)) for n in names]


def _as_2d(x: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] == 0:
        raise VtpipeError(f"{what} must be a non-empty 2-D array [N, D], got shape {a.shape}")
    if not np.isfinite(a).all():
        raise VtpipeError(f"{what} contains NaN or infinite values")
    return a


def _labels(y: Sequence[int], n: int, what: str, n_classes: int | None = None) -> np.ndarray:
    a = np.asarray(y)
    if a.ndim != 1 or len(a) != n:
        raise VtpipeError(f"{what} must be 1-D with one label per video ({n}), got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.integer):
        raise VtpipeError(f"{what} must be integer class indices, got dtype {a.dtype}")
    if n_classes is not None and len(a) and (a.min() < 0 or a.max() >= n_classes):
        raise VtpipeError(f"{what} must lie in 0..{n_classes - 1}; got {a.min()}..{a.max()}")
    return a.astype(np.int64)


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def zeroshot_accuracy(video_feats: np.ndarray, class_text_feats: np.ndarray, labels: Sequence[int],
                      ks: Sequence[int] = (1, 5)) -> dict:
    """Top-k zero-shot accuracy (%) of videos [N, D] against class text features [C, D] by cosine similarity
    (both L2-normalised here). A video is correct at k when fewer than k classes score strictly higher than its
    true class (ties optimistic, as vtpipe's retrieval default). k >= C gives 100.
    Returns {"top<k>": %, ..., "n_videos", "n_classes", "ties": "optimistic", "predictions": argmax class per
    video (first maximum) as a list}."""
    V = _as_2d(video_feats, "video_feats")
    T = _as_2d(class_text_feats, "class_text_feats")
    if V.shape[1] != T.shape[1]:
        raise VtpipeError(f"video features are {V.shape[1]}-d but class text features {T.shape[1]}-d")
    y = _labels(labels, V.shape[0], "labels", T.shape[0])
    if not ks or any(int(k) < 1 for k in ks):
        raise VtpipeError(f"ks must be positive integers, got {list(ks)}")
    S = _normalise(V) @ _normalise(T).T
    own = S[np.arange(len(y)), y]
    rank = (S > own[:, None]).sum(axis=1)
    out: dict = {f"top{int(k)}": float(100.0 * np.mean(rank < int(k))) for k in ks}
    out.update(n_videos=int(V.shape[0]), n_classes=int(T.shape[0]), ties="optimistic",
               predictions=S.argmax(axis=1).tolist())
    return out


def _clips(x: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 3 or a.shape[0] == 0 or a.shape[1] == 0:
        raise VtpipeError(f"{what} must be a 3-D array [videos, clips, D] (e.g. [N, 10, 1024]), got shape {a.shape}")
    if not np.isfinite(a).all():
        raise VtpipeError(f"{what} contains NaN or infinite values")
    return a


def linear_probe(train_clip_feats: np.ndarray, train_labels: Sequence[int], test_clip_feats: np.ndarray,
                 test_labels: Sequence[int], C: float = 100.0, max_iter: int = 1000, dual: bool = True,
                 random_state: int = 0) -> dict:
    """Linear-probe top-1 accuracy (%), the MIL-NCE / VT-TWINS protocol.

    Training: `LinearSVC(C=C)` (one-vs-rest, squared hinge, as the reference) fit on train_clip_feats
    reshaped to [N_train * clips, D], each clip labelled with its video's label. Test: the decision_function
    of each of a video's clips, summed over the clips, argmax (ties -> the lowest class index, np.argmax).
    Features are used as given (S3D mixed_5c is not normalised in the protocol).

    Determinism and solver: liblinear's dual coordinate descent visits samples in a random order, so
    `random_state` is fixed (0) to make results repeatable (the reference left it unset). `dual=True` and
    `max_iter=1000` are what the reference's scikit-learn used by default; newer scikit-learn picks the
    solver automatically, which changes results, so it is pinned here. With C=100 on un-normalised features
    liblinear often stops at max_iter before its tolerance; that is the published protocol, so max_iter is
    not raised by default. `converged` in the result says whether it stopped on tolerance (no
    ConvergenceWarning); raise `max_iter` (or use dual=False) for a converged solution.

    Returns {"top1", "n_train_videos", "n_test_videos", "train_clips", "test_clips", "n_classes",
    "converged", "n_iter", "C", "max_iter", "dual", "random_state", "predictions" (list of class labels)}.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.svm import LinearSVC

    Xtr = _clips(train_clip_feats, "train_clip_feats")
    Xte = _clips(test_clip_feats, "test_clip_feats")
    if Xtr.shape[2] != Xte.shape[2]:
        raise VtpipeError(f"train features are {Xtr.shape[2]}-d but test features {Xte.shape[2]}-d")
    ytr = _labels(train_labels, Xtr.shape[0], "train_labels")
    yte = _labels(test_labels, Xte.shape[0], "test_labels")
    if len(np.unique(ytr)) < 2:
        raise VtpipeError("the training videos cover fewer than 2 classes; a linear probe needs at least 2")
    n_tr, k_tr, d = Xtr.shape
    n_te, k_te, _ = Xte.shape
    clf = LinearSVC(C=float(C), dual=dual, max_iter=int(max_iter), random_state=random_state)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        clf.fit(Xtr.reshape(n_tr * k_tr, d), np.repeat(ytr, k_tr))
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    scores = clf.decision_function(Xte.reshape(n_te * k_te, d))
    if scores.ndim == 1:  # two classes: one score, positive for classes_[1]
        scores = np.stack([-scores, scores], axis=1)
    video_scores = scores.reshape(n_te, k_te, -1).sum(axis=1)
    pred = clf.classes_[video_scores.argmax(axis=1)]
    return {
        "top1": float(100.0 * np.mean(pred == yte)),
        "n_train_videos": int(n_tr), "n_test_videos": int(n_te),
        "train_clips": int(k_tr), "test_clips": int(k_te), "n_classes": int(len(clf.classes_)),
        "converged": bool(converged), "n_iter": int(np.max(clf.n_iter_)),
        "C": float(C), "max_iter": int(max_iter), "dual": bool(dual), "random_state": random_state,
        "predictions": pred.tolist(),
    }


def linear_probe_splits(splits: Sequence[tuple[np.ndarray, Sequence[int], np.ndarray, Sequence[int]]],
                        **kwargs) -> dict:
    """linear_probe on each (train_clip_feats, train_labels, test_clip_feats, test_labels) of `splits` (UCF101 /
    HMDB51 splits 1-3); returns {"top1": mean over splits, "top1_per_split": [...], "converged": all,
    "splits": [each split's result]}. `kwargs` go to linear_probe."""
    if not splits:
        raise VtpipeError("linear_probe_splits needs at least one split")
    results = [linear_probe(*s, **kwargs) for s in splits]
    per = [r["top1"] for r in results]
    return {"top1": float(np.mean(per)), "top1_per_split": per,
            "converged": all(r["converged"] for r in results), "splits": results}


def select_videos(split: pd.DataFrame, video_ids: Sequence[str], feats: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The rows of `feats` (aligned with `video_ids`, e.g. a feature store's ids) for a split table
    DataFrame[video_id, label] (stages.datasets.read_action_split): (features, labels, missing ids). Videos
    of the split that have no features (failed extraction) are left out and listed in `missing`."""
    if len(video_ids) != len(feats):
        raise VtpipeError(f"{len(video_ids)} video ids but {len(feats)} feature rows")
    for col in ("video_id", "label"):
        if col not in split.columns:
            raise VtpipeError(f"split table needs column {col!r}; has {list(split.columns)}")
    index = {v: i for i, v in enumerate(video_ids)}
    rows = [index.get(v, -1) for v in split["video_id"]]
    have = np.array([r >= 0 for r in rows], dtype=bool)
    missing = split["video_id"][~have].tolist()
    take = np.array([r for r in rows if r >= 0], dtype=np.int64)
    return np.asarray(feats)[take], split["label"].to_numpy(dtype=np.int64)[have], missing
