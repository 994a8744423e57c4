"""Seeded sweeps: every index-based sampling policy against a slow, loop-by-loop re-telling of the reference
reader it claims to reproduce, over fractional frame rates (23.976, 29.97, 59.94, ...) and lengths from 1 frame
to a few hundred.

The slow versions are written the way the reference code reads (a loop over seconds and offsets for CLIP4Clip's
OpenCV reader, `range(0, n, stride)` for DRL, segment midpoints for TVTSv2's eval), with exact rational
arithmetic (`fractions.Fraction`) for timestamps, and numpy's own float formula where the reference calls
`linspace(...).astype(int)`; a policy that rounds where the reference truncates (or the reverse) fails on the
first length whose fractional part passes .5.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from stages.video.sampling import make_policy

RATES = [Fraction(24000, 1001), Fraction(30000, 1001), Fraction(60000, 1001), Fraction(25), Fraction(30),
         Fraction(15), Fraction(25, 2), Fraction(73, 10), Fraction(50)]


def _cases(seed: int, count: int = 120) -> list[tuple[int, Fraction]]:
    """Lengths 1..400 (every small length, then seeded) at every rate."""
    rng = np.random.default_rng(seed)
    lengths = list(range(1, 40)) + [int(x) for x in rng.integers(40, 400, size=count - 39)]
    return [(n, RATES[i % len(RATES)]) for i, n in enumerate(lengths)]


def _timestamps(n: int, rate: Fraction) -> np.ndarray:
    """Frame k at k / rate (as a container with a 1/rate tick would store it)."""
    return np.array([float(Fraction(k) / rate) for k in range(n)], dtype=np.float64)


def _trunc_linspace(stop: int, num: int) -> list[int]:
    """`np.linspace(0, stop, num).astype(int)` as the references call it, spelled out: numpy computes
    i * (stop / (num - 1)) in float64 and pins the last point to stop, so 21 * (153 / 63) = 50.999... -> 50
    where exact arithmetic says 51. The references inherit that, so the slow version keeps it."""
    if num == 1:
        return [0]
    step = stop / (num - 1)
    return [int(i * step) for i in range(num - 1)] + [int(stop)]


# ---- slow references ---------------------------------------------------------------------------------------
def slow_uniform(n: int, k: int) -> list[int]:
    return _trunc_linspace(n - 1, k)


def slow_clip4clip(n: int, native_fps: float, max_frames: int, framerate: int, slice_framepos: int) -> list[int]:
    fps = max(1, int(native_fps))  # OpenCV's CAP_PROP_FPS read as int
    total_s = (n + fps - 1) // fps
    step = max(1, fps // framerate)
    read: list[int] = []
    for sec in range(total_s + 1):
        offsets = list(range(0, fps, step))[:framerate]
        stop = False
        for off in offsets:
            pos = sec * fps + off
            if pos >= n:  # cap.read() fails: the reader stops
                stop = True
                break
            read.append(pos)
        if stop:
            break
    if len(read) > max_frames:
        if slice_framepos == 0:
            read = read[:max_frames]
        elif slice_framepos == 1:
            read = read[-max_frames:]
        else:
            read = [read[i] for i in _trunc_linspace(len(read) - 1, max_frames)]
    return read + [-1] * (max_frames - len(read))


def slow_drl(n: int, native_fps: float, max_frames: int, framerate: int) -> list[int]:
    stride = max(1, int(round(native_fps / framerate)))
    pos = list(range(0, n, stride))
    if len(pos) > max_frames:
        pos = [pos[i] for i in _trunc_linspace(len(pos) - 1, max_frames)]
    return pos + [-1] * (max_frames - len(pos))


def slow_tvtsv2_eval(n: int, num_frames: int) -> list[int]:
    m = min(num_frames, n)
    edges = _trunc_linspace(n, m + 1)
    mids = [(edges[i] + edges[i + 1] - 1) // 2 for i in range(m)]
    return mids + [-1] * (num_frames - m)


def slow_locvtp(n: int, clip_len: int) -> list[list[int]]:
    clips = []
    start = 0
    while start < n:
        clips.append([min(start + j, n - 1) for j in range(clip_len)])
        start += clip_len
    return clips


def slow_milnce_ucf(n: int, num_clips: int, clip_len: int) -> list[list[int]]:
    starts = _trunc_linspace(max(0, n - clip_len), num_clips)
    return [[s + j if s + j < n else -1 for j in range(clip_len)] for s in starts]


def slow_fps(n: int, rate: Fraction, fps: Fraction) -> list[int]:
    """Unit k shows the last frame whose time <= k / fps, for every k / fps before the stream's end."""
    end = Fraction(n) / rate
    out = []
    k = 0
    while Fraction(k) / fps < end or k == 0:
        t = Fraction(k) / fps
        out.append(max(i for i in range(n) if Fraction(i) / rate <= t))
        k += 1
    return out


