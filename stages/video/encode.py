"""Re-encode one video to the "3 fps, 224" form, safely.

One ffmpeg call: ``-map 0:V:0`` (first real video stream; audio, subtitles and data dropped), a filter
chain that drops frames first and then scales/crops the few that remain, libx264 (CRF 23) into an mp4.
The output size is computed here from the probed display size (ffmpeg autorotates before the filters, so a
phone video with a 90 degree display matrix comes out upright, with no display matrix left):

* crop="none":   short side -> `size`, long side -> size * long / short rounded down to an even number (as
  CLIP4Clip's expression does for landscape video, and correct for portrait).
  legacy_scale=True reproduces CLIP4Clip's expression instead, which is BUGGY for portrait video: with
  a = w/h it makes (trunc(size*a/2)*2, size) when a > 1, else (size, trunc(size*a/2)*2), squashing portrait
  frames to a height below `size`. Use it only to reproduce old results.
* crop="center": short side -> `size`, then a centred size x size crop.
* crop="square": VT-TWINS: a centred square crop of side min(w, h), then scaled to size x size.

Anamorphic sources (sample aspect ratio != 1, e.g. 176x144 at SAR 128:117): aspect="stored" (the default)
scales the stored pixels uniformly and keeps the pixel aspect ratio in the output (ffmpeg's scale filter
carries it), as CLIP4Clip's script does, so readers see the stored pixels scaled (what every reference
reader works on) and players show the right shape; aspect="display" resizes to the display aspect ratio
(width times the SAR) and writes square pixels (SAR 1:1).

The fps filter runs with round=up, so frame k of the output is exactly unit k of the 'fps' sampling policy
on the source (the last frame whose timestamp <= k / fps), for 29.97 fps and variable frame rate alike.

The output is written under a temporary name beside `dst`, checked (it must hold >= 1 decodable frame),
then renamed into place. On any failure VideoError is raised and nothing is left at `dst`: the source is
never copied over a failed output.
"""

from __future__ import annotations

import math
import os
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

from stages.contract.errors import ConfigError
from stages.contract.tasks import atomic_path
from stages.video.errors import VideoError
from stages.video.ffmpeg import file_url, has_encoder, run_ffmpeg
from stages.video.probe import VideoInfo, probe_video, short_side_size

CROPS = ("none", "center", "square")
ASPECTS = ("stored", "display")
# encoders in order of preference; the first one the ffmpeg build has is used
ENCODERS = ("libx264", "libopenh264", "mpeg4")


def output_size(width: int, height: int, size: int, crop: str = "none", legacy_scale: bool = False) -> tuple[int, int]:
    """(w, h) of the compressed video for a display size width x height."""
    if crop in ("center", "square"):
        return size, size
    if legacy_scale:
        a = Fraction(width, height)
        other = max(2, math.trunc(size * a / 2) * 2)
        return (other, size) if a > 1 else (size, other)
    return short_side_size(width, height, size, even=True)


def filter_chain(info_w: int, info_h: int, fps: float, size: int, crop: str, legacy_scale: bool,
                 sar: Fraction = Fraction(1), aspect: str = "stored") -> str:
    """The -vf graph: frame-rate drop first (cheap), then crop/scale on the frames that are left.

    info_w x info_h: the display-oriented stored size; sar: its pixel aspect ratio (display orientation)."""
    if aspect not in ASPECTS:
        raise ConfigError(f"compress aspect must be one of {ASPECTS}, got {aspect!r}")
    display = aspect == "display" and sar != 1
    # the geometry is computed on the picture as it should look: stored pixels, or display-corrected ones
    gw = Fraction(info_w) * sar if display else info_w
    rate = Fraction(fps).limit_denominator(1001)
    # round=up: output frame k is the last input frame with timestamp <= k/fps (exact rational arithmetic),
    # i.e. exactly the 'fps' sampling policy; the default round=near would take later, centred frames
    parts = [f"fps={rate.numerator}/{rate.denominator}:round=up"]
    if crop == "square":
        if display:  # a square as displayed: min(display w, h), its stored width divided by the SAR
            side = min(gw, Fraction(info_h))
            cw, ch = max(1, math.floor(side / sar + Fraction(1, 2))), max(1, math.floor(side + Fraction(1, 2)))
            parts += [f"crop={cw}:{ch}", f"scale={size}:{size}"]
        else:
            side = min(info_w, info_h)
            parts += [f"crop={side}:{side}", f"scale={size}:{size}"]
    elif crop == "center":
        w, h = short_side_size(gw, info_h, size, even=True)
        parts += [f"scale={w}:{h}", f"crop={size}:{size}"]
    else:
        w, h = output_size(gw, info_h, size, "none", legacy_scale)
        parts += [f"scale={w}:{h}"]
    if display or sar == 1:
        parts += ["setsar=1"]
    parts += ["format=yuv420p"]
    return ",".join(parts)


