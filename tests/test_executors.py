"""The same pipeline under the local and the dask executor gives identical outputs, also when a dask
worker is SIGKILLed in the middle of a task (the scheduler reruns the task on another worker)."""

from __future__ import annotations

import json

import pytest

from conftest import run_cli
from test_extract_resume import assert_same_store


def write_pipeline(tmp_path, s) -> str:
    y = tmp_path / "p.yaml"
    y.write_text(
        f"name: exec\ninput: {{videos: {s['videos']}}}\ndataset: {{captions: {s['captions']}}}\n"
        "model: {name: shapes-tiny, allow_random: true}\nextract: {shards: 3, batch_size: 8}\n"
        "compress: {videos_per_task: 3}\n"
    )
    return str(y)


@pytest.fixture(scope="module")
def local_run(small_sample, tmp_path_factory):
    d = tmp_path_factory.mktemp("local")
    run_cli("run", write_pipeline(d, small_sample), "-o", str(d / "run"))
    return d / "run"


def _same_outputs(a, b) -> None:
    assert_same_store(a / "features/shapes-tiny.h5", b / "features/shapes-tiny.h5")
    for task in ("t2v", "v2t"):
        ma = json.loads((a / f"eval/shapes-tiny/{task}/metrics.json").read_text())
        mb = json.loads((b / f"eval/shapes-tiny/{task}/metrics.json").read_text())
        assert ma == mb


def test_dask_local_cluster_equals_local(small_sample, local_run, tmp_path):
    proc = run_cli("run", write_pipeline(tmp_path, small_sample), "-o", str(tmp_path / "run"),
                   "--executor", "dask", "--workers", "2")
    assert "dask executor" in proc.stdout
    _same_outputs(local_run, tmp_path / "run")


@pytest.mark.faults
def test_dask_worker_killed_mid_task_is_retried(small_sample, local_run, tmp_path):
    marker = tmp_path / "fired"
    run_cli("run", write_pipeline(tmp_path, small_sample), "-o", str(tmp_path / "run"), "--executor", "dask",
            "--workers", "2", env={"VTPIPE_FAULT": "written:2", "VTPIPE_FAULT_ONCE": str(marker)})
    assert marker.exists()  # a worker really died mid-shard
    _same_outputs(local_run, tmp_path / "run")
