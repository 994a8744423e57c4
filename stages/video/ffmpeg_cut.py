"""Which frames `ffmpeg -ss S -t L -i FILE -filter_complex fps=F` outputs, computed from the frame timestamps.

The MIL-NCE and VT-TWINS loaders cut every clip with the ffmpeg CLI (through ffmpeg-python):
``ffmpeg -ss <start> -t <num_frames / fps + 0.1> -i <file>`` and the filter ``fps=fps=<F>``, keeping the first
num_frames output frames and padding with zero frames. This module reproduces, in integer arithmetic, what
that command does to the frame timestamps (checked slot for slot against the loaders run with ffmpeg 4.2
and 9.0: tests/golden/s3d_clips.json):

1. ``-ss`` and ``-t`` are parsed from Python's ``str(float)`` as seconds truncated to microseconds.
2. Input timestamps are shifted by ``off = rescale(start_us + container_start_us -> stream time base)``
   (round half away from zero, as av_rescale_q); with accurate seeking a trim keeps frames whose shifted
   pts >= 0, and then those with ``pts - first_kept_pts < rescale(length_us)``; the first frame beyond
   that ends the stream (its pts is the end-of-stream time), else the stream's own end does.
3. ``fps=F`` (rounding "near", eof_action "round") maps each kept frame to output slot
   ``round(pts * F)``; slots run from the first kept frame's slot up to, not including, the rounded
   end-of-stream time; each slot shows the last frame whose slot is <= it. So slot j of a clip starting at
   s shows the last frame with timestamp < s + (j + 1/2) / F (ties rounding up), not the frame shown at
   s + j / F.
"""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal
from fractions import Fraction

import numpy as np

US = 1_000_000


def rescale_near(a: int, num: int, den: int) -> int:
    """av_rescale_rnd(a, num, den, AV_ROUND_NEAR_INF): a * num / den rounded half away from zero."""
    if a < 0:
        return -rescale_near(-a, num, den)
    return (a * num + den // 2) // den


def seconds_to_us(value: float) -> int:
    """How ffmpeg reads ``str(value)`` as a duration: seconds, truncated to whole microseconds."""
    return int(Decimal(repr(float(value))).quantize(Decimal("0.000001"), rounding=ROUND_DOWN) * US)


def ticks_to_us(ticks: int, tb: Fraction) -> int:
    return rescale_near(int(ticks), tb.numerator * US, tb.denominator)


def us_to_ticks(us: int, tb: Fraction) -> int:
    return rescale_near(int(us), tb.denominator, tb.numerator * US)


def format_duration_s(pts: np.ndarray, end_pts: int, tb: Fraction) -> float:
    """ffprobe's format duration of a video-only file (what the MSR-VTT loaders use as the video's end):
    the stream's span in whole microseconds, as printed with 6 decimals."""
    return ticks_to_us(int(end_pts) - int(pts[0]), tb) / US


def cut_slots(pts: np.ndarray, tb: Fraction, end_pts: int, start_s: float, length_s: float, fps: float,
              num_frames: int) -> np.ndarray:
    """Frame numbers (0-based, presentation order; -1 = zero padding) that fill the num_frames slots of
    ``ffmpeg -ss start_s -t length_s -i FILE -vf fps=fps``. pts: int64 [n] sorted presentation timestamps
    in time base tb; end_pts: the stream's end (last pts + its duration)."""
    out = np.full(num_frames, -1, dtype=np.int64)
    pts = np.asarray(pts, dtype=np.int64)
    if pts.size == 0:
        return out
    rate = Fraction(fps).limit_denominator(1_000_000)
    off = us_to_ticks(seconds_to_us(start_s) + ticks_to_us(int(pts[0]), tb), tb)
    shifted = pts - off
    kept = np.flatnonzero(shifted >= 0)
    if kept.size == 0:
        return out
    first = int(shifted[kept[0]])
    limit = us_to_ticks(seconds_to_us(length_s), tb)
    inside = kept[shifted[kept] - first < limit]
    beyond = kept[shifted[kept] - first >= limit]
    eof = int(shifted[beyond[0]]) if beyond.size else int(end_pts) - off
    num, den = tb.numerator * rate.numerator, tb.denominator * rate.denominator
    slots = np.array([rescale_near(int(p), num, den) for p in shifted[inside]], dtype=np.int64)
    last_slot = rescale_near(eof, num, den)  # slots run up to, not including, the rounded end of stream
    k = np.arange(int(slots[0]), min(last_slot, int(slots[0]) + num_frames), dtype=np.int64)
    if k.size:
        out[: k.size] = inside[np.searchsorted(slots, k, side="right") - 1]
    return out
