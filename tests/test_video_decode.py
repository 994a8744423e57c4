"""read_video on generated counter videos: every frame says its own number, so index sets are checked on
real decoded pixels (29.97 fps, variable frame rate, rotation, odd sizes, 4K, odd names included)."""

from __future__ import annotations

import logging
import pickle

import numpy as np
import pytest

from stages.contract.errors import ConfigError
from stages.video import VideoError, frame_timestamps, probe_video, read_video
from video_factory import make_counter_video, make_solid_video, read_counters, set_rotation


@pytest.fixture(scope="session")
def vids(tmp_path_factory):
    d = tmp_path_factory.mktemp("decode_videos")
    v = {
        "c30": make_counter_video(d / "c30.mp4", 90, 30),
        "c2997": make_counter_video(d / "c2997.mp4", 90, "30000/1001"),
        "vfr": make_counter_video(d / "vfr.mp4", 60, segments=[(20, 30), (20, 10), (20, 30)]),
        "long": make_counter_video(d / "long.mp4", 330, 30, width=80, height=48, gop=30),
        "one": make_counter_video(d / "one.mp4", 1, 30),
        "portrait": make_counter_video(d / "portrait.mp4", 12, 30, width=64, height=96),
        "odd": make_counter_video(d / "odd.mp4", 12, 30, width=97, height=63, pix_fmt="yuv444p"),
        "4k": make_counter_video(d / "4k.mp4", 2, 30, width=3840, height=2160, extra=["-preset", "ultrafast"]),
        "webm": make_counter_video(d / "w.webm", 30, 30, codec="libvpx-vp9", gop=10),
        "avi": make_counter_video(d / "a.avi", 30, 30, codec="mpeg4"),
        "red": make_solid_video(d / "red.mp4", (255, 0, 0)),
        "blue": make_solid_video(d / "blue.mp4", (0, 0, 255)),
        "audio": make_counter_video(d / "with audio.mkv", 30, 30, audio=True),
        "odd name": make_counter_video(d / "vidéo 日本 -x 'q'.mp4", 15, 30),
    }
    v["rot90"] = set_rotation(v["c30"], d / "rot90.mp4", 90)
    v["rot270"] = set_rotation(v["c30"], d / "rot270.mp4", -90)
    return v


def counters(path, policy, **kw):
    return read_counters(read_video(path, policy, **kw).frames).tolist()


# ---- exact index sets through real decoding ----------------------------------------------------------------
def test_all_frames_in_order(vids):
    for name in ("c30", "c2997", "vfr", "webm", "avi", "audio", "odd name"):
        d = read_video(vids[name], "all")
        assert counters(vids[name], "all") == list(range(d.num_frames)), name
        assert d.timestamps_exact, name


def test_fps_30(vids):
    assert counters(vids["c30"], {"policy": "fps", "fps": 3}) == [0, 10, 20, 30, 40, 50, 60, 70, 80]


def test_fps_2997_exact(vids):
    # 90 frames at 29.97 last 3.003 s: t = 0, 1/3, ..., 3 -> last frame with i*1001/30000 <= t
    assert counters(vids["c2997"], {"policy": "fps", "fps": 3}) == [0, 9, 19, 29, 39, 49, 59, 69, 79, 89]


def test_fps_variable_frame_rate(vids):
    # 20 frames at 30 fps, 20 at 10 fps (from 0.667 s), 20 at 30 fps (from 2.667 s)
    d = read_video(vids["vfr"], {"policy": "fps", "fps": 3})
    assert d.info.is_vfr
    assert read_counters(d.frames).tolist() == [0, 10, 20, 23, 26, 30, 33, 36, 40, 50]
    np.testing.assert_allclose(d.selection.times_s, np.arange(10) / 3)


def test_frame_timestamps_exact(vids):
    ts = frame_timestamps(vids["c2997"])
    assert ts.dtype == np.float64 and len(ts) == 90
    np.testing.assert_array_equal(ts, np.arange(90) * 1001 / 30000)


@pytest.mark.parametrize(
    "policy,expected",
    [
        ("clip4clip", [0, 30, 60, 90, 120, 150, 180, 210, 240, 270, 300, -1]),
        ({"policy": "clip4clip", "max_frames": 4, "slice_framepos": 2}, [0, 90, 180, 300]),  # linspace(0, 10, 4)
        ({"policy": "clip4clip", "max_frames": 4, "slice_framepos": 1}, [210, 240, 270, 300]),
        ("drl", [0, 30, 60, 90, 120, 150, 180, 210, 240, 270, 300, -1]),
        ({"policy": "drl", "max_frames": 4}, [0, 90, 180, 300]),
        ("tvtsv2-extract", [0, 29, 59, 89, 119, 149, 179, 209, 239, 269, 299, 329]),
        ("tvtsv2-eval", [13, 40, 68, 95, 123, 150, 178, 205, 233, 260, 288, 315]),
        ({"policy": "uniform", "num_frames": 3}, [0, 164, 329]),
    ],
)
def test_frame_policies_on_pixels(vids, policy, expected):
    assert counters(vids["long"], policy) == expected


def test_clip4clip_padding_is_zero_frames(vids):
    d = read_video(vids["long"], "clip4clip")
    assert d.mask.tolist() == [True] * 11 + [False]
    assert not d.frames[11].any() and d.frames[10].any()


