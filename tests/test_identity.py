"""Content identity of input files: stable across copies and mtimes, sensitive to content, cached."""

from __future__ import annotations

import hashlib
import os
import shutil

import pytest

from stages.features import identity
@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VTPIPE_CACHE_DIR", str(tmp_path / "cache"))
    identity.forget_memo()
    yield
    identity.forget_memo()


def _big(path, seed: int, size: int = 1 << 20) -> None:
    path.write_bytes(hashlib.shake_256(str(seed).encode()).digest(size))


def test_video_identity_is_the_naive_hash_of_size_and_three_blocks(tmp_path):
    f = tmp_path / "v.mp4"
    _big(f, 1)
    data = f.read_bytes()
    b = identity.BLOCK
    mid = (len(data) - b) // 2
    naive = hashlib.blake2b(str(len(data)).encode() + data[:b] + data[mid:mid + b] + data[-b:], digest_size=16)
    assert identity.video_identity(f) == f"video:v1:{len(data)}:{naive.hexdigest()}"
    small = tmp_path / "s.mp4"
    small.write_bytes(b"tiny")
    assert identity.video_identity(small) == \
        f"video:v1:4:{hashlib.blake2b(b'4tiny', digest_size=16).hexdigest()}"


def test_identity_survives_copy_and_touch_but_not_an_edit(tmp_path):
    a = tmp_path / "a.mp4"
    _big(a, 2)
    first = identity.video_identity(a)
    b = tmp_path / "elsewhere" / "b.mp4"
    b.parent.mkdir()
    shutil.copyfile(a, b)
    os.utime(b, ns=(1, 1))
    assert identity.video_identity(b) == first
    data = bytearray(a.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the middle block
    b.write_bytes(bytes(data))
    assert identity.video_identity(b) != first
    b.write_bytes(bytes(data[:-1]))  # truncated
    assert identity.video_identity(b) != first


def test_file_sha256_is_hashlib_sha256(tmp_path):
    f = tmp_path / "ckpt.pt"
    _big(f, 3, 3 << 20)
    assert identity.file_sha256(f) == hashlib.sha256(f.read_bytes()).hexdigest()


def test_second_lookup_comes_from_the_on_disk_cache(tmp_path, monkeypatch):
    files = []
    for i in range(5):
        f = tmp_path / f"v{i}.mp4"
        _big(f, 10 + i, 300_000)
        files.append(f)
    first = identity.identities(files)
    assert (tmp_path / "cache/identity.sqlite3").is_file()
    identity.forget_memo()
    identity._cache = None  # a new process: only the file remains

    def boom(*a, **k):
        raise AssertionError("hashed again although cached")

    monkeypatch.setattr(identity, "_compute", boom)
    assert identity.identities(files) == first
    # a changed file (new mtime/size) is hashed again, not served stale from the cache
    monkeypatch.undo()
    monkeypatch.setenv("VTPIPE_CACHE_DIR", str(tmp_path / "cache"))
    _big(files[0], 99, 300_000)
    assert identity.identities(files[:1]) != first[:1]


def test_unusable_cache_falls_back_to_hashing(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    monkeypatch.setenv("VTPIPE_CACHE_DIR", str(blocker))
    identity._cache = None
    f = tmp_path / "v.mp4"
    _big(f, 5, 1000)
    assert identity.video_identity(f).startswith("video:v1:1000:")