# ---- the sweeps --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 8, 12, 16])
def test_uniform_and_tvtsv2_extract_sweep(k):
    for name in ("uniform", "tvtsv2-extract"):
        pol = make_policy({"policy": name, "num_frames": k})
        for n, rate in _cases(seed=k):
            got = pol.select(_timestamps(n, rate), float(rate)).indices.tolist()
            assert got == slow_uniform(n, k), (name, n, float(rate), k)


@pytest.mark.parametrize("max_frames,framerate,slice_framepos", [(12, 1, 2), (12, 1, 0), (12, 1, 1), (7, 2, 2),
                                                                 (32, 3, 2)])
def test_clip4clip_sweep(max_frames, framerate, slice_framepos):
    pol = make_policy({"policy": "clip4clip", "max_frames": max_frames, "framerate": framerate,
                       "slice_framepos": slice_framepos})
    for n, rate in _cases(seed=100 + max_frames * framerate + slice_framepos):
        n = n * 3  # long enough to pass max_frames seconds often
        if int(rate) < framerate:
            continue
        sel = pol.select(_timestamps(n, rate), float(rate))
        want = slow_clip4clip(n, float(rate), max_frames, framerate, slice_framepos)
        assert sel.indices.tolist() == want, (n, float(rate))
        assert sel.mask.tolist() == [i >= 0 for i in want]


@pytest.mark.parametrize("max_frames,framerate", [(12, 1), (12, 2), (64, 1), (5, 3)])
def test_drl_sweep(max_frames, framerate):
    pol = make_policy({"policy": "drl", "max_frames": max_frames, "framerate": framerate})
    for n, rate in _cases(seed=200 + max_frames + framerate):
        n = n * 3
        sel = pol.select(_timestamps(n, rate), float(rate))
        assert sel.indices.tolist() == slow_drl(n, float(rate), max_frames, framerate), (n, float(rate))


@pytest.mark.parametrize("num_frames", [4, 12, 16])
def test_tvtsv2_eval_sweep(num_frames):
    pol = make_policy({"policy": "tvtsv2-eval", "num_frames": num_frames})
    for n, rate in _cases(seed=300 + num_frames):
        sel = pol.select(_timestamps(n, rate), float(rate))
        want = slow_tvtsv2_eval(n, num_frames)
        assert sel.indices.tolist() == want, (n, float(rate))
        assert sel.mask.tolist() == [i >= 0 for i in want]


@pytest.mark.parametrize("clip_len", [1, 16, 7])
def test_locvtp_sweep(clip_len):
    pol = make_policy({"policy": "locvtp", "clip_len": clip_len})
    for n, rate in _cases(seed=400 + clip_len):
        assert pol.select(_timestamps(n, rate), float(rate)).indices.tolist() == slow_locvtp(n, clip_len), n


@pytest.mark.parametrize("num_clips,clip_len", [(10, 32), (4, 16), (3, 1)])
def test_milnce_ucf_sweep(num_clips, clip_len):
    pol = make_policy({"policy": "milnce-ucf", "num_clips": num_clips, "clip_len": clip_len})
    for n, rate in _cases(seed=500 + num_clips + clip_len):
        got = pol.select(_timestamps(n, rate), float(rate)).indices.tolist()
        assert got == slow_milnce_ucf(n, num_clips, clip_len), (n, float(rate))


@pytest.mark.parametrize("fps", [Fraction(3), Fraction(1), Fraction(10), Fraction(24000, 1001)])
def test_fps_sweep(fps):
    pol = make_policy({"policy": "fps", "fps": float(fps)})
    for n, rate in _cases(seed=600 + int(fps), count=60):
        got = pol.select(_timestamps(n, rate), float(rate)).indices.tolist()
        assert got == slow_fps(n, rate, fps), (n, float(rate), float(fps))
