"""Fault-injection harness: run pipeline stages in throw-away processes, kill them, compare their outputs.

A pipeline command costs 3-5 s of interpreter and torch import; dozens of kill trials would not fit in CI.
So a stage runs in a child forked from a `forkserver` that imported the whole stack once (and never ran a
model, so no thread pools exist at fork time): the child does exactly what `vtpipe run PIPELINE.yaml
--stage S` does (pipeline.runner.run_pipeline under the run lock, local executor) and is killed with
SIGKILL at a named fault point (stages.contract.faults) or after a delay. The signal tests go through the real CLI.

Outputs are compared with the clean run's, file by file: HDF5 stores dataset by dataset and attribute by
attribute, index_infos.json without its timings, manifests by fingerprint/counts/failures/outputs, every
other file byte for byte.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import shutil
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

STAGES = ("compress", "extract", "concat", "index", "evaluate")
# folders (relative to the run directory) each stage writes; deleting them returns the stage to "not run"
STAGE_DIRS = {"compress": ["compress"], "extract": ["extract"], "concat": ["features"], "index": ["index"],
              "evaluate": ["eval"]}
# index_infos.json keys that are measurements of speed, not results
TIMING_KEYS = ("seconds", "per_s", "speedup")
MANIFEST_KEYS = ("stage", "task_id", "fingerprint", "outputs", "counts", "failures")

SEED = os.environ.get("VTPIPE_FAULT_SEED", "0")  # another seed: another set of kill points
SCALE = max(1, int(os.environ.get("VTPIPE_FAULT_SCALE", "1")))  # more trials per stage (a longer soak)

_CTX = None


def context():
    """The forkserver context, preloaded with the pipeline stack (started once per test session)."""
    global _CTX
    if _CTX is None:
        from multiprocessing import forkserver

        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["faults.harness_preload"])
        # the server imports its preload modules before it applies our sys.path (Python <= 3.11): give it
        # the tests folder through PYTHONPATH while it starts
        old = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = os.pathsep.join(x for x in (str(Path(__file__).parents[1]), old) if x)
        try:
            forkserver.ensure_running()
        finally:
            if old is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = old
        _CTX = ctx
    return _CTX


def _child(yaml_path: str, run_dir: str, only: list[str], env: dict[str, str], report: str) -> None:
    """In the forked child: `vtpipe run yaml -o run_dir --stage ...` minus the interpreter start."""
    os.environ.update(env)
    os.setpgrp()  # its own process group: whatever it starts (decode workers, ffmpeg) can be found later
    multiprocessing.set_start_method("fork", force=True)  # as in a `vtpipe` process (decode workers fork)
    from stages.contract import faults
    faults._counts.clear()
    from pipeline import config as config_mod
    from pipeline.executors import LocalExecutor
    from pipeline.runner import run_pipeline

    lines: list[str] = []
    out: dict[str, Any] = {"echo": lines}
    try:
        cfg = config_mod.load_pipeline(yaml_path)
        reps = run_pipeline(cfg, Path(run_dir), LocalExecutor(1), echo=lines.append, only=only)
        out["reports"] = [{"stage": r.stage, "tasks": r.tasks, "already_complete": r.already_complete,
                           "ran": r.ran, "errors": r.errors, "failures": dict(r.failures)} for r in reps]
        out["ok"] = all(r.complete for r in reps)
    except BaseException as e:  # noqa: BLE001 - reported to the parent
        out["ok"] = False
        out["error"] = f"{type(e).__name__}: {e}"
    # written whole or not at all: a kill landing here must not leave the parent an empty report
    tmp = Path(f"{report}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(out))
    os.replace(tmp, report)
    os._exit(0 if out["ok"] else 1)


def group_members(pgid: int) -> list[int]:
    """Live processes of a process group (from /proc; [] where there is no /proc)."""
    out = []
    for d in Path("/proc").glob("[0-9]*"):
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            out.append(int(d.name))
    return out


def lingering_after(pgid: int, patience: float = 30.0) -> list[int]:
    """Processes the dead child left behind that are still alive after `patience` seconds (then killed)."""
    deadline = time.monotonic() + patience
    while (left := group_members(pgid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return left


@dataclass
class ChildRun:
    exitcode: int
    seconds: float
    report: dict = field(default_factory=dict)
    trace: Counter = field(default_factory=Counter)
    lingering: list[int] = field(default_factory=list)  # processes it started that outlived it

    @property
    def killed(self) -> bool:
        return self.exitcode == -signal.SIGKILL

    def stage_report(self, stage: str) -> dict:
        return next(r for r in self.report.get("reports", []) if r["stage"] == stage)

    def describe(self) -> str:
        return json.dumps({k: self.report.get(k) for k in ("ok", "error", "reports", "echo")}, indent=1)[-3000:]


def run_stage_child(yaml_path, run_dir, stages, env: dict | None = None, kill_after: float | None = None,
                    work: Path | None = None, timeout: float = 300) -> ChildRun:
    """Run `stages` of the pipeline in a forked child; SIGKILL it after `kill_after` seconds if given."""
    work = Path(work or run_dir).parent
    tag = f"{os.getpid()}-{time.monotonic_ns()}"
    report, trace = work / f"child-{tag}.json", work / f"child-{tag}.trace"
    env = {"VTPIPE_QUIET": "1", "VTPIPE_FAULT_TRACE": str(trace), **(env or {})}
    proc = context().Process(target=_child, args=(str(yaml_path), str(run_dir), list(stages), env, str(report)))
    t0 = time.perf_counter()
    proc.start()
    if kill_after is not None:
        proc.join(kill_after)
        if proc.is_alive():
            os.kill(proc.pid, signal.SIGKILL)
    proc.join(timeout)
    if proc.is_alive():
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
        raise AssertionError(f"stage child {stages} did not finish within {timeout} s")
    secs = time.perf_counter() - t0
    left = lingering_after(proc.pid)
    try:
        rep = json.loads(report.read_text()) if report.exists() else {}
    except ValueError as e:  # cannot happen with the atomic write; say so plainly if it ever does
        raise AssertionError(f"the child's report {report} is not JSON: {e}") from e
    counts = Counter(trace.read_text().split()) if trace.exists() else Counter()
    report.unlink(missing_ok=True)
    trace.unlink(missing_ok=True)
    return ChildRun(proc.exitcode, secs, rep, counts, left)


# ---- choosing kill points ------------------------------------------------------------------------------
def named_kill(trace: Counter, seed: str, trial: int) -> tuple[str, int]:
    """Trial i of a stage: the points the clean run reached, taken round-robin from a seeded offset, and a
    seeded occurrence among that point's occurrences."""
    points = sorted(trace)
    offset = random.Random(f"{seed}/offset").randrange(len(points))
    point = points[(offset + trial) % len(points)]
    n = random.Random(f"{seed}/{trial}").randint(1, trace[point])
    return point, n


