"""The flat ragged feature store: round trip, reader API, validation, concat."""

import h5py
import numpy as np
import pytest

from stages.concat import concat_stores, export_locvtp
from stages.contract.errors import VtpipeError
from stages.features.store import TextStore, VideoStore, VideoStoreWriter, write_text_store


def _videos(rng, n, d=8):
    out = []
    for i in range(n):
        u = int(rng.integers(1, 6))
        out.append((f"dir/v{i}", rng.standard_normal((u, d)).astype(np.float32), np.arange(u) / 3.0,
                    np.ones(u, bool), rng.standard_normal(d).astype(np.float32)))
    return out


def _write(path, vids, d=8, dtype="float32", model="m"):
    w = VideoStoreWriter(path, d, {"model": model, "sampling": {"policy": "fps", "fps": 3}}, dtype=dtype)
    for v in vids:
        w.add(*v)
    w.close()


def test_round_trip_and_reader_api(tmp_path):
    rng = np.random.default_rng(0)
    vids = _videos(rng, 7)
    _write(tmp_path / "s.h5", vids)
    with VideoStore(tmp_path / "s.h5") as s:
        assert s.ids == [v[0] for v in vids]
        assert len(s) == 7 and s.embed_dim == 8 and s.model == "m"
        assert s.attrs["sampling"] == {"policy": "fps", "fps": 3}
        for vid, f, t, m, p in vids:
            got = s.get(vid)
            np.testing.assert_array_equal(got.unit_features, f)
            np.testing.assert_array_equal(got.unit_times_s, t)
            np.testing.assert_array_equal(got.pooled, p)
        np.testing.assert_array_equal(s.pooled(), np.stack([v[4] for v in vids]))
        batches = list(s.iter_pooled(3))
        assert [len(ids) for ids, _ in batches] == [3, 3, 1]
        vidx, times = s.unit_table()
        assert len(vidx) == sum(len(v[1]) for v in vids)
        assert vidx[0] == 0 and vidx[-1] == 6
        with pytest.raises(KeyError, match="nope"):
            s.get("nope")


def test_float16_storage_reads_back_as_float32(tmp_path):
    rng = np.random.default_rng(1)
    vids = _videos(rng, 3)
    _write(tmp_path / "h.h5", vids, dtype="float16")
    with VideoStore(tmp_path / "h.h5") as s:
        got = s.get(vids[0][0]).unit_features
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, vids[0][1], rtol=1e-3, atol=1e-3)


def test_writer_rejects_duplicates_nan_and_bad_shapes(tmp_path):
    w = VideoStoreWriter(tmp_path / "x.h5", 4, {"model": "m"})
    w.add("a", np.ones((2, 4)), [0, 1], None, np.ones(4))
    with pytest.raises(VtpipeError, match="written twice"):
        w.add("a", np.ones((2, 4)), [0, 1], None, np.ones(4))
    with pytest.raises(VtpipeError, match="NaN or Inf"):
        w.add("b", np.full((2, 4), np.nan), [0, 1], None, np.ones(4))
    with pytest.raises(VtpipeError, match=r"\[U, 4\]"):
        w.add("c", np.ones((2, 5)), [0, 1], None, np.ones(4))
    w.close()


def test_text_store(tmp_path):
    pooled = np.arange(12, dtype=np.float32).reshape(3, 4)
    write_text_store(tmp_path / "t.h5", ["c0", "c1", "c2"], ["v0", "v0", "v1"], ["a", "b", "é"], pooled,
                     {"model": "m"}, tokens=np.zeros((3, 5, 4)), token_mask=np.ones((3, 5), bool))
    with TextStore(tmp_path / "t.h5") as t:
        assert t.caption_ids == ["c0", "c1", "c2"] and t.video_ids == ["v0", "v0", "v1"]
        assert t.captions[2] == "é"
        np.testing.assert_array_equal(t.pooled(), pooled)
        assert t.has_tokens and t.tokens()[0].shape == (3, 5, 4)
    with pytest.raises(VtpipeError, match="not unique"):
        write_text_store(tmp_path / "u.h5", ["c", "c"], ["v", "v"], ["a", "b"], pooled[:2], {})
    with pytest.raises(VtpipeError, match="not a video feature store"):
        VideoStore(tmp_path / "t.h5")


