"""Decode the frames a sampling policy asks for, with decord.

read_video(path, policy, short_side=224) probes the file (stages.video.probe: bad input raises VideoError
before any decoder touches it), asks the policy for its units using the exact frame timestamps, then
decodes each needed frame once, in increasing order: decord seeks only when the next wanted frame lies in a
later GOP and otherwise decodes forward, so dense sampling (3 fps out of 30) costs one sequential pass,
close to `ffmpeg -i X -f null -`. Frames are resized inside the decoder when short_side/size/resize is
given; that resize is BILINEAR (decord's scaler = ffmpeg swscale with flags=bilinear), which equals only the
references that resize with ffmpeg themselves. The extract engine therefore asks for decoder resizing only for
a Preprocess with backend "decoder" (stages.backbones.preprocess); the others get native-size frames.

Output frames are RGB uint8, in display orientation: decord applies the container's display-matrix
rotation exactly as ffmpeg's autorotate does (so read_video(raw) and read_video(compress_video(raw)) agree
on orientation). Padding units/frames (index -1) are all-zero frames.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from stages.contract.errors import ConfigError
from stages.video.errors import VideoError
from stages.video.probe import VideoInfo, probe_video, short_side_size
from stages.video.sampling import FrameSelection, SamplingPolicy, make_policy

log = logging.getLogger(__name__)

_CHUNK = 32  # frames per decord get_batch call: bounds the temporary copy decord makes
_gpu_warned = threading.Event()


@dataclass
class DecodedVideo:
    frames: np.ndarray  # uint8 RGB [U, H, W, 3] (frame units) or [U, L, H, W, 3] (clip units)
    selection: FrameSelection
    native_fps: float
    num_frames: int  # frames in the stream
    width: int  # of the returned frames
    height: int
    duration_s: float  # first frame to the stream's end
    timestamps_exact: bool  # True: container timestamps; False: decord's float32 ones (see warnings)
    device: str = "cpu"
    info: VideoInfo | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def mask(self) -> np.ndarray:
        return self.selection.mask

    def describe(self) -> dict[str, Any]:
        """Small JSON-able summary for manifests."""
        return {
            "units": self.selection.num_units,
            "real_units": int(self.selection.mask.sum()),
            "frames_decoded": int(len(self.selection.needed_frames())),
            "native_fps": round(self.native_fps, 6),
            "num_frames": self.num_frames,
            "width": self.width,
            "height": self.height,
            "duration_s": round(self.duration_s, 6),
            "timestamps_exact": self.timestamps_exact,
            "device": self.device,
        }


def _decord():
    try:
        import decord
    except ImportError as e:  # pragma: no cover - decord is a hard dependency
        raise ConfigError("decord is not installed: pip install decord") from e
    return decord


def frame_timestamps(path: str | os.PathLike) -> np.ndarray:
    """Exact start time (s) of every frame of `path`, presentation order, as stored (float64 [n])."""
    return probe_video(path).timestamps_s


def _output_size(info: VideoInfo, short_side: int | None, size: tuple[int, int] | None,
                 resize: Callable[[int, int], tuple[int, int]] | None = None, aspect: str = "stored") -> tuple[int, int]:
    """(width, height) to ask the decoder for, in display orientation; (-1, -1) = native."""
    if sum(x is not None for x in (short_side, size, resize)) > 1:
        raise ConfigError("give read_video one of short_side, size or resize, not several")
    if aspect not in ("stored", "display"):
        raise ConfigError(f"read_video aspect must be 'stored' or 'display', got {aspect!r}")
    aw, ah = info.aspect_size(aspect)
    if resize is not None:
        w, h = resize(ah, aw)
        return int(w), int(h)
    if size is not None:
        w, h = (int(size[0]), int(size[1]))
        if w <= 0 or h <= 0:
            raise ConfigError(f"read_video size must be (width, height) > 0, got {size!r}")
        return w, h
    if short_side is not None:
        if int(short_side) <= 0:
            raise ConfigError(f"read_video short_side must be > 0, got {short_side!r}")
        return short_side_size(aw, ah, int(short_side))
    if (aw, ah) != (info.display_width, info.display_height):
        return aw, ah  # aspect "display": the stored pixels stretched to the display aspect ratio
    return -1, -1


def _parse_ctx(ctx: str) -> tuple[str, int]:
    c = ctx.lower()
    if c == "cpu":
        return "cpu", 0
    for prefix in ("cuda", "gpu"):
        if c == prefix:
            return "gpu", 0
        if c.startswith(prefix + ":") and c[len(prefix) + 1 :].isdigit():
            return "gpu", int(c[len(prefix) + 1 :])
    raise ConfigError(f"read_video ctx must be 'cpu', 'gpu', 'cuda' or 'cuda:N', got {ctx!r}")


def open_reader(path: str, width: int, height: int, threads: int, ctx: str = "cpu") -> tuple[Any, str]:
    """A decord VideoReader and the device it decodes on. A GPU request on a decord without CUDA falls
    back to the CPU with one warning."""
    decord = _decord()
    kind, dev = _parse_ctx(ctx)
    if kind == "gpu":
        try:
            return decord.VideoReader(path, ctx=decord.gpu(dev), width=width, height=height, num_threads=threads), f"gpu:{dev}"
        except Exception as e:  # noqa: BLE001 - decord raises DECORDError/RuntimeError for "no CUDA"
            msg = str(e)
            if "cuda" not in msg.lower() and "gpu" not in msg.lower():
                raise VideoError("decode_error", f"decord (GPU) cannot open the video: {msg[:300]}", path) from None
            if not _gpu_warned.is_set():
                _gpu_warned.set()
                log.warning("GPU decoding asked for, but this decord build has no CUDA (%s); decoding on the CPU. "
                            "Build decord with -DUSE_CUDA=ON for GPU decoding.", msg.splitlines()[0][:200])
    try:
        return decord.VideoReader(path, ctx=decord.cpu(0), width=width, height=height, num_threads=threads), "cpu"
    except Exception as e:  # noqa: BLE001
        raise VideoError("decode_error", f"decord cannot open the video: {str(e)[:300]}", path) from None


def _timestamps(info: VideoInfo, vr: Any, warnings: list[str]) -> tuple[np.ndarray, float, bool]:
    """(timestamps_s, end_s, exact) of the frames as decord numbers them."""
    n = len(vr)
    if n == info.num_frames and n > 0:
        return info.timestamps_s, info.end_s, True
    # decord sees a different frame count than the container lists: use decord's own (float32) timestamps,
    # snapped to the stream's time base
    warnings.append(f"decord counts {n} frames, the container lists {info.num_frames}: using decord's timestamps")
    if n == 0:
        return np.zeros(0), 0.0, False
    ts = np.asarray(vr.get_frame_timestamp(np.arange(n)), dtype=np.float64)
    tb = float(info.time_base)
    start = np.round(ts[:, 0] / tb) * tb
    end = float(np.round(ts[-1, 1] / tb) * tb)
    order = np.argsort(start, kind="stable")
    if np.any(order != np.arange(n)):
        warnings.append("decord's frame order is not sorted by time")
        start = np.sort(start)
    return start, max(end, float(start[-1])), False


def read_video(
    path: str | os.PathLike,
    policy: SamplingPolicy | dict[str, Any] | str,
    short_side: int | None = None,
    *,
    size: tuple[int, int] | None = None,
    ctx: str = "cpu",
    threads: int = 0,
    min_frames: int = 1,
    info: VideoInfo | None = None,
    resize: Callable[[int, int], tuple[int, int]] | None = None,
    aspect: str = "stored",
) -> DecodedVideo:
    """Decode the units `policy` selects from `path`.

    short_side: resize inside the decoder so the short side has this many pixels (aspect kept, long side
    truncated as torchvision does); size=(w, h): resize to exactly w x h (aspect not kept);
    resize: a function (height, width) -> (w, h) of the output size (Preprocess.target_size, reversed);
    none of them: native size. aspect: "stored" (the stream's pixels, what every reference reader sees) or
    "display" (stretched by the sample aspect ratio to what a person sees; the stretch is the decoder's
    bilinear resize).
    ctx: 'cpu' or 'gpu'/'cuda[:N]' (falls back to the CPU with a warning when decord has no CUDA).
    threads: decoder threads (0 = decord's default, all cores). min_frames: fewer frames -> 'too_short'.
    Raises VideoError (reason: missing, unreadable, empty_file, not_a_video, no_video_stream, truncated,
    too_short, decode_error) for a bad video; ConfigError for bad arguments.
    """
    pol = make_policy(policy)
    spath = str(path)
    if info is None:
        info = probe_video(spath)
    warnings = list(info.warnings)
    if info.num_frames < max(1, min_frames):
        raise VideoError("too_short", f"{info.num_frames} frame(s), need at least {max(1, min_frames)}", spath)
    width, height = _output_size(info, short_side, size, resize, aspect)
    vr, device = open_reader(spath, width, height, threads, ctx)
    try:
        ts, end_s, exact = _timestamps(info, vr, warnings)
        if len(ts) < max(1, min_frames):
            raise VideoError("too_short", f"the decoder finds {len(ts)} frame(s), need {max(1, min_frames)}", spath)
        sel = pol.select(ts, info.fps if info.fps > 0 else float(vr.get_avg_fps()), end_s=end_s)
        need = sel.needed_frames()
        try:
            decoded = _decode_frames(vr, need, spath)
        except _ScalerBug as e:
            # decord cannot hand out frames of a few widths (4, 6, 8, 12, 16, 24, 48, 72 px: it returns padded
            # RGBA rows), scaled or native. ffmpeg itself decodes those frames.
            warnings.append(f"decord cannot output {width}x{height} frames ({e}); decoded with ffmpeg instead")
            ow, oh = (width, height) if width > 0 else (info.display_width, info.display_height)
            decoded = decode_frames_ffmpeg(spath, need, ow, oh, scale=width > 0, threads=threads)
    finally:
        del vr
    h, w = decoded.shape[1:3]
    frames = _assemble(sel, need, decoded)
    return DecodedVideo(
        frames=frames,
        selection=sel,
        native_fps=float(info.fps),
        num_frames=int(len(ts)),
        width=int(w),
        height=int(h),
        duration_s=float(end_s - ts[0]),
        timestamps_exact=exact,
        device=device,
        info=info,
        warnings=warnings,
    )


class _ScalerBug(Exception):
    pass


def decode_frames_ffmpeg(
    path: str, need: np.ndarray, width: int, height: int, scale: bool = True, threads: int = 0,
    timeout: float | None = None,
) -> np.ndarray:
    """Frames `need` (sorted, unique, presentation order) as uint8 RGB [K, height, width, 3], decoded by an
    ffmpeg subprocess reading frames sequentially (autorotated; scaled bilinearly, bit-identical to decord's
    in-decoder resize). The fallback for what decord cannot output."""
    from stages.video.ffmpeg import file_url, find_ffmpeg, stderr_tail

    last = int(need[-1])
    vf = [f"scale={width}:{height}:flags=bilinear"] if scale else []  # what decord's in-decoder scaler does
    cmd = [
        find_ffmpeg(), "-hide_banner", "-nostdin", "-loglevel", "error", "-threads", str(threads),
        "-i", file_url(path), "-map", "0:V:0", "-an", "-sn", "-dn",
        *(["-vf", ",".join(vf)] if vf else []),
        "-fps_mode", "passthrough", "-frames:v", str(last + 1),
        "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1",
    ]
    frame_bytes = width * height * 3
    out = np.empty((len(need), height, width, 3), dtype=np.uint8)
    wanted = {int(i): k for k, i in enumerate(need)}
    got = 0
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        for n in range(last + 1):
            buf = proc.stdout.read(frame_bytes)
            if len(buf) < frame_bytes:
                break
            k = wanted.get(n)
            if k is not None:
                out[k] = np.frombuffer(buf, dtype=np.uint8).reshape(height, width, 3)
                got += 1
        proc.stdout.close()
        try:
            err = proc.stderr.read().decode("utf-8", errors="replace") if proc.stderr else ""
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise VideoError("timeout", f"ffmpeg decoding ran longer than {timeout} s", path) from None
    if got != len(need):
        raise VideoError("decode_error", f"ffmpeg decoded {got} of {len(need)} wanted frames: {stderr_tail(err, 3)}", path)
    return out


def _decode_frames(vr: Any, need: np.ndarray, path: str) -> np.ndarray:
    """Frames `need` (sorted, unique) as uint8 [K, H, W, 3], decoded in increasing order."""
    out: np.ndarray | None = None
    for s in range(0, len(need), _CHUNK):
        chunk = need[s : s + _CHUNK]
        try:
            arr = vr.get_batch(chunk.tolist()).asnumpy()
        except Exception as e:  # noqa: BLE001 - decord raises DECORDError / RuntimeError
            if "DECORDArrayCopyFromTo" in str(e):
                raise _ScalerBug(str(e).strip().splitlines()[-1][-120:]) from None
            raise VideoError(
                "decode_error", f"decoding frames {int(chunk[0])}..{int(chunk[-1])} failed: {str(e)[:300]}", path
            ) from None
        if arr.ndim == 4 and arr.shape[-1] == 4:
            raise _ScalerBug(f"4-channel frames {arr.shape}")
        if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8 or arr.shape[0] != len(chunk):
            raise VideoError("decode_error", f"the decoder returned frames of shape {arr.shape} {arr.dtype}", path)
        if out is None:
            out = np.empty((len(need), *arr.shape[1:]), dtype=np.uint8)
        out[s : s + len(chunk)] = arr
    if out is None:
        raise VideoError("too_short", "no frame selected", path)
    return out


def _assemble(sel: FrameSelection, need: np.ndarray, decoded: np.ndarray) -> np.ndarray:
    """Frames laid out as the selection's units; index -1 -> zeros."""
    idx = sel.indices
    frame_shape = decoded.shape[1:]
    out = np.zeros((*idx.shape, *frame_shape), dtype=np.uint8)
    valid = idx >= 0
    out[valid] = decoded[np.searchsorted(need, idx[valid])]
    return out
