"""Resize geometry, resize backends, padding, protocols, precision and anamorphic video (issue 13).

Hand-worked numbers: torchvision's Resize(224) on 320x240 gives 298x224 (int(224 * 320 / 240) = int(298.67)),
CenterCrop(224) then starts at x = int(round((298 - 224) / 2)) = 37.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stages.backbones.preprocess import CLIP_MEAN, CLIP_STD, Preprocess, center_crop_offsets, resized_size
from stages.backbones.registry import load_model, model_config
from stages.features.engine import decoder_resize
from stages.contract.errors import ConfigError
from stages.video.encode import compress_video, filter_chain
from stages.video.decode import read_video
from stages.video.ffmpeg import find_ffmpeg
from stages.video.probe import probe_video, short_side_size

GOLDEN_VIDEOS = Path(__file__).parent / "golden" / "videos"


@pytest.mark.parametrize(
    "w,h,expected_hw",
    [
        (320, 240, (224, 298)),  # MSR-VTT: 298.67 -> 298 (rounding gave 299)
        (240, 320, (298, 224)),  # portrait alike
        (352, 288, (224, 273)),  # 273.78
        (176, 144, (224, 273)),
        (640, 352, (224, 407)),  # 407.27
        (720, 406, (224, 397)),  # 397.24
        (406, 720, (397, 224)),
        (224, 224, (224, 224)),
    ],
)
def test_resize_truncates_the_long_side_like_torchvision(w, h, expected_hw):
    assert resized_size(h, w, 224) == expected_hw
    # the decoder's size rule is the same one (w, h order)
    assert short_side_size(w, h, 224) == expected_hw[::-1]


def test_center_crop_offset_of_msrvtt_frames():
    assert center_crop_offsets(224, 298, 224) == (0, 37)
    assert center_crop_offsets(224, 299, 224) == (0, 38)  # what rounding the long side used to give


def _edges(h=240, w=320, seed=0):
    """Sharp-edged random blocks: where one float pass and Pillow's two uint8 passes part."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(h // 8, w // 8, 3), dtype=np.uint8)
    return np.repeat(np.repeat(blocks, 8, axis=0), 8, axis=1)[None]


def test_pil_backend_is_pillow_resize_then_torchvision_crop_and_normalise():
    fr = _edges()
    got = Preprocess(backend="pil")(fr)[0]
    # by hand: Pillow bicubic to 298x224, crop x 37..261, / 255, CLIP mean/std
    img = np.asarray(Image.fromarray(fr[0]).resize((298, 224), Image.BICUBIC)).astype(np.float32)
    ref = torch.from_numpy(img[:, 37:261]).permute(2, 0, 1) / 255.0
    ref = (ref - torch.tensor(CLIP_MEAN).view(3, 1, 1)) / torch.tensor(CLIP_STD).view(3, 1, 1)
    np.testing.assert_array_equal(got, ref.numpy())
    # a single float pass differs by far more than a grey level at sharp edges: the backend matters
    torch_pass = Preprocess(backend="torch")(fr)[0]
    assert np.abs(torch_pass - got).max() * 255 * min(CLIP_STD) > 10


def test_pil_nearest_differs_from_torch_legacy_nearest():
    fr = _edges()
    pil = Preprocess(size=224, resize_to=268, interpolation="nearest", backend="pil")(fr)
    tch = Preprocess(size=224, resize_to=268, interpolation="nearest", backend="torch")(fr)
    assert pil.shape == tch.shape == (1, 3, 224, 224)
    assert (np.abs(pil - tch) > 1e-6).mean() > 0.05  # torch's legacy 'nearest' is not Pillow's NEAREST


def test_torch_backend_antialias_switch():
    fr = _edges()
    on = Preprocess(size=112, interpolation="bilinear", mean=None, std=None, antialias=True)(fr)
    off = Preprocess(size=112, interpolation="bilinear", mean=None, std=None, antialias=False)(fr)
    x = torch.from_numpy(fr).permute(0, 3, 1, 2).float() / 255
    ref = torch.nn.functional.interpolate(x, size=(112, 149), mode="bilinear", align_corners=False, antialias=False)
    np.testing.assert_allclose(off, ref[..., 18:130].numpy(), atol=1e-6)  # crop x = round(37 / 2) = 18
    assert np.abs(on - off).max() > 0.05


def test_padding_frames_are_zero_after_normalisation():
    fr = np.concatenate([_edges(), np.zeros((2, 240, 320, 3), np.uint8)])
    out = Preprocess(backend="pil")(fr, pad=np.array([False, True, True]))
    assert out.shape == (3, 3, 224, 224)
    assert np.all(out[1:] == 0.0) and np.abs(out[0]).max() > 0
    # without the mask a black frame is -mean/std, not zero (what vtpipe used to feed)
    black = Preprocess(backend="pil")(fr[1:2])
    assert black.min() < -1.5
    clips = Preprocess(backend="pil")(fr[None], pad=np.array([[False, True, True]]))  # [U, L, ...] clips
    assert clips.shape == (1, 3, 3, 224, 224) and np.all(clips[0, :, 1:] == 0)
    with pytest.raises(ValueError, match="pad mask"):
        Preprocess()(fr, pad=np.array([True]))


def test_only_the_decoder_backend_lets_the_decoder_resize():
    assert decoder_resize(Preprocess(backend="pil")) is None
    assert decoder_resize(Preprocess(backend="torch", interpolation="bilinear")) is None  # LocVTP: full-size frames
    f = decoder_resize(Preprocess(backend="decoder", interpolation="bilinear"))
    assert f(240, 320) == (298, 224)
    assert decoder_resize(Preprocess(backend="pil"), fast_resize=True)(240, 320) == (298, 224)
    with pytest.raises(ValueError, match="bilinear"):
        Preprocess(backend="decoder", interpolation="bicubic")


