"""VideoError: one video could not be probed, compressed or decoded.

A failed video is data, not a crash: callers catch VideoError and record ``(video_id, err.reason, err.detail)``
in their failures table, then go on with the next video. Configuration mistakes (a bad crop name, an odd
output size) are not VideoErrors: they raise stages.contract.errors.VtpipeError / ConfigError.
"""

from __future__ import annotations

from typing import Any

#: Every reason code a VideoError may carry, with what it means.
REASONS: dict[str, str] = {
    "missing": "the file does not exist",
    "unreadable": "the path exists but cannot be read (a folder, no permission, I/O error)",
    "empty_file": "the file has zero bytes",
    "not_a_video": "ffmpeg does not recognise the file as a media container",
    "no_video_stream": "the container has no video stream (e.g. audio only)",
    "truncated": "the file ends early (cut download, missing index / moov atom, partial packets)",
    "too_short": "the video has fewer decodable frames than needed (zero frames, or below min_frames)",
    "decode_error": "the decoder failed on the stream",
    "ffmpeg_failed": "ffmpeg exited with an error, or produced an empty / undecodable output",
    "timeout": "ffmpeg did not finish within the time limit",
}


class VideoError(Exception):
    """One video failed. ``reason`` is a short snake_case code from REASONS, ``detail`` is human text."""

    def __init__(self, reason: str, detail: str, path: str | None = None) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown VideoError reason {reason!r}; use one of {sorted(REASONS)}")
        self.reason = reason
        self.detail = detail
        self.path = path
        super().__init__(f"{reason}: {detail}" + (f" ({path})" if path else ""))

    def __reduce__(self) -> tuple[Any, ...]:
        # picklable with its attributes, so it crosses process pools and dask workers intact
        return (VideoError, (self.reason, self.detail, self.path))

    def as_record(self, video_id: str, stage: str = "") -> dict[str, str]:
        """The failures-table row of this error: {"id", "stage", "reason", "detail"}."""
        return {"id": video_id, "stage": stage, "reason": self.reason, "detail": self.detail}


class VideoInterrupted(RuntimeError):
    """ffmpeg was stopped from outside (Ctrl-C, SIGTERM, the OOM killer's SIGKILL): the video is not at fault.

    Deliberately not a VideoError, so no stage records the video as failed (a failed video is final: the
    task's manifest would keep it failed for good). The task fails instead, and running the same command
    again retries it."""