def test_concat_equals_single_store_and_detects_duplicates(tmp_path):
    rng = np.random.default_rng(2)
    vids = _videos(rng, 9)
    _write(tmp_path / "all.h5", vids)
    for k, part in enumerate([vids[:4], vids[4:5], vids[5:]]):
        _write(tmp_path / f"shard-{k}.h5", part)
    counts = concat_stores([str(tmp_path / f"shard-{k}.h5") for k in range(3)], tmp_path / "merged.h5")
    assert counts == {"videos": 9, "units": sum(len(v[1]) for v in vids), "shards": 3}
    with h5py.File(tmp_path / "all.h5") as a, h5py.File(tmp_path / "merged.h5") as b:
        for name in ("ids", "offsets", "unit_features", "unit_times_s", "unit_mask", "pooled"):
            np.testing.assert_array_equal(a[name][:], b[name][:])
    with pytest.raises(VtpipeError, match="is in both"):
        concat_stores([str(tmp_path / "shard-0.h5"), str(tmp_path / "all.h5")], tmp_path / "dup.h5")
    assert not (tmp_path / "dup.h5").exists()  # nothing half-written under the final name
    _write(tmp_path / "other.h5", _videos(rng, 1)[:0] + [("z", *vids[0][1:])], model="other")
    with pytest.raises(VtpipeError, match="differs"):
        concat_stores([str(tmp_path / "shard-0.h5"), str(tmp_path / "other.h5")], tmp_path / "mix.h5")


def test_concat_refuses_shards_of_different_sampling(tmp_path):
    rng = np.random.default_rng(4)
    vids = _videos(rng, 2)
    _write(tmp_path / "a.h5", vids[:1])
    w = VideoStoreWriter(tmp_path / "b.h5", 8, {"model": "m", "sampling": {"policy": "fps", "fps": 1}})
    w.add(*vids[1])
    w.close()
    with pytest.raises(VtpipeError, match="sampling"):
        concat_stores([str(tmp_path / "a.h5"), str(tmp_path / "b.h5")], tmp_path / "m.h5")


def test_locvtp_export_layout(tmp_path):
    rng = np.random.default_rng(3)
    vids = _videos(rng, 2, d=256)
    _write(tmp_path / "s.h5", vids, d=256)
    assert export_locvtp(tmp_path / "s.h5", tmp_path / "l.h5") == 2  # keyed by file stem (the default)
    with h5py.File(tmp_path / "l.h5") as f:
        ds = f["v0/c3d_features"]
        assert ds.dtype == np.float32 and ds.shape == (len(vids[0][1]), 1, 256)
        np.testing.assert_array_equal(ds[:, 0, :], vids[0][1])
    assert export_locvtp(tmp_path / "s.h5", tmp_path / "p.h5", ids="path") == 2
    with h5py.File(tmp_path / "p.h5") as f:
        np.testing.assert_array_equal(f["dir/v0/c3d_features"][:, 0, :], vids[0][1])


def test_one_video_out_of_100k_is_fast_to_open(tmp_path):
    """Opening one video's features must not read the whole store (ids are read once, slices after)."""
    n, d = 100_000, 4
    w = VideoStoreWriter(tmp_path / "big.h5", d, {"model": "m"})
    # bulk-fill through the writer's datasets for speed: one unit per video
    w._ids.resize(n, axis=0)
    w._ids[:] = np.array([f"v{i}" for i in range(n)], dtype=object)
    for ds in (w._units, w._pooled):
        ds.resize(n, axis=0)
        ds[:] = np.arange(n * d, dtype=np.float32).reshape(n, d)
    w._times.resize(n, axis=0)
    w._mask.resize(n, axis=0)
    w._mask[:] = True
    w._offsets = list(range(n + 1))
    w.close()
    with VideoStore(tmp_path / "big.h5") as s:
        v = s.get("v99999")
        np.testing.assert_array_equal(v.unit_features[0], np.arange(99999 * d, 100000 * d, dtype=np.float32))
