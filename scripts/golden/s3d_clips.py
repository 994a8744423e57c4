"""Clip goldens of the MIL-NCE / VT-TWINS video readers, from the reference loaders themselves.

    PATH=<dir with the reference-era ffmpeg>:$PATH python scripts/golden/s3d_clips.py VTTWINS_CHECKOUT \
        MILNCE_CHECKOUT [--out tests/golden]

Run it where the references' imports resolve (torch, numpy, pandas, ffmpeg-python) - a scratch environment,
never the project's. The `ffmpeg` on PATH is the one the reference loaders call; use a 4.x build (what the
references ran: its scale filter defaults to bilinear inside a -filter_complex graph). The script:

1. encodes the test videos (tests/golden_videos.py, into a scratch folder, with vtpipe's bundled ffmpeg:
   $VTPIPE_FFMPEG or imageio-ffmpeg; x264 with one thread, so the tests rebuild the same bytes) whose frames show their own number in a grid of black/white cells that fills the centre
   square of the frame (what the loaders keep), over a coloured texture that the crop and scale must
   reproduce: 320x240 at 30 fps, 426x240 (16:9, odd crop offset) at 29.97 fps, portrait 180x320 at 25 fps,
   variable frame rate, 61 frames (shorter than one clip) and a single frame;
2. calls the loaders' own `_get_video(video_path, start, end, num_clip)`:
   VT-TWINS 1103645 loader/youcook_loader.py (eval_youcook.py: fps 10, 32 frames, 10 windows; segment
   start/end from the annotation), loader/msrvtt_loader.py (eval_msrvtt.py:103-104 sets fps 20, 8 windows;
   start 0, end = ffprobe's format duration, here the same number computed by the script), and MIL-NCE
   b282b15 youcook_loader.py with its args.py defaults (fps 5, 16 frames) and its README's 10 windows;
3. reads the frame number in every slot of every clip (-1 = an all-zero padding frame) and writes
   tests/golden/s3d_clips.json (indices, clip starts, sha256 of each clip's uint8 frames) and
   tests/golden/s3d_clips_pixels.npz (every 4th pixel of one frame per case, uint8, for the grey-level
   tolerance when the sha256 differ).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
SIZE = 224


def load_class(path: Path, cls: str, modname: str):
    spec = importlib.util.spec_from_file_location(modname, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return getattr(mod, cls)


def loader(cls, fps: int, num_frames: int, num_clip: int):
    """A reference loader with its __init__ attributes, without the CSV and dict files __init__ reads."""
    obj = cls.__new__(cls)
    obj.size, obj.num_frames, obj.fps, obj.num_clip = SIZE, num_frames, fps, num_clip
    obj.num_sec = num_frames / float(fps)
    obj.crop_only, obj.center_crop = False, True
    return obj


def format_duration(path: Path) -> float:
    """What the MSR-VTT loader's `_get_duration` returns: ffprobe's format.duration, i.e.
    AVFormatContext.duration printed with 6 decimals (from ffprobe on PATH, else from PyAV)."""
    exe = shutil.which("ffprobe")
    if exe:
        out = subprocess.run([exe, "-v", "error", "-show_entries", "format=duration", "-of", "json", str(path)],
                             capture_output=True, text=True, check=True)
        return float(json.loads(out.stdout)["format"]["duration"])
    import av  # PyAV: the same libavformat field

    with av.open(str(path)) as c:
        return float(f"{c.duration / 1e6:.6f}")


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("vttwins", type=Path)
    ap.add_argument("milnce", type=Path)
    ap.add_argument("--out", type=Path, default=ROOT / "tests/golden")
    args = ap.parse_args(argv)
    ffmpeg_exe = shutil.which("ffmpeg")
    if not ffmpeg_exe:
        raise SystemExit("no ffmpeg on PATH for the reference loaders")
    version = subprocess.run([ffmpeg_exe, "-version"], capture_output=True, text=True, check=True).stdout.splitlines()[0]
    vdir = Path(tempfile.mkdtemp(prefix="s3d_golden_videos_"))
    sys.path.insert(0, str(ROOT / "tests"))
    sys.path.insert(0, str(ROOT))
    from golden_videos import VIDEOS, make_videos, read_number

    paths = make_videos(vdir)

    yc = load_class(args.vttwins / "loader/youcook_loader.py", "Youcook_DataLoader", "vt_youcook")
    ms = load_class(args.vttwins / "loader/msrvtt_loader.py", "MSRVTT_DataLoader", "vt_msrvtt")
    mil = load_class(args.milnce / "youcook_loader.py", "Youcook_DataLoader", "milnce_youcook")
    protocols = {
        "vt-twins-youcook2": (yc, 10, 32, 10),
        "vt-twins-msrvtt": (ms, 20, 32, 8),
        "milnce-youcook2": (mil, 5, 16, 10),  # args.py: fps 5, 16 frames; README: 10 windows
    }
    cases, pixels = [], {}
    for vname, path in paths.items():
        dur = format_duration(path)
        for proto, (cls, fps, nf, nc) in protocols.items():
            spans = [("whole", 0.0, dur)]
            if proto != "vt-twins-msrvtt" and dur > 6:
                spans.append(("segment", 1.37, round(dur - 1.91, 3)))
            for span, start, end in spans:
                ld = loader(cls, fps, nf, nc)
                video = ld._get_video(str(path), start, end, nc)  # [clips, 3, T, 224, 224] float 0..255
                clips = video.numpy().astype(np.uint8).transpose(0, 2, 3, 4, 1)  # [clips, T, 224, 224, 3]
                assert np.array_equal(clips.astype(np.float32), video.numpy().transpose(0, 2, 3, 4, 1))
                idx = [[read_number(f) for f in clip] for clip in clips]
                key = f"{proto}/{vname}/{span}"
                cases.append({
                    "key": key, "protocol": proto, "video": vname, "start": start, "end": end,
                    "fps": fps, "num_frames": nf, "num_clips": nc,
                    "clip_starts": [float(s) for s in np.linspace(start, max(start, end - nf / fps - 0.4), nc)],
                    "indices": idx,
                    "clip_sha256": [hashlib.sha256(np.ascontiguousarray(c).tobytes()).hexdigest() for c in clips],
                })
                real = [(c, t) for c in range(nc) for t in range(nf) if idx[c][t] >= 0]
                for c, t in real[len(real) // 2: len(real) // 2 + 1]:
                    pixels[f"{key}/{c}/{t}"] = clips[c, t, ::4, ::4]  # every 4th pixel of one frame
                print(key, "padding", sum(i < 0 for row in idx for i in row))
    doc = {
        "about": "which source frame lands in each slot of each clip (-1 = zero padding) in the MIL-NCE / "
                 "VT-TWINS loaders; written by scripts/golden/s3d_clips.py",
        "references": {"vt-twins": "KoDohwan/VT-TWINS 1103645 loader/youcook_loader.py, loader/msrvtt_loader.py, "
                                   "src/eval_msrvtt.py:103-104",
                       "milnce": "antoine77340/MIL-NCE_HowTo100M b282b15 youcook_loader.py, args.py defaults"},
        "ffmpeg": version,
        "videos": {n: {"width": w, "height": h, "fps": f, "frames": k, "vfr_segments": s,
                       "sha256": hashlib.sha256(paths[n].read_bytes()).hexdigest()}
                   for n, (w, h, f, k, s) in VIDEOS.items()},
        "cases": cases,
    }
    (args.out / "s3d_clips.json").write_text(json.dumps(doc, separators=(",", ":")) + "\n")
    np.savez_compressed(args.out / "s3d_clips_pixels.npz", **pixels)
    print(f"{len(cases)} cases, {len(pixels)} pixel frames; {version}")


if __name__ == "__main__":
    main(sys.argv[1:])
