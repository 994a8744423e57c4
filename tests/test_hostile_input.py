"""Hostile input: every bad input is refused with a message that names it, and nothing else is touched.

Video ids that would escape the output root or break line-based tools (folders and CSVs), broken caption
files, unknown or mistyped config keys, a checkpoint that is a pickle with code in it, NaN/Inf features,
stores of different dimensions or models. And a static check: no subprocess call anywhere uses a shell.
"""

from __future__ import annotations

import ast
import csv
import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from conftest import REPO, run_cli
from pipeline import config as config_mod
from pipeline.executors import LocalExecutor
from pipeline.runner import plan_stage, run_stage
from stages.datasets.captions import read_captions
from stages.contract.errors import ConfigError, VtpipeError
from stages.contract.layout import Layout
from stages.features.store import VideoStoreWriter, write_text_store
from stages.video.discover import discover_videos

MODEL = "shapes-tiny"


# ---- video ids ---------------------------------------------------------------------------------------------
def _csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.mark.parametrize("bad_id, reason", [
    ("../escape", "'..' or '.' path component"),
    ("a/../../escape", "'..' or '.' path component"),
    ("/etc/passwd", "absolute path"),
    ("C:/Windows/x", "absolute path"),
    ("evil\x00name", "contains a NUL"),
    ("evil\nname", "contains a newline"),
    ("evil\rname", "contains a carriage return"),
    ("a\\..\\b", "contains a backslash"),
    ("./x", "'..' or '.' path component"),
])
def test_csv_video_ids_that_escape_or_break_lines_are_refused(tmp_path, bad_id, reason):
    lst = _csv(tmp_path / "list.csv", [{"video_id": "good"}, {"video_id": bad_id}])
    with pytest.raises(VtpipeError) as e:
        discover_videos(lst)
    assert "unsafe video id" in str(e.value) and reason in str(e.value), str(e.value)
    kept = discover_videos(lst, on_bad_id="skip")
    assert [v.id for v in kept] == ["good"] and len(kept.skipped) == 1 and reason in kept.skipped[0].reason


def test_csv_path_column_with_absolute_or_parent_paths(tmp_path):
    lst = _csv(tmp_path / "list.csv", [{"path": "/abs/video.mp4"}, {"path": "../up/video.mp4"}])
    with pytest.raises(VtpipeError) as e:
        discover_videos(lst, path_column="path")
    msg = str(e.value)
    assert "2 unsafe video id(s)" in msg and "absolute path" in msg and "'..' or '.' path component" in msg, msg


def test_folder_names_with_newlines_or_backslashes_are_refused(tmp_path):
    d = tmp_path / "videos"
    d.mkdir()
    (d / "fine.mp4").write_bytes(b"x")
    (d / "two\nlines.mp4").write_bytes(b"x")
    (d / "back\\slash.mp4").write_bytes(b"x")
    with pytest.raises(VtpipeError) as e:
        discover_videos(d)
    assert "contains a newline" in str(e.value) and "contains a backslash" in str(e.value)


def test_compress_of_a_hostile_list_touches_nothing(tmp_path):
    """The CLI refuses before any video is written, and nothing appears where the id points."""
    (tmp_path / "in").mkdir()
    lst = _csv(tmp_path / "in" / "list.csv", [{"video_id": "../escape"}, {"video_id": f"{tmp_path}/abs"}])
    out = tmp_path / "in" / "out"
    proc = run_cli("compress", str(lst), "-o", str(out), check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "unsafe video id" in proc.stderr and "'../escape'" in proc.stderr, proc.stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted(["in", "list.csv", "out", ".vtpipe.lock"]), \
        "something was written besides the run lock"


# ---- caption files -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("content, message", [
    (b"key,video_id\nr0,video0\n", "missing column(s) ['sentence']"),
    (b"key,video_id,sentence\nr0,video0,a cat\nr0,video1,a dog\n", "duplicate caption id(s) ['r0']"),
    (b"key,video_id,sentence\nr0,video0,a cat\nr1,video1,   \n", "empty caption(s) for caption id(s) ['r1']"),
    (b"key,video_id,sentence\nr0,video0,caf\xe9 au lait\n", "not UTF-8 text"),
    (b"key,video_id,sentence\nr0,,a cat\n", "rows with an empty video_id"),
    (b"", "not a readable CSV file"),
])
def test_bad_caption_files(tmp_path, content, message):
    p = tmp_path / "captions.csv"
    p.write_bytes(content)
    with pytest.raises(VtpipeError) as e:
        read_captions("msrvtt-jsfusion", p)
    assert message in str(e.value) and str(p) in str(e.value), str(e.value)


