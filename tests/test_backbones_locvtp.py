"""LocVTP: C3D layer table, projector by hand, DistilBERT vs a numpy reference, WordPiece, release checkpoint."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import backbone_checkpoints as bc
from stages.backbones.c3d import C3D
from stages.backbones.distilbert import DistilBert, DistilBertConfig, WordPieceTokenizer, basic_tokenize
from stages.backbones.locvtp import LocVTPNet, ProjectionHead
from stages.backbones.registry import load_model, model_config
from stages.contract.errors import VtpipeError

torch.set_num_threads(min(2, torch.get_num_threads()))


def test_c3d_layer_table():
    with torch.device("meta"):
        net = C3D()
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == bc.c3d_shapes()
    assert list(net.state_dict()) == list(bc.c3d_shapes())  # same order as the release


def test_full_locvtp_key_table():
    with torch.device("meta"):
        net = LocVTPNet()
    got = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert got == bc.locvtp_shapes(training_heads=False)


def test_c3d_pool5_is_8192_and_fc6_relu():
    torch.manual_seed(0)
    net = C3D().eval()
    x = torch.randn(1, 3, 16, 112, 112)
    with torch.no_grad():
        flat = net.pool5_features(x)
        feat = net.features(x)
    assert flat.shape == (1, 8192) and feat.shape == (1, 4096)
    torch.testing.assert_close(feat, torch.relu(flat @ net.fc6.weight.T + net.fc6.bias))
    with pytest.raises(ValueError, match="16, 112, 112"):
        net.features(torch.zeros(1, 3, 8, 112, 112))


def _gelu(x):
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def test_projector_by_hand():
    torch.manual_seed(3)
    head = ProjectionHead(4096, 256).eval()
    for p in head.layer_norm.parameters():
        torch.nn.init.normal_(p, 1.0, 0.1)
    x = np.random.default_rng(0).standard_normal(4096).astype(np.float64)
    W1, b1 = head.projection.weight.detach().double().numpy(), head.projection.bias.detach().double().numpy()
    W2, b2 = head.fc.weight.detach().double().numpy(), head.fc.bias.detach().double().numpy()
    g, b = head.layer_norm.weight.detach().double().numpy(), head.layer_norm.bias.detach().double().numpy()
    h = W1 @ x + b1
    y = h + (W2 @ _gelu(h) + b2)
    want = g * (y - y.mean()) / np.sqrt(y.var() + 1e-5) + b
    with torch.no_grad():
        got = head(torch.from_numpy(x).float()[None])[0].double().numpy()
    np.testing.assert_allclose(got, want, atol=2e-5)


def _ln(x, w, b, eps=1e-12):
    return w * (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps) + b


def numpy_distilbert(sd, ids, mask, heads):
    """DistilBERT forward written out in numpy (float64) from the state dict."""
    P = {k: v.double().numpy() for k, v in sd.items()}
    x = P["embeddings.word_embeddings.weight"][ids] + P["embeddings.position_embeddings.weight"][: ids.shape[1]]
    x = _ln(x, P["embeddings.LayerNorm.weight"], P["embeddings.LayerNorm.bias"])
    i = 0
    while f"transformer.layer.{i}.attention.q_lin.weight" in P:
        p = f"transformer.layer.{i}."
        lin = lambda t, n: t @ P[p + n + ".weight"].T + P[p + n + ".bias"]  # noqa: E731
        b, n, d = x.shape
        hd = d // heads
        q = lin(x, "attention.q_lin").reshape(b, n, heads, hd).transpose(0, 2, 1, 3) / math.sqrt(hd)
        k = lin(x, "attention.k_lin").reshape(b, n, heads, hd).transpose(0, 2, 1, 3)
        v = lin(x, "attention.v_lin").reshape(b, n, heads, hd).transpose(0, 2, 1, 3)
        s = q @ k.transpose(0, 1, 3, 2)
        s = np.where(mask[:, None, None, :], s, -1e30)
        a = np.exp(s - s.max(-1, keepdims=True))
        a = a / a.sum(-1, keepdims=True)
        ctx = (a @ v).transpose(0, 2, 1, 3).reshape(b, n, d)
        x = _ln(lin(ctx, "attention.out_lin") + x, P[p + "sa_layer_norm.weight"], P[p + "sa_layer_norm.bias"])
        f = lin(_gelu(lin(x, "ffn.lin1")), "ffn.lin2")
        x = _ln(f + x, P[p + "output_layer_norm.weight"], P[p + "output_layer_norm.bias"])
        i += 1
    return x


def test_distilbert_matches_numpy_reference():
    cfg = DistilBertConfig(vocab_size=200, dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=16)
    sd = bc.random_state_dict(bc.distilbert_shapes(32, 2, 64, 200, 16), seed=1)
    model = DistilBert(cfg).eval()
    model.load_state_dict(sd, strict=True)
    ids = torch.tensor([[101, 5, 9, 102, 0, 0], [101, 7, 8, 9, 10, 102]])
    mask = ids != 0
    mask[0, 3] = True
    with torch.no_grad():
        got = model(ids, mask).double().numpy()
    want = numpy_distilbert(sd, ids.numpy(), mask.numpy(), heads=4)
    np.testing.assert_allclose(got[0, :4], want[0, :4], atol=1e-4)
    np.testing.assert_allclose(got[1], want[1], atol=1e-4)


def test_wordpiece_tokenizer(tmp_path):
    tok = WordPieceTokenizer.from_file(bc.write_vocab(tmp_path / "vocab.txt"), max_length=8)
    assert basic_tokenize("Hello,  WORLD!\tCafé") == ["hello", ",", "world", "!", "cafe"]
    vocab = {t: i for i, t in enumerate(bc.TINY_VOCAB)}
    assert tok.wordpiece("unaffable") == [vocab["un"], vocab["##aff"], vocab["##able"]]
    assert tok.wordpiece("playing") == [vocab["playing"]]  # longest match first
    assert tok.wordpiece("xyz") == [tok.unk_id]
    ids, mask = tok(["A man is playing the guitar.", "hello"])
    want0 = [101] + [vocab[w] for w in ["a", "man", "is", "playing", "the", "guitar"]] + [102]  # 8 = max_length
    assert ids[0].tolist() == want0 and mask[0].all()
    assert ids[1].tolist() == [101, vocab["hello"], 102, 0, 0, 0, 0, 0]
    assert mask[1].tolist() == [True] * 3 + [False] * 5


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """A LocVTP checkpoint in the release layout (full C3D, reduced-width DistilBERT) + a vocab file."""
    d = tmp_path_factory.mktemp("locvtp")
    sd = bc.random_state_dict(bc.locvtp_shapes(bc.TINY_DISTILBERT), seed=5)
    ckpt = bc.write_locvtp_checkpoint(d / "model_10e.pth", sd)
    vocab = bc.write_vocab(d / "vocab.txt")
    root = bc.make_configs_dir(d)
    bc.tiny_model_config(root, "locvtp", "locvtp-tiny", params=dict(bc.TINY_DISTILBERT))
    return {"ckpt": ckpt, "vocab": vocab, "configs": root, "sd": sd}


@pytest.fixture()
def tiny(release, monkeypatch):
    monkeypatch.setenv("VTPIPE_CONFIGS", str(release["configs"]))
    return load_model("locvtp-tiny", weights={"checkpoint": str(release["ckpt"]), "vocab": str(release["vocab"])})


def test_release_checkpoint_video(tiny):
    clips = torch.rand(2, 3, 16, 112, 112, generator=torch.Generator().manual_seed(0)) * 2 - 1
    a = tiny.encode_units(clips)
    assert a.shape == (2, 256) and a.dtype == torch.float32 and not tiny.random_weights
    assert torch.equal(a, tiny.encode_units(clips))  # eval mode: no dropout, deterministic
    b = torch.cat([tiny.encode_units(clips[i : i + 1]) for i in range(2)])
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert not tiny.net.training


def test_release_checkpoint_text(tiny, release):
    tf = tiny.encode_text(["A man is playing the guitar.", "a dog runs on the beach", ""])
    assert tf.pooled.shape == (3, 256) and tf.pooled.dtype == np.float32 and tf.tokens is None
    ids, mask = tiny.tokenizer(["a dog runs on the beach"])
    sd = {k[len("textEncoder.model."):]: v for k, v in release["sd"].items() if k.startswith("textEncoder.model.")}
    cls = numpy_distilbert(sd, ids.numpy(), mask.numpy(), heads=2)[:, 0]
    with torch.no_grad():
        want = tiny.net.textProjector(torch.from_numpy(cls).float())
    np.testing.assert_allclose(tf.pooled[1], want[0].numpy(), atol=1e-4)
    np.testing.assert_allclose(tiny.encode_text(["a dog runs on the beach"]).pooled[0], tf.pooled[1], atol=1e-5)
    np.testing.assert_array_equal(tiny.encode_text(["a dog"]).pooled, tiny.encode_text(["a dog"]).pooled)


def test_strict_errors_name_keys(release, tmp_path, monkeypatch):
    monkeypatch.setenv("VTPIPE_CONFIGS", str(release["configs"]))
    shapes = bc.locvtp_shapes(bc.TINY_DISTILBERT)
    small = {k: v for k, v in shapes.items() if "embednet" not in k or k.startswith("videoEncoder.embednet.conv1.")}
    sd = bc.random_state_dict(small)
    sd["videoEncoder.embednet.conv1.weight"] = torch.zeros(64, 3, 3, 3, 7)
    sd["someNewHead.weight"] = torch.zeros(2)
    path = bc.write_locvtp_checkpoint(tmp_path / "model_1e.pth", sd)
    with pytest.raises(VtpipeError) as err:
        load_model("locvtp-tiny", weights={"checkpoint": str(path)})
    msg = str(err.value)
    assert "missing keys (20: videoEncoder.embednet.conv2.bias, videoEncoder.embednet.conv2.weight" in msg
    assert "someNewHead.weight" in msg and "unexpected keys" in msg
    assert "conv1.weight (file (64, 3, 3, 3, 7), model (64, 3, 3, 3, 3))" in msg
    assert "shiftpredict" not in msg  # training-only heads are ignored by name


def test_vocab_needed_for_text(release, monkeypatch):
    monkeypatch.setenv("VTPIPE_CONFIGS", str(release["configs"]))
    m = load_model("locvtp-tiny", weights={"checkpoint": str(release["ckpt"])})
    with pytest.raises(VtpipeError, match="vocab"):
        m.encode_text(["a dog"])
    with pytest.warns(UserWarning):
        r = load_model("locvtp-tiny", allow_random=True)
    assert r.random_weights and r.encode_text(["a dog"]).pooled.shape == (1, 256)


def test_registered_config():
    info = model_config("locvtp")
    assert info.family == "locvtp" and info.embed_dim == 256 and info.unit == "clip"
    assert info.sampling["policy"] == "locvtp" and set(info.files) == {"checkpoint", "vocab"}
    from stages.backbones.checkpoints import preprocess_from_config

    pp = preprocess_from_config(info.preprocess)
    assert (pp.size, pp.resize, pp.crop, pp.mean, pp.std) == (112, "short", "center", (0.5,) * 3, (0.5,) * 3)
