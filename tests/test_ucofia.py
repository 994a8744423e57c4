"""UCoFiA against the reference code's recorded outputs (Ziyang412/UCoFiA 6098be2, eval_t2v), and a t2v run
with random ucofia weights through the pipeline, SK-norm per level.

tests/golden/ucofia.npz comes from scripts/golden/ucofia_reference.py: the reference UCoFiA model (on a small
CLIP with every key name of the release) loaded with seeded weights written by backbone_checkpoints.py;
its video rows (frame features + selected tokens), caption features, three level scores, per-level SK-norm
biases and their average, end to end and on seeded features at a larger size.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import backbone_checkpoints as bc
from conftest import REPO, run_cli
from stages.backbones.registry import load_model
from stages.retrieval.ucofia_similarity import MatrixScorer, sinkhorn_bias, ucofia_levels, ucofia_scores

torch.set_num_threads(min(2, torch.get_num_threads()))
GOLD = Path(__file__).parent / "golden" / "ucofia.npz"
TOL = 1e-4
TINY_PP = {"size": 64, "resize": "short", "crop": "center", "interpolation": "bicubic", "stats": "clip"}


@pytest.fixture(scope="module")
def gold():
    data = np.load(GOLD)
    return {k: data[k] for k in data.files}, json.loads(str(data["recipe"]))


@pytest.fixture()
def tiny(tmp_path, monkeypatch, gold):
    _, recipe = gold
    root = bc.make_configs_dir(tmp_path)
    monkeypatch.setenv("VTPIPE_CONFIGS", str(root))
    bc.tiny_model_config(root, "ucofia", "ucofia-tiny", embed_dim=bc.TINY_C4C_ARCH["embed_dim"], preprocess=TINY_PP,
                         params={"arch": None, "arch_cfg": bc.TINY_C4C_ARCH})
    sd = bc.ucofia_state_dict(bc.TINY_C4C_ARCH, recipe["weight_seed"], recipe["max_words"], recipe["max_frames"])
    path = bc.write_raw_state_dict(tmp_path / "pytorch_model.bin.4", sd)
    return load_model("ucofia-tiny", weights=str(path)), path


def _close(got, want, what):
    err = float(np.abs(np.asarray(got, np.float64) - np.asarray(want, np.float64)).max())
    assert err <= TOL, f"{what}: max abs diff {err:.2e}"
    return err


def test_key_table_matches_reference(tiny, gold):
    model, _ = tiny
    _, recipe = gold
    got = {k: list(v.shape) for k, v in model.net.state_dict().items()}
    assert got == recipe["key_table"]


def test_features_and_levels_match_reference(tiny, gold):
    model, _ = tiny
    g, recipe = gold
    tok = model.tokenizer
    np.testing.assert_array_equal(tok(recipe["captions"]).numpy(), g["token_ids"])
    img = bc.TINY_C4C_ARCH["vision_cfg"]["image_size"]
    videos = torch.randn(2, 12, 3, img, img, generator=torch.Generator().manual_seed(recipe["input_seed"]))
    mask = np.ones((2, 12), bool)
    mask[1, -3:] = False
    rows, rmask = [], []
    for i in range(2):
        r, m, t = model.encode_video(videos[i].numpy(), mask[i], np.arange(12.0))
        assert r.shape == (60, 128) and m.shape == t.shape == (60,)
        rows.append(r)
        rmask.append(m)
    rows = np.stack(rows)
    assert not rmask[1][9:12].any() and rmask[1][:9].all() and not rmask[1][12 + 36:].any()
    _close(rows[:, :12], g["video_frames"], "frame features")
    _close(rows[:, 12:], g["video_pixels"], "selected tokens")
    assert np.abs(g["video_pixels"][0] - g["video_pixels"][1]).max() > 0.1
    tf = model.encode_text(recipe["captions"])
    _close(tf.pooled, g["text_sentence"], "sentence features")
    _close(tf.tokens, g["text_words"], "word features")
    assert tf.tokens.shape[1] == 32 and tf.mask.all()
    bank = model.encode_text(recipe["bank"])
    pooled = np.stack([model.pool(rows[i], rmask[i]) for i in range(2)])
    head = model.head()
    assert abs(float(head["logit_scale"]) - 100.0) < 1e-3
    lv = ucofia_levels(tf.pooled, tf.tokens, pooled, rows[:, :12], rows[:, 12:], head)
    _close(lv, g["e2e_levels"], "level scores")
    blv = ucofia_levels(bank.pooled, bank.tokens, pooled, rows[:, :12], rows[:, 12:], head)
    res = ucofia_scores(lv, blv)
    _close(res["biases"], g["e2e_biases"], "SK-norm biases")
    _close(res["scores"], g["e2e_scores"], "SK-normed average")


def test_similarity_at_scale_matches_reference(tiny, gold):
    """Seeded features (10 captions, 8 videos, two with padded frames, a 40-caption bank) through vtpipe's
    pooling (seqTransf + meanP), level scores, per-level SK-norm and average, in small blocks."""
    model, _ = tiny
    g, _ = gold
    pooled = np.stack([model.pool(np.concatenate([g["feat_frames"][i], g["feat_pixels"][i]]),
                                  np.concatenate([g["feat_mask"][i], np.repeat(g["feat_mask"][i], 4)]))
                       for i in range(len(g["feat_frames"]))])
    head = model.head()
    lv = ucofia_levels(g["feat_sentence"], g["feat_words"], pooled, g["feat_frames"], g["feat_pixels"], head,
                       max_pair_floats=32 * 48 * 3)  # forces 1-video x 3-caption blocks
    errs = [_close(lv[k], g["feat_levels"][k], f"level {k}") for k in range(3)]
    blv = ucofia_levels(g["feat_bank_sentence"], g["feat_bank_words"], pooled, g["feat_frames"], g["feat_pixels"], head)
    res = ucofia_scores(lv, blv)
    _close(res["biases"], g["feat_biases"], "biases")
    _close(res["scores"], g["feat_scores"], "scores")
    assert max(errs) < TOL
    # the bias moves the ranking on this data (SK-norm is not a no-op here)
    assert (np.argmax(res["scores"], 1) != np.argmax(lv.mean(0), 1)).any() or \
        np.abs(res["biases"] - res["biases"].mean(1, keepdims=True)).max() > 0.05


def test_sinkhorn_bias_by_hand():
    """Hand-worked: two videos, bank scores [[0, ln 2], [0, 0]] -> K = [[1/2, 1], [1/2, 1/2]] (after - max)."""
    b = np.log(np.array([[1.0, 2.0], [1.0, 1.0]], np.float32))
    k = np.exp(b - b.max())
    col = 1 / k.sum(0)
    for _ in range(4):
        a = 1 / (k @ col)
        col = 1 / (a @ k)
    want = np.log(col) - b.max()
    want = want - np.log(np.exp(want).sum())
    np.testing.assert_allclose(sinkhorn_bias(b), want, atol=1e-6)
    assert sinkhorn_bias(b)[1] < sinkhorn_bias(b)[0]  # the hub video (scored high by the bank) is pushed down


def test_matrix_scorer_both_directions():
    s = np.arange(12, dtype=np.float32).reshape(3, 4)
    m = MatrixScorer(s)
    np.testing.assert_array_equal(m(m.ids(m.TEXT)[[2, 0]], m.ids(m.VIDEO)[[1, 3]]), s[[2, 0]][:, [1, 3]])
    np.testing.assert_array_equal(m(m.ids(m.VIDEO)[[3]], m.ids(m.TEXT)), s[:, [3]].T)


def test_similarity_mode_rules(tiny):
    from stages.contract.errors import ConfigError
    from stages.evaluate import similarity_mode

    assert similarity_mode("ucofia-tiny")[0] == "ucofia"
    assert similarity_mode("ucofia-tiny", "dp")[0] == "dp"
    with pytest.raises(ConfigError, match="ucofia"):
        similarity_mode("clip4clip-seqtransf", "ucofia")
    with pytest.raises(ConfigError, match="ucofia"):
        similarity_mode("ucofia-tiny", "wti")


def test_t2v_run_with_random_weights_through_sk_norm(sample, tmp_path):
    """vtpipe run (extract -> concat -> evaluate) on the sample with random tiny ucofia weights: 60 rows per
    video, word features for captions and bank, three levels, SK-norm per level with the training bank."""
    root = bc.make_configs_dir(tmp_path)
    bc.tiny_model_config(root, "ucofia", "ucofia-tiny", embed_dim=bc.TINY_C4C_ARCH["embed_dim"], preprocess=TINY_PP,
                         params={"arch": None, "arch_cfg": bc.TINY_C4C_ARCH})
    train = json.loads((REPO / "data/sample/train_data.json").read_text())
    bank = tmp_path / "train_small.json"
    bank.write_text(json.dumps({"sentences": train["sentences"][:60]}))
    y = tmp_path / "ucofia.yaml"
    y.write_text(f"name: ucofia-e2e\nstages: [extract, concat, evaluate]\ninput: {{videos: {sample['videos']}}}\n"
                 f"dataset: {{captions: {sample['captions']}, train_captions: {bank}, train_format: msrvtt-json}}\n"
                 "model: {name: ucofia-tiny, allow_random: true}\nextract: {shards: 1, decode_workers: 1}\n"
                 "evaluate: {tasks: [t2v, v2t], rerank: sk-norm, similarity: ucofia}\n")
    run_cli("run", str(y), "-o", str(tmp_path / "run"), env={"VTPIPE_CONFIGS": str(root)})
    m = json.loads((tmp_path / "run/eval/ucofia-tiny/t2v/metrics.json").read_text())
    assert m["similarity"] == "ucofia" and m["rerank"] == "sk-norm" and m["random_weights"]
    assert m["similarity_info"]["bank_captions"] == 60 and "per level" in m["similarity_info"]["sk_norm"]
    assert m["captions"] == 24 and 0 <= m["R@1"] <= 100
    from stages.features.store import TextStore, VideoStore

    with VideoStore(tmp_path / "run/features/ucofia-tiny.h5") as vs:
        assert (np.diff(vs.offsets) == 60).all()
    with TextStore(tmp_path / "run/features/ucofia-tiny.bank.text.h5") as ts:
        assert ts.has_tokens and ts.tokens()[0].shape[1:] == (32, 128)
    assert (tmp_path / "run/eval/ucofia-tiny/v2t/metrics.json").is_file()


def test_stage_scores_with_the_checkpoints_head_and_allow_list(tiny, tmp_path):
    """The evaluate stage (rerank none: the plain mean of the three levels) reloads the head from a
    checkpoint that also holds a trainer's argparse.Namespace: refused with the type named, then allowed."""
    import argparse

    from stages.contract.errors import VtpipeError
    from stages.evaluate import STAGE, run_task
    from stages.retrieval import ranks_from_scores
    from stages.features.store import VideoStoreWriter, write_text_store
    from stages.contract.tasks import Task

    model, path = tiny
    sd = torch.load(path)
    ckpt = tmp_path / "with_args.bin"
    torch.save({"state_dict": sd, "args": argparse.Namespace(lr=1e-4, max_words=32)}, ckpt)
    rng = np.random.default_rng(0)
    n_real = [12, 5, 9, 12]
    w = VideoStoreWriter(tmp_path / "v.h5", 128, {"model": "ucofia-tiny"})
    rows = []
    for i, n in enumerate(n_real):
        mask = np.arange(12) < n
        r, m, t = model.encode_video(rng.standard_normal((12, 3, 64, 64)).astype(np.float32), mask, np.arange(12.0))
        rows.append(r)
        w.add(f"v{i}", r, t, m, model.pool(r, m))
    w.close()
    caps = ["a red ball", "a dog runs", "two people talk", "a car in the rain", "a red car"]
    c2v = np.array([0, 1, 2, 3, 3])
    tf = model.encode_text(caps)
    write_text_store(tmp_path / "t.h5", [f"c{i}" for i in range(5)], [f"v{v}" for v in c2v], caps, tf.pooled,
                     {"model": "ucofia-tiny"}, tokens=tf.tokens, token_mask=tf.mask)
    params = {"task": "retrieval", "directions": ["t2v"], "features": str(tmp_path / "v.h5"),
              "text_features": str(tmp_path / "t.h5"), "bank_features": None, "sigs": [], "rerank": "none",
              "rerank_params": {}, "ties": "optimistic", "median": "numpy", "ks": [1, 5, 10],
              "v2t_gallery": "captions", "candidates": "exact", "candidates_k": 10, "index_dir": None,
              "out_dir": str(tmp_path / "ev"), "dataset": "tiny", "similarity": "auto", "model": "ucofia-tiny",
              "weights": str(ckpt), "allow_random": False}
    with pytest.raises(VtpipeError, match="--allow-global argparse.Namespace"):
        run_task(Task(STAGE, "retrieval", str(tmp_path / "ev"), params))
    run_task(Task(STAGE, "retrieval", str(tmp_path / "ev"), {**params, "allow_globals": ["argparse.Namespace"]}))
    rows = np.stack(rows)
    pooled = np.stack([model.pool(rows[i], np.concatenate([np.arange(12) < n, np.repeat(np.arange(12) < n, 4)]))
                       for i, n in enumerate(n_real)])
    want = ucofia_levels(tf.pooled, tf.tokens, pooled, rows[:, :12], rows[:, 12:], model.head()).mean(0)
    got = np.loadtxt(tmp_path / "ev/t2v/ranks.csv", delimiter=",", skiprows=1, usecols=2) - 1
    np.testing.assert_array_equal(got, ranks_from_scores(want, c2v))
    m = json.loads((tmp_path / "ev/t2v/metrics.json").read_text())
    assert m["similarity"] == "ucofia" and m["rerank"] == "none" and m["similarity_info"]["sk_norm"] is None
