"""S3D-G (MIL-NCE S3D_HowTo100M, VT-TWINS): layer table, SAME pooling, space-to-depth, text side, formats."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import backbone_checkpoints as bc
from stages.backbones.registry import load_model, model_config
from stages.backbones.s3d import S3DG, max_pool_same
from stages.contract.errors import VtpipeError

torch.set_num_threads(min(2, torch.get_num_threads()))
WORDS = ["a", "dog", "runs", "on", "the", "beach", "man", "cuts", "onion", "Dog", "it's"]


@pytest.mark.parametrize("s2d", [True, False])
def test_layer_table(s2d):
    with torch.device("meta"):
        net = S3DG(space_to_depth=s2d)
    got = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert got == bc.s3d_shapes(s2d)
    assert net.mixed_5c.output_dim == 1024


def test_same_max_pool_semantics():
    x = torch.arange(16.0).view(1, 1, 1, 4, 4)
    out = max_pool_same(x, (1, 3, 3), (1, 2, 2))  # pad 0 before, 1 after on H and W; windows rows {0-2}, {2-4}
    assert out[0, 0, 0].tolist() == [[10.0, 11.0], [14.0, 15.0]]
    x5 = torch.arange(5.0).view(1, 1, 1, 1, 5)
    out5 = max_pool_same(x5, (1, 1, 3), (1, 1, 2))  # release port: pad (0, 1), ceil_mode -> 3 windows
    assert out5.flatten().tolist() == [2.0, 4.0, 4.0]
    y = torch.rand(1, 2, 3, 6, 6)
    assert max_pool_same(y, (2, 2, 2), (2, 2, 2)).shape == (1, 2, 2, 3, 3)  # no pad, ceil_mode on odd T


def test_space_to_depth_order():
    x = torch.arange(2 * 2 * 2 * 3).float().view(1, 3, 2, 2, 2)  # B, C, T, H, W
    y = S3DG.to_depth(x)
    assert y.shape == (1, 24, 1, 1, 1)
    want = [x[0, c, t, h, w].item() for t in range(2) for h in range(2) for w in range(2) for c in range(3)]
    assert y.flatten().tolist() == want


@pytest.fixture()
def milnce(tmp_path, monkeypatch):
    monkeypatch.setenv("VTPIPE_CONFIGS", str(bc.make_configs_dir(tmp_path)))
    sd = bc.s3d_state_dict(space_to_depth=True, seed=2)
    ckpt = tmp_path / "s3d_howto100m.pth"
    torch.save(sd, ckpt)
    d = bc.write_word_dict(tmp_path / "s3d_dict.npy", WORDS)
    return sd, load_model("s3d-howto100m", weights={"checkpoint": str(ckpt), "dict": str(d)})


def _clips(n, seed=0):
    return torch.rand(n, 3, 8, 64, 64, generator=torch.Generator().manual_seed(seed))


def test_milnce_release_format(milnce):
    sd, model = milnce
    assert model.space_to_depth is True and not model.random_weights
    x = _clips(3)
    emb = model.encode_units(x)
    assert emb.shape == (3, 512) and emb.dtype == torch.float32
    m5c = model.encode_mixed_5c(x)
    assert m5c.shape == (3, 1024)
    torch.testing.assert_close(emb, m5c @ sd["fc.weight"].T + sd["fc.bias"], atol=1e-4, rtol=1e-4)
    assert torch.equal(emb, model.encode_units(x))
    singles = torch.cat([model.encode_units(x[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(singles, emb, atol=1e-5, rtol=1e-5)
    pooled = model.pool(emb.numpy(), np.array([1, 1, 0], bool))
    np.testing.assert_allclose(pooled, emb.numpy()[:2].mean(0), rtol=1e-6)  # plain mean, not normalised


def test_milnce_text_by_hand(milnce):
    sd, model = milnce
    tf = model.encode_text(["A DOG runs on the beach!", "nothing known", "it's " * 20])
    assert tf.pooled.shape == (3, 512) and tf.tokens is None
    ids = model.tokenizer(["A DOG runs on the beach!", "nothing known", "it's " * 20])
    assert ids.shape == (3, 16)
    assert ids[0, :6].tolist() == [1, 2, 3, 4, 5, 6] and not ids[0, 6:].any()  # lower-cased, id = position + 1
    assert not ids[1].any() and (ids[2] == 11).all()
    E, W1, b1 = sd["text_module.word_embd.weight"], sd["text_module.fc1.weight"], sd["text_module.fc1.bias"]
    W2, b2 = sd["text_module.fc2.weight"], sd["text_module.fc2.bias"]
    for i in range(3):
        h = torch.relu(E[ids[i]] @ W1.T + b1).max(dim=0).values  # padding rows take part in the max
        np.testing.assert_allclose(tf.pooled[i], (h @ W2.T + b2).numpy(), atol=1e-4)


def test_vt_twins_format(tmp_path, monkeypatch):
    monkeypatch.setenv("VTPIPE_CONFIGS", str(bc.make_configs_dir(tmp_path)))
    sd = bc.s3d_state_dict(space_to_depth=False, seed=4)
    w2v = sd.pop("text_module.word_embd.weight")
    torch.save({f"module.{k}": v for k, v in sd.items()}, tmp_path / "pretrained.pth.tar")
    torch.save(w2v, tmp_path / "word2vec.pth")
    d = bc.write_word_dict(tmp_path / "dict.npy", WORDS)
    files = {"checkpoint": str(tmp_path / "pretrained.pth.tar"), "dict": str(d), "word2vec": str(tmp_path / "word2vec.pth")}
    model = load_model("vt-twins", weights=files)
    assert model.space_to_depth is False
    assert model.encode_units(_clips(1)).shape == (1, 512)
    ids = model.tokenizer(["Dog dog"])
    assert ids.shape == (1, 30) and ids[0, :2].tolist() == [10, 2]  # case kept
    torch.testing.assert_close(model.net.text_module.word_embd.weight, w2v)
    with pytest.raises(VtpipeError, match="missing keys.*text_module.word_embd.weight"):
        load_model("vt-twins", weights={"checkpoint": files["checkpoint"]})


def test_strict_and_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("VTPIPE_CONFIGS", str(bc.make_configs_dir(tmp_path)))
    sd = bc.s3d_state_dict(True)
    del sd["mixed_4c.gating_b2.fc.bias"]
    sd["mixed_4c.extra.weight"] = torch.zeros(1)
    for k in [k for k in sd if k.endswith("num_batches_tracked")]:
        del sd[k]  # optional: old files lack them
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(VtpipeError) as err:
        load_model("s3d-howto100m", weights=str(tmp_path / "bad.pth"))
    msg = str(err.value)
    assert "missing keys (1: mixed_4c.gating_b2.fc.bias)" in msg and "unexpected keys (1: mixed_4c.extra.weight)" in msg
    bad = {"conv1.conv1.weight": torch.zeros(64, 3, 3, 5, 5)}
    torch.save(bad, tmp_path / "bad2.pth")
    with pytest.raises(VtpipeError, match="conv1.conv1.weight has shape"):
        load_model("s3d-howto100m", weights=str(tmp_path / "bad2.pth"))
    with pytest.raises(VtpipeError, match="checkpoint"):
        load_model("s3d-howto100m")
    with pytest.warns(UserWarning, match="RANDOM"):
        m = load_model("s3d-howto100m", allow_random=True)
    with pytest.raises(VtpipeError, match="dict"):
        m.encode_text(["a dog"])


def test_registered_configs():
    for name, words, lower in (("s3d-howto100m", 16, True), ("vt-twins", 30, False), ("vt-twins-msrvtt", 30, False)):
        info = model_config(name)
        assert info.family == "s3d" and info.embed_dim == 512 and info.unit == "clip"
        assert info.params["max_words"] == words and info.params["lowercase"] is lower
        # the loaders' input: centre square, 224 x 224, value / 255 (tests/test_s3d_clip_goldens.py)
        assert info.preprocess == {"crop": "square", "size": 224, "flags": "bilinear"}
