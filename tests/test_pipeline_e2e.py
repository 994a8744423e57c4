"""End to end on the embedded sample with shapes-tiny: compress -> extract -> concat -> index -> evaluate.

The oracle: shapes-tiny truly understands the sample, so t2v R@1 is far above chance (chance = 1/24 = 4.2%).
Then the same pipeline with the signal corrupted on purpose — colour channels swapped or frame order
reversed inside the extractor (the test-only VTPIPE_TEST_CORRUPT hook), or the captions shuffled in the
input file — must collapse, proving this test fails when a stage damages the signal.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from conftest import run_cli
from stages.features.store import TextStore, VideoStore

CHANCE_R1 = 100 / 24
PASS_R1 = 90.0  # measured: 100; well above chance (4.2)
COLLAPSED_R1 = 10.0  # measured under each corruption: 0


def pipeline_yaml(tmp_path, videos, captions, extra: str = "", dataset_extra: str = "") -> str:
    y = tmp_path / "sample.yaml"
    y.write_text(f"name: e2e\ninput: {{videos: {videos}}}\ndataset: {{captions: {captions}{dataset_extra}}}\n"
                 f"model: {{name: shapes-tiny}}\nextract: {{shards: 2, decode_workers: 1}}\n{extra}")
    return str(y)


def metrics(run, task="t2v") -> dict:
    return json.loads((run / f"eval/shapes-tiny/{task}/metrics.json").read_text())


@pytest.fixture(scope="module")
def clean_run(sample, tmp_path_factory):
    d = tmp_path_factory.mktemp("e2e")
    proc = run_cli("run", pipeline_yaml(d, sample["videos"], sample["captions"]), "-o", str(d / "run"))
    return d / "run", proc


def test_full_pipeline_scores_far_above_chance(clean_run, sample):
    run, proc = clean_run
    for stage in ("compress", "extract", "concat", "index", "evaluate"):
        assert f"[{stage}] running" in proc.stdout
    m = metrics(run)
    assert m["n_queries"] == 24 and m["ties"] == "optimistic"
    assert m["R@1"] >= PASS_R1 > 5 * CHANCE_R1
    assert metrics(run, "v2t")["R@1"] >= PASS_R1
    # the comparison table is printed: t2v and v2t side by side, conventions in its caption
    assert "| shapes-tiny |" in proc.stdout and "| t2v R@1 |" in proc.stdout and "ties: optimistic" in proc.stdout
    # every artifact of the layout is there and readable
    assert len(list((run / "compress").glob("*.mp4"))) == 24
    assert len(list((run / "extract/shapes-tiny").glob("shard-*.h5"))) == 2
    with VideoStore(run / "features/shapes-tiny.h5") as vs, TextStore(run / "features/shapes-tiny.text.h5") as ts:
        assert len(vs) == 24 and len(ts) == 24 and vs.attrs["sampling"]["policy"] == "fps"
        # 2 s clips at 3 fps: 6 frames each, at 0, 1/3, ..., 5/3 s
        np.testing.assert_allclose(vs.get("video0").unit_times_s, np.arange(6) / 3, atol=1e-6)
    infos = json.loads((run / "index/shapes-tiny/index_infos.json").read_text())
    assert infos["factory"] == "Flat" and infos["vectors"] == 24
    assert (run / "config.yaml").is_file() and (run / "eval/summary.md").is_file() and (run / "eval/summary.csv").is_file()


def test_second_run_does_nothing(clean_run, sample):
    run, _ = clean_run
    d = run.parent
    proc = run_cli("run", pipeline_yaml(d, sample["videos"], sample["captions"]), "-o", str(run))
    assert "every stage is already complete" in proc.stdout
    assert "running" not in proc.stdout
    status = run_cli("status", str(run)).stdout
    assert "evaluate" in status and "R@1 100.0" in status


@pytest.mark.parametrize("corruption", ["swap_rgb", "reverse_frames", "shuffle_captions"])
def test_corrupted_signal_collapses_the_metric(corruption, sample, tmp_path):
    captions = sample["captions"]
    env = {}
    if corruption == "shuffle_captions":
        df = pd.read_csv(captions, dtype=str)
        rng = np.random.default_rng(0)
        perm = rng.permutation(len(df))
        while (perm == np.arange(len(df))).any():  # a derangement: no caption stays with its video
            perm = rng.permutation(len(df))
        df["sentence"] = df["sentence"].to_numpy()[perm]
        captions = tmp_path / "shuffled.csv"
        df.to_csv(captions, index=False)
    else:
        env["VTPIPE_TEST_CORRUPT"] = corruption
    run_cli("run", pipeline_yaml(tmp_path, sample["videos"], captions), "-o", str(tmp_path / "run"), env=env)
    assert metrics(tmp_path / "run")["R@1"] <= COLLAPSED_R1


def test_rerank_with_the_training_caption_bank(clean_run, sample):
    """Switching on SK-norm with the sample's training captions as the query bank: the changed stages
    refuse to mix results until told --overwrite, then only the new work is done."""
    from conftest import REPO

    run, _ = clean_run
    yaml_path = pipeline_yaml(run.parent, sample["videos"], sample["captions"],
                              "evaluate: {rerank: sk-norm}\n",
                              f", train_captions: {REPO}/data/sample/train_data.json")
    refused = run_cli("run", yaml_path, "-o", str(run), check=False)
    # extract only adds the bank (shards and captions are kept); concat would change: refused
    assert "[extract] running 1 of 4 task(s)" in refused.stdout
    assert refused.returncode == 2 and "--overwrite" in refused.stderr
    proc = run_cli("run", yaml_path, "-o", str(run), "--overwrite")
    assert "[compress] complete" in proc.stdout and "[extract] complete" in proc.stdout
    assert "[concat] running 1 of 1" in proc.stdout
    m = metrics(run)
    assert m["rerank"] == "sk-norm" and m["rerank_params"]["scale"] == 100.0 and m["R@1"] >= PASS_R1
    with TextStore(run / "features/shapes-tiny.bank.text.h5") as bank:
        assert len(bank) == 1920


def test_v2t_rerank_with_the_training_video_bank(clean_run, sample):
    """dataset.train_videos: extract encodes them as the bank-videos task, concat places the store, and v2t
    SK-norm runs with it (the sample's videos stand in for training videos: plumbing, not accuracy)."""
    from conftest import REPO

    run, _ = clean_run
    yaml_path = pipeline_yaml(run.parent, sample["videos"], sample["captions"],
                              "evaluate: {rerank: sk-norm}\n",
                              f", train_captions: {REPO}/data/sample/train_data.json, train_videos: {sample['videos']}")
    proc = run_cli("run", yaml_path, "-o", str(run), "--overwrite")
    assert "[extract] running 1 of 5 task(s)" in proc.stdout  # only the bank-videos task is new
    v2t = metrics(run, "v2t")
    assert v2t["rerank"] == "sk-norm" and "rerank_requested" not in v2t
    assert v2t["rerank_info"]["bank"] == "training videos" and v2t["rerank_info"]["bank_size"] == 24
    with VideoStore(run / "features/shapes-tiny.bank.h5") as bank:
        assert len(bank) == 24


def test_bad_videos_are_listed_in_the_failures_table(small_sample, tmp_path):
    """A text file named .mp4 and an empty file among good videos: the run finishes, both are in
    failures.csv with their reasons, and the status counts them by reason."""
    videos = tmp_path / "videos"
    videos.mkdir()
    for p in small_sample["videos"].iterdir():
        (videos / p.name).symlink_to(p.resolve())
    (videos / "notes.mp4").write_text("this is not a video")
    (videos / "empty.mp4").write_bytes(b"")
    proc = run_cli("run", pipeline_yaml(tmp_path, videos, small_sample["captions"]), "-o", str(tmp_path / "run"))
    assert "failed videos by reason" in proc.stdout
    table = pd.read_csv(tmp_path / "run/failures.csv")
    compress = table[table["stage"] == "compress"].set_index("id")["reason"].to_dict()
    assert compress == {"empty": "empty_file", "notes": "not_a_video"}
    assert metrics(tmp_path / "run")["n_queries"] == 8  # the good videos were all evaluated
    status = run_cli("status", str(tmp_path / "run")).stdout
    assert "empty_file: 1" in status and "not_a_video: 1" in status
