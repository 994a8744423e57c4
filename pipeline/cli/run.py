"""Whole-pipeline commands: `vtpipe run` (every stage of a pipeline config), `vtpipe demo` (the embedded sample)
and `vtpipe slurm` (array-job scripts, one per stage)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from pipeline import config as config_mod
from pipeline.cli.common import CONTEXT, PipelineFile, _fail, _print_results, _shard_defaults
from pipeline.executors import make_executor
from pipeline.runner import run_pipeline
from stages.contract.errors import VtpipeError
from stages.contract.layout import Layout


@click.command(context_settings=CONTEXT)
@click.argument("pipeline_yaml", type=PipelineFile())
@click.option("--output", "-o", type=click.Path(file_okay=False), help="Run directory [default: outputs/<name>].")
@click.option("--executor", type=click.Choice(["local", "dask", "slurm", "pbs"]), help="Where tasks run.")
@click.option("--workers", type=int, help="Parallel workers for CPU stages / dask workers.")
@click.option("--scheduler", help="Address of a running dask scheduler (tcp://host:8786).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override a config value, e.g. --set extract.shards=4 --set model.name=clip-vit-b-32.")
@click.option("--overwrite", is_flag=True, help="Redo tasks whose config or inputs changed.")
@click.option("--stage", "only", multiple=True, type=click.Choice(["compress", "extract", "concat", "index", "evaluate"]),
              help="Run only this stage of the pipeline (repeatable); the others' outputs are read as inputs.")
@click.option("--shard-index", type=int,
              help="Array-job mode: run only this slice of the stage's tasks [default: $SLURM_ARRAY_TASK_ID].")
@click.option("--num-shards", type=int, help="Array-job mode: number of slices [default: $SLURM_ARRAY_TASK_COUNT].")
def run(pipeline_yaml, output, executor, workers, scheduler, sets, overwrite, only, shard_index, num_shards):
    """Run every stage of PIPELINE_YAML into one run directory. PIPELINE_YAML is a file, the name of a
    shipped pipeline (`vtpipe run msrvtt-1ka --set input.videos=...`; configs/pipelines/), or the name of a
    paper preset (`vtpipe run clip4clip-msrvtt --set input.videos=... --set dataset.root=...`; `vtpipe presets`).

    A second run of a finished pipeline does no work. A run stopped by Ctrl-C, kill -9 or a crash finishes
    when the same command is run again. Exit status 0 when every stage finished (failed videos are recorded,
    not fatal), 1 when a task failed, 2 for a config error.
    """
    try:
        over = config_mod.parse_overrides(sets)
        ex = over.setdefault("executor", {})
        if executor:
            ex["kind"] = executor
        if workers:
            ex["workers"] = workers
        if scheduler:
            ex["scheduler"] = scheduler
        cfg = config_mod.load_pipeline(pipeline_yaml, overrides=over)
        run_dir = Path(output) if output else Path("outputs") / cfg["name"]
        shard_index, num_shards = _shard_defaults(shard_index, num_shards)
        click.echo(f"vtpipe run {cfg['name']}: stages {' -> '.join(cfg['stages'])}; output {run_dir}")
        ex_obj = make_executor(cfg, log_dir=run_dir / "logs")
        try:
            reports = run_pipeline(cfg, run_dir, ex_obj, overwrite=overwrite, shard_index=shard_index,
                                   num_shards=num_shards, echo=click.echo, only=list(only) or None)
        finally:
            ex_obj.close()
    except VtpipeError as e:
        _fail(e)
    if not all(r.complete for r in reports):
        sys.exit(1)
    if all(r.ran == 0 for r in reports):
        click.echo("every stage is already complete: nothing to do")
    _print_results(run_dir / "eval")


@click.command(context_settings=CONTEXT)
@click.option("--output", "-o", type=click.Path(file_okay=False), default="outputs/sample", show_default=True,
              help="Run directory.")
@click.option("--videos", type=click.Path(file_okay=False),
              help="Folder to generate the sample clips in [default: OUTPUT/sample-videos].")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Config override, e.g. --set model.name=clip-vit-b-32 --set model.allow_random=true.")
@click.option("--overwrite", is_flag=True, help="Redo tasks whose config or inputs changed.")
@click.pass_context
def demo(ctx, output, videos, sets, overwrite):
    """Generate the embedded sample (24 synthetic clips of moving shapes with captions) and run the sample
    pipeline on it with shapes-tiny: every stage, then the retrieval table.

    Needs only the installed package: the preset, the weights and the generator ship inside it.
    """
    from pipeline import demo as demo_mod

    try:
        pipeline_yaml = demo_mod.sample_pipeline()
        video_dir = Path(videos or Path(output) / "sample-videos").resolve()
        demo_mod.make_sample_videos(video_dir, echo=click.echo)
    except VtpipeError as e:
        _fail(e)
    ctx.invoke(run, pipeline_yaml=str(pipeline_yaml), output=output, executor=None, workers=None, scheduler=None,
               sets=(f"input.videos={json.dumps(str(video_dir))}", *sets), overwrite=overwrite, only=(),
               shard_index=None, num_shards=None)


@click.command(context_settings=CONTEXT)
@click.argument("pipeline_yaml", type=PipelineFile())
@click.option("--output", "-o", type=click.Path(file_okay=False), help="Run directory [default: outputs/<name>].")
@click.option("--scripts", type=click.Path(file_okay=False), help="Where to write the scripts [default: RUN/slurm].")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Config override, passed on to every job.")
@click.option("--check", is_flag=True, help="Print what each stage's job asks for (array size, partition, cores, "
                                            "memory, GPUs, time, environment) and write nothing.")
def slurm(pipeline_yaml, output, scripts, sets, check):
    """Write SLURM array-job scripts, one per stage, and submit.sh that chains them.

    \b
    Array task i of a stage runs slice i of that stage's plan (`vtpipe run ... --stage S --shard-index i`);
    the next stage starts when every slice succeeded (afterok). A failed or killed slice is fixed by
    submitting the same script again: finished tasks are skipped. Cluster settings come from the
    `cluster:` section of the pipeline config (queue, account, walltime, cpu/gpu cores, memory, gpus,
    env_setup, extra_directives); gpus "auto" asks for a GPU only where sinfo lists GPUs, and env_setup
    unset activates the environment this vtpipe runs from.
    """
    from pipeline.cluster_defaults import site_cluster_config
    from pipeline.jobqueue import job_summary, sbatch_script, submit_script
    from pipeline.runner import plan_stage

    try:
        over = config_mod.parse_overrides(sets)
        cfg = config_mod.load_pipeline(pipeline_yaml, overrides=over)
        cluster = site_cluster_config(cfg["cluster"], "slurm")
        run_dir = Path(output or Path("outputs") / cfg["name"]).resolve()
        out = Path(scripts) if scripts else run_dir / "slurm"
        if not check:
            out.mkdir(parents=True, exist_ok=True)
            (run_dir / "logs").mkdir(parents=True, exist_ok=True)
        layout = Layout(run_dir)
        names = {}
        click.echo(f"GPUs per model-stage job: {cluster['gpu']['gpus']} ({cluster['gpu']['gpus_reason']}); "
                   f"environment: {'; '.join(cluster['env_setup']) or '(none)'}")
        for stage in cfg["stages"]:
            tasks = plan_stage(stage, cfg, layout)
            gpu = any(t.resources.get("GPU") for t in tasks)
            names[stage] = f"{stage}.sbatch"
            if check:
                click.echo(f"{stage}: {job_summary(len(tasks), cluster, gpu)}")
                continue
            text = sbatch_script(stage, len(tasks), Path(pipeline_yaml).resolve(), run_dir, cluster,
                                 list(sets), gpu, cfg["name"])
            (out / names[stage]).write_text(text)
            click.echo(f"{out / names[stage]}: {len(tasks)} task(s); {job_summary(len(tasks), cluster, gpu)}")
        if check:
            return
        sub = out / "submit.sh"
        sub.write_text(submit_script(cfg["stages"], names))
        sub.chmod(0o755)
        click.echo(f"submit with: bash {sub}")
    except VtpipeError as e:
        _fail(e)
