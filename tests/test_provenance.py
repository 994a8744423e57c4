"""Runs that travel (copied, moved, tarred: still complete), inputs known by content, exactly the dependent
tasks stale after a change, and provenance (checkpoint sha256, presets, fingerprints) in every artifact."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from conftest import REPO, run_cli
from pipeline import config as config_mod
from pipeline.executors import LocalExecutor
from pipeline.runner import run_pipeline
from pipeline.status import collect
from stages.contract.errors import FingerprintMismatch, VtpipeError
from stages.contract.layout import Layout
from stages.features.store import VideoStoreWriter, write_text_store
from stages.contract.tasks import Result, Task, is_complete, register_stage, relative_to_run, write_manifest

CHECKPOINT = REPO / "data/models/shapes-tiny.pt"
STAGES = ("compress", "extract", "concat", "index", "evaluate")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Identity cache of this module (never the user's), for the CLI and for in-process plans."""
    cache = tmp_path_factory.mktemp("identity-cache")
    old = os.environ.get("VTPIPE_CACHE_DIR")
    os.environ["VTPIPE_CACHE_DIR"] = str(cache)
    yield {"VTPIPE_CACHE_DIR": str(cache)}
    if old is None:
        os.environ.pop("VTPIPE_CACHE_DIR", None)
    else:
        os.environ["VTPIPE_CACHE_DIR"] = old


def _yaml(d: Path, videos: Path, captions: Path) -> Path:
    y = d / "p.yaml"
    y.write_text(f"name: prov\ninput: {{videos: {videos}}}\ndataset: {{captions: {captions}}}\n"
                 "model: {name: shapes-tiny}\nextract: {shards: 2, decode_workers: 1}\n")
    return y


@pytest.fixture(scope="module")
def finished(small_sample, env, tmp_path_factory):
    """A finished 8-video run (5 stages) over real copies of the small sample's videos."""
    d = tmp_path_factory.mktemp("prov")
    videos = d / "inputs/videos"
    videos.mkdir(parents=True)
    for p in sorted(small_sample["videos"].iterdir()):
        shutil.copyfile(p.resolve(), videos / p.name)
    captions = d / "inputs/captions.csv"
    shutil.copyfile(small_sample["captions"], captions)
    y = _yaml(d, videos, captions)
    run_cli("run", str(y), "-o", str(d / "run"), env=env)
    return {"dir": d, "run": d / "run", "yaml": y, "videos": videos, "captions": captions}


def _status(run: Path) -> dict:
    return {s.stage: s for s in collect(run)}


def _assert_complete(run: Path) -> None:
    st = _status(run)
    assert list(st) == list(STAGES)
    for s in st.values():
        assert not s.plan_error, s.plan_error
        assert s.tasks > 0 and s.done == s.tasks and s.stale == 0 and s.outdated == 0, (s.stage, s)


def _run_in_process(run: Path) -> list:
    cfg = config_mod.resolve(config_mod.load_yaml(run / "config.yaml"))
    return run_pipeline(cfg, run, LocalExecutor(1), echo=lambda _: None)


def _cp_r(src: Path, dst: Path) -> None:
    subprocess.run(["cp", "-r", str(src), str(dst)], check=True)  # new mtimes, new inodes


def _mv(src: Path, dst: Path) -> None:
    tmp = dst.with_name(dst.name + "-pre")
    _cp_r(src, tmp)
    subprocess.run(["mv", str(tmp), str(dst)], check=True)


def _tar(src: Path, dst: Path, keep_mtimes: bool) -> None:
    tar = dst.with_suffix(".tar")
    with tarfile.open(tar, "w") as t:
        t.add(src, arcname=dst.name)
    args = ["tar", "-xf", str(tar), "-C", str(dst.parent)] + ([] if keep_mtimes else ["--touch"])
    subprocess.run(args, check=True)


def _rsync(src: Path, dst: Path) -> None:
    if shutil.which("rsync") is None:
        pytest.skip("rsync is not installed")
    subprocess.run(["rsync", "-a", f"{src}/", f"{dst}/"], check=True)


