"""CLIP4Clip (meanP, seqTransf) and DRL (TI, WTI): checkpoint layout, temporal head and weight heads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import backbone_checkpoints as bc
from stages.backbones.clip4clip import token_wise_scores
from stages.backbones.registry import load_model, model_config
from stages.contract.errors import VtpipeError

torch.set_num_threads(min(2, torch.get_num_threads()))
W = bc.TINY_C4C_ARCH["embed_dim"]


@pytest.fixture()
def configs(tmp_path, monkeypatch):
    root = bc.make_configs_dir(tmp_path)
    monkeypatch.setenv("VTPIPE_CONFIGS", str(root))
    for base in ("clip4clip-meanp", "clip4clip-seqtransf", "drl-wti", "drl-ti"):
        bc.tiny_model_config(root, base, f"{base}-tiny", embed_dim=W, params={"arch": None, "arch_cfg": bc.TINY_C4C_ARCH})
    return root


def _write(tmp_path, name, **kw):
    sd = bc.clip4clip_state_dict(bc.TINY_C4C_ARCH, seed=7, **kw)
    return sd, bc.write_raw_state_dict(tmp_path / name, sd)


def _ln(x, w, b, eps=1e-12):
    u = x.mean(-1, keepdim=True)
    s = ((x - u) ** 2).mean(-1, keepdim=True)
    return w * (x - u) / torch.sqrt(s + eps) + b


def reference_seq_transf(sd, frames: torch.Tensor, mask: torch.Tensor, layers=4) -> torch.Tensor:
    """CLIP4Clip's seqTransf for one video, written out with plain tensor ops from the state dict."""
    t, d = frames.shape
    heads = d // 64
    x = frames + sd["frame_position_embeddings.weight"][:t]
    key_bias = (1.0 - mask.float()) * -1000000.0  # [T] on the keys
    for i in range(layers):
        p = f"transformerClip.resblocks.{i}."
        h = _ln(x, sd[p + "ln_1.weight"], sd[p + "ln_1.bias"])
        qkv = h @ sd[p + "attn.in_proj_weight"].T + sd[p + "attn.in_proj_bias"]
        q, k, v = qkv.split(d, dim=-1)
        hd = d // heads
        outs = []
        for j in range(heads):
            sl = slice(j * hd, (j + 1) * hd)
            att = (q[:, sl] / hd**0.5) @ k[:, sl].T + key_bias[None, :]
            outs.append(torch.softmax(att, dim=-1) @ v[:, sl])
        x = x + torch.cat(outs, -1) @ sd[p + "attn.out_proj.weight"].T + sd[p + "attn.out_proj.bias"]
        h = _ln(x, sd[p + "ln_2.weight"], sd[p + "ln_2.bias"])
        h = h @ sd[p + "mlp.c_fc.weight"].T + sd[p + "mlp.c_fc.bias"]
        h = h * torch.sigmoid(1.702 * h)
        x = x + h @ sd[p + "mlp.c_proj.weight"].T + sd[p + "mlp.c_proj.bias"]
    return x + frames


def _meanp(frames, mask):
    f = frames[mask]
    f = f / np.linalg.norm(f, axis=1, keepdims=True)
    v = f.mean(0)
    return v / np.linalg.norm(v)


def test_meanp_checkpoint(configs, tmp_path):
    sd, path = _write(tmp_path, "pytorch_model.bin.4", seq_transf=False)
    model = load_model("clip4clip-meanp-tiny", weights=str(path))
    ref = bc.clip_module(bc.TINY_C4C_ARCH)
    ref.load_state_dict({k[5:]: v for k, v in sd.items() if k.startswith("clip.")})
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = ref.encode_image(x)
    feats = model.encode_units(x)
    torch.testing.assert_close(feats, want, atol=1e-5, rtol=1e-5)
    mask = np.array([1, 1, 0], bool)
    np.testing.assert_allclose(model.pool(feats.numpy(), mask), _meanp(feats.numpy(), mask), atol=1e-6)
    tf = model.encode_text(["a man is " + "very " * 40 + "happy"])
    assert tf.tokens.shape == (1, 32, W) and tf.mask.all()  # max_words 32


def test_seqtransf_matches_reference(configs, tmp_path):
    sd, path = _write(tmp_path, "pytorch_model.bin.2", seq_transf=True)
    model = load_model("clip4clip-seqtransf-tiny", weights=str(path))
    g = torch.Generator().manual_seed(1)
    frames = torch.randn(6, W, generator=g)
    mask = torch.tensor([1, 1, 1, 1, 0, 0], dtype=torch.bool)
    got = model.aggregate_frames(frames.numpy(), mask.numpy())
    want = reference_seq_transf(sd, frames, mask)
    np.testing.assert_allclose(got, want.numpy(), atol=1e-4, rtol=1e-4)
    # trailing padding is invisible to the real frames: same as aggregating the 4 real frames alone
    alone = model.aggregate_frames(frames[:4].numpy())
    np.testing.assert_allclose(got[:4], alone, atol=1e-4, rtol=1e-4)
    pooled = model.pool(frames.numpy(), mask.numpy())
    np.testing.assert_allclose(pooled, _meanp(want.numpy(), mask.numpy()), atol=1e-5)
    assert pooled.shape == (W,) and pooled.dtype == np.float32


