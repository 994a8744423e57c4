"""shapes-tiny (the embedded sample's model) and the sample generator."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from stages.backbones import shapes_tiny
from stages.backbones.registry import load_model, model_config
from stages.contract.errors import VtpipeError

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"


def _load_generator():
    spec = importlib.util.spec_from_file_location("vtpipe_make_sample", SAMPLE / "make_sample.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


gen = _load_generator()


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return load_model("shapes-tiny")


def _decode_3fps(path: Path) -> np.ndarray:
    """Frames at k/3 s (last frame with timestamp <= t), with decord."""
    import decord

    vr = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    ts = np.asarray(vr.get_frame_timestamp(range(len(vr))))
    times = np.arange(0, float(ts[-1, 1]) - 1e-6, 1 / 3)
    idx = np.searchsorted(ts[:, 0], times + 1e-6, side="right") - 1
    return vr.get_batch([int(max(0, i)) for i in idx]).asnumpy()


def _video_vectors(model, clips) -> np.ndarray:
    pre = model.preprocess()
    out = []
    for frames in clips:
        units = model.encode_units(torch.from_numpy(pre(np.ascontiguousarray(frames)))).numpy()
        out.append(model.pool(units))
    return np.stack(out)


def _t2v_r1(text: np.ndarray, video: np.ndarray) -> float:
    sim = text @ video.T
    ranks = (sim > np.diag(sim)[:, None]).sum(axis=1)
    return float(100 * np.mean(ranks == 0))


# ---- the model ---------------------------------------------------------------------------------------------
def test_loads_through_registry_with_committed_weights(model):
    info = model_config("shapes-tiny")
    assert info.family == "shapes-tiny" and info.unit == "frame"
    assert info.sampling == {"policy": "fps", "fps": 3}
    assert not model.random_weights
    assert model.embed_dim == 32
    pre = model.preprocess()
    assert (pre.size, pre.resize, pre.crop) == (64, "exact", "none")
    assert shapes_tiny.DEFAULT_WEIGHTS.stat().st_size < 5 * 2**20
    ckpt = torch.load(shapes_tiny.DEFAULT_WEIGHTS, weights_only=True)
    assert set(ckpt) == {"state_dict", "vocab", "config"}


def test_output_shapes(model):
    x = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, (5, 3, 64, 64)).astype(np.float32))
    units = model.encode_units(x)
    assert units.shape == (5, 32) and units.dtype == torch.float32
    pooled = model.pool(units.numpy())
    assert pooled.shape == (32,) and pooled.dtype == np.float32
    assert np.linalg.norm(pooled) == pytest.approx(1.0, abs=1e-5)
    assert model.pool(units.numpy(), np.zeros(5, dtype=bool)).tolist() == [0.0] * 32
    text = model.encode_text(["a red square moving left", "A Blue circle, moving up!", "qwerty zxcv"])
    assert text.pooled.shape == (3, 32) and text.pooled.dtype == np.float32
    assert np.linalg.norm(text.pooled[:2], axis=1) == pytest.approx([1.0, 1.0], abs=1e-5)
    assert not text.pooled[2].any()  # no known word: the zero vector
    assert model.encode_text([]).pooled.shape == (0, 32)
    with pytest.raises(VtpipeError, match="frame units"):
        model.encode_units(torch.zeros(1, 3, 4, 64, 64))


def test_preprocess_output_feeds_the_model(model):
    frames = np.full((3, 224, 298, 3), 128, dtype=np.uint8)
    x = model.preprocess()(frames)
    assert x.shape == (3, 3, 64, 64)
    assert model.encode_units(torch.from_numpy(x)).shape == (3, 32)


def test_deterministic_and_batch_invariant(model):
    x = torch.from_numpy(np.random.default_rng(1).uniform(-1, 1, (8, 3, 64, 64)).astype(np.float32))
    a = model.encode_units(x)
    b = model.encode_units(x.clone())
    assert torch.equal(a, b)
    singles = torch.cat([model.encode_units(x[i : i + 1]) for i in range(8)])
    torch.testing.assert_close(singles, a, rtol=1e-5, atol=1e-5)
    caps = [f"a {c} square moving {d}" for c in ("red", "blue") for d in ("left", "right", "up", "down")]
    t8 = model.encode_text(caps).pooled
    t1 = np.concatenate([model.encode_text([c]).pooled for c in caps])
    np.testing.assert_allclose(t1, t8, rtol=1e-5, atol=1e-6)
    assert np.array_equal(model.encode_text(caps).pooled, t8)


def test_numpy_pool_matches_training_pool(model):
    rng = np.random.default_rng(2)
    units = rng.normal(size=(2, 7, 32)).astype(np.float32)
    mask = np.array([[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0, 0]], dtype=bool)
    with torch.no_grad():
        ref = model.net.pool(torch.from_numpy(units), torch.from_numpy(mask), fps=3).numpy()
    got = np.stack([model.pool(units[i], mask[i]) for i in range(2)])
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def test_pool_motion_follows_time_order(model):
    """The last two pooled dims are the motion direction: reversing the frames negates them."""
    units = np.zeros((6, 32), dtype=np.float32)
    units[:, 0] = 1.0
    units[:, -2] = np.linspace(-0.5, 0.5, 6)  # x grows: moving right
    fwd, back = model.pool(units), model.pool(units[::-1])
    assert fwd[-2] > 0 > back[-2]
    np.testing.assert_allclose(fwd[-2:], -back[-2:], atol=1e-6)


def _save(tmp_path: Path, state, vocab, config, name="ckpt.pt") -> Path:
    path = tmp_path / name
    torch.save({"state_dict": state, "vocab": vocab, "config": config}, path)
    return path


def test_strict_loading_names_bad_keys(tmp_path):
    ckpt = torch.load(shapes_tiny.DEFAULT_WEIGHTS, weights_only=True)
    state, vocab, config = dict(ckpt["state_dict"]), ckpt["vocab"], ckpt["config"]
    assert not load_model("shapes-tiny", _save(tmp_path, state, vocab, config)).random_weights

    broken = dict(state)
    del broken["frame.saliency.weight"]
    broken["frame.extra.bias"] = torch.zeros(3)
    with pytest.raises(VtpipeError, match=r"missing keys \['frame.saliency.weight'\].*unexpected keys \['frame.extra.bias'\]"):
        load_model("shapes-tiny", _save(tmp_path, broken, vocab, config, "b.pt"))

    reshaped = dict(state)
    reshaped["text.proj.weight"] = torch.zeros(5, 5)
    with pytest.raises(VtpipeError, match=r"shape mismatches \['text.proj.weight"):
        load_model("shapes-tiny", _save(tmp_path, reshaped, vocab, config, "c.pt"))

    with pytest.raises(VtpipeError, match="embed_dim 16"):
        load_model("shapes-tiny", _save(tmp_path, state, vocab, {**config, "embed_dim": 16}, "d.pt"))

    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(VtpipeError, match="cannot read checkpoint"):
        load_model("shapes-tiny", tmp_path / "junk.pt")

    torch.save({"model": state}, tmp_path / "e.pt")
    with pytest.raises(VtpipeError, match="not a shapes-tiny checkpoint"):
        load_model("shapes-tiny", tmp_path / "e.pt")


def test_missing_default_weights(monkeypatch, tmp_path):
    monkeypatch.setattr(shapes_tiny, "DEFAULT_WEIGHTS", tmp_path / "absent.pt")
    with pytest.raises(VtpipeError, match="no weights given"):
        load_model("shapes-tiny")
    m = load_model("shapes-tiny", allow_random=True)
    assert m.random_weights
    assert m.encode_units(torch.zeros(2, 3, 64, 64)).shape == (2, 32)


# ---- the sample ----------------------------------------------------------------------------------------------
def test_committed_annotations_match_the_generator(tmp_path):
    gen.write_annotations(tmp_path)
    for name in ("msrvtt_test.csv", "train.csv", "train_data.json"):
        assert (tmp_path / name).read_bytes() == (SAMPLE / name).read_bytes(), name
    header = (SAMPLE / "msrvtt_test.csv").read_text().splitlines()[0]
    assert header == "key,vid_key,video_id,sentence"


def test_splits_hold_out_combinations_and_are_closed_under_the_controls():
    test, train = set(gen.test_combos()), set(gen.train_combos())
    assert len(test) == 24 and len(train) == 24 and not test & train
    for c, s, d in test:  # a colour swap or a time reversal of a test clip is another test clip
        assert (gen.SWAPPED_COLOUR[c], s, d) in test
        assert (c, s, gen.REVERSED_DIRECTION[d]) in test
    for i, j in ((0, 1), (1, 2), (0, 2)):  # every pair of attribute values is seen in training
        assert {(x[i], x[j]) for x in train} == {(x[i], x[j]) for x in gen.all_combos()}
    for name, rgb in gen.COLOURS.items():
        assert gen.COLOURS[gen.SWAPPED_COLOUR[name]] == rgb[::-1]
    assert [s.combo for s in gen.test_specs()] == [s.combo for s in gen.test_specs()]


def test_generator_is_deterministic(tmp_path):
    spec = gen.test_specs()[0]
    a = gen.write_videos([spec], tmp_path / "a")[0].read_bytes()
    b = gen.write_videos([spec], tmp_path / "b")[0].read_bytes()
    assert a == b and len(a) < 20_000


@pytest.fixture(scope="module")
def decoded_test_split(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample_videos")
    assert gen.main(["--out", str(out)]) == 0
    rows = (SAMPLE / "msrvtt_test.csv").read_text().splitlines()[1:]
    captions = [r.split(",", 3)[3] for r in rows]
    ids = [r.split(",", 3)[2] for r in rows]
    clips = [_decode_3fps(out / f"{vid}.mp4") for vid in ids]
    assert all(len(c) == 6 and c.shape[1:] == (240, 320, 3) for c in clips)
    return clips, captions


def test_retrieves_decoded_test_videos_far_above_chance(model, decoded_test_split):
    clips, captions = decoded_test_split
    text = model.encode_text(captions).pooled
    chance = 100 / len(clips)
    assert _t2v_r1(text, _video_vectors(model, clips)) >= 75.0 > 10 * chance
    # the controls the end-to-end test builds on: each one must collapse retrieval
    assert _t2v_r1(text, _video_vectors(model, [c[..., ::-1] for c in clips])) <= 2 * chance  # RGB -> BGR
    assert _t2v_r1(text, _video_vectors(model, [c[::-1] for c in clips])) <= 2 * chance  # time reversed
    shuffled = np.roll(np.arange(len(captions)), 1)
    assert _t2v_r1(text[shuffled], _video_vectors(model, clips)) <= 2 * chance
