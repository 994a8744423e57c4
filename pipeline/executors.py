"""Executors run a stage's tasks: in this process, in a local process pool, or on a dask cluster.

All of them take the same thing, a list of stages.contract.tasks.Task and the stage's run_task function (importable
by name, so it pickles by reference), and return one outcome per task: a Result or the exception it raised.
A task that raises is reported, the others go on; the runner decides what a failure means for the run.
"""

from __future__ import annotations

import logging
import multiprocessing
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Callable, Sequence

from stages.contract.faults import fault_point
from stages.contract.tasks import Result, Task, record_task_error, write_manifest

log = logging.getLogger("vtpipe.executor")

Outcome = Result | BaseException


def execute(run_task: Callable[[Task], Result], task: Task) -> Result:
    """Run one task and write its manifest last (the completion marker). Used by every executor."""
    try:
        result = run_task(task)
    except Exception as e:
        record_task_error(task, e)
        raise
    fault_point("before_manifest")
    write_manifest(task, result)
    return result


def collect(completed, futs: dict, tasks: Sequence[Task], on_done=None) -> list[Outcome]:
    """Outcomes in task order from futures met in completion order (`completed`: concurrent.futures' or
    dask's as_completed; `futs`: future -> task index), calling on_done(task, outcome) as each arrives.
    A task's exception is its outcome; KeyboardInterrupt is not caught. The pool and dask executors share it;
    the serial path of LocalExecutor runs `execute` itself and reports the same way."""
    outcomes: list[Outcome] = [None] * len(tasks)  # type: ignore[list-item]
    for fut in completed:
        i = futs[fut]
        try:
            outcomes[i] = fut.result()
        except Exception as e:
            outcomes[i] = e
        if on_done:
            on_done(tasks[i], outcomes[i])
    return outcomes


class LocalExecutor:
    """`workers` <= 1: tasks run one after another in this process. More: a spawn-context process pool
    (GPU tasks still run here, one at a time, so two never share a device by accident)."""

    name = "local"

    def __init__(self, workers: int = 1):
        self.workers = max(1, int(workers))

    def map(self, run_task: Callable[[Task], Result], tasks: Sequence[Task], on_done=None) -> list[Outcome]:
        parallel = self.workers > 1 and len(tasks) > 1 and not any(t.resources.get("GPU") for t in tasks)
        if not parallel:
            outcomes: list[Outcome] = [None] * len(tasks)  # type: ignore[list-item]
            for i, t in enumerate(tasks):
                try:
                    outcomes[i] = execute(run_task, t)
                except KeyboardInterrupt:
                    raise
                except Exception as e:  # reported by the runner with the task's name
                    outcomes[i] = e
                if on_done:
                    on_done(t, outcomes[i])
            return outcomes
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(self.workers, len(tasks)), mp_context=ctx) as pool:
            futs = {pool.submit(execute, run_task, t): i for i, t in enumerate(tasks)}
            return collect(as_completed(futs), futs, tasks, on_done)

    def close(self) -> None:
        pass


