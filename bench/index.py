"""Benchmark the index stage's automatic index against exact search on two data sets, in one run.

    .venv/bin/python bench/index.py                       # 1M x 512 each (needs ~8 GB RAM; hours on 2 busy cores)
    .venv/bin/python bench/index.py --n 100000            # quicker
    .venv/bin/python bench/index.py --data synthetic      # one data set

synthetic: FAISS's own ``faiss.contrib.datasets.SyntheticDataset`` (d, nt=0, nb=n, nq=1000, seed 1338: a
10-d manifold bent into d dimensions by sines), regenerated block by block with the same random draws (checked
equal to FAISS's class at a small size first), database and queries L2-normalised, inner product.
clustered: seeded Gaussian clusters (cluster sizes drawn from a Dirichlet; each cluster's isotropic spread
drawn from --spread, in units of the centres' scale), L2-normalised; queries are fresh points from the same
clusters, not in the index.

For each: the automatic index is built by the stage (trials on a sample, tuned for recall@10 >= target on its
own held-out rows), saved, loaded; it and exact search (IndexFlatIP) answer the same batch of queries with
--threads threads; recall is measured against the exact answers. Reported: choice and why, build time,
index size and the process's peak memory, recall@1/@k, queries/s and the speedup.
Goals: synthetic >= 0.95 at >= 50x exact; clustered >= 0.95 at >= 20x, within --max-memory.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stages.ann.budget import parse_memory

from stages.ann.build import build, index_order

from stages.ann.gpu import num_gpus

from stages.ann.io import load_index, write_index_dir

from stages.ann.measure import recall_at

from stages.ann.vectors import ArrayVectors
def clustered(n: int, d: int, clusters: int, seed: int, n_queries: int,
              spread_range: tuple[float, float] = (0.5, 1.0)) -> tuple[np.ndarray, np.ndarray]:
    """(gallery [n, d], queries [n_queries, d]), both L2-normalised float32, from the same clusters."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d), dtype=np.float32)
    spread = rng.uniform(*spread_range, clusters).astype(np.float32)
    weights = rng.dirichlet(np.full(clusters, 2.0))
    total = n + n_queries
    labels = rng.choice(clusters, size=total, p=weights)
    out = np.empty((total, d), dtype=np.float32)
    step = 65536
    for a in range(0, total, step):
        b = min(a + step, total)
        lab = labels[a:b]
        block = rng.standard_normal((b - a, d), dtype=np.float32)
        block *= spread[lab, None]
        block += centres[lab]
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[a:b] = block
    perm = rng.permutation(total)  # queries: a random subset, held out of the gallery
    q_rows = np.sort(perm[:n_queries])
    keep = np.ones(total, dtype=bool)
    keep[q_rows] = False
    return out[keep], out[q_rows]


