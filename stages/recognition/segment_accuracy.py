"""CrossTask scoring as VT-TWINS reports it ("VT-TWINS CrossTask segment accuracy", CTR); pure numpy.

This is *not* the original CrossTask step-localisation recall (Zhukov et al.: per video and step, the argmax
over time of the step's score must fall inside a ground-truth segment). VT-TWINS instead classifies each
annotated segment among its task's step texts:
- one clip per annotated segment (32 frames at 10 fps from the segment start; the extractor's business);
- video and step-text embeddings L2-normalised;
- per task, S = V @ T^T over that task's segments and the step texts of those segments;
- a segment is correct when the maximum of its row equals its own step's score (so ties, e.g. identical step
  texts, count as correct);
- CTR = mean over tasks of the per-task accuracy, in %.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from stages.contract.errors import VtpipeError

METRIC_NAME = "VT-TWINS CrossTask segment accuracy"


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def crosstask_vt_twins(seg_video_feats: np.ndarray, seg_step_text_feats: np.ndarray, seg_task: Sequence,
                       seg_step: Sequence, atol: float = 1e-4) -> dict:
    """VT-TWINS CrossTask segment accuracy.

    Inputs, one row per annotated segment: its clip's video embedding [N, D], the embedding of its step's
    text [N, D], its task id and its step (any hashable; stages.datasets.read_crosstask_segments gives
    1-based ints). Within a task, every segment of the same step must carry the same step-text embedding (up to
    `atol` after normalisation; it is the same text) - otherwise an error names the task and step.

    Exactness of ties: the candidate texts of a task are its distinct steps, and bit-identical normalised text
    rows (identical texts under different step numbers) are merged into one column, so an identical text can
    never lose to itself by a rounding difference. Scores are computed in float64.

    Returns {"ctr": % (mean of per-task accuracies), "per_task": {task: %}, "n_segments_per_task": {task: n},
    "n_segments", "n_tasks", "metric": METRIC_NAME, "correct": per-segment bool list in input order}.
    """
    V = np.asarray(seg_video_feats, dtype=np.float64)
    T = np.asarray(seg_step_text_feats, dtype=np.float64)
    if V.ndim != 2 or T.ndim != 2 or V.shape != T.shape or V.shape[0] == 0:
        raise VtpipeError(f"seg_video_feats and seg_step_text_feats must be non-empty [N, D] arrays of the same "
                          f"shape; got {V.shape} and {T.shape}")
    if not (np.isfinite(V).all() and np.isfinite(T).all()):
        raise VtpipeError("CrossTask features contain NaN or infinite values")
    tasks = np.asarray(seg_task, dtype=object)
    steps = np.asarray(seg_step, dtype=object)
    if tasks.shape != (V.shape[0],) or steps.shape != (V.shape[0],):
        raise VtpipeError(f"seg_task and seg_step need one entry per segment ({V.shape[0]}); got "
                          f"{tasks.shape} and {steps.shape}")
    Vn, Tn = _normalise(V), _normalise(T)
    correct = np.zeros(V.shape[0], dtype=bool)
    per_task: dict = {}
    counts: dict = {}
    for task in dict.fromkeys(tasks.tolist()):  # first-appearance order
        idx = np.flatnonzero(tasks == task)
        step_list = list(dict.fromkeys(steps[idx].tolist()))
        pos = {s: k for k, s in enumerate(step_list)}
        seg_pos = np.array([pos[s] for s in steps[idx]], dtype=np.int64)
        first = np.array([idx[np.flatnonzero(seg_pos == k)[0]] for k in range(len(step_list))], dtype=np.int64)
        U = Tn[first]
        diff = np.abs(Tn[idx] - U[seg_pos]).max(axis=1)
        if (diff > atol).any():
            bad = int(np.flatnonzero(diff > atol)[0])
            raise VtpipeError(f"task {task!r}: segments of step {steps[idx][bad]!r} carry different step-text "
                              f"embeddings (max difference {diff[bad]:.3g} > atol {atol}); encode each step text "
                              f"once and give every segment of the step that embedding")
        Uu, inverse = np.unique(U, axis=0, return_inverse=True)
        col = inverse.reshape(-1)[seg_pos]
        S = Vn[idx] @ Uu.T
        own = S[np.arange(len(idx)), col]
        ok = own >= S.max(axis=1)
        correct[idx] = ok
        per_task[task] = float(100.0 * ok.mean())
        counts[task] = int(len(idx))
    return {
        "ctr": float(np.mean(list(per_task.values()))),
        "per_task": per_task,
        "n_segments_per_task": counts,
        "n_segments": int(V.shape[0]),
        "n_tasks": len(per_task),
        "metric": METRIC_NAME,
        "correct": correct.tolist(),
    }
