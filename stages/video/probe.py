"""Probe a video with one cheap ffmpeg pass: stream facts plus exact per-frame timestamps.

There is no ffprobe in the bundled ffmpeg, so the probe runs
``ffmpeg -copyts -i file:X -map 0:V:0 -c copy -f framecrc -``: no decoding, just demuxing. Its stderr
carries the container header (duration, codec, size, frame rate, display matrix); its stdout lists every
video packet with its integer pts/dts/duration in the stream time base. Sorting the pts gives the exact
presentation timestamps of the frames (decord only reports them as float32 seconds, which is not precise
enough to be exact for long 29.97 fps videos).

Bad input is classified here, before any decoder sees it, and raised as VideoError with a reason code.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from stages.video.errors import VideoError
from stages.video.ffmpeg import file_url, run_ffmpeg, stderr_tail

AV_NOPTS = -(2**63)
_PKT_FLAG_CORRUPT = 0x2
_PKT_FLAG_DISCARD = 0x4
# ISO-BMFF (mp4/mov/m4v/3gp) top-level box types: a file starting with one of these is an mp4 of some sort
_MP4_BOXES = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid", b"styp", b"sidx", b"moof"}


@dataclass
class VideoInfo:
    """What the probe learnt about a video's first (non-cover-art) video stream."""

    path: str
    codec: str
    width: int  # coded (stored) size
    height: int
    rotation: int  # display-matrix rotation, degrees counter-clockwise, one of 0/90/180/270
    fps: float  # the container's average frame rate (0.0 when unknown)
    duration_s: float  # container duration (0.0 when unknown)
    num_frames: int  # number of video packets (= frames for every ordinary codec)
    time_base: Fraction
    pts: np.ndarray  # int64 [num_frames], presentation order (sorted), in time_base units
    end_pts: int  # pts + duration of the last frame in presentation order (the stream's end)
    has_audio: bool = False
    file_size: int = 0
    sar: Fraction = Fraction(1)  # sample (pixel) aspect ratio of the stored pixels; 1 when unset
    warnings: list[str] = field(default_factory=list)

    @property
    def display_width(self) -> int:
        return self.height if self.rotation in (90, 270) else self.width

    @property
    def display_height(self) -> int:
        return self.width if self.rotation in (90, 270) else self.height

    @property
    def display_sar(self) -> Fraction:
        """The pixel aspect ratio in display orientation (a 90/270 degree rotation swaps it)."""
        return 1 / self.sar if self.rotation in (90, 270) else self.sar

    def aspect_size(self, aspect: str = "stored") -> tuple[int, int]:
        """(w, h) in display orientation: the stored pixels ("stored", what every reference reader sees), or
        corrected to the display aspect ratio ("display", what a person sees: width times the SAR, rounded)."""
        w, h = self.display_width, self.display_height
        if aspect == "stored" or self.display_sar == 1:
            return w, h
        if aspect != "display":
            raise ValueError(f"aspect must be 'stored' or 'display', got {aspect!r}")
        return max(1, math.floor(w * self.display_sar + Fraction(1, 2))), h

    @property
    def timestamps_s(self) -> np.ndarray:
        """Exact frame start times in seconds (float64), presentation order, as the container stores them."""
        return _ticks_to_s(self.pts, self.time_base)

    @property
    def end_s(self) -> float:
        """The stream's end time in seconds: last frame's timestamp + its duration."""
        return float(_ticks_to_s(np.array([self.end_pts], dtype=np.int64), self.time_base)[0])

    @property
    def stream_duration_s(self) -> float:
        """From the first frame's start to the stream's end."""
        if self.num_frames == 0:
            return 0.0
        return float((self.end_pts - int(self.pts[0])) * self.time_base)

    @property
    def is_vfr(self) -> bool:
        """True when frame durations differ by more than 1% (variable frame rate)."""
        if self.num_frames < 3:
            return False
        d = np.diff(self.pts)
        return bool(d.max() > 1.01 * d.min())

    def as_dict(self) -> dict:
        return {
            "codec": self.codec,
            "width": self.width,
            "height": self.height,
            "rotation": self.rotation,
            "display_width": self.display_width,
            "display_height": self.display_height,
            "sar": f"{self.sar.numerator}:{self.sar.denominator}",
            "fps": round(self.fps, 6),
            "duration_s": round(self.duration_s, 6),
            "stream_duration_s": round(self.stream_duration_s, 6),
            "num_frames": self.num_frames,
            "vfr": self.is_vfr,
            "has_audio": self.has_audio,
            "file_size": self.file_size,
        }


def _ticks_to_s(ticks: np.ndarray, tb: Fraction) -> np.ndarray:
    # exact integer products first, one rounding at the end
    return (ticks.astype(np.float64) * tb.numerator) / tb.denominator


