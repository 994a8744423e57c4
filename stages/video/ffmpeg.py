"""Finding the ffmpeg binary and running it safely.

The binary is, in order: $VTPIPE_FFMPEG, the one bundled with imageio-ffmpeg, then `ffmpeg` on PATH.
Commands are argument lists (never a shell string); file names are passed as ``file:<absolute path>`` so a
name starting with '-' or looking like a protocol ('http:', 'concat:') is only ever read as a local file.
"""

from __future__ import annotations

import errno
import functools
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Sequence

from stages.contract.errors import VtpipeError
from stages.video.errors import VideoError, VideoInterrupted

ENV_VAR = "VTPIPE_FFMPEG"


@functools.lru_cache(maxsize=None)
def find_ffmpeg() -> str:
    """Path of the ffmpeg executable; raises VtpipeError naming the fix when there is none."""
    env = os.environ.get(ENV_VAR)
    if env:
        if not (os.path.isfile(env) and os.access(env, os.X_OK)):
            raise VtpipeError(f"${ENV_VAR}={env!r} is not an executable file; point it at an ffmpeg binary or unset it")
        return env
    try:
        import imageio_ffmpeg

        exe = imageio_ffmpeg.get_ffmpeg_exe()
        if exe and os.path.isfile(exe):
            return exe
    except Exception:  # noqa: BLE001 - imageio-ffmpeg missing or without a binary: try PATH
        pass
    exe = shutil.which("ffmpeg")
    if exe:
        return exe
    raise VtpipeError(
        f"no ffmpeg found: install imageio-ffmpeg (pip install imageio-ffmpeg), put ffmpeg on PATH, or set ${ENV_VAR}"
    )


@functools.lru_cache(maxsize=None)
def ffmpeg_encoders(exe: str | None = None) -> frozenset[str]:
    """Names of the video/audio encoders the ffmpeg build has (e.g. 'libx264')."""
    exe = exe or find_ffmpeg()
    out = subprocess.run([exe, "-hide_banner", "-encoders"], capture_output=True, text=True, timeout=60)
    names = set()
    for line in out.stdout.splitlines():
        parts = line.split()
        # encoder rows look like " V....D libx264   libx264 H.264 ..."; the legend rows have '=' in them
        if len(parts) >= 2 and len(parts[0]) == 6 and parts[0][0] in "VAS" and "=" not in line:
            names.add(parts[1])
    return frozenset(names)


def has_encoder(name: str) -> bool:
    return name in ffmpeg_encoders()


def ffmpeg_version() -> str:
    """First line of `ffmpeg -version` (for provenance)."""
    out = subprocess.run([find_ffmpeg(), "-version"], capture_output=True, text=True, timeout=60)
    return out.stdout.splitlines()[0] if out.stdout else "unknown"


def file_url(path: str | os.PathLike) -> str:
    """`file:<absolute path>`: ffmpeg reads it as a local file whatever characters the name holds."""
    return "file:" + str(Path(path).absolute())


def stderr_tail(text: str, lines: int = 6, chars: int = 800) -> str:
    """The last meaningful lines of ffmpeg's stderr, for error details."""
    keep = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("frame=")]
    tail = " | ".join(keep[-lines:])
    return tail[-chars:]


# signals that come from outside (a terminal, a scheduler, the OOM killer), never from the file being read
_OUTSIDE_SIGNALS = {signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT}
_RE_RECEIVED = re.compile(r"received signal (\d+)")
_WRITE_ERRORS = ((errno.ENOSPC, "No space left on device"), (errno.EDQUOT, "Disk quota exceeded"),
                 (errno.EFBIG, "File too large"), (errno.EROFS, "Read-only file system"))


def _outside_failure(returncode: int, stderr: str, path: str | None, output: str | None) -> Exception | None:
    """The error to raise when ffmpeg failed for a reason that is not the input video's: stopped by a signal
    (VideoInterrupted) or unable to write its output (OSError with errno ENOSPC, EDQUOT, EFBIG, EROFS)."""
    what = f" while reading {path}" if path else ""
    if returncode < 0 and -returncode in _OUTSIDE_SIGNALS or (returncode != 0 and _RE_RECEIVED.search(stderr)):
        m = _RE_RECEIVED.search(stderr)
        sig = -returncode if returncode < 0 else int(m.group(1)) if m else 0
        return VideoInterrupted(f"ffmpeg was stopped by signal {sig}{what} (Ctrl-C, a scheduler, or the system "
                                f"out of memory); the video is not marked failed: run the same command again")
    if returncode < 0 and -returncode == getattr(signal, "SIGXFSZ", -1):
        return OSError(errno.EFBIG, "File too large (ffmpeg hit the file size limit)", output)
    if output is not None and returncode != 0:
        for code, text in _WRITE_ERRORS:
            if text.lower() in stderr.lower():
                return OSError(code, f"{text} (ffmpeg could not write its output{what})", output)
    return None


def run_ffmpeg(
    args: Sequence[str],
    *,
    timeout: float | None = None,
    check: bool = True,
    path: str | None = None,
    text_stdout: bool = True,
    output: str | None = None,
) -> subprocess.CompletedProcess:
    """Run ``ffmpeg -hide_banner -nostdin <args>`` and capture stdout/stderr.

    Raises VideoError('timeout') when it runs past `timeout` seconds (the process is killed) and, with
    check=True, VideoError('ffmpeg_failed') with the tail of stderr when it exits non-zero. Failures that
    are not the input's fault are never VideoErrors, whatever `check` says: VideoInterrupted when ffmpeg was
    stopped by a signal from outside, OSError (ENOSPC, EDQUOT, EFBIG, EROFS; filename `output`) when it
    could not write the file `output`.
    """
    cmd = [find_ffmpeg(), "-hide_banner", "-nostdin", *[str(a) for a in args]]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as e:
        raise VideoError("timeout", f"ffmpeg ran longer than {timeout} s and was stopped", path) from e
    except OSError as e:
        raise VtpipeError(f"cannot run ffmpeg {cmd[0]!r}: {e}; check ${ENV_VAR} or reinstall imageio-ffmpeg") from e
    stderr = proc.stderr.decode("utf-8", errors="replace")
    if proc.returncode != 0:
        outside = _outside_failure(proc.returncode, stderr, path, output)
        if outside is not None:
            raise outside
    stdout: str | bytes = proc.stdout.decode("utf-8", errors="replace") if text_stdout else proc.stdout
    result = subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)
    if check and proc.returncode != 0:
        raise VideoError("ffmpeg_failed", f"ffmpeg exit status {proc.returncode}: {stderr_tail(stderr)}", path)
    return result
