"""Building an index: choose (or take) a type, train and fill it block by block, tune it, measure it.

Two passes over the vector source: the first collects a seeded sample (training rows, the automatic
choice's trial sample and queries, the held-out queries), validating every vector; the second adds every
block to the index while exact search over the same blocks gives the held-out queries' true neighbours.

GPU: when FAISS sees one (device auto or gpu), the index is trained and filled there
(``index_cpu_to_all_gpus``) and converted back to CPU to be saved and measured; graph (HNSW) indices have no
FAISS GPU version and are built on CPU. Any GPU error falls back to a CPU build; index_infos.json records
the device used and why ("device", "gpus", "gpu_fallback").
"""

from __future__ import annotations

import time
from typing import Any

import faiss
import numpy as np

from stages.ann import gpu
from stages.ann.budget import parse_memory
from stages.ann.candidates import FLAT_MAX, candidates
from stages.ann.choose import TRIAL_QUERIES, TRIAL_SIZE, anchor, choose, train_points
from stages.ann.measure import ExactTopK, HeldOut
from stages.ann.params import is_hnsw, last_line, set_build_params
from stages.ann.tune import tune
from stages.ann.vectors import VectorSource, check_metric, collect, prepare
from stages.contract.errors import VtpipeError

DEFAULT_TARGET_RECALL = 0.95
OPQ_NITER = 20  # OPQ rotation training iterations (FAISS default 50; most of the gain comes early)


def limit_opq(index: faiss.Index, niter: int | None = None) -> None:
    top = faiss.downcast_index(index)
    if isinstance(top, faiss.IndexPreTransform):
        for i in range(top.chain.size()):
            vt = faiss.downcast_VectorTransform(top.chain.at(i))
            if isinstance(vt, faiss.OPQMatrix):
                vt.niter = min(vt.niter, OPQ_NITER if niter is None else niter)


def train_size(index: faiss.Index, n: int) -> int:
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        return train_points(ivf.nlist, n)
    return int(min(n, 100_000)) if not index.is_trained else 0


def _make(d: int, factory: str, metric_code: int, build_params: dict) -> faiss.Index:
    try:
        index = faiss.index_factory(d, factory, metric_code)
    except RuntimeError as e:
        raise VtpipeError(f"FAISS cannot make index {factory!r} for dimension {d}: {last_line(e)}") from e
    limit_opq(index)
    set_build_params(index, build_params)
    return index


def _populate(index: faiss.Index, train: np.ndarray, source: VectorSource, metric: str, batch: int,
              exact: ExactTopK, where: str, later: np.ndarray) -> dict[str, float]:
    """Train, then add every row but the sorted rows `later` (the held-out queries, added after tuning)."""
    t0 = time.perf_counter()
    if not index.is_trained:
        index.train(train)
    t1 = time.perf_counter()
    a = added = 0
    exact.seconds = 0.0
    for block in source.blocks(batch):
        b = a + len(block)
        block = prepare(block, metric, where, first_row=a)
        lo, hi = np.searchsorted(later, [a, b])
        if hi > lo:
            keep = np.ones(len(block), dtype=bool)
            keep[later[lo:hi] - a] = False
            block = block[keep]
        index.add(block)
        exact.add(block, added)
        a, added = b, added + len(block)
    t2 = time.perf_counter()
    return {"train_seconds": round(t1 - t0, 3), "add_seconds": round(t2 - t1 - exact.seconds, 3)}


class _Known:
    """Stands in for ExactTopK when the true neighbours are already known (a second full-size build)."""

    seconds = 0.0

    def add(self, block: np.ndarray, first_row: int) -> None:
        pass


def _fill(factory: str, make, train, source, metric, batch, queries, exact_k, where, device, gpus, later,
          known: ExactTopK | None = None):
    """Train and fill, on GPU when asked and possible; (index on CPU, timings, exact, used, fallback).
    known: exact neighbours from an earlier pass, reused instead of searched again."""
    cpu_index = make()
    used, fallback = "cpu", None
    if gpus > 0 and is_hnsw(cpu_index):
        fallback = "HNSW has no FAISS GPU version; built on CPU"
    elif gpus > 0:
        exact = known or ExactTopK(queries, exact_k, metric)
        try:
            gindex = gpu.to_gpu(cpu_index)
            timings = _populate(gindex, train, source, metric, batch, _Known() if known else exact, where, later)
            t_conv = time.perf_counter()
            index = gpu.to_cpu(gindex)
            timings["gpu_to_cpu_seconds"] = round(time.perf_counter() - t_conv, 3)
            return index, timings, exact, "gpu", None
        except (RuntimeError, AttributeError) as e:  # no GPU version, out of GPU memory, no GPU support...
            if device == "gpu":
                raise VtpipeError(f"GPU build of {factory!r} failed: {last_line(e)}") from e
            fallback = f"GPU build failed, built on CPU instead: {last_line(e)}"
            cpu_index = make()
    exact = known or ExactTopK(queries, exact_k, metric)
    try:
        timings = _populate(cpu_index, train, source, metric, batch, _Known() if known else exact, where, later)
    except RuntimeError as e:  # e.g. "IDMap,Flat" wants explicit ids; vtpipe keeps ids in ids.json
        raise VtpipeError(f"FAISS could not train/fill index {factory!r}: {last_line(e)}") from e
    return cpu_index, timings, exact, used, fallback


