"""SLURM/PBS job scripts carry the configured resources, checked as text (the scripts really run against
a SLURM in tests/test_slurm_real.py; no PBS server installs from Debian's packages, so PBS stays text)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_cli
from pipeline.cluster_defaults import resolve_gpus, site_cluster_config
from pipeline.config import resolve
from pipeline.jobqueue import job_summary, jobqueue_cluster, sbatch_script
from stages.contract.errors import ConfigError

CLUSTER = {"queue": "batch", "account": "proj42", "walltime": "02:30:00", "lifetime": "2h20m",
           "env_setup": ["source /opt/venv/bin/activate"], "extra_directives": ["--constraint=a100"],
           "gpu": {"gpus": 2, "cores": 6, "memory": "48GB", "queue": "gpu"}}


@pytest.mark.parametrize("pool", ["gpu", "cpu"])
def test_slurm_jobqueue_script_has_resources(pool):
    cfg = resolve({"cluster": CLUSTER})["cluster"]
    cluster = jobqueue_cluster("slurm", cfg, pool)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert "#SBATCH -A proj42" in script and "#SBATCH -t 02:30:00" in script
    assert "#SBATCH --constraint=a100" in script and "source /opt/venv/bin/activate" in script
    assert "--lifetime 2h20m" in script
    if pool == "gpu":
        assert "#SBATCH -p gpu" in script and "#SBATCH --gres=gpu:2" in script
        assert "--resources GPU=2" in script and "#SBATCH --cpus-per-task=6" in script
    else:
        assert "#SBATCH -p batch" in script and "gres" not in script and "GPU=" not in script


def test_pbs_gpu_script_has_resources():
    cfg = resolve({"cluster": CLUSTER})["cluster"]
    cluster = jobqueue_cluster("pbs", cfg, "gpu")
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert "ngpus=2" in script and "#PBS -q gpu" in script and "--resources GPU=2" in script


def test_vtpipe_slurm_writes_array_scripts(small_sample, tmp_path):
    y = tmp_path / "p.yaml"
    y.write_text(f"name: cl\ninput: {{videos: {small_sample['videos']}}}\n"
                 f"dataset: {{captions: {small_sample['captions']}}}\nextract: {{shards: 3}}\n"
                 "cluster: {account: proj42, queue: batch, gpu: {gpus: 1, queue: gpu}, "
                 "env_setup: ['module load cuda']}\n")
    run_cli("slurm", str(y), "-o", str(tmp_path / "run"), "--set", "extract.batch_size=32")
    d = tmp_path / "run" / "slurm"
    extract = (d / "extract.sbatch").read_text()
    assert "#SBATCH --array=0-3" in extract  # 3 video shards + the caption task
    assert "#SBATCH --gres=gpu:1" in extract and "#SBATCH --partition=gpu" in extract
    assert "#SBATCH --account=proj42" in extract and "module load cuda" in extract
    assert "--stage extract" in extract and "--set extract.batch_size=32" in extract
    assert '--shard-index "$SLURM_ARRAY_TASK_ID" --num-shards 4' in extract
    compress = (d / "compress.sbatch").read_text()
    assert "gres" not in compress and "#SBATCH --partition=batch" in compress
    submit = (d / "submit.sh").read_text()
    assert submit.index("compress.sbatch") < submit.index("extract.sbatch") < submit.index("evaluate.sbatch")
    assert "--dependency=afterok" in submit
    for f in d.iterdir():  # every script is valid bash
        subprocess.run(["bash", "-n", str(f)], check=True)


@pytest.mark.parametrize("scheduler", ["slurm", "pbs"])
def test_no_gpu_lines_with_zero_gpus(scheduler):
    cfg = resolve({"cluster": {"gpu": {"gpus": 0}}})["cluster"]
    cluster = jobqueue_cluster(scheduler, cfg, "gpu")
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert "gres" not in script and "GPU=" not in script and "ngpus" not in script
    assert "export DASK_DISTRIBUTED__WORKER__DAEMON=False" in script  # decode workers may start in the worker


def test_default_env_setup_activates_this_environment():
    cfg = site_cluster_config(resolve({})["cluster"], "slurm")
    env = cfg["env_setup"]
    if sys.prefix != sys.base_prefix:
        assert env == [f"source {sys.prefix}/bin/activate"]
    else:
        assert env == [f'export PATH={Path(sys.executable).parent}:"$PATH"']
    assert site_cluster_config(resolve({"cluster": {"env_setup": []}})["cluster"], "slurm")["env_setup"] == []


def test_gpus_auto_follows_sinfo(monkeypatch):
    from pipeline import cluster_defaults

    monkeypatch.setattr(cluster_defaults, "slurm_partition_has_gpus", lambda part: False)
    assert resolve_gpus("auto", "slurm", "cpu")[0] == 0
    monkeypatch.setattr(cluster_defaults, "slurm_partition_has_gpus", lambda part: True)
    assert resolve_gpus("auto", "slurm", "gpu")[0] == 1
    monkeypatch.setattr(cluster_defaults, "slurm_partition_has_gpus", lambda part: None)  # no sinfo here
    assert resolve_gpus("auto", "slurm", None)[0] == 1
    assert resolve_gpus(2, "slurm", None) == (2, "from the config")
    with pytest.raises(ConfigError):
        resolve_gpus(-1, "slurm", None)


def test_sbatch_script_without_gpus_and_default_sizes():
    cfg = site_cluster_config(resolve({"cluster": {"gpu": {"gpus": 0}}})["cluster"], "slurm")
    text = sbatch_script("extract", 3, Path("/x/p.yaml"), Path("/x/run"), cfg, [], True, "n")
    assert "gres" not in text and "#SBATCH --cpus-per-task=2" in text and "#SBATCH --mem=8G" in text
    assert "no GPU" in job_summary(3, cfg, True)
    text = sbatch_script("compress", 3, Path("/x/p.yaml"), Path("/x/run"), cfg, [], False, "n")
    assert "#SBATCH --cpus-per-task=1" in text and "#SBATCH --mem=4G" in text


def test_missing_slurm_skips_locally_and_fails_on_ci(monkeypatch):
    from slurm_cluster import skip_or_fail

    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must run the cluster tests"):
        skip_or_fail("no slurmd")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        skip_or_fail("no slurmd")