def synthetic(n: int, d: int, n_queries: int, seed: int = 1338, step: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """FAISS's SyntheticDataset(d, 0, n, n_queries, seed) database and queries, L2-normalised, built in blocks
    (FAISS's class holds the whole float64 matrix at once: ~3x the memory)."""
    total = n + n_queries
    rs = np.random.RandomState(seed)  # the same draws, in the same order, as faiss.contrib.datasets
    z = rs.normal(size=(total, 10))
    proj = rs.rand(10, d)
    scale = rs.rand(d) * 4 + 0.1
    out = np.empty((total, d), dtype=np.float32)
    for a in range(0, total, step):
        out[a : a + step] = np.sin(np.dot(z[a : a + step], proj) * scale)
    del z
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out[:n], out[n:]


def check_synthetic_matches_faiss() -> None:
    from faiss.contrib.datasets import SyntheticDataset

    ds = SyntheticDataset(64, 0, 3000, 50, metric="IP")
    xb, xq = synthetic(3000, 64, 50, step=700)
    ref_b, ref_q = ds.get_database(), ds.get_queries()
    ref_b = ref_b / np.linalg.norm(ref_b, axis=1, keepdims=True)
    ref_q = ref_q / np.linalg.norm(ref_q, axis=1, keepdims=True)
    if not (np.array_equal(xb, ref_b) and np.array_equal(xq, ref_q)):
        raise SystemExit("the block-wise SyntheticDataset differs from faiss.contrib.datasets'")


def peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def best_of(fn, repeat: int) -> tuple[float, object]:
    best, res = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        res = fn()
        best = min(best, time.perf_counter() - t0)
    return best, res


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run_one(name: str, x: np.ndarray, q: np.ndarray, args) -> dict:
    t0 = time.perf_counter()
    index, infos = build(ArrayVectors(x), args.index, "ip", args.max_memory, target_recall=args.target,
                            k=args.k, seed=args.seed, build_budget_s=args.build_budget)
    build_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        infos = write_index_dir(tmp, index, list(range(index.ntotal)), infos)
        loaded = load_index(tmp)  # the tuned parameters as a user gets them
    del index
    order = index_order(len(x), infos)  # index row -> row of x
    print(f"[{name}] index: {infos['factory']} {infos.get('build_params') or ''} search params "
          f"{infos['search_params']}, device {infos['device']}")
    print(f"[{name}] why: {infos.get('choice_reason', 'requested')}")
    for t in infos.get("choice", {}).get("trials", []):
        print(f"[{name}]   trial {t['factory']:<28} recall {t.get('recall')} {t.get('search_params')} "
              f"{t.get('speedup_vs_exact')}x on {infos['choice']['trial_vectors']}; predicted "
              f"{t.get('predicted_speedup_vs_exact')}x, build {t.get('predicted_build_seconds')} s"
              f"{' <- chosen' if t.get('chosen') else ''}{' ERROR ' + t['error'] if 'error' in t else ''}")
    print(f"[{name}] build: {build_s:.1f}s (trials {infos.get('choice', {}).get('trial_seconds', 0)}s, train "
          f"{infos['train_seconds']}s, add {infos['add_seconds']}s, tune {infos['tune_seconds']}s)")
    print(f"[{name}] size: {infos['size_bytes'] / 2**20:.1f} MiB (raw float32 vectors: {x.nbytes / 2**20:.1f} MiB; "
          f"budget {parse_memory(args.max_memory) / 2**20:.0f} MiB); peak RSS so far {peak_rss_mib():.0f} MiB")
    print(f"[{name}] stage's own measurement (held-out rows): recall@{args.k} {infos[f'recall_at_{args.k}']}, "
          f"{infos['speedup_vs_exact']}x exact")
    exact = faiss.IndexFlatIP(x.shape[1])
    exact.add(x)
    k = args.k
    t_ix, (_, got) = best_of(lambda: loaded.search(q, k), 3)
    t_ex, (_, truth) = best_of(lambda: exact.search(q, k), 1)
    exact = loaded = None  # free the memory
    got = np.where(got >= 0, order[np.maximum(got, 0)], -1)
    r1 = float(np.mean(got[:, 0] == truth[:, 0]))
    rk = recall_at(got, truth, k)
    qps_ix, qps_ex = len(q) / t_ix, len(q) / t_ex
    speed = qps_ix / qps_ex
    goal = args.goal_synthetic if name == "synthetic" else args.goal_clustered
    fits = infos["size_bytes"] <= parse_memory(args.max_memory)
    ok = rk >= 0.95 and speed >= goal and fits
    print(f"[{name}] same {len(q)}-query batch, k={k}, {args.threads} threads:")
    print(f"[{name}]   exact IndexFlatIP : {qps_ex:10.1f} q/s  ({t_ex:.2f}s)")
    print(f"[{name}]   {infos['factory']:<18}: {qps_ix:10.1f} q/s  ({t_ix:.3f}s)  recall@1 {r1:.4f}  "
          f"recall@{k} {rk:.4f}")
    print(f"[{name}]   speedup {speed:.1f}x; goal recall@{k} >= 0.95 at >= {goal:.0f}x within the memory budget: "
          f"{'met' if ok else 'NOT met'}", flush=True)
    return {"data": name, "factory": infos["factory"], "recall": rk, "speedup": speed, "build_s": build_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--data", default="synthetic,clustered", help="which data sets, comma-separated")
    ap.add_argument("--clusters", type=int, default=5000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--index", default="auto", help="auto or a FAISS factory string")
    ap.add_argument("--max-memory", default="4G")
    ap.add_argument("--build-budget", type=float, default=None, help="seconds a candidate may take to build")
    ap.add_argument("--target", type=float, default=0.95, help="recall@k the tuning aims for")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--spread", default="0.5,1.0", help="clustered: range of the clusters' spreads, LO,HI")
    ap.add_argument("--goal-synthetic", type=float, default=50.0)
    ap.add_argument("--goal-clustered", type=float, default=20.0)
    args = ap.parse_args()

    faiss.omp_set_num_threads(args.threads)
    print(f"machine: {cpu_name()}, {os.cpu_count()} cpus visible, load average {os.getloadavg()[0]:.1f}, faiss "
          f"{faiss.__version__} using {args.threads} threads, GPUs seen by faiss: {num_gpus()}")
    results = []
    for name in args.data.split(","):
        t0 = time.perf_counter()
        if name == "synthetic":
            check_synthetic_matches_faiss()
            x, q = synthetic(args.n, args.d, args.queries)
            what = "FAISS SyntheticDataset, seed 1338"
        elif name == "clustered":
            lo, hi = (float(v) for v in args.spread.split(","))
            x, q = clustered(args.n, args.d, args.clusters, args.seed, args.queries, (lo, hi))
            what = f"{args.clusters} clusters, spread {lo}..{hi}"
        else:
            raise SystemExit(f"unknown data set {name!r}: synthetic or clustered")
        print(f"[{name}] data: {len(x)} x {args.d} gallery, {len(q)} queries not in it, {what} "
              f"(generated in {time.perf_counter() - t0:.1f}s)", flush=True)
        results.append(run_one(name, x, q, args))
        del x, q
    print(f"load average at the end {os.getloadavg()[0]:.1f}; peak RSS {peak_rss_mib():.0f} MiB")
    for r in results:
        print(f"summary {r['data']}: {r['factory']} recall@{args.k} {r['recall']:.4f} at {r['speedup']:.1f}x exact, "
              f"build {r['build_s']:.0f} s")


if __name__ == "__main__":
    main()
