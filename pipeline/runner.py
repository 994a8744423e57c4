"""Run stages of the graph in order: plan -> skip complete tasks -> execute the rest -> report.

Each stage is planned only after the stage before it has finished, so a plan can read its inputs' manifests.
A run directory is locked while a vtpipe process works in it: a second process refuses instead of
interleaving its writes.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from pipeline import config as config_mod
import importlib
from stages.contract.errors import VtpipeError
from stages.contract.layout import Layout
from stages.contract.tasks import Task, clean_stale_temporaries, is_complete, write_text_atomic

log = logging.getLogger("vtpipe")

STAGE_NAMES = ("compress", "extract", "concat", "index", "evaluate")


def stage_module(name: str):
    """The stages.<name> module (imported on first use: `vtpipe models` needs no video or FAISS stack)."""
    if name not in STAGE_NAMES:
        raise VtpipeError(f"unknown stage {name!r}; known: {list(STAGE_NAMES)}")
    return importlib.import_module(f"stages.{name}")


@dataclass
class StageReport:
    stage: str
    tasks: int = 0
    already_complete: int = 0
    ran: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)  # (task id, message)
    failures: Counter = field(default_factory=Counter)  # reason -> count of failed videos
    seconds: float = 0.0

    @property
    def complete(self) -> bool:
        return not self.errors


class RunLocked(VtpipeError):
    pass


# Lock fds this process holds. A forked child (a DataLoader decode worker, a fork-context pool) shares the
# open file description, and with it the flock: after a kill -9 of this process the orphaned child would keep
# the run directory locked, and "the same command again" would be refused until the child noticed and quit.
# Children close their copies right after the fork (the lock itself stays with this process).
_held_lock_fds: set[int] = set()


def _drop_inherited_locks() -> None:
    for fd in list(_held_lock_fds):
        try:
            os.close(fd)
        except OSError:
            pass
    _held_lock_fds.clear()


os.register_at_fork(after_in_child=_drop_inherited_locks)


def _flock(path: Path, exclusive: bool) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise
    _held_lock_fds.add(fd)
    return fd


@contextmanager
def run_lock(run_dir: Path, slice_index: int | None = None) -> Iterator[None]:
    """Lock a run directory for the life of the command; the kernel drops the lock with the process, also on
    kill -9. A normal command holds <run_dir>/.vtpipe.lock exclusively, so a second command on the same
    directory refuses instead of interleaving its writes. Array-job slices (disjoint tasks) share that lock
    and each holds its own slice lock, so slices run side by side but never beside a normal command.
    A command whose output lies inside another run directory (`vtpipe compress -o RUN/compress`) also
    shares that directory's lock, so it cannot interleave with a `vtpipe run -o RUN`."""
    run_dir.mkdir(parents=True, exist_ok=True)
    main_lock = run_dir / ".vtpipe.lock"
    fds = []
    try:
        for parent in run_dir.resolve().parents:
            if (parent / ".vtpipe.lock").is_file():
                try:
                    fds.append(_flock(parent / ".vtpipe.lock", exclusive=False))
                except BlockingIOError:
                    raise RunLocked(f"{parent} is in use by another vtpipe process and {run_dir} lies inside it; "
                                    "wait for it to finish (or use another --output)") from None
        try:
            fds.append(_flock(main_lock, exclusive=slice_index is None))
            if slice_index is not None:
                fds.append(_flock(run_dir / f".vtpipe.slice-{slice_index}.lock", exclusive=True))
        except BlockingIOError:
            raise RunLocked(f"{run_dir} is in use by another vtpipe process; wait for it to finish "
                            "(or use another --output)") from None
        yield
    finally:
        for fd in fds:
            _held_lock_fds.discard(fd)
            os.close(fd)


def slice_tasks(tasks: list[Task], shard_index: int | None, num_shards: int | None) -> list[Task]:
    """Array-job mode: task i of the plan belongs to slice i % num_shards."""
    if shard_index is None or num_shards is None:
        return tasks
    if not 0 <= shard_index < num_shards:
        raise VtpipeError(f"--shard-index must be in [0, {num_shards}), got {shard_index}")
    return [t for i, t in enumerate(tasks) if i % num_shards == shard_index]