def test_seqtransf_batched_masks_are_per_video(configs, tmp_path):
    _, path = _write(tmp_path, "best.pth", seq_transf=True)
    model = load_model("clip4clip-seqtransf-tiny", weights=str(path))
    g = torch.Generator().manual_seed(2)
    frames = torch.randn(3, 5, W, generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0]], dtype=torch.bool)
    batched = model.aggregate_frames_batch(frames, mask)
    for i in range(3):
        one = model.aggregate_frames(frames[i].numpy(), mask[i].numpy())
        np.testing.assert_allclose(batched[i][mask[i].numpy()], one[mask[i].numpy()], atol=1e-4, rtol=1e-4)
    a = model.aggregate_frames(frames[0].numpy())
    np.testing.assert_array_equal(a, model.aggregate_frames(frames[0].numpy()))  # deterministic


def test_drl_wti_heads_and_scores(configs, tmp_path):
    sd, path = _write(tmp_path, "pytorch_model.bin.0", seq_transf=True, wti=True)
    bc.write_raw_state_dict(tmp_path / "ddp.bin", sd, ddp=True)
    model = load_model("drl-wti-tiny", weights=str(tmp_path / "ddp.bin"))  # module. prefix stripped
    tf = model.encode_text(["a dog", "a cat sits on a mat"])
    tw = model.text_token_weights(tf.tokens, tf.mask)
    # by hand: MLP(raw token) -> softmax over valid tokens
    t = torch.from_numpy(tf.tokens)
    logits = torch.relu(t @ sd["text_weight_fc.0.weight"].T + sd["text_weight_fc.0.bias"]) @ sd["text_weight_fc.2.weight"].T
    logits = (logits + sd["text_weight_fc.2.bias"]).squeeze(-1)
    for i in range(2):
        m = tf.mask[i]
        np.testing.assert_allclose(tw[i, m], torch.softmax(logits[i, m], 0).numpy(), atol=1e-6)
        assert not tw[i, ~m].any()
    frames = model.aggregate_frames_batch(torch.randn(2, 4, W), torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]]).bool())
    vmask = np.array([[1, 1, 1, 1], [1, 1, 0, 0]], bool)
    vw = model.video_frame_weights(frames, vmask)
    np.testing.assert_allclose(vw.sum(1), 1.0, atol=1e-6)
    assert not vw[1, 2:].any()
    scores = token_wise_scores(tf.tokens, tf.mask, frames, vmask, tw, vw)
    # brute force from the spec's formula: s_tv = cosine, 0 on padded pairs; max over all positions
    for a in range(2):
        for b in range(2):
            s = np.zeros((tf.tokens.shape[1], frames.shape[1]))
            for i in range(s.shape[0]):
                for j in range(s.shape[1]):
                    if tf.mask[a, i] and vmask[b, j]:
                        u, v = tf.tokens[a, i], frames[b, j]
                        s[i, j] = u @ v / (np.linalg.norm(u) * np.linalg.norm(v))
            want = 0.5 * ((tw[a] * s.max(1)).sum() + (vw[b] * s.max(0)).sum())
            assert scores[a, b] == pytest.approx(want, abs=1e-5)
    ti = token_wise_scores(tf.tokens, tf.mask, frames, vmask)
    assert ti.shape == (2, 2) and ti.dtype == np.float32


def test_drl_ti_has_no_weight_heads(configs, tmp_path):
    _, path = _write(tmp_path, "ti.bin", seq_transf=True, wti=False)
    model = load_model("drl-ti-tiny", weights=str(path))
    with pytest.raises(VtpipeError, match="no WTI weight heads"):
        model.text_token_weights(np.zeros((1, 3, W), np.float32), np.ones((1, 3), bool))


def test_layout_mismatch_names_keys(configs, tmp_path):
    _, path = _write(tmp_path, "seq.bin", seq_transf=True)
    with pytest.raises(VtpipeError) as err:
        load_model("clip4clip-meanp-tiny", weights=str(path))
    msg = str(err.value)
    assert "unexpected keys" in msg and "frame_position_embeddings.weight" in msg and "seqTransf keys: True" in msg
    _, path = _write(tmp_path, "meanp.bin", seq_transf=False)
    with pytest.raises(VtpipeError) as err:
        load_model("drl-wti-tiny", weights=str(path))
    assert "missing keys" in str(err.value) and "text_weight_fc.0.weight" in str(err.value)


def test_random_weights_and_configs(configs):
    with pytest.raises(VtpipeError, match="checkpoint"):
        load_model("drl-wti-tiny")
    with pytest.warns(UserWarning, match="RANDOM"):
        m = load_model("drl-wti-tiny", allow_random=True)
    assert m.random_weights and m.has_weight_heads
    for name, sim, inter in [("clip4clip-meanp", "meanP", "dp"), ("clip4clip-seqtransf", "seqTransf", "dp"),
                             ("drl-wti", "seqTransf", "wti"), ("drl-ti", "seqTransf", "ti")]:
        info = model_config(name)
        assert info.family == "clip4clip" and info.embed_dim == 512 and info.params["max_words"] == 32
        assert (info.params["sim_header"], info.params["interaction"]) == (sim, inter)


def test_release_head_shapes_vit_b32():
    """The ViT-B/32 layout pinned by the spec: 77x512 positions, 4 blocks of width 512, 8 heads."""
    from stages.backbones.clip4clip import Clip4ClipNet

    torch.manual_seed(0)
    clip = bc.clip_module("ViT-B-32")
    net = Clip4ClipNet(clip, "seqTransf", "wti", seq_layers=4)
    heads = {k: tuple(v.shape) for k, v in net.state_dict().items() if not k.startswith("clip.")}
    assert heads == bc.clip4clip_head_shapes(512, 4, True, True)
    assert net.transformerClip.heads == 8
