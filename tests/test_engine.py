"""The extraction engine: batches spanning videos, input order, failures as data, every model family."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import backbone_checkpoints as bc
from stages.backbones.registry import load_model
from stages.features.engine import run_engine
from video_factory import make_counter_video


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("engine")
    paths = []
    for i, n in enumerate([7, 40, 3, 25]):  # different lengths: batches must span video boundaries
        paths.append((f"v{i}", str(make_counter_video(d / f"v{i}.mp4", n_frames=n, width=96, height=64, fps=10))))
    bad = d / "broken.mp4"
    bad.write_text("not a video")
    return paths, ("bad", str(bad))


def _collect(model, videos, policy, batch_size):
    got, failed = {}, []
    order = []

    def on_video(vid, feats, times, mask, pooled):
        got[vid] = (feats.copy(), times.copy(), mask.copy(), pooled.copy())
        order.append(vid)

    stats = run_engine(model, videos, policy, on_video, lambda v, r, d: failed.append((v, r)), batch_size=batch_size,
                       decode_workers=0)
    return got, order, failed, stats


def test_batches_span_videos_and_match_per_video_encoding(clips):
    videos, bad = clips
    model = load_model("shapes-tiny", allow_random=True)
    policy = {"policy": "all"}
    got, order, failed, stats = _collect(model, [videos[0], bad, *videos[1:]], policy, batch_size=16)
    assert order == [v for v, _ in videos]  # input order, the broken file skipped
    assert failed and failed[0][0] == "bad" and failed[0][1] in {"not_a_video", "unreadable", "decode_error"}
    assert stats["units"] == 7 + 40 + 3 + 25 and stats["batches"] == -(-75 // 16)  # full batches across videos
    for vid, path in videos:  # the same video alone, in one batch of its own
        alone, _, _, _ = _collect(model, [(vid, path)], policy, batch_size=1000)
        np.testing.assert_allclose(got[vid][0], alone[vid][0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got[vid][3], alone[vid][3], rtol=1e-5, atol=1e-6)


def test_times_follow_the_sampling_policy(clips):
    videos, _ = clips
    model = load_model("shapes-tiny", allow_random=True)
    got, _, _, _ = _collect(model, videos[1:2], {"policy": "fps", "fps": 2}, batch_size=8)
    feats, times, mask, _ = got["v1"]
    np.testing.assert_allclose(times, np.arange(0, 4.0, 0.5))  # 40 frames at 10 fps = 4 s, every 0.5 s
    assert mask.all() and len(feats) == 8


@pytest.fixture()
def tiny_configs(tmp_path, monkeypatch):
    root = bc.make_configs_dir(tmp_path)
    monkeypatch.setenv("VTPIPE_CONFIGS", str(root))
    small = {"size": 64, "resize": "short", "crop": "center", "interpolation": "bicubic"}
    bc.tiny_model_config(root, "clip-vit-b-32", "clip-tiny", embed_dim=32, preprocess=small,
                         params={"arch": None, "arch_cfg": bc.TINY_CLIP_ARCH})
    bc.tiny_model_config(root, "tvtsv2-b32", "tvtsv2-tiny", embed_dim=32,
                         preprocess={**small, "resize": "exact", "crop": "none", "interpolation": "bilinear"},
                         params={"arch": None, "arch_cfg": bc.TINY_TVTS_ARCH})
    bc.tiny_model_config(root, "s3d-howto100m", "s3d-tiny", preprocess={**small, "interpolation": "bilinear"},
                         sampling={"policy": "milnce-retrieval", "fps": 10, "num_clips": 2, "clip_len": 8})
    return root


@pytest.mark.parametrize("name", ["clip-tiny", "tvtsv2-tiny", "s3d-tiny", "locvtp"])
def test_every_family_runs_through_the_engine(name, tiny_configs, clips):
    videos, _ = clips
    torch.set_num_threads(2)
    model = load_model(name, allow_random=True)
    policy = model.info.sampling
    vids = [videos[3]]  # 25 frames at 10 fps
    got, order, failed, _ = _collect(model, vids, policy, batch_size=4)
    assert not failed and order == ["v3"]
    feats, times, mask, pooled = got["v3"]
    assert feats.shape[1] == model.embed_dim and pooled.shape == (model.embed_dim,)
    assert np.isfinite(feats).all()
    # clip: fps 3 over 2.5 s -> 8 frames; tvtsv2: 12 frames -> one clip; s3d: 2 clips of 8;
    # locvtp: 25 frames -> ceil(25 / 16) = 2 clips of 16, the last padded
    expected_units = {"clip-tiny": 8, "tvtsv2-tiny": 1, "s3d-tiny": 2, "locvtp": 2}[name]
    assert len(feats) == expected_units
    again, _, _, _ = _collect(model, vids, policy, batch_size=4)
    np.testing.assert_array_equal(again["v3"][0], feats)  # deterministic


def test_caption_batches_of_different_token_lengths_join(tiny_configs, tmp_path):
    """Token features of caption batches padded to their own longest caption are joined into one store."""
    from pipeline.config import resolve
    from stages import extract
    from stages.contract.layout import Layout
    from stages.features.store import TextStore

    caps = tmp_path / "caps.csv"
    sentences = ["a", "a dog runs on the beach today", "two", "a much longer caption with many more words in it", "b"]
    caps.write_text("key,vid_key,video_id,sentence\n" + "".join(f"c{i},m{i},v{i},{t}\n" for i, t in enumerate(sentences)))
    (tmp_path / "videos").mkdir()
    cfg = resolve({"stages": ["extract"], "input": {"videos": str(tmp_path / "videos")},
                   "dataset": {"captions": str(caps)}, "model": {"name": "clip-tiny", "allow_random": True},
                   "extract": {"text_batch_size": 2}})
    (task,) = [t for t in extract.plan(cfg, Layout(tmp_path / "run")) if t.id == "text"]
    extract.run_task(task)
    with TextStore(task.params["out"]) as ts:
        tokens, mask = ts.tokens()
    assert tokens.shape[0] == 5 and mask.shape == tokens.shape[:2]
    n_real = mask.sum(axis=1)
    assert n_real[3] > n_real[1] > n_real[0] and not mask[0, n_real[0]:].any()


def test_gpu_decoding_falls_back_to_the_cpu_with_the_same_features(clips):
    """decode_device=gpu without a CUDA decord build decodes on the CPU: same features, no failure."""
    videos, _ = clips
    model = load_model("shapes-tiny", allow_random=True)
    cpu, _, f1, _ = _collect(model, videos[:2], {"policy": "fps", "fps": 3}, batch_size=8)
    got, failed = {}, []
    run_engine(model, videos[:2], {"policy": "fps", "fps": 3}, lambda v, f, t, m, p: got.setdefault(v, f.copy()),
               lambda v, r, d: failed.append(v), batch_size=8, decode_workers=0, decode_device="gpu")
    assert not failed and not f1
    for vid in cpu:
        np.testing.assert_array_equal(got[vid], cpu[vid][0])


@pytest.mark.parametrize("name", ["clip-tiny", "tvtsv2-tiny", "s3d-tiny", "shapes-tiny"])
def test_batch_of_8_equals_8_batches_of_1_and_is_deterministic(name, tiny_configs):
    """Every family (LocVTP's C3D is checked the same way, on 2 clips, in test_backbones_locvtp.py)."""
    torch.set_num_threads(2)
    model = load_model(name, allow_random=True)
    pre = model.preprocess()
    rng = np.random.default_rng(0)
    policy = model.info.sampling
    clip_len = policy.get("clip_len") or (12 if model.unit == "clip" else None)
    shape = (8, clip_len, 72, 96, 3) if clip_len else (8, 72, 96, 3)
    units = torch.from_numpy(pre(rng.integers(0, 256, shape, dtype=np.uint8)))
    whole = model.encode_units(units)
    again = model.encode_units(units)
    ones = torch.cat([model.encode_units(units[i : i + 1]) for i in range(8)])
    assert whole.shape == (8, model.embed_dim) and whole.dtype == torch.float32
    assert torch.equal(whole, again)
    torch.testing.assert_close(whole, ones, atol=1e-4, rtol=1e-4)