def run_stage(
    name: str,
    tasks: list[Task],
    executor,
    overwrite: bool = False,
    echo: Callable[[str], None] = print,
    clean_temporaries: bool = True,
) -> StageReport:
    module = stage_module(name)
    t0 = time.perf_counter()
    rep = StageReport(name, tasks=len(tasks))
    if clean_temporaries:  # leftovers of writers killed in an earlier run (we hold the lock: none is alive)
        for d in sorted({t.stage_dir for t in tasks}):
            if Path(d).exists():
                clean_stale_temporaries(d)
    todo = []
    for t in tasks:
        if is_complete(t, overwrite=overwrite):
            rep.already_complete += 1
        else:
            if overwrite:
                t.runtime["overwrite"] = True
            todo.append(t)
    if not todo:
        echo(f"[{name}] complete: all {len(tasks)} task(s) already done")
        return rep
    echo(f"[{name}] running {len(todo)} of {len(tasks)} task(s) with the {executor.name} executor")

    def done(task: Task, outcome) -> None:
        if isinstance(outcome, BaseException):
            rep.errors.append((task.id, f"{type(outcome).__name__}: {outcome}"))
            echo(f"[{name}] task {task.id} FAILED: {type(outcome).__name__}: {outcome}")
            return
        rep.ran += 1
        for f in outcome.failures:
            rep.failures[f.get("reason", "unknown")] += 1
        extra = f", {len(outcome.failures)} video(s) failed" if outcome.failures else ""
        if "videos_per_s" in outcome.info:
            extra += (f", {outcome.counts.get('written', 0)} videos, {outcome.info['videos_per_s']} videos/s, "
                      f"{outcome.info['frames_per_s']} frames/s on {outcome.info.get('device')}")
        echo(f"[{name}] task {task.id} done in {outcome.seconds:.1f}s{extra}")

    executor.map(module.run_task, todo, on_done=done)
    rep.seconds = time.perf_counter() - t0
    if rep.failures:
        reasons = ", ".join(f"{r}: {n}" for r, n in rep.failures.most_common())
        echo(f"[{name}] failed videos by reason: {reasons}")
    return rep


def plan_stage(name: str, cfg: dict, layout: Layout) -> list[Task]:
    return stage_module(name).plan(cfg, layout)


def write_failures_table(run_dir: Path) -> Path | None:
    """<run_dir>/failures.csv: every failed video of every finished task (id, stage, reason, detail), from
    the manifests. Rewritten after each stage; absent while nothing failed."""
    import csv
    import io
    import json

    rows = []
    for mpath in sorted(run_dir.rglob("_manifests/*.json")):
        try:
            m = json.loads(mpath.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(m, dict):
            rows.extend(m.get("failures", []))
    out = run_dir / "failures.csv"
    if not rows:
        out.unlink(missing_ok=True)
        return None
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["id", "stage", "reason", "detail"], extrasaction="ignore")
    w.writeheader()
    w.writerows(sorted(rows, key=lambda r: (r.get("stage", ""), r.get("id", ""))))
    write_text_atomic(out, buf.getvalue())
    return out


def run_pipeline(
    cfg: dict,
    run_dir: Path,
    executor,
    overwrite: bool = False,
    shard_index: int | None = None,
    num_shards: int | None = None,
    echo: Callable[[str], None] = print,
    only: list[str] | None = None,
) -> list[StageReport]:
    """Run cfg["stages"] (or the `only` ones among them) in order into run_dir. Stops at the first stage
    with a failed task."""
    run_dir = Path(run_dir)
    layout = Layout(run_dir)
    reports = []
    with run_lock(run_dir, shard_index):
        write_text_atomic(layout.config, config_mod.dump(cfg))
        chosen = [s for s in cfg["stages"] if not only or s in only]
        for name in chosen:
            tasks = slice_tasks(plan_stage(name, cfg, layout), shard_index, num_shards)
            rep = run_stage(name, tasks, executor, overwrite=overwrite, echo=echo,
                            clean_temporaries=shard_index is None)
            reports.append(rep)
            if not rep.complete:
                echo(f"[{name}] {len(rep.errors)} task(s) failed; later stages were not run. Fix the cause and "
                     "run the same command again: finished tasks are kept.")
                break
            write_failures_table(run_dir)
            if shard_index is not None and name != chosen[-1]:
                echo(f"[{name}] array mode: slice {shard_index}/{num_shards} done; later stages need every slice, "
                     "so they run in their own job")
                break
    return reports
