"""The automatic choice: trial every candidate on a sample of the data, predict its full-size speed, pick.

Each candidate (stages.ann.candidates) is built on a seeded sample of ``trial_size`` vectors (IVF list counts
scaled to the sample), its knob tuned to the target recall on held-out queries (data rows outside the
sample), and its recall and queries/s (best of TIMING_REPEATS searches) measured on other held-out queries,
next to exact search on the sample. Measured figures are then carried to the full size with a cost model (rough, and recorded as such):

    exact search      cost ~ n
    HNSW              search cost ~ log n; build ~ n log n
    IVF               search cost ~ (nlist [flat quantizer only] + nprobe * n / nlist); k-means training
                      ~ training points * nlist; adding ~ n * nlist (flat quantizer) or n (graph quantizer)

The winner: among the candidates that reached the target on the sample and whose predicted build time fits
the build budget, the one with the highest predicted queries/s. If none fits the budget, the quickest to
build that reached the target; if none reached it, the most accurate. Every candidate's figures go to
index_infos.json ("trials").

The cost model is only a guess where the sample's structure differs from the full data's (tight clusters
that a 20k sample leaves 4 points each), so the prediction is confirmed at full size (stages.ann.build): the
anchor (``anchor``: the candidate that reached the target and is quickest to build) is built first and
measured on held-out rows of all the data; the predicted winner is built only if its predicted speedup beats
the anchor's measured one, and kept only if its own measurement does.
"""

from __future__ import annotations

import math
import time
from typing import Any

import faiss
import numpy as np

from stages.ann.budget import nlist_for
from stages.ann.candidates import Candidate
from stages.ann.measure import HeldOut, held_out, timed_search
from stages.ann.params import last_line, set_build_params
from stages.ann.tune import tune

TRIAL_SIZE = 20_000  # vectors each candidate is built on in its trial
TRIAL_QUERIES = (300, 500)  # held-out queries: tuning, measuring
TIMING_REPEATS = 3  # speeds are the best of this many searches (other jobs on the machine only slow them)


def _seconds(index: faiss.Index, q: np.ndarray, k: int) -> float:
    return timed_search(index, q, k)[2]


def trial_nlist(c: Candidate, n_trial: int, n: int) -> int:
    """The candidate's list count scaled to the sample (same multiple of nlist_for), >= 39 points per list."""
    nl = max(1, int(round(c.nlist * nlist_for(n_trial) / nlist_for(n))))
    while nl > 1 and nl * 39 > n_trial:
        nl //= 2
    return nl


def train_points(nlist: int, n: int) -> int:
    """Vectors an IVF index is trained on: 40 per list, at least 20k, at most 300k (and at most n)."""
    return int(min(n, max(40 * nlist, 20_000), 300_000))


def predict(c: Candidate, fig: dict[str, Any], n_trial: int, n: int) -> tuple[float, float]:
    """(queries/s, build seconds) at n vectors from the figures measured at n_trial (see module doc)."""
    qps, train_s, add_s = fig["queries_per_s"], fig["train_seconds"], fig["add_seconds"]
    if c.family == "flat" or n == n_trial:
        return qps * n_trial / n, (train_s + add_s) * n / n_trial
    if c.family == "hnsw":
        grow = math.log(n) / math.log(max(n_trial, 2))
        return qps / grow, train_s + add_s * n / n_trial * grow
    nl_t, nl = fig["nlist"], c.nlist
    nprobe = fig["search_params"].get("nprobe", 1)
    quant_t, quant = (0, 0) if c.graph_quantizer else (nl_t, nl)
    cost_ratio = (quant + nprobe * n / nl) / max(quant_t + nprobe * n_trial / nl_t, 1e-9)
    assign = 1.0 if c.graph_quantizer else nl / nl_t
    train_ratio = (train_points(nl, n) * nl) / max(train_points(nl_t, n_trial) * nl_t, 1)
    return qps / cost_ratio, train_s * train_ratio + add_s * n / n_trial * assign


def run_trial(c: Candidate, sample: np.ndarray, tune_set: HeldOut, eval_set: HeldOut, metric_code: int, k: int,
              target: float, n: int) -> dict[str, Any]:
    """Build c on the sample, tune it, measure it; the figures at the sample size and predicted at n."""
    n_trial, d = sample.shape
    nl_t = trial_nlist(c, n_trial, n) if c.family == "ivf" else 0
    fig: dict[str, Any] = {"factory": c.label, "family": c.family, "estimated_bytes": c.estimated_bytes,
                           "note": c.note, "trial_factory": c.factory(nl_t) if nl_t else c.factory(), "nlist": nl_t}
    try:
        index = faiss.index_factory(d, fig["trial_factory"], metric_code)
        set_build_params(index, c.build_params)
        t0 = time.perf_counter()
        if not index.is_trained:
            index.train(sample[: train_points(nl_t, n_trial)] if nl_t else sample)
        t1 = time.perf_counter()
        index.add(sample)
        t2 = time.perf_counter()
        params, _, reached = tune(index, tune_set, k, target)
        ev = eval_set.evaluate(index, k)
        qps = max([ev["queries_per_s"]] + [len(eval_set.q) / max(_seconds(index, eval_set.q, k), 1e-9)
                                            for _ in range(TIMING_REPEATS - 1)])
    except RuntimeError as e:
        return {**fig, "error": last_line(e), "reached": False}
    fig.update(train_seconds=round(t1 - t0, 3), add_seconds=round(t2 - t1, 3), search_params=params,
               reached=bool(reached), recall=round(ev[f"recall_at_{k}"], 4), queries_per_s=round(qps, 1))
    qps, build_s = predict(c, fig, n_trial, n)
    fig.update(predicted_queries_per_s=round(qps, 1), predicted_build_seconds=round(build_s, 1))
    return fig


