"""The stage contract: fingerprints, manifests written last, atomic outputs, refusal to mix configs."""

import os

import pytest

from stages.contract.errors import FingerprintMismatch
from stages.contract.tasks import Result, Task, atomic_path, is_complete, read_manifest, write_manifest


def test_fingerprint_depends_on_params_not_runtime(tmp_path):
    a = Task("s", "t", str(tmp_path), {"x": 1}, runtime={"workers": 1})
    b = Task("s", "t", str(tmp_path), {"x": 1}, runtime={"workers": 8})
    c = Task("s", "t", str(tmp_path), {"x": 2})
    assert a.fingerprint == b.fingerprint != c.fingerprint


def test_complete_only_with_matching_manifest(tmp_path):
    t = Task("s", "t", str(tmp_path), {"x": 1})
    assert not is_complete(t)
    write_manifest(t, Result("t", counts={"n": 3}))
    assert is_complete(t) and read_manifest(t)["counts"] == {"n": 3}
    changed = Task("s", "t", str(tmp_path), {"x": 2})
    with pytest.raises(FingerprintMismatch, match="--overwrite"):
        is_complete(changed)
    assert not is_complete(changed, overwrite=True)
    assert not t.manifest_path.exists()


def test_atomic_path_leaves_nothing_on_error(tmp_path):
    final = tmp_path / "out.bin"
    with pytest.raises(RuntimeError):
        with atomic_path(final) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("crash")
    assert not final.exists() and os.listdir(tmp_path) == []
    with atomic_path(final) as tmp:
        tmp.write_bytes(b"whole")
    assert final.read_bytes() == b"whole" and os.listdir(tmp_path) == ["out.bin"]
