"""Completes tests/test_model_constants.py (issue 20): the resize/crop geometry and the architecture numbers of
every model YAML pinned to the reference file they come from, and a check that the pins can fail: every
pinned leaf of every configs/models/*.yaml, changed in a copy of the folder, makes the pinning test fail.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
import yaml

import test_model_constants as TMC

REPO = Path(__file__).resolve().parents[1]
KEYS = {"resize", "crop", "seq_layers", "proj_dim", "text_dim", "text_layers", "text_heads", "text_hidden",
        "vocab_size"}

CLIP_GEOM = "Resize(n_px, BICUBIC) then CenterCrop(n_px)"
_clip = lambda src: {"preprocess.resize": ("short", f"{src} {CLIP_GEOM}"),  # noqa: E731
                     "preprocess.crop": ("center", f"{src} {CLIP_GEOM}")}
C4C_RAW = f"{TMC.C4C} dataloaders/rawvideo_util.py:18-19"
C4C_LAYERS = ("seq_layers", 4, f"{TMC.C4C} main_task_retrieval.py:86 --cross_num_hidden_layers default=4")
DRL_LAYERS = ("seq_layers", 4, f"{TMC.DRL} tvr/models/modeling.py:77 cross config num_hidden_layers 4")
UCO_LAYERS = ("seq_layers", 4, f"{TMC.UCO} eval_t2v/main_clip4clip.py:86 --cross_num_hidden_layers default=4")
_S3D = ("square", "centre min(w, h) square, scaled to size (the MIL-NCE / VT-TWINS loaders)")
_TVTS_EXTRACT = {"preprocess.resize": ("exact", f"{TMC.TVTS} v2/downstream/feature_extraction_*.py Resize((224, 224))"),
                 "preprocess.crop": ("none", f"{TMC.TVTS} v2/downstream/feature_extraction_*.py (no crop)")}
DISTILBERT = (f"{TMC.LOC} clip/config/defaults.py:55 TEXTEMBED.MODEL = distilbert-base-uncased "
              "(its config.json: dim 768, n_layers 6, n_heads 12, hidden_dim 3072, vocab_size 30522)")

PINS: dict[str, dict[str, tuple[object, str]]] = {
    "clip-vit-b-32": _clip(TMC.OAI), "clip-vit-b-16": _clip(TMC.OAI), "clip-vit-l-14": _clip(TMC.OAI),
    **{name: {**_clip(C4C_RAW), f"params.{C4C_LAYERS[0]}": C4C_LAYERS[1:]}
       for name in ("clip4clip-meanp", "clip4clip-seqtransf")},
    **{name: {**_clip(f"{TMC.DRL} tvr/dataloaders/dataloader_retrieval.py:56-57"),
              f"params.{DRL_LAYERS[0]}": DRL_LAYERS[1:]} for name in ("drl-ti", "drl-wti")},
    "ucofia": {**_clip(f"{TMC.UCO} eval_t2v/dataloaders/rawvideo_util.py:27-28"),
               f"params.{UCO_LAYERS[0]}": UCO_LAYERS[1:]},
    "locvtp": {"preprocess.resize": ("short", f"{TMC.LOC} clip/data/datasets/howto.py:550 transforms.Resize(112)"),
               "preprocess.crop": ("center", f"{TMC.LOC} clip/data/datasets/howto.py:551 transforms.CenterCrop(112)"),
               "params.proj_dim": (256, f"{TMC.LOC} clip/modeling/clip/projection.py projection_dim (= embed_dim)"),
               "params.text_dim": (768, DISTILBERT), "params.text_layers": (6, DISTILBERT),
               "params.text_heads": (12, DISTILBERT), "params.text_hidden": (3072, DISTILBERT),
               "params.vocab_size": (30522, DISTILBERT)},
    **{name: {"preprocess.crop": _S3D} for name in ("s3d-howto100m", "s3d-howto100m-mixed5c", "vt-twins",
                                                     "vt-twins-msrvtt", "vt-twins-mixed5c")},
    "tvtsv2-b32": {**_TVTS_EXTRACT,
                   "protocols.zeroshot.preprocess.resize": ("short", f"{TMC.TVTS} v2/video_transforms Resize(268)"),
                   "protocols.zeroshot.preprocess.crop": ("center", f"{TMC.TVTS} v2/video_transforms CenterCrop(224)")},
    "tvtsv2-b16": dict(_TVTS_EXTRACT), "tvtsv2-h14": dict(_TVTS_EXTRACT),
}


def _load(root: Path, name: str) -> dict:
    return yaml.safe_load((root / "configs/models" / f"{name}.yaml").read_text())


@pytest.mark.parametrize("name", TMC.MODELS)
def test_geometry_and_architecture_numbers_are_pinned(name):
    TMC.assert_pinned(name, _load(REPO, name), PINS.get(name, {}), lambda key: key.rsplit(".", 1)[-1] in KEYS)


def _changed(v):
    if isinstance(v, bool):
        return not v
    if isinstance(v, (int, float)):
        return v * 1.01 + 1 if isinstance(v, float) else v + 1
    if isinstance(v, list):
        return [_changed(v[0])] + v[1:]
    return f"{v}-changed"


def _set(d: dict, dotted: str, value) -> None:
    *head, last = dotted.split(".")
    for k in head:
        d = d[k]
    d[last] = value


@pytest.mark.parametrize("name", TMC.MODELS)
def test_every_pinned_number_change_is_caught(name, tmp_path, monkeypatch):
    """Mutation check of the pins themselves: each pinned leaf changed alone in a copy of configs/models
    makes one of the two pinning tests fail (and the unchanged copy passes both)."""
    shutil.copytree(REPO / "configs/models", tmp_path / "configs/models")
    monkeypatch.setattr(TMC, "REPO", tmp_path)
    original = _load(tmp_path, name)
    path = tmp_path / "configs/models" / f"{name}.yaml"

    def both_pass() -> bool:
        try:
            TMC.test_published_numbers_of_every_model_yaml(name)
            _check_pins(tmp_path, name)
        except AssertionError:
            return False
        return True

    assert both_pass()
    keys = sorted(set(TMC.PUBLISHED[name]) | set(PINS.get(name, {})))
    assert keys
    for key in keys:
        d = copy.deepcopy(original)
        value = d
        for k in key.split("."):
            value = value[k]
        _set(d, key, _changed(value))
        path.write_text(yaml.safe_dump(d))
        assert not both_pass(), f"{name}: changing {key} from {value!r} went unnoticed"
    path.write_text(yaml.safe_dump(original))
    assert both_pass()


def _check_pins(root: Path, name: str) -> None:
    pins = PINS.get(name, {})
    for key, value in TMC._leaves(_load(root, name)):
        if key in pins:
            assert value == pins[key][0], f"{name}: {key}"
