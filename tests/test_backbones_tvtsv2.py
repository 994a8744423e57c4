"""TVTSv2: key table, divided space-time attention vs a token-by-token reference, CLIP text side, format."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import backbone_checkpoints as bc
from stages.backbones.registry import load_model, model_config
from stages.backbones.tvtsv2 import TVTSv2Net
from stages.contract.errors import VtpipeError

torch.set_num_threads(min(2, torch.get_num_threads()))


def test_b32_key_table():
    import open_clip

    with torch.device("meta"):
        net = TVTSv2Net(open_clip.get_model_config("ViT-B-32"), num_frames=12)
    got = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert got == bc.tvtsv2_shapes(pred_model=False)
    assert net.video_model.transformer.resblocks[0].attn.heads == 12


def _ln(x, w, b):
    return (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + 1e-5) * w + b


def _ref_attention(x, sd, p, heads, frames, mode):
    s, d = x.shape
    n = (s - 1) // frames
    hd = d // heads
    q, k, v = (x @ sd[p + "qkv.weight"].T + sd[p + "qkv.bias"]).split(d, dim=-1)
    out = torch.zeros(s, d)
    for h in range(heads):
        sl = slice(h * hd, (h + 1) * hd)
        Q, K, V = q[:, sl] * hd**-0.5, k[:, sl], v[:, sl]
        out[0, sl] = torch.softmax(Q[0] @ K.T, 0) @ V  # CLS sees everything
        for i in range(1, s):
            f, j = divmod(i - 1, n)
            if mode == "space":
                idx = [0] + [1 + f * n + m for m in range(n)]
            else:
                idx = [0] + [1 + g * n + j for g in range(frames)]
            out[i, sl] = torch.softmax(Q[i] @ K[idx].T, 0) @ V[idx]
    return out @ sd[p + "proj.weight"].T + sd[p + "proj.bias"]


def reference_video(sd, clip, heads, layers, patch):
    """One clip [3, T, H, W] -> [D_out], token by token, from the state dict."""
    _, t, hgt, wid = clip.shape
    w = sd["video_model.conv1.weight"]
    tokens = []
    for f in range(t):
        for r in range(hgt // patch):
            for c in range(wid // patch):
                pix = clip[:, f, r * patch : (r + 1) * patch, c * patch : (c + 1) * patch]
                tokens.append((w * pix[None]).sum(dim=(1, 2, 3)))
    n = (hgt // patch) * (wid // patch)
    pos = sd["video_model.positional_embedding"]
    rows = [sd["video_model.class_embedding"] + pos[0]]
    for i, tok in enumerate(tokens):
        f, j = divmod(i, n)
        rows.append(tok + pos[1 + j] + sd["video_model.temporal_embedding"][f])
    x = _ln(torch.stack(rows), sd["video_model.ln_pre.weight"], sd["video_model.ln_pre.bias"])
    for li in range(layers):
        p = f"video_model.transformer.resblocks.{li}."
        time_out = _ref_attention(_ln(x, sd[p + "ln_3.weight"], sd[p + "ln_3.bias"]), sd, p + "timeattn.", heads, t, "time")
        s = x + _ref_attention(_ln(x + time_out, sd[p + "ln_1.weight"], sd[p + "ln_1.bias"]), sd, p + "attn.", heads, t, "space")
        m = _ln(s, sd[p + "ln_2.weight"], sd[p + "ln_2.bias"]) @ sd[p + "mlp.c_fc.weight"].T + sd[p + "mlp.c_fc.bias"]
        m = m * torch.sigmoid(1.702 * m)
        x = s + m @ sd[p + "mlp.c_proj.weight"].T + sd[p + "mlp.c_proj.bias"]
    return _ln(x[0], sd["video_model.ln_post.weight"], sd["video_model.ln_post.bias"]) @ sd["video_model.proj"]


@pytest.fixture()
def tiny(tmp_path, monkeypatch):
    root = bc.make_configs_dir(tmp_path)
    monkeypatch.setenv("VTPIPE_CONFIGS", str(root))
    bc.tiny_model_config(root, "tvtsv2-b32", "tvtsv2-tiny", embed_dim=32,
                         preprocess={"size": 64, "resize": "exact", "crop": "none", "interpolation": "bilinear"},
                         params={"arch": None, "arch_cfg": bc.TINY_TVTS_ARCH})
    sd = bc.random_state_dict(bc.tvtsv2_shapes(**bc.TINY_TVTS), seed=9)
    for k in list(sd):
        if k.endswith(("class_embedding", "positional_embedding", "temporal_embedding")):
            sd[k] = sd[k] * 10 if sd[k].ndim == 2 else 0.05 * torch.randn(sd[k].shape)
    path = bc.write_tvtsv2_checkpoint(tmp_path / "tvtsv2_b32.pth", sd)
    return sd, load_model("tvtsv2-tiny", weights=str(path))


def test_video_matches_token_reference(tiny):
    sd, model = tiny
    g = torch.Generator().manual_seed(0)
    clips = torch.randn(2, 3, 3, 64, 64, generator=g)  # 3 frames, 2x2 patches
    got = model.encode_units(clips)
    assert got.shape == (2, 32) and got.dtype == torch.float32
    for i in range(2):
        want = reference_video(sd, clips[i], heads=2, layers=2, patch=32)
        torch.testing.assert_close(got[i], want, atol=1e-4, rtol=1e-4)
    assert torch.equal(got, model.encode_units(clips))
    torch.testing.assert_close(torch.cat([model.encode_units(clips[i : i + 1]) for i in range(2)]), got,
                               atol=1e-5, rtol=1e-5)
    twelve = model.encode_units(torch.randn(1, 3, 12, 64, 64, generator=g))
    assert twelve.shape == (1, 32)
    with pytest.raises(ValueError, match="temporal embedding"):
        model.encode_units(torch.zeros(1, 3, 13, 64, 64))


def test_text_is_clip_text_tower(tiny):
    import open_clip

    sd, model = tiny
    ref = bc.clip_module(bc.TINY_TVTS_ARCH)
    ref_sd = ref.state_dict()
    names = {"text_token_embedding.weight": "token_embedding.weight", "text_positional_embedding": "positional_embedding",
             "text_ln_final.weight": "ln_final.weight", "text_ln_final.bias": "ln_final.bias",
             "text_projection": "text_projection"}
    for k, v in sd.items():
        if k.startswith("text_model."):
            ref_sd["transformer." + k[len("text_model."):]] = v
        elif k in names:
            ref_sd[names[k]] = v
    ref.load_state_dict(ref_sd)
    caps = ["a person is slicing an onion", "x " * 100]
    with torch.no_grad():
        want = ref.encode_text(open_clip.tokenize(caps, context_length=77))
    tf = model.encode_text(caps)
    np.testing.assert_allclose(tf.pooled, want.numpy(), atol=1e-5, rtol=1e-5)
    assert tf.tokens.shape[1] == 77 and tf.mask[1].all()  # truncated to 77


def test_strict_errors(tiny, tmp_path):
    sd, _ = tiny
    bad = dict(sd)
    del bad["video_model.temporal_embedding"]
    bad["video_model.extra"] = torch.zeros(1)
    path = bc.write_tvtsv2_checkpoint(tmp_path / "bad.pth", bad)
    with pytest.raises(VtpipeError) as err:
        load_model("tvtsv2-tiny", weights=str(path))
    msg = str(err.value)
    assert "missing keys (1: video_model.temporal_embedding)" in msg and "unexpected keys (1: video_model.extra)" in msg
    with pytest.raises(VtpipeError, match="checkpoint"):
        load_model("tvtsv2-tiny")


def test_registered_config():
    info = model_config("tvtsv2-b32")
    assert info.family == "tvtsv2" and info.embed_dim == 512 and info.unit == "clip"
    assert info.sampling["policy"] == "tvtsv2-extract"
    from stages.backbones.base import IMAGENET_MEAN
    from stages.backbones.checkpoints import preprocess_from_config

    pp = preprocess_from_config(info.preprocess)
    assert (pp.size, pp.resize, pp.crop, pp.mean) == (224, "exact", "none", IMAGENET_MEAN)
