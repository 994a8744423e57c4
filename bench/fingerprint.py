"""Re-planning a big run: content identities of 100k input videos, cold (nothing cached) and warm.

    python bench/fingerprint.py                     # 100k sparse files of 0.2-40 MB
    python bench/fingerprint.py --videos 20000

Generates N sparse files (a few random bytes at the start, the middle and the end; the rest holes) in a
temporary folder, then times, each in a fresh state of this process (no in-memory memo):
  stat only      os.stat of every file (what an mtime fingerprint costs: the floor)
  cold           identities with an empty identity cache (hash 3 x 64 KiB per file + write the cache)
  warm           identities again, from the on-disk cache (stat + lookup)
  discover       listing the input folder into (id, path) pairs (no identities): part of every plan
  plan warm      `compress.plan` + `extract.plan` of a 2-stage run over the folder (discovery, identities,
                 task fingerprints): what `vtpipe status` / `vtpipe run` pay before any work
The file data is in the page cache after generation (a cluster file system that must fetch the blocks makes
"cold" slower; "warm" does not read file data). Prints; never asserts.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_files(folder: Path, n: int, seed: int = 0) -> list[Path]:
    import random

    rnd = random.Random(seed)
    paths = []
    for i in range(n):
        d = folder / f"d{i // 1000:03d}"
        if i % 1000 == 0:
            d.mkdir()
        p = d / f"video{i:06d}.mp4"
        size = rnd.randint(200_000, 40_000_000)
        with open(p, "wb") as f:
            f.truncate(size)
            for at in (0, size // 2, size - 16):
                f.seek(at)
                f.write(rnd.randbytes(16))
        paths.append(p)
    return paths


def fresh_process_state() -> None:
    from stages.features import identity
    identity.forget_memo()
    identity._cache = None  # reopen the SQLite file as a new process would


def timed(label: str, fn, n: int) -> float:
    fresh_process_state()
    t0 = time.perf_counter()
    fn()
    dt = time.perf_counter() - t0
    print(f"{label:<12} {dt:8.2f} s   {1e6 * dt / n:8.1f} us/video")
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=100_000)
    ap.add_argument("--shards", type=int, default=100, help="extract shards (tasks) in the plan")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="vtpipe-bench-fp-") as tmp:
        tmp = Path(tmp)
        os.environ["VTPIPE_CACHE_DIR"] = str(tmp / "cache")
        from pipeline import config as config_mod
        from stages import compress, extract, identity
        from stages.contract.layout import Layout

        t0 = time.perf_counter()
        (tmp / "videos").mkdir()
        paths = make_files(tmp / "videos", args.videos)
        print(f"generated {len(paths)} sparse files in {time.perf_counter() - t0:.1f} s")
        n = len(paths)
        timed("stat only", lambda: [os.stat(p) for p in paths], n)
        timed("cold", lambda: identity.identities(paths), n)
        timed("warm", lambda: identity.identities(paths), n)
        cfg = config_mod.resolve({"stages": ["compress", "extract"], "input": {"videos": str(tmp / "videos")},
                                  "extract": {"shards": args.shards}})
        layout = Layout(tmp / "run")
        timed("discover", lambda: compress.source_videos(cfg), n)
        tasks = []
        timed("plan warm", lambda: tasks.extend(compress.plan(cfg, layout) + extract.plan(cfg, layout)), n)
        print(f"({len(tasks)} tasks; cache file {(tmp / 'cache/identity.sqlite3').stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
