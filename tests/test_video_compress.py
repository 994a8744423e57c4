"""compress_video: sizes (portrait-correct), crops, exact 3 fps frames, rotation, atomic output."""

from __future__ import annotations

import numpy as np
import pytest

from stages.contract.errors import ConfigError
from stages.video import compress_video, output_size, probe_video, read_video
from stages.video.ffmpeg import has_encoder
from video_factory import encode_frames, make_counter_video, read_counters, set_rotation


@pytest.fixture(scope="session")
def src(tmp_path_factory):
    d = tmp_path_factory.mktemp("compress_src")
    # a frame whose centre 64x64 square is green and whose 16 px side bands are blue
    framed = np.zeros((3, 64, 96, 3), dtype=np.uint8)
    framed[:] = (0, 0, 255)
    framed[:, :, 16:80] = (0, 255, 0)
    v = {
        "c30": make_counter_video(d / "c30.mp4", 90, 30, audio=True),
        "c2997": make_counter_video(d / "c2997.mp4", 90, "30000/1001"),
        "vfr": make_counter_video(d / "vfr.mp4", 60, segments=[(20, 30), (20, 10), (20, 30)]),
        "short": make_counter_video(d / "short.mp4", 5, 30),
        "one": make_counter_video(d / "one.mp4", 1, 30),
        "portrait": make_counter_video(d / "portrait.mp4", 6, 30, width=64, height=96),
        "odd": make_counter_video(d / "odd.mp4", 6, 30, width=97, height=63, pix_fmt="yuv444p"),
        "framed": encode_frames(d / "framed.mp4", framed, 30),
        "dash": make_counter_video(d / "-dash name ü.mp4", 30, 30),
    }
    v["rot90"] = set_rotation(v["c30"], d / "rot90.mp4", 90)
    return v


def test_bundled_ffmpeg_has_libx264():
    assert has_encoder("libx264")


@pytest.mark.parametrize(
    "w,h,crop,legacy,expected",
    [
        (1280, 720, "none", False, (398, 224)),
        (640, 360, "none", False, (398, 224)),
        (720, 1280, "none", False, (224, 398)),  # portrait: short side (width) becomes 224
        (720, 1280, "none", True, (224, 126)),  # CLIP4Clip's bug: portrait squashed below 224
        (1280, 720, "none", True, (398, 224)),
        (97, 63, "none", False, (344, 224)),  # 224 * 97 / 63 = 344.9 -> even, rounded down: 344
        (176, 144, "none", False, (272, 224)),  # 273.8 -> 272, as CLIP4Clip's trunc(224*a/2)*2 (round gave 274)
        (240, 320, "none", False, (224, 298)),  # portrait: 298.7 -> 298, torchvision truncates the long side
        (1280, 720, "center", False, (224, 224)),
        (720, 1280, "square", False, (224, 224)),
        (224, 224, "none", False, (224, 224)),
    ],
)
def test_output_size(w, h, crop, legacy, expected):
    assert output_size(w, h, 224, crop, legacy) == expected


def test_truncate_to_even_rule():
    # 480x270 at 112 -> 199.1 -> 198: the long side is rounded down to even, as CLIP4Clip's expression does
    # for landscape video and torchvision's Resize truncates (rounding would give 200)
    assert output_size(480, 270, 112) == (198, 112)
    assert output_size(480, 270, 112, legacy_scale=True) == (198, 112)
    assert output_size(270, 480, 112) == (112, 198)  # portrait alike (the legacy expression squashes it)