def test_protocols_are_selectable_and_listed():
    ext = model_config("tvtsv2-b32")
    zs = model_config("tvtsv2-b32", "zeroshot")
    assert ext.protocol == "extract" and "zeroshot" in ext.protocols
    assert ext.preprocess["resize"] == "exact" and ext.preprocess["backend"] == "pil"
    assert zs.sampling["policy"] == "tvtsv2-eval"
    assert (zs.preprocess["resize_to"], zs.preprocess["interpolation"], zs.preprocess["backend"]) == (268, "nearest", "pil")
    assert model_config("tvtsv2-b32", "extract").preprocess == ext.preprocess
    with pytest.raises(ConfigError, match="no protocol 'nope'"):
        model_config("tvtsv2-b32", "nope")


@pytest.mark.parametrize("name,precision", [("locvtp", "fp32"), ("tvtsv2-b32", "fp32"), ("vt-twins", "fp32"),
                                            ("s3d-howto100m", "fp32"), ("clip4clip-meanp", "fp16"), ("drl-wti", "fp16")])
def test_reference_precision(name, precision):
    assert model_config(name).precision == precision


def test_cpu_runs_fp32_whatever_is_asked():
    m = load_model("shapes-tiny", amp_dtype="bf16")  # its weights ship with vtpipe
    assert m.precision == "fp32" and m.amp_dtype == "bf16"
    assert load_model("shapes-tiny", amp_dtype="auto").amp_dtype is None


# --- anamorphic video --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def anamorphic(tmp_path_factory):
    """176x144 stored pixels, sample aspect 128:117 (displayed 4:3 PAL-ish: 192.5 x 144)."""
    import subprocess

    dst = tmp_path_factory.mktemp("ana") / "ana.mp4"
    subprocess.run([find_ffmpeg(), "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=176x144:rate=10:duration=1", "-vf", "setsar=128/117:max=1000",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", str(dst)], check=True)
    return dst


def test_probe_reads_the_sample_aspect_ratio(anamorphic):
    info = probe_video(anamorphic)
    assert (info.width, info.height) == (176, 144) and str(info.sar) == "128/117"
    assert info.aspect_size("stored") == (176, 144)
    assert info.aspect_size("display") == (193, 144)  # 176 * 128 / 117 = 192.5 -> 193


def test_decoding_gives_stored_pixels_unless_display_is_asked(anamorphic):
    assert read_video(anamorphic, "all").frames.shape[1:3] == (144, 176)  # what every reference reader sees
    assert read_video(anamorphic, "all", aspect="display").frames.shape[1:3] == (144, 193)


def test_compress_keeps_stored_pixels_and_their_aspect_or_corrects_to_display(anamorphic, tmp_path):
    stored = compress_video(anamorphic, tmp_path / "s.mp4")
    assert (stored["width"], stored["height"]) == (272, 224)  # stored pixels scaled: int(224 * 176 / 144) even
    sar = probe_video(tmp_path / "s.mp4").sar
    assert abs(float(sar) - 128 / 117) < 0.01  # the picture still displays 4:3 (it used to be squashed to 1:1)
    disp = compress_video(anamorphic, tmp_path / "d.mp4", aspect="display")
    assert (disp["width"], disp["height"]) == (298, 224) and disp["sar"] == "1:1"  # 224 * 192.5 / 144 = 299.5
    sq = compress_video(anamorphic, tmp_path / "q.mp4", aspect="display", crop="square")
    assert "crop=132:144" in sq["filter"]  # 144 display pixels wide = 144 * 117 / 128 = 131.6 stored pixels


def test_filter_chain_for_square_pixels_is_unchanged():
    assert filter_chain(320, 240, 3, 224, "none", False) == "fps=3/1:round=up,scale=298:224,setsar=1,format=yuv420p"
    with pytest.raises(ConfigError, match="aspect"):
        filter_chain(320, 240, 3, 224, "none", False, aspect="squashed")


def test_vtpipe_models_lists_every_protocol():
    from conftest import run_cli

    out = run_cli("models").stdout
    assert "protocol* extract: sampling policy=tvtsv2-extract" in out
    assert "protocol zeroshot: sampling policy=tvtsv2-eval,num_frames=12; short 268 nearest (pil), crop center 224" in out
    assert "short 112 bilinear (torch, no antialias), crop center 112; fp32 on CUDA" in out


def test_model_protocol_reaches_the_extract_plan_and_changes_its_fingerprint():
    from pipeline import config as config_mod
    from stages import extract
    from stages.contract.layout import Layout

    def plan(protocol, amp="auto"):
        cfg = config_mod.resolve({"stages": ["extract"], "input": {"videos": str(GOLDEN_VIDEOS)},
                                  "model": {"name": "tvtsv2-b32", "allow_random": True, "protocol": protocol},
                                  "extract": {"amp": amp}})
        return extract.sampling_spec(cfg), extract.plan(cfg, Layout.custom("/tmp/x", extract_dir="/tmp/x"))[0]

    spec, task = plan("zeroshot")
    assert spec["policy"] == "tvtsv2-eval" and task.params["protocol"] == "zeroshot"
    assert task.params["preprocess"]["interpolation"] == "nearest"
    spec0, task0 = plan(None)
    assert spec0["policy"] == "tvtsv2-extract" and task0.params["protocol"] == "extract"
    assert task.fingerprint != task0.fingerprint
    assert plan(None, "bf16")[1].fingerprint != task0.fingerprint  # precision changes what the features are
    assert task0.params["aspect"] == "stored"  # every reference reads stored pixels