# ---- pipeline config ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("yaml_text, message", [
    ("extract: {shardz: 3}\n", "'extract.shardz'"),
    ("modle: {name: x}\n", "'modle'"),
    ("extract: {shards: three}\n", "'extract.shards' must be an integer"),
    ("compress: {fps: fast}\n", "'compress.fps' must be a number"),
    ("extract: 4\n", "'extract' must be a mapping"),
    ("evaluate: {ties: random}\n", "'evaluate.ties' must be one of"),
    ("model: {allow_random: 'yes'}\n", "'model.allow_random' must be true or false"),
    ("!!python/object/apply:os.system ['touch pwned']\n", "not valid YAML"),
])
def test_bad_pipeline_yaml_names_the_key(tmp_path, yaml_text, message):
    y = tmp_path / "p.yaml"
    y.write_text(yaml_text)
    with pytest.raises(ConfigError) as e:
        config_mod.load_pipeline(y)
    assert message in str(e.value), str(e.value)
    assert not (tmp_path / "pwned").exists() and not (REPO / "pwned").exists()


def test_bad_pipeline_yaml_through_the_cli_creates_no_run(tmp_path):
    y = tmp_path / "p.yaml"
    y.write_text("name: x\nextract: {shards: 2, batchsize: 8}\n")
    proc = run_cli("run", str(y), "-o", str(tmp_path / "run"), check=False)
    assert proc.returncode == 2 and "'extract.batchsize'" in proc.stderr, proc.stderr
    assert not (tmp_path / "run").exists()


