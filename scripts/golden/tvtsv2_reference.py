"""Regenerate tests/golden/tvtsv2_{b16,h14}.npz from TVTS's own code (TencentARC/TVTS, commit 290a63e).

    python scripts/golden/tvtsv2_reference.py /path/to/TVTS [--variant b16|h14|all] [--deps DIR]

Builds the reference downstream model (v2/downstream/model_TVTSv2_ViT_B_16.py / _H_14.py) at reduced depth
(2 video and 2 text blocks, every width, head count, patch size and activation of the release; see
tests/backbone_checkpoints.GOLDEN_TVTS), writes seeded random weights in the release's checkpoint layout
with vtpipe's own writer (tests/backbone_checkpoints.py), loads that file the way the release's
feature_extraction_TVTSv2_*.py does (ckpt['state_dict'], 'module.' removed, strict), and records the
reference's video embeddings (forward(data)[1]), text embeddings and token ids for seeded clips and captions.
The goldens hold only the recipe (seeds, sizes) and the outputs; the test rebuilds the weights from the seed.

The reference's helper modules that only pull in training dependencies (base.BaseModel, utils.util,
model.sort_transformer) are replaced by stand-ins; OpenAI CLIP's loader and OpenCLIP's create_model, which
would download weights, are redirected to build the same architectures with random weights (overwritten by
the checkpoint). Needs einops (pass --deps DIR holding it if the venv lacks it). Runs on the CPU, where the
reference's @autocast() on forward is inactive (float32).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
import backbone_checkpoints as bc  # noqa: E402

WEIGHT_SEED = 18
INPUT_SEED = 7
CLIPS = 2
FRAMES = 4  # < 12: also checks the temporal-embedding slice
CAPTIONS = ["a man is slicing a tomato in a kitchen", "two dogs run along the beach at sunset"]


def _stub_modules() -> None:
    base = types.ModuleType("base")
    base.BaseModel = nn.Module
    sys.modules["base"] = base
    utils = types.ModuleType("utils")
    util = types.ModuleType("utils.util")
    util.state_dict_data_parallel_fix = lambda sd, cur: {k.replace("module.", ""): v for k, v in sd.items()}
    utils.util = util
    sys.modules["utils"], sys.modules["utils.util"] = utils, util
    sort = types.ModuleType("model.sort_transformer")
    sort.SortTransformer = nn.Module
    sys.modules["model.sort_transformer"] = sort
    if "pkg_resources" not in sys.modules:  # OpenAI CLIP's clip.py imports packaging from setuptools
        import packaging
        import packaging.version  # noqa: F401  (clip.py uses packaging.version)

        pkg = types.ModuleType("pkg_resources")
        pkg.packaging = packaging
        sys.modules["pkg_resources"] = pkg


def reference_clip_arch(cfg: dict, variant: str = "B_16"):
    """TVTS's TVTSv2_<variant> (B_16 or B_32) over a CLIP built from cfg instead of the released .pt, at the
    reduced depth cfg gives; (model, CLIP's tokenize)."""
    import importlib

    from CLIP import clip
    from CLIP.clip.model import CLIP

    arch = importlib.import_module(f"downstream.model_TVTSv2_ViT_{variant}")
    v, t = cfg["vision_cfg"], cfg["text_cfg"]

    def load(*_args, **_kw):  # instead of reading CLIP/models/ViT-B-16.pt (or -32)
        return CLIP(cfg["embed_dim"], v["image_size"], v["layers"], v["width"], v["patch_size"], t["context_length"],
                    t["vocab_size"], t["width"], t["heads"], t["layers"]), None

    clip.load = load
    full_vit = arch.VisionTransformer
    arch.VisionTransformer = lambda **kw: full_vit(**{**kw, "layers": v["layers"]})  # reduced depth
    return getattr(arch, f"TVTSv2_{variant}")(load_checkpoint=None), clip.tokenize


def _reference_b16(cfg: dict):
    model, tokenize = reference_clip_arch(cfg, "B_16")
    return model, lambda caps: tokenize(caps, truncate=True)


def _reference_h14(cfg: dict, workdir: Path):
    import OpenCLIP
    from OpenCLIP import factory

    import downstream.model_TVTSv2_ViT_H_14 as arch

    factory._MODEL_CONFIGS["ViT-H-14-golden"] = json.loads(json.dumps(cfg))
    create = OpenCLIP.create_model
    arch.OpenCLIP.create_model = lambda name, pretrained=None, cache_dir=None, **kw: create(name + "-golden")
    # the class reads 'OpenCLIP/model_configs/ViT-H-14.json' relative to the working directory
    (workdir / "OpenCLIP" / "model_configs").mkdir(parents=True)
    (workdir / "OpenCLIP" / "model_configs" / "ViT-H-14.json").write_text(json.dumps(cfg))
    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        model = arch.TVTSv2_H_14(load_checkpoint=None)
    finally:
        os.chdir(cwd)
    return model, OpenCLIP.get_tokenizer("ViT-H-14")


def run_variant(ref_v2: Path, variant: str, out: Path) -> None:
    spec = bc.GOLDEN_TVTS[variant]
    cfg = spec["arch_cfg"]
    v = cfg["vision_cfg"]
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        model, tokenize = _reference_b16(cfg) if variant == "b16" else _reference_h14(cfg, Path(tmp))
        sd = bc.tvtsv2_seeded_state_dict(cfg, WEIGHT_SEED)
        path = bc.write_tvtsv2_checkpoint(Path(tmp) / "ckpt.pth", sd)
        ckpt = torch.load(path, map_location="cpu")  # as feature_extraction_TVTSv2_*.py
        ckpt["state_dict"] = {k.replace("module.", ""): val for k, val in ckpt["state_dict"].items()}
        model.load_state_dict(ckpt["state_dict"], strict=True)
    model = model.float().eval()
    clips = bc.tvtsv2_golden_inputs(INPUT_SEED, CLIPS, FRAMES, v["image_size"])
    ids = tokenize(CAPTIONS)
    grid = (v["image_size"] // v["patch_size"]) ** 2
    data = {"video": clips.transpose(1, 2).contiguous(), "text": ids,
            "keep_ind": torch.arange(grid).unsqueeze(0).repeat(CLIPS, 1)}  # every patch kept, one row per clip
    with torch.no_grad():
        text_emb, video_emb = model(data, return_embeds=True)
    np.savez_compressed(
        out / f"tvtsv2_{variant}.npz",
        video=video_emb.float().numpy(), text=text_emb.float().numpy(), token_ids=ids.numpy().astype(np.int64),
        recipe=np.array(json.dumps({
            "reference": "TencentARC/TVTS@290a63e v2/downstream/model_TVTSv2_ViT_" + variant.upper().replace("B", "B_").replace("H", "H_"),
            "variant": variant, "weight_seed": WEIGHT_SEED, "input_seed": INPUT_SEED, "clips": CLIPS,
            "frames": FRAMES, "captions": CAPTIONS, "arch_cfg": cfg, "activation": spec["activation"],
        })),
    )
    print(f"{variant}: video {tuple(video_emb.shape)} text {tuple(text_emb.shape)} -> {out / f'tvtsv2_{variant}.npz'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("reference", help="TVTS checkout (the folder holding v2/)")
    ap.add_argument("--variant", choices=["b16", "h14", "all"], default="all")
    ap.add_argument("--deps", help="extra folder on sys.path (e.g. one holding einops)")
    ap.add_argument("--out", default=str(REPO / "tests" / "golden"))
    args = ap.parse_args()
    ref_v2 = Path(args.reference).resolve() / "v2"
    sys.path.insert(0, str(ref_v2))
    if args.deps:
        sys.path.insert(0, args.deps)
    _stub_modules()
    torch.set_num_threads(2)
    for variant in (["b16", "h14"] if args.variant == "all" else [args.variant]):
        run_variant(ref_v2, variant, Path(args.out))


if __name__ == "__main__":
    main()