@pytest.mark.parametrize("how", ["mv", "tar-keep-mtimes", "tar-touch", "rsync-a"])
def test_moved_run_is_complete_and_does_no_work(finished, tmp_path, how):
    dst = tmp_path / "elsewhere" / "run"
    dst.parent.mkdir()
    {"mv": _mv, "tar-keep-mtimes": lambda a, b: _tar(a, b, True), "tar-touch": lambda a, b: _tar(a, b, False),
     "rsync-a": _rsync}[how](finished["run"], dst)
    _assert_complete(dst)
    reports = _run_in_process(dst)
    assert [r.stage for r in reports] == list(STAGES)
    assert all(r.ran == 0 and r.already_complete == r.tasks for r in reports)


def test_cp_r_run_with_the_cli(finished, tmp_path, env):
    dst = tmp_path / "copy"
    _cp_r(finished["run"], dst)
    status = run_cli("status", str(dst), env=env).stdout
    assert "stale" not in status and "outdated" not in status, status
    proc = run_cli("run", str(finished["yaml"]), "-o", str(dst), env=env)
    assert "every stage is already complete" in proc.stdout and "running" not in proc.stdout, proc.stdout
    # manifests hold paths relative to their stage folder, never the old location
    for m in dst.rglob("_manifests/*.json"):
        assert str(finished["run"]) not in m.read_text()


def test_moved_inputs_are_the_same_inputs(finished, tmp_path):
    """Inputs are known by content: the same videos and captions at another path leave the run complete."""
    run = tmp_path / "run"
    _cp_r(finished["run"], run)
    _cp_r(finished["dir"] / "inputs", tmp_path / "moved-inputs")
    _set_config(run, {"input": {"videos": str(tmp_path / "moved-inputs/videos")},
                      "dataset": {"captions": str(tmp_path / "moved-inputs/captions.csv")}})
    _assert_complete(run)


def _set_config(run: Path, change: dict) -> None:
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    for sec, vals in change.items():
        cfg[sec].update(vals)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))


def _copy_with_inputs(finished, tmp_path) -> tuple[Path, Path]:
    run, inputs = tmp_path / "run", tmp_path / "inputs"
    _cp_r(finished["run"], run)
    _cp_r(finished["dir"] / "inputs", inputs)
    _set_config(run, {"input": {"videos": str(inputs / "videos")}, "dataset": {"captions": str(inputs / "captions.csv")}})
    return run, inputs


def _stale_counts(run: Path) -> dict:
    return {k: (s.done - s.outdated, s.stale, s.outdated) for k, s in _status(run).items()}


def test_changing_one_video_stales_exactly_its_tasks(finished, tmp_path, env):
    run, inputs = _copy_with_inputs(finished, tmp_path)
    vids = sorted(inputs.joinpath("videos").iterdir())
    shutil.copyfile(vids[-1], vids[0])  # the first video (shard 0 of 2) now holds other content
    # (done and current, stale, done but outdated by an earlier stage)
    assert _stale_counts(run) == {"compress": (0, 1, 0), "extract": (2, 1, 0), "concat": (0, 0, 1),
                                  "index": (0, 0, 1), "evaluate": (0, 0, 1)}
    st = _status(run)  # the stale message says which hashed parameter changed
    assert "other inputs " in st["compress"].stale_why and "other input_identity " in st["extract"].stale_why
    y = _yaml(tmp_path, inputs / "videos", inputs / "captions.csv")
    refused = run_cli("run", str(y), "-o", str(run), env=env, check=False)
    assert refused.returncode == 2 and "--overwrite" in refused.stderr
    proc = run_cli("run", str(y), "-o", str(run), "--overwrite", env=env)
    assert "[extract] running 1 of 3 task(s)" in proc.stdout, proc.stdout
    assert "[concat] running 1 of 1" in proc.stdout and "[evaluate] running 1 of 1" in proc.stdout
    _assert_complete(run)


def test_changing_the_checkpoint_stales_extract_and_later(finished, tmp_path):
    import torch

    run, _ = _copy_with_inputs(finished, tmp_path)
    ckpt = tmp_path / "copy.pt"
    shutil.copyfile(CHECKPOINT, ckpt)
    _set_config(run, {"model": {"weights": str(ckpt)}})
    _assert_complete(run)  # the same bytes at another path: the same checkpoint
    state = torch.load(ckpt, weights_only=True)
    sd = state["state_dict"]
    key = next(k for k, v in sd.items() if torch.is_floating_point(v))
    sd[key] = sd[key] + 1e-3
    torch.save(state, ckpt)
    # evaluate hashes the checkpoint itself too (DRL similarities and zero-shot prompts load the model)
    assert _stale_counts(run) == {"compress": (1, 0, 0), "extract": (0, 3, 0), "concat": (0, 0, 1),
                                  "index": (0, 0, 1), "evaluate": (0, 1, 0)}
    assert "other checkpoint_sha256 " in _status(run)["extract"].stale_why