class DaskExecutor:
    """dask.distributed: a LocalCluster by default, an existing scheduler with `scheduler=tcp://...`, or
    a prepared cluster object (dask-jobqueue). GPU tasks carry resources={"GPU": 1}; when no worker offers
    a GPU resource they run without it, with a warning, instead of waiting forever."""

    name = "dask"

    def __init__(self, workers: int = 2, scheduler: str | None = None, retries: int = 2, cluster=None,
                 gpu_resources: bool | None = None):
        from dask.distributed import Client, LocalCluster

        self.retries = int(retries)
        self.gpu_resources = gpu_resources  # None: ask the scheduler whether any worker offers a GPU
        self._own_cluster = None
        if cluster is not None:
            self.client = Client(cluster)
        elif scheduler:
            self.client = Client(scheduler)
        else:
            import dask

            # Non-daemonic worker processes, so extract's decode workers (a DataLoader's processes) may start
            # inside them; the nanny reads this each time it (re)starts a worker, so it stays set.
            dask.config.set({"distributed.worker.daemon": False})
            self._own_cluster = LocalCluster(n_workers=max(1, int(workers)), threads_per_worker=1,
                                             processes=True, dashboard_address=":0")
            self.client = Client(self._own_cluster)
        print(f"dask dashboard: {self.client.dashboard_link}", flush=True)

    def _gpu_workers(self) -> int:
        info = self.client.scheduler_info().get("workers", {})
        return sum(1 for w in info.values() if w.get("resources", {}).get("GPU"))

    def map(self, run_task: Callable[[Task], Result], tasks: Sequence[Task], on_done=None) -> list[Outcome]:
        from dask.distributed import as_completed as dask_completed

        has_gpu = self._gpu_workers() > 0 if self.gpu_resources is None else self.gpu_resources
        futs = {}
        for i, t in enumerate(tasks):
            res = {k: v for k, v in t.resources.items() if k != "GPU" or has_gpu}
            if t.resources.get("GPU") and not has_gpu and self.gpu_resources is None:
                warnings.warn(f"{t.key}: no dask worker offers a GPU resource; running on a CPU worker")
            fut = self.client.submit(execute, run_task, t, key=f"{t.stage}-{t.id}-{t.fingerprint}",
                                     resources=res or None, retries=self.retries, pure=False)
            futs[fut] = i
        return collect(dask_completed(list(futs)), futs, tasks, on_done)

    def close(self) -> None:
        self.client.close()
        if self._own_cluster is not None:
            self._own_cluster.close()


class JobqueueExecutor:
    """slurm / pbs through dask-jobqueue: a `gpu` worker pool for model stages and a `cpu` pool for the rest,
    each a batch-job cluster that scales between 0 and cluster.jobs jobs while it has work."""

    def __init__(self, scheduler_kind: str, cluster_cfg: dict, retries: int = 2, log_dir=None):
        from pipeline.cluster_defaults import site_cluster_config

        self.name = scheduler_kind
        self.scheduler_kind = scheduler_kind
        self.cluster_cfg = site_cluster_config(cluster_cfg, scheduler_kind)
        gpu = self.cluster_cfg["gpu"]
        log.info("%s executor: %d GPU(s) per model-stage job (%s)", scheduler_kind, gpu["gpus"], gpu["gpus_reason"])
        self.retries = retries
        self.log_dir = log_dir
        self._pools: dict[str, DaskExecutor] = {}

    def pool(self, kind: str) -> "DaskExecutor":
        if kind not in self._pools:
            from pipeline.jobqueue import jobqueue_cluster

            cluster = jobqueue_cluster(self.scheduler_kind, self.cluster_cfg, kind, self.log_dir)
            cluster.adapt(minimum=0, maximum=int(self.cluster_cfg["jobs"]))
            gpus = kind == "gpu" and int(self.cluster_cfg["gpu"]["gpus"]) > 0
            self._pools[kind] = DaskExecutor(cluster=cluster, retries=self.retries, gpu_resources=gpus)
            self._pools[kind]._own_cluster = cluster
        return self._pools[kind]

    def map(self, run_task, tasks, on_done=None):
        kind = "gpu" if any(t.resources.get("GPU") for t in tasks) else "cpu"
        return self.pool(kind).map(run_task, tasks, on_done=on_done)

    def close(self) -> None:
        for p in self._pools.values():
            p.close()


def make_executor(cfg: dict, log_dir=None):
    """The configured executor; `log_dir`: where batch-job workers write their logs (slurm/pbs)."""
    ex = cfg["executor"]
    if ex["kind"] == "local":
        return LocalExecutor(ex["workers"])
    if ex["kind"] == "dask":
        return DaskExecutor(workers=max(1, ex["workers"]), scheduler=ex["scheduler"], retries=ex["retries"])
    return JobqueueExecutor(ex["kind"], cfg["cluster"], retries=ex["retries"], log_dir=log_dir)
