"""The same pipeline under the local and the dask executors gives identical outputs, with extract's default
decode workers (>= 1): on the LocalCluster vtpipe starts (non-daemonic workers: the decode workers really
run), on an existing scheduler whose `dask worker` is daemonic (decoding falls back to the task's process,
recorded in the manifest), and when a dask worker is SIGKILLed mid-task (the scheduler reruns the task)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from conftest import run_cli
from test_extract_resume import assert_same_store


def write_pipeline(tmp_path, s, extra: str = "") -> str:
    """The small sample with the default extract settings (decode_workers 1), 3 shards."""
    y = tmp_path / "p.yaml"
    y.write_text(
        f"name: exec\ninput: {{videos: {s['videos']}}}\ndataset: {{captions: {s['captions']}}}\n"
        "model: {name: shapes-tiny, allow_random: true}\nextract: {shards: 3, batch_size: 8}\n"
        "compress: {videos_per_task: 3}\n" + extra
    )
    return str(y)


@pytest.fixture(scope="session")
def local_run(small_sample, tmp_path_factory):
    d = tmp_path_factory.mktemp("local")
    run_cli("run", write_pipeline(d, small_sample), "-o", str(d / "run"))
    return d / "run"


def same_outputs(a, b) -> None:
    assert_same_store(a / "features/shapes-tiny.h5", b / "features/shapes-tiny.h5")
    for task in ("t2v", "v2t"):
        ma = json.loads((a / f"eval/shapes-tiny/{task}/metrics.json").read_text())
        mb = json.loads((b / f"eval/shapes-tiny/{task}/metrics.json").read_text())
        assert ma == mb


def decode_workers_used(run) -> set[int]:
    """The decode workers each extract shard really used (recorded in its manifest)."""
    found = {json.loads(p.read_text())["info"]["decode_workers"]
             for p in run.glob("extract/**/_manifests/shard-*.json")}
    assert found, f"no extract manifests under {run}"
    return found


def test_local_run_uses_decode_workers(local_run):
    assert decode_workers_used(local_run) == {1}


def test_dask_local_cluster_equals_local(small_sample, local_run, tmp_path):
    proc = run_cli("run", write_pipeline(tmp_path, small_sample), "-o", str(tmp_path / "run"),
                   "--executor", "dask", "--workers", "2")
    assert "dask executor" in proc.stdout
    same_outputs(local_run, tmp_path / "run")
    assert decode_workers_used(tmp_path / "run") == {1}  # non-daemonic workers: decode processes started


def test_dask_existing_scheduler_with_daemonic_worker(small_sample, local_run, tmp_path):
    """A user's own `dask scheduler` + `dask worker` (daemonic by default): identical outputs; extract decodes
    in the task's process, says why in the worker's log, and records decode_workers 0."""
    sched_file = tmp_path / "scheduler.json"
    env = {**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "True"}
    procs = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                               "--port", "0", "--dashboard-address", ":0", "--scheduler-file", str(sched_file)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    worker_log = tmp_path / "worker.log"
    try:
        for _ in range(600):
            if sched_file.exists() and sched_file.stat().st_size:
                break
            time.sleep(0.1)
        address = json.loads(sched_file.read_text())["address"]
        with open(worker_log, "wb") as log:
            procs.append(subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address,
                                           "--nworkers", "1", "--nthreads", "1", "--host", "127.0.0.1"],
                                          env=env, stdout=log, stderr=subprocess.STDOUT))
        run_cli("run", write_pipeline(tmp_path, small_sample), "-o", str(tmp_path / "run"),
                "--executor", "dask", "--scheduler", address)
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
    same_outputs(local_run, tmp_path / "run")
    assert decode_workers_used(tmp_path / "run") == {0}
    assert "DASK_DISTRIBUTED__WORKER__DAEMON=False" in worker_log.read_text()


@pytest.mark.faults
def test_dask_worker_killed_mid_task_is_retried(small_sample, local_run, tmp_path):
    marker = tmp_path / "fired"
    run_cli("run", write_pipeline(tmp_path, small_sample), "-o", str(tmp_path / "run"), "--executor", "dask",
            "--workers", "2", env={"VTPIPE_FAULT": "written:2", "VTPIPE_FAULT_ONCE": str(marker)})
    assert marker.exists()  # a worker really died mid-shard
    same_outputs(local_run, tmp_path / "run")


def test_decoding_in_process_equals_decode_workers(small_sample):
    """decode_workers 0 (a daemonic dask worker's fallback) and 1 give the same bits: the model gets
    C-ordered units either way (in-process preprocessing used to hand it channels-last arrays)."""
    import numpy as np

    from stages.backbones.registry import load_model, model_config
    from stages.features.engine import run_engine

    model = load_model("shapes-tiny", allow_random=True)
    videos = [(p.stem, str(p)) for p in sorted(small_sample["videos"].glob("*.mp4"))[:3]]
    feats = {}
    for workers in (0, 1):
        out: list = []
        run_engine(model, videos, dict(model_config("shapes-tiny").sampling),
                   lambda vid, f, t, m, pooled: out.append(f.copy()), lambda *a: None, batch_size=8,
                   decode_workers=workers)
        feats[workers] = out
    assert len(feats[0]) == 3
    for a, b in zip(feats[0], feats[1]):
        np.testing.assert_array_equal(a, b)
