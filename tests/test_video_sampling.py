"""Sampling policies on synthetic timestamps: the exact index sets of each reference reader."""

from __future__ import annotations

import numpy as np
import pytest

from stages.contract.errors import ConfigError
from stages.video.sampling import POLICIES, FrameSelection, make_policy


def cfr(n: int, num: int = 30, den: int = 1) -> np.ndarray:
    """Timestamps of n frames at num/den fps, as float64 from integer ticks (like the probe makes them)."""
    return np.arange(n, dtype=np.float64) * den / num


def sel(spec, ts, fps, end_s=None) -> FrameSelection:
    return make_policy(spec).select(ts, fps, end_s=end_s)


# ---- fps (exact, timestamp based) ---------------------------------------------------------------------
def test_fps_30():
    s = sel({"policy": "fps", "fps": 3}, cfr(60), 30.0)
    assert s.indices.tolist() == [0, 10, 20, 30, 40, 50]
    assert s.mask.all() and s.unit == "frame"
    np.testing.assert_allclose(s.times_s, np.arange(6) / 3)


def test_fps_2997_is_exact_not_every_9th():
    # frame i at i*1001/30000 s; t=k/3 shows the last frame with i*1001/30000 <= k/3
    s = sel({"policy": "fps", "fps": 3}, cfr(60, 30000, 1001), 30000 / 1001)
    assert s.indices.tolist() == [0, 9, 19, 29, 39, 49, 59]  # 7 units: the video lasts 2.002 s


def test_fps_variable_frame_rate():
    ts = np.array([0.0, 0.5, 0.6, 0.7, 2.0])
    s = sel({"policy": "fps", "fps": 2}, ts, 2.5, end_s=2.1)
    assert s.indices.tolist() == [0, 1, 3, 3, 4]
    np.testing.assert_allclose(s.times_s, [0, 0.5, 1.0, 1.5, 2.0])


def test_fps_origin_is_first_frame():
    s = sel({"policy": "fps", "fps": 3}, cfr(60) + 5.0, 30.0)
    assert s.indices.tolist() == [0, 10, 20, 30, 40, 50]
    assert s.times_s[0] == 0.0


def test_fps_shorter_than_one_interval_and_one_frame():
    assert sel({"policy": "fps", "fps": 3}, cfr(5), 30.0).indices.tolist() == [0]
    assert sel({"policy": "fps", "fps": 3}, cfr(1), 30.0).indices.tolist() == [0]


def test_fps_upsampling_repeats_frames():
    # 2 fps source sampled at 3 fps: t = 0, 1/3, 2/3, 1, 4/3, 5/3 over a 2 s video
    s = sel({"policy": "fps", "fps": 3}, cfr(4, 2), 2.0)
    assert s.indices.tolist() == [0, 0, 1, 2, 2, 3]
    assert s.needed_frames().tolist() == [0, 1, 2, 3]


# ---- simple ones -----------------------------------------------------------------------------------------
def test_all_and_uniform():
    assert sel("all", cfr(7), 30.0).indices.tolist() == list(range(7))
    assert sel({"policy": "uniform", "num_frames": 4}, cfr(10), 30.0).indices.tolist() == [0, 3, 6, 9]


# ---- CLIP4Clip -------------------------------------------------------------------------------------------
def test_clip4clip_short_video_zero_padded():
    s = sel("clip4clip", cfr(100), 30.0)  # 1 fps: 0, 30, 60, 90; 120 does not read
    assert s.indices.tolist() == [0, 30, 60, 90] + [-1] * 8
    assert s.mask.tolist() == [True] * 4 + [False] * 8
    assert np.isnan(s.times_s[4:]).all()


@pytest.mark.parametrize(
    "pos,expected",
    [
        (0, list(range(0, 360, 30))),
        (1, list(range(240, 600, 30))),
        (2, [0, 30, 90, 150, 180, 240, 300, 360, 390, 450, 510, 570]),  # linspace(0, 19, 12).astype(int) * 30
    ],
)
def test_clip4clip_slice_framepos(pos, expected):
    s = sel({"policy": "clip4clip", "slice_framepos": pos}, cfr(600), 30.0)
    assert s.indices.tolist() == expected and s.mask.all()