def _check_params(fps: float, size: int, crop: str, crf: int, threads: int) -> None:
    if crop not in CROPS:
        raise ConfigError(f"compress crop must be one of {CROPS}, got {crop!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 2 or size % 2:
        raise ConfigError(f"compress size must be an even integer >= 2 (yuv420p needs even sides), got {size!r}")
    if not isinstance(fps, (int, float)) or not fps > 0 or not math.isfinite(fps):
        raise ConfigError(f"compress fps must be a positive number, got {fps!r}")
    if not isinstance(crf, int) or not 0 <= crf <= 51:
        raise ConfigError(f"compress crf must be an integer in 0..51, got {crf!r}")
    if not isinstance(threads, int) or threads < 0:
        raise ConfigError(f"compress threads must be an integer >= 0 (0 = ffmpeg decides), got {threads!r}")


def pick_encoder(preferred: str | None = None) -> str:
    if preferred:
        if not has_encoder(preferred):
            raise ConfigError(f"this ffmpeg build has no encoder {preferred!r}; use one of {[e for e in ENCODERS if has_encoder(e)]}")
        return preferred
    for enc in ENCODERS:
        if has_encoder(enc):
            return enc
    raise ConfigError(f"this ffmpeg build has none of the encoders {ENCODERS}; install a full ffmpeg build")


def _encoder_args(encoder: str, crf: int, preset: str) -> list[str]:
    if encoder == "libx264":
        return ["-c:v", "libx264", "-preset", preset, "-crf", str(crf)]
    if encoder == "libopenh264":
        return ["-c:v", "libopenh264", "-b:v", "1M"]
    return ["-c:v", encoder, "-q:v", "3"]


def _check_decodes(path: Path, src: str) -> None:
    """The first frame of the output decodes (the probe only saw packets)."""
    try:
        import decord

        vr = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
        frame = vr[0].asnumpy()
    except Exception as e:  # noqa: BLE001 - decord raises DECORDError / RuntimeError
        raise VideoError("ffmpeg_failed", f"the output does not decode: {str(e)[:200]}", src) from None
    if frame.ndim != 3 or frame.size == 0:
        raise VideoError("ffmpeg_failed", f"the output decodes to a frame of shape {frame.shape}", src)


def compress_video(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    fps: float = 3.0,
    size: int = 224,
    crop: str = "none",
    legacy_scale: bool = False,
    crf: int = 23,
    threads: int = 1,
    timeout: float | None = None,
    *,
    preset: str = "superfast",
    encoder: str | None = None,
    aspect: str = "stored",
) -> dict[str, Any]:
    """Re-encode `src` into the mp4 `dst` (see the module docstring). Returns an info dict:
    {"src": {...probe facts...}, "width", "height", "frames", "fps", "duration_s", "encoder", "preset", "crf",
    "filter", "bytes", "seconds"}. Raises VideoError (reason from probing, or 'ffmpeg_failed' / 'timeout' /
    'too_short') when the video cannot be compressed; ConfigError for bad parameters.

    preset: x264 speed preset. The default "superfast" keeps the whole job within ~1.2-1.3x of only
    decoding the source (`ffmpeg -i src -f null -`, bench/decode.py): at 3 fps and 224 px the encoder
    sees few, small frames, yet with slower presets it costs 0.3-0.6x the decode ("veryfast" ~1.35x,
    "faster" ~1.5x, CLIP4Clip's x264 default "medium" ~2x). CRF sets the quality; slower presets mostly
    give smaller files.
    threads: decoder and encoder threads per video (1 suits one worker per core; 0 = ffmpeg decides).
    aspect: "stored" or "display", for anamorphic sources (see the module docstring).
    """
    _check_params(fps, size, crop, crf, threads)
    enc = pick_encoder(encoder)
    t0 = time.perf_counter()
    src_info: VideoInfo = probe_video(src, timeout=timeout)
    if src_info.num_frames == 0:
        raise VideoError("too_short", "the video stream has no frames", str(src))
    vf = filter_chain(src_info.display_width, src_info.display_height, fps, size, crop, legacy_scale,
                      sar=src_info.display_sar, aspect=aspect)
    dst = Path(dst)
    thread_args = ["-threads", str(threads)]
    with atomic_path(dst) as tmp:
        args = [
            "-loglevel", "error",
            "-y",
            *thread_args,  # decoder threads (input option)
            "-i", file_url(src),
            "-map", "0:V:0",
            "-an", "-sn", "-dn",
            "-map_metadata", "-1",
            "-vf", vf,
            "-filter_threads", str(max(1, threads)),
            *_encoder_args(enc, crf, preset),
            *thread_args,  # encoder threads (output option)
            "-pix_fmt", "yuv420p",
            "-movflags", "+faststart",
            "-f", "mp4",
            file_url(tmp),
        ]
        run_ffmpeg(args, timeout=timeout, check=True, path=str(src), output=str(dst))
        try:
            out_info = probe_video(tmp, timeout=timeout)
        except VideoError as e:
            raise VideoError("ffmpeg_failed", f"ffmpeg wrote an unreadable output ({e.reason}: {e.detail})", str(src)) from None
        if out_info.num_frames < 1:
            raise VideoError("ffmpeg_failed", "ffmpeg wrote an output with no frames", str(src))
        _check_decodes(tmp, str(src))
        nbytes = tmp.stat().st_size
        os.chmod(tmp, 0o644)  # the temporary file is created 0600
    return {
        "src": src_info.as_dict(),
        "width": out_info.display_width,
        "height": out_info.display_height,
        "frames": out_info.num_frames,
        "fps": float(fps),
        "duration_s": round(out_info.stream_duration_s, 6),
        "encoder": enc,
        "preset": preset if enc == "libx264" else None,
        "crf": crf if enc == "libx264" else None,
        "crop": crop,
        "legacy_scale": legacy_scale,
        "aspect": aspect,
        "sar": f"{out_info.sar.numerator}:{out_info.sar.denominator}",
        "filter": vf,
        "bytes": nbytes,
        "seconds": round(time.perf_counter() - t0, 4),
    }
