"""The feature store's file format and reader edges, read back with plain h5py (not through vtpipe's reader):
dataset dtypes and chunking, the format attributes, caller buffers reused after add(), validation messages,
float16 stores read as float32, batched pooled reads, open_store, the fault point of a half-written store and
a failed text-store write that leaves no open handle. Written to kill the mutants of stages/features/store.py that
survived tests/test_store.py (bench/mutation.sh; see bench/mutation_survivors.md)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from stages import __version__
from stages.features import store as S
from stages.contract.errors import VtpipeError


def _writer(path, d=4, dtype="float32", **attrs):
    return S.VideoStoreWriter(path, d, {"model": "m", **attrs}, dtype=dtype)


def test_video_store_layout_read_with_plain_h5py(tmp_path):
    p = tmp_path / "v.h5"
    w = _writer(p, dtype="float16", note=None, sampling={"fps": 3}, frames=[1, 2])
    w.add("a", np.ones((2, 4), np.float32), [0, 1], [1, 0], np.full(4, 2.0, np.float32))
    w.add("b", np.zeros((3, 4), np.float32), np.array([[0.5], [1.0], [1.5]]), None, np.zeros(4, np.float32))
    assert len(w) == 2
    w.close()
    w.close()  # a second close is a no-op
    with h5py.File(p, "r") as f:
        assert f.attrs["vtpipe_version"] == __version__ and f.attrs["store_format"] == S.STORE_FORMAT_VERSION == 1
        assert f.attrs["kind"] == "video" and f.attrs["embed_dim"] == 4 and f.attrs["dtype"] == "float16"
        assert f.attrs["note"] == "" and f.attrs["sampling"] == '{"fps": 3}' and f.attrs["frames"] == "[1, 2]"
        assert f["unit_features"].dtype == np.float16 and f["pooled"].dtype == np.float16
        assert f["unit_times_s"].dtype == np.float64 and f["unit_mask"].dtype == np.bool_
        assert f["offsets"].dtype == np.int64 and list(f["offsets"][:]) == [0, 2, 5]
        assert h5py.check_string_dtype(f["ids"].dtype).encoding == "utf-8"
        for name in ("ids", "unit_features", "unit_times_s", "unit_mask", "pooled"):
            assert f[name].chunks is not None and f[name].maxshape[0] is None, name
        np.testing.assert_array_equal(f["unit_times_s"][:], [0, 1, 0.5, 1.0, 1.5])
        np.testing.assert_array_equal(f["unit_mask"][:], [True, False, True, True, True])
    with S.VideoStore(p) as s:
        g = s.get("a")
        assert g.unit_features.dtype == np.float32 and g.pooled.dtype == np.float32
        np.testing.assert_array_equal(g.pooled, np.full(4, 2.0))
        np.testing.assert_array_equal(g.unit_mask, [True, False])
        assert s.pooled().dtype == np.float32 and s.pooled(slice(1, 2)).shape == (1, 4)
        assert s.unit_features().dtype == np.float32 and s.unit_features().shape == (5, 4)
        np.testing.assert_array_equal(s.unit_features(slice(0, 2)), np.ones((2, 4)))
        np.testing.assert_array_equal(s.unit_mask(), [True, False, True, True, True])
        np.testing.assert_array_equal(s.unit_mask(slice(1, 3)), [False, True])
        assert "a" in s and "c" not in s
        assert s.attrs["sampling"] == {"fps": 3} and s.attrs["frames"] == [1, 2] and s.attrs["note"] == ""
        with pytest.raises(KeyError, match="video id 'c' is not in"):
            s.get("c")


def test_caller_buffers_reused_after_add_do_not_change_the_store(tmp_path):
    p = tmp_path / "v.h5"
    w = _writer(p)
    feats, times, mask, pooled = np.ones((2, 4), np.float32), np.array([0.0, 1.0]), np.ones(2, bool), np.ones(4, np.float32)
    w.add("a", feats, times, mask, pooled)
    feats[:] = 9.0
    times[:] = 9.0
    mask[:] = False
    pooled[:] = 9.0
    w.close()
    with S.VideoStore(p) as s:
        g = s.get("a")
        np.testing.assert_array_equal(g.unit_features, np.ones((2, 4)))
        np.testing.assert_array_equal(g.unit_times_s, [0.0, 1.0])
        np.testing.assert_array_equal(g.unit_mask, [True, True])
        np.testing.assert_array_equal(g.pooled, np.ones(4))


def test_flushes_keep_rows_in_order_across_many_slabs(tmp_path, monkeypatch):
    p = tmp_path / "v.h5"
    w = _writer(p, d=8)
    w._flush_bytes = 100  # a slab every few videos
    rng = np.random.default_rng(1)
    vids = [(f"v{i}", rng.standard_normal((i % 4 + 1, 8)).astype(np.float32)) for i in range(25)]
    for vid, f in vids:
        w.add(vid, f, np.arange(len(f), dtype=float), None, f.mean(0))
    w.close()
    with S.VideoStore(p) as s:
        assert s.ids == [v for v, _ in vids]
        for vid, f in vids:
            np.testing.assert_array_equal(s.get(vid).unit_features, f)
        got = list(s.iter_pooled(batch=7))
        assert [len(ids) for ids, _ in got] == [7, 7, 7, 4]
        assert sum((ids for ids, _ in got), []) == s.ids
        np.testing.assert_array_equal(np.concatenate([b for _, b in got]), np.stack([f.mean(0) for _, f in vids]))
        vi, times = s.unit_table()
        assert len(vi) == len(times) == sum(len(f) for _, f in vids)


def test_add_checks(tmp_path):
    w = _writer(tmp_path / "v.h5")
    with pytest.raises(VtpipeError, match=r"a: 2 units but 2 times and 3 mask entries"):
        w.add("a", np.ones((2, 4)), [0, 1], [1, 1, 1], np.ones(4))
    with pytest.raises(VtpipeError, match=r"a: 2 units but 1 times and 2 mask entries"):
        w.add("a", np.ones((2, 4)), [0], [1, 1], np.ones(4))
    with pytest.raises(VtpipeError, match=r"a: unit features must be \[U, 4\], got \(2, 3\)"):
        w.add("a", np.ones((2, 3)), [0, 1], None, np.ones(4))
    with pytest.raises(VtpipeError, match="a: features contain NaN or Inf"):
        w.add("a", np.ones((1, 4)), [0], None, np.array([1, 1, 1, np.inf]))
    w.add("a", np.ones((1, 4)), [0], None, np.ones(4))
    with pytest.raises(VtpipeError, match="video id 'a' written twice to"):
        w.add("a", np.ones((1, 4)), [0], None, np.ones(4))
    w.abort()
    w.abort()  # idempotent
    with pytest.raises(VtpipeError, match="store dtype must be float32 or float16, got 'float64'"):
        S.VideoStoreWriter(tmp_path / "x.h5", 4, {}, dtype="float64")


def test_store_add_is_a_named_fault_point(tmp_path, monkeypatch):
    trace = tmp_path / "trace"
    monkeypatch.setenv("VTPIPE_FAULT_TRACE", str(trace))
    w = _writer(tmp_path / "v.h5")
    w.add("a", np.ones((1, 4)), [0], None, np.ones(4))
    w.add("b", np.ones((1, 4)), [0], None, np.ones(4))
    w.abort()
    assert trace.read_text().split().count("store_add") == 2


def test_text_store_layout_read_with_plain_h5py(tmp_path):
    p = tmp_path / "t.h5"
    pooled = np.arange(6, dtype=np.float64).reshape(3, 2)
    tokens = np.ones((3, 5, 2))
    S.write_text_store(p, ["c0", "c1", "c2"], ["v0", "v0", "v1"], ["é", "b", "c"], pooled, {"model": "m"},
                       tokens=tokens, token_mask=[[1, 1, 0, 0, 0]] * 3, dtype="float16")
    with h5py.File(p, "r") as f:
        assert f.attrs["kind"] == "text" and f.attrs["embed_dim"] == 2 and f.attrs["dtype"] == "float16"
        assert f.attrs["vtpipe_version"] == __version__ and f.attrs["store_format"] == 1
        for name in ("caption_ids", "video_ids", "captions"):
            assert h5py.check_string_dtype(f[name].dtype).encoding == "utf-8", name
        assert f["pooled"].dtype == np.float16 and f["tokens"].dtype == np.float16
        assert f["tokens"].chunks is not None
        assert f["token_mask"].dtype == np.bool_
    with S.TextStore(p) as t:
        assert t.captions == ["é", "b", "c"] and t.video_ids == ["v0", "v0", "v1"]
        assert t.pooled().dtype == np.float32
        np.testing.assert_array_equal(t.pooled(), pooled)
        tok, mask = t.tokens()
        assert tok.dtype == np.float32 and mask.dtype == np.bool_ and mask[0].tolist() == [1, 1, 0, 0, 0]
    S.write_text_store(p, ["c"], ["v"], ["x"], np.ones((1, 2)), {})
    with S.TextStore(p) as t:
        assert not t.has_tokens
        with pytest.raises(VtpipeError, match="holds no token features"):
            t.tokens()


def test_text_store_checks(tmp_path):
    p = tmp_path / "t.h5"
    with pytest.raises(VtpipeError, match=r"text store: 2 caption ids, 2 video ids, 2 captions, 3 feature rows"):
        S.write_text_store(p, ["a", "b"], ["v", "v"], ["x", "y"], np.ones((3, 2)), {})
    with pytest.raises(VtpipeError, match="^text store: caption ids are not unique$"):
        S.write_text_store(p, ["a", "a"], ["v", "v"], ["x", "y"], np.ones((2, 2)), {})
    with pytest.raises(VtpipeError, match="^text store: caption features contain NaN or Inf$"):
        S.write_text_store(p, ["a"], ["v"], ["x"], np.array([[np.nan, 1]]), {})


def test_a_failed_text_store_write_leaves_no_open_handle(tmp_path):
    p = tmp_path / "t.h5"
    with pytest.raises(TypeError) as failed:  # kept: the caller still holds the error (and its frames)
        S.write_text_store(p, ["a"], ["v"], ["x"], np.ones((1, 2)), {"bad": object()})
    assert failed.value is not None
    # the abandoned file was closed: the same path can be written again at once
    S.write_text_store(p, ["a"], ["v"], ["x"], np.ones((1, 2)), {})
    with S.TextStore(p) as t:
        assert t.caption_ids == ["a"]


def test_opening_wrong_or_missing_files(tmp_path):
    with pytest.raises(VtpipeError, match=r"video feature store .*nope.h5 does not exist \(run `vtpipe concat` first\?\)"):
        S.VideoStore(tmp_path / "nope.h5")
    (tmp_path / "junk.h5").write_text("not hdf5")
    with pytest.raises(VtpipeError, match="junk.h5 is not a readable HDF5 feature store"):
        S.TextStore(tmp_path / "junk.h5")
    S.write_text_store(tmp_path / "t.h5", ["a"], ["v"], ["x"], np.ones((1, 2)), {})
    with pytest.raises(VtpipeError, match=r"t.h5 is a 'text' store, not a video feature store"):
        S.VideoStore(tmp_path / "t.h5")
    w = _writer(tmp_path / "v.h5")
    w.add("a", np.ones((1, 4)), [0], None, np.ones(4))
    w.close()
    a, b = S.open_store(tmp_path / "t.h5"), S.open_store(tmp_path / "v.h5")
    assert isinstance(a, S.TextStore) and isinstance(b, S.VideoStore) and len(b) == 1
    a.close()
    b.close()


def test_attrs_and_decoding_helpers(tmp_path):
    assert S._decode(np.array([b"\xc3\xa9", "x"], dtype=object)) == ["é", "x"]
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f.attrs["b"] = np.bytes_(b'{"k": 1}')
        f.attrs["n"] = np.int64(3)
        f.attrs["s"] = "[not json"
        got = S.read_attrs(f)
    assert got == {"b": {"k": 1}, "n": 3, "s": "[not json"} and type(got["n"]) is int


def _open_fds() -> int:
    import os

    return len(os.listdir("/proc/self/fd"))


def test_abandoned_files_get_no_further_writes_and_leak_no_descriptor(tmp_path):
    """abandon_h5 points the file's descriptor at /dev/null before closing (a full disk must not crash the
    close): what HDF5 still held in its cache never reaches the file, and no descriptor is left open."""
    before = _open_fds()
    f = h5py.File(tmp_path / "a.h5", "w", libver="latest")
    f.create_dataset("x", data=np.arange(1000))
    S.abandon_h5(f)
    assert _open_fds() == before
    try:
        with h5py.File(tmp_path / "a.h5", "r") as g:
            assert "x" not in g
    except OSError:
        pass  # not even a readable file: nothing was flushed
    # the writer's abort goes the same way, even while the writer object lives on
    w = _writer(tmp_path / "v.h5")
    w.add("a", np.ones((1, 4)), [0], None, np.ones(4))
    w.flush()
    w.abort()
    assert _open_fds() == before and w._f is None
    with h5py.File(tmp_path / "v.h5", "w") as g:  # not held open: can be truncated at once
        g.attrs["k"] = 1


def test_buffered_rows_stay_bounded_and_reach_the_file(tmp_path):
    """Rows go to the file in slabs: what waits in memory never exceeds the flush size plus one video."""
    w = _writer(tmp_path / "v.h5", d=8)
    w._flush_bytes = 100
    rng = np.random.default_rng(2)
    total = 0
    for i in range(40):
        u = int(rng.integers(1, 3))  # 32 or 64 bytes a video: many videos per slab
        w.add(f"v{i}", np.ones((u, 8), np.float32), np.arange(u), np.ones((u, 1), bool), np.ones(8))
        total += u
        waiting = total - w._units.shape[0]
        assert 0 <= waiting * 8 * 4 < 100 + 64, (i, waiting)
    w.close()
    with S.VideoStore(tmp_path / "v.h5") as s:
        assert s.unit_features().shape == (total, 8) and s.unit_mask().shape == (total,)
