"""Extraction throughput: the whole engine (decode + preprocess in worker processes, batching, encode, pool)
as a ratio to the bare model forward on the same number of frames, same batch size, in the same run.

    python bench/extract.py --quick            # shapes-tiny-free: CLIP ViT-B/32 (random weights), few videos
    python bench/extract.py --videos 16 --seconds 20 --batch-size 64 --decode-workers 1

A ratio near 1 means decoding is hidden behind compute (the goal: >= 0.9). Prints, never asserts.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="clip-vit-b-32")
    ap.add_argument("--videos", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--decode-workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: cores - decode workers, >= 1)")
    ap.add_argument("--quick", action="store_true", help="4 videos of 6 s")
    args = ap.parse_args()
    if args.quick:
        args.videos, args.seconds = 4, 6.0

    from stages.backbones.registry import load_model
    from stages.features.engine import run_engine
    from video_factory import make_testsrc_video

    threads = args.threads or max(1, (os.cpu_count() or 2) - args.decode_workers)
    torch.set_num_threads(threads)
    torch.set_grad_enabled(False)
    model = load_model(args.model, allow_random=True)
    policy = model.info.sampling
    with tempfile.TemporaryDirectory() as d:
        videos = []
        for i in range(args.videos):
            p = make_testsrc_video(Path(d) / f"v{i}.mp4", args.seconds, width=320, height=240, fps=30)
            videos.append((f"v{i}", str(p)))

        # warm-up (first forward allocates)
        pre = model.preprocess()
        x = torch.from_numpy(pre(np.zeros((args.batch_size, 240, 320, 3), np.uint8)))
        model.encode_units(x)

        t0 = time.perf_counter()
        stats = run_engine(model, videos, policy, lambda *a: None, lambda *a: None,
                           batch_size=args.batch_size, decode_workers=args.decode_workers)
        engine_s = time.perf_counter() - t0
        units = int(stats["units"])

        # the bound: bare forward passes over the same number of units, same batch size
        t0 = time.perf_counter()
        done = 0
        while done < units:
            n = min(args.batch_size, units - done)
            model.encode_units(x[:n])
            done += n
        bare_s = time.perf_counter() - t0

    engine_fps, bare_fps = units / engine_s, units / bare_s
    print(f"model {args.model} (random weights), {args.videos} videos x {args.seconds:.0f} s, sampling {policy}, "
          f"batch {args.batch_size}, decode workers {args.decode_workers}, torch threads {threads}, "
          f"{os.cpu_count()} cores")
    print(f"units encoded:          {units}")
    print(f"engine end-to-end:      {engine_fps:8.1f} frames/s  ({engine_s:.1f} s, includes worker start-up)")
    print(f"bare model forward:     {bare_fps:8.1f} frames/s  ({bare_s:.1f} s)")
    print(f"ratio engine / bare:    {engine_fps / bare_fps:8.2f}   (target >= 0.9)")


if __name__ == "__main__":
    main()
