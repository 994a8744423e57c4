"""Frame-sampling policies: which decoded frames make up each feature unit.

A policy maps a video's frame timestamps to a FrameSelection:

* ``indices``: int64 ``[U]`` (frame units) or ``[U, L]`` (clip units of L frames) of 0-based frame numbers
  in presentation order; **-1 means a zero (black, all-0) frame** (padding).
* ``mask``: bool ``[U]``; False marks a padding unit (every index of that unit is -1).
* ``times_s``: float64 ``[U]``: start time of each unit in seconds, relative to the first frame
  (the first frame is at 0.0); NaN for padding units.

Policies (``make_policy({"policy": name, ...})``), each reproducing a reference reader exactly:

==================  ====================================================================================
``fps``             exact timestamp resampling: unit k is the frame shown at t_k = k / fps (the last frame
                    whose timestamp <= t_k), for every t_k before the stream's end. Correct for 29.97 fps
                    and variable frame rate. Params: fps (3.0).
``all``             every frame.
``uniform``         ``linspace(0, n-1, num_frames).astype(int)``. Params: num_frames (8).
``clip4clip``       CLIP4Clip's OpenCV reader: fps_i = int(native fps); per second s the frames
                    s*fps_i + o, o in arange(0, fps_i, max(1, fps_i // framerate))[:framerate], stopping at
                    the first frame past the end; then max_frames kept by slice_framepos (0 head, 1 tail,
                    2 ``linspace(0, L-1, max_frames).astype(int)``); zero-padded to max_frames with mask.
                    Params: max_frames (12), framerate (1), slice_framepos (2, as in its published scripts).
``drl``             DRL's reader: stride = max(1, int(round(native fps / framerate))); positions
                    ``range(0, n, stride)`` (i.e. its ``range(f_start, f_end + 1, stride)`` with f_end = n-1);
                    more than max_frames -> ``linspace(0, L-1, max_frames).astype(int)``; zero-padded with
                    mask. Params: max_frames (12), framerate (1).
``tvtsv2-extract``  TVTSv2 feature-extraction script: ``linspace(0, n-1, num_frames).astype(int)``
                    (num_frames 12; repeats frames of short videos, no padding).
``tvtsv2-eval``     TVTSv2 zero-shot eval ('uniform' mode): m = min(num_frames, n) segments with edges
                    ``linspace(0, n, m+1).astype(int)``; per segment [a, b) the frame (a + b - 1) // 2;
                    zero-padded to num_frames with mask when n < num_frames.
``locvtp``          LocVTP extraction: clips of clip_len (16) consecutive frames starting at
                    ``arange(0, n, clip_len)``; the last clip padded by repeating the final frame.
``milnce-retrieval`` MIL-NCE / VT-TWINS retrieval eval (their ffmpeg loaders): num_clips (10) clips; clip starts
                    ``linspace(start, max(start, end - clip_len/fps - margin_s), num_clips)`` s (start = 0 or
                    segment_start_s, end = segment_end_s or ffprobe's format duration, not clamped); each
                    clip is what ``ffmpeg -ss start -t clip_len/fps + extra_s`` with ``fps=F`` outputs
                    (stages.video.ffmpeg_cut): slot j shows the last frame with timestamp < start +
                    (j + 1/2)/fps; slots past the cut's end are zero (-1). Every clip counts (mask True),
                    as the loaders average all windows. Params: fps (10), num_clips (10), clip_len (32),
                    margin_s (0.4), extra_s (0.1), segment_start_s, segment_end_s.
``milnce-ucf``      MIL-NCE UCF/HMDB eval: native frames, num_clips (10) clips of clip_len (32) consecutive
                    frames starting at ``linspace(0, max(0, n - clip_len), num_clips).astype(int)``; a video
                    shorter than clip_len gives clips of its n frames followed by zero frames (-1).
==================  ====================================================================================
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, fields
from fractions import Fraction
from typing import Any, ClassVar

import numpy as np

from stages.contract.errors import ConfigError

# Two timestamps closer than this are the same instant. Exact timestamps come as float64 from integer
# ticks, so the rounding error is ~1e-12 s; real frame/sample gaps are >= ~10 us (1/90000 s ticks).
TIME_EPS = 1e-6


@dataclass(frozen=True)
class FrameSelection:
    indices: np.ndarray  # int64 [U] or [U, L]; -1 = zero frame
    mask: np.ndarray  # bool [U]; False = padding unit
    times_s: np.ndarray  # float64 [U]; unit start relative to the first frame; NaN for padding
    unit: str = "frame"  # "frame" or "clip"

    def __post_init__(self) -> None:
        if self.indices.dtype != np.int64:
            object.__setattr__(self, "indices", self.indices.astype(np.int64))
        if self.mask.shape != (self.indices.shape[0],) or self.times_s.shape != (self.indices.shape[0],):
            raise ValueError(
                f"FrameSelection shapes disagree: indices {self.indices.shape}, mask {self.mask.shape}, "
                f"times {self.times_s.shape}"
            )

    @property
    def num_units(self) -> int:
        return int(self.indices.shape[0])

    @property
    def clip_len(self) -> int | None:
        return int(self.indices.shape[1]) if self.indices.ndim == 2 else None

    def needed_frames(self) -> np.ndarray:
        """Sorted unique frame numbers to decode (each decoded once, however often it is used)."""
        flat = self.indices.reshape(-1)
        return np.unique(flat[flat >= 0])


class SamplingPolicy(ABC):
    """Base of the policies. Subclasses are dataclasses whose fields are the policy's parameters."""

    name: ClassVar[str]
    unit: ClassVar[str] = "frame"

    @abstractmethod
    def select(self, timestamps_s: np.ndarray, native_fps: float, end_s: float | None = None) -> FrameSelection:
        """Pick the units. timestamps_s: float64 [n] frame start times, presentation order (any origin);
        native_fps: the container's average frame rate; end_s: the stream's end time on the same clock as
        timestamps_s (default: last timestamp + 1/native_fps)."""

    def describe(self) -> dict[str, Any]:
        """Provenance: {"policy": name, **params, "unit": ...}."""
        return {"policy": self.name, **asdict(self), "unit": self.unit}  # type: ignore[call-overload]


