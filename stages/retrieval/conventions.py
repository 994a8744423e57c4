"""Named metric conventions: how each reference code turns tied scores into ranks and ranks into R@K / MdR.

A convention is chosen once (``--ties`` / ``evaluate.ties``) and recorded in every metrics.json
(``ties``, ``convention_reference``). All of them are computed from the same exact per-query counts
(:class:`RankCounts`: items scoring strictly above the ground truth, items tied with it, and - where a
convention needs them - the video's own tied captions and the tied items earlier in gallery order), so
every convention runs blockwise on any gallery size.

``optimistic`` (vtpipe default)
    rank = number of gallery items scoring strictly higher than the ground truth.
``pessimistic``
    rank = number of *other* gallery items scoring higher or equal.
``average``
    mean of the two (x.5 possible); R@K counts rank < K. Not the collaborative-experts metric (below).
``clip4clip`` - CLIP4Clip ``metrics.py`` (ArrowLuo/CLIP4Clip 508ffa3; DRL and UCoFiA carry the same file)
    * one caption per video, t2v and v2t: ``compute_metrics`` - sort the row, keep *every* position whose
      value equals the ground truth's: a query tied with ``e`` others contributes the ``e + 1`` entries
      ``optimistic .. pessimistic``, and R@K / MdR / MnR are taken over the entries (numpy median);
    * several captions per video, t2v: ``tensor_text_to_video_metrics`` - the position of the ground
      truth in a descending ``torch.argsort`` of the row: ties are broken by gallery order (rank =
      optimistic + tied items with a lower gallery index), ``torch.median`` (the lower middle value).
      This is what torch's sort returns for rows of up to 16 items (insertion sort, stable); for longer
      rows torch's unstable sort orders ties in a way that depends on the torch build, so the reference
      itself is not reproducible there - the tie diagnostics say how many queries that touches;
    * several captions per video, v2t: ``compute_metrics(tensor_video_to_text_sim(...))`` - every video
      group scored by its best caption (``v2t_gallery = videos``), entries as above.
``collaborative-experts`` - collaborative-experts ``model/metric.py`` (albanie/collaborative-experts),
    copied verbatim as ``metric.py`` in QB-Norm (qb-norm 76d4d90) and used by its dynamic inverted softmax
    * ties averaged (``break_ties = "averaging"``);
    * ``cols2metrics``: R@1 counts a rank of *exactly* 0 (a ground truth tied at the top with one other
      item has rank 0.5 and is a miss), R@5 / R@10 / R@50 count rank < K; numpy median;
    * v2t (``v2t_metrics``): gallery = all captions; a video's rank is its best caption's averaged
      position among *all* captions, its own other captions included - a duplicated caption of the same
      video tied with the best one moves it from 0 to 0.5 (``v2t_gallery = captions``).
    The reference rounds every number to one decimal; vtpipe does not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .metrics import _finish, retrieval_metrics

__all__ = ["CONVENTIONS", "REFERENCES", "MEDIANS_AUTO", "RankCounts", "check_convention", "v2t_gallery_for",
           "median_for", "ranks_for", "metrics_for"]

CONVENTIONS = ("optimistic", "pessimistic", "average", "clip4clip", "collaborative-experts")
MEDIANS_AUTO = ("auto", "numpy", "torch")

REFERENCES = {
    "optimistic": "vtpipe: rank = number of gallery items scoring strictly higher than the ground truth",
    "pessimistic": "vtpipe: rank = number of other gallery items scoring higher or equal",
    "average": "vtpipe: mean of the optimistic and pessimistic ranks; R@K counts rank < K",
    "clip4clip": "ArrowLuo/CLIP4Clip@508ffa3 metrics.py: compute_metrics (one caption per video; v2t over videos "
                 "scored by their best caption) and tensor_text_to_video_metrics (multi-caption t2v: argsort "
                 "order, torch.median)",
    "collaborative-experts": "albanie/collaborative-experts model/metric.py = ioanacroi/qb-norm@76d4d90 metric.py: "
                             "averaged ties, R@1 counts rank == 0, v2t over all captions incl. the video's own",
}

#: v2t gallery fixed by a reference convention (None: evaluate.v2t_gallery decides)
_V2T_GALLERY = {"clip4clip": "videos", "collaborative-experts": "captions"}


@dataclass
class RankCounts:
    """Exact per-query counts (one entry per query).

    n_gt: gallery items scoring strictly above the ground truth; n_ge: other items scoring >= it (for
    v2t over captions: other videos' captions); thr: the ground-truth score (NaN: undefined);
    own_ties: v2t over captions, the video's other captions equal to its best one; before: tied items
    with a lower gallery index (argsort order)."""

    n_gt: np.ndarray
    n_ge: np.ndarray
    thr: np.ndarray
    own_ties: np.ndarray | None = None
    before: np.ndarray | None = None


def check_convention(ties: str) -> None:
    if ties not in CONVENTIONS:
        raise ValueError(f"ties={ties!r} is not one of {CONVENTIONS}")


def v2t_gallery_for(ties: str, requested: str) -> str:
    """The v2t gallery a convention uses (its reference's), else the requested one."""
    return _V2T_GALLERY.get(ties, requested)


def needs_before(ties: str, direction: str, single: bool) -> bool:
    """Whether the ranks need the tied-before-in-gallery-order count (clip4clip multi-caption t2v)."""
    return ties == "clip4clip" and direction == "t2v" and not single


def median_for(ties: str, median: str, direction: str, single: bool) -> str:
    """``median="auto"``: the convention's own (torch for clip4clip multi-caption t2v, else numpy)."""
    if median != "auto":
        return median
    return "torch" if needs_before(ties, direction, single) else "numpy"


def ranks_for(c: RankCounts, ties: str, direction: str, single: bool, what: str = "") -> np.ndarray:
    """0-based ranks (float64) under a convention; for clip4clip ``compute_metrics`` cases, the entries."""
    check_convention(ties)
    what = what or direction
    if ties in ("optimistic", "pessimistic", "average"):
        return _finish(c.n_gt, c.n_ge, c.thr, ties, what)
    if ties == "clip4clip":
        if needs_before(ties, direction, single):
            if c.before is None:
                raise ValueError("clip4clip multi-caption t2v needs the tied-before counts")
            _finish(c.n_gt, c.n_ge, c.thr, "optimistic", what)  # raises on NaN ground truth
            return (c.n_gt + c.before).astype(np.float64)
        return _finish(c.n_gt, c.n_ge, c.thr, "clip4clip", what)
    # collaborative-experts: averaged positions; v2t over captions counts the video's own tied captions
    n_ge = c.n_ge if (direction == "t2v" or c.own_ties is None) else c.n_ge + c.own_ties
    return _finish(c.n_gt, n_ge, c.thr, "average", what)


def metrics_for(ranks: np.ndarray, ties: str, median: str, ks, n_queries: int) -> dict:
    """R@K / MdR / MnR / StdR / Geom of ranks made under ``ties`` (``median`` already resolved)."""
    check_convention(ties)
    low = ties if ties in ("optimistic", "pessimistic", "average", "clip4clip") else "average"
    m = retrieval_metrics(ranks, ks=ks, median=median, ties=low, n_queries=n_queries)
    if ties == "collaborative-experts":
        r = np.asarray(ranks, dtype=np.float64)
        r1 = 100.0 * float(np.count_nonzero(r == 0)) / r.size  # cols2metrics: cols == 0
        if "R@1" in m:
            m["R@1"] = r1
        r5, r10 = (100.0 * float(np.count_nonzero(r < k)) / r.size for k in (5, 10))
        m["Geom"] = 0.0 if min(r1, r5, r10) <= 0 else float(np.exp((np.log(r1) + np.log(r5) + np.log(r10)) / 3))
    m["ties"] = ties
    m["convention_reference"] = REFERENCES[ties]
    return m