def check_file(path: str | os.PathLike) -> int:
    """Raise VideoError for a missing / unreadable / empty path; return the file size."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise VideoError("missing", f"no such file: {str(p)!r}", str(p)) from None
    except OSError as e:
        raise VideoError("unreadable", f"cannot stat {str(p)!r}: {e}", str(p)) from None
    if not p.is_file():
        raise VideoError("unreadable", f"{str(p)!r} is not a regular file", str(p))
    if not os.access(p, os.R_OK):
        raise VideoError("unreadable", f"no permission to read {str(p)!r}", str(p))
    if st.st_size == 0:
        raise VideoError("empty_file", "the file has 0 bytes", str(p))
    return st.st_size


def _looks_like_mp4(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError:
        return False
    return len(head) >= 8 and head[4:8] in _MP4_BOXES


_RE_DURATION = re.compile(r"Duration:\s*(N/A|(\d+):(\d+):(\d+(?:\.\d+)?))")
_RE_STREAM = re.compile(r"^\s*Stream #0:(\d+)[^:]*:\s*(Video|Audio|Subtitle|Data|Attachment):\s*(.*)$")
_RE_SIZE = re.compile(r"(?:,|\s)(\d{1,6})x(\d{1,6})(?:[\s,\[]|$)")
_RE_FPS = re.compile(r"([\d.]+)(k?) fps")
_RE_TBR = re.compile(r"([\d.]+)(k?) tbr")
_RE_SAR = re.compile(r"\[SAR (\d+):(\d+) DAR \d+:\d+\]")
_RE_ROT = re.compile(r"display\s*matrix:\s*rotation of\s*(-?[\d.]+)\s*degrees", re.I)
_RE_TB = re.compile(r"^#tb 0:\s*(\d+)/(\d+)")


def _parse_rate(m: re.Match | None) -> float:
    if not m:
        return 0.0
    v = float(m.group(1))
    return v * 1000 if m.group(2) == "k" else v


def _header(stderr: str) -> list[str]:
    """The 'Input #0' part of ffmpeg's stderr (the Output part repeats stream lines)."""
    lines = stderr.splitlines()
    out = []
    started = False
    for ln in lines:
        if ln.startswith("Input #0"):
            started = True
        elif started and (ln.startswith("Output #") or ln.startswith("Stream mapping")):
            break
        if started:
            out.append(ln)
    return out


def _classify_open_failure(path: Path, stderr: str) -> VideoError:
    low = stderr.lower()
    if "no such file" in low:
        return VideoError("missing", f"no such file: {str(path)!r}", str(path))
    if "permission denied" in low:
        return VideoError("unreadable", "permission denied", str(path))
    if "moov atom not found" in low and _looks_like_mp4(path):
        return VideoError("truncated", "mp4 without its index (moov atom): the file was cut short", str(path))
    if "invalid data found" in low or "moov atom not found" in low or "could not find codec" in low:
        return VideoError("not_a_video", f"ffmpeg cannot read it as media: {stderr_tail(stderr, 2)}", str(path))
    return VideoError("unreadable", f"ffmpeg cannot open it: {stderr_tail(stderr, 3)}", str(path))


