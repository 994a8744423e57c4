"""S3D clip input (MIL-NCE / VT-TWINS protocols) against the decoder bound and the references' own way.

    .venv/bin/python bench/s3d_clips.py [--seconds 20] [--repeat 2]

On a generated 640x360 30 fps H.264 video, per protocol preset (vt-twins: 10 x 32 frames at 10 fps;
vt-twins-msrvtt: 8 x 32 at 20 fps; s3d-howto100m: 10 x 16 at 5 fps), measures
  vtpipe     SquareClipInput.read_video: one ffmpeg process, seek, select the needed frames, crop + scale
  reference  what the loaders do: one `ffmpeg -ss s -t len -i X -filter_complex fps,crop,scale` per clip
  bound      `ffmpeg -i X -f null -` (decoding every frame)
and prints wall and CPU time (this process + children) as multiples of the bound. Asserts nothing.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from decode import best_of
from video_factory import make_testsrc_video

from stages.backbones.registry import model_config
from stages.video.ffmpeg import file_url, find_ffmpeg
from stages.video.probe import probe_video
from stages.video.sampling import make_policy
from stages.video.square_clips import CROP_SQUARE, SquareClipInput


def reference_way(path: Path, policy) -> None:
    """One ffmpeg run per clip, the loaders' command line (scale flags given: bilinear, as their ffmpeg 4.x)."""
    info = probe_video(path)
    end = info.end_s - info.timestamps_s[0]
    for s in policy.clip_starts(0.0, end):
        cmd = [find_ffmpeg(), "-loglevel", "error", "-ss", str(float(s)), "-t", str(policy.clip_len / policy.fps + 0.1),
               "-i", file_url(path), "-filter_complex",
               f"[0]fps=fps={policy.fps:g}[s0];[s0]{CROP_SQUARE}[s1];[s1]scale=224:224:flags=bilinear[s2]",
               "-map", "[s2]", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:"]
        subprocess.run(cmd, capture_output=True, check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        path = make_testsrc_video(Path(d) / "src.mp4", args.seconds)
        bound = best_of(args.repeat, lambda: subprocess.run(
            [find_ffmpeg(), "-loglevel", "error", "-i", file_url(path), "-f", "null", "-"], check=True))
        print(f"bound (ffmpeg -i X -f null -), {args.seconds:g} s 640x360: wall {bound[0]:.2f} s, CPU {bound[1]:.2f} s")
        inp = SquareClipInput()
        for name in ("vt-twins", "vt-twins-msrvtt", "s3d-howto100m"):
            policy = make_policy(model_config(name).sampling)
            ours = best_of(args.repeat, lambda p=policy: inp.read_video(path, p))
            ref = best_of(args.repeat, lambda p=policy: reference_way(path, p))
            print(f"{name:<16} vtpipe wall {ours[0] / bound[0]:.2f}x CPU {ours[1] / bound[1]:.2f}x the bound | "
                  f"per-clip ffmpeg (reference) wall {ref[0] / bound[0]:.2f}x CPU {ref[1] / bound[1]:.2f}x")


if __name__ == "__main__":
    main()
