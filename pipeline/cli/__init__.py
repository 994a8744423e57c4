"""The `vtpipe` command line. Orchestration only: every command builds a config, plans a stage, runs it.

The root group is here; the commands live in one module per group and are added below:

    run.py             run, demo, slurm              a whole pipeline (locally, on a cluster, the sample)
    stage_commands.py  compress, extract, concat,    one stage outside a pipeline config
                       index, evaluate
    results.py         search, table, status, info   read what a run made
    catalogue.py       models, presets               what ships
    common.py          what they share (click settings, error exit, one stage under the run lock, ...)
    preset_options.py  options left at their defaults do not override a paper preset
"""

from __future__ import annotations

import logging
import signal
import sys

import click

from pipeline import __version__
from pipeline.cli import catalogue, results, run as run_cmds, stage_commands
from pipeline.cli.common import CONTEXT


def _terminate_cleanly(signum, frame) -> None:
    """SIGTERM (a scheduler's cancel, `kill`) unwinds like Ctrl-C: temporaries are removed, no manifest is
    written for the interrupted task, finished tasks stay finished."""
    raise KeyboardInterrupt(f"signal {signum}")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


@click.group(context_settings=CONTEXT)
@click.version_option(version=__version__, prog_name="vtpipe", message="%(prog)s %(version)s")
@click.option("-v", "--verbose", is_flag=True, help="Log progress details (INFO level).")
def main(verbose: bool) -> None:
    """vtpipe: video-text feature extraction and retrieval evaluation, resumable at every stage.

    \b
    Stages:  compress -> extract -> concat -> index -> evaluate
    Start:   vtpipe demo   (the embedded sample, every stage; then: vtpipe run PIPELINE.yaml)
    Models:  vtpipe models
    Every command skips work that is already complete; run it again after a crash to finish.
    """
    _setup_logging(verbose)
    signal.signal(signal.SIGTERM, _terminate_cleanly)


for _command in (run_cmds.run, run_cmds.demo, run_cmds.slurm,
                 stage_commands.compress, stage_commands.extract, stage_commands.concat, stage_commands.index,
                 stage_commands.evaluate,
                 results.search, results.table, results.status, results.info,
                 catalogue.models, catalogue.presets):
    main.add_command(_command)


def run_main() -> None:
    """Console entry point: Ctrl-C / SIGTERM end with a one-line message and exit status 130."""
    try:
        main(standalone_mode=False)
    except click.ClickException as e:  # usage errors: click's own message and exit status
        e.show()
        sys.exit(e.exit_code)
    except OSError as e:  # disk full, read-only or missing folder: a message, not a traceback
        click.secho(f"error: {e}", fg="red", err=True)
        sys.exit(1)
    except (KeyboardInterrupt, click.exceptions.Abort):
        click.secho("interrupted: finished tasks are kept; run the same command again to finish", fg="yellow", err=True)
        sys.exit(130)
