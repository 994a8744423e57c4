"""Commands that read results: `vtpipe search` (an index), `vtpipe table` (evaluate results side by side),
`vtpipe status` (a run's tasks) and `vtpipe info` (where an artifact came from)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from pipeline.cli.common import CONTEXT, _echo_warnings, _fail
from pipeline.status import format_status
from stages.contract.errors import VtpipeError


@click.command(context_settings=CONTEXT)
@click.option("--index", "index_dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--text", help="A caption to search for (encoded with the index's model).")
@click.option("--video", help="A video id whose pooled vector is the query.")
@click.option("-k", default=10, show_default=True)
@click.option("--features", type=click.Path(exists=True, dir_okay=False),
              help="Store for --video (default: the one the index was built from).")
@click.option("--weights", type=click.Path(exists=True), help="Checkpoint for the text encoder.")
@click.option("--allow-random", is_flag=True, help="Allow random weights (plumbing checks only).")
def search(index_dir, text, video, k, features, weights, allow_random):
    """Query an index with a caption or a video id and print the top-k videos with scores."""
    import numpy as np

    from stages.backbones.registry import load_model
    from stages.ann.io import open_index
    from stages.index import video_queries

    try:
        if bool(text) == bool(video):
            raise VtpipeError("give exactly one of --text or --video")
        ix = open_index(index_dir, device="auto")
        if text:
            model = load_model(ix.infos["model"], weights=weights, allow_random=allow_random)
            q = model.encode_text([text]).pooled.astype(np.float32)
        else:
            from stages.index import infos_store_path

            q = video_queries(index_dir, features or infos_store_path(index_dir, ix.infos), [video])
        scores, ids = ix.search(q, k, model=ix.infos["model"])
        for rank, (s, hit) in enumerate(zip(scores[0], ids[0]), 1):
            if hit is None:
                break
            label = hit if isinstance(hit, str) else f"{hit[0]} @ {hit[1]:.2f}s"
            click.echo(f"{rank:>3}  {s:8.4f}  {label}")
    except (VtpipeError, KeyError) as e:
        _fail(e)


@click.command(context_settings=CONTEXT)
@click.argument("results", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--output", "-o", type=click.Path(dir_okay=False),
              help="Write the table to OUTPUT (markdown) and OUTPUT with .csv [default: print only].")
def table(results, output):
    """Paper-style comparison table of retrieval results across models and re-rankers.

    RESULTS are evaluate output folders (searched for metrics.json) or metrics.json files. The caption
    lists the conventions of every number (ties and their reference, median, v2t gallery, re-ranker and
    bank) and every warning.

    \b
    vtpipe table outputs/run1/eval outputs/sknorm-eval -o comparison.md
    """
    from stages.retrieval.report_table import collect_results, comparison_table, write_comparison

    rows = collect_results(results)
    if not rows:
        _fail(VtpipeError(f"no t2v / v2t metrics.json under {', '.join(results)}"))
    if output:
        md = write_comparison(rows, Path(output), Path(output).with_suffix(".csv"))
    else:
        md, _ = comparison_table(rows)
    click.echo(md)
    _echo_warnings(rows)


@click.command(context_settings=CONTEXT)
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
def status(run_dir):
    """Per stage: tasks done / failed / pending, throughput, failed videos by reason, and the results.

    Read from the run directory alone (config.yaml, manifests, failure markers), so it works from a login
    node while jobs run."""
    try:
        click.echo(format_status(Path(run_dir)))
    except VtpipeError as e:
        _fail(e)


@click.command(context_settings=CONTEXT)
@click.argument("path", metavar="FILE_OR_RUN", type=click.Path(exists=True))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def info(path, as_json):
    """Where an artifact came from: vtpipe version, model, checkpoint sha256 per file, sampling and
    preprocessing presets, precision, input fingerprint (and shard fingerprints for merged stores).

    FILE_OR_RUN: a feature store (.h5), an index folder, a metrics.json, or a run directory (every store,
    index and metrics file in it, and the stage versions of its results)."""
    from pipeline.info import describe, format_info

    try:
        entries = describe(path)
    except VtpipeError as e:
        _fail(e)
    click.echo(json.dumps(entries, indent=2, default=str) if as_json else format_info(entries))
