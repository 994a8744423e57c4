"""Named kill points for the crash-safety tests (test-only; free when unused).

Set VTPIPE_FAULT="<point>:<n>" and the process SIGKILLs itself the n-th time (1-based) it reaches
`fault_point("<point>")`. With VTPIPE_FAULT_ONCE=<file> as well, it fires only while <file> does not
exist (and creates it first), so a retried task on a restarted worker runs through. The points sit where a crash is most dangerous: after a video is decoded, after
a row is written into an open shard, after a shard is renamed into place but before its manifest.

Test knobs (all optional, read at each call):
- VTPIPE_FAULT_SIGNAL=TERM|INT|STOP|KILL: the signal sent instead of SIGKILL (a SIGTERM or Ctrl-C arriving at
  exactly that moment; STOP freezes the process there, e.g. while it holds the run lock). With the suffix
  ":group" (e.g. "INT:group") it goes to the whole process group, like Ctrl-C in a terminal (ffmpeg and
  decode workers get it too).
- VTPIPE_FAULT_DELAY="<point>:<seconds>": sleep that long every time the point is reached (a slowed task, so
  a test can cancel a job mid-task or run it past its walltime).
- VTPIPE_FAULT_TRACE=<file>: append the name of every point reached to <file>, one a line, so a test can
  count a clean run's points and choose kill points among those really reached.

Points: decoded, written (extract engine/stage); store_add (a video row appended to any store: extract
shards and the concat merge); compressed (compress: a video finished, between videos); index_write (index:
files written under temporary names, before any rename); atomic_before_rename / atomic_after_rename
(stages.contract.tasks.atomic_path: every output and manifest of every stage); before_manifest (executor).
"""

from __future__ import annotations

import os
import signal
import threading
import time

_counts: dict[str, int] = {}
_lock = threading.Lock()  # compress reaches points from several threads


def _trace(path: str, name: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{name}\n".encode())
    finally:
        os.close(fd)


def fault_point(name: str) -> None:
    trace = os.environ.get("VTPIPE_FAULT_TRACE")
    if trace:
        _trace(trace, name)
    delay = os.environ.get("VTPIPE_FAULT_DELAY")
    if delay and delay.partition(":")[0] == name:
        time.sleep(float(delay.partition(":")[2] or 1))
    spec = os.environ.get("VTPIPE_FAULT")
    if not spec:
        return
    point, _, nth = spec.partition(":")
    if point != name:
        return
    with _lock:
        _counts[name] = _counts.get(name, 0) + 1
        hit = _counts[name] == int(nth or 1)
    if not hit:
        return
    once = os.environ.get("VTPIPE_FAULT_ONCE")
    if once:
        try:
            os.close(os.open(once, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return
    sig_name, _, target = os.environ.get("VTPIPE_FAULT_SIGNAL", "KILL").upper().partition(":")
    sig = getattr(signal, f"SIG{sig_name}", signal.SIGKILL)
    if target == "GROUP":
        os.killpg(os.getpgrp(), sig)
    else:
        os.kill(os.getpid(), sig)
