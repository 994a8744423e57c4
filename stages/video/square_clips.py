"""MIL-NCE / VT-TWINS clip input, exactly as their loaders make it, decoded by the ffmpeg binary.

The reference loaders (VT-TWINS loader/youcook_loader.py, loader/msrvtt_loader.py; MIL-NCE youcook_loader.py,
msrvtt_loader.py) run, per clip, ffmpeg with the filter chain

    fps=F, crop=min(iw,ih):min(iw,ih):(iw - min(iw,ih))*0.5:(ih - min(iw,ih))*0.5, scale=224:224

to rgb24, and divide by 255 (no mean/std). The crop works on the decoded yuv420p picture, so its offset is
rounded down to even; the scale is swscale's bilinear (the scale filter's default in the ffmpeg 4.x
builds the references ran inside ffmpeg-python's -filter_complex; newer ffmpeg defaults to bicubic, so the
flag is given explicitly here). Reproducing that arithmetic in numpy is fragile, so vtpipe runs the same
chain through the same binary: one ffmpeg process per group of nearby clips (clips more than SEEK_GAP_S
apart get their own process) seeks to just before the group's first wanted frame and decodes forward,
converting only the frames the sampling policy needs (``select`` by frame number). The frame numbers come
from stages.video.ffmpeg_cut, which reproduces the loaders' ``-ss/-t`` cut and ``fps`` filter from the
frame timestamps. Checked against the loaders' own output: tests/golden/s3d_clips.json (frame indices and
the sha256 of every clip's pixels). GPU decoding is not offered on this path (the engine's ctx is ignored).
"""

from __future__ import annotations

import itertools
import os
import subprocess
from dataclasses import dataclass

import numpy as np

from stages.contract.errors import ConfigError
from stages.video.errors import VideoError
from stages.video.ffmpeg_cut import ticks_to_us, us_to_ticks
from stages.video.probe import VideoInfo, probe_video
from stages.video.sampling import FrameSelection, SamplingPolicy, make_policy

CROP_SQUARE = "crop=min(iw\\,ih):min(iw\\,ih):(iw - min(iw\\,ih))*0.5:(ih - min(iw\\,ih))*0.5"
MAX_FRAMES_PER_RUN = 2000
SEEK_GAP_S = 8.0  # wanted frames further apart than this are decoded by separate, seeking ffmpeg runs
SCALE_FLAGS = ("bilinear", "bicubic", "area", "neighbor", "lanczos", "fast_bilinear")


def _ranges(frames: np.ndarray) -> list[tuple[int, int]]:
    """Sorted unique ints -> inclusive runs [(a, b), ...]."""
    runs: list[tuple[int, int]] = []
    for f in frames.tolist():
        if runs and f == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], f)
        else:
            runs.append((f, f))
    return runs


def _groups(need: np.ndarray, info: VideoInfo, gap_s: float) -> list[slice]:
    """Split the wanted frames where two consecutive ones lie more than gap_s apart."""
    if need.size == 0:
        return []
    t = info.timestamps_s[need]
    cuts = set((np.flatnonzero(np.diff(t) > gap_s) + 1).tolist())
    cuts.update(range(MAX_FRAMES_PER_RUN, len(need), MAX_FRAMES_PER_RUN))  # bounds the select expression's length
    edges = [0, *sorted(cuts), len(need)]
    return [slice(a, b) for a, b in itertools.pairwise(edges)]


def _balanced_sum(terms: list[str]) -> str:
    """terms joined by '+' as a balanced tree of parentheses: ffmpeg's expression parser fails ("Cannot
    allocate memory") on a flat chain of more than about 100 terms, not on a tree of depth log2(n)."""
    if len(terms) == 1:
        return terms[0]
    mid = len(terms) // 2
    return f"({_balanced_sum(terms[:mid])}+{_balanced_sum(terms[mid:])})"


def _seek_base(info: VideoInfo, first: int) -> tuple[str | None, int]:
    """An ``-ss`` value whose accurate seek keeps exactly the frames from `first` on, and the frame number
    the decoder's first output then has; (None, 0) when no such value exists (decode from the start)."""
    if first <= 0:
        return None, 0
    pts, tb = info.pts, info.time_base
    start_us = ticks_to_us(int(pts[0]), tb)
    for target in (ticks_to_us(int(pts[first]) - int(pts[0]), tb), ticks_to_us(int(pts[first]) - int(pts[0]), tb) - 1):
        off = us_to_ticks(target + start_us, tb)
        if int(pts[first - 1]) < off <= int(pts[first]) and target >= 0:
            return f"{target // 1_000_000}.{target % 1_000_000:06d}", first
    return None, 0


