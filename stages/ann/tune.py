"""Tuning the search knob: the smallest nprobe / efSearch whose recall on held-out queries meets a target."""

from __future__ import annotations

import faiss

from stages.ann.measure import HeldOut
from stages.ann.params import knob, set_search_params

REFINE_K_FACTOR = 4


def tune(index: faiss.Index, held: HeldOut, k: int, target: float) -> tuple[dict[str, int], list[dict], bool]:
    """Smallest knob value whose recall@k meets the target (search cost grows with it).

    "Meets" means recall - 2 standard errors >= target on the tuning queries, so that the recall measured on
    other queries lands on the target rather than just under it. Walks the candidate values up until the
    target is met, then bisects the last gap on integers. Where no value meets it, the most accurate value is
    kept and reached=False. Returns (params, curve, reached).
    """
    kn = knob(index)
    if kn is None or len(held.q) == 0:
        return {}, [], True
    name, values = kn
    fixed: dict[str, int] = {}
    top = faiss.downcast_index(index)
    if isinstance(top, faiss.IndexRefine) and top.k_factor < REFINE_K_FACTOR:
        fixed = {"k_factor_rf": REFINE_K_FACTOR}  # re-rank 4k candidates with the stored vectors
        set_search_params(index, fixed)
    if name == "efSearch":
        values = sorted({max(v, k) for v in values})
    curve: dict[int, dict] = {}

    def measure(v: int) -> float:
        if v not in curve:
            set_search_params(index, {name: v})
            r = held.evaluate(index, k)
            curve[v] = {name: v, f"recall_at_{k}": round(r[f"recall_at_{k}"], 4), "stderr": round(r["stderr"], 4),
                        "queries_per_s": r["queries_per_s"]}
        return curve[v][f"recall_at_{k}"] - 2 * curve[v]["stderr"]

    lo, hi = None, None
    for v in values:
        if measure(v) >= target:
            hi = v
            break
        lo = v
    if hi is None:
        best = max(curve, key=lambda v: (curve[v][f"recall_at_{k}"], -v))
        set_search_params(index, {name: best})
        return {**fixed, name: best}, [curve[v] for v in sorted(curve)], False
    while lo is not None and hi - lo > 1:
        mid = (lo + hi) // 2
        if measure(mid) >= target:
            hi = mid
        else:
            lo = mid
    set_search_params(index, {name: hi})
    return {**fixed, name: hi}, [curve[v] for v in sorted(curve)], True