# ---- helpers ----------------------------------------------------------------------------------------------
def _prepare(timestamps_s: np.ndarray, native_fps: float, end_s: float | None) -> tuple[np.ndarray, float]:
    ts = np.asarray(timestamps_s, dtype=np.float64).reshape(-1)
    if ts.size == 0:
        raise ValueError("no frames to sample from (0 timestamps)")
    if np.any(np.diff(ts) < 0):
        raise ValueError("timestamps_s must be sorted (presentation order)")
    t0 = ts[0]
    rel = ts - t0
    if end_s is not None:
        end = float(end_s) - t0
    else:
        step = 1.0 / native_fps if native_fps and native_fps > 0 else (float(np.median(np.diff(rel))) if ts.size > 1 else 0.0)
        end = rel[-1] + step
    end = max(end, rel[-1] + TIME_EPS * 2)  # the last frame is always shown for some time
    return rel, end


def _frame_at(rel: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Index of the frame shown at each time t: the last frame whose timestamp <= t."""
    idx = np.searchsorted(rel, np.asarray(t, dtype=np.float64) + TIME_EPS, side="right") - 1
    return np.maximum(idx, 0).astype(np.int64)


def _pad_units(idx: np.ndarray, rel: np.ndarray, total: int) -> FrameSelection:
    """Frame units idx (real), zero-padded to `total` units with mask False."""
    k = len(idx)
    indices = np.full(total, -1, dtype=np.int64)
    indices[:k] = idx
    mask = np.zeros(total, dtype=bool)
    mask[:k] = True
    times = np.full(total, np.nan)
    times[:k] = rel[idx]
    return FrameSelection(indices, mask, times, "frame")


def _frames(idx: np.ndarray, rel: np.ndarray) -> FrameSelection:
    idx = np.asarray(idx, dtype=np.int64)
    return FrameSelection(idx, np.ones(len(idx), dtype=bool), rel[idx], "frame")


def _check_pos_int(name: str, value: Any, policy: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"sampling policy {policy!r}: {name} must be a positive integer, got {value!r}")
    return int(value)


def _check_pos_float(name: str, value: Any, policy: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not value > 0 or not math.isfinite(value):
        raise ConfigError(f"sampling policy {policy!r}: {name} must be a positive number, got {value!r}")
    return float(value)


# ---- policies ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FpsPolicy(SamplingPolicy):
    fps: float = 3.0
    name: ClassVar[str] = "fps"

    def __post_init__(self) -> None:
        object.__setattr__(self, "fps", _check_pos_float("fps", self.fps, self.name))

    def select(self, timestamps_s: np.ndarray, native_fps: float, end_s: float | None = None) -> FrameSelection:
        rel, end = _prepare(timestamps_s, native_fps, end_s)
        # t_k = k / fps for every k with t_k before the stream's end; at least one unit (k = 0)
        t = np.arange(math.ceil(end * self.fps) + 1, dtype=np.float64) / self.fps
        t = t[t < end - TIME_EPS]
        if t.size == 0:
            t = np.zeros(1)
        idx = _frame_at(rel, t)
        return FrameSelection(idx, np.ones(len(idx), dtype=bool), t, "frame")


@dataclass(frozen=True)
class AllPolicy(SamplingPolicy):
    name: ClassVar[str] = "all"

    def select(self, timestamps_s: np.ndarray, native_fps: float, end_s: float | None = None) -> FrameSelection:
        rel, _ = _prepare(timestamps_s, native_fps, end_s)
        return _frames(np.arange(len(rel)), rel)


@dataclass(frozen=True)
class UniformPolicy(SamplingPolicy):
    num_frames: int = 8
    name: ClassVar[str] = "uniform"

    def __post_init__(self) -> None:
        object.__setattr__(self, "num_frames", _check_pos_int("num_frames", self.num_frames, self.name))

    def select(self, timestamps_s: np.ndarray, native_fps: float, end_s: float | None = None) -> FrameSelection:
        rel, _ = _prepare(timestamps_s, native_fps, end_s)
        return _frames(np.linspace(0, len(rel) - 1, self.num_frames).astype(np.int64), rel)


@dataclass(frozen=True)
class Clip4ClipPolicy(SamplingPolicy):
    max_frames: int = 12
    framerate: int = 1
    slice_framepos: int = 2
    name: ClassVar[str] = "clip4clip"

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_frames", _check_pos_int("max_frames", self.max_frames, self.name))
        object.__setattr__(self, "framerate", _check_pos_int("framerate", self.framerate, self.name))
        if self.slice_framepos not in (0, 1, 2):
            raise ConfigError(
                f"sampling policy 'clip4clip': slice_framepos must be 0 (head), 1 (tail) or 2 (uniform), "
                f"got {self.slice_framepos!r}"
            )

    def positions(self, n: int, native_fps: float) -> np.ndarray:
        """Every frame the reader reads, before the max_frames cut."""
        fps = max(1, int(native_fps))  # OpenCV's int(CAP_PROP_FPS); guard the < 1 fps case
        duration = (n + fps - 1) // fps
        interval = max(1, fps // self.framerate)
        offsets = np.arange(0, fps, interval)[: self.framerate]
        if len(offsets) < self.framerate:
            raise ConfigError(
                f"sampling policy 'clip4clip': framerate {self.framerate} is above the video's {fps} fps; "
                f"lower framerate"
            )
        pos = (np.arange(duration + 1)[:, None] * fps + offsets[None, :]).reshape(-1)
        # the reader stops at the first frame that does not read; positions increase, so that is "keep < n"
        return pos[pos < n].astype(np.int64)

    def select(self, timestamps_s: np.ndarray, native_fps: float, end_s: float | None = None) -> FrameSelection:
        rel, _ = _prepare(timestamps_s, native_fps, end_s)
        pos = self.positions(len(rel), native_fps)
        if len(pos) > self.max_frames:
            if self.slice_framepos == 0:
                pos = pos[: self.max_frames]
            elif self.slice_framepos == 1:
                pos = pos[-self.max_frames :]
            else:
                pos = pos[np.linspace(0, len(pos) - 1, num=self.max_frames).astype(np.int64)]
        return _pad_units(pos, rel, self.max_frames)


@dataclass(frozen=True)
class DrlPolicy(SamplingPolicy):
    max_frames: int = 12
    framerate: int = 1
    name: ClassVar[str] = "drl"

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_frames", _check_pos_int("max_frames", self.max_frames, self.name))
        object.__setattr__(self, "framerate", _check_pos_int("framerate", self.framerate, self.name))

    def select(self, timestamps_s: np.ndarray, native_fps: float, end_s: float | None = None) -> FrameSelection:
        rel, _ = _prepare(timestamps_s, native_fps, end_s)
        stride = max(1, int(round(float(native_fps) / self.framerate)))
        pos = np.arange(0, len(rel), stride, dtype=np.int64)
        if len(pos) > self.max_frames:
            pos = pos[np.linspace(0, len(pos) - 1, num=self.max_frames).astype(np.int64)]
        return _pad_units(pos, rel, self.max_frames)


@dataclass(frozen=True)
class Tvtsv2ExtractPolicy(SamplingPolicy):
    num_frames: int = 12
    name: ClassVar[str] = "tvtsv2-extract"

    def __post_init__(self) -> None:
        object.__setattr__(self, "num_frames", _check_pos_int("num_frames", self.num_frames, self.name))

    def select(self, timestamps_s: np.ndarray, native_fps: float, end_s: float | None = None) -> FrameSelection:
        rel, _ = _prepare(timestamps_s, native_fps, end_s)
        return _frames(np.linspace(0, len(rel) - 1, self.num_frames).astype(np.int64), rel)


@dataclass(frozen=True)
class Tvtsv2EvalPolicy(SamplingPolicy):
    num_frames: int = 12
    name: ClassVar[str] = "tvtsv2-eval"

    def __post_init__(self) -> None:
        object.__setattr__(self, "num_frames", _check_pos_int("num_frames", self.num_frames, self.name))

    def select(self, timestamps_s: np.ndarray, native_fps: float, end_s: float | None = None) -> FrameSelection:
        rel, _ = _prepare(timestamps_s, native_fps, end_s)
        n = len(rel)
        m = min(self.num_frames, n)
        edges = np.linspace(0, n, m + 1).astype(np.int64)
        idx = (edges[:-1] + edges[1:] - 1) // 2
        return _pad_units(idx, rel, self.num_frames)


@dataclass(frozen=True)
class LocvtpPolicy(SamplingPolicy):
    clip_len: int = 16
    name: ClassVar[str] = "locvtp"
    unit: ClassVar[str] = "clip"

    def __post_init__(self) -> None:
        object.__setattr__(self, "clip_len", _check_pos_int("clip_len", self.clip_len, self.name))

    def select(self, timestamps_s: np.ndarray, native_fps: float, end_s: float | None = None) -> FrameSelection:
        rel, _ = _prepare(timestamps_s, native_fps, end_s)
        n = len(rel)
        starts = np.arange(0, n, self.clip_len, dtype=np.int64)
        idx = np.minimum(starts[:, None] + np.arange(self.clip_len)[None, :], n - 1)
        return FrameSelection(idx, np.ones(len(starts), dtype=bool), rel[starts], "clip")


@dataclass(frozen=True)
class MilnceRetrievalPolicy(SamplingPolicy):
    fps: float = 10.0
    num_clips: int = 10
    clip_len: int = 32
    margin_s: float = 0.4
    extra_s: float = 0.1  # the loaders cut clip_len / fps + extra_s seconds (ffmpeg -t)
    segment_start_s: float | None = None  # segment start (seconds on the container clock); default 0
    segment_end_s: float | None = None  # segment end; default the video's duration (ffprobe's format duration)
    name: ClassVar[str] = "milnce-retrieval"
    unit: ClassVar[str] = "clip"

    def __post_init__(self) -> None:
        object.__setattr__(self, "fps", _check_pos_float("fps", self.fps, self.name))
        object.__setattr__(self, "num_clips", _check_pos_int("num_clips", self.num_clips, self.name))
        object.__setattr__(self, "clip_len", _check_pos_int("clip_len", self.clip_len, self.name))
        for key in ("margin_s", "extra_s"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise ConfigError(f"sampling policy {self.name!r}: {key} must be >= 0, got {v!r}")

    def clip_starts(self, start: float, end: float) -> np.ndarray:
        span = self.clip_len / float(self.fps)
        return np.linspace(start, max(start, end - span - self.margin_s), self.num_clips)

    def select_ticks(self, pts: np.ndarray, time_base: Fraction, end_pts: int) -> FrameSelection:
        """The exact selection from integer timestamps (pts in time_base, sorted; end_pts = stream end)."""
        from stages.video.ffmpeg_cut import cut_slots, format_duration_s

        pts = np.asarray(pts, dtype=np.int64)
        if pts.size == 0:
            raise ValueError("no frames to sample from (0 timestamps)")
        start = 0.0 if self.segment_start_s is None else float(self.segment_start_s)
        end = format_duration_s(pts, end_pts, time_base) if self.segment_end_s is None else float(self.segment_end_s)
        starts = self.clip_starts(start, end)
        length = self.clip_len / float(self.fps) + self.extra_s
        idx = np.stack([cut_slots(pts, time_base, end_pts, float(s), length, self.fps, self.clip_len) for s in starts])
        return FrameSelection(idx, np.ones(self.num_clips, dtype=bool), starts.astype(np.float64), "clip")

    def select(self, timestamps_s: np.ndarray, native_fps: float, end_s: float | None = None) -> FrameSelection:
        """From float timestamps: rounded to microsecond ticks, then select_ticks (exact when the stream's
        time base divides a microsecond; readers that have the integer pts call select_ticks)."""
        rel, end = _prepare(timestamps_s, native_fps, end_s)
        t0 = float(np.asarray(timestamps_s, dtype=np.float64).reshape(-1)[0])
        pts = np.round((rel + t0) * 1e6).astype(np.int64)
        return self.select_ticks(pts, Fraction(1, 1_000_000), round((end + t0) * 1e6))


@dataclass(frozen=True)
class MilnceUcfPolicy(SamplingPolicy):
    num_clips: int = 10
    clip_len: int = 32
    name: ClassVar[str] = "milnce-ucf"
    unit: ClassVar[str] = "clip"

    def __post_init__(self) -> None:
        object.__setattr__(self, "num_clips", _check_pos_int("num_clips", self.num_clips, self.name))
        object.__setattr__(self, "clip_len", _check_pos_int("clip_len", self.clip_len, self.name))

    def select(self, timestamps_s: np.ndarray, native_fps: float, end_s: float | None = None) -> FrameSelection:
        rel, _ = _prepare(timestamps_s, native_fps, end_s)
        n = len(rel)
        starts = np.linspace(0, max(0, n - self.clip_len), self.num_clips).astype(np.int64)
        idx = starts[:, None] + np.arange(self.clip_len)[None, :]
        idx[idx >= n] = -1  # shorter than clip_len: zero-padded
        return FrameSelection(idx, np.ones(self.num_clips, dtype=bool), rel[starts], "clip")


POLICIES: dict[str, type[SamplingPolicy]] = {
    cls.name: cls
    for cls in (
        FpsPolicy,
        AllPolicy,
        UniformPolicy,
        Clip4ClipPolicy,
        DrlPolicy,
        Tvtsv2ExtractPolicy,
        Tvtsv2EvalPolicy,
        LocvtpPolicy,
        MilnceRetrievalPolicy,
        MilnceUcfPolicy,
    )
}


def make_policy(spec: dict[str, Any] | str | SamplingPolicy) -> SamplingPolicy:
    """A policy from a spec: {"policy": "fps", "fps": 3}, or just a name ("clip4clip") for its defaults."""
    if isinstance(spec, SamplingPolicy):
        return spec
    if isinstance(spec, str):
        spec = {"policy": spec}
    if not isinstance(spec, dict) or "policy" not in spec:
        raise ConfigError(f"a sampling spec is a dict with a 'policy' key (or a policy name), got {spec!r}")
    params = dict(spec)
    name = params.pop("policy")
    params.pop("unit", None)  # describe() output round-trips
    cls = POLICIES.get(name)
    if cls is None:
        raise ConfigError(f"unknown sampling policy {name!r}; choose one of {sorted(POLICIES)}")
    allowed = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ConfigError(f"sampling policy {name!r} has no parameter(s) {unknown}; it takes {sorted(allowed) or 'none'}")
    return cls(**params)
