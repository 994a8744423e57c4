"""stages.backbones.preprocess against torchvision itself (the transforms every reference reader uses), over
more shapes and modes than the golden videos reach: Resize's output size, CenterCrop's offsets and zero
padding, float-tensor resizing with and without antialias, PIL resizing, Normalize, padding frames, clip
layout, the parameter checks and the provenance record. Written to kill the mutants of preprocess.py that
survived tests/test_geometry.py and tests/test_golden_geometry.py (bench/mutation.sh)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from stages.backbones.preprocess import (
    CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD, Preprocess, center_crop_offsets, resized_size,
)

MODES = {"bicubic": InterpolationMode.BICUBIC, "bilinear": InterpolationMode.BILINEAR,
         "nearest": InterpolationMode.NEAREST, "nearest-exact": InterpolationMode.NEAREST_EXACT}


def _frames(n=2, h=48, w=64, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)


def _tv_tensor(frames, size, mode, antialias, crop, mean, std, resize_to=None):
    """torchvision on float tensors: Resize(resize_to or size) -> CenterCrop(size) -> /255 -> Normalize."""
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    x = TF.resize(x, [resize_to or size], interpolation=MODES[mode], antialias=antialias)
    if crop:
        x = TF.center_crop(x, [size, size])
    x = x / 255.0
    if mean is not None:
        x = TF.normalize(x, list(mean), list(std))
    return x.numpy()


@pytest.mark.parametrize("h,w", [(1, 1), (3, 7), (7, 3), (10, 10), (99, 100), (100, 99), (480, 853), (853, 480),
                                 (1080, 1920), (17, 1000)])
@pytest.mark.parametrize("s", [1, 16, 112, 224])
def test_resized_size_is_torchvisions(h, w, s):
    got = TF.resize(torch.zeros(1, h, w), [s], antialias=False).shape[-2:]
    assert resized_size(h, w, s) == tuple(got)


@pytest.mark.parametrize("h,w", [(0, 5), (5, 0), (-1, 5)])
def test_resized_size_refuses_empty_frames(h, w):
    with pytest.raises(ValueError, match=f"bad frame size {w}x{h}"):
        resized_size(h, w, 224)


@pytest.mark.parametrize("h,w,s", [(224, 298, 224), (225, 300, 224), (5, 9, 2), (9, 5, 2), (7, 7, 3), (8, 8, 3)])
def test_center_crop_offsets_are_torchvisions(h, w, s):
    x = torch.arange(h * w, dtype=torch.float32).view(1, h, w)
    top, left = center_crop_offsets(h, w, s)
    assert torch.equal(TF.center_crop(x, [s, s]), x[:, top:top + s, left:left + s])


@pytest.mark.parametrize("mode", ["bicubic", "bilinear", "nearest", "nearest-exact"])
@pytest.mark.parametrize("antialias", [True, False])
@pytest.mark.parametrize("shape", [(48, 64), (64, 48), (30, 30), (12, 20)])  # down-, equal- and up-scaling
def test_torch_backend_equals_torchvision_on_float_tensors(mode, antialias, shape):
    fr = _frames(h=shape[0], w=shape[1], seed=shape[0])
    p = Preprocess(size=24, interpolation=mode, antialias=antialias, backend="torch", mean=IMAGENET_MEAN,
                   std=IMAGENET_STD)
    want = _tv_tensor(fr, 24, mode, antialias, True, IMAGENET_MEAN, IMAGENET_STD)
    np.testing.assert_allclose(p(fr), want, rtol=0, atol=1e-5)


def test_antialias_is_on_by_default_and_changes_down_scaling():
    fr = _frames(h=96, w=128, seed=3)
    on = Preprocess(size=24, interpolation="bilinear", mean=None, std=None)(fr)
    off = Preprocess(size=24, interpolation="bilinear", mean=None, std=None, antialias=False)(fr)
    np.testing.assert_allclose(on, _tv_tensor(fr, 24, "bilinear", True, True, None, None), atol=1e-5)
    assert np.abs(on - off).max() > 0.05


def test_decoder_backend_resizes_direct_calls_bilinearly_without_antialias():
    fr = _frames(h=96, w=128, seed=4)
    p = Preprocess(size=24, interpolation="bilinear", backend="decoder", antialias=True, mean=None, std=None)
    np.testing.assert_allclose(p(fr), _tv_tensor(fr, 24, "bilinear", False, True, None, None), atol=1e-5)


@pytest.mark.parametrize("mode", ["bicubic", "bilinear", "nearest"])
def test_pil_backend_equals_torchvision_on_pil_images(mode):
    fr = _frames(n=2, h=50, w=70, seed=5)
    p = Preprocess(size=32, resize_to=40, interpolation=mode, backend="pil")
    want = []
    for f in fr:
        im = TF.resize(Image.fromarray(f), [40], interpolation=MODES[mode])
        im = TF.center_crop(im, [32, 32])
        want.append(TF.normalize(TF.to_tensor(im), list(CLIP_MEAN), list(CLIP_STD)).numpy())
    np.testing.assert_allclose(p(fr), np.stack(want), rtol=0, atol=1e-5)


def test_frames_already_at_size_are_not_resampled():
    fr = _frames(h=16, w=16, seed=6)
    for backend in ("pil", "torch"):
        out = Preprocess(size=16, backend=backend, interpolation="bilinear", mean=None, std=None)(fr)
        np.testing.assert_array_equal(out, fr.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)


def test_small_frames_are_zero_padded_by_the_crop_like_torchvision():
    fr = _frames(n=1, h=5, w=9, seed=7)
    p = Preprocess(size=12, resize="exact", crop="center", backend="torch", interpolation="bilinear",
                   mean=None, std=None, resize_to=None)
    # exact resize makes 12x12: no padding; with resize_to smaller than size the crop pads
    np.testing.assert_allclose(p(fr), _tv_exact(fr, 12), atol=1e-5)
    p2 = Preprocess(size=12, resize_to=6, backend="torch", interpolation="bilinear", mean=None, std=None)
    want = _tv_tensor(fr, 12, "bilinear", True, True, None, None, resize_to=6)
    assert want.shape == (1, 3, 12, 12)
    np.testing.assert_allclose(p2(fr), want, atol=1e-5)
    assert (p2(fr)[0, :, :3] == 0).all()  # rows above the 6-row frame: padding


def _tv_exact(frames, size):
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    return (TF.resize(x, [size, size], interpolation=InterpolationMode.BILINEAR, antialias=True) / 255.0).numpy()


def test_no_crop_keeps_the_resized_frame():
    fr = _frames(h=30, w=40, seed=8)
    p = Preprocess(size=15, crop="none", backend="torch", interpolation="bilinear", mean=None, std=None)
    out = p(fr)
    assert out.shape == (2, 3, 15, 20)
    np.testing.assert_allclose(out, _tv_tensor(fr, 15, "bilinear", True, False, None, None), atol=1e-5)


def test_clips_are_channels_first_then_time_and_pads_zero():
    fr = np.stack([_frames(n=3, h=20, w=20, seed=s) for s in range(2)])  # [U=2, L=3, H, W, 3]
    p = Preprocess(size=10, backend="torch", interpolation="bilinear", mean=CLIP_MEAN, std=CLIP_STD)
    pad = np.array([[False, True, False], [False, False, False]])
    out = p(fr, pad=pad)
    assert out.shape == (2, 3, 3, 10, 10) and out.flags["C_CONTIGUOUS"]
    for u in range(2):
        want = _tv_tensor(fr[u], 10, "bilinear", True, True, CLIP_MEAN, CLIP_STD)  # [L, 3, h, w]
        if u == 0:
            want[1] = 0.0
        np.testing.assert_allclose(out[u], want.transpose(1, 0, 2, 3), atol=1e-5)
    with pytest.raises(ValueError, match=r"pad mask of shape \(3,\) for frames of leading shape \(2, 3\)"):
        p(fr, pad=np.zeros(3, bool))


@pytest.mark.parametrize("bad", [np.zeros((2, 8, 8, 3), np.float32), np.zeros((2, 8, 8, 4), np.uint8),
                                 np.zeros((8, 8, 3), np.uint8)])
def test_frames_must_be_uint8_rgb(bad):
    with pytest.raises(ValueError, match="expected uint8 RGB frames"):
        Preprocess(size=4)(bad)


@pytest.mark.parametrize("kw,msg", [
    ({"resize": "long"}, "Preprocess.resize must be 'short' or 'exact', got 'long'"),
    ({"crop": "random"}, "Preprocess.crop must be 'center' or 'none', got 'random'"),
    ({"interpolation": "area"}, "Preprocess.interpolation must be one of"),
    ({"backend": "cv2"}, "Preprocess.backend must be one of"),
    ({"backend": "pil", "interpolation": "nearest-exact"}, "'nearest-exact' is a torch mode"),
    ({"backend": "decoder", "interpolation": "bicubic"}, "the decoder backend resizes bilinearly"),
    ({"size": 0}, "Preprocess.size must be a positive integer, got 0"),
    ({"size": 2.5}, "Preprocess.size must be a positive integer, got 2.5"),
])
def test_bad_parameters_are_refused_with_the_field_named(kw, msg):
    with pytest.raises(ValueError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        Preprocess(**kw)


def test_valid_combinations_are_accepted():
    Preprocess(backend="decoder", interpolation="bilinear")
    Preprocess(backend="pil", interpolation="nearest")
    Preprocess(backend="torch", interpolation="nearest-exact", size=1)


def test_target_size():
    assert Preprocess(size=224).target_size(240, 320) == (224, 298)
    assert Preprocess(size=224, resize_to=256).target_size(240, 320) == (256, 341)
    assert Preprocess(size=224, resize="exact").target_size(240, 320) == (224, 224)


def test_describe():
    assert Preprocess(size=112, resize_to=128, interpolation="bilinear", antialias=False, mean=(0.5, 0.5, 0.5),
                      std=(0.5, 0.5, 0.5)).describe() == {
        "size": 112, "resize": "short", "resize_to": 128, "crop": "center", "interpolation": "bilinear",
        "backend": "torch", "antialias": False, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
    d = Preprocess(backend="pil", mean=None, std=None, crop="none", resize="exact").describe()
    assert d == {"size": 224, "resize": "exact", "resize_to": None, "crop": "none", "interpolation": "bicubic",
                 "backend": "pil", "antialias": None, "mean": None, "std": None}
    assert Preprocess().describe()["antialias"] is True


@pytest.mark.parametrize("h,w", [(5, 40), (40, 5), (5, 41), (41, 5), (7, 50), (50, 7), (9, 44), (44, 9), (3, 3),
                                 (4, 17), (17, 4), (4, 21), (21, 4)])  # 17 - 12 = 5, 21 - 12 = 9: odd half-offsets
@pytest.mark.parametrize("size", [12, 13, 16])
def test_crop_padding_on_one_or_both_short_sides_is_torchvisions(h, w, size):
    """The short side resized below the crop size (resize_to < size): torchvision's CenterCrop pads the short
    side(s) with zeros, left/top getting the smaller half, then crops at round((H - size) / 2)."""
    fr = _frames(n=1, h=h, w=w, seed=h * 100 + w)
    p = Preprocess(size=size, resize_to=4, backend="torch", interpolation="bilinear", mean=None, std=None)
    want = _tv_tensor(fr, size, "bilinear", True, True, None, None, resize_to=4)
    assert want.shape == (1, 3, size, size)
    np.testing.assert_allclose(p(fr), want, atol=1e-5)


def test_mode_mismatch_messages_in_full():
    with pytest.raises(ValueError, match=r"^Preprocess: 'nearest-exact' is a torch mode; Pillow's NEAREST is "
                                         r"'nearest'$"):
        Preprocess(backend="pil", interpolation="nearest-exact")
    with pytest.raises(ValueError, match=r"^Preprocess: the decoder backend resizes bilinearly \(swscale\); set "
                                         r"interpolation: bilinear$"):
        Preprocess(backend="decoder", interpolation="bicubic")


def test_an_integer_pad_mask_is_a_mask_not_indices():
    fr = _frames(n=3, h=8, w=8, seed=9)
    p = Preprocess(size=8, backend="torch", interpolation="bilinear", mean=None, std=None)
    out = p(fr, pad=[0, 1, 0])
    assert (out[1] == 0).all() and not (out[0] == 0).all() and not (out[2] == 0).all()


def test_clips_keep_non_square_frames_without_crop():
    fr = np.stack([_frames(n=2, h=12, w=20, seed=s) for s in range(3)])  # [U=3, L=2, 12, 20, 3]
    p = Preprocess(size=6, crop="none", backend="torch", interpolation="bilinear", mean=None, std=None)
    out = p(fr)
    assert out.shape == (3, 3, 2, 6, 10)
    np.testing.assert_allclose(out[1], _tv_tensor(fr[1], 6, "bilinear", True, False, None, None).transpose(1, 0, 2, 3),
                               atol=1e-5)
