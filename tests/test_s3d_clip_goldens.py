"""MIL-NCE / VT-TWINS clip input from the video file, against the reference loaders' own output.

tests/golden/s3d_clips.json was written by scripts/golden/s3d_clips.py, which ran VT-TWINS 1103645
(loader/youcook_loader.py, loader/msrvtt_loader.py) and MIL-NCE_HowTo100M b282b15 (youcook_loader.py) with
ffmpeg 4.2 on the videos of tests/golden_videos.py: for every clip, the frame number in each of its slots
(-1 = zero padding) and the sha256 of its uint8 pixels. The videos are rebuilt here byte for byte.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from golden_videos import VIDEOS, make_videos, read_number

from stages.backbones.registry import load_model, model_config
from stages.video.errors import VideoError
from stages.video.probe import probe_video
from stages.video.sampling import make_policy
from stages.video.square_clips import SquareClipInput

GOLDEN = Path(__file__).parent / "golden"
PRESETS = {"vt-twins-youcook2": "vt-twins", "vt-twins-msrvtt": "vt-twins-msrvtt", "milnce-youcook2": "s3d-howto100m"}


@pytest.fixture(scope="module")
def golden():
    return json.loads((GOLDEN / "s3d_clips.json").read_text())


@pytest.fixture(scope="module")
def videos(tmp_path_factory, golden):
    paths = make_videos(tmp_path_factory.mktemp("s3d_golden"))
    same = {n: hashlib.sha256(p.read_bytes()).hexdigest() == golden["videos"][n]["sha256"] for n, p in paths.items()}
    return paths, same


def _policy(case: dict) -> dict:
    spec = {"policy": "milnce-retrieval", "fps": case["fps"], "num_clips": case["num_clips"], "clip_len": case["num_frames"]}
    if case["key"].endswith("/segment"):
        spec.update(segment_start_s=case["start"], segment_end_s=case["end"])
    return spec


def test_goldens_cover_the_protocols_and_the_awkward_videos(golden):
    assert set(VIDEOS) == set(golden["videos"])
    keys = {c["key"] for c in golden["cases"]}
    for proto in PRESETS:
        for v in VIDEOS:
            assert f"{proto}/{v}/whole" in keys
    short = next(c for c in golden["cases"] if c["key"] == "vt-twins-youcook2/short61_320x240/whole")
    assert [sum(i >= 0 for i in clip) for clip in short["indices"]] == [20] * 10  # 61 frames at 30 fps, F=10


def test_presets_are_the_reference_protocols(golden):
    for proto, name in PRESETS.items():
        case = next(c for c in golden["cases"] if c["protocol"] == proto)
        info = model_config(name)
        assert info.sampling == {"policy": "milnce-retrieval", "fps": case["fps"], "num_clips": case["num_clips"],
                                 "clip_len": case["num_frames"]}
        model = load_model(name, allow_random=True)
        assert model.preprocess() == SquareClipInput(size=224, flags="bilinear")


def test_frame_indices_and_pixels_equal_the_reference_loaders(golden, videos):
    paths, same_bytes = videos
    pixels = np.load(GOLDEN / "s3d_clips_pixels.npz")
    inp = SquareClipInput()
    checked_pixels = 0
    for case in golden["cases"]:
        dec = inp.read_video(paths[case["video"]], _policy(case))
        assert dec.selection.indices.tolist() == case["indices"], case["key"]
        # the decoded pixels show the frames the selection names (counter cells survive crop + scale)
        shown = [[read_number(f) for f in clip] for clip in dec.frames]
        assert shown == case["indices"], case["key"]
        if not same_bytes[case["video"]]:
            continue  # another encoder build made other pixels: indices only
        got = [hashlib.sha256(np.ascontiguousarray(c).tobytes()).hexdigest() for c in dec.frames]
        for key in pixels.files:
            k, c, t = key.rsplit("/", 2)
            if k == case["key"]:
                diff = np.abs(dec.frames[int(c), int(t), ::4, ::4].astype(int) - pixels[key].astype(int))
                assert np.percentile(diff, 99.9) <= 1 and diff.max() <= 2, (key, diff.max())
                checked_pixels += 1
        assert got == case["clip_sha256"], case["key"]  # bit-identical to the loader's uint8 frames
    assert checked_pixels == len(pixels.files) or not all(same_bytes.values())


def test_values_are_uint8_over_255_in_model_layout():
    frames = np.arange(2 * 4 * 224 * 224 * 3, dtype=np.int64).reshape(2, 4, 224, 224, 3) % 256
    out = SquareClipInput()(frames.astype(np.uint8))
    assert out.shape == (2, 3, 4, 224, 224) and out.dtype == np.float32
    np.testing.assert_array_equal(out[1, 2, 3, 5, 7], np.float32(frames[1, 3, 5, 7, 2]) / np.float32(255))


def test_float_timestamps_give_the_same_selection_on_cfr_video(golden, videos):
    paths, _ = videos
    for case in golden["cases"]:
        if case["video"] != "cfr30_320x240":
            continue
        info = probe_video(paths[case["video"]])
        s = make_policy(_policy(case)).select(info.timestamps_s, info.fps, end_s=info.end_s)
        assert s.indices.tolist() == case["indices"], case["key"]


def test_a_stream_without_frames_is_a_recorded_failure(tmp_path):
    from video_factory import make_audio_only

    with pytest.raises(VideoError) as e:
        SquareClipInput().read_video(make_audio_only(tmp_path / "a.mp4"), "milnce-retrieval")
    assert e.value.reason in ("no_video_stream", "too_short")


def test_the_engine_uses_the_square_clip_reader(videos, tmp_path):
    """A model whose preprocess() is a SquareClipInput gets its units from that reader; a bad file is a
    recorded failure and the engine goes on."""
    import torch

    from stages.backbones.base import ModelInfo, VideoTextModel
    from stages.features.engine import run_engine

    class MeanColour(VideoTextModel):
        def preprocess(self):
            return SquareClipInput(size=32)

        def encode_units(self, units):
            return torch.as_tensor(units).float().mean(dim=(2, 3, 4))

        def encode_text(self, captions):
            raise NotImplementedError

    model = MeanColour(ModelInfo(name="mean-colour", family="s3d", embed_dim=3, unit="clip"))
    paths, _ = videos
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00" * 1000)
    spec = {"policy": "milnce-retrieval", "fps": 10, "num_clips": 3, "clip_len": 8}
    got, failed = {}, []
    run_engine(model, [("bad", str(bad)), ("short", str(paths["short61_320x240"]))], spec,
               lambda vid, feats, times, mask, pooled: got.update({vid: feats}),
               lambda vid, reason, detail: failed.append((vid, reason)), batch_size=2, decode_workers=0)
    assert [v for v, _ in failed] == ["bad"] and set(got) == {"short"}
    want = SquareClipInput(size=32).read_video(paths["short61_320x240"], spec).frames
    np.testing.assert_allclose(got["short"], want.astype(np.float32).mean(axis=(1, 2, 3)) / 255, rtol=1e-5)


def test_features_equal_the_reference_model_on_the_same_video_file(videos, tmp_path):
    """vt-twins-msrvtt from the video file vs VT-TWINS' own s3dg.S3D on its own loader's clips, same random
    weights (tests/golden/s3d_features.json, from scripts/golden/s3d_features.py)."""
    import torch
    from golden_videos import s3d_signal_weights

    gold = json.loads((GOLDEN / "s3d_features.json").read_text())
    sd = s3d_signal_weights(gold["seed"], space_to_depth=False)
    total = sum(float(v.double().sum()) for v in sd.values())
    assert total == pytest.approx(gold["weights_sum"], rel=1e-9), "the seeded weights changed: rerun the golden script"
    ckpt = tmp_path / "pretrained.pth.tar"
    torch.save({f"module.{k}": v for k, v in sd.items()}, ckpt)  # the VT-TWINS release layout (DDP prefix)
    model = load_model("vt-twins-msrvtt", weights={"checkpoint": str(ckpt)})
    pre = model.preprocess()
    paths, _ = videos
    dec = pre.read_video(paths[gold["video"]], {**model.info.sampling, "num_clips": gold["num_clips"]})
    torch.set_num_threads(2)
    feats = model.encode_units(torch.from_numpy(pre(dec.frames))).numpy()
    want = np.array(gold["clip_embeddings"])
    assert feats.shape == want.shape
    assert np.abs(want[0] - want[1]).max() > 1e-2  # the weights carry the input: a wrong clip would show
    assert np.abs(feats - want).max() <= 1e-4 * max(1.0, np.abs(want).max())


def test_far_apart_clips_decoded_by_separate_seeks_give_the_same_pixels(golden, videos, monkeypatch):
    import stages.video.square_clips as sq

    paths, same_bytes = videos
    case = next(c for c in golden["cases"] if c["key"] == "vt-twins-youcook2/vfr_320x240/whole")
    monkeypatch.setattr(sq, "SEEK_GAP_S", 0.5)  # every clip its own ffmpeg run, each with its own seek
    dec = SquareClipInput().read_video(paths[case["video"]], _policy(case))
    assert dec.selection.indices.tolist() == case["indices"]
    assert [[read_number(f) for f in clip] for clip in dec.frames] == case["indices"]
    if same_bytes[case["video"]]:
        assert [hashlib.sha256(np.ascontiguousarray(c).tobytes()).hexdigest() for c in dec.frames] == case["clip_sha256"]


def test_many_wanted_frames_fit_in_one_ffmpeg_select(videos):
    """320 scattered frames (10 clips x 32) in one run: the select expression is a balanced tree, since ffmpeg
    rejects a flat sum of more than ~100 terms."""
    from stages.video.square_clips import decode_square

    paths, _ = videos
    info = probe_video(paths["cfr30_320x240"])
    need = np.arange(0, 300, 2)  # 150 separate ranges
    frames = decode_square(str(paths["cfr30_320x240"]), need, info, size=32)
    assert frames.shape == (150, 32, 32, 3)
    big = decode_square(str(paths["cfr30_320x240"]), need[::10], info, size=224)
    assert [read_number(f) for f in big] == need[::10].tolist()