@pytest.mark.parametrize(
    "name,expected",
    [
        ("c30", [0, 10, 20, 30, 40, 50, 60, 70, 80]),
        ("c2997", [0, 9, 19, 29, 39, 49, 59, 69, 79, 89]),
        ("vfr", [0, 10, 20, 23, 26, 30, 33, 36, 40, 50]),
        ("short", [0]),  # shorter than one 1/3 s interval
        ("one", [0]),
    ],
)
def test_output_frames_are_the_fps_policy(src, tmp_path, name, expected):
    dst = tmp_path / "out" / f"{name}.mp4"
    info = compress_video(src[name], dst, fps=3, size=64)
    got = read_counters(read_video(dst, "all").frames).tolist()
    assert got == expected
    # the same frames the 'fps' policy picks from the source
    assert read_video(src[name], {"policy": "fps", "fps": 3}).selection.indices.tolist() == expected
    assert info["frames"] == len(expected) and info["encoder"] == "libx264"
    out = probe_video(dst)
    assert out.codec == "h264" and not out.has_audio
    assert (out.width, out.height) == (96, 64)
    assert [p.name for p in dst.parent.iterdir()] == [dst.name]  # no temporaries left


def test_portrait_odd_and_legacy(src, tmp_path):
    assert compress_video(src["portrait"], tmp_path / "p.mp4", size=32)["height"] == 48
    i = compress_video(src["portrait"], tmp_path / "pl.mp4", size=32, legacy_scale=True)
    assert (i["width"], i["height"]) == (32, 20)  # squashed, as CLIP4Clip does
    i = compress_video(src["odd"], tmp_path / "o.mp4", size=32)
    assert (i["width"], i["height"]) == (48, 32)  # 32 * 97 / 63 = 49.3 -> 48 (even, rounded down)


def test_crops(src, tmp_path):
    compress_video(src["framed"], tmp_path / "n.mp4", size=32)
    none = read_video(tmp_path / "n.mp4", "all").frames
    assert none.shape[1:3] == (32, 48)
    assert none[0, 16, 2, 2] > 200  # blue side band kept
    sq = tmp_path / "s.mp4"
    assert compress_video(src["framed"], sq, size=32, crop="square")["width"] == 32
    f = read_video(sq, "all").frames[0].astype(int)
    assert f[..., 1].mean() > 200 and f[..., 2].mean() < 40  # only the green centre square is left
    ce = tmp_path / "c.mp4"
    i = compress_video(src["framed"], ce, size=32, crop="center")
    assert (i["width"], i["height"]) == (32, 32)
    assert read_video(ce, "all").frames[0, ..., 1].mean() > 200


def test_rotated_input_comes_out_upright(src, tmp_path):
    dst = tmp_path / "r.mp4"
    info = compress_video(src["rot90"], dst, size=64)
    out = probe_video(dst)
    assert (info["width"], info["height"]) == (64, 96) and out.rotation == 0
    frames = read_video(dst, "all").frames
    # upright = the source turned 90 degrees counter-clockwise; turning back gives readable counters
    assert read_counters(np.rot90(frames, k=-1, axes=(1, 2))).tolist() == [0, 10, 20, 30, 40, 50, 60, 70, 80]


def test_names_with_dash_space_and_unicode(src, tmp_path):
    dst = tmp_path / "out dir" / "-x ü.mp4"
    assert compress_video(src["dash"], dst, size=64)["frames"] == 3
    assert dst.is_file()


def test_existing_output_replaced_atomically(src, tmp_path):
    dst = tmp_path / "x.mp4"
    dst.write_bytes(b"old")
    compress_video(src["short"], dst, size=64)
    assert probe_video(dst).num_frames == 1


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"crop": "middle"}, "crop"),
        ({"size": 225}, "even"),
        ({"fps": 0}, "fps"),
        ({"crf": 99}, "crf"),
        ({"encoder": "nope264"}, "no encoder"),
    ],
)
def test_bad_parameters(src, tmp_path, kw, match):
    with pytest.raises(ConfigError, match=match):
        compress_video(src["short"], tmp_path / "y.mp4", **kw)
    assert not (tmp_path / "y.mp4").exists()


def test_timeout_is_a_video_error(src, tmp_path):
    from stages.video import VideoError

    with pytest.raises(VideoError) as e:
        compress_video(src["c30"], tmp_path / "t.mp4", timeout=0.001)
    assert e.value.reason == "timeout"
    assert list(tmp_path.iterdir()) == []
