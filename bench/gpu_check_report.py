"""The record of bench/gpu_check.py: one JSON file rewritten after every step, and the summary table."""

from __future__ import annotations

import datetime as dt
import json
import time
import traceback
from pathlib import Path


class Report:
    """Figures of every step, written to one JSON file after each step; errors recorded, not raised."""

    def __init__(self, out: Path, budget_s: float, mode: str):
        self.out, self.budget_s, self.t0 = out, budget_s, time.perf_counter()
        self.data: dict = {"mode": mode, "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                           "steps": {}, "errors": {}, "skipped": {}}

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def run(self, name: str, fn, *args) -> None:
        if self.elapsed() > self.budget_s:
            self.data["skipped"][name] = f"time budget of {self.budget_s:.0f}s spent"
            return self.save()
        t = time.perf_counter()
        print(f"[gpu_check] {name} ...", flush=True)
        try:
            self.data["steps"][name] = fn(*args)
        except Exception as e:  # noqa: BLE001 - one broken path must not hide the others' figures
            self.data["errors"][name] = f"{type(e).__name__}: {e}"[:2000]
            self.data["steps"][name] = {"traceback": traceback.format_exc(limit=8)[-4000:]}
        self.data.setdefault("seconds", {})[name] = round(time.perf_counter() - t, 2)
        self.save()

    def save(self) -> None:
        self.data["total_seconds"] = round(self.elapsed(), 2)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text(json.dumps(self.data, indent=2, default=str))


def _fmt(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def summary(data: dict) -> str:
    rows = [("step", "run", "figures")]
    ext = data["steps"].get("extract", {})
    for name, r in ext.get("runs", {}).items():
        figs = f"{r['frames_per_s']} frames/s = {r['ratio_to_bare']} x bare forward"
        if "max_abs_diff_units" in r:
            figs += f"; max|diff| to CPU {_fmt(r['max_abs_diff_units'])} (features up to {_fmt(r['cpu_feature_max_abs'])})"
        rows.append(("extract", name, figs))
    for model, r in data["steps"].get("families", {}).get("results", {}).items():
        if "error" in r:
            rows.append(("families", model, "ERROR " + r["error"][:100]))
        elif "skipped" in r:
            rows.append(("families", model, "skipped: " + r["skipped"]))
        for run, c in r.items():
            if isinstance(c, dict):
                rows.append(("families", f"{model} {run}", f"max|diff| units {_fmt(c['max_abs_diff_units'])}, "
                             f"pooled cos >= {c['min_cosine_pooled']:.5f}, text {_fmt(c['max_abs_diff_text'])}"
                             + (f" (text: {r['text_error'][:60]})" if r.get("text_error") else "")))
    dec = data["steps"].get("decode", {})
    if "frames" in dec:
        rows.append(("decode", f"decord CUDA build: {dec['decord_cuda_build']}",
                     f"ctx=gpu decoded on {dec['gpu_decoded_on']}; {dec['gpu_frames_per_s']} vs CPU "
                     f"{dec['cpu_frames_per_s']} frames/s; max pixel diff {dec['max_abs_pixel_diff']}"))
    for device, b in data["steps"].get("faiss", {}).get("builds", {}).items():
        figs = b.get("error") or b.get("skipped") or (f"{b['factory']} on {b['device']}: recall@10 {b['recall_at_10']}, "
                                  f"{b['queries_per_s']} q/s, build {b['build_seconds']}s")
        rows.append(("faiss", f"{data['steps']['faiss']['n']} x {data['steps']['faiss']['d']} {device}", figs))
    for name, err in data["errors"].items():
        rows.append((name, "ERROR", err[:120]))
    for name, why in data["skipped"].items():
        rows.append((name, "skipped", why))
    w0, w1 = (max(len(r[i]) for r in rows) for i in (0, 1))
    return "\n".join(f"{a:<{w0}}  {b:<{w1}}  {c}" for a, b, c in rows)
