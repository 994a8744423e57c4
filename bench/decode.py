"""Decode / compress throughput against the decoder bound, on generated 640x360 30 fps H.264 videos.

    .venv/bin/python bench/decode.py            # 3 videos x 20 s (a few minutes on 2 cores)
    .venv/bin/python bench/decode.py --full     # 5 videos x 60 s, as the issue asks

Measured per run, on the same files (best of --repeat runs for each timing, to damp noise from other jobs):
  bound    `ffmpeg -threads T -i X -f null -`: decoding every frame, the physical limit (T=1 and T=0/auto)
  (a)      read_video(X, fps=3, short_side=224) throughput as a fraction of the bound   (target >= 0.8)
  (b)      compress_video(X, fps=3, size=224) time as a multiple of the bound (target <= 1.3); default x264
           preset superfast, plus veryfast and medium (CLIP4Clip's) for comparison
  (c)      a seek-per-frame reader like CLIP4Clip's: for each sampled frame seek to the keyframe before it
           and decode forward (decord seek + seek_accurate, as OpenCV's CAP_PROP_POS_FRAMES does)
  (d)      the extract engine's decode worker, read_video(fps=3) + the model's Preprocess, per resize backend:
           Pillow bicubic on native frames (CLIP/CLIP4Clip/DRL, exact) vs one torch float pass (the old
           path), and LocVTP's torch bilinear on full-size frames (exact) vs the decoder resizing to 112
Each timing is reported as wall time and as CPU time (this process + its ffmpeg children). On a shared,
loaded machine the wall times of multi-threaded decoders (decord runs demux/decode/convert on separate
threads even with num_threads=1) suffer from scheduling; CPU-time ratios are the stable comparison there.
Prints ratios; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from stages.backbones.preprocess import Preprocess  # noqa: E402
from stages.video import compress_video, read_video  # noqa: E402
from stages.video.ffmpeg import file_url, find_ffmpeg  # noqa: E402
from stages.video.sampling import make_policy  # noqa: E402
from video_factory import make_testsrc_video  # noqa: E402


def cpu_seconds() -> float:
    s = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def best_of(repeat: int, fn: Callable[[], object]) -> tuple[float, float]:
    """(best wall time, best CPU time) over `repeat` runs."""
    walls, cpus = [], []
    for _ in range(repeat):
        c, t = cpu_seconds(), time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t)
        cpus.append(cpu_seconds() - c)
    return min(walls), min(cpus)


def ffmpeg_null(path: Path, threads: int) -> None:
    subprocess.run(
        [find_ffmpeg(), "-hide_banner", "-nostdin", "-loglevel", "error", "-threads", str(threads),
         "-i", file_url(path), "-f", "null", "-"],
        check=True,
    )


def seek_per_frame(path: Path, policy_spec: dict) -> int:
    import decord

    vr = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    n = len(vr)
    ts = np.asarray(vr.get_frame_timestamp(np.arange(n)))[:, 0].astype(np.float64)
    idx = make_policy(policy_spec).select(ts, vr.get_avg_fps()).needed_frames()
    for i in idx:
        # like OpenCV's set(CAP_PROP_POS_FRAMES, i): back to a keyframe, decode forward to i. (decord's own
        # seek_accurate would just keep decoding forward within a GOP; seek(0) first defeats that. Checked
        # on counter videos: this returns frame i.)
        vr.seek(0)
        vr.seek_accurate(int(i))
        vr.next().asnumpy()
    return len(idx)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="5 videos x 60 s (the issue's size)")
    ap.add_argument("--videos", type=int, default=None)
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--gop", type=int, default=150, help="keyframe interval of the generated videos (frames)")
    ap.add_argument("--workdir", type=Path, default=None, help="where to keep the generated videos (reused)")
    args = ap.parse_args()
    n_videos = args.videos or (5 if args.full else 3)
    seconds = args.seconds or (60.0 if args.full else 20.0)
    work = args.workdir or Path(tempfile.gettempdir()) / "vtpipe-bench-decode"
    work.mkdir(parents=True, exist_ok=True)

    videos = []
    t = time.perf_counter()
    for i in range(n_videos):
        p = work / f"v{i}_{int(seconds)}s_g{args.gop}.mp4"
        if not p.exists():
            make_testsrc_video(p, seconds, 640, 360, 30, noise=6 + i, gop=args.gop)
        videos.append(p)
    print(f"{n_videos} videos x {seconds:.0f} s, 640x360 30 fps H.264 (gop {args.gop}) in {work} "
          f"[{time.perf_counter() - t:.1f} s to prepare]")
    total_s = n_videos * seconds
    fps3 = {"policy": "fps", "fps": 3}
    out = work / "out"

    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")

    def run(label: str, fn: Callable[[], object], repeat: int = args.repeat) -> tuple[float, float]:
        w, c = best_of(repeat, fn)
        print(f"  {label:<50s} wall {w:7.2f} s ({total_s / w:6.1f} video-s/s)   cpu {c:7.2f} s", flush=True)
        return w, c

    print("timings (best of %d):" % args.repeat)
    b1 = run("bound: ffmpeg -threads 1 -f null", lambda: [ffmpeg_null(v, 1) for v in videos])
    b0 = run("bound: ffmpeg -threads 0 (auto) -f null", lambda: [ffmpeg_null(v, 0) for v in videos])
    r1 = run("(a) read_video fps=3 short_side=224 threads=1",
             lambda: [read_video(v, fps3, short_side=224, threads=1) for v in videos])
    r0 = run("(a) read_video fps=3 short_side=224 threads=0",
             lambda: [read_video(v, fps3, short_side=224, threads=0) for v in videos])
    rn = run("(a) read_video fps=3 native size threads=1", lambda: [read_video(v, fps3, threads=1) for v in videos])
    c1 = run("(b) compress_video fps=3 size=224 threads=1",
             lambda: [compress_video(v, out / v.name, threads=1) for v in videos])
    c0 = run("(b) compress_video fps=3 size=224 threads=0",
             lambda: [compress_video(v, out / v.name, threads=0) for v in videos])
    cv = run("(b) compress_video preset=veryfast threads=1",
             lambda: [compress_video(v, out / v.name, threads=1, preset="veryfast") for v in videos])
    cm = run("(b) compress_video preset=medium threads=1",
             lambda: [compress_video(v, out / v.name, threads=1, preset="medium") for v in videos])
    s3 = run("(c) seek per sampled frame, 3 fps, threads=1", lambda: [seek_per_frame(v, fps3) for v in videos], 1)
    s1 = run("(c) seek per sampled frame, 1 fps, threads=1",
             lambda: [seek_per_frame(v, {"policy": "fps", "fps": 1}) for v in videos], 1)
    clip_pil = Preprocess(backend="pil")
    clip_torch = Preprocess(backend="torch")
    loc = Preprocess(size=112, interpolation="bilinear", mean=(0.5,) * 3, std=(0.5,) * 3, antialias=False)
    dp = run("(d) read_video native + Pillow bicubic 224 (CLIP, exact)",
             lambda: [clip_pil(read_video(v, fps3, threads=1).frames) for v in videos], 1)
    dt = run("(d) read_video native + torch bicubic 224 (old path)",
             lambda: [clip_torch(read_video(v, fps3, threads=1).frames) for v in videos], 1)
    dl = run("(d) read_video native + torch bilinear 112 (LocVTP, exact)",
             lambda: [loc(read_video(v, fps3, threads=1).frames) for v in videos], 1)
    dd = run("(d) read_video decoder 112 + crop (LocVTP, old path)",
             lambda: [loc(read_video(v, fps3, short_side=112, threads=1).frames) for v in videos], 1)
    print(f"load average after: {os.getloadavg()[0]:.1f}")

    def line(label: str, num: tuple[float, float], den: tuple[float, float], target: str = "", inv: bool = False) -> None:
        w, c = (num[0] / den[0], num[1] / den[1])
        print(f"  {label:<48s} wall {w:5.2f}{'x' if inv else ' '}  cpu {c:5.2f}{'x' if inv else ' '}  {target}")

    print("\nratios (same files, same run):")
    line("(a) read_video 3 fps throughput / bound, 1 thread", b1, r1, "(target >= 0.8)")
    line("(a) same, auto threads", b0, r0, "(target >= 0.8)")
    line("(a) native size (no resize) / bound, 1 thread", b1, rn)
    line("(b) compress time / bound, 1 thread", c1, b1, "(target <= 1.3)", inv=True)
    line("(b) same, auto threads", c0, b0, "(target <= 1.3)", inv=True)
    line("(b) compress preset=veryfast / bound, 1 thread", cv, b1, "", inv=True)
    line("(b) compress preset=medium / bound, 1 thread", cm, b1, "", inv=True)
    line("(c) seek-per-frame 3 fps time / read_video", s3, r1, "", inv=True)
    line("(c) seek-per-frame 1 fps time / read_video 3 fps", s1, r1, "", inv=True)
    line("(d) CLIP decode worker, Pillow / bound, 1 thread", b1, dp)
    line("(d) CLIP decode worker, Pillow time / torch float pass", dp, dt, "", inv=True)
    line("(d) LocVTP decode worker, full-size / bound, 1 thread", b1, dl)
    line("(d) LocVTP full-size time / decoder-resized", dl, dd, "", inv=True)


if __name__ == "__main__":
    main()