def probe_video(path: str | os.PathLike, timeout: float | None = 300) -> VideoInfo:
    """Probe `path`: header facts plus exact timestamps of every frame. Raises VideoError for bad input."""
    p = Path(path)
    size = check_file(p)
    proc = run_ffmpeg(
        ["-loglevel", "info", "-copyts", "-i", file_url(p), "-map", "0:V:0?", "-c", "copy", "-f", "framecrc", "-"],
        timeout=timeout,
        check=False,
        path=str(p),
    )
    stderr = proc.stderr
    header = _header(stderr)
    if not header:
        raise _classify_open_failure(p, stderr)

    duration = 0.0
    video: tuple[str, str] | None = None  # (stream line rest, side data text)
    has_audio = False
    rotation_deg = 0.0
    current_is_video = False
    for ln in header:
        m = _RE_DURATION.search(ln)
        if m and m.group(1) != "N/A":
            duration = int(m.group(2)) * 3600 + int(m.group(3)) * 60 + float(m.group(4))
        ms = _RE_STREAM.match(ln)
        if ms:
            kind, rest = ms.group(2), ms.group(3)
            current_is_video = False
            if kind == "Audio":
                has_audio = True
            elif kind == "Video" and "attached pic" not in rest and video is None:
                video = (rest, "")
                current_is_video = True
            continue
        mr = _RE_ROT.search(ln)
        if mr and current_is_video:
            rotation_deg = float(mr.group(1))
    if video is None:
        kinds = "audio only" if has_audio else "no video stream"
        raise VideoError("no_video_stream", f"the file has no video stream ({kinds})", str(p))

    rest = video[0]
    codec = rest.split(",")[0].split()[0] if rest.strip() else "unknown"
    msize = _RE_SIZE.search(rest)
    if not msize:
        raise VideoError("not_a_video", f"video stream without a frame size: {rest[:120]!r}", str(p))
    width, height = int(msize.group(1)), int(msize.group(2))
    fps = _parse_rate(_RE_FPS.search(rest)) or _parse_rate(_RE_TBR.search(rest))
    rotation = int(round(rotation_deg / 90.0)) * 90 % 360
    msar = _RE_SAR.search(rest)
    sar = Fraction(int(msar.group(1)), int(msar.group(2))) if msar and int(msar.group(1)) > 0 and int(msar.group(2)) > 0 else Fraction(1)

    # ---- packets -------------------------------------------------------------------------------------------
    tb = None
    rows: list[tuple[int, int, int, int]] = []  # (pts, dts, duration, flags)
    for ln in proc.stdout.splitlines():
        if not ln:
            continue
        if ln[0] == "#":
            mt = _RE_TB.match(ln)
            if mt:
                tb = Fraction(int(mt.group(1)), int(mt.group(2)))
            continue
        parts = [x.strip() for x in ln.split(",")]
        if len(parts) < 6 or parts[0] != "0":
            continue
        flags = 0
        if len(parts) >= 7 and parts[6].startswith("F="):
            flags = int(parts[6][2:], 16)
        rows.append((int(parts[2]), int(parts[1]), int(parts[3]), flags))

    warnings: list[str] = []
    low = stderr.lower()
    if "partial file" in low or any(r[3] & _PKT_FLAG_CORRUPT for r in rows):
        raise VideoError("truncated", f"the file ends inside the data: {stderr_tail(stderr, 2)}", str(p))
    if proc.returncode != 0 and not rows:
        raise VideoError("decode_error", f"ffmpeg cannot read the video stream: {stderr_tail(stderr, 3)}", str(p))
    if proc.returncode != 0:
        warnings.append(f"ffmpeg exit status {proc.returncode}: {stderr_tail(stderr, 2)}")

    rows = [r for r in rows if not (r[3] & _PKT_FLAG_DISCARD)]
    if tb is None:
        tb = Fraction(1, 90000)
    if rows:
        pts = np.array([r[0] for r in rows], dtype=np.int64)
        if (pts == AV_NOPTS).any():  # some containers (avi, raw streams) carry only dts
            pts = np.array([r[1] for r in rows], dtype=np.int64)
            warnings.append("no pts in the container: using dts")
        order = np.argsort(pts, kind="stable")
        durs = np.array([r[2] for r in rows], dtype=np.int64)[order]
        pts = pts[order]
        last_dur = int(durs[-1])
        if last_dur <= 0:
            # unknown packet duration: the typical frame step, else one nominal frame
            if len(pts) >= 2:
                last_dur = int(np.median(np.diff(pts)))
            elif fps > 0:
                last_dur = int(round(1 / (fps * tb)))
        end_pts = int(pts[-1]) + max(last_dur, 0)
    else:
        pts = np.zeros(0, dtype=np.int64)
        end_pts = 0
    if fps <= 0 and len(pts) >= 2 and end_pts > pts[0]:
        fps = float(len(pts) / ((end_pts - int(pts[0])) * tb))
    if duration <= 0 and len(pts):
        duration = float((end_pts - int(pts[0])) * tb)
    return VideoInfo(
        path=str(p),
        codec=codec,
        width=width,
        height=height,
        rotation=rotation,
        fps=fps,
        duration_s=duration,
        num_frames=int(len(pts)),
        time_base=tb,
        pts=pts,
        end_pts=end_pts,
        has_audio=has_audio,
        file_size=size,
        warnings=warnings,
        sar=sar,
    )


def short_side_size(width, height, short_side: int, even: bool = False) -> tuple[int, int]:
    """(w, h) with the short side = short_side and the aspect ratio kept; the long side truncated as
    torchvision's ``Resize(int)`` does (``int(short_side * long / short)``), or rounded down to an even
    number when even=True (yuv420p needs even sides; CLIP4Clip's compress script rounds down to even too).
    width/height may be Fractions (a display size corrected by the pixel aspect ratio)."""
    if width <= 0 or height <= 0:
        raise ValueError(f"bad frame size {width}x{height}")
    if short_side <= 0:
        raise ValueError(f"short_side must be positive, got {short_side}")
    short, long_ = min(width, height), max(width, height)
    if isinstance(width, int) and isinstance(height, int) and not even:
        new_long = max(1, int(short_side * long_ / short))  # float arithmetic, exactly as torchvision
    else:
        exact = Fraction(short_side) * Fraction(long_) / Fraction(short)
        new_long = max(2, 2 * math.floor(exact / 2)) if even else max(1, math.floor(exact))
    return (new_long, short_side) if width >= height else (short_side, new_long)