def build(
    source: VectorSource,
    factory: str = "auto",
    metric: str = "ip",
    max_memory: str | int = "4G",
    target_recall: float = DEFAULT_TARGET_RECALL,
    k: int = 10,
    seed: int = 0,
    n_tune: int = 500,
    n_eval: int = 1000,
    batch: int = 65536,
    device: str = "auto",
    where: str = "vectors",
    queries: np.ndarray | None = None,
    build_budget_s: float | None = None,
    trial_size: int = TRIAL_SIZE,
    flat_max: int = FLAT_MAX,
) -> tuple[faiss.Index, dict[str, Any]]:
    """Build, tune and measure an index over `source`. Returns (CPU index with tuned params, infos).

    factory: "auto" (trial the candidates on a sample, see stages.ann.choose) or a FAISS factory string.
    queries: optional held-out query vectors [Q, d] for tuning and measuring the built index (e.g. caption
    features for a text-to-video index). Default: gallery rows, self excluded. The automatic choice always
    trials on rows of the data itself.
    build_budget_s: predicted build time a candidate may need (auto only; None: no limit).
    """
    t_start = time.perf_counter()
    fmetric = check_metric(metric)
    n, d = int(source.n), int(source.d)
    if n == 0:
        raise VtpipeError(f"{where} holds no vectors: nothing to index")
    if not 0 < target_recall <= 1:
        raise VtpipeError(f"target recall must be in (0, 1], got {target_recall}")
    if device not in ("auto", "cpu", "gpu"):
        raise VtpipeError(f"device must be auto, cpu or gpu, got {device!r}")
    gpus = gpu.num_gpus() if device != "cpu" else 0
    if device == "gpu" and gpus == 0:
        raise VtpipeError("device 'gpu' asked for, but FAISS sees no GPU (faiss-gpu installed? CUDA visible?)")
    budget = parse_memory(max_memory)
    infos: dict[str, Any] = {"requested": factory, "max_memory": budget}
    cands, rejected = candidates(n, d, budget, flat_max) if factory == "auto" else ([], [])
    trialling = len(cands) > 1

    # pass 1: one seeded permutation gives disjoint held-out queries, trial sample and trial queries
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    own_queries = queries is None
    nq = min(n // 4, n_tune + n_eval) if own_queries else 0  # 3/4 of the rows at least stay in the index
    q_all = perm[:nq]
    rest = perm[nq:]
    n_trial_q = sum(TRIAL_QUERIES) if trialling else 0
    n_trial = min(trial_size, len(rest) - n_trial_q) if trialling else 0
    trial_q_rows, trial_rows = rest[:n_trial_q], rest[n_trial_q : n_trial_q + n_trial]
    train_max = max([train_points(c.nlist, n) if c.family == "ivf" else 0 for c in cands] + [100_000])
    train_rows = perm[: min(n, train_max)]
    want = np.unique(np.concatenate([q_all, trial_q_rows, trial_rows, train_rows]))
    got = collect(source, metric, want, batch, where)

    def rows(r: np.ndarray) -> np.ndarray:
        return got[np.searchsorted(want, r)]

    if trialling:
        if n_trial < 2 * max(TRIAL_QUERIES):
            raise VtpipeError(f"trial sample of {n_trial} vectors is too small; raise trial_size or flat_max")
        winner, record = choose(cands, rows(trial_rows), rows(trial_q_rows), metric, fmetric, k, target_recall,
                                n, build_budget_s)
    elif cands:
        winner, record = cands[0], {"reason": cands[0].note, "trials": []}
    first = anchor(record["trials"], build_budget_s) if trialling else None
    plan = [cands[first], winner] if first is not None else [winner] if cands else []
    if cands:
        infos.update(choice_reason=record.pop("reason"), choice={**record, "over_memory": rejected})

    if own_queries:
        queries = rows(q_all)
        query_source = "gallery rows, held out of the index while tuning and measuring"
    else:
        queries = np.asarray(queries)
        if queries.ndim != 2 or queries.shape[1] != d:
            raise VtpipeError(f"tuning queries have shape {queries.shape}; the vectors have dimension {d}")
        pick = np.sort(rng.choice(len(queries), size=min(len(queries), n_tune + n_eval), replace=False))
        queries = prepare(queries[pick], metric, "tuning queries")
        q_all = np.full(len(queries), -1, dtype=np.int64)  # not gallery rows: nothing to exclude
        query_source = "external"
    specs = [(c.factory(), dict(c.build_params)) for c in plan] or [(factory, {})]
    trains = [rows(np.sort(train_rows[: train_size(_make(d, f, fmetric, bp), n)])) for f, bp in specs]
    got = None  # the sample is no longer needed
    later = np.sort(q_all) if own_queries else np.zeros(0, dtype=np.int64)
    kk = min(k, n - len(later))
    # tuning and measurement on disjoint held-out queries, which are not in the index yet: a graph index
    # would otherwise find each query's own node and, through its links, its neighbours (too easy)
    split = int(round(len(queries) * n_tune / (n_tune + n_eval))) if len(queries) > 1 else 0

    def full_size(spec_i: int, earlier: dict[str, Any] | None = None) -> dict[str, Any]:
        """Pass 2 for one type: train and add (on GPU when there is one), exact neighbours alongside (or those
        of an earlier full-size build, reused), tune, measure."""
        f, bp = specs[spec_i]
        known = earlier["exact"] if earlier else None
        index, timings, exact, used, fallback = _fill(
            f, lambda: _make(d, f, fmetric, bp), trains[spec_i], source, metric, batch, queries, kk, where, device,
            gpus, later, known)
        if index.ntotal != n - len(later):
            raise VtpipeError(f"{where}: index holds {index.ntotal} vectors, expected {n - len(later)}")
        none = np.full(len(queries), -1, dtype=np.int64)
        tune_set = HeldOut(queries[:split], none[:split], exact.I[:split])
        eval_set = HeldOut(queries[split:], none[split:], exact.I[split:])
        t_tune = time.perf_counter()
        params, curve, reached = tune(index, tune_set, kk, target_recall)
        tune_seconds = time.perf_counter() - t_tune
        ev = eval_set.evaluate(index, kk)
        exact_qps = earlier["exact_qps"] if earlier else len(queries) / max(exact.seconds, 1e-9)
        return {"index": index, "timings": timings, "exact": exact, "used": used, "fallback": fallback,
                "params": params, "curve": curve, "reached": reached, "ev": ev, "tune_seconds": tune_seconds,
                "exact_qps": exact_qps, "tune_n": len(tune_set.q), "eval_n": len(eval_set.q),
                "speedup": ev["queries_per_s"] / max(exact_qps, 1e-9), "spec": spec_i}

    built = full_size(0)
    if len(plan) == 2:  # confirm the predicted winner against the anchor, measured at full size
        trials = record["trials"]
        win_i = next(i for i, t in enumerate(trials) if t.get("chosen"))
        a_t, w_t = trials[first], trials[win_i]
        confirm = {"anchor": a_t["factory"], "anchor_reached": bool(built["reached"]),
                   "anchor_speedup_vs_exact": round(built["speedup"], 2),
                   "anchor_recall": round(built["ev"][f"recall_at_{kk}"], 4),
                   "anchor_build_seconds": round(sum(built["timings"].values()), 3),
                   "predicted": w_t["factory"], "predicted_speedup_vs_exact": w_t["predicted_speedup_vs_exact"]}
        if built["reached"] and built["speedup"] >= w_t["predicted_speedup_vs_exact"]:
            keep = first
            verdict = (f"{a_t['factory']} (quickest to build) measured {built['speedup']:.1f}x exact at full size, "
                       f"more than the {w_t['predicted_speedup_vs_exact']}x predicted for {w_t['factory']}: "
                       f"{w_t['factory']} not built")
        else:
            anchor_fig = built
            built = None  # free the anchor before the next build
            anchor_fig.pop("index")
            other = full_size(1, anchor_fig)
            confirm.update(predicted_reached=bool(other["reached"]),
                           predicted_measured_speedup_vs_exact=round(other["speedup"], 2))
            if other["reached"] and (other["speedup"] >= anchor_fig["speedup"] or not anchor_fig["reached"]):
                keep, built = win_i, other
                verdict = (f"{w_t['factory']} measured {other['speedup']:.1f}x exact at full size (recall reached), "
                           f"against {anchor_fig['speedup']:.1f}x for {a_t['factory']}: kept")
            elif not other["reached"] and not anchor_fig["reached"]:
                if other["ev"][f"recall_at_{kk}"] >= anchor_fig["ev"][f"recall_at_{kk}"]:
                    keep, built = win_i, other
                else:
                    keep, built = first, full_size(0, anchor_fig)
                verdict = "neither reached the target at full size: the more accurate kept"
            else:
                keep = first
                other = None  # free the winner before the anchor is built again
                built = full_size(0, anchor_fig)  # the anchor is the quickest to build: built again
                verdict = (f"{w_t['factory']} measured {confirm['predicted_measured_speedup_vs_exact']}x exact at "
                           f"full size (target {'reached' if confirm['predicted_reached'] else 'missed'}), "
                           f"against {anchor_fig['speedup']:.1f}x for {a_t['factory']}: {a_t['factory']} rebuilt "
                           "and kept")
        for i, t in enumerate(trials):
            t["chosen"], t["predicted_best"] = i == keep, i == win_i
        confirm["verdict"] = verdict
        infos["choice"]["full_size_check"] = confirm
        infos["choice_reason"] += f"; checked at full size: {verdict}"
    build_params: dict[str, Any] = {}
    kept = plan[built["spec"]] if plan else None
    if kept is not None:
        factory, build_params = kept.factory(), dict(kept.build_params)
        infos.update(estimated_bytes=kept.estimated_bytes, build_params=build_params)
    index, timings, used, fallback = (built[x] for x in ("index", "timings", "used", "fallback"))
    params, curve, reached, ev, tune_seconds = (built[x] for x in ("params", "curve", "reached", "ev",
                                                                  "tune_seconds"))
    exact_qps = built["exact_qps"]
    trains.clear()
    if len(later):  # the held-out rows join the index last: index row i is source row index_order(...)[i]
        index.add(queries[np.argsort(q_all, kind="stable")])
    if index.ntotal != n:
        raise VtpipeError(f"{where}: index holds {index.ntotal} vectors, expected {n}")
    infos.update({
        "factory": factory,
        "index_type": type(faiss.downcast_index(index)).__name__,
        "metric": metric,
        "normalised": metric == "ip",
        "vectors": n,
        "dim": d,
        "search_params": params,
        "target_recall": target_recall,
        "target_reached": reached,
        "tuning_curve": curve,
        "query_source": query_source,
        "rows_added_last": [int(r) for r in later],
        "tuning_queries": built["tune_n"],
        "recall_queries": built["eval_n"],
        "recall_k": kk,
        "recall_at_1": round(ev["recall_at_1"], 4),
        f"recall_at_{kk}": round(ev[f"recall_at_{kk}"], 4),
        "queries_per_s": ev["queries_per_s"],
        "exact_queries_per_s": round(exact_qps, 1),
        "speedup_vs_exact": round(ev["queries_per_s"] / max(exact_qps, 1e-9), 2),
        "device": used,
        "measured_on": "cpu",  # recall and queries/s: the CPU form that is saved
        "gpus": gpus,
        "gpu_fallback": fallback,
        "seed": seed,
        "tune_seconds": round(tune_seconds, 3),
        "build_seconds": round(time.perf_counter() - t_start, 3),
        "faiss_version": faiss.__version__,
        **timings,
    })
    if kk != k:  # fewer than k+1 vectors: recall is measured at the largest possible k
        infos[f"recall_at_{k}"] = infos[f"recall_at_{kk}"]
    return index, infos


def index_order(n: int, infos: dict[str, Any]) -> np.ndarray:
    """Source row of each index row: the rows held out for tuning were added last (infos "rows_added_last")."""
    last = np.asarray(infos.get("rows_added_last", []), dtype=np.int64)
    if not len(last):
        return np.arange(n)
    keep = np.ones(n, dtype=bool)
    keep[last] = False
    return np.concatenate([np.flatnonzero(keep), last])


def add_vectors(index: faiss.Index, source: VectorSource, metric: str, batch: int = 65536,
                where: str = "vectors") -> int:
    """Append a source's vectors to a trained index (validated and normalised like a build). Returns n added."""
    if source.d != index.d:
        raise VtpipeError(f"{where} has dimension {source.d}, the index has {index.d}")
    added = 0
    for block in source.blocks(batch):
        index.add(prepare(block, metric, where, first_row=added))
        added += len(block)
    return added
