"""What the command modules share: click settings, the error exit, array-job slices, one stage run under the
run lock, the PIPELINE argument type, and printing the evaluate results with their warnings."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from pipeline import config as config_mod
from pipeline.executors import make_executor
from pipeline.runner import run_lock, run_stage, slice_tasks
from stages.contract.errors import VtpipeError
from stages.contract.layout import Layout

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 110}


def _fail(e: Exception) -> None:
    click.secho(f"error: {e}", fg="red", err=True)
    sys.exit(2)


def _shard_defaults(shard_index: int | None, num_shards: int | None) -> tuple[int | None, int | None]:
    """SLURM array variables are used when --shard-index/--num-shards are not given."""
    if shard_index is None and "SLURM_ARRAY_TASK_ID" in os.environ and num_shards is None:
        if "SLURM_ARRAY_TASK_COUNT" in os.environ:
            return int(os.environ["SLURM_ARRAY_TASK_ID"]), int(os.environ["SLURM_ARRAY_TASK_COUNT"])
    if (shard_index is None) != (num_shards is None):
        raise VtpipeError("--shard-index and --num-shards go together")
    return shard_index, num_shards


def _run_one_stage(stage: str, cfg: dict, layout: Layout, lock_dir: Path, overwrite: bool,
                   shard_index: int | None = None, num_shards: int | None = None):
    from pipeline.runner import plan_stage

    executor = make_executor(cfg)
    shard_index, num_shards = _shard_defaults(shard_index, num_shards)
    try:
        with run_lock(lock_dir, shard_index):
            tasks = slice_tasks(plan_stage(stage, cfg, layout), shard_index, num_shards)
            rep = run_stage(stage, tasks, executor, overwrite=overwrite, echo=click.echo,
                            clean_temporaries=shard_index is None)
    finally:
        executor.close()
    if not rep.complete:
        sys.exit(1)
    return rep


class PipelineFile(click.ParamType):
    """A pipeline YAML file, or the name of a shipped pipeline (configs/pipelines/NAME.yaml, also in a wheel),
    or of a paper preset (configs/presets/NAME.yaml: `vtpipe presets`)."""

    name = "PIPELINE"

    def convert(self, value, param, ctx):
        if Path(value).is_file():
            return value
        if not value.endswith((".yaml", ".yml")) and "/" not in value and os.sep not in value:
            from stages.contract.assets import presets_dir

            try:
                folder = presets_dir("pipelines")
            except VtpipeError as e:
                self.fail(str(e), param, ctx)
            if (folder / f"{value}.yaml").is_file():
                return str(folder / f"{value}.yaml")
            from pipeline.presets import list_presets

            papers = sorted(p.name for p in list_presets())
            if value in papers:
                return config_mod.PAPER_PRESET_PREFIX + value
            self.fail(f"{value!r} is neither a file, a shipped pipeline nor a paper preset; pipelines: "
                      f"{', '.join(sorted(p.stem for p in folder.glob('*.yaml')))} (in {folder}); paper presets "
                      f"(`vtpipe presets`): {', '.join(papers)}", param, ctx)
        self.fail(f"pipeline file {value!r} does not exist", param, ctx)


def _print_results(eval_root: Path) -> None:
    from stages.retrieval.report_table import collect_results, write_comparison

    rows = collect_results([eval_root]) if eval_root.is_dir() else []
    if rows:
        table = write_comparison(rows, eval_root / "summary.md", eval_root / "summary.csv")
        click.echo("")
        click.echo(table)
        _echo_warnings(rows)


def _echo_warnings(rows: list[dict]) -> None:
    """Every warning of the results (tied ground truths, missing videos), on stderr."""
    for m in rows:
        for w in m.get("warnings") or []:
            click.echo(f"WARNING ({m.get('model', '')} {m.get('task', '')}): {w}", err=True)