def test_clip4clip_uses_int_fps_and_framerate():
    # 29.97 -> int 29
    assert sel("clip4clip", cfr(90, 30000, 1001), 29.97).indices.tolist()[:5] == [0, 29, 58, 87, -1]
    # framerate 2 at 30 fps: offsets 0 and 15 in every second
    s = sel({"policy": "clip4clip", "framerate": 2}, cfr(60), 30.0)
    assert s.indices.tolist()[:5] == [0, 15, 30, 45, -1]


# ---- DRL -------------------------------------------------------------------------------------------------
def test_drl():
    s = sel("drl", cfr(100, 30000, 1001), 29.97)  # stride round(29.97) = 30
    assert s.indices.tolist() == [0, 30, 60, 90] + [-1] * 8
    s = sel("drl", cfr(900), 30.0)  # 30 positions -> linspace(0, 29, 12).astype(int)
    assert s.indices.tolist() == [0, 60, 150, 210, 300, 390, 450, 540, 630, 690, 780, 870]


def test_drl_includes_last_frame_on_stride():
    assert sel("drl", cfr(91), 30.0).indices.tolist()[:5] == [0, 30, 60, 90, -1]


# ---- TVTSv2 ----------------------------------------------------------------------------------------------
def test_tvtsv2_extract():
    assert sel("tvtsv2-extract", cfr(100), 30.0).indices.tolist() == list(range(0, 100, 9))
    assert sel("tvtsv2-extract", cfr(5), 30.0).indices.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 4]


def test_tvtsv2_eval_segment_midpoints():
    s = sel("tvtsv2-eval", cfr(100), 30.0)
    assert s.indices.tolist() == [3, 11, 20, 28, 36, 45, 53, 61, 70, 78, 86, 95]
    s = sel("tvtsv2-eval", cfr(5), 30.0)
    assert s.indices.tolist() == [0, 1, 2, 3, 4] + [-1] * 7
    assert s.mask.sum() == 5


# ---- LocVTP ----------------------------------------------------------------------------------------------
def test_locvtp_clips_last_padded_with_final_frame():
    s = sel("locvtp", cfr(40), 30.0)
    assert s.unit == "clip" and s.indices.shape == (3, 16)
    assert s.indices[0].tolist() == list(range(16))
    assert s.indices[1].tolist() == list(range(16, 32))
    assert s.indices[2].tolist() == list(range(32, 40)) + [39] * 8
    np.testing.assert_allclose(s.times_s, [0, 16 / 30, 32 / 30])
    assert sel("locvtp", cfr(1), 30.0).indices.tolist() == [[0] * 16]


# ---- MIL-NCE / VT-TWINS ----------------------------------------------------------------------------------
def test_milnce_retrieval():
    """The loaders' ffmpeg cut (-ss start, fps=10): slot j shows the last frame with t < start + (j + 1/2) / 10."""
    s = sel("milnce-retrieval", cfr(300), 30.0)  # 10 s: starts linspace(0, 10 - 3.2 - 0.4, 10)
    assert s.indices.shape == (10, 32) and s.mask.all()
    np.testing.assert_allclose(s.times_s, np.linspace(0, 6.4, 10))
    # frame 3j+1 is at (j + 1/3) / 10 s -> nearest slot j; frame 3j+2 at (j + 2/3) / 10 -> slot j+1
    assert s.indices[0].tolist() == [3 * j + 1 for j in range(32)]
    # start 0.7111 s: frames from 22 (0.7333 s) on; frame 22 -> slot 0, frames 23-25 -> slot 1, ...
    assert s.indices[1].tolist() == [22 + 3 * j for j in range(32)]
    assert s.indices[9].tolist() == [193 + 3 * j for j in range(32)]  # start 6.4 s = frame 192 exactly


def test_milnce_retrieval_short_video_zero_padded():
    s = sel("milnce-retrieval", cfr(30), 30.0)  # 1 s: every clip starts at 0, slots 0..9 then zeros
    assert (s.times_s == 0).all()
    assert s.indices[0].tolist() == [3 * j + 1 for j in range(10)] + [-1] * 22
    assert (s.indices == s.indices[0]).all()
    s = sel("milnce-retrieval", cfr(61), 30.0)  # 2.033 s: 20 real frames (the rounded end is slot 20)
    assert (s.indices[0] >= 0).sum() == 20