def test_changing_the_sampling_preset_stales_only_video_features(finished, tmp_path):
    run, _ = _copy_with_inputs(finished, tmp_path)
    _set_config(run, {"model": {"sampling": {"policy": "fps", "fps": 2}}})
    # the two video shards are stale; the caption features (text) do not depend on frame sampling
    assert _stale_counts(run) == {"compress": (1, 0, 0), "extract": (1, 2, 0), "concat": (0, 0, 1),
                                  "index": (0, 0, 1), "evaluate": (0, 0, 1)}
    assert "other sampling " in _status(run)["extract"].stale_why


def test_info_shows_checkpoint_hash_for_every_store(finished, env):
    run = finished["run"]
    stores = sorted(p.relative_to(run) for p in run.rglob("*.h5"))
    assert len(stores) == 5  # 2 shards, text, merged video store, its text store
    entries = json.loads(run_cli("info", str(run), "--json", env=env).stdout)
    by_path = {e["path"]: e for e in entries if e["artifact"] == "store"}
    assert sorted(by_path) == [str(s) for s in stores]
    want = {"weights": _sha256(CHECKPOINT)}
    for path, e in by_path.items():
        assert e["checkpoint_sha256"] == want, path
        assert e["vtpipe_version"] and e["model"] == "shapes-tiny" and e["precision"] == "fp32"  # what ran: the CPU runs fp32
        assert e["input_fingerprint"] and e["fingerprint"]
    merged = by_path["features/shapes-tiny.h5"]
    assert merged["sampling"] == {"policy": "fps", "fps": 3} and merged["preprocess"]["size"] == 64
    # plain h5py reads the same: shard fingerprints of the merged store are the shards' own
    with h5py.File(run / "features/shapes-tiny.h5", "r") as f:
        shard_fps = json.loads(f.attrs["shard_fingerprints"])
        merged_fp = f.attrs["fingerprint"]
    for i, fp in enumerate(shard_fps):
        with h5py.File(run / f"extract/shapes-tiny/shard-{i:05d}.h5", "r") as f:
            assert f.attrs["fingerprint"] == fp
    index = next(e for e in entries if e["artifact"] == "index")
    assert index["features_fingerprint"] == merged_fp and index["checkpoint_sha256"] == want
    metrics = [e for e in entries if e["artifact"] == "metrics"]
    assert {m["task"] for m in metrics} == {"t2v", "v2t"}
    for m in metrics:
        assert m["stores"]["video"]["fingerprint"] == merged_fp
        named = (run / m["path"]).parent / m["stores"]["video"]["path"]  # relative to the metrics file
        assert named.resolve() == (run / "features/shapes-tiny.h5").resolve()
        assert m["stores"]["text"]["checkpoint_sha256"] == want
    text = run_cli("info", str(run / "features/shapes-tiny.h5"), env=env).stdout
    assert _sha256(CHECKPOINT) in text and "shard_fingerprints" in text


def test_standalone_index_records_the_store_fingerprint(finished, tmp_path, env):
    store = finished["run"] / "features/shapes-tiny.h5"
    run_cli("index", "--features", str(store), "-o", str(tmp_path / "ix"), env=env)
    infos = json.loads((tmp_path / "ix/index_infos.json").read_text())
    with h5py.File(store, "r") as f:
        assert infos["features_fingerprint"] == f.attrs["fingerprint"] != ""
    assert infos["checkpoint_sha256"] == {"weights": _sha256(CHECKPOINT)}


# ---- concat and evaluate refuse mixed results --------------------------------------------------------------
def _shard(path: Path, model: str, ckpt: str, ids: list[str]) -> None:
    w = VideoStoreWriter(path, 4, {"model": model, "unit": "clip", "sampling": {"policy": "fps"},
                                   "checkpoint_sha256": {"weights": ckpt}, "fingerprint": f"fp-{path.stem}",
                                   "input_fingerprint": f"in-{path.stem}", "random_weights": False})
    for v in ids:
        w.add(v, np.ones((2, 4), np.float32), np.arange(2.0), None, np.ones(4, np.float32))
    w.close()


