"""Cluster settings made concrete for this site: `env_setup` and `gpu.gpus` when the config leaves them
to vtpipe, and a one-line summary of what a job asks for (`vtpipe slurm --check`).

- env_setup unset (null): jobs activate the environment this vtpipe runs from (its bin/activate, or its
  interpreter's folder put first on PATH), so `vtpipe` and the same packages are found on the nodes.
  A list (also []) is used as given.
- gpu.gpus "auto": SLURM: 1 when `sinfo` lists a GPU GRES on the partition, 0 on a CPU-only partition
  (no --gres line; extract then runs on the CPU); where sinfo does not answer (writing scripts away from the
  cluster), and for PBS: 1. An integer is used as given; 0 asks for no GPU.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from pathlib import Path

from stages.contract.errors import ConfigError


def default_env_setup() -> list[str]:
    """Shell lines that put this vtpipe's environment first in a job."""
    activate = Path(sys.prefix) / "bin" / "activate"
    if sys.prefix != sys.base_prefix and activate.is_file():
        return [f"source {activate}"]
    return [f'export PATH={Path(sys.executable).parent}:"$PATH"']


def slurm_partition_has_gpus(partition: str | None) -> bool | None:
    """Whether any node of the partition (default partition when None) offers a gpu GRES; None when sinfo
    is not available or fails."""
    if not shutil.which("sinfo"):
        return None
    cmd = ["sinfo", "-h", "-o", "%G"] + (["-p", partition] if partition else [])
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if p.returncode != 0:
        return None
    return any(g.startswith("gpu") for line in p.stdout.split() for g in line.split(","))


def resolve_gpus(value, scheduler_kind: str, partition: str | None) -> tuple[int, str]:
    """(number of GPUs per model-stage job, why)."""
    if value == "auto" or value is None:
        if scheduler_kind == "slurm":
            has = slurm_partition_has_gpus(partition)
            if has is not None:
                where = f"partition {partition}" if partition else "the default partition"
                return (1, f"sinfo: {where} has GPUs") if has else (0, f"sinfo: {where} has no GPUs")
        return 1, "gpus: auto, no sinfo answer: asking for 1"
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"cluster.gpu.gpus must be 'auto' or an integer >= 0, got {value!r}")
    return value, "from the config"


def site_cluster_config(cluster_cfg: dict, scheduler_kind: str) -> dict:
    """A copy of the `cluster` section with env_setup and gpu.gpus made concrete (see the module's doc)."""
    out = copy.deepcopy(cluster_cfg)
    env = out.get("env_setup")
    out["env_setup"] = default_env_setup() if env is None else ([env] if isinstance(env, str) else list(env))
    partition = out["gpu"].get("queue") or out.get("queue")
    out["gpu"]["gpus"], out["gpu"]["gpus_reason"] = resolve_gpus(out["gpu"].get("gpus"), scheduler_kind, partition)
    return out
