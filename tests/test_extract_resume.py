"""Crash safety of extraction: kill -9 at named points, re-run, compare to an uninterrupted run array by array;
three array-job processes then concat equal a one-process run."""

from __future__ import annotations

import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from conftest import REPO, run_cli
from stages.features.store import VideoStore

DATASETS = ("ids", "offsets", "unit_features", "unit_times_s", "unit_mask", "pooled")


def extract_args(s: dict, out, shards: int = 3) -> list[str]:
    return ["extract", "--model", "shapes-tiny", "--allow-random", "--videos", str(s["videos"]),
            "--captions", str(s["captions"]), "-o", str(out), "--shards", str(shards), "--batch-size", "8",
            "--decode-workers", "0"]


def assert_same_store(a, b) -> None:
    with h5py.File(a) as fa, h5py.File(b) as fb:
        for name in DATASETS:
            np.testing.assert_array_equal(fa[name][:], fb[name][:], err_msg=name)


def visible_h5_files_open(folder) -> None:
    """Every .h5 under its final name opens and is a complete store (no torn file is ever visible)."""
    for p in folder.glob("*.h5"):
        with h5py.File(p) as f:
            assert "offsets" in f, p


@pytest.fixture(scope="module")
def clean(small_sample, tmp_path_factory):
    out = tmp_path_factory.mktemp("clean")
    run_cli(*extract_args(small_sample, out / "shards"))
    run_cli("concat", str(out / "shards"), "-o", str(out / "store.h5"))
    return out


@pytest.mark.faults
@pytest.mark.parametrize("point", ["decoded:2", "written:4", "before_manifest:1", "before_manifest:2"])
def test_kill9_then_rerun_equals_clean_run(point, small_sample, clean, tmp_path):
    shards = tmp_path / "shards"
    killed = run_cli(*extract_args(small_sample, shards), env={"VTPIPE_FAULT": point}, check=False)
    assert killed.returncode == -9, (killed.returncode, killed.stderr[-2000:])
    visible_h5_files_open(shards)
    done_before = sorted(p.name for p in (shards / "_manifests").glob("*.json")) if (shards / "_manifests").exists() else []
    rerun = run_cli(*extract_args(small_sample, shards))
    total = 4  # 3 video shards + the text task
    assert f"running {total - len(done_before)} of {total} task(s)" in rerun.stdout, rerun.stdout
    assert not list(shards.glob(".*.tmp"))  # the killed writer's temporary was cleaned up
    run_cli("concat", str(shards), "-o", str(tmp_path / "store.h5"))
    assert_same_store(clean / "store.h5", tmp_path / "store.h5")


@pytest.mark.faults
def test_three_array_processes_then_concat_equal_one_process(small_sample, clean, tmp_path):
    shards = tmp_path / "shards"
    procs = [
        subprocess.Popen([sys.executable, "-m", "pipeline.cli", *extract_args(small_sample, shards),
                          "--shard-index", str(i), "--num-shards", "3"], cwd=REPO,
                         env={**os.environ, "VTPIPE_QUIET": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for i in range(3)
    ]
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err.decode()[-2000:]
    run_cli("concat", str(shards), "-o", str(tmp_path / "store.h5"))
    assert_same_store(clean / "store.h5", tmp_path / "store.h5")
    with VideoStore(tmp_path / "store.h5") as s:
        assert len(s) == 8


def test_second_run_does_no_work(small_sample, clean):
    again = run_cli(*extract_args(small_sample, clean / "shards"))
    assert "already done" in again.stdout
