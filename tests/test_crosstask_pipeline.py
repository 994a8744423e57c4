"""CrossTask through the pipeline: one clip per annotated segment (extract.segments), step texts as captions,
scored as VT-TWINS does."""

from __future__ import annotations

import json


import backbone_checkpoints as bc
from conftest import REPO, run_cli
from stages.recognition.segment_accuracy import crosstask_vt_twins
from stages.datasets.captions import read_captions
from stages.features.store import TextStore, VideoStore
from video_factory import make_counter_video

DATA = REPO / "tests/data/crosstask_release"


def test_crosstask_segments_end_to_end(tmp_path):
    configs = bc.make_configs_dir(tmp_path)
    bc.tiny_model_config(configs, "s3d-howto100m", "s3d-small",
                         preprocess={"size": 64, "resize": "short", "crop": "center", "interpolation": "bilinear"})
    videos = tmp_path / "videos"
    for vid, seconds in (("Xw_rd7z8eY4", 41), ("-2kbFZa83AA", 15), ("vMkMX5rQTN0", 67)):
        make_counter_video(videos / f"{vid}.mp4", n_frames=seconds * 5, fps=5, width=64, height=48)
    words = sorted({w for line in (DATA / "tasks_primary.txt").read_text().splitlines() for w in line.replace(",", " ").split()})
    word_dict = bc.write_word_dict(tmp_path / "s3d_dict.npy", words)
    y = tmp_path / "ct.yaml"
    y.write_text(
        f"name: ct\nstages: [extract, concat, evaluate]\ninput: {{videos: {videos}}}\n"
        f"dataset: {{format: crosstask, captions: {DATA}/tasks_primary.txt}}\n"
        f"model: {{name: s3d-small, allow_random: true, weights: {{dict: {word_dict}}}, "
        "sampling: {policy: milnce-retrieval, fps: 10, num_clips: 1, clip_len: 8}}\n"
        "extract: {segments: true, shards: 2, decode_workers: 0, batch_size: 4}\nevaluate: {tasks: [crosstask]}\n")
    run_cli("run", str(y), "-o", str(tmp_path / "run"), env={"VTPIPE_CONFIGS": str(configs)})
    segs = read_captions("crosstask", DATA / "tasks_primary.txt")
    with VideoStore(tmp_path / "run/features/s3d-small.h5") as vs, \
            TextStore(tmp_path / "run/features/s3d-small.text.h5") as ts:
        assert sorted(vs.ids) == sorted(segs["caption_id"])  # one item per annotated segment
        for cid, start in zip(segs["caption_id"], segs["start_s"]):
            assert vs.get(cid).unit_times_s[0] == start  # the clip starts at the segment start
        assert ts.video_ids == ts.caption_ids  # each step text is paired with its own segment
        v = vs.pooled()[[vs.index[c] for c in segs["caption_id"]]]
        t = ts.pooled()[[ts.caption_ids.index(c) for c in segs["caption_id"]]]
    m = json.loads((tmp_path / "run/eval/s3d-small/crosstask/metrics.json").read_text())
    want = crosstask_vt_twins(v, t, segs["task"].tolist(), segs["step"].tolist())
    assert m["n_segments"] == 7 and m["n_tasks"] == 2 and m["segments_missing"] == 0
    assert m["ctr"] == want["ctr"] and 0 <= m["ctr"] <= 100
    assert "VT-TWINS" in m["metric"]
