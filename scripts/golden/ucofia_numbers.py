#!/usr/bin/env python
"""Add ucofia-msrvtt to tests/golden/preset_numbers/numbers.json: the t2v numbers UCoFiA's eval computes from
the seeded features of tests/golden/ucofia.npz.

    python scripts/golden/ucofia_numbers.py /path/to/UCoFiA [--out tests/golden/preset_numbers]

tests/golden/ucofia.npz (scripts/golden/ucofia_reference.py, UCoFiA's own model code) holds, for seeded
features of 10 captions, 8 videos and a 40-caption bank, the SK-normed average of the three levels that
eval_t2v/main_ucofia.py's eval_epoch builds (`sim_matrix = (sim_matrix_1 + sim_matrix_2 + sim_matrix_3) / 3`
after each level's sinkhorn_knopp bias). Here captions 0-7 are the queries of videos 0-7 (one caption a video,
as MSR-VTT 1k-A): their rows are scored by eval_epoch's own tail (the `if multi_sentence_:` statement, taken
from main_ucofia.py with `ast`) with eval_t2v/metrics.py (executed whole: numpy / torch only).
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
import types
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
QUERIES = 8


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("reference", type=Path, help="UCoFiA checkout (the folder holding eval_t2v/)")
    ap.add_argument("--out", type=Path, default=REPO / "tests/golden/preset_numbers")
    a = ap.parse_args()
    ref = a.reference.resolve()
    commit = subprocess.run(["git", "-C", str(ref), "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()[:7]
    gold = np.load(REPO / "tests/golden/ucofia.npz")
    recipe = json.loads(str(gold["recipe"]))
    sim = np.asarray(gold["feat_scores"], np.float32)[:QUERIES]
    assert sim.shape == (QUERIES, QUERIES)
    metrics = types.ModuleType("ucofia_metrics")
    mpath = ref / "eval_t2v/metrics.py"
    exec(compile(mpath.read_text(), str(mpath), "exec"), metrics.__dict__)
    path = ref / "eval_t2v/main_ucofia.py"
    src = path.read_text()
    ev = next(n for n in ast.parse(src).body if isinstance(n, ast.FunctionDef) and n.name == "eval_epoch")
    block = next(n for n in ast.walk(ev) if isinstance(n, ast.If) and "cut_off_points2len_" in ast.get_source_segment(src, n))
    ns = {"np": np, "torch": torch, "sim_matrix": sim, "multi_sentence_": False, "cut_off_points_": [],
          "logger": types.SimpleNamespace(info=lambda *x: None), "compute_metrics": metrics.compute_metrics,
          "tensor_text_to_video_metrics": metrics.tensor_text_to_video_metrics,
          "tensor_video_to_text_sim": metrics.tensor_video_to_text_sim}
    exec(compile(ast.Module(body=[block], type_ignores=[]), str(path), "exec"), ns)
    tv = ns["tv_metrics"]
    numbers_path = a.out / "numbers.json"
    numbers = json.loads(numbers_path.read_text())
    numbers["ucofia-msrvtt"] = {
        "computed_by": [f"{recipe.get('reference', 'Ziyang412/UCoFiA')} via scripts/golden/ucofia_reference.py "
                        "(tests/golden/ucofia.npz feat_scores: levels, per-level sinkhorn_knopp biases, average)",
                        f"Ziyang412/UCoFiA@{commit} eval_t2v/main_ucofia.py:{block.lineno}-{block.end_lineno} (eval_epoch tail)",
                        f"Ziyang412/UCoFiA@{commit} eval_t2v/metrics.py (compute_metrics)"],
        "t2v": {k: float(tv[k]) for k in ("R1", "R5", "R10", "MR", "MeanR")},
        "queries": QUERIES, "features": "tests/golden/ucofia.npz feat_* (captions 0-7 -> videos 0-7, bank: feat_bank_*)",
        "units": "percent; MR/MeanR 1-based ranks",
    }
    numbers_path.write_text(json.dumps(numbers, indent=1, sort_keys=True) + "\n")
    print("ucofia-msrvtt", numbers["ucofia-msrvtt"]["t2v"])


if __name__ == "__main__":
    main()