def _shards_dir(d: Path, model: str, ckpts: list[str]) -> Path:
    d.mkdir()
    for i, c in enumerate(ckpts):
        out = d / f"shard-{i:05d}.h5"
        _shard(out, model, c, [f"v{i}a", f"v{i}b"])
        t = Task("extract", f"shard-{i:05d}", str(d), {"i": i})
        write_manifest(t, Result(t.id, outputs={"shard": str(out)}))
    return d


def test_concat_of_a_locvtp_store_is_named_after_its_model(tmp_path):
    from stages import concat

    shards = _shards_dir(tmp_path / "shards", "locvtp", ["aa", "aa"])
    out = tmp_path / "out/merged.h5"
    cfg = config_mod.resolve({"stages": ["concat"]})  # the config's default model is shapes-tiny
    [task] = concat.plan(cfg, Layout.custom(out.parent, features=out, concat_dir=out.parent), extract_dir=shards)
    assert task.id == "concat-locvtp"
    concat.run_task(task)
    with h5py.File(out, "r") as f:
        assert f.attrs["model"] == "locvtp" and f.attrs["fingerprint"] == task.fingerprint
        assert json.loads(f.attrs["shard_fingerprints"]) == ["fp-shard-00000", "fp-shard-00001"]
        assert json.loads(f.attrs["checkpoint_sha256"]) == {"weights": "aa"}


def test_shards_of_other_weights_are_never_merged(tmp_path):
    from stages.concat import concat_stores

    shards = _shards_dir(tmp_path / "shards", "locvtp", ["aa", "bb"])
    with pytest.raises(VtpipeError, match="checkpoint_sha256"):
        concat_stores(sorted(str(p) for p in shards.glob("shard-*.h5")), tmp_path / "m.h5")
    assert not (tmp_path / "m.h5").exists()


def test_video_and_text_of_other_weights_are_never_evaluated_together(tmp_path):
    from stages.features.provenance import check_store_pair as _check_pair

    _shard(tmp_path / "v.h5", "locvtp", "aa", ["v0"])
    for ckpt, ok in (("aa", True), ("bb", False)):
        write_text_store(tmp_path / "t.h5", ["c0"], ["v0"], ["a caption"], np.ones((1, 4), np.float32),
                         {"model": "locvtp", "checkpoint_sha256": {"weights": ckpt}, "random_weights": False})
        if ok:
            _check_pair(str(tmp_path / "v.h5"), str(tmp_path / "t.h5"))
        else:
            with pytest.raises(VtpipeError, match="never mixed"):
                _check_pair(str(tmp_path / "v.h5"), str(tmp_path / "t.h5"))


# ---- fingerprint versions -----------------------------------------------------------------------------------
def test_a_neutral_new_parameter_keeps_old_results_and_a_version_bump_says_so(tmp_path):
    register_stage("demo", 1)
    old = Task("demo", "t", str(tmp_path), {"x": 1})
    write_manifest(old, Result("t"))
    # a later vtpipe adds parameter `new`, whose default keeps the old output
    register_stage("demo", 1, neutral={"new": False})
    assert is_complete(Task("demo", "t", str(tmp_path), {"x": 1, "new": False}))
    with pytest.raises(FingerprintMismatch, match="different config"):
        is_complete(Task("demo", "t", str(tmp_path), {"x": 1, "new": True}))
    # a real change of behaviour bumps the version: the message names the version that made the old result
    register_stage("demo", 2, neutral={"new": False})
    with pytest.raises(FingerprintMismatch, match="demo stage version 1 .*version 2"):
        is_complete(Task("demo", "t", str(tmp_path), {"x": 1, "new": False}))


def test_paths_under_the_run_are_hashed_relative_to_it(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    pa = {"out": str(a / "x/y.h5"), "src": "/data/v.mp4", "l": [str(a)]}
    pb = {"out": str(b / "x/y.h5"), "src": "/data/v.mp4", "l": [str(b)]}
    assert relative_to_run(pa, str(a)) == relative_to_run(pb, str(b)) == {
        "out": "$RUN/x/y.h5", "src": "/data/v.mp4", "l": ["$RUN"]}
    assert relative_to_run({"p": str(a) + "-other/z"}, str(a)) == {"p": str(a) + "-other/z"}
    ta, tb = Task("s", "t", str(a), pa, root=str(a)), Task("s", "t", str(b), pb, root=str(b))
    assert ta.fingerprint == tb.fingerprint
