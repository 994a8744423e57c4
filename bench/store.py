"""Feature store throughput against plain numpy files, and random access to one video out of many.

    python bench/store.py                 # 20k videos x ~20 frames x 512-d
    python bench/store.py --videos 100000 --frames 10

Writes the same ragged arrays (a) through VideoStoreWriter (one add() per video, as the extractor does) and
(b) as numpy.save of the concatenated arrays (the fastest possible dump, no per-video structure), then reads
them back whole, and opens single videos by id. Prints; never asserts.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stages.features.store import VideoStore, VideoStoreWriter  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=20000)
    ap.add_argument("--frames", type=int, default=20, help="mean frames per video (uniform 1..2x)")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--lookups", type=int, default=200)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    counts = rng.integers(1, 2 * args.frames, size=args.videos)
    total = int(counts.sum())
    units = rng.standard_normal((total, args.dim), dtype=np.float32)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    pooled = rng.standard_normal((args.videos, args.dim), dtype=np.float32)
    ids = [f"dir{i % 100}/video{i}" for i in range(args.videos)]
    gib = units.nbytes / 2**30
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as d:
        d = Path(d)
        t0 = time.perf_counter()
        w = VideoStoreWriter(d / "s.h5", args.dim, {"model": "bench"})
        for i, vid in enumerate(ids):
            a, b = offsets[i], offsets[i + 1]
            w.add(vid, units[a:b], np.arange(b - a) / 3.0, None, pooled[i])
        w.close()
        t_store_w = time.perf_counter() - t0

        t0 = time.perf_counter()
        np.save(d / "units.npy", units)
        np.save(d / "offsets.npy", offsets)
        np.save(d / "pooled.npy", pooled)
        t_np_w = time.perf_counter() - t0

        t0 = time.perf_counter()
        with VideoStore(d / "s.h5") as s:
            got = s.unit_features()
        t_store_r = time.perf_counter() - t0
        assert got.shape == units.shape
        t0 = time.perf_counter()
        got = np.load(d / "units.npy")
        t_np_r = time.perf_counter() - t0

        t0 = time.perf_counter()
        s = VideoStore(d / "s.h5")
        t_open = time.perf_counter() - t0
        picks = rng.integers(0, args.videos, size=args.lookups)
        t0 = time.perf_counter()
        for i in picks:
            v = s.get(ids[i])
            assert len(v.unit_features) == counts[i]
        t_get = (time.perf_counter() - t0) / args.lookups
        s.close()
        size = (d / "s.h5").stat().st_size / 2**30

    print(f"{args.videos} videos, {total} units x {args.dim}-d float32 = {gib:.2f} GiB (store file {size:.2f} GiB)")
    print(f"write: store {gib / t_store_w:6.2f} GiB/s ({t_store_w:.1f} s, one add() per video)   "
          f"numpy.save {gib / t_np_w:6.2f} GiB/s ({t_np_w:.1f} s)   ratio {t_store_w / t_np_w:.2f}x")
    print(f"read:  store {gib / t_store_r:6.2f} GiB/s ({t_store_r:.1f} s)   numpy.load {gib / t_np_r:6.2f} GiB/s "
          f"({t_np_r:.1f} s)   ratio {t_store_r / t_np_r:.2f}x")
    print(f"open store (reads {args.videos} ids): {t_open * 1000:.0f} ms;  one video by id: {t_get * 1000:.2f} ms "
          f"(mean of {args.lookups} random lookups)")


if __name__ == "__main__":
    main()
