"""Sampling policies at their edges, hand-worked: parameters normalised to plain Python numbers (the
provenance is JSON), the messages of refused parameters, the unit each policy reports, frame rates below
2 fps and framerates equal to the video's, the MIL-NCE float path against its exact integer-tick path on a
clock that does not start at 0, and the end-of-stream default. Written to kill the mutants of
stages/video/sampling.py that survived the policy and property tests (bench/mutation.sh)."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest

from stages.contract.errors import ConfigError
from stages.video import sampling as S

INT_FIELDS = [(S.UniformPolicy, "num_frames"), (S.Clip4ClipPolicy, "max_frames"), (S.Clip4ClipPolicy, "framerate"),
              (S.DrlPolicy, "max_frames"), (S.DrlPolicy, "framerate"), (S.Tvtsv2ExtractPolicy, "num_frames"),
              (S.Tvtsv2EvalPolicy, "num_frames"), (S.LocvtpPolicy, "clip_len"), (S.MilnceRetrievalPolicy, "num_clips"),
              (S.MilnceRetrievalPolicy, "clip_len"), (S.MilnceUcfPolicy, "num_clips"), (S.MilnceUcfPolicy, "clip_len")]
FLOAT_FIELDS = [(S.FpsPolicy, "fps"), (S.MilnceRetrievalPolicy, "fps")]


@pytest.mark.parametrize("cls,field", INT_FIELDS)
def test_integer_parameters_become_python_ints_and_bad_ones_are_named(cls, field):
    p = cls(**{field: np.int64(2)})
    assert type(getattr(p, field)) is int and getattr(p, field) == 2
    json.dumps(p.describe())  # provenance goes to JSON: no numpy scalars left
    with pytest.raises(ConfigError, match=rf"^sampling policy '{cls.name}': {field} must be a positive integer, "
                                          r"got 0$"):
        cls(**{field: 0})


@pytest.mark.parametrize("cls,field", FLOAT_FIELDS)
def test_float_parameters_become_python_floats_and_bad_ones_are_named(cls, field):
    p = cls(**{field: 5})
    assert type(getattr(p, field)) is float and getattr(p, field) == 5.0
    assert p.describe()[field] == 5.0 and json.dumps(p.describe())
    with pytest.raises(ConfigError, match=rf"^sampling policy '{cls.name}': {field} must be a positive number, "
                                          r"got -1$"):
        cls(**{field: -1})


@pytest.mark.parametrize("key", ["margin_s", "extra_s"])
def test_milnce_margins(key):
    assert getattr(S.MilnceRetrievalPolicy(**{key: 0}), key) == 0  # zero is allowed
    for bad in (-0.5, True, "0.4", None):
        with pytest.raises(ConfigError, match=rf"^sampling policy 'milnce-retrieval': {key} must be >= 0, "
                                              rf"got {bad!r}$"):
            S.MilnceRetrievalPolicy(**{key: bad})


def _ts(n, fps=10.0, t0=0.0):
    return t0 + np.arange(n) / fps


@pytest.mark.parametrize("policy,unit", [(S.FpsPolicy(), "frame"), (S.AllPolicy(), "frame"), (S.UniformPolicy(4), "frame"),
                                         (S.Clip4ClipPolicy(4), "frame"), (S.DrlPolicy(4), "frame"),
                                         (S.Tvtsv2ExtractPolicy(4), "frame"), (S.Tvtsv2EvalPolicy(4), "frame"),
                                         (S.LocvtpPolicy(4), "clip"), (S.MilnceRetrievalPolicy(num_clips=2, clip_len=4), "clip"),
                                         (S.MilnceUcfPolicy(2, 4), "clip")])
def test_each_selection_reports_its_unit_and_times(policy, unit):
    ts = _ts(40)
    sel = policy.select(ts, 10.0)
    assert sel.unit == unit == policy.unit
    real = sel.mask
    assert np.isfinite(sel.times_s[real]).all()
    assert sel.indices.dtype == np.int64


def test_padded_selections_keep_real_times():
    # Clip4Clip at 1 fps on a 3-frame, 1 fps video: frames 0, 1, 2 and one padding unit
    sel = S.Clip4ClipPolicy(max_frames=4).select(_ts(3, 1.0, t0=7.0), 1.0)
    assert sel.indices.tolist() == [0, 1, 2, -1] and sel.mask.tolist() == [True, True, True, False]
    assert sel.times_s[:3].tolist() == [0.0, 1.0, 2.0] and np.isnan(sel.times_s[3])


def test_clip4clip_below_two_fps_and_framerate_equal_to_the_videos():
    # OpenCV's int(fps) = 1: one frame a second is every frame (not every other one)
    assert S.Clip4ClipPolicy(max_frames=12).positions(5, 1.0).tolist() == [0, 1, 2, 3, 4]
    assert S.Clip4ClipPolicy(max_frames=12).positions(5, 1.9).tolist() == [0, 1, 2, 3, 4]
    # framerate 3 on a 3 fps video: interval 3 // 3 = 1, every frame
    assert S.Clip4ClipPolicy(max_frames=12, framerate=3).positions(7, 3.0).tolist() == [0, 1, 2, 3, 4, 5, 6]
    with pytest.raises(ConfigError, match=r"^sampling policy 'clip4clip': framerate 4 is above the video's 3 fps; "
                                          r"lower framerate$"):
        S.Clip4ClipPolicy(framerate=4).positions(7, 3.0)


def test_drl_stride_one_at_the_videos_own_rate():
    sel = S.DrlPolicy(max_frames=8, framerate=1).select(_ts(5, 1.0), 1.0)
    assert sel.indices.tolist() == [0, 1, 2, 3, 4, -1, -1, -1]
    sel = S.DrlPolicy(max_frames=8, framerate=2).select(_ts(5, 2.0), 2.0)
    assert sel.indices.tolist()[:5] == [0, 1, 2, 3, 4]


def test_fps_policy_default_end_is_one_native_frame_after_the_last():
    # frames every second, but the container says 2 fps: the stream ends half a second after the last frame
    ts = np.array([0.0, 1.0, 2.0])
    sel = S.FpsPolicy(fps=2.0).select(ts, 2.0)
    assert sel.times_s.tolist() == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert sel.indices.tolist() == [0, 0, 1, 1, 2]
    # an explicit end wins
    sel = S.FpsPolicy(fps=2.0).select(ts, 2.0, end_s=3.0)
    assert sel.times_s.tolist() == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]


@pytest.mark.parametrize("t0", [0.0, 1.5, 1234.25])
@pytest.mark.parametrize("end_s", [None, "given"])
def test_milnce_float_path_equals_its_integer_tick_path(t0, end_s):
    p = S.MilnceRetrievalPolicy(fps=10.0, num_clips=3, clip_len=4, margin_s=0.2, extra_s=0.1)
    ts = _ts(60, 25.0, t0)  # 25 fps, 2.4 s
    end = t0 + 2.5 if end_s else t0 + 59 / 25 + 1 / 25  # default: one native frame after the last
    got = p.select(ts, 25.0, end_s=(t0 + 2.5) if end_s else None)
    pts = np.round(ts * 1e6).astype(np.int64)
    want = p.select_ticks(pts, Fraction(1, 1_000_000), round(end * 1e6))
    np.testing.assert_array_equal(got.indices, want.indices)
    np.testing.assert_allclose(got.times_s, want.times_s, rtol=0, atol=1e-9)
    assert got.unit == "clip"


def test_milnce_default_end_uses_the_native_rate():
    p = S.MilnceRetrievalPolicy(fps=10.0, num_clips=2, clip_len=4, margin_s=0.0, extra_s=0.0)
    ts = _ts(20, 10.0)  # frames every 0.1 s, but the container claims 4 fps: the end is 0.25 s after the last
    a = p.select(ts, 4.0)
    b = p.select(ts, 4.0, end_s=1.9 + 0.25)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.times_s, b.times_s)
    assert a.times_s[-1] == pytest.approx(2.15 - 0.4)  # last clip start: end - clip_len / fps


def test_milnce_segment_start_and_single_frame():
    p = S.MilnceRetrievalPolicy(fps=10.0, num_clips=2, clip_len=4, margin_s=0.0, segment_start_s=1.0)
    sel = p.select(_ts(40, 10.0), 10.0)
    assert sel.times_s[0] == 1.0 and sel.indices[0, 0] == 10
    one = S.MilnceRetrievalPolicy(num_clips=2, clip_len=3).select_ticks(np.array([0]), Fraction(1, 1000), 40)
    assert one.indices.shape == (2, 3)
    with pytest.raises(ValueError, match=r"^no frames to sample from \(0 timestamps\)$"):
        S.MilnceRetrievalPolicy().select_ticks(np.array([], np.int64), Fraction(1, 1000), 0)


@pytest.mark.parametrize("bad", [True, "3", float("inf"), 0.0])
def test_float_parameters_refuse_booleans_strings_and_non_finite(bad):
    with pytest.raises(ConfigError, match=r"^sampling policy 'fps': fps must be a positive number, got "):
        S.FpsPolicy(fps=bad)


# ---- _prepare and make_policy, hand-worked (their mutants survived the policy and property tests) -------
def test_timestamps_of_any_shape_and_integer_dtype_are_float_seconds():
    # a [n, 1] column is read as its n timestamps, as a flat array would be
    col = np.array([[0.0], [0.5], [1.0], [1.5]])
    rel, end = S._prepare(col, 2.0, None)
    assert rel.shape == (4,) and rel.tolist() == [0.0, 0.5, 1.0, 1.5] and end == 2.0
    assert S.FpsPolicy(fps=2.0).select(col, 2.0).indices.tolist() == [0, 1, 2, 3]
    # whole-second integer timestamps: the times come back float64 (the FrameSelection contract)
    rel, end = S._prepare(np.array([3, 4, 5]), 1.0, None)
    assert rel.dtype == np.float64 and rel.tolist() == [0.0, 1.0, 2.0] and end == 3.0
    sel = S.AllPolicy().select([3, 4, 5], 1.0)
    assert sel.times_s.dtype == np.float64 and sel.times_s.tolist() == [0.0, 1.0, 2.0]


def test_bad_timestamps_are_refused_with_the_whole_message():
    with pytest.raises(ValueError, match=r"^no frames to sample from \(0 timestamps\)$"):
        S.AllPolicy().select(np.array([]), 30.0)
    with pytest.raises(ValueError, match=r"^timestamps_s must be sorted \(presentation order\)$"):
        S.AllPolicy().select(np.array([0.0, 1.0, 0.5]), 30.0)


def test_equal_timestamps_are_sorted_and_the_later_frame_is_shown():
    # frames 1 and 2 share t = 0.5 s (sorted, not strictly): accepted; at t = 0.5 the later one is shown
    ts = np.array([0.0, 0.5, 0.5, 1.0])
    assert S.AllPolicy().select(ts, 2.0).indices.tolist() == [0, 1, 2, 3]
    sel = S.FpsPolicy(fps=2.0).select(ts, 2.0)  # end = 1.0 + 1/2 = 1.5: t = 0, 0.5, 1.0
    assert sel.indices.tolist() == [0, 2, 3] and sel.times_s.tolist() == [0.0, 0.5, 1.0]


@pytest.mark.parametrize("native", [0.0, -25.0, float("nan"), None])
def test_default_end_without_a_usable_native_rate_is_the_median_gap(native):
    # frames every 0.5 s; no usable container rate: the end is 1.0 + median gap 0.5 = 1.5 s,
    # so 4 fps samples t = 0, 0.25, ..., 1.25 (6 units; the clamp 1.0 + 2 us alone would give 5)
    ts = np.array([0.0, 0.5, 1.0])
    assert S._prepare(ts, native, None)[1] == 1.5
    sel = S.FpsPolicy(fps=4.0).select(ts, native)
    assert sel.times_s.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0, 1.25]
    assert sel.indices.tolist() == [0, 0, 1, 1, 2, 2]
    # two frames: the one gap is the median (end 1.0: t = 0 .. 0.75)
    assert S._prepare(np.array([0.0, 0.5]), native, None)[1] == 1.0
    assert S.FpsPolicy(fps=4.0).select(np.array([0.0, 0.5]), native).indices.tolist() == [0, 0, 1, 1]


@pytest.mark.parametrize("native,end", [(1.0, 2.0), (0.5, 3.0), (0.25, 5.0)])
def test_default_end_at_native_rates_of_one_fps_and_below(native, end):
    # frames every second, container rate <= 1 fps: the end is one native frame (1 / native s) after the last
    ts = np.array([0.0, 1.0])
    assert S._prepare(ts, native, None)[1] == end
    assert S.FpsPolicy(fps=1.0).select(ts, native).times_s.tolist() == [float(k) for k in range(int(end))]


def test_unknown_parameters_name_what_the_policy_takes():
    with pytest.raises(ConfigError, match=r"^sampling policy 'all' has no parameter\(s\) \['x'\]; it takes none$"):
        S.make_policy({"policy": "all", "x": 1})
    with pytest.raises(ConfigError, match=r"^sampling policy 'fps' has no parameter\(s\) \['b', 'rate'\]; "
                                          r"it takes \['fps'\]$"):
        S.make_policy({"policy": "fps", "rate": 3, "b": 1})
