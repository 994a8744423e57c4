"""CLIP family: OpenAI TorchScript and OpenCLIP checkpoints load strictly and match open_clip itself."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import backbone_checkpoints as bc
from stages.backbones.registry import load_model, model_config
from stages.contract.errors import VtpipeError

torch.set_num_threads(min(2, torch.get_num_threads()))

CAPTIONS = ["a dog runs on the beach", "Two people, cooking pasta in a small kitchen!", ""]


@pytest.fixture()
def configs(tmp_path, monkeypatch):
    root = bc.make_configs_dir(tmp_path)
    monkeypatch.setenv("VTPIPE_CONFIGS", str(root))
    bc.tiny_model_config(
        root, "clip-vit-b-32", "clip-tiny",
        embed_dim=32, preprocess={"size": 64, "resize": "short", "crop": "center", "interpolation": "bicubic"},
        params={"arch": None, "arch_cfg": bc.TINY_CLIP_ARCH},
    )
    bc.tiny_model_config(
        root, "clip-vit-b-32", "clip-tiny-32w",
        embed_dim=32, params={"arch": None, "arch_cfg": bc.TINY_CLIP_ARCH, "max_words": 32},
    )
    return root


@pytest.fixture()
def jit_file(tmp_path):
    return bc.write_openai_jit(tmp_path / "ViT-tiny.pt", bc.TINY_CLIP_ARCH, seed=3)


def _images(n, size=64, seed=0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_openai_jit_matches_open_clip_loader(configs, jit_file):
    import open_clip

    model = load_model("clip-tiny", weights=str(jit_file), allow_torchscript=True)
    assert model.random_weights is False and model.checkpoint_format == "openai-jit"
    ref = bc.reference_clip_from_jit(jit_file)
    x = _images(4)
    with torch.no_grad():
        want_img = ref.encode_image(x)
        want_txt = ref.encode_text(open_clip.tokenize(CAPTIONS))
    got = model.encode_units(x)
    assert got.dtype == torch.float32 and got.shape == (4, 32)
    torch.testing.assert_close(got, want_img, atol=1e-5, rtol=1e-5)
    tf = model.encode_text(CAPTIONS)
    assert tf.pooled.dtype == np.float32 and tf.pooled.shape == (3, 32)
    np.testing.assert_allclose(tf.pooled, want_txt.numpy(), atol=1e-5, rtol=1e-5)


def test_text_tokens_and_mask(configs, jit_file):
    import open_clip

    model = load_model("clip-tiny", weights=str(jit_file), allow_torchscript=True)
    tf = model.encode_text(CAPTIONS)
    ids = open_clip.tokenize(CAPTIONS)
    n_real = (ids != 0).sum(dim=1).numpy()  # SOT .. EOT
    assert tf.mask.dtype == bool and tf.tokens.dtype == np.float32
    assert tf.tokens.shape == (3, n_real.max(), 32) and tf.mask.shape == (3, n_real.max())
    np.testing.assert_array_equal(tf.mask.sum(axis=1), n_real)
    for i, n in enumerate(n_real):
        assert tf.mask[i, :n].all() and not tf.mask[i, n:].any()
        np.testing.assert_array_equal(tf.tokens[i, n - 1], tf.pooled[i])  # EOT token = sentence feature
        assert not tf.tokens[i, n:].any()
    assert n_real[2] == 2  # empty caption: SOT, EOT


def test_max_words_truncates_like_clip4clip(configs, jit_file):
    model = load_model("clip-tiny-32w", weights=str(jit_file), allow_torchscript=True)
    ref = bc.reference_clip_from_jit(jit_file)
    long_caption = " ".join(f"word{i}" for i in range(60))
    tf = model.encode_text([long_caption, "short one"])
    assert tf.tokens.shape[1] == 32 and tf.mask[0].all()
    ids = model.tokenizer([long_caption])
    assert ids.shape == (1, 32) and ids[0, 0] == model.tokenizer.sot_id and ids[0, 31] == model.tokenizer.eot_id
    full = torch.zeros(1, 77, dtype=torch.long)
    full[:, :32] = ids  # the truncated sentence, padded to the full context: causal mask => same EOT feature
    with torch.no_grad():
        want = ref.encode_text(full)
    np.testing.assert_allclose(tf.pooled[:1], want.numpy(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("training", [True, False])
def test_openclip_state_dict_formats(configs, tmp_path, training):
    ref = bc.clip_module(bc.TINY_CLIP_ARCH, seed=5)
    path = bc.write_openclip_checkpoint(tmp_path / "epoch_32.pt", ref.state_dict(), training=training)
    model = load_model("clip-tiny", weights={"checkpoint": str(path)})
    assert model.checkpoint_format == "state-dict"
    x = _images(2)
    with torch.no_grad():
        want = ref.encode_image(x)
    torch.testing.assert_close(model.encode_units(x), want, atol=1e-5, rtol=1e-5)


def test_deterministic_and_batch_invariant(configs, jit_file):
    model = load_model("clip-tiny", weights=str(jit_file), allow_torchscript=True)
    x = _images(8, seed=1)
    a, b = model.encode_units(x), model.encode_units(x)
    assert torch.equal(a, b)
    singles = torch.cat([model.encode_units(x[i : i + 1]) for i in range(8)])
    torch.testing.assert_close(singles, a, atol=1e-5, rtol=1e-5)
    t1, t2 = model.encode_text(CAPTIONS), model.encode_text(CAPTIONS)
    np.testing.assert_array_equal(t1.pooled, t2.pooled)
    one = np.concatenate([model.encode_text([c]).pooled for c in CAPTIONS])
    np.testing.assert_allclose(one, t1.pooled, atol=1e-5, rtol=1e-5)
    pooled = model.pool(a.numpy(), np.array([1, 1, 1, 0, 0, 0, 0, 0], bool))
    assert pooled.shape == (32,) and abs(np.linalg.norm(pooled) - 1) < 1e-5


def test_strict_loading_names_keys(configs, tmp_path):
    sd = bc.clip_state_dict(bc.TINY_CLIP_ARCH, seed=1)
    del sd["visual.ln_post.weight"]
    sd["visual.extra_head.weight"] = torch.zeros(3)
    sd["text_projection"] = torch.zeros(128, 64)
    path = bc.write_openclip_checkpoint(tmp_path / "bad.pt", sd, training=False)
    with pytest.raises(VtpipeError) as err:
        load_model("clip-tiny", weights=str(path))
    msg = str(err.value)
    assert "missing keys" in msg and "visual.ln_post.weight" in msg
    assert "unexpected keys" in msg and "visual.extra_head.weight" in msg
    assert "shape mismatches" in msg and "text_projection" in msg and "(128, 64)" in msg


def test_not_a_checkpoint(configs, tmp_path):
    path = tmp_path / "junk.pt"
    path.write_bytes(b"not a torch file")
    with pytest.raises(VtpipeError, match="junk.pt"):
        load_model("clip-tiny", weights=str(path))


def test_missing_weights(configs):
    with pytest.raises(VtpipeError, match="checkpoint"):
        load_model("clip-tiny")
    with pytest.warns(UserWarning, match="RANDOM"):
        m1 = load_model("clip-tiny", allow_random=True)
    with pytest.warns(UserWarning):
        m2 = load_model("clip-tiny", allow_random=True)
    assert m1.random_weights is True
    x = _images(2)
    assert torch.equal(m1.encode_units(x), m2.encode_units(x))  # seeded: text and video sides agree across processes


def test_registered_configs():
    for name, dim in [("clip-vit-b-32", 512), ("clip-vit-b-16", 512), ("clip-vit-l-14", 768)]:
        info = model_config(name)
        assert info.family == "clip" and info.embed_dim == dim and info.unit == "frame"
        assert info.sampling == {"policy": "fps", "fps": 3}
        assert list(info.files) == ["checkpoint"]


def test_preprocess_matches_spec():
    from stages.backbones.base import CLIP_MEAN, CLIP_STD
    from stages.backbones.checkpoints import preprocess_from_config

    pp = preprocess_from_config(model_config("clip-vit-b-32").preprocess)
    assert (pp.size, pp.resize, pp.crop, pp.interpolation) == (224, "short", "center", "bicubic")
    assert pp.mean == CLIP_MEAN and pp.std == CLIP_STD


def test_torchscript_needs_opt_in(configs, jit_file):
    """Loading a TorchScript archive runs its code: refused unless asked for, with the fix in the message."""
    with pytest.raises(VtpipeError, match="allow-torchscript"):
        load_model("clip-tiny", weights=str(jit_file))


@pytest.mark.slow
def test_vit_b32_release_layout(tmp_path):
    """Full-size ViT-B/32 in OpenAI's TorchScript layout loads strictly (every key) and gives 512-d."""
    path = bc.write_openai_jit(tmp_path / "ViT-B-32.pt", "ViT-B-32", seed=0)
    model = load_model("clip-vit-b-32", weights=str(path), allow_torchscript=True)
    feats = model.encode_units(torch.zeros(1, 3, 224, 224))
    assert feats.shape == (1, 512) and torch.isfinite(feats).all()
    assert model.encode_text(["a cat"]).pooled.shape == (1, 512)
