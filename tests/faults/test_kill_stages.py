"""kill -9 in every stage at seeded random moments, then the same command again: the stage's outputs equal the
clean run's, file by file (stores dataset by dataset, index files and id map, index infos without timings,
metrics, ranks, plots, manifests), nothing duplicated, nothing lost, nothing finished redone.

Each trial returns one stage of a finished run to "not run" (its folders deleted), runs it in a child that is
SIGKILLed (at the n-th time it reaches a named fault point, or after a seeded delay), checks that every file
left under a final name equals the clean one (only hidden '.*.tmp' temporaries may be partial), runs the
stage again and compares. Named points and their occurrence counts come from the clean run's trace, so every
named kill really happens (asserted). Trials per stage: see TRIALS; VTPIPE_FAULT_SEED / VTPIPE_FAULT_SCALE
choose other / more kill points.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from faults.harness import (
    SCALE,
    assert_no_torn_outputs,
    assert_stage_equals_clean,
    files_under,
    is_hidden,
    named_kill,
    reset_stage,
    restore_run,
    run_stage_child,
    snapshot,
    timed_kill,
    valid_manifests,
)

# stage -> (kills at named fault points, kills after a random delay). 20 named kills always land; the timed
# ones land unless the stage happens to finish first (then the trial checks a finished stage is not redone).
TRIALS = {"compress": (4, 1), "extract": (6, 1), "concat": (4, 1), "index": (3, 1), "evaluate": (3, 1)}
CASES = [(stage, kind, i) for stage, (named, timed) in TRIALS.items()
         for kind, n in (("named", named), ("timed", timed)) for i in range(n * SCALE)]


def _kept_outputs(run_dir: Path, stage: str, manifests: dict[str, dict]) -> dict[str, Path]:
    """Files the re-run must leave alone: manifests of finished tasks, their output files, and (compress) every
    video already in place."""
    keep = {rel: run_dir / rel for rel in manifests}
    for rel, m in manifests.items():
        stage_dir = (run_dir / rel).parent.parent  # outputs are stored relative to <stage_dir>/_manifests/..
        for out in m.get("outputs", {}).values():
            p = (stage_dir / out).resolve() if isinstance(out, str) else Path()
            if isinstance(out, str) and p.is_file() and run_dir in p.parents:
                keep[str(p.relative_to(run_dir))] = p
    if stage == "compress":
        keep.update({r: p for r, p in files_under(run_dir, stage).items() if r.endswith(".mp4") and not is_hidden(r)})
    return keep


@pytest.mark.faults
@pytest.mark.parametrize("stage,kind,trial", CASES, ids=[f"{s}-{k}{i}" for s, k, i in CASES])
def test_kill9_then_rerun_equals_clean(fault_run, stage, kind, trial):
    run, ref, y = fault_run.run_dir, fault_run.ref_dir, fault_run.yaml
    seed = f"{fault_run.seed}/{stage}"
    restore_run(run, ref)  # self-contained: nothing an earlier trial did (or failed to undo) is seen
    reset_stage(run, stage)
    if kind == "named":
        point, n = named_kill(fault_run.clean[stage].trace, seed, trial)
        where = f"{stage} killed at {point}:{n}"
        killed = run_stage_child(y, run, [stage], env={"VTPIPE_FAULT": f"{point}:{n}"})
        assert killed.killed, f"{where}: the point was not reached (exit {killed.exitcode}) {killed.describe()}"
    else:
        delay = timed_kill(fault_run.clean[stage].seconds, seed, trial)
        where = f"{stage} killed after {delay:.3f} s"
        killed = run_stage_child(y, run, [stage], kill_after=delay)
        assert killed.killed or killed.exitcode == 0, f"{where}: {killed.describe()}"

    assert not killed.lingering, f"{where}: processes it started outlived it: {killed.lingering}"
    assert_no_torn_outputs(run, ref, stage)  # only hidden temporaries may be partial
    done = valid_manifests(run, stage)
    kept = snapshot(_kept_outputs(run, stage, done))

    again = run_stage_child(y, run, [stage])
    assert again.exitcode == 0, f"{where}; the re-run failed: {again.describe()}"
    rep = again.stage_report(stage)
    assert rep["already_complete"] == len(done), (where, rep)  # every task finished before the kill is kept
    assert rep["ran"] == rep["tasks"] - len(done), (where, rep)  # and only the others are run
    assert_stage_equals_clean(run, ref, stage)
    after = snapshot({r: run / r for r in kept})
    rewritten = sorted(r for r in kept if after[r] != kept[r])
    assert not rewritten, f"{where}: finished outputs were redone: {rewritten}"
