"""Batch clusters: dask-jobqueue worker pools (slurm/pbs executors) and ready-to-submit SLURM array scripts.

Two pools per run: `gpu` jobs for model stages (GPU tasks carry resources={"GPU": 1}; their workers start
with `--resources GPU=<n>` and the site's GPU directive, `--gres=gpu:<n>` by default; with gpus 0 neither,
and the model stages run on the CPU) and `cpu` jobs for compress, concat, index and evaluate. Workers run
non-daemonic (DASK_DISTRIBUTED__WORKER__DAEMON=False) so extract can start its decode processes. Workers get `--lifetime` so they leave before the walltime instead
of being killed in the middle of a task.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from pipeline.cluster_defaults import site_cluster_config
from stages.contract.errors import ConfigError


def _pool(cluster_cfg: dict, kind: str) -> dict:
    pool = cluster_cfg[kind]
    queue = pool.get("queue") or cluster_cfg["queue"]
    return {**pool, "queue": queue}


def pool_gpus(cluster_cfg: dict, pool: str) -> int:
    """GPUs per job of the pool (after site_cluster_config: an integer)."""
    return int(cluster_cfg["gpu"]["gpus"]) if pool == "gpu" else 0


def jobqueue_cluster(scheduler_kind: str, cluster_cfg: dict, pool: str, log_dir: Path | None = None):
    """A dask-jobqueue SLURMCluster/PBSCluster for the `cpu` or `gpu` pool (no job is submitted until it
    scales). `cluster_cfg` is the config's `cluster` section; env_setup / gpus are resolved here."""
    try:
        import dask_jobqueue
    except ImportError as e:  # declared in setup.cfg, but say what to do if a site install lacks it
        raise ConfigError("the slurm/pbs executors need dask-jobqueue: pip install dask-jobqueue") from e
    cluster_cfg = site_cluster_config(cluster_cfg, scheduler_kind)
    p = _pool(cluster_cfg, pool)
    gpus = pool_gpus(cluster_cfg, pool)
    worker_args = []
    # Non-daemonic dask worker processes, so extract's decode workers may start inside them.
    prologue = list(cluster_cfg["env_setup"]) + ["export DASK_DISTRIBUTED__WORKER__DAEMON=False"]
    directives = list(cluster_cfg["extra_directives"])
    if gpus:
        worker_args += ["--resources", f"GPU={gpus}"]
        if scheduler_kind == "slurm":
            directives.append(p["gpu_directive"].format(gpus=gpus))
    if cluster_cfg["lifetime"]:
        worker_args += ["--lifetime", str(cluster_cfg["lifetime"]), "--lifetime-stagger", "2m"]
    common = dict(
        cores=int(p["cores"]),
        memory=str(p["memory"]),
        processes=1,
        queue=p["queue"],
        account=cluster_cfg["account"],
        walltime=cluster_cfg["walltime"],
        job_name=f"vtpipe-{pool}",
        worker_extra_args=worker_args,
        job_script_prologue=prologue,
        log_directory=str(log_dir) if log_dir else None,
    )
    if scheduler_kind == "slurm":
        return dask_jobqueue.SLURMCluster(job_extra_directives=directives, **common)
    if scheduler_kind == "pbs":
        if gpus:
            common["resource_spec"] = f"select=1:ncpus={int(p['cores'])}:ngpus={gpus}:mem={p['memory']}"
        return dask_jobqueue.PBSCluster(job_extra_directives=directives, **common)
    raise ConfigError(f"unknown batch scheduler {scheduler_kind!r}; use slurm or pbs")


# ---- `vtpipe slurm`: array-job scripts without a dask scheduler ------------------------------------------
def sbatch_script(
    stage: str,
    n_tasks: int,
    pipeline_yaml: Path,
    run_dir: Path,
    cluster_cfg: dict,
    overrides: list[str],
    gpu: bool,
    name: str,
) -> str:
    """One stage as a SLURM array job: array task i runs slice i of the stage's plan. `cluster_cfg` as
    site_cluster_config returns it."""
    p = _pool(cluster_cfg, "gpu" if gpu else "cpu")
    gpus = pool_gpus(cluster_cfg, "gpu" if gpu else "cpu")
    slices = max(1, min(n_tasks, int(cluster_cfg["max_array"])))
    lines = ["#!/bin/bash", f"#SBATCH --job-name=vtpipe-{name}-{stage}", f"#SBATCH --array=0-{slices - 1}"]
    if p["queue"]:
        lines.append(f"#SBATCH --partition={p['queue']}")
    if cluster_cfg["account"]:
        lines.append(f"#SBATCH --account={cluster_cfg['account']}")
    lines += [
        f"#SBATCH --time={cluster_cfg['walltime']}",
        "#SBATCH --ntasks=1",
        f"#SBATCH --cpus-per-task={int(p['cores'])}",
        f"#SBATCH --mem={_slurm_mem(str(p['memory']))}",
    ]
    if gpus:
        lines.append(f"#SBATCH {p['gpu_directive'].format(gpus=gpus)}")
    lines.append(f"#SBATCH --output={run_dir}/logs/%x-%A_%a.out")
    lines += [f"#SBATCH {d}" for d in cluster_cfg["extra_directives"]]
    lines += ["", "set -euo pipefail"]
    lines += list(cluster_cfg["env_setup"])
    cmd = ["vtpipe", "run", str(pipeline_yaml), "--output", str(run_dir), "--stage", stage]
    for o in overrides:
        cmd += ["--set", o]
    lines.append(" ".join(shlex.quote(c) for c in cmd)
                 + f' --shard-index "$SLURM_ARRAY_TASK_ID" --num-shards {slices}')
    return "\n".join(lines) + "\n"


def job_summary(n_tasks: int, cluster_cfg: dict, gpu: bool) -> str:
    """What one stage's array job asks for, in words (`vtpipe slurm --check`)."""
    kind = "gpu" if gpu else "cpu"
    p = _pool(cluster_cfg, kind)
    slices = max(1, min(n_tasks, int(cluster_cfg["max_array"])))
    gpus = pool_gpus(cluster_cfg, kind)
    ask = [f"array 0-{slices - 1} ({n_tasks} task(s))", f"partition {p['queue'] or '(default)'}",
           f"{int(p['cores'])} core(s)", f"memory {_slurm_mem(str(p['memory']))}",
           f"GPU: {p['gpu_directive'].format(gpus=gpus)}" if gpus else "no GPU",
           f"time {cluster_cfg['walltime']}"]
    if cluster_cfg["account"]:
        ask.append(f"account {cluster_cfg['account']}")
    return ", ".join(ask)


def _slurm_mem(memory: str) -> str:
    """'16GB' -> '16G' (sbatch's units)."""
    m = memory.strip().upper().replace("IB", "").replace("B", "")
    return m


def submit_script(stages: list[str], script_names: dict[str, str]) -> str:
    """A bash script that submits the stages in order, each after the previous one succeeded."""
    lines = ["#!/bin/bash", "# Submit every stage; each waits for the previous stage's array to succeed.",
             "set -euo pipefail", 'cd "$(dirname "$0")"', "dep=''"]
    for s in stages:
        lines.append(f"jid=$(sbatch --parsable $dep {script_names[s]})")
        lines.append(f'echo "{s}: job $jid"')
        lines.append('dep="--dependency=afterok:${jid%%;*}"')
    return "\n".join(lines) + "\n"
