"""Every published number in configs/models/*.yaml, pinned to the literal value in the reference file it comes
from (not to the project's own constants): change a mean, a size, an interpolation, a frame count, a word
limit or a precision in a model YAML and a test here fails, naming the file the number was read from.

A leaf whose key is in PINNED (every YAML, protocols included) must have an entry in PUBLISHED; a new model or
a new protocol with such a number fails until its value is pinned here with its source.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

# keys whose values are reference facts (the rest: family, unit, arch names, vtpipe's own choices)
PINNED = {"size", "resize_to", "interpolation", "antialias", "mean", "std", "fps", "framerate", "max_frames",
          "slice_framepos", "num_frames", "num_clips", "clip_len", "max_words", "max_length", "precision", "flags",
          "embed_dim"}

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]  # openai/CLIP clip/clip.py _transform Normalize(...)
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
IMAGENET_MEAN = [0.485, 0.456, 0.406]  # TVTS 290a63e v2/downstream/feature_extraction_TVTSv2_B_32.py:57
IMAGENET_STD = [0.229, 0.224, 0.225]

C4C = "ArrowLuo/CLIP4Clip@508ffa3"
DRL = "foolwood/DRL@475f96c"
TVTS = "TencentARC/TVTS@290a63e"
VTT = "KoDohwan/VT-TWINS@1103645"
MIL = "antoine77340/MIL-NCE_HowTo100M@b282b15"
LOC = "mengcaopku/LocVTP@229bef6"
UCO = "Ziyang412/UCoFiA@6098be2"
OAI = "openai/CLIP clip/clip.py _transform, clip/model.py convert_weights"


def _clip_image(source: str, precision: str = "fp16") -> dict:
    return {"preprocess.size": (224, source), "preprocess.interpolation": ("bicubic", source),
            "preprocess.mean": (CLIP_MEAN, source), "preprocess.std": (CLIP_STD, source),
            "precision": (precision, source)}


def _c4c_sampling(source: str) -> dict:
    return {"sampling.framerate": (1, source), "sampling.max_frames": (12, source),
            "sampling.slice_framepos": (2, source), "params.max_words": (32, source), "embed_dim": (512, source)}


def _tvts(source: str, dim: int, precision: str) -> dict:
    return {"preprocess.size": (224, source + " Resize((224, 224))"), "preprocess.interpolation": ("bilinear", source),
            "preprocess.mean": (IMAGENET_MEAN, source), "preprocess.std": (IMAGENET_STD, source),
            "sampling.num_frames": (12, source + " np.linspace(0, n - 1, 12)"), "params.num_frames": (12, source),
            "params.max_words": (77, "OpenCLIP text context length"), "embed_dim": (dim, source),
            "precision": (precision, source)}


def _s3d(source: str, fps, clips: int, frames: int, words: int, dim: int = 512) -> dict:
    out = {"preprocess.size": (224, source + " size=224, crop min(w,h) then scale"),
           "preprocess.flags": ("bilinear", "swscale default of the references' ffmpeg 4.x (fidelity.md)"),
           "sampling.num_clips": (clips, source + " num_windows_test"), "sampling.clip_len": (frames, source + " num_frames"),
           "params.max_words": (words, source), "precision": ("fp32", source + " (no half(), no autocast)"),
           "embed_dim": (dim, source)}
    if fps is not None:
        out["sampling.fps"] = (fps, source + " fps")
    return out


PUBLISHED: dict[str, dict[str, tuple[object, str]]] = {
    "clip-vit-b-32": {**_clip_image(OAI), "params.max_words": (77, OAI + " context_length"), "embed_dim": (512, OAI)},
    "clip-vit-b-16": {**_clip_image(OAI), "params.max_words": (77, OAI + " context_length"), "embed_dim": (512, OAI)},
    "clip-vit-l-14": {**_clip_image(OAI), "params.max_words": (77, OAI + " context_length"), "embed_dim": (768, OAI)},
    "clip4clip-meanp": {**_clip_image(f"{C4C} dataloaders/rawvideo_util.py:18-22, modules/modeling.py:219"),
                        **_c4c_sampling(f"{C4C} README.md MSR-VTT command")},
    "clip4clip-seqtransf": {**_clip_image(f"{C4C} dataloaders/rawvideo_util.py:18-22, modules/modeling.py:219"),
                            **_c4c_sampling(f"{C4C} README.md MSR-VTT command")},
    "drl-ti": {**_clip_image(f"{DRL} tvr/dataloaders/dataloader_retrieval.py:56-60"),
               "sampling.max_frames": (12, f"{DRL} scripts/msrvtt.sh"), "params.max_words": (32, f"{DRL} scripts/msrvtt.sh"),
               "embed_dim": (512, DRL)},
    "drl-wti": {**_clip_image(f"{DRL} tvr/dataloaders/dataloader_retrieval.py:56-60"),
                "sampling.max_frames": (12, f"{DRL} scripts/msrvtt.sh"), "params.max_words": (32, f"{DRL} scripts/msrvtt.sh"),
                "embed_dim": (512, DRL)},
    "ucofia": {**_clip_image(f"{UCO} eval_t2v/dataloaders/rawvideo_util.py"),
               **_c4c_sampling(f"{UCO} eval_t2v/scripts/eval_msrvtt.sh")},
    "locvtp": {"preprocess.size": (112, f"{LOC} clip/data/datasets/howto.py:550-551 Resize(112), CenterCrop(112)"),
               "preprocess.interpolation": ("bilinear", "torchvision Resize default on tensors"),
               "preprocess.antialias": (False, "torchvision < 0.17 default (LocVTP's 2022 code)"),
               "preprocess.mean": ([0.5, 0.5, 0.5], f"{LOC} clip/data/datasets/howto.py:553"),
               "preprocess.std": ([0.5, 0.5, 0.5], f"{LOC} clip/data/datasets/howto.py:553"),
               "sampling.clip_len": (16, "C3D clips of 16 frames (LocVTP featExtract)"),
               "params.max_length": (512, "DistilBERT max_position_embeddings"), "precision": ("fp32", LOC),
               "embed_dim": (256, f"{LOC} projector output")},
    "s3d-howto100m": _s3d(f"{MIL} args.py + README.md", 5, 10, 16, 16),
    "s3d-howto100m-mixed5c": _s3d(f"{MIL} eval_hmdb.py + args.py + README.md", None, 10, 16, 16, 1024),
    "vt-twins": _s3d(f"{VTT} src/eval_youcook.py + args.py, loader/youcook_loader.py max_words=30", 10, 10, 32, 30),
    "vt-twins-msrvtt": _s3d(f"{VTT} src/eval_msrvtt.py:103-104, loader/msrvtt_loader.py:27 max_words=30", 20, 8, 32, 30),
    "vt-twins-mixed5c": _s3d(f"{VTT} src/eval_hmdb.py + args.py, loader/hmdb_loader.py", None, 10, 32, 30, 1024),
    "tvtsv2-b32": {**_tvts(f"{TVTS} v2/downstream/feature_extraction_TVTSv2_B_32.py", 512, "fp32"),
                   "protocols.zeroshot.preprocess.size": (224, f"{TVTS} zero-ucf101-vit-b-32.json input_res"),
                   "protocols.zeroshot.preprocess.resize_to": (268, f"{TVTS} v2/video_transforms (int(224 * 1.2))"),
                   "protocols.zeroshot.preprocess.interpolation": ("nearest", f"{TVTS} v2/video_transforms/functional.py:63 PIL.Image.NEAREST"),
                   "protocols.zeroshot.preprocess.mean": (IMAGENET_MEAN, TVTS),
                   "protocols.zeroshot.preprocess.std": (IMAGENET_STD, TVTS),
                   "protocols.zeroshot.sampling.num_frames": (12, f"{TVTS} zero-ucf101-vit-b-32.json num_frames")},
    "tvtsv2-b16": _tvts(f"{TVTS} v2/downstream/feature_extraction_TVTSv2_B_16.py", 512, "fp32"),
    "tvtsv2-h14": _tvts(f"{TVTS} v2/downstream/feature_extraction_TVTSv2_H_14.py (fp16 autocast)", 1024, "fp16"),
}
OWN_MODELS = {"shapes-tiny"}  # vtpipe's own model: its numbers are its training's, not a paper's
OWN_KEYS = {  # vtpipe's choices for the plain CLIP models (frames at the compress stage's 3 fps)
    ("clip-vit-b-32", "sampling.fps"), ("clip-vit-b-16", "sampling.fps"), ("clip-vit-l-14", "sampling.fps"),
}


def _leaves(d, pre: str = ""):
    if isinstance(d, dict):
        for k, v in d.items():
            if k in ("description", "files", "name"):
                continue
            yield from _leaves(v, f"{pre}{k}.")
    else:
        yield pre[:-1], d


MODELS = sorted(p.stem for p in (REPO / "configs/models").glob("*.yaml") if p.stem not in OWN_MODELS)


@pytest.mark.parametrize("name", MODELS)
def test_published_numbers_of_every_model_yaml(name):
    data = yaml.safe_load((REPO / "configs/models" / f"{name}.yaml").read_text())
    pinned = PUBLISHED.get(name)
    assert pinned is not None, f"{name}: a model YAML whose published numbers are not pinned in PUBLISHED"
    assert_pinned(name, data, pinned, lambda key: key.rsplit(".", 1)[-1] in PINNED and (name, key) not in OWN_KEYS)


def assert_pinned(name: str, data: dict, pinned: dict, checked) -> None:
    """Every leaf of the YAML `data` whose key `checked(key)` accepts is pinned and equals its published value;
    every pinned key is in the YAML."""
    seen = set()
    for key, value in _leaves(data):
        if not checked(key):
            continue
        assert key in pinned, f"{name}: {key} = {value!r} is not pinned to a reference value"
        want, source = pinned[key]
        assert value == want, f"{name}: {key} = {value!r}, but {source} says {want!r}"
        seen.add(key)
    missing = sorted(set(pinned) - seen)
    assert not missing, f"{name}: pinned values absent from the YAML: {missing}"


def test_the_registry_reads_the_pinned_values():
    """The numbers reach the code: the registry's ModelInfo carries the YAML's values (a module constant that
    silently replaced them would fail here)."""
    from stages.backbones.registry import model_config

    info = model_config("clip4clip-meanp")
    assert list(info.preprocess["mean"]) == CLIP_MEAN and list(info.preprocess["std"]) == CLIP_STD
    zs = model_config("tvtsv2-b32", "zeroshot")
    assert zs.preprocess["resize_to"] == 268 and zs.preprocess["interpolation"] == "nearest"
    pre = model_config("locvtp")
    assert pre.preprocess["antialias"] is False and pre.preprocess["size"] == 112
    from stages.backbones.registry import load_model

    m = load_model("locvtp", allow_random=True)
    p = m.preprocess()
    assert (p.size, tuple(p.mean), tuple(p.std), p.antialias) == (112, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), False)
