"""Test videos of the MIL-NCE / VT-TWINS clip goldens (scripts/golden/s3d_clips.py, tests/test_s3d_clip_goldens.py).

Each frame shows its own number in a 2 x 5 grid of black/white cells that fills the centre square of the
frame (what the loaders' crop keeps), over a coloured texture that the crop and scale must reproduce.
read_number() reads the number back from a square-cropped, scaled frame.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from video_factory import encode_frames

BITS = 10
GRID = (2, 5)  # rows x columns of bit cells inside the centre square


def counter_frame(number: int, width: int, height: int) -> np.ndarray:
    """Texture over the whole frame; bit cells (inner 60% black or white) over the centre square."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.empty((height, width, 3), np.float32)
    img[..., 0] = 128 + 90 * np.sin(xx / 7.0 + number * 0.3)
    img[..., 1] = 128 + 90 * np.cos(yy / 5.0 - number * 0.2)
    img[..., 2] = (xx * 3 + yy * 2 + number * 5) % 256
    img = img.clip(0, 255).astype(np.uint8)
    side = min(width, height)
    x0, y0 = (width - side) // 2, (height - side) // 2
    rows, cols = GRID
    ys = np.linspace(y0, y0 + side, rows + 1)
    xs = np.linspace(x0, x0 + side, cols + 1)
    for b in range(BITS):
        r, c = divmod(b, cols)
        h, w = ys[r + 1] - ys[r], xs[c + 1] - xs[c]
        cell = img[int(ys[r] + 0.2 * h): int(ys[r] + 0.8 * h), int(xs[c] + 0.2 * w): int(xs[c] + 0.8 * w)]
        cell[:] = 235 if (number >> b) & 1 else 16
    return img


def read_number(frame: np.ndarray) -> int:
    """Frame number shown by a square-cropped, scaled frame [S, S, 3]; -1 for all zeros (padding)."""
    if not frame.any():
        return -1
    s = frame.shape[0]
    lum = frame.astype(np.float32).mean(axis=2)
    rows, cols = GRID
    n = 0
    for b in range(BITS):
        r, c = divmod(b, cols)
        y0, y1 = s * (r + 0.4) / rows, s * (r + 0.6) / rows
        x0, x1 = s * (c + 0.4) / cols, s * (c + 0.6) / cols
        v = lum[int(y0): int(np.ceil(y1)), int(x0): int(np.ceil(x1))].mean()
        if not (v < 60 or v > 190):
            raise ValueError(f"bit cell {b} is neither black nor white (mean {v:.0f}): not a counter frame")
        n |= (v > 128) << b
    return int(n)


VIDEOS = {
    # name: (width, height, fps or None, frame count, vfr segments or None)
    "cfr30_320x240": (320, 240, "30", 300, None),
    "ntsc_426x240": (426, 240, "30000/1001", 300, None),
    "portrait_180x320": (180, 320, "25", 250, None),
    "vfr_320x240": (320, 240, None, 210, [(60, "30"), (40, "15"), (60, "24"), (50, "30000/1001")]),
    "short61_320x240": (320, 240, "30", 61, None),
    "single_frame_320x240": (320, 240, "30", 1, None),
}


def make_videos(out_dir: Path, names=None) -> dict[str, Path]:
    """Encode the golden videos (all, or `names`) into out_dir; the bytes are reproducible (x264, one thread)."""
    paths = {}
    for name, (w, h, fps, n, segments) in VIDEOS.items():
        if names is not None and name not in names:
            continue
        frames = np.stack([counter_frame(i, w, h) for i in range(n)])
        p = out_dir / f"{name}.mp4"
        encode_frames(p, frames, fps or "30", segments=segments, crf=10, gop=48, extra=["-threads", "1"])
        paths[name] = p
    return paths


def s3d_signal_weights(seed: int, space_to_depth: bool = False) -> dict:
    """Seeded S3D-G weights (release key layout) that carry the input through to the embedding: He-scaled
    convolutions, identity BatchNorm, gates open (sigmoid(6)), so the clip embedding depends on the pixels
    (with backbone_checkpoints.s3d_state_dict the signal dies out and every clip embeds the same)."""
    import backbone_checkpoints as bc
    import torch

    sd = bc.s3d_state_dict(space_to_depth=space_to_depth, seed=seed)
    for k, v in sd.items():
        if k.endswith(("conv1.weight", "conv2.weight")):
            sd[k] = v * np.sqrt(2.0)  # fan-in scaled N(0, 1/fan_in) -> He
        elif k.endswith("running_mean") or (".bn" in k and k.endswith(".bias")):
            sd[k] = torch.zeros_like(v)
        elif k.endswith("running_var") or (".bn" in k and k.endswith(".weight")):
            sd[k] = torch.ones_like(v)
        elif "gating" in k and k.endswith("fc.weight"):
            sd[k] = v * 0.1
        elif "gating" in k and k.endswith("fc.bias"):
            sd[k] = torch.full_like(v, 6.0)
    return sd
