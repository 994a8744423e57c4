"""Numbers that say when the retrieval numbers mislead: tied ground truths and missing videos.

Every retrieval result carries ``tie_diagnostics`` (from the exact counts behind its ranks):

* ``queries_tied``: queries whose ground truth ties with at least one other gallery item;
* ``tied_in_top_k``: per K, queries whose tie group reaches into the top K (``n_gt < K`` and tied), i.e.
  the queries whose R@K hit depends on how ties are broken;
* ``R@K_optimistic`` / ``R@K_pessimistic``: R@K under the two extreme policies, beside the reported one;
* ``max_gap``: the largest |reported R@K - pessimistic R@K|; above ``TIE_WARN_POINTS`` (0.1 points) the
  result gets a ``warnings`` entry, printed by the CLI and written into metrics.json / metrics.md.

Queries counted as misses (a caption whose video failed, with ``evaluate.missing = miss``) enter the
denominators of both R@K policies as misses.
"""

from __future__ import annotations

import numpy as np

__all__ = ["TIE_WARN_POINTS", "tie_diagnostics", "missing_warning"]

#: a printed warning when the reported R@K and the pessimistic one differ by more than this (points)
TIE_WARN_POINTS = 0.1


def tie_diagnostics(n_gt, n_ge, ks, reported: dict, direction: str, misses: int = 0) -> dict:
    """Diagnostics of one direction; ``reported`` is its metrics dict (R@K as computed)."""
    n_gt = np.asarray(n_gt, dtype=np.int64)
    n_ge = np.asarray(n_ge, dtype=np.int64)
    n = n_gt.size + int(misses)
    tied = n_ge > n_gt
    out: dict = {"queries": int(n), "queries_tied": int(tied.sum()), "tied_in_top_k": {},
                 "R@K_optimistic": {}, "R@K_pessimistic": {}, "warn_points": TIE_WARN_POINTS}
    gap = 0.0
    for k in ks:
        key = f"R@{int(k)}"
        out["tied_in_top_k"][key] = int(np.count_nonzero(tied & (n_gt < k)))
        opt = 100.0 * float(np.count_nonzero(n_gt < k)) / max(n, 1)
        pes = 100.0 * float(np.count_nonzero(n_ge < k)) / max(n, 1)
        out["R@K_optimistic"][key] = opt
        out["R@K_pessimistic"][key] = pes
        if reported.get(key) is not None:
            gap = max(gap, abs(float(reported[key]) - pes))
    out["max_gap"] = gap
    out["warning"] = None
    if gap > TIE_WARN_POINTS:
        worst = max((k for k in ks if reported.get(f"R@{int(k)}") is not None),
                    key=lambda k: abs(float(reported[f"R@{int(k)}"]) - out["R@K_pessimistic"][f"R@{int(k)}"]))
        key = f"R@{int(worst)}"
        out["warning"] = (f"{direction}: {key} is {float(reported[key]):.1f} under ties={reported.get('ties')} but "
                          f"{out['R@K_pessimistic'][key]:.1f} under pessimistic ties "
                          f"({out['tied_in_top_k'][key]} of {n} queries have their ground truth tied with another "
                          f"item within the top {int(worst)}; {out['queries_tied']} are tied at all)")
    return out


def missing_warning(n_missing_videos: int, n_captions_affected: int, policy: str, n_videos: int) -> str | None:
    """The warning for captions whose video has no features (missing from the store or failed)."""
    if not n_missing_videos:
        return None
    how = ("counted as misses (rank = gallery size)" if policy == "miss"
           else "dropped from the metrics (the gallery shrinks and R@K rises; --missing miss counts them as misses)")
    return (f"{n_missing_videos} video(s) named by the captions have no features (missing or failed; "
            f"{n_videos} evaluated): their {n_captions_affected} caption(s) are {how}")