def timed_kill(clean_seconds: float, seed: str, trial: int) -> float:
    return random.Random(f"{seed}/timed/{trial}").uniform(0.1, 0.9) * clean_seconds


# ---- run directory state -------------------------------------------------------------------------------
def stage_paths(run_dir: Path, stage: str) -> list[Path]:
    return [run_dir / d for d in STAGE_DIRS[stage]]


def restore_run(run_dir: Path, ref_dir: Path) -> None:
    """Put the whole run back to the clean reference (mtimes included), so a trial never sees what an earlier
    trial left behind, whatever it did or however it failed."""
    shutil.rmtree(run_dir, ignore_errors=True)
    shutil.copytree(ref_dir, run_dir, symlinks=True)


def reset_stage(run_dir: Path, stage: str) -> None:
    for d in stage_paths(run_dir, stage):
        shutil.rmtree(d, ignore_errors=True)


def files_under(run_dir: Path, stage: str) -> dict[str, Path]:
    """Every file a stage left (relative path -> path), hidden ones included."""
    out = {}
    for d in stage_paths(run_dir, stage):
        if d.exists():
            for p in sorted(d.rglob("*")):
                if p.is_file() or p.is_symlink():
                    out[str(p.relative_to(run_dir))] = p
    return out


def is_hidden(rel: str) -> bool:
    return any(part.startswith(".") for part in Path(rel).parts)