def choose(cands: list[Candidate], sample: np.ndarray, queries: np.ndarray, metric: str, metric_code: int,
           k: int, target: float, n: int, build_budget_s: float | None) -> tuple[Candidate, dict[str, Any]]:
    """Trial every candidate on the sample (queries: held-out data rows); (winner, the record for infos)."""
    if len(cands) == 1:
        return cands[0], {"reason": cands[0].note or "the only candidate within the budget", "trials": []}
    t_start = time.perf_counter()
    kk = min(k, len(sample))
    split = min(TRIAL_QUERIES[0], len(queries) // 3)
    none = np.full(len(queries), -1, dtype=np.int64)
    held = held_out(queries, none, sample, kk, metric)
    tune_set = HeldOut(held.q[:split], none[:split], held.truth[:split])
    eval_set = HeldOut(held.q[split:], none[split:], held.truth[split:])
    exact = faiss.IndexFlatIP(sample.shape[1]) if metric == "ip" else faiss.IndexFlatL2(sample.shape[1])
    exact.add(sample)
    ex_s = min(_seconds(exact, eval_set.q, kk) for _ in range(TIMING_REPEATS))
    exact_qps = len(eval_set.q) / max(ex_s, 1e-9)
    exact_full = exact_qps * len(sample) / n
    del exact
    trials = [run_trial(c, sample, tune_set, eval_set, metric_code, kk, target, n) for c in cands]
    for t in trials:
        if "predicted_queries_per_s" in t:
            t["predicted_speedup_vs_exact"] = round(t["predicted_queries_per_s"] / max(exact_full, 1e-9), 1)
            t["speedup_vs_exact"] = round(t["queries_per_s"] / max(exact_qps, 1e-9), 1)
    ok = [i for i, t in enumerate(trials) if t["reached"]]
    in_time = [i for i in ok if build_budget_s is None or trials[i]["predicted_build_seconds"] <= build_budget_s]
    budget_txt = "no build-time budget" if build_budget_s is None else f"build budget {build_budget_s:.0f} s"
    if in_time:
        win = max(in_time, key=lambda i: trials[i]["predicted_queries_per_s"])
        reason = (f"highest predicted queries/s at {n} vectors ({trials[win]['predicted_queries_per_s']:.0f}, "
                  f"{trials[win]['predicted_speedup_vs_exact']}x exact) among the {len(in_time)} candidate(s) that "
                  f"reached recall@{kk} {target} on the sample within the {budget_txt}")
    elif ok:
        win = min(ok, key=lambda i: trials[i]["predicted_build_seconds"])
        reason = (f"no candidate that reached recall@{kk} {target} is predicted to build within the {budget_txt}; "
                  f"the quickest to build ({trials[win]['predicted_build_seconds']:.0f} s predicted)")
    else:
        measured = [i for i, t in enumerate(trials) if "recall" in t] or [0]
        win = max(measured, key=lambda i: trials[i].get("recall", -1))
        reason = f"no candidate reached recall@{kk} {target} on the sample; the most accurate"
    for i, t in enumerate(trials):
        t["chosen"] = i == win
    record = {"reason": reason, "trials": trials, "trial_vectors": len(sample),
              "trial_queries": [len(tune_set.q), len(eval_set.q)],
              "trial_exact_queries_per_s": round(exact_qps, 1),
              "predicted_exact_queries_per_s": round(exact_full, 1), "build_budget_s": build_budget_s,
              "trial_seconds": round(time.perf_counter() - t_start, 3),
              "cost_model": "exact ~ n; HNSW search ~ log n, build ~ n log n; IVF search ~ nlist + nprobe n/nlist"}
    return cands[win], record


def anchor(trials: list[dict[str, Any]], build_budget_s: float | None) -> int | None:
    """The trial to build and measure first at full size: reached the target, quickest to build (within the
    budget when any is); None when it is the predicted winner itself or no candidate reached the target."""
    ok = [i for i, t in enumerate(trials) if t.get("reached")]
    in_time = [i for i in ok if build_budget_s is None or trials[i]["predicted_build_seconds"] <= build_budget_s]
    pool = in_time or ok
    if not pool:
        return None
    first = min(pool, key=lambda i: trials[i]["predicted_build_seconds"])
    return None if trials[first].get("chosen") else first
