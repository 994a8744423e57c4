"""Against a real one-node SLURM started by the tests (tests/slurm_cluster.py): array jobs from `vtpipe slurm`
chained by afterok, the slurm executor (dask-jobqueue worker jobs), and the ways jobs die on a cluster
(scancel, walltime, a worker job cancelled mid-task). Every run uses extract's default decode workers and the
default cluster settings (gpus auto: no GPU on this CPU-only partition; env_setup: this environment), and
every store must equal the local run's."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest

import slurm_cluster
import test_executors
from conftest import REPO, run_cli
from test_executors import decode_workers_used, same_outputs, write_pipeline
from test_extract_resume import assert_same_store

slurm = slurm_cluster.slurm  # the fixtures: a running test SLURM, and the local run to compare with
local_run = test_executors.local_run

pytestmark = pytest.mark.slurm
FINAL_PENDING = ("DependencyNeverSatisfied",)


def wait_jobs(slurm, ids: list[str], timeout: float = 600) -> list[dict]:
    """Wait until none of these jobs (and their array tasks) is queued or running; return their rows."""
    end = time.monotonic() + timeout
    rows: list[dict] = []
    while time.monotonic() < end:
        rows = [r for r in slurm.jobs() if r["id"].split("_")[0] in ids]
        active = [r for r in rows if r["state"] in ("RUNNING", "CONFIGURING", "COMPLETING")
                  or (r["state"] == "PENDING" and r["reason"] not in FINAL_PENDING)]
        if rows and not active:
            return rows
        time.sleep(1)
    raise AssertionError(f"jobs {ids} not finished after {timeout:.0f}s: {rows}\n{slurm.logs()}")


def sbatch(slurm, script, *opts: str, env: dict | None = None) -> str:
    p = slurm.run("sbatch", "--parsable", *opts, str(script), cwd=str(script.parent), env=env or {})
    return p.stdout.strip().split(";")[0]


def write_scripts(slurm, tmp_path, small_sample, *sets: str):
    y = write_pipeline(tmp_path, small_sample)
    run = tmp_path / "run"
    args = [a for s in sets for a in ("--set", s)]
    proc = run_cli("slurm", y, "-o", str(run), *args, env=slurm.env)
    return y, run, proc


def job_logs(run) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(run.glob("logs/*")))


def test_check_prints_requests_for_a_cpu_partition(slurm, small_sample, tmp_path):
    y = write_pipeline(tmp_path, small_sample)
    proc = run_cli("slurm", y, "-o", str(tmp_path / "run"), "--check", env=slurm.env)
    assert "GPUs per model-stage job: 0 (sinfo: the default partition has no GPUs)" in proc.stdout
    assert f"source {sys.prefix}/bin/activate" in proc.stdout or sys.prefix == sys.base_prefix
    assert re.search(r"^extract: array 0-3 \(4 task\(s\)\), partition \(default\), 2 core\(s\), memory 8G, no GPU",
                     proc.stdout, re.M), proc.stdout
    assert not (tmp_path / "run").exists()  # --check writes nothing


def test_array_jobs_with_afterok_equal_local(slurm, small_sample, local_run, tmp_path):
    """`vtpipe slurm` + `bash submit.sh` with the default config: every array task completes, stores equal."""
    _, run, _ = write_scripts(slurm, tmp_path, small_sample)
    extract = (run / "slurm/extract.sbatch").read_text()
    assert "gres" not in extract and "--cpus-per-task=2" in extract and "--mem=8G" in extract
    out = slurm.run("bash", str(run / "slurm/submit.sh")).stdout
    ids = re.findall(r"job (\d+)", out)
    assert len(ids) == 5, out
    rows = wait_jobs(slurm, ids)
    assert {r["state"] for r in rows} == {"COMPLETED"}, f"{rows}\n{job_logs(run)}"
    same_outputs(local_run, run)
    assert decode_workers_used(run) == {1}


def test_scancel_one_array_task_mid_extract_then_resubmit(slurm, small_sample, local_run, tmp_path):
    """Extract as 2 array tasks (of 2 plan tasks each); one freezes itself right after decoding its first
    video (fault hook), the other finishes; scancel the frozen one; extract is incomplete; the same script
    submitted again finishes it."""
    y, run, _ = write_scripts(slurm, tmp_path, small_sample, "cluster.gpu.cores=1", "cluster.max_array=2")
    run_cli("run", y, "-o", str(run), "--stage", "compress")
    marker = tmp_path / "froze"
    first = sbatch(slurm, run / "slurm/extract.sbatch", env={
        "VTPIPE_FAULT": "decoded:1", "VTPIPE_FAULT_SIGNAL": "STOP", "VTPIPE_FAULT_ONCE": str(marker)})
    end = time.monotonic() + 300
    while True:  # wait until only the frozen task is left running
        rows = [r for r in slurm.jobs() if r["id"].split("_")[0] == first]
        if marker.exists() and sum(r["state"] == "COMPLETED" for r in rows) == 1:
            break
        assert time.monotonic() < end, f"{rows}\n{job_logs(run)}"
        time.sleep(1)
    frozen = [r["id"] for r in rows if r["state"] == "RUNNING"]
    assert len(frozen) == 1, rows
    slurm.run("scancel", frozen[0])
    rows = wait_jobs(slurm, [first])
    assert sorted(r["state"] for r in rows) == ["CANCELLED", "COMPLETED"], rows
    assert len(list(run.glob("extract/**/_manifests/*.json"))) == 2  # the cancelled slice left no manifest
    again = sbatch(slurm, run / "slurm/extract.sbatch")
    concat = sbatch(slurm, run / "slurm/concat.sbatch", f"--dependency=afterok:{again}")
    rows = wait_jobs(slurm, [again, concat])
    assert {r["state"] for r in rows} == {"COMPLETED"}, f"{rows}\n{job_logs(run)}"
    assert_same_store(local_run / "features/shapes-tiny.h5", run / "features/shapes-tiny.h5")


def test_job_killed_by_walltime_then_resubmitted(slurm, small_sample, local_run, tmp_path):
    """Extract in one slow array task (12 s per video written, 8 videos) under --time=1: SLURM ends it at its
    time limit (state TIMEOUT); submitting the script again, without the slowdown, completes the stage."""
    y, run, _ = write_scripts(slurm, tmp_path, small_sample, "cluster.max_array=1")
    run_cli("run", y, "-o", str(run), "--stage", "compress")
    slow = sbatch(slurm, run / "slurm/extract.sbatch", "--time=1", env={"VTPIPE_FAULT_DELAY": "written:12"})
    rows = wait_jobs(slurm, [slow], timeout=300)
    assert [r["state"] for r in rows] == ["TIMEOUT"], f"{rows}\n{job_logs(run)}"
    assert not list(run.glob("features/*.h5"))
    again = sbatch(slurm, run / "slurm/extract.sbatch")
    concat = sbatch(slurm, run / "slurm/concat.sbatch", f"--dependency=afterok:{again}")
    rows = wait_jobs(slurm, [again, concat])
    assert {r["state"] for r in rows} == {"COMPLETED"}, f"{rows}\n{job_logs(run)}"
    assert_same_store(local_run / "features/shapes-tiny.h5", run / "features/shapes-tiny.h5")


def test_slurm_executor_equals_local(slurm, small_sample, local_run, tmp_path):
    """--executor slurm: dask-jobqueue submits worker jobs to the real SLURM; outputs equal the local run's,
    and extract ran with its decode workers (the job's dask workers are non-daemonic)."""
    y = write_pipeline(tmp_path, small_sample)
    run = tmp_path / "run"
    run_cli("run", y, "-o", str(run), "--executor", "slurm", env=slurm.env, timeout=900)
    same_outputs(local_run, run)
    assert decode_workers_used(run) == {1}
    assert list(run.glob("logs/*.err")) or list(run.glob("logs/*.out"))  # the worker jobs' logs


def test_slurm_executor_worker_job_cancelled_mid_task(slurm, small_sample, local_run, tmp_path):
    """The extract worker job freezes its task after a decoded video (fault hook, once); scancel that job:
    the scheduler loses the worker, adapt submits a new job, the task runs again there; nothing is lost."""
    y = write_pipeline(tmp_path, small_sample)
    run = tmp_path / "run"
    marker = tmp_path / "froze"
    env = {**slurm.env, "VTPIPE_QUIET": "1", "VTPIPE_FAULT": "decoded:1", "VTPIPE_FAULT_SIGNAL": "STOP",
           "VTPIPE_FAULT_ONCE": str(marker)}
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", y, "-o", str(run), "--executor", "slurm"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        end = time.monotonic() + 600
        while not marker.exists():
            assert proc.poll() is None and time.monotonic() < end, proc.communicate()[0] if proc.poll() else "timeout"
            time.sleep(1)
        running = [r for r in slurm.jobs() if r["name"] == "vtpipe-gpu" and r["state"] == "RUNNING"]
        assert running, slurm.jobs()
        victim = running[0]["id"] if len(running) == 1 else _job_of_frozen_worker(slurm, running)
        slurm.run("scancel", victim)
        out, _ = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    same_outputs(local_run, run)
    assert decode_workers_used(run) == {1}


def _job_of_frozen_worker(slurm, running: list[dict]) -> str:
    """The job whose process tree holds a stopped (state T) process."""
    for r in running:
        lines = slurm.run("scontrol", "listpids", r["id"], check=False).stdout.splitlines()[1:]
        pids = [line.split()[0] for line in lines if line.split()]
        for pid in pids:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    if f.read().split(") ")[1].startswith("T"):
                        return r["id"]
            except (OSError, IndexError):
                continue
    raise AssertionError(f"no frozen worker among {running}")


def test_no_job_left_behind(slurm):
    """Every test's jobs ended (worker jobs are cancelled when their cluster closes)."""
    time.sleep(2)
    left = [r for r in slurm.jobs() if r["state"] in ("RUNNING", "PENDING", "CONFIGURING")
            and r["reason"] not in FINAL_PENDING]
    assert not left, left
    assert os.environ.get("SLURM_CONF") is None  # the test cluster never leaks into the test process
