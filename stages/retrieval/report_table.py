"""Retrieval result tables: one result (metrics.md), a run-level comparison across models and re-rankers
(paper style, markdown and CSV), and the per-query ranks.csv.

Every table says under which conventions its numbers were made (tie convention and its reference file,
median, v2t gallery, similarity, re-ranker parameters) and repeats the results' warnings (tied ground
truths, missing videos, random weights), so a number is never printed without what can make it mislead.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["metrics_table", "ranks_frame", "collect_results", "comparison_table", "write_comparison"]

PAPER_COLS = ("R@1", "R@5", "R@10", "MdR", "MnR")


def _fmt(v) -> str:
    return f"{v:.1f}" if isinstance(v, (int, float)) and v is not None else "-"


def conventions_of(m: dict) -> str:
    """One line: the conventions behind a metrics dict."""
    parts = [f"ties: {m.get('ties')}", f"median: {m.get('median')}"]
    if m.get("task") == "v2t" and m.get("v2t_gallery"):
        parts.append(f"v2t gallery: {m['v2t_gallery']}")
    if m.get("similarity"):
        parts.append(f"similarity: {m['similarity']}")
    if m.get("rerank", "none") != "none":
        params = ", ".join(f"{k}={v}" for k, v in sorted((m.get("rerank_params") or {}).items()))
        bank = (m.get("rerank_info") or {}).get("bank")
        parts.append(f"rerank: {m['rerank']}" + (f" ({params})" if params else "") + (f", bank: {bank}" if bank else ""))
    if m.get("rerank_requested"):
        parts.append(f"rerank requested: {m['rerank_requested']} (not applied: no bank)")
    if m.get("missing_policy") == "miss" and m.get("queries_counted_as_misses"):
        parts.append(f"{m['queries_counted_as_misses']} queries counted as misses")
    if m.get("convention_reference"):
        parts.append(f"reference: {m['convention_reference']}")
    return "; ".join(parts)


def _warnings(rows: list[dict]) -> list[str]:
    seen: list[str] = []
    for m in rows:
        for w in m.get("warnings") or []:
            line = f"{m.get('model', '')} {m.get('task', '')}: {w}" if w and not w.startswith(m.get("task", "~")) else w
            if w and line not in seen:
                seen.append(line)
    return seen


def metrics_table(rows: list[dict], ks=(1, 5, 10, 50)) -> str:
    """A markdown table, one row per retrieval metrics dict, in the papers' column order, with the
    conventions and warnings below it."""
    cols = [f"R@{k}" for k in ks] + ["MdR", "MnR"]
    head = "| model | task | rerank | " + " | ".join(cols) + " | queries |"
    sep = "|" + "---|" * (len(cols) + 4)
    lines = [head, sep]
    for m in rows:
        vals = " | ".join(_fmt(m.get(c)) for c in cols)
        lines.append(f"| {m.get('model', '')} | {m.get('task', '')} | {m.get('rerank', 'none')} | {vals} | {m.get('n_queries', '')} |")
    notes = sorted({f"ties: {m.get('ties')}, median: {m.get('median')}" for m in rows})
    lines.append("")
    lines.extend(f"_{n}_" for n in notes)
    for w in _warnings(rows):
        lines.append("")
        lines.append(f"**WARNING: {w}**")
    if any(m.get("random_weights") for m in rows):
        lines.append("")
        lines.append("**WARNING: features came from RANDOM weights; these numbers are chance level by design.**")
    return "\n".join(lines) + "\n"


def ranks_frame(queries, truth, ranks, counts, misses: int = 0) -> pd.DataFrame:
    """ranks.csv: 1-based ranks of each query. ``rank`` is the convention's (x.5 under averaged ties); for
    clip4clip's compute_metrics cases (several entries per tied query) it is left empty. ``rank_optimistic``
    / ``rank_pessimistic`` bound it. Queries counted as misses are not listed."""
    n = len(queries)
    frame = {"query": list(queries), "ground_truth": list(truth)}
    r = np.asarray(ranks, dtype=np.float64)
    per_query = r.size == n + misses
    if counts is not None:
        frame["rank_optimistic"] = np.asarray(counts.n_gt)[:n] + 1
        frame["rank_pessimistic"] = np.asarray(counts.n_ge)[:n] + 1
    frame["rank"] = (r[:n] + 1) if per_query else np.full(n, np.nan)  # last: the column readers look for
    return pd.DataFrame(frame)


def collect_results(paths) -> list[dict]:
    """Retrieval metrics.json files under the given folders (recursively) or given directly."""
    rows = []
    for p in paths:
        p = Path(p)
        files = [p] if p.is_file() else sorted(p.rglob("metrics.json"))
        for f in files:
            try:
                m = json.loads(f.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if m.get("task") in ("t2v", "v2t"):
                m["_path"] = str(f)
                rows.append(m)
    return rows


def comparison_table(rows: list[dict], cols=PAPER_COLS) -> tuple[str, pd.DataFrame]:
    """Paper-style table: one line per (model, dataset, re-ranker), t2v and v2t side by side.

    Each line points (``conv``) at a caption entry listing the conventions of its numbers; results made
    under different conventions are never merged into one line."""
    groups: dict[tuple, dict] = {}
    conv_ids: dict[str, str] = {}
    for m in rows:
        conv = conventions_of({**m, "task": "v2t"} if m.get("task") == "v2t" else m)
        cid = conv_ids.setdefault(conv, chr(ord("a") + len(conv_ids)) if len(conv_ids) < 26 else str(len(conv_ids)))
        key = (m.get("model", ""), m.get("dataset", ""), m.get("rerank", "none"), m.get("ties"))
        g = groups.setdefault(key, {"model": key[0], "dataset": key[1], "rerank": key[2], "conv": [], "conventions": []})
        for c in cols:
            g[f"{m['task']} {c}"] = m.get(c)
        g[f"{m['task']} queries"] = m.get("n_queries")
        if cid not in g["conv"]:
            g["conv"].append(cid)
            g["conventions"].append(f"{m['task']}: {conv}")
    table = []
    for g in groups.values():
        g["conv"] = ",".join(g["conv"])
        g["conventions"] = " | ".join(g["conventions"])  # the CSV's caption, per line
        table.append(g)
    value_cols = [f"{d} {c}" for d in ("t2v", "v2t") for c in cols]
    frame = pd.DataFrame(table, columns=["model", "dataset", "rerank", *value_cols, "t2v queries", "v2t queries", "conv",
                                         "conventions"])
    head = "| model | dataset | rerank | " + " | ".join(value_cols) + " | conv |"
    lines = [head, "|" + "---|" * (len(value_cols) + 4)]
    for g in table:
        vals = " | ".join(_fmt(g.get(c)) for c in value_cols)
        lines.append(f"| {g['model']} | {g['dataset']} | {g['rerank']} | {vals} | {g['conv']} |")
    lines.append("")
    lines.append("Conventions (column conv):")
    for conv, cid in conv_ids.items():
        lines.append(f"- ({cid}) {conv}")
    for w in _warnings(rows):
        lines.append(f"- **WARNING: {w}**")
    if any(m.get("random_weights") for m in rows):
        lines.append("- **WARNING: some features came from RANDOM weights: chance-level numbers by design.**")
    return "\n".join(lines) + "\n", frame


def write_comparison(rows: list[dict], out_md: Path, out_csv: Path) -> str:
    """Write the comparison table (markdown with its caption, and CSV) and return the markdown."""
    md, frame = comparison_table(rows)
    Path(out_md).write_text(md)
    frame.to_csv(out_csv, index=False, float_format="%.4g")
    return md
