"""`vtpipe extract --model locvtp` from a release-format checkpoint + vocab, then the LocVTP HDF5 export."""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest

import backbone_checkpoints as bc
from conftest import run_cli
from stages.features.store import VideoStore
from video_factory import make_counter_video


def test_extract_locvtp_and_export_original_layout(tmp_path):
    sd = bc.random_state_dict(bc.locvtp_shapes(bc.TINY_DISTILBERT), seed=5)
    ckpt = bc.write_locvtp_checkpoint(tmp_path / "model_10e.pth", sd)
    vocab = bc.write_vocab(tmp_path / "vocab.txt")
    configs = bc.make_configs_dir(tmp_path)
    bc.tiny_model_config(configs, "locvtp", "locvtp-tinytext", params=dict(bc.TINY_DISTILBERT))
    videos = tmp_path / "videos"
    make_counter_video(videos / "a" / "clip one.mp4", n_frames=20, fps=10)  # 20 frames -> 2 clips of 16
    make_counter_video(videos / "b.mp4", n_frames=16, fps=10)  # exactly 1 clip
    (videos / "train").mkdir()
    (videos / "train" / "v_broken.mp4").write_bytes(b"not a video")  # recorded as failed, listed beside the export
    captions = tmp_path / "caps.csv"
    captions.write_text("key,vid_key,video_id,sentence\nret0,m0,a/clip one,a man plays guitar\nret1,m1,b,a dog\n")
    env = {"VTPIPE_CONFIGS": str(configs)}
    run_cli("extract", "--model", "locvtp-tinytext", "--weights", str(ckpt), "--file", f"vocab={vocab}",
            "--videos", str(videos), "--captions", str(captions), "-o", str(tmp_path / "shards"), "--shards", "2",
            "--decode-workers", "0", env=env)
    run_cli("concat", str(tmp_path / "shards"), "-o", str(tmp_path / "locvtp.h5"), "--layout", "locvtp", env=env)
    with h5py.File(tmp_path / "locvtp.locvtp.h5", "r") as f:  # plain h5py, the original group-per-video layout
        # keyed by file stem, as the grounding code looks videos up: no nested group for the subfolder
        assert sorted(f) == ["b", "clip one"]
        # LocVTP's concatHDF5.py reads every top-level key as a video: that loop must see exactly the videos
        assert {vid: f[vid]["c3d_features"][:].shape for vid in f.keys()} == {"clip one": (2, 1, 256),
                                                                             "b": (1, 1, 256)}
        a, b = f["clip one/c3d_features"], f["b/c3d_features"]
        assert a.shape == (2, 1, 256) and b.shape == (1, 1, 256) and a.dtype == np.float32
        with VideoStore(tmp_path / "locvtp.h5") as s:  # the export holds exactly the store's clip features
            np.testing.assert_array_equal(a[:, 0, :], s.get("a/clip one").unit_features)
            np.testing.assert_array_equal(s.get("b").unit_times_s, [0.0])
            # what the features are made of is recorded: protocol, precision actually run, geometry, pixel aspect
            assert (s.attrs["protocol"], s.attrs["precision"], s.attrs["aspect"]) == ("default", "fp32", "stored")
            pre = s.attrs["preprocess"]
            assert (pre["backend"], pre["interpolation"], pre["antialias"], pre["size"]) == ("torch", "bilinear", False, 112)
    with h5py.File(tmp_path / "locvtp.text.h5", "r") as f:
        assert f["pooled"].shape == (2, 256)
    failed = pd.read_csv(tmp_path / "locvtp.locvtp.failed.csv", dtype=str)
    assert failed["id"].tolist() == ["train/v_broken"] and failed["key"].tolist() == ["v_broken"]
    assert failed["reason"].iloc[0]  # a reason, not an empty cell

    run_cli("concat", str(tmp_path / "shards"), "-o", str(tmp_path / "bypath.h5"), "--layout", "locvtp",
            "--locvtp-ids", "path", env=env)
    with h5py.File(tmp_path / "bypath.locvtp.h5", "r") as f:  # the whole id: nested groups, f["a/clip one"] reads
        assert sorted(f) == ["a", "b"] and f["a/clip one/c3d_features"].shape == (2, 1, 256)
    bad = run_cli("extract", "--model", "locvtp-tinytext", "--weights", str(ckpt), "--file", "vocb=x",
                  "--videos", str(videos), "-o", str(tmp_path / "s2"), env=env, check=False)
    assert bad.returncode == 2 and "vocb" in bad.stderr


def test_locvtp_stem_collision_is_refused_before_writing(tmp_path):
    from stages.concat import export_locvtp, locvtp_keys
    from stages.contract.errors import VtpipeError

    assert locvtp_keys(["train/v_a", "val/v_b", "v_c"]) == {"train/v_a": "v_a", "val/v_b": "v_b", "v_c": "v_c"}
    assert locvtp_keys(["train/v_a"], "path") == {"train/v_a": "train/v_a"}
    with pytest.raises(VtpipeError, match=r"'train/v_a' and 'val/v_a' both become 'v_a'.*--locvtp-ids path"):
        locvtp_keys(["train/v_a", "val/v_a"])
    with pytest.raises(VtpipeError, match="locvtp_ids"):
        locvtp_keys(["x"], "basename")
    from stages.features.store import VideoStoreWriter

    store = tmp_path / "s.h5"
    w = VideoStoreWriter(store, 4, {"model": "m"})
    for vid in ("train/v_a", "val/v_a"):
        w.add(vid, np.ones((2, 4), np.float32), np.zeros(2), np.ones(2, bool), np.ones(4, np.float32))
    w.close()
    with pytest.raises(VtpipeError, match="both become"):
        export_locvtp(store, tmp_path / "out.locvtp.h5")
    assert not (tmp_path / "out.locvtp.h5").exists()