def valid_manifests(run_dir: Path, stage: str) -> dict[str, dict]:
    out = {}
    for rel, p in files_under(run_dir, stage).items():
        if "/_manifests/" in f"/{rel}" and not is_hidden(rel):
            out[rel] = json.loads(p.read_text())  # a torn manifest fails here
    return out


# ---- comparing with the clean run ----------------------------------------------------------------------
def _norm_infos(d: dict) -> dict:
    return {k: v for k, v in d.items() if not any(t in k for t in TIMING_KEYS)}


def same_h5(a: Path, b: Path, rel: str, ignore_attrs: tuple[str, ...] = ()) -> None:
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        names_a, names_b = [], []
        fa.visit(names_a.append)
        fb.visit(names_b.append)
        assert sorted(names_a) == sorted(names_b), f"{rel}: datasets {sorted(names_a)} != {sorted(names_b)}"
        for n in names_a:
            if isinstance(fa[n], h5py.Dataset):
                x, y = fa[n][()], fb[n][()]
                assert x.dtype == y.dtype and x.shape == y.shape, f"{rel}:{n} {x.dtype}{x.shape} != {y.dtype}{y.shape}"
                np.testing.assert_array_equal(x, y, err_msg=f"{rel}:{n}")
        attrs_a = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in fa.attrs.items()
                   if k not in ignore_attrs}
        attrs_b = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in fb.attrs.items()
                   if k not in ignore_attrs}
        assert attrs_a == attrs_b, f"{rel}: attributes differ"


def _manifest_facts(m: dict) -> dict:
    facts = {k: m.get(k) for k in MANIFEST_KEYS}
    counts = dict(facts["counts"] or {})
    if "existing" in counts:  # compress: found in place by a re-run vs made now; the sum is the fact
        counts["compressed"] = counts.get("compressed", 0) + counts.pop("existing")
    facts["counts"] = counts
    return facts


def same_file(got: Path, want: Path, rel: str) -> None:
    name = got.name
    if "/_manifests/" in f"/{rel}":
        g, w = json.loads(got.read_text()), json.loads(want.read_text())
        assert _manifest_facts(g) == _manifest_facts(w), f"{rel}: {_manifest_facts(g)} != {_manifest_facts(w)}"
    elif name.endswith(".h5"):
        same_h5(got, want, rel)
    elif name == "index_infos.json":
        assert _norm_infos(json.loads(got.read_text())) == _norm_infos(json.loads(want.read_text())), rel
    else:
        assert got.read_bytes() == want.read_bytes(), f"{rel} differs from the clean run's"


def assert_no_torn_outputs(run_dir: Path, ref_dir: Path, stage: str) -> list[str]:
    """After a kill: every file under a final (non-hidden) name equals the clean run's file; hidden files are
    only writers' temporaries ('.*.tmp'). Returns the temporaries found."""
    temps = []
    for rel, p in files_under(run_dir, stage).items():
        if is_hidden(rel):
            assert p.name.startswith(".") and p.name.endswith(".tmp"), f"unexpected hidden file {rel}"
            temps.append(rel)
            continue
        if "/_failed/" in f"/{rel}":
            json.loads(p.read_text())
            continue
        want = ref_dir / rel
        assert want.exists(), f"{rel} exists after the kill but not in the clean run"
        same_file(p, want, rel)
    return temps


def assert_stage_equals_clean(run_dir: Path, ref_dir: Path, stage: str) -> None:
    got = {r for r in files_under(run_dir, stage) if not is_hidden(r)}
    want = {r for r in files_under(ref_dir, stage) if not is_hidden(r)}
    assert not [r for r in files_under(run_dir, stage) if is_hidden(r)], "temporaries left after the re-run"
    assert got == want, f"files differ: extra {sorted(got - want)}, missing {sorted(want - got)}"
    for rel in sorted(got):
        same_file(run_dir / rel, ref_dir / rel, rel)


def snapshot(paths: dict[str, Path]) -> dict[str, tuple[int, int]]:
    """(inode, mtime_ns) of files: an output that is rewritten changes both."""
    out = {}
    for rel, p in paths.items():
        st = p.stat()
        out[rel] = (st.st_ino, st.st_mtime_ns)
    return out
