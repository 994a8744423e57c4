"""`vtpipe status`: per stage, tasks done / failed / pending, throughput and failed videos by reason.

Everything is read from the run directory alone (its config.yaml, manifests and failure markers), so it
works from a login node while jobs run elsewhere.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pipeline import config as config_mod
from stages.contract.errors import VtpipeError
from stages.contract.layout import Layout
from stages.contract.tasks import MANIFEST_DIR, read_manifest, stale_reason


@dataclass
class StageStatus:
    stage: str
    tasks: int = 0
    done: int = 0
    failed: int = 0
    stale: int = 0  # finished with another config: needs --overwrite
    outdated: int = 0  # of `done`: finished, but an earlier stage is not (its inputs will change)
    stale_why: str = ""  # why the first stale task is stale (stages.contract.tasks.stale_reason)
    videos: int = 0
    seconds: float = 0.0
    reasons: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    plan_error: str = ""

    @property
    def pending(self) -> int:
        return self.tasks - self.done - self.failed - self.stale


def collect(run_dir: Path) -> list[StageStatus]:
    from pipeline.runner import plan_stage

    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        return collect_manifests(run_dir)
    cfg = config_mod.resolve(config_mod.load_yaml(cfg_path))
    layout = Layout(run_dir)
    out = []
    for name in cfg["stages"]:
        st = StageStatus(name)
        out.append(st)
        try:
            tasks = plan_stage(name, cfg, layout)
        except VtpipeError as e:  # e.g. inputs moved: say so, keep going
            st.plan_error = str(e)
            continue
        st.tasks = len(tasks)
        for t in tasks:
            m = read_manifest(t)
            if m is not None and m.get("fingerprint") == t.fingerprint:
                st.done += 1
                st.videos += int(m.get("counts", {}).get("videos", 0))
                st.seconds += float(m.get("seconds", 0.0))
                st.reasons.update(f.get("reason", "unknown") for f in m.get("failures", []))
            elif m is not None:
                st.stale += 1
                st.stale_why = st.stale_why or stale_reason(t, m)
            elif t.failed_path.exists():
                st.failed += 1
                try:
                    err = json.loads(t.failed_path.read_text())
                    st.errors.append(f"{t.id}: {err.get('error')} (attempts: {err.get('attempts')})")
                except (OSError, json.JSONDecodeError):
                    st.errors.append(f"{t.id}: failed")
    # A stage that plans from the previous stage's results (concat from the shards' manifests, index and
    # evaluate from the store's fingerprint) reads as current while that stage is stale; its results are
    # outdated and will be redone. Extract is not such a stage: it hashes the source videos' own identity.
    from pipeline.runner import stage_module

    prev_changed = False
    for st in out:
        if prev_changed and getattr(stage_module(st.stage), "PLANS_FROM_RESULTS", True):
            st.outdated = st.done
        prev_changed = bool(st.plan_error) or st.done < st.tasks or st.outdated > 0
    return out


def collect_manifests(folder: Path) -> list[StageStatus]:
    """A folder written by a single-stage command (no config.yaml): what its manifests say, per stage."""
    rows: dict[str, StageStatus] = {}
    for mdir in sorted(folder.rglob(MANIFEST_DIR)):
        for p in sorted(mdir.glob("*.json")):
            try:
                m = json.loads(p.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            st = rows.setdefault(m.get("stage", "?"), StageStatus(m.get("stage", "?")))
            st.tasks += 1
            st.done += 1
            st.videos += int(m.get("counts", {}).get("videos", 0))
            st.seconds += float(m.get("seconds", 0.0))
            st.reasons.update(f.get("reason", "unknown") for f in m.get("failures", []))
    if not rows:
        raise VtpipeError(f"{folder} holds no vtpipe results (no config.yaml, no _manifests/)")
    return list(rows.values())


def format_status(run_dir: Path) -> str:
    rows = collect(run_dir)
    lines = [f"run: {run_dir}", f"  {'stage':<9} {'tasks':>5} {'done':>5} {'failed':>6} {'pending':>7}  throughput / failed videos"]
    for r in rows:
        if r.plan_error:
            lines.append(f"  {r.stage:<9} cannot plan: {r.plan_error}")
            continue
        rate = f"{r.videos / r.seconds:.1f} videos/s" if r.videos and r.seconds else ""
        fails = ", ".join(f"{k}: {v}" for k, v in r.reasons.most_common())
        extra = "; ".join(x for x in (rate, f"failed videos: {fails}" if fails else "") if x)
        stale = f" ({r.stale} stale: {r.stale_why}; rerun with --overwrite)" if r.stale else ""
        if r.outdated:
            stale += f" ({r.outdated} done but outdated: an earlier stage changed)"
        lines.append(f"  {r.stage:<9} {r.tasks:>5} {r.done:>5} {r.failed:>6} {r.pending:>7}  {extra}{stale}")
        lines.extend(f"      error {e}" for e in r.errors[:5])
    for m in sorted(run_dir.glob("eval/*/*/metrics.json")):
        d = json.loads(m.read_text())
        lines.append(f"  result {m.parent.relative_to(run_dir)}: R@1 {d.get('R@1', float('nan')):.1f}  "
                     f"R@5 {d.get('R@5', float('nan')):.1f}  R@10 {d.get('R@10', float('nan')):.1f}  "
                     f"MdR {d.get('MdR', float('nan'))}  MnR {d.get('MnR', float('nan')):.1f}"
                     + (f"  (ties: {d['ties']})" if d.get("ties") else ""))
        lines.extend(f"      WARNING {w}" for w in result_warnings(d))
    return "\n".join(lines)


def result_warnings(d: dict) -> list[str]:
    """The warnings of one metrics.json; results written before warnings existed get the missing-videos one
    rebuilt from their counts."""
    warns = list(d.get("warnings") or [])
    missing = d.get("videos_missing") or []
    if missing and not any("no features" in w for w in warns):
        n = len(missing) if isinstance(missing, list) else int(missing)
        warns.insert(0, f"{n} video(s) named by the captions have no features (missing or failed): their captions "
                        "were dropped from the metrics")
    return warns

