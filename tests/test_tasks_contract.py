"""The stage contract of stages.contract.tasks checked against hand-worked values: the fingerprint's canonical JSON and
hash (finished runs made by earlier vtpipe versions must stay complete, so the formula is a file format),
paths relative to the run, manifest outputs relative to the stage folder, the stale-result messages, the
failure markers and the stale-temporary sweep. Written to kill the mutants that survived tests/test_tasks.py
(bench/mutation.sh; see bench/mutation_survivors.md)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path

import pytest

from stages import __version__
from stages.contract import tasks as T
from stages.contract.errors import FingerprintMismatch


def _sha20(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:20]


# ---- fingerprints ------------------------------------------------------------------------------------------
def test_fingerprint_is_sha256_of_compact_sorted_json():
    # written out by hand: keys sorted, no spaces after ',' or ':', first 20 hex digits
    assert T.fingerprint({"b": 1, "a": [1, 2]}) == _sha20('{"a":[1,2],"b":1}')
    # a non-JSON value enters through str()
    assert T.fingerprint({"p": Path("/x/y")}) == _sha20('{"p":"/x/y"}')
    assert len(T.fingerprint([])) == 20


def test_task_fingerprint_formula_of_an_unregistered_stage():
    params = {"n": 3, "where": "/elsewhere/a.mp4"}
    want = _sha20('{"id":"t-1","params":{"n":3,"where":"/elsewhere/a.mp4"},"stage":"unregistered-x","version":1}')
    assert T.task_fingerprint("unregistered-x", "t-1", params) == want
    task = T.Task("unregistered-x", "t-1", "/tmp/nowhere", params)  # Task computes the same in __post_init__
    assert task.fingerprint == want


def test_task_fingerprint_uses_the_registered_version_neutral_and_ignored_params(tmp_path):
    T.register_stage("contract-test-stage", 7, neutral={"added_later": "off"}, ignore=("checkpoint_path",))
    assert T.stage_spec("contract-test-stage") == T.StageSpec(7, {"added_later": "off"}, frozenset({"checkpoint_path"}))
    root = str(tmp_path / "run")
    params = {"video": f"{root}/videos/a.mp4", "added_later": "off", "checkpoint_path": "/ckpt/a.pt", "k": 2}
    want = _sha20('{"id":"x","params":{"k":2,"video":"$RUN/videos/a.mp4"},"stage":"contract-test-stage",'
                  '"version":7}')
    assert T.task_fingerprint("contract-test-stage", "x", params, root) == want
    task = T.Task("contract-test-stage", "x", f"{root}/stage", params, root=root)
    assert task.fingerprint == want
    # a neutral param away from its neutral value counts; an ignored one never does
    changed = {**params, "added_later": "on"}
    assert T.task_fingerprint("contract-test-stage", "x", changed, root) == _sha20(
        '{"id":"x","params":{"added_later":"on","k":2,"video":"$RUN/videos/a.mp4"},'
        '"stage":"contract-test-stage","version":7}')
    assert T.task_fingerprint("contract-test-stage", "x", {**params, "checkpoint_path": "/other.pt"}, root) == want
    # the per-param hashes kept in the manifest
    assert T.fingerprint_parts(task) == {"k": _sha20("2"), "video": _sha20('"$RUN/videos/a.mp4"')}
    # the version reaches the manifest and the stale message
    m = {"fingerprint": "old", "stage_version": 6, "vtpipe_version": "0.0.1"}
    assert T.stale_reason(task, m) == ("it was made by contract-test-stage stage version 6 (vtpipe 0.0.1); this "
                                       "vtpipe's contract-test-stage stage is version 7, whose output differs")


def test_relative_to_run_hand_examples():
    root = "/data/run/"  # a trailing separator is dropped
    obj = {"a": "/data/run", "b": "/data/run/x/y.h5", "c": "/data/runner/z", "d": ["/data/run/l", 3],
           "e": ("/data/run/t",), "f": 1.5, "g": "relative/path"}
    assert T.relative_to_run(obj, root) == {"a": "$RUN", "b": "$RUN/x/y.h5", "c": "/data/runner/z",
                                            "d": ["$RUN/l", 3], "e": ["$RUN/t"], "f": 1.5, "g": "relative/path"}
    assert T.relative_to_run(obj, "") is obj


# ---- manifests ---------------------------------------------------------------------------------------------
def _task(tmp_path, **kw) -> T.Task:
    root = tmp_path / "run"
    return T.Task("unregistered-m", "shard-1", str(root / "stage"), {"n": 1}, root=str(root), **kw)


def test_write_manifest_body(tmp_path):
    task = _task(tmp_path)
    root, stage = Path(task.root), Path(task.stage_dir)
    task.failed_path.parent.mkdir(parents=True)
    task.failed_path.write_text("{}")
    res = T.Result("shard-1", outputs={"in_stage": str(stage / "sub" / "f.h5"), "stage": str(stage),
                                       "in_run": str(root / "other" / "g.h5"), "outside": "/elsewhere/h.h5",
                                       "empty": ""},
                   counts={"videos": 2}, failures=[{"id": "v", "reason": "r"}], info={"k": "v"}, seconds=1.23456)
    path = T.write_manifest(task, res)
    assert path == stage / "_manifests" / "shard-1.json"
    assert not task.failed_path.exists()
    body = json.loads(path.read_text(encoding="utf-8"))
    assert body["stage"] == "unregistered-m" and body["task_id"] == "shard-1"
    assert body["fingerprint"] == task.fingerprint and body["stage_version"] == 1
    assert body["fingerprint_parts"] == {"n": _sha20("1")}
    assert body["vtpipe_version"] == __version__
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}", body["finished_at"]), body["finished_at"]
    assert body["seconds"] == 1.235
    assert body["outputs"] == {"in_stage": "sub/f.h5", "stage": ".", "in_run": "../other/g.h5",
                               "outside": "/elsewhere/h.h5", "empty": ""}
    assert body["counts"] == {"videos": 2} and body["failures"] == [{"id": "v", "reason": "r"}]
    assert body["info"] == {"k": "v"}
    # read back: outputs are paths from here again
    m = T.read_manifest(task)
    assert m["outputs"] == {"in_stage": str(stage / "sub" / "f.h5"), "stage": str(stage),
                            "in_run": str(root / "other" / "g.h5"), "outside": "/elsewhere/h.h5", "empty": ""}
    assert T.is_complete(task)


def test_manifest_of_a_task_with_a_given_fingerprint_has_no_parts(tmp_path):
    task = _task(tmp_path, fingerprint="given-elsewhere")
    body = json.loads(T.write_manifest(task, T.Result("shard-1")).read_text())
    assert body["fingerprint"] == "given-elsewhere" and body["fingerprint_parts"] == {}


def test_outputs_without_a_run_root_are_relative_to_the_stage_only(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a path under the working directory is not thereby under the run
    stage = tmp_path / "stage"
    task = T.Task("unregistered-m", "a", str(stage), {})
    res = T.Result("a", outputs={"in": str(stage / "x.h5"), "beside": str(tmp_path / "y.h5"), "n": 3,
                                 "stage": str(stage)})
    body = json.loads(T.write_manifest(task, res).read_text())
    assert body["outputs"] == {"in": "x.h5", "beside": str(tmp_path / "y.h5"), "n": 3, "stage": "."}


def test_manifest_of_a_registered_stage_with_run_paths(tmp_path):
    T.register_stage("contract-test-stage-2", 3)
    root = tmp_path / "run"
    task = T.Task("contract-test-stage-2", "t", str(root / "s"), {"video": str(root / "v.mp4")}, root=str(root))
    body = json.loads(T.write_manifest(task, T.Result("t")).read_text())
    assert body["stage_version"] == 3
    assert body["fingerprint_parts"] == {"video": _sha20('"$RUN/v.mp4"')}


def test_read_manifest_resolves_and_refuses(tmp_path):
    task = _task(tmp_path)
    stage = Path(task.stage_dir)
    task.manifest_path.parent.mkdir(parents=True)
    task.manifest_path.write_text(json.dumps({"fingerprint": task.fingerprint,
                                              "outputs": {"a": "x/../y.h5", "b": "/abs/z", "c": "", "d": 4}}))
    assert T.read_manifest(task)["outputs"] == {"a": str(stage / "y.h5"), "b": "/abs/z", "c": "", "d": 4}
    task.manifest_path.write_text(json.dumps({"fingerprint": task.fingerprint, "outputs": ["not", "a", "dict"]}))
    assert T.read_manifest(task)["outputs"] == ["not", "a", "dict"]
    task.manifest_path.write_text("[1, 2]")  # JSON, but not a manifest
    assert T.read_manifest(task) is None
    task.manifest_path.write_bytes(b"\xff\xfe not utf-8")
    assert T.read_manifest(task) is None


def test_stale_reasons(tmp_path):
    task = _task(tmp_path)
    assert T.stale_reason(task, {"vtpipe_version": "0.1"}) == (
        "it was made by an earlier vtpipe (vtpipe 0.1) whose fingerprints had no stage versions; this vtpipe's "
        "unregistered-m stage is version 1")
    assert T.stale_reason(task, {}).startswith("it was made by an earlier vtpipe whose fingerprints")
    parts = T.fingerprint_parts(task)
    # one param changed, one removed since: both named, sorted
    old = {"stage_version": 1, "fingerprint_parts": {"n": "something-else", "gone": "h"}}
    assert T.stale_reason(task, old) == "it was made with other gone, n (a different config or inputs)"
    assert T.stale_reason(task, {"stage_version": 1, "fingerprint_parts": dict(parts)}) == (
        "it was made with a different config or inputs")
    assert T.stale_reason(task, {"stage_version": 1}) == "it was made with a different config or inputs"


def test_is_complete_mismatch_and_overwrite(tmp_path):
    task = _task(tmp_path)
    assert not T.is_complete(task)
    T.write_manifest(T.Task("unregistered-m", "shard-1", task.stage_dir, {"n": 2}, root=task.root),
                     T.Result("shard-1"))
    with pytest.raises(FingerprintMismatch) as e:
        T.is_complete(task)
    other = T.task_fingerprint("unregistered-m", "shard-1", {"n": 2}, task.root)
    assert f"(fingerprint {other} != {task.fingerprint})" in str(e.value)
    assert "other n (a different config" in str(e.value)
    assert not T.is_complete(task, overwrite=True)
    assert not task.manifest_path.exists()


# ---- failure markers ---------------------------------------------------------------------------------------
def test_record_task_error_counts_attempts(tmp_path):
    task = _task(tmp_path)
    T.record_task_error(task, ValueError("boom"))
    T.record_task_error(task, OSError("again"))
    rec = json.loads(task.failed_path.read_text(encoding="utf-8"))
    assert rec["stage"] == "unregistered-m" and rec["task_id"] == "shard-1"
    assert rec["error"] == "OSError: again" and rec["attempts"] == 2
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}", rec["at"])
    for bad in ("not json", "[1, 2]", '{"attempts": "many"}', '{"attempts": null}'):
        task.failed_path.write_text(bad)
        T.record_task_error(task, ValueError("x"))
        assert json.loads(task.failed_path.read_text())["attempts"] == 1, bad
    task.failed_path.write_text('{"attempts": 4}')
    T.record_task_error(task, ValueError("x"))
    assert json.loads(task.failed_path.read_text())["attempts"] == 5
    T.write_manifest(task, T.Result("shard-1"))
    assert not task.failed_path.exists()


def test_record_task_error_that_cannot_be_written_only_warns(tmp_path, caplog):
    blocker = tmp_path / "stage"
    blocker.write_text("a file where the stage folder should be")
    task = T.Task("unregistered-m", "t", str(blocker), {})
    with caplog.at_level(logging.WARNING, logger="vtpipe"):
        T.record_task_error(task, ValueError("disk full"))
    msgs = [r.getMessage() for r in caplog.records if r.name == "vtpipe"]
    assert len(msgs) == 1, caplog.records
    assert msgs[0].startswith(f"could not record the failure of unregistered-m/t in {task.failed_path}: ")
    assert "Not a directory" in msgs[0] or "File exists" in msgs[0], msgs[0]  # the OSError that stopped it


def test_load_manifests_sorted_readable_dicts_only(tmp_path):
    stage = tmp_path / "stage"
    md = stage / "_manifests"
    md.mkdir(parents=True)
    (md / "b.json").write_text(json.dumps({"task_id": "b", "outputs": {"o": "x.h5"}}))
    (md / "a.json").write_text(json.dumps({"task_id": "a", "outputs": {}}))
    (md / "c.json").write_text("{torn")
    (md / "d.json").write_text("[1]")
    (md / "e.json").write_bytes(b"\xff\xfe")
    (md / "f.txt").write_text("{}")
    (md / "g.json").write_text(json.dumps({"task_id": "g"}))  # after the unreadable ones: still read
    got = T.load_manifests(stage)
    assert [m["task_id"] for m in got] == ["a", "b", "g"]
    assert got[1]["outputs"] == {"o": str(stage / "x.h5")}
    assert T.load_manifests(tmp_path / "missing") == []


# ---- files -------------------------------------------------------------------------------------------------
def test_clean_stale_temporaries(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    left = [tmp_path / ".x.h5.123.tmp", tmp_path / "a" / "b" / ".m.json.9.tmp"]
    kept = [tmp_path / "x.tmp", tmp_path / ".hidden", tmp_path / "a" / "out.h5"]
    for p in left + kept:
        p.write_text("-")
    (tmp_path / ".dir.tmp").mkdir()  # matches the pattern but is no file: left alone, no error
    assert T.clean_stale_temporaries(tmp_path) == 2
    assert (tmp_path / ".dir.tmp").is_dir()
    assert not any(p.exists() for p in left) and all(p.exists() for p in kept)
    assert T.clean_stale_temporaries(tmp_path) == 0


def test_json_and_text_writers(tmp_path):
    T.write_json_atomic(tmp_path / "d" / "x.json", {"p": Path("/a/b"), "é": 1})
    assert json.loads((tmp_path / "d" / "x.json").read_text(encoding="utf-8")) == {"p": "/a/b", "é": 1}
    T.write_text_atomic(tmp_path / "t.txt", "vidéo ✓\n")
    assert (tmp_path / "t.txt").read_bytes() == "vidéo ✓\n".encode("utf-8")
    assert oct(os.stat(tmp_path / "t.txt").st_mode & 0o777) == oct(0o666 & ~T._UMASK)


def test_file_signature_and_result_dict(tmp_path):
    from stages.features.identity import video_identity

    f = tmp_path / "v.bin"
    f.write_bytes(b"abc" * 1000)
    assert T.file_signature(f) == {"identity": video_identity(f)}
    assert T.result_to_dict(T.Result("t", counts={"n": 1}, seconds=2.0)) == {
        "task_id": "t", "outputs": {}, "counts": {"n": 1}, "failures": [], "info": {}, "seconds": 2.0,
        "skipped": False}