def decode_square(path: str, need: np.ndarray, info: VideoInfo, size: int = 224, flags: str = "bilinear",
                  threads: int = 0, timeout: float | None = None) -> np.ndarray:
    """Frames `need` (sorted unique frame numbers) centre-cropped to a min(w, h) square and scaled to
    size x size by ffmpeg (swscale `flags`), uint8 RGB [K, size, size, 3]."""
    from stages.video.ffmpeg import _outside_failure, file_url, find_ffmpeg, stderr_tail

    seek, base = _seek_base(info, int(need[0]))
    terms = [f"between(n\\,{a - base}\\,{b - base})" for a, b in _ranges(np.asarray(need))]
    graph = f"[0:V:0]select={_balanced_sum(terms)},{CROP_SQUARE},scale={size}:{size}:flags={flags}[out]"
    cmd = [find_ffmpeg(), "-hide_banner", "-nostdin", "-loglevel", "error", "-threads", str(threads),
           *(["-ss", seek] if seek else []), "-i", file_url(path), "-filter_complex", graph, "-map", "[out]",
           "-fps_mode", "passthrough", "-frames:v", str(len(need)), "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise VideoError("timeout", f"ffmpeg decoding ran longer than {timeout} s", path) from None
    err = proc.stderr.decode("utf-8", errors="replace")
    if proc.returncode != 0:
        outside = _outside_failure(proc.returncode, err, path, None)
        if outside is not None:
            raise outside
    frame_bytes = size * size * 3
    got = len(proc.stdout) // frame_bytes
    if got != len(need):
        raise VideoError("decode_error", f"ffmpeg gave {got} of {len(need)} wanted frames "
                                         f"(exit {proc.returncode}): {stderr_tail(err, 3)}", path)
    return np.frombuffer(proc.stdout, dtype=np.uint8).reshape(len(need), size, size, 3)


def select_exact(policy: SamplingPolicy, info: VideoInfo) -> FrameSelection:
    """The policy's selection, from the integer timestamps when the policy can use them."""
    if hasattr(policy, "select_ticks"):
        return policy.select_ticks(info.pts, info.time_base, info.end_pts)  # type: ignore[attr-defined]
    return policy.select(info.timestamps_s, info.fps, end_s=info.end_s)


@dataclass(frozen=True)
class SquareClipInput:
    """Picklable input stage for S3D models (MIL-NCE, VT-TWINS): `read_video` decodes a video's units as
    uint8 [U, L, size, size, 3] (or [U, size, size, 3]); calling it on them gives float32 [U, 3, L, size,
    size] in [0, 1] (value / 255, no mean/std)."""

    size: int = 224
    flags: str = "bilinear"

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 2 or self.size % 2:
            raise ConfigError(f"square crop size must be an even integer >= 2, got {self.size!r}")
        if self.flags not in SCALE_FLAGS:
            raise ConfigError(f"square crop scale flags must be one of {SCALE_FLAGS}, got {self.flags!r}")

    def read_video(self, path: str | os.PathLike, policy, ctx: str = "cpu", threads: int = 0):
        """Probe, select (exactly, from the integer timestamps), decode the needed frames, lay them out."""
        from stages.video.decode import DecodedVideo

        spath = str(path)
        pol = make_policy(policy)
        info = probe_video(spath)
        if info.num_frames < 1:
            raise VideoError("too_short", "0 frames in the video stream", spath)
        sel = select_exact(pol, info)
        need = sel.needed_frames()
        decoded = np.zeros((len(need), self.size, self.size, 3), np.uint8)
        for part in _groups(need, info, SEEK_GAP_S):  # far-apart clips: one seek each instead of decoding the gap
            decoded[part] = decode_square(spath, need[part], info, self.size, self.flags, threads)
        frames = np.zeros((*sel.indices.shape, self.size, self.size, 3), dtype=np.uint8)
        valid = sel.indices >= 0
        frames[valid] = decoded[np.searchsorted(need, sel.indices[valid])]
        return DecodedVideo(frames=frames, selection=sel, native_fps=float(info.fps), num_frames=info.num_frames,
                            width=self.size, height=self.size, duration_s=float(info.end_s - info.timestamps_s[0]),
                            timestamps_exact=True, device="cpu", info=info, warnings=list(info.warnings))

    def __call__(self, frames: np.ndarray, pad: np.ndarray | None = None) -> np.ndarray:
        """uint8 [U, (L,) size, size, 3] -> float32 /255, channels first. `pad` (the engine's padding mask) needs
        no work: read_video already leaves padding frames all zero, as the loaders pad."""
        if frames.dtype != np.uint8 or frames.ndim not in (4, 5) or frames.shape[-3:] != (self.size, self.size, 3):
            raise ValueError(f"expected uint8 frames [U, (L,) {self.size}, {self.size}, 3], got {frames.dtype} {frames.shape}")
        x = frames.astype(np.float32) / np.float32(255.0)
        axes = (0, 4, 1, 2, 3) if frames.ndim == 5 else (0, 3, 1, 2)
        return np.ascontiguousarray(x.transpose(axes))
