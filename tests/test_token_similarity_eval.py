"""DRL token-wise similarity (TI / WTI) in the evaluate stage, against naive loops over the spec's formula.

Spec (shared/specs/backbones.md, DRL WTI): w_t = softmax over valid tokens of MLP_t(raw token feature),
w_v likewise over valid frames with MLP_v (on the *aggregated* frames); s_tv = <norm(t), norm(v)>, 0 on
padded pairs; score = 1/2 (sum_t w_t max_v s_tv + sum_v w_v max_t s_tv); TI: uniform weights. DRL pads
captions to max_words tokens and videos to max_frames frames, and the padded pairs (s = 0) take part in
the maxima: the references below loop over that padded grid.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import backbone_checkpoints as bc
from conftest import run_cli
from stages.backbones.registry import load_model
from stages.retrieval import evaluate_retrieval, ranks_from_scores, v2t_ranks_multi_from_scores
from stages.retrieval.similarity import TokenScorer, TokenSets
from stages.features.store import VideoStoreWriter, write_text_store
from stages.contract.tasks import Task
from test_backbones_clip4clip import reference_seq_transf

torch.set_num_threads(min(2, torch.get_num_threads()))
W = bc.TINY_C4C_ARCH["embed_dim"]
MAX_WORDS, MAX_FRAMES = 32, 12  # the DRL configs' params.max_words and sampling.max_frames


# ------------------------------------------------------------------------------------------------
# naive references
# ------------------------------------------------------------------------------------------------


def naive_scores(tokens, tmask, frames, vmask, wt, wv, lt_pad, lv_pad):
    """[A, B] token-wise scores by loops over the padded grid (lt_pad x lv_pad), float64."""
    A, B = len(tokens), len(frames)
    out = np.zeros((A, B))
    for a in range(A):
        for b in range(B):
            s = np.zeros((lt_pad, lv_pad))
            for i in range(tokens.shape[1]):
                for j in range(frames.shape[1]):
                    if tmask[a, i] and vmask[b, j]:
                        u, v = tokens[a, i].astype(np.float64), frames[b, j].astype(np.float64)
                        s[i, j] = u @ v / (np.linalg.norm(u) * np.linalg.norm(v))
            w_t = np.zeros(lt_pad)
            w_t[: wt.shape[1]] = wt[a]
            w_v = np.zeros(lv_pad)
            w_v[: wv.shape[1]] = wv[b]
            out[a, b] = 0.5 * (sum(w_t[i] * s[i].max() for i in range(lt_pad))
                               + sum(w_v[j] * s[:, j].max() for j in range(lv_pad)))
    return out


def uniform(mask):
    m = mask.astype(np.float64)
    return m / m.sum(1, keepdims=True)


def mlp_softmax(sd, head, x, mask):
    """softmax over valid positions of Linear-ReLU-Linear (the state dict's `head`), by hand."""
    x = torch.as_tensor(x, dtype=torch.float64)
    h = torch.relu(x @ sd[f"{head}.0.weight"].double().T + sd[f"{head}.0.bias"].double())
    logits = (h @ sd[f"{head}.2.weight"].double().T + sd[f"{head}.2.bias"].double())[..., 0].numpy()
    out = np.zeros(logits.shape)
    for a in range(len(logits)):
        z = logits[a][mask[a]]
        e = np.exp(z - z.max())
        out[a, mask[a]] = e / e.sum()
    return out


# ------------------------------------------------------------------------------------------------
# the library scorer
# ------------------------------------------------------------------------------------------------


def _random_sets(rng, n, L, d, min_len=1):
    x = rng.standard_normal((n, L, d)).astype(np.float32)
    mask = np.arange(L)[None] < rng.integers(min_len, L + 1, n)[:, None]
    x[~mask] = 0.0
    return x, mask


@pytest.mark.parametrize("weighted", [False, True])
def test_token_scorer_matches_naive_loops(weighted):
    rng = np.random.default_rng(0)
    t, tm = _random_sets(rng, 14, 7, 8)
    v, vm = _random_sets(rng, 9, 5, 8)
    v[0, :] = 0.0
    v[0, 0] = -t[0, 0]  # one real frame, anti-parallel to caption 0's first token: negative maxima
    vm[0] = [True, False, False, False, False]
    wt = rng.random(tm.shape) * tm if weighted else uniform(tm)
    wv = rng.random(vm.shape) * vm if weighted else uniform(vm)
    wt, wv = wt / wt.sum(1, keepdims=True), wv / wv.sum(1, keepdims=True)
    for lt_pad, lv_pad in ((7, 5), (10, 6)):  # store lengths, and DRL's longer fixed padding
        want = naive_scores(t, tm, v, vm, wt, wv, lt_pad, lv_pad)
        sc = TokenScorer({0: TokenSets(t, tm, wt if weighted else None, lt_pad),
                          1: TokenSets(v, vm, wv if weighted else None, lv_pad)}, max_block_bytes=600)
        np.testing.assert_allclose(sc(sc.ids(0), sc.ids(1)), want, atol=2e-6)
        np.testing.assert_allclose(sc(sc.ids(1), sc.ids(0)), want.T, atol=2e-6)  # v2t orientation
        perm = rng.permutation(9)
        np.testing.assert_allclose(sc(sc.ids(0)[[3, 1, 12]], sc.ids(1)[perm]), want[[3, 1, 12]][:, perm], atol=2e-6)
    # padding changes the answer where every real similarity is negative
    short = TokenScorer({0: TokenSets(t, tm), 1: TokenSets(v, vm, padded_len=5)})
    unpadded = TokenScorer({0: TokenSets(t, tm), 1: TokenSets(v[:1, :1], vm[:1, :1])})
    assert short(short.ids(0)[:1], short.ids(1)[:1])[0, 0] > unpadded(unpadded.ids(0)[:1], unpadded.ids(1))[0, 0]


def test_token_scorer_through_evaluate_retrieval_multi_caption():
    rng = np.random.default_rng(1)
    nv = 10
    c2v = np.concatenate([np.arange(nv), rng.integers(0, nv, 7)])
    v, vm = _random_sets(rng, nv, 6, 12)
    t = np.zeros((len(c2v), 9, 12), np.float32)
    tm = np.arange(9)[None] < rng.integers(2, 10, len(c2v))[:, None]
    for c, vid in enumerate(c2v):  # captions near their video's frames
        t[c] = v[vid, rng.integers(0, vm[vid].sum(), 9)] + 1.2 * rng.standard_normal((9, 12))
    t[~tm] = 0.0
    S = naive_scores(t, tm, v, vm, uniform(tm), uniform(vm), 9, 6)
    sc = TokenScorer({0: TokenSets(t, tm), 1: TokenSets(v, vm)})
    for gallery in ("captions", "videos"):
        res = evaluate_retrieval(sc.ids(0), sc.ids(1), c2v, score_fn=sc, v2t_gallery=gallery, block=4, return_ranks=True)
        np.testing.assert_array_equal(res["ranks"]["t2v"], ranks_from_scores(S, c2v))
        np.testing.assert_array_equal(res["ranks"]["v2t"], v2t_ranks_multi_from_scores(S.T, c2v, gallery=gallery))
    assert res["t2v"]["R@1"] > 100 / nv  # better than chance: the scorer ranks by similarity


def test_token_sets_validation():
    with pytest.raises(ValueError, match="no real position"):
        TokenSets(np.ones((2, 3, 4)), np.array([[1, 0, 0], [0, 0, 0]], bool))
    with pytest.raises(ValueError, match="shorter"):
        TokenSets(np.ones((1, 3, 4)), np.ones((1, 3), bool), padded_len=2)
    sc = TokenScorer({0: TokenSets(np.ones((1, 3, 4)), np.ones((1, 3), bool))})
    with pytest.raises(ValueError, match="sides"):
        sc(np.array([[5.0, 0.0]]), sc.ids(0))


# ------------------------------------------------------------------------------------------------
# the evaluate stage with tiny random-weight DRL checkpoints
# ------------------------------------------------------------------------------------------------

CAPTIONS = ["a dog runs on the grass", "a cat", "a man is cooking pasta in a kitchen", "two people dance",
            "a red car drives down a long road at night", "someone plays the guitar", "a bird", "kids play soccer",
            "a woman sings", "the sun sets over the sea", "a chef chops onions", "a dog barks"]
CAP_VIDEO = [0, 1, 2, 3, 4, 5, 6, 7, 0, 3, 2, 5]  # 8 videos, some with two captions


@pytest.fixture()
def configs(tmp_path, monkeypatch):
    root = bc.make_configs_dir(tmp_path)
    monkeypatch.setenv("VTPIPE_CONFIGS", str(root))
    tiny = {"arch": None, "arch_cfg": bc.TINY_C4C_ARCH}
    for base in ("drl-wti", "drl-ti", "clip4clip-meanp"):
        bc.tiny_model_config(root, base, f"{base}-tiny", embed_dim=W, params=tiny)
    bc.tiny_model_config(root, "drl-ti", "drl-ti-meanp-tiny", embed_dim=W, params={**tiny, "sim_header": "meanP"})
    return root


def make_stores(tmp_path, model, name, seed=3):
    """A video store as extraction writes it for the drl policy (MAX_FRAMES units, tail padding masked; pooled =
    model.pool) and a caption store with the model's token features. Returns (frames, vmask, tokens, tmask)."""
    rng = np.random.default_rng(seed)
    n_real = [12, 7, 3, 12, 5, 9, 1, 12]
    frames = np.zeros((8, MAX_FRAMES, W), np.float32)
    vmask = np.zeros((8, MAX_FRAMES), bool)
    w = VideoStoreWriter(tmp_path / "v.h5", W, {"model": name})
    for i, n in enumerate(n_real):
        frames[i] = rng.standard_normal((MAX_FRAMES, W)).astype(np.float32)
        frames[i, n:] = 0.0  # as the drl policy pads
        vmask[i, :n] = True
        w.add(f"video{i}", frames[i], np.arange(MAX_FRAMES, dtype=float), vmask[i], model.pool(frames[i], vmask[i]))
    w.close()
    tf = model.encode_text(CAPTIONS)
    write_text_store(tmp_path / "t.h5", [f"c{i}" for i in range(len(CAPTIONS))], [f"video{v}" for v in CAP_VIDEO],
                     CAPTIONS, tf.pooled, {"model": name}, tokens=tf.tokens, token_mask=tf.mask)
    return frames, vmask, tf.tokens, tf.mask


def ranks_csv(path: Path) -> np.ndarray:
    lines = path.read_text().splitlines()[1:]
    return np.array([float(x.rsplit(",", 1)[1]) for x in lines]) - 1


def test_stage_drl_wti_ranks_equal_naive_reference(configs, tmp_path):
    sd = bc.clip4clip_state_dict(bc.TINY_C4C_ARCH, seed=11, seq_transf=True, wti=True)
    ckpt = bc.write_raw_state_dict(tmp_path / "pytorch_model.bin.1", sd)
    model = load_model("drl-wti-tiny", weights=str(ckpt))
    frames, vmask, tokens, tmask = make_stores(tmp_path, model, "drl-wti-tiny")
    run_cli("evaluate", "--task", "t2v", "--task", "v2t", "--features", str(tmp_path / "v.h5"), "--text-features",
            str(tmp_path / "t.h5"), "--weights", str(ckpt), "-o", str(tmp_path / "ev"),
            env={"VTPIPE_CONFIGS": str(configs)})
    # reference: seqTransf by hand from the state dict (each video with its own mask), weights by hand
    agg = np.stack([reference_seq_transf(sd, torch.from_numpy(frames[i]), torch.from_numpy(vmask[i])).numpy()
                    for i in range(8)])
    wt = mlp_softmax(sd, "text_weight_fc", tokens, tmask)
    wv = mlp_softmax(sd, "video_weight_fc", agg, vmask)
    S = naive_scores(tokens, tmask, agg, vmask, wt, wv, MAX_WORDS, MAX_FRAMES)
    c2v = np.array(CAP_VIDEO)
    gaps = np.abs(S - S[np.arange(len(c2v)), c2v][:, None])
    assert np.sort(gaps, axis=1)[:, 1].min() > 1e-5  # no near-tie: ranks are well defined
    np.testing.assert_array_equal(ranks_csv(tmp_path / "ev/t2v/ranks.csv"), ranks_from_scores(S, c2v))
    np.testing.assert_array_equal(ranks_csv(tmp_path / "ev/v2t/ranks.csv"), v2t_ranks_multi_from_scores(S.T, c2v))
    m = json.loads((tmp_path / "ev/t2v/metrics.json").read_text())
    assert m["similarity"] == "wti"
    info = m["similarity_info"]
    assert info["frames"] == "seqTransf-aggregated" and info["weights"] == "model heads" and info["model_loaded"]
    assert info["text_padded_len"] == MAX_WORDS and info["video_padded_len"] == MAX_FRAMES
    assert info["pooled_check_min_cosine"] > 0.9999
    assert json.loads((tmp_path / "ev/v2t/metrics.json").read_text())["similarity"] == "wti"


def _retrieval_task(tmp_path, name, weights=None, **over):
    from stages.evaluate import STAGE

    params = {"task": "retrieval", "directions": ["t2v"], "features": str(tmp_path / "v.h5"),
              "text_features": str(tmp_path / "t.h5"), "bank_features": None, "sigs": [], "rerank": "none",
              "rerank_params": {}, "ties": "optimistic", "median": "numpy", "ks": [1, 5, 10],
              "v2t_gallery": "captions", "candidates": "exact", "candidates_k": 10, "index_dir": None,
              "out_dir": str(tmp_path / "ev"), "dataset": "tiny", "similarity": "auto", "model": name,
              "weights": weights, "allow_random": False, **over}
    return Task(STAGE, "retrieval", str(tmp_path / "ev"), params)


def test_stage_drl_ti_seqtransf_and_meanp(configs, tmp_path):
    from stages.evaluate import run_task

    c2v = np.array(CAP_VIDEO)
    # TI with seqTransf: the checkpoint is loaded for the temporal module (no weight heads)
    sd = bc.clip4clip_state_dict(bc.TINY_C4C_ARCH, seed=12, seq_transf=True, wti=False)
    ckpt = bc.write_raw_state_dict(tmp_path / "ti.bin", sd)
    model = load_model("drl-ti-tiny", weights=str(ckpt))
    frames, vmask, tokens, tmask = make_stores(tmp_path, model, "drl-ti-tiny")
    run_task(_retrieval_task(tmp_path, "drl-ti-tiny", str(ckpt)))
    agg = np.stack([reference_seq_transf(sd, torch.from_numpy(frames[i]), torch.from_numpy(vmask[i])).numpy()
                    for i in range(8)])
    S = naive_scores(tokens, tmask, agg, vmask, uniform(tmask), uniform(vmask), MAX_WORDS, MAX_FRAMES)
    np.testing.assert_array_equal(ranks_csv(tmp_path / "ev/t2v/ranks.csv"), ranks_from_scores(S, c2v))
    m = json.loads((tmp_path / "ev/t2v/metrics.json").read_text())
    assert m["similarity"] == "ti" and m["similarity_info"]["model_loaded"]
    # wrong checkpoint for these features: the pooled-vector check refuses
    bad = bc.write_raw_state_dict(tmp_path / "other.bin", bc.clip4clip_state_dict(bc.TINY_C4C_ARCH, seed=99,
                                                                                      seq_transf=True))
    sd_bad = torch.load(bad)
    for k in sd_bad:
        if k.startswith("transformerClip.") and k.endswith("out_proj.weight"):
            sd_bad[k] = sd_bad[k] * 200.0  # a temporal module that really changes the frames
    torch.save(sd_bad, bad)
    from stages.contract.errors import VtpipeError

    with pytest.raises(VtpipeError, match="pooled"):
        run_task(_retrieval_task(tmp_path, "drl-ti-tiny", str(bad)))

    # TI with meanP: frames used as stored, no model loaded (no weights given, random not allowed)
    sub = tmp_path / "meanp"
    sub.mkdir()
    model = load_model("drl-ti-meanp-tiny", weights=str(bc.write_raw_state_dict(
        tmp_path / "mp.bin", bc.clip4clip_state_dict(bc.TINY_C4C_ARCH, seed=13, seq_transf=False))))
    frames, vmask, tokens, tmask = make_stores(sub, model, "drl-ti-meanp-tiny", seed=4)
    run_task(_retrieval_task(sub, "drl-ti-meanp-tiny", None))
    S = naive_scores(tokens, tmask, frames, vmask, uniform(tmask), uniform(vmask), MAX_WORDS, MAX_FRAMES)
    np.testing.assert_array_equal(ranks_csv(sub / "ev/t2v/ranks.csv"), ranks_from_scores(S, c2v))
    m = json.loads((sub / "ev/t2v/metrics.json").read_text())
    assert m["similarity"] == "ti" and not m["similarity_info"]["model_loaded"]
    assert m["similarity_info"]["frames"] == "stored"
    # evaluate.similarity=dp overrides the model's interaction: pooled dot products
    run_task(_retrieval_task(sub, "drl-ti-meanp-tiny", None, similarity="dp", out_dir=str(sub / "dp")))
    assert json.loads((sub / "dp/t2v/metrics.json").read_text())["similarity"] == "dp"
