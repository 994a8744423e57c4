"""model.max_words: the caption length of the CLIP-family text path (CLIP4Clip DiDeMo / ActivityNet run 64)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import backbone_checkpoints as bc
from conftest import run_cli
from stages.backbones.registry import load_model
from stages.backbones.text_length import set_max_words
from stages.contract.errors import ConfigError
from stages.features.store import TextStore
from video_factory import make_counter_video

torch.set_num_threads(min(2, torch.get_num_threads()))
W = bc.TINY_C4C_ARCH["embed_dim"]
LONG = " ".join(f"the person number {i} walks to the red door and opens it slowly" for i in range(8))  # > 64 tokens
SHORT = "a dog runs on the beach"


@pytest.fixture()
def configs(tmp_path, monkeypatch):
    root = bc.make_configs_dir(tmp_path)
    monkeypatch.setenv("VTPIPE_CONFIGS", str(root))
    bc.tiny_model_config(root, "clip4clip-meanp", "c4c-tiny", embed_dim=W,
                         params={"arch": None, "arch_cfg": bc.TINY_C4C_ARCH},
                         preprocess={"size": 64, "resize": "short", "crop": "center", "interpolation": "bicubic",
                                     "backend": "pil", "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]})
    ckpt = bc.write_raw_state_dict(tmp_path / "pytorch_model.bin.4", bc.clip4clip_state_dict(bc.TINY_C4C_ARCH, seed=3, seq_transf=False))
    return root, ckpt


def test_tokenizer_keeps_start_first_tokens_and_end(configs):
    """CLIP4Clip's loaders: [start] + the first max_words - 2 BPE tokens + [end] (total_length_with_CLS =
    max_words - 1, then the end token), zero padding after."""
    from open_clip.tokenizer import SimpleTokenizer

    model = load_model("c4c-tiny", weights=str(configs[1]))
    assert model.max_words == 32  # the model YAML's params.max_words
    bpe = SimpleTokenizer()
    sot, eot = bpe.encoder["<start_of_text>"], bpe.encoder["<end_of_text>"]
    words = bpe.encode(LONG)
    assert len(words) > 80
    for n in (64, 40, 32):
        set_max_words(model, n)
        ids = model.tokenizer([LONG, SHORT])
        assert ids.shape == (2, n)
        assert ids[0].tolist() == [sot, *words[: n - 2], eot]
        short = [sot, *bpe.encode(SHORT), eot]
        assert ids[1].tolist() == short + [0] * (n - len(short))


def test_longer_text_changes_long_captions_only(configs):
    model = load_model("c4c-tiny", weights=str(configs[1]))
    f32 = model.encode_text([LONG, SHORT])
    f64 = set_max_words(model, 64).encode_text([LONG, SHORT])
    assert f32.mask[0].sum() == 32 and f64.mask[0].sum() == 64
    assert not np.allclose(f32.pooled[0], f64.pooled[0], atol=1e-4)  # the end token sees 30 more words
    np.testing.assert_allclose(f32.pooled[1], f64.pooled[1], rtol=1e-5, atol=1e-5)  # causal: unchanged


def test_refusals(configs, tmp_path):
    model = load_model("c4c-tiny", weights=str(configs[1]))
    for bad in (1, 0, "64", 3.5, True):
        with pytest.raises(ConfigError, match="max_words"):
            set_max_words(model, bad)
    with pytest.raises(ConfigError, match="exceeds"):
        set_max_words(model, 78)  # CLIP has 77 text positions
    assert set_max_words(model, None).max_words == 32
    other = load_model("shapes-tiny")
    with pytest.raises(ConfigError, match="CLIP-tokenizer models"):
        set_max_words(other, 64)


def test_pipeline_encodes_captions_with_model_max_words(configs, tmp_path):
    """`model.max_words` reaches the extract stage's caption encoding, is recorded in the text store and is
    part of the text task's fingerprint (a change re-encodes the captions, not the videos)."""
    root, ckpt = configs
    videos = tmp_path / "videos"
    make_counter_video(videos / "v0.mp4", n_frames=6, fps=3, width=64, height=48)
    caps = tmp_path / "caps.csv"
    caps.write_text(f"key,vid_key,video_id,sentence\nc0,m0,v0,{LONG}\n")
    y = tmp_path / "p.yaml"
    y.write_text(f"name: p\nstages: [extract, concat]\ninput: {{videos: {videos}}}\n"
                 f"dataset: {{format: msrvtt-jsfusion, captions: {caps}}}\n"
                 f"model: {{name: c4c-tiny, weights: {ckpt}}}\nextract: {{decode_workers: 0}}\n")
    env = {"VTPIPE_CONFIGS": str(root)}
    run_cli("run", str(y), "-o", str(tmp_path / "run"), env=env)
    text = tmp_path / "run/features/c4c-tiny.text.h5"
    with TextStore(text) as ts:
        assert ts.tokens()[1].sum() == 32 and "max_words" not in ts.attrs
        p32 = ts.pooled()
    man = tmp_path / "run/extract/c4c-tiny/_manifests"
    before = {m.stem: m.read_text() for m in man.glob("*.json")}
    run_cli("run", str(y), "-o", str(tmp_path / "run"), "--set", "model.max_words=64", "--overwrite", env=env)
    with TextStore(text) as ts:
        assert ts.tokens()[1].sum() == 64 and ts.attrs["max_words"] == 64
        assert not np.allclose(ts.pooled(), p32, atol=1e-4)
    after = {m.stem: m.read_text() for m in man.glob("*.json")}
    assert sorted(before) == sorted(after) == ["shard-00000", "text"]
    assert after["shard-00000"] == before["shard-00000"]  # the videos were not extracted again
    assert json.loads(after["text"])["fingerprint"] != json.loads(before["text"])["fingerprint"]
    bad = run_cli("run", str(y), "-o", str(tmp_path / "bad"), "--set", "model.max_words=1", env=env, check=False)
    assert bad.returncode == 2 and "max_words" in bad.stderr