def test_milnce_retrieval_segment_is_not_clamped_to_the_video():
    s = sel({"policy": "milnce-retrieval", "segment_start_s": 5.0, "segment_end_s": 20.0}, cfr(300), 30.0)
    assert s.times_s[-1] == pytest.approx(20 - 3.2 - 0.4)  # the loaders use the annotation's end as is
    assert (s.indices[-1] == -1).all()  # past the end of the video: all zero frames, the clip still counts
    assert s.mask.all()


def test_milnce_ucf():
    s = sel("milnce-ucf", cfr(100), 30.0)
    starts = [0, 7, 15, 22, 30, 37, 45, 52, 60, 68]
    assert s.indices[:, 0].tolist() == starts
    assert all(s.indices[i].tolist() == list(range(st, st + 32)) for i, st in enumerate(starts))
    s = sel("milnce-ucf", cfr(20), 30.0)
    assert (s.indices == np.array(list(range(20)) + [-1] * 12)).all()


# ---- the registry ----------------------------------------------------------------------------------------
def test_policy_names():
    assert set(POLICIES) == {
        "fps", "all", "uniform", "clip4clip", "drl", "tvtsv2-extract", "tvtsv2-eval", "locvtp",
        "milnce-retrieval", "milnce-ucf",
    }


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_describe_round_trips(name):
    p = make_policy(name)
    d = p.describe()
    assert d["policy"] == name and d["unit"] == p.unit
    assert make_policy(d) == p
    s = p.select(cfr(50), 30.0)
    assert s.indices.dtype == np.int64 and s.mask.dtype == bool and s.times_s.shape == (s.num_units,)
    assert s.indices.max() < 50


@pytest.mark.parametrize(
    "spec,match",
    [
        ({"policy": "nope"}, "unknown sampling policy 'nope'"),
        ({"policy": "fps", "fps": 0}, "fps must be a positive number"),
        ({"policy": "fps", "rate": 3}, "no parameter"),
        ({"policy": "clip4clip", "slice_framepos": 3}, "slice_framepos"),
        ({"policy": "uniform", "num_frames": 2.5}, "positive integer"),
        ({"fps": 3}, "'policy' key"),
    ],
)
def test_bad_specs(spec, match):
    with pytest.raises(ConfigError, match=match):
        make_policy(spec)


# ---- the shared pieces every policy stands on (mutants of these survived the policy tests) -----------------
def test_frame_selection_normalises_and_checks_its_arrays():


    fs = FrameSelection(np.array([1, 2], np.int32), np.ones(2, bool), np.zeros(2))
    assert fs.indices.dtype == np.int64 and fs.num_units == 2 and fs.clip_len is None
    with pytest.raises(ValueError, match=r"indices \(2,\), mask \(3,\), times \(2,\)"):
        FrameSelection(np.array([1, 2]), np.ones(3, bool), np.zeros(2))
    with pytest.raises(ValueError, match=r"times \(1,\)"):
        FrameSelection(np.array([1, 2]), np.ones(2, bool), np.zeros(1))
    clips = FrameSelection(np.array([[3, -1, 3], [1, -1, 2]]), np.ones(2, bool), np.zeros(2), "clip")
    assert clips.clip_len == 3 and clips.needed_frames().tolist() == [1, 2, 3]  # once each, no padding


def test_prepare_origin_end_and_bad_timestamps():
    from stages.video.sampling import TIME_EPS, _prepare

    rel, end = _prepare(np.array([2.0, 2.5, 3.0]), 2.0, None)  # origin = first frame; end = last + 1/fps
    assert rel.tolist() == [0.0, 0.5, 1.0] and end == 1.5
    assert _prepare(np.array([0.0, 0.5, 1.0]), 0.0, None)[1] == 1.5  # no rate: the median frame gap
    assert _prepare(np.array([2.0, 2.5, 3.0]), 2.0, 10.0)[1] == 8.0  # an explicit end, on the same clock
    assert _prepare(np.array([2.0, 2.5, 3.0]), 2.0, 2.5)[1] == 1.0 + 2 * TIME_EPS  # never before the last frame
    assert _prepare(np.array([5.0]), 0.0, None)[1] == 2 * TIME_EPS  # one frame, no rate
    with pytest.raises(ValueError, match="0 timestamps"):
        _prepare(np.array([]), 30.0, None)
    with pytest.raises(ValueError, match="sorted"):
        _prepare(np.array([0.0, 1.0, 0.5]), 30.0, None)
