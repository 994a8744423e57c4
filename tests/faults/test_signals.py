"""SIGTERM (a scheduler's cancel) and Ctrl-C (SIGINT to the whole process group: ffmpeg and decode workers get
it too) in the middle of compress and extract, through the real `vtpipe` command line.

Expected (the CLI turns SIGTERM into the same clean unwinding as Ctrl-C): the process exits by itself with a
non-zero status (not killed by the signal) and no traceback; no partial file under a final name, no
temporary left behind, no manifest for the interrupted task; finished tasks stay finished; a stage stops
promptly (the videos in flight finish, queued ones are not started); the same command again completes and
equals the clean run. Also: an ffmpeg killed from outside (the OOM killer) fails its task instead of marking
a good video as failed for good.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from faults.harness import (
    assert_no_torn_outputs,
    assert_stage_equals_clean,
    files_under,
    is_hidden,
    reset_stage,
    restore_run,
    run_stage_child,
    valid_manifests,
)

SIGNALS = {"sigterm": "TERM", "ctrl-c": "INT:group"}


def _default_signals() -> None:
    """A shell without job control starts background commands with SIGINT ignored, and children inherit
    that (pytest run as `cmd &` from a script, some CI runners): give the child the Ctrl-C a terminal user has."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`vtpipe ARGS` in its own session, so a signal sent to its process group never reaches pytest."""
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "VTPIPE_QUIET": "1", **(env or {})}, timeout=300,
                          start_new_session=True, preexec_fn=_default_signals)


def assert_clean_exit(proc: subprocess.CompletedProcess, what: str) -> None:
    assert proc.returncode > 0, (f"{what}: expected a clean non-zero exit, got {proc.returncode} "
                                 f"(negative: killed by the signal, no cleanup ran)\n{proc.stderr[-2000:]}")
    assert "Traceback" not in proc.stderr, f"{what}: a traceback instead of a message\n{proc.stderr[-3000:]}"


def mp4s(folder: Path) -> dict[str, Path]:
    return {p.name: p for p in folder.glob("*.mp4")}


@pytest.mark.faults
@pytest.mark.parametrize("how", list(SIGNALS))
def test_signal_during_compress(how, small_sample, fault_run, tmp_path):
    out = tmp_path / "small"
    args = ["compress", str(small_sample["videos"]), "-o", str(out), "--workers", "2"]  # one task of 8 videos
    proc = cli(*args, env={"VTPIPE_FAULT": "compressed:1", "VTPIPE_FAULT_SIGNAL": SIGNALS[how]})
    assert_clean_exit(proc, f"{how} during compress")
    clean = mp4s(fault_run.ref_dir / "compress")  # same settings as the pipeline's compress stage
    got = mp4s(out)
    for name, p in got.items():  # whole videos only, each the clean run's bytes
        assert p.read_bytes() == clean[name].read_bytes(), name
    assert len(got) < len(clean), f"{how}: the whole chunk was compressed after the signal: it did not stop"
    assert not list(out.glob(".*.tmp")), "temporaries left after a clean exit"
    assert not list(out.glob("_manifests/*.json")), "the interrupted task wrote a manifest"

    again = cli(*args)
    assert again.returncode == 0, again.stderr[-2000:]
    assert sorted(mp4s(out)) == sorted(clean)
    for name, p in mp4s(out).items():
        assert p.read_bytes() == clean[name].read_bytes(), name
    for name in got:  # the videos finished before the signal were kept, not redone
        assert (out / name).stat().st_mtime_ns == got[name].stat().st_mtime_ns


@pytest.mark.faults
@pytest.mark.parametrize("how", list(SIGNALS))
def test_signal_during_extract(how, fault_run):
    run, ref = fault_run.run_dir, fault_run.ref_dir
    restore_run(run, ref)
    reset_stage(run, "extract")
    # 8 videos in shards of 3, 3, 2: the 4th row written is the first video of shard-00001
    proc = cli("run", str(fault_run.yaml), "-o", str(run), "--stage", "extract",
               env={"VTPIPE_FAULT": "store_add:4", "VTPIPE_FAULT_SIGNAL": SIGNALS[how]})
    assert_clean_exit(proc, f"{how} during extract")
    assert_no_torn_outputs(run, ref, "extract")
    left = [r for r in files_under(run, "extract") if is_hidden(r)]
    assert not left, f"temporaries left after a clean exit: {left}"
    done = valid_manifests(run, "extract")
    assert sorted(Path(r).name for r in done) == ["shard-00000.json"], sorted(done)
    assert not list(run.glob("extract/*/_failed/*")), "an interruption was recorded as a task failure"

    again = run_stage_child(fault_run.yaml, run, ["extract"])
    assert again.exitcode == 0, again.describe()
    assert again.stage_report("extract")["already_complete"] == 1
    assert_stage_equals_clean(run, ref, "extract")


FAKE_FFMPEG = """#!{python}
import os, signal, sys
# the encoding call for one video dies as if the OOM killer had picked it; everything else is real ffmpeg
if sys.argv[-1].endswith(".tmp") and "/.{victim}.mp4." in sys.argv[-1]:
    os.kill(os.getpid(), signal.SIGKILL)
os.execv({real!r}, [{real!r}, *sys.argv[1:]])
"""


@pytest.mark.faults
def test_ffmpeg_killed_from_outside_is_retried_not_recorded(fault_run, tmp_path):
    from stages.video.ffmpeg import find_ffmpeg

    victim = sorted(mp4s(fault_run.ref_dir / "compress"))[3][: -len(".mp4")]
    fake = tmp_path / "ffmpeg"
    fake.write_text(FAKE_FFMPEG.format(python=sys.executable, victim=victim, real=find_ffmpeg()))
    fake.chmod(0o755)
    run = tmp_path / "run"
    hit = run_stage_child(fault_run.yaml, run, ["compress"], env={"VTPIPE_FFMPEG": str(fake)})
    assert hit.exitcode == 1, f"the stage finished although one ffmpeg was killed: {hit.describe()}"
    errors = [e for r in hit.report["reports"] for e in r["errors"]]
    assert len(errors) == 1 and "VideoInterrupted" in errors[0][1] and "signal 9" in errors[0][1], errors
    for m in valid_manifests(run, "compress").values():
        assert not m["failures"], f"a good video was recorded as failed: {m['failures']}"

    again = run_stage_child(fault_run.yaml, run, ["compress"])
    assert again.exitcode == 0, again.describe()
    assert again.stage_report("compress")["ran"] == 1  # only the task with the killed ffmpeg
    clean = mp4s(fault_run.ref_dir / "compress")
    assert sorted(mp4s(run / "compress")) == sorted(clean)
    for name, p in mp4s(run / "compress").items():
        assert p.read_bytes() == clean[name].read_bytes(), name
