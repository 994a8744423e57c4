"""The evaluate stage from the CLI: retrieval with re-ranking, zero-shot and linear-probe wiring."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import REPO, run_cli
from stages.backbones.registry import load_model
from stages.retrieval import evaluate_retrieval
from stages.features.store import VideoStoreWriter, write_text_store


def video_store(path, ids, clip_feats, model="shapes-tiny"):
    d = clip_feats.shape[-1]
    w = VideoStoreWriter(path, d, {"model": model})
    for vid, f in zip(ids, clip_feats):
        pooled = f.mean(0)
        w.add(vid, f, np.arange(len(f), dtype=float), None, pooled / np.linalg.norm(pooled))
    w.close()


def test_hand_worked_t2v(tmp_path):
    """3 videos, 3 captions; caption 0 -> video 0 ranks 1st, caption 1 -> 2nd, caption 2 -> 3rd."""
    v = np.eye(3, dtype=np.float32)[:, None, :]  # one unit per video, e0, e1, e2
    video_store(tmp_path / "v.h5", ["a", "b", "c"], v)
    caps = np.array([[1, 0.1, 0], [0.9, 0.5, 0], [0.8, 0.6, 0.1]], np.float32)
    write_text_store(tmp_path / "t.h5", ["q0", "q1", "q2"], ["a", "b", "c"], ["x", "y", "z"], caps,
                     {"model": "shapes-tiny"})
    run_cli("evaluate", "--task", "t2v", "--features", str(tmp_path / "v.h5"), "--text-features",
            str(tmp_path / "t.h5"), "-o", str(tmp_path / "ev"))
    m = json.loads((tmp_path / "ev/t2v/metrics.json").read_text())
    # 1-based ranks 1, 2, 3: R@1 = 33.3, R@5 = 100, MdR = 2, MnR = 2
    assert m["R@1"] == pytest.approx(100 / 3) and m["R@5"] == 100.0
    assert m["MdR"] == 2.0 and m["MnR"] == 2.0
    ranks = (tmp_path / "ev/t2v/ranks.csv").read_text().splitlines()
    assert ranks[0] == "query,ground_truth,rank_optimistic,rank_pessimistic,rank"
    assert ranks[1:] == ["q0,a,1,1,1", "q1,b,2,2,2", "q2,c,3,3,3"]
    assert (tmp_path / "ev/t2v/recall_at_k.png").stat().st_size > 1000


@pytest.mark.parametrize("rerank", ["sk-norm", "dsl", "qb-norm"])
def test_rerank_through_the_cli_equals_the_library(rerank, tmp_path):
    rng = np.random.default_rng(0)
    n, d = 40, 16
    v = rng.standard_normal((n, 2, d)).astype(np.float32)
    video_store(tmp_path / "v.h5", [f"v{i}" for i in range(n)], v)
    pooled = v.mean(1)
    pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
    caps = pooled + 0.9 * rng.standard_normal((n, d)).astype(np.float32)
    write_text_store(tmp_path / "t.h5", [f"c{i}" for i in range(n)], [f"v{i}" for i in range(n)], ["x"] * n, caps,
                     {"model": "shapes-tiny"})
    bank = rng.standard_normal((120, d)).astype(np.float32)
    write_text_store(tmp_path / "b.h5", [f"b{i}" for i in range(120)], ["t"] * 120, ["x"] * 120, bank,
                     {"model": "shapes-tiny"})
    run_cli("evaluate", "--task", "t2v", "--task", "v2t", "--features", str(tmp_path / "v.h5"), "--text-features",
            str(tmp_path / "t.h5"), "--rerank", rerank, "--bank-text-features", str(tmp_path / "b.h5"),
            "-o", str(tmp_path / "ev"))
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    want = evaluate_retrieval(unit(caps), unit(pooled), np.arange(n), rerank=rerank, bank_text_feats=unit(bank))
    got = json.loads((tmp_path / "ev/t2v/metrics.json").read_text())
    assert got["rerank"] == rerank
    for key in ("R@1", "R@5", "R@10", "MdR", "MnR"):
        assert got[key] == pytest.approx(want["t2v"][key])
    none = evaluate_retrieval(unit(caps), unit(pooled), np.arange(n))
    assert want["t2v"]["R@1"] != none["t2v"]["R@1"] or want["t2v"]["MnR"] != none["t2v"]["MnR"]  # it re-ranked


def test_linear_probe_on_ucf101_split_files(tmp_path):
    splits = REPO / "tests/data/ucfTrainTestlist"
    ids = {"ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01": 0, "HandstandPushups/v_HandStandPushups_g08_c01": 1,
           "YoYo/v_YoYo_g09_c02": 2, "YoYo/v_YoYo_g10_c01": 2,
           "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01": 0, "YoYo/v_YoYo_g01_c03": 2}
    rng = np.random.default_rng(1)
    centers = rng.standard_normal((3, 8)) * 5
    feats = np.stack([centers[c] + rng.standard_normal((10, 8)) for c in ids.values()]).astype(np.float32)
    video_store(tmp_path / "s3d.h5", list(ids), feats, model="s3d-howto100m")
    run_cli("evaluate", "--task", "linear-probe", "--features", str(tmp_path / "s3d.h5"), "-o", str(tmp_path / "ev"),
            "--set", "dataset.kind=action", "--set", "dataset.name=ucf101", "--set", f"dataset.splits_dir={splits}",
            "--set", "dataset.splits=[1]")
    m = json.loads((tmp_path / "ev/linear-probe/metrics.json").read_text())
    assert m["top1"] == 100.0 and m["C"] == 100.0 and m["videos_missing"] == []


def test_zeroshot_matches_prompts_of_the_right_class(tmp_path):
    split_dir = tmp_path / "splits"
    split_dir.mkdir()
    classes = ["RedSquare", "BlueCircle", "YellowTriangle"]
    (split_dir / "classInd.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(classes)))
    (split_dir / "trainlist01.txt").write_text(f"{classes[0]}/v_{classes[0]}_g01_c01.avi 1\n")
    test_ids = [f"{c}/v_{c}_g0{k}_c01" for c in classes for k in (2, 3)]
    (split_dir / "testlist01.txt").write_text("".join(f"{t}.avi\n" for t in test_ids))
    model = load_model("shapes-tiny")
    prompts = model.encode_text(["red square", "blue circle", "yellow triangle"]).pooled
    rng = np.random.default_rng(2)
    feats = np.stack([prompts[i // 2] + 0.05 * rng.standard_normal(prompts.shape[1]) for i in range(6)])
    video_store(tmp_path / "v.h5", test_ids, feats[:, None, :].astype(np.float32))
    run_cli("evaluate", "--task", "zeroshot", "--features", str(tmp_path / "v.h5"), "-o", str(tmp_path / "ev"),
            "--set", "dataset.kind=action", "--set", "dataset.name=ucf101", "--set", f"dataset.splits_dir={split_dir}",
            "--set", "dataset.splits=[1]", "--set", "dataset.prompt_template='{}'")
    m = json.loads((tmp_path / "ev/zeroshot/metrics.json").read_text())
    assert m["top1"] == 100.0 and m["per_split"][0]["videos"] == 6


def test_faiss_candidates_give_exact_recall_up_to_k(tmp_path):
    rng = np.random.default_rng(5)
    n, d = 60, 16
    v = rng.standard_normal((n, 1, d)).astype(np.float32)
    video_store(tmp_path / "v.h5", [f"v{i}" for i in range(n)], v)
    caps = v[:, 0] + 1.5 * rng.standard_normal((n, d)).astype(np.float32)
    write_text_store(tmp_path / "t.h5", [f"c{i}" for i in range(n)], [f"v{i}" for i in range(n)], ["x"] * n, caps,
                     {"model": "shapes-tiny"})
    run_cli("index", "--features", str(tmp_path / "v.h5"), "-o", str(tmp_path / "ix"))
    common = ["evaluate", "--task", "t2v", "--features", str(tmp_path / "v.h5"), "--text-features", str(tmp_path / "t.h5")]
    run_cli(*common, "-o", str(tmp_path / "exact"))
    run_cli(*common, "-o", str(tmp_path / "faiss"), "--candidates", "faiss", "--index", str(tmp_path / "ix"), "-k", "5")
    exact = json.loads((tmp_path / "exact/t2v/metrics.json").read_text())
    approx = json.loads((tmp_path / "faiss/t2v/metrics.json").read_text())
    assert approx["R@1"] == exact["R@1"] and approx["R@5"] == exact["R@5"]
    assert "R@10" not in approx and "MnR" not in approx
    assert approx["MnR_lower_bound"] <= exact["MnR"]
    assert approx["censored_queries"] == round(n * (100 - exact["R@5"]) / 100)


# ---- reference conventions through the CLI, against the reference codes' own outputs ------------------
GOLDEN = json.loads((REPO / "tests/golden/retrieval_conventions.json").read_text())


def _golden_stores(tmp_path, data: dict, banks: bool) -> list[str]:
    """Stores of the golden vectors (exact in float32); returns the CLI arguments that name them."""
    v = np.array(data["videos"], np.float32)
    t = np.array(data["captions"], np.float32)
    c2v = data["caption_to_video"]
    vids = [f"v{i:02d}" for i in range(len(v))]
    video_store(tmp_path / "v.h5", vids, v[:, None, :])
    write_text_store(tmp_path / "t.h5", [f"c{i:02d}" for i in range(len(t))], [vids[i] for i in c2v], ["x"] * len(t), t,
                     {"model": "shapes-tiny"})
    args = ["--features", str(tmp_path / "v.h5"), "--text-features", str(tmp_path / "t.h5")]
    if banks:
        bt, bv = np.array(GOLDEN["bank_text"], np.float32), np.array(GOLDEN["bank_video"], np.float32)
        write_text_store(tmp_path / "bt.h5", [f"b{i}" for i in range(len(bt))], ["train"] * len(bt), ["x"] * len(bt), bt,
                         {"model": "shapes-tiny"})
        video_store(tmp_path / "bv.h5", [f"train{i}" for i in range(len(bv))], bv[:, None, :])
        args += ["--bank-text-features", str(tmp_path / "bt.h5"), "--bank-video-features", str(tmp_path / "bv.h5")]
    return args


@pytest.mark.parametrize("case", GOLDEN["cases"], ids=lambda c: f"{c['data']}-{c['rerank']}-{c['ties']}")
def test_reference_conventions_through_the_cli(case, tmp_path):
    """`vtpipe evaluate --ties <convention> [--rerank ...]` gives the numbers the reference code gives on the same
    tied, duplicated data (CLIP4Clip metrics.py, collaborative-experts metric.py, QB-Norm, UCoFiA SK-norm, CAMoE DSL)."""
    args = _golden_stores(tmp_path, GOLDEN["data"][case["data"]], case["rerank"] in ("sk-norm", "qb-norm"))
    proc = run_cli("evaluate", "--task", "t2v", "--task", "v2t", *args, "--ties", case["ties"], "--rerank", case["rerank"],
                   "-o", str(tmp_path / "ev"))
    for d in ("t2v", "v2t"):
        got = json.loads((tmp_path / f"ev/{d}/metrics.json").read_text())
        assert got["ties"] == case["ties"] and got["rerank"] == case["rerank"], got
        assert got["convention_reference"]
        if case["rerank"] in ("sk-norm", "qb-norm"):
            assert got["rerank_info"]["bank"] == ("training captions" if d == "t2v" else "training videos")
        for key, want in case[d].items():
            if key == "entries":  # compute_metrics: one entry per tied position
                assert got["n_ranks"] == len(want)
                continue
            value = round(got[key], 1) if case.get("rounded") else got[key]
            assert value == pytest.approx(want, rel=1e-6, abs=1e-9), (d, key)
        diag = got["tie_diagnostics"]
        assert diag["queries_tied"] > 0  # the data ties on purpose
        for w in got["warnings"]:
            assert w in proc.stdout + proc.stderr  # every warning is printed


def test_conventions_differ_on_the_golden_data(tmp_path):
    """The goldens can tell the conventions apart: plain averaged ties and optimistic ties give other numbers."""
    data = GOLDEN["data"]["multi"]
    t, v = np.array(data["captions"]), np.array(data["videos"])
    ce = next(c for c in GOLDEN["cases"] if c["data"] == "multi" and c["ties"] == "collaborative-experts")
    c4c = next(c for c in GOLDEN["cases"] if c["data"] == "multi" and c["ties"] == "clip4clip")
    avg = evaluate_retrieval(t, v, data["caption_to_video"], ties="average")
    opt = evaluate_retrieval(t, v, data["caption_to_video"], ties="optimistic", v2t_gallery="videos")
    assert avg["t2v"]["R@1"] != pytest.approx(ce["t2v"]["R@1"])  # R@1 = rank exactly 0
    assert avg["v2t"]["MnR"] != pytest.approx(ce["v2t"]["MnR"])  # ties with the video's own captions
    assert opt["t2v"]["R@1"] != pytest.approx(c4c["t2v"]["R@1"])  # argsort order
    assert opt["v2t"]["R@1"] != pytest.approx(c4c["v2t"]["R@1"])  # compute_metrics entries


def test_missing_videos_warned_and_counted_as_misses(tmp_path):
    """4 videos, 5 captions; video 'e' (caption q4) failed: dropped with a printed warning, or a miss (rank 5)."""
    v = np.eye(4, dtype=np.float32)[:, None, :]
    video_store(tmp_path / "v.h5", ["a", "b", "c", "d"], v)
    caps = np.eye(4, dtype=np.float32)[[0, 1, 2, 3, 0]]
    write_text_store(tmp_path / "t.h5", [f"q{i}" for i in range(5)], ["a", "b", "c", "d", "e"], ["x"] * 5, caps,
                     {"model": "shapes-tiny"})
    base = ["evaluate", "--task", "t2v", "--task", "v2t", "--features", str(tmp_path / "v.h5"), "--text-features",
            str(tmp_path / "t.h5")]
    drop = tmp_path / "run/eval/shapes-tiny"
    proc = run_cli(*base, "-o", str(drop))
    m = json.loads((drop / "t2v/metrics.json").read_text())
    assert m["R@1"] == 100.0 and m["n_queries"] == 4 and m["captions_missing_video"] == 1
    assert "1 video(s) named by the captions have no features" in proc.stderr
    assert any("dropped" in w for w in m["warnings"]) and "WARNING" in (drop / "t2v/metrics.md").read_text()
    status = run_cli("status", str(tmp_path / "run")).stdout
    assert "WARNING 1 video(s) named by the captions have no features" in status
    run_cli(*base, "--missing", "miss", "-o", str(tmp_path / "miss"))
    m = json.loads((tmp_path / "miss/t2v/metrics.json").read_text())
    # ranks 0, 0, 0, 0 and the miss at rank 4 (= gallery size): R@1 = 80, R@5 = 100, MnR = (4 * 1 + 5) / 5
    assert m["n_queries"] == 5 and m["R@1"] == 80.0 and m["R@5"] == 100.0 and m["MnR"] == pytest.approx(1.8)
    assert m["queries_counted_as_misses"] == 1 and m["missing_policy"] == "miss"
    v2t = json.loads((tmp_path / "miss/v2t/metrics.json").read_text())
    assert v2t["n_queries"] == 5 and v2t["R@1"] == 80.0  # the failed video is a v2t query it cannot answer


def test_identical_copies_warn_that_ties_decide_r1(tmp_path):
    """6 clips x 5 identical copies: optimistic R@1 = 100 but every ground truth ties with 4 others."""
    base = np.eye(6, dtype=np.float32)
    v = np.repeat(base, 5, axis=0)
    ids = [f"v{i:02d}" for i in range(30)]
    video_store(tmp_path / "v.h5", ids, v[:, None, :])
    write_text_store(tmp_path / "t.h5", [f"c{i:02d}" for i in range(30)], ids, ["x"] * 30, v, {"model": "shapes-tiny"})
    proc = run_cli("evaluate", "--task", "t2v", "--features", str(tmp_path / "v.h5"), "--text-features",
                   str(tmp_path / "t.h5"), "-o", str(tmp_path / "ev"))
    m = json.loads((tmp_path / "ev/t2v/metrics.json").read_text())
    d = m["tie_diagnostics"]
    assert m["R@1"] == 100.0 and d["R@K_pessimistic"]["R@1"] == 0.0 and d["R@K_pessimistic"]["R@5"] == 100.0
    assert d["queries_tied"] == 30 and d["tied_in_top_k"]["R@1"] == 30
    assert "30 of 30 queries have their ground truth tied" in proc.stderr
    ranks = (tmp_path / "ev/t2v/ranks.csv").read_text().splitlines()
    assert ranks[1] == "c00,v00,1,5,1"


def test_comparison_table_across_models_and_rerankers(tmp_path):
    rng = np.random.default_rng(3)
    v = rng.standard_normal((12, 1, 8)).astype(np.float32)
    ids = [f"v{i}" for i in range(12)]
    video_store(tmp_path / "v.h5", ids, v)
    t = v[:, 0] + 0.5 * rng.standard_normal((12, 8)).astype(np.float32)
    write_text_store(tmp_path / "t.h5", [f"c{i}" for i in range(12)], ids, ["x"] * 12, t, {"model": "shapes-tiny"})
    common = ["evaluate", "--task", "t2v", "--task", "v2t", "--features", str(tmp_path / "v.h5"),
              "--text-features", str(tmp_path / "t.h5")]
    run_cli(*common, "-o", str(tmp_path / "none"))
    run_cli(*common, "--rerank", "dsl", "--ties", "clip4clip", "-o", str(tmp_path / "dsl"))
    proc = run_cli("table", str(tmp_path / "none"), str(tmp_path / "dsl"), "-o", str(tmp_path / "cmp.md"))
    md = (tmp_path / "cmp.md").read_text()
    assert md == proc.stdout.rstrip("\n") + "\n"
    assert "| shapes-tiny |" in md and "t2v R@1" in md and "v2t MnR" in md
    assert "ties: optimistic" in md and "ties: clip4clip" in md and "rerank: dsl" in md
    assert "CLIP4Clip@508ffa3 metrics.py" in md  # each convention names its reference
    import pandas as pd

    csv = pd.read_csv(tmp_path / "cmp.csv")
    assert sorted(csv["rerank"]) == ["dsl", "none"] and set(csv["conv"]) == {"a,b", "c,d"}  # t2v, v2t
    assert csv["conventions"].str.contains("ties: ").all() and csv["conventions"].str.contains("v2t gallery").all()
    none = json.loads((tmp_path / "none/t2v/metrics.json").read_text())
    assert csv.loc[csv["rerank"] == "none", "t2v R@1"].item() == pytest.approx(none["R@1"], abs=1e-3)


def test_training_videos_are_extracted_as_the_v2t_bank(tmp_path):
    """dataset.train_videos (restricted to train_split) becomes the extract task bank-videos when v2t is re-ranked
    with a bank; concat places its store where evaluate looks for the v2t bank."""
    from pipeline.config import resolve
    from stages import concat, extract
    from stages.contract.layout import Layout

    for folder, names in (("test", ["t1", "t2"]), ("all", ["t1", "v1", "v2", "v3"])):
        (tmp_path / folder).mkdir()
        for n in names:
            (tmp_path / folder / f"{n}.mp4").write_bytes(b"x")
    (tmp_path / "train.csv").write_text("video_id\nv1\nv3\n")
    cfg = resolve({"stages": ["extract", "concat", "evaluate"], "input": {"videos": str(tmp_path / "test")},
                   "model": {"name": "shapes-tiny"},
                   "dataset": {"train_videos": str(tmp_path / "all"), "train_split": str(tmp_path / "train.csv")},
                   "evaluate": {"rerank": "sk-norm", "tasks": ["t2v", "v2t"]}})
    lay = Layout(tmp_path / "run")
    bank = [t for t in extract.plan(cfg, lay) if t.id == "bank-videos"]
    assert len(bank) == 1 and [v[0] for v in bank[0].params["videos"]] == ["v1", "v3"]
    assert bank[0].params["out"].endswith("bank-videos.h5")
    cfg["evaluate"]["tasks"] = ["t2v"]  # no v2t: no video bank
    assert not [t for t in extract.plan(cfg, lay) if t.id == "bank-videos"]
    assert lay.bank_video_features("shapes-tiny").name == "shapes-tiny.bank.h5"
    assert concat.BANK_VIDEOS == extract.BANK_VIDEOS
