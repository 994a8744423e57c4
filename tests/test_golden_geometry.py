"""vtpipe's input path, from the video file, against what each reference reader produced on the same file.

The goldens (tests/golden/geometry.{npz,json}) and the videos (tests/golden/videos) come from
scripts/golden/make_goldens.py, which ran the reference code (CLIP4Clip, DRL, TVTSv2, LocVTP at the commits
recorded in geometry.json). Here vtpipe runs its engine's decode worker (_VideoDataset: read_video with the
model protocol's sampling, decoder size and aspect, then its Preprocess) on the same files, without the
references: frame indices must be identical; preprocessed inputs within 1 grey level at the 99.9th
percentile and 2 at the maximum; padding frames exactly zero, as in the references.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from stages.backbones.checkpoints import preprocess_from_config
from stages.backbones.registry import model_config
from stages.features.engine import _VideoDataset

GOLDEN = Path(__file__).parent / "golden"
META = json.loads((GOLDEN / "geometry.json").read_text())
ARRAYS = np.load(GOLDEN / "geometry.npz")

# golden protocol -> (registered model, its protocol, Preprocess overrides)
PROTOCOLS = {
    "clip4clip": ("clip4clip-meanp", None, {}),
    "drl": ("drl-ti", None, {}),
    "tvtsv2-extract": ("tvtsv2-b32", None, {}),
    "tvtsv2-zeroshot": ("tvtsv2-b32", "zeroshot", {}),
    "locvtp": ("locvtp", None, {}),
    "locvtp-tv017": ("locvtp", None, {"antialias": True}),  # torchvision >= 0.17's Resize on tensors
}


def vtpipe_inputs(proto: str, video: str):
    """(frames [N, 3, h, w] float32, indices [N], pad [N]) as the extract engine makes them."""
    model, protocol, over = PROTOCOLS[proto]
    info = model_config(model, protocol)
    pre = dataclasses.replace(preprocess_from_config(info.preprocess), **over)
    ds = _VideoDataset([(video, str(GOLDEN / "videos" / f"{video}.mp4"))], info.sampling, pre, unit=info.unit,
                       aspect=info.aspect)
    item = ds[0]
    assert item.error is None, item.error
    units, idx = item.units, item.indices
    if units.ndim == 5:  # clips [U, 3, L, h, w] -> frames [U * L, 3, h, w]
        units = units.transpose(0, 2, 1, 3, 4).reshape(-1, *units.shape[1:2], *units.shape[3:])
    idx = np.asarray(idx).reshape(-1)
    return units, idx, pre


def grey(x: np.ndarray, pre) -> np.ndarray:
    mean = np.asarray(pre.mean if pre.mean is not None else (0, 0, 0), np.float64).reshape(3, 1, 1)
    std = np.asarray(pre.std if pre.std is not None else (1, 1, 1), np.float64).reshape(3, 1, 1)
    return (x.astype(np.float64) * std + mean) * 255.0


CASES = sorted(META["goldens"])


@pytest.mark.parametrize("key", CASES)
def test_input_equals_reference_reader(key):
    proto, video = key.split("/")
    g = META["goldens"][key]
    units, idx, pre = vtpipe_inputs(proto, video)
    if proto.startswith("locvtp"):
        # the golden holds frames k of the stream (PyAV order); LocVTP's dense clips put frame k at row k
        assert idx[: g["num_frames"]].tolist() == list(range(g["num_frames"]))
        rows = g["indices"]
    else:
        assert idx.tolist() == g["indices"], "frame indices differ from the reference reader's"
        mask = np.asarray(g["mask"], bool)
        assert (idx >= 0).tolist() == mask.tolist()
        rows = list(range(len(idx)))
        pad = ~mask
        if pad.any():  # references pad with zeros after normalisation
            assert g["pad_max_abs"] == 0.0
            assert np.abs(units[pad]).max() == 0.0
    ref = ARRAYS[key].astype(np.float64)
    got = grey(units[[rows[k] for k in g["stored"]]], pre)
    assert got.shape == ref.shape
    diff = np.abs(got - ref)
    p999, worst = float(np.percentile(diff, 99.9)), float(diff.max())
    assert p999 <= 1.0 and worst <= 2.0, f"{key}: grey-level diff p99.9 {p999:.3f}, max {worst:.3f}"


def test_goldens_cover_the_issue_videos():
    names = set(META["videos"])
    assert {"msrvtt_320x240", "wide_640x360", "portrait_360x640", "ntsc_352x288_2997", "vfr_320x240",
            "short_176x144", "anamorphic_176x144"} <= names
    assert set(PROTOCOLS) == {k.split("/")[0] for k in CASES}
