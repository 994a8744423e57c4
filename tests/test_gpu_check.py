"""bench/gpu_check.py, the prepared device check, must not rot while no GPU is lent: its --dry-run runs every
import, the plan and each step's code at tiny sizes on the CPU (the CUDA arm replaced by the CPU)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from stages.backbones.registry import list_models

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_dry_run_plans_and_runs_every_step(tmp_path):
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py"), "--dry-run", "--out", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["mode"] == "dry" and not data["errors"] and not data["skipped"]
    assert set(data["steps"]) == {"environment", "extract", "families", "decode", "faiss"}
    ext = data["steps"]["extract"]
    assert ext["model"] == "clip-vit-b-32" and ext["units"] > 0
    assert ext["runs"]["cpu fp32"]["max_abs_diff_units"] == 0.0  # the CPU standing in for CUDA: same bits
    plan = data["steps"]["families"]["plan"]
    assert set(plan) == {m.name for m in list_models()}  # every registered model is planned ...
    assert all(p["units_of_short_clip"] > 0 for p in plan.values())  # ... and its sampling selects units
    assert data["steps"]["families"]["results"]["shapes-tiny"]["cpu fp32"]["max_abs_diff_text"] == 0.0
    dec = data["steps"]["decode"]
    assert isinstance(dec["decord_cuda_build"], bool) and dec["frames"] > 0
    if not dec["decord_cuda_build"]:  # the fallback the extract stage takes, with its warning
        assert dec["gpu_decoded_on"] == "cpu" and dec["max_abs_pixel_diff"] == 0
    build = data["steps"]["faiss"]["builds"]["cpu"]
    assert build["recall_at_10"] >= 0.95 and build["factory"]
    assert "extract" in proc.stdout and "faiss" in proc.stdout  # the summary table


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without CUDA")
def test_real_mode_without_cuda_refuses(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py"), "--out", str(tmp_path / "x.json")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "no CUDA device visible" in proc.stderr
    assert not (tmp_path / "x.json").exists()


def test_summary_of_a_real_run_shape():
    """The table of a CUDA run (rows the dry run never produces: amp runs, missing GPU FAISS, skipped models)."""
    sys.path.insert(0, str(REPO / "bench"))
    from gpu_check_report import summary

    diff = {"max_abs_diff_units": 1.5e-3, "max_abs_diff_pooled": 1e-3, "cpu_feature_max_abs": 3.6,
            "min_cosine_pooled": 0.99991, "failed_videos": [], "seconds": 0.2, "max_abs_diff_text": 2e-3}
    data = {"mode": "real", "errors": {"decode": "RuntimeError: boom"}, "skipped": {},
            "steps": {
                "extract": {"runs": {"cpu fp32 (reference)": {"frames_per_s": 90.0, "ratio_to_bare": 0.95},
                                     "cuda bf16": {"frames_per_s": 800.0, "ratio_to_bare": 0.2, **diff}}},
                "families": {"results": {"s3d-howto100m": {"family": "s3d", "cuda fp32": diff,
                                                           "text_error": "VtpipeError: needs its dict"},
                                         "vt-twins": {"family": "s3d", "skipped": "time budget spent"},
                                         "locvtp": {"family": "locvtp", "error": "RuntimeError: CUDA oom"}}},
                "faiss": {"n": 1000000, "d": 512, "builds": {
                    "gpu": {"error": "FAISS sees no GPU"}, "cpu": {"skipped": "no GPU build to compare with"}}},
                "decode": {"traceback": "..."}}}
    table = summary(data)
    assert "cuda bf16" in table and "0.2 x bare forward" in table and "max|diff| to CPU 0.0015" in table
    assert "s3d-howto100m cuda fp32" in table and "text: VtpipeError" in table
    assert "vt-twins" in table and "skipped: time budget spent" in table and "ERROR RuntimeError: CUDA oom" in table
    assert "FAISS sees no GPU" in table and "decode" in table and "boom" in table