def test_locvtp_clips(vids):
    d = read_video(vids["c30"], "locvtp")
    c = read_counters(d.frames)
    assert c.shape == (6, 16)
    assert c[0].tolist() == list(range(16))
    assert c[5].tolist() == list(range(80, 90)) + [89] * 6
    assert d.describe()["frames_decoded"] == 90  # each frame decoded once, repeats copied


def test_milnce_retrieval_clips(vids):
    # 11 s at 30 fps: starts linspace(0, 7.4, 10). ffmpeg's fps=10 filter (what the loaders cut with) puts in
    # slot j the last frame before start + (j + 1/2) / 10 s: frame k < 30 * start + 3 j + 1.5, i.e. 3 j + 1
    d = read_video(vids["long"], "milnce-retrieval")
    c = read_counters(d.frames)
    assert c.shape == (10, 32)
    assert c[0].tolist() == [3 * j + 1 for j in range(32)]
    assert c[9].tolist() == [223 + 3 * j for j in range(32)]
    d = read_video(vids["c30"], "milnce-retrieval")  # 3 s: slots with (j + 1/2) / 10 past the end are zeros
    c = read_counters(d.frames)
    assert c[0].tolist() == [3 * j + 1 for j in range(30)] + [-1, -1]
    assert not d.frames[0, 30:].any()


def test_milnce_ucf_short_video_zero_padded(vids):
    c = read_counters(read_video(vids["one"], "milnce-ucf").frames)
    assert c.shape == (10, 32) and (c[:, 0] == 0).all() and (c[:, 1:] == -1).all()


# ---- colour, size, orientation -------------------------------------------------------------------------------
def test_rgb_order(vids):
    red = read_video(vids["red"], "all").frames.reshape(-1, 3).mean(0)
    blue = read_video(vids["blue"], "all").frames.reshape(-1, 3).mean(0)
    assert red[0] > 200 and red[1] < 60 and red[2] < 60, red
    assert blue[2] > 200 and blue[0] < 60 and blue[1] < 60, blue


def test_short_side_and_size(vids):
    d = read_video(vids["c30"], {"policy": "fps", "fps": 3}, short_side=40)
    assert d.frames.shape == (9, 40, 60, 3) and (d.width, d.height) == (60, 40)
    assert read_counters(d.frames).tolist() == [0, 10, 20, 30, 40, 50, 60, 70, 80]
    d = read_video(vids["portrait"], "all", short_side=40)
    assert d.frames.shape == (12, 60, 40, 3)
    d = read_video(vids["c30"], "all", size=(64, 64))
    assert d.frames.shape == (90, 64, 64, 3)
    with pytest.raises(ConfigError):
        read_video(vids["c30"], "all", short_side=32, size=(8, 8))


def test_small_widths_decord_cannot_scale_still_work(vids):
    # decord's scaler breaks for a few output widths (48 here); read_video resizes after decoding instead
    d = read_video(vids["c30"], {"policy": "fps", "fps": 3}, short_side=32)
    assert d.frames.shape == (9, 32, 48, 3)
    assert read_counters(d.frames).tolist() == [0, 10, 20, 30, 40, 50, 60, 70, 80]


def test_rotation_output_is_display_orientation(vids):
    plain = read_video(vids["c30"], "all").frames
    r90 = read_video(vids["rot90"], "all")
    assert probe_video(vids["rot90"]).rotation == 90
    assert r90.frames.shape == (90, 96, 64, 3)
    # 90 degrees counter-clockwise, as ffmpeg's autorotate shows it
    np.testing.assert_array_equal(r90.frames, np.rot90(plain, k=1, axes=(1, 2)))
    r270 = read_video(vids["rot270"], "all", short_side=40)
    assert r270.frames.shape == (90, 60, 40, 3)
    back = np.rot90(r270.frames, k=1, axes=(1, 2))  # undo the clockwise turn
    assert read_counters(back).tolist() == list(range(90))


def test_odd_dimensions_and_4k(vids):
    d = read_video(vids["odd"], "all")
    assert d.frames.shape == (12, 63, 97, 3)
    assert read_counters(d.frames).tolist() == list(range(12))
    d = read_video(vids["4k"], "all", short_side=64)
    assert d.frames.shape == (2, 64, 113, 3)  # 64 * 3840 / 2160 = 113.8, truncated as torchvision does
    assert read_counters(d.frames).tolist() == [0, 1]


def test_one_frame_video(vids):
    d = read_video(vids["one"], {"policy": "fps", "fps": 3})
    assert d.num_frames == 1 and read_counters(d.frames).tolist() == [0]
    with pytest.raises(VideoError) as e:
        read_video(vids["one"], "all", min_frames=2)
    assert e.value.reason == "too_short"


def test_gpu_request_falls_back_cleanly(vids, caplog):
    with caplog.at_level(logging.WARNING):
        d = read_video(vids["c30"], {"policy": "fps", "fps": 3}, ctx="gpu")
    assert read_counters(d.frames).tolist() == [0, 10, 20, 30, 40, 50, 60, 70, 80]
    assert d.device.startswith("gpu") or d.device == "cpu"
    with pytest.raises(ConfigError):
        read_video(vids["c30"], "all", ctx="tpu")


def test_video_error_pickles():
    e = pickle.loads(pickle.dumps(VideoError("truncated", "cut short", "/x.mp4")))
    assert (e.reason, e.detail, e.path) == ("truncated", "cut short", "/x.mp4")
    assert e.as_record("v1", "compress") == {"id": "v1", "stage": "compress", "reason": "truncated", "detail": "cut short"}