# ---- checkpoints -------------------------------------------------------------------------------------------
class _Payload:
    """Unpickling this runs open(marker, "w"): a stand-in for arbitrary code in a checkpoint."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def evil_checkpoint(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "extra": _Payload(str(marker))}, path)
    return path, marker


def test_pickle_checkpoint_with_code_is_refused_in_process(evil_checkpoint):
    from stages.backbones.checkpoints import load_torch_file
    from stages.backbones.registry import load_model

    path, marker = evil_checkpoint
    with pytest.raises(VtpipeError, match="weights_only"):
        load_torch_file(path)
    with pytest.raises(VtpipeError, match="weights_only"):
        load_model(MODEL, weights=str(path))
    assert not marker.exists()


def test_pickle_checkpoint_with_code_is_refused_by_extract(evil_checkpoint, small_sample, tmp_path):
    path, marker = evil_checkpoint
    proc = run_cli("extract", "--model", MODEL, "--weights", str(path), "--videos", str(small_sample["videos"]),
                   "-o", str(tmp_path / "out"), "--decode-workers", "0", check=False)
    assert proc.returncode != 0
    said = proc.stdout + proc.stderr
    assert "weights_only" in said and str(path) in said, said
    assert not marker.exists(), "the checkpoint's code ran"
    assert not list((tmp_path / "out").glob("*.h5")), "a store was written from a refused checkpoint"


# ---- feature stores ----------------------------------------------------------------------------------------
def _video_store(path, ids, dim=8, model=MODEL, seed=0, nan_row=None):
    rng = np.random.default_rng(seed)
    w = VideoStoreWriter(path, dim, {"model": model, "unit": "frame", "sampling": {"policy": "fps", "fps": 3}})
    for vid in ids:
        f = rng.standard_normal((2, dim)).astype(np.float32)
        w.add(vid, f, np.arange(2) / 3, None, f.mean(0))
    w.close()
    if nan_row is not None:  # a store written by something else than VideoStoreWriter
        with h5py.File(path, "r+") as h:
            h["pooled"][nan_row, 0] = np.nan
    return path


def _text_store(path, video_ids, dim=8, model=MODEL, seed=1, nan_row=None):
    rng = np.random.default_rng(seed)
    pooled = rng.standard_normal((len(video_ids), dim)).astype(np.float32)
    write_text_store(path, [f"c{i}" for i in range(len(video_ids))], list(video_ids),
                     [f"caption {i}" for i in range(len(video_ids))], pooled, {"model": model})
    if nan_row is not None:
        with h5py.File(path, "r+") as h:
            h["pooled"][nan_row, 0] = np.inf
    return path


def _evaluate(tmp_path, video, text) -> tuple[list, Path]:
    out = tmp_path / "eval"
    cfg = config_mod.resolve({"stages": ["evaluate"], "model": {"name": MODEL},
                              "evaluate": {"tasks": ["t2v", "v2t"]}})
    lay = Layout.custom(tmp_path, features=video, text_features=text, eval_dir=out)
    rep = run_stage("evaluate", plan_stage("evaluate", cfg, lay), LocalExecutor(1), echo=lambda s: None)
    return rep.errors, out


def test_store_writers_refuse_nan_and_inf(tmp_path):
    w = VideoStoreWriter(tmp_path / "v.h5", 4, {"model": MODEL})
    with pytest.raises(VtpipeError, match="NaN or Inf"):
        w.add("v0", np.full((2, 4), np.nan, np.float32), np.arange(2), None, np.zeros(4, np.float32))
    with pytest.raises(VtpipeError, match="NaN or Inf"):
        w.add("v1", np.zeros((2, 4), np.float32), np.arange(2), None, np.array([0, np.inf, 0, 0], np.float32))
    w.close()
    with pytest.raises(VtpipeError, match="NaN or Inf"):
        write_text_store(tmp_path / "t.h5", ["c"], ["v"], ["x"], np.array([[np.nan, 0.0]]), {"model": MODEL})


def test_index_refuses_nan_vectors(tmp_path):
    from stages.index import build_from_store

    store = _video_store(tmp_path / "v.h5", [f"v{i}" for i in range(6)], nan_row=3)
    with pytest.raises(VtpipeError, match="NaN or Inf"):
        build_from_store(store, tmp_path / "idx", index="Flat")
    assert not (tmp_path / "idx" / "video.faiss").exists()


@pytest.mark.parametrize("where", ["video", "text"])
def test_evaluate_refuses_nan_features(tmp_path, where):
    ids = [f"v{i}" for i in range(5)]
    video = _video_store(tmp_path / "v.h5", ids, nan_row=1 if where == "video" else None)
    text = _text_store(tmp_path / "t.h5", ids, nan_row=2 if where == "text" else None)
    errors, out = _evaluate(tmp_path, video, text)
    assert errors and "NaN" in errors[0][1], errors
    assert not list(out.rglob("metrics.json"))


def test_evaluate_refuses_a_nan_video_that_no_caption_asks_for(tmp_path):
    ids = [f"v{i}" for i in range(5)]
    errors, out = _evaluate(tmp_path, _video_store(tmp_path / "v.h5", ids, nan_row=4),
                            _text_store(tmp_path / "t.h5", ids[:4]))
    assert errors and "NaN" in errors[0][1], errors
    assert not list(out.rglob("metrics.json"))


def test_evaluate_refuses_stores_of_different_dimensions(tmp_path):
    ids = [f"v{i}" for i in range(4)]
    errors, out = _evaluate(tmp_path, _video_store(tmp_path / "v.h5", ids, dim=8),
                            _text_store(tmp_path / "t.h5", ids, dim=16))
    assert errors and "8-d" in errors[0][1] and "16-d" in errors[0][1], errors
    assert not list(out.rglob("metrics.json"))


def test_evaluate_refuses_a_store_of_another_model(tmp_path):
    ids = [f"v{i}" for i in range(4)]
    errors, out = _evaluate(tmp_path, _video_store(tmp_path / "v.h5", ids),
                            _text_store(tmp_path / "t.h5", ids, model="clip-vit-b-32"))
    assert errors and "'clip-vit-b-32'" in errors[0][1] and f"'{MODEL}'" in errors[0][1], errors
    assert not list(out.rglob("metrics.json"))


def test_evaluate_reports_captions_whose_video_is_missing(tmp_path):
    ids = [f"v{i}" for i in range(4)]
    errors, out = _evaluate(tmp_path, _video_store(tmp_path / "v.h5", ids),
                            _text_store(tmp_path / "t.h5", ids + ["ghost"]))
    assert not errors, errors
    m = json.loads((out / "t2v" / "metrics.json").read_text())
    assert m["videos_missing"] == ["ghost"] and m["n_queries"] == 4


def test_index_refuses_stores_of_another_model(tmp_path):
    from stages.index import add_store, build_from_store

    store = _video_store(tmp_path / "v.h5", [f"v{i}" for i in range(6)])
    other_text = _text_store(tmp_path / "t.h5", ["v0", "v1"], model="clip-vit-b-32")
    with pytest.raises(VtpipeError, match="'clip-vit-b-32'"):
        build_from_store(store, tmp_path / "idx0", index="Flat", tune_queries=other_text)
    assert not (tmp_path / "idx0" / "video.faiss").exists()
    build_from_store(store, tmp_path / "idx", index="Flat")
    before = {p.name: p.read_bytes() for p in (tmp_path / "idx").iterdir() if p.is_file()}
    other = _video_store(tmp_path / "o.h5", ["w0", "w1"], model="clip-vit-b-32")
    with pytest.raises(VtpipeError, match="'clip-vit-b-32'"):
        add_store(tmp_path / "idx", other)
    after = {p.name: p.read_bytes() for p in (tmp_path / "idx").iterdir() if p.is_file()}
    assert after == before  # the index was not touched


# ---- no shell, ever ----------------------------------------------------------------------------------------
SUBPROCESS_CALLS = {"run", "Popen", "call", "check_call", "check_output", "getoutput", "getstatusoutput"}


def _source_files() -> list[Path]:
    files = []
    for top in ("pipeline", "stages", "bench", "scripts", "data", "tests"):
        files += sorted((REPO / top).rglob("*.py"))
    return files


def test_no_subprocess_call_uses_a_shell():
    """Every subprocess.* call passes an argument list, never shell=True; no os.system / os.popen."""
    problems, calls = [], 0
    for path in _source_files():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
            where = f"{path.relative_to(REPO)}:{node.lineno}"
            if owner == "os" and name in ("system", "popen") or owner == "subprocess" and name in (
                    "getoutput", "getstatusoutput"):
                problems.append(f"{where}: {owner}.{name} runs a shell")
            if owner != "subprocess" or name not in SUBPROCESS_CALLS:
                continue
            calls += 1
            for kw in node.keywords:
                if kw.arg == "shell" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
                    problems.append(f"{where}: shell={ast.unparse(kw.value)}")
                if kw.arg is None:
                    problems.append(f"{where}: **kwargs could carry shell=True")
            if node.args and isinstance(node.args[0], (ast.Constant, ast.JoinedStr, ast.BinOp)):
                problems.append(f"{where}: the command is a string, not an argument list")
    assert calls >= 5, f"found only {calls} subprocess calls: the scan is broken"
    assert not problems, "\n".join(problems)


def test_ffmpeg_is_run_with_an_argument_list_and_file_urls():
    """run_ffmpeg builds a list; file names are passed as file:<absolute path>, so a name that starts with '-'
    or looks like a protocol ('concat:', 'http:') is only ever read as a local file."""
    from stages.video.ffmpeg import file_url

    tree = ast.parse((REPO / "stages/video/ffmpeg.py").read_text())
    fn = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "run_ffmpeg")
    cmd = next(n for n in ast.walk(fn) if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "cmd")
    assert isinstance(cmd.value, ast.List)
    assert file_url("-i evil.mp4").startswith("file:/") and file_url("concat:a|b").startswith("file:/")
    assert os.path.isabs(file_url("x.mp4")[len("file:"):])
