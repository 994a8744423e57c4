"""Random-weight checkpoints in each release's exact on-disk format, for tests of the backbone zoo.

Each writer takes a path and a seed and produces a file laid out like the real release (key names,
prefixes, containers, dtypes), so the strict loaders in stages/backbones are exercised end to end.
`tiny_model_config` writes a model YAML into a temporary configs/ folder (point VTPIPE_CONFIGS at it)
for reduced-width variants that keep every key name but run fast on a CPU.
"""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import yaml
from torch import nn

REPO = Path(__file__).resolve().parents[1]

# A small CLIP with OpenAI's key layout: 2+2 layers, width 128 (2 heads of 64, the head width OpenAI's
# state-dict builder assumes), 64x64 images (2x2 patches of 32).
TINY_CLIP_ARCH = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 128, "head_width": 64, "patch_size": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 128, "heads": 2, "layers": 2},
}


# ----------------------------------------------------------------------------------------------------------
# configs
# ----------------------------------------------------------------------------------------------------------
def make_configs_dir(tmp: Path) -> Path:
    """A copy of the repo's configs/ under tmp (set VTPIPE_CONFIGS to the returned path)."""
    dst = Path(tmp) / "configs"
    if not dst.exists():
        shutil.copytree(REPO / "configs", dst)
    return dst


def tiny_model_config(configs: Path, base: str, name: str, **overrides: Any) -> str:
    """Write configs/models/<name>.yaml = configs/models/<base>.yaml with top-level keys replaced and
    `params` entries merged from overrides["params"]. Returns the name."""
    src = Path(configs) / "models" / f"{base}.yaml"
    cfg = yaml.safe_load(src.read_text())
    params = dict(cfg.get("params") or {})
    params.update(overrides.pop("params", {}) or {})
    cfg.update(overrides)
    cfg["params"] = params
    cfg["name"] = name
    (Path(configs) / "models" / f"{name}.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return name


def randomize_(module: nn.Module, seed: int, scale: float = 0.02) -> nn.Module:
    """Fill every parameter with seeded normal noise (LayerNorm weights around 1), in place."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g) * scale
            if name.endswith(("ln_1.weight", "ln_2.weight", "ln_3.weight", "ln_final.weight", "ln_post.weight",
                              "ln_pre.weight", "layer_norm.weight", "LayerNorm.weight", "norm.weight")):
                noise = noise + 1.0
            p.copy_(noise)
    return module


# ----------------------------------------------------------------------------------------------------------
# CLIP
# ----------------------------------------------------------------------------------------------------------
def clip_module(arch: Mapping[str, Any] | str = "ViT-B-32", seed: int = 0, quick_gelu: bool = True) -> nn.Module:
    """A random open_clip.CLIP (OpenAI key names) for an arch name or an explicit arch config."""
    import open_clip

    cfg = copy.deepcopy(dict(arch)) if not isinstance(arch, str) else open_clip.get_model_config(arch)
    cfg.pop("quick_gelu", None)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.CLIP(**cfg, quick_gelu=quick_gelu).eval()
    return model


def clip_state_dict(arch: Mapping[str, Any] | str = "ViT-B-32", seed: int = 0) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in clip_module(arch, seed).state_dict().items()}


def write_openclip_checkpoint(path: str | os.PathLike, sd: Mapping[str, torch.Tensor], training: bool = True) -> Path:
    """OpenCLIP format. training=True: a training checkpoint `epoch_N.pt` = {"epoch", "name", "state_dict"
    (keys prefixed `module.`), "optimizer"}; False: the released plain state dict
    (open_clip_pytorch_model.bin)."""
    path = Path(path)
    if training:
        obj = {
            "epoch": 32,
            "name": "test-run",
            "state_dict": {f"module.{k}": v for k, v in sd.items()},
            "optimizer": {"state": {}, "param_groups": [{"lr": 1e-3, "params": [0]}]},
        }
    else:
        obj = dict(sd)
    torch.save(obj, path)
    return path


def write_openai_jit(path: str | os.PathLike, arch: Mapping[str, Any] | str = "ViT-B-32", seed: int = 0) -> Path:
    """OpenAI release format: a TorchScript archive of a CLIP whose state_dict has OpenAI's names, the
    metadata entries input_resolution / context_length / vocab_size, and fp16 weights (as OpenAI stored
    them)."""
    from open_clip.model import convert_weights_to_fp16

    model = clip_module(arch, seed)
    image_size = model.visual.image_size
    image_size = image_size[0] if isinstance(image_size, (tuple, list)) else image_size
    meta = {"input_resolution": image_size, "context_length": model.context_length, "vocab_size": model.vocab_size}
    for name, value in meta.items():  # plain attributes on open_clip's CLIP, buffers in OpenAI's archives
        if hasattr(model, name):
            delattr(model, name)
        model.register_buffer(name, torch.tensor(value))
    # open_clip keeps the causal text mask as a non-persistent buffer; a traced module would save it, while
    # OpenAI's archive holds it as a constant, not in state_dict(). Keep it as a plain attribute here.
    mask = model._buffers.pop("attn_mask")
    object.__setattr__(model, "attn_mask", mask)
    convert_weights_to_fp16(model)
    model.float()  # trace in fp32 on the CPU ...
    example = torch.zeros(1, 3, image_size, image_size)
    traced = torch.jit.trace_module(model, {"encode_image": (example,)}, check_trace=False)
    traced.half()  # ... and store fp16, as the release does
    torch.jit.save(traced, str(path))
    return Path(path)


def reference_clip_from_jit(path: str | os.PathLike) -> nn.Module:
    """open_clip's own loader for an OpenAI TorchScript file (fp32, CPU), as an independent reference."""
    from open_clip.openai import load_openai_model

    return load_openai_model(str(path), precision="fp32", device="cpu").eval()


# ----------------------------------------------------------------------------------------------------------
# CLIP4Clip / DRL
# ----------------------------------------------------------------------------------------------------------
# seqTransf / WTI heads work on CLIP features of width = text width, so the tiny variant has embed_dim 128.
TINY_C4C_ARCH = {
    "embed_dim": 128,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 128, "head_width": 64, "patch_size": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 128, "heads": 2, "layers": 2},
}


def clip4clip_head_shapes(width: int = 512, seq_layers: int = 4, seq_transf: bool = True, wti: bool = False,
                          positions: int = 77) -> dict[str, tuple[int, ...]]:
    """The non-CLIP keys of a CLIP4Clip / DRL checkpoint and their shapes, as released."""
    shapes: dict[str, tuple[int, ...]] = {}
    if seq_transf:
        shapes["frame_position_embeddings.weight"] = (positions, width)
        for i in range(seq_layers):
            p = f"transformerClip.resblocks.{i}."
            shapes.update({
                p + "attn.in_proj_weight": (3 * width, width), p + "attn.in_proj_bias": (3 * width,),
                p + "attn.out_proj.weight": (width, width), p + "attn.out_proj.bias": (width,),
                p + "ln_1.weight": (width,), p + "ln_1.bias": (width,),
                p + "mlp.c_fc.weight": (4 * width, width), p + "mlp.c_fc.bias": (4 * width,),
                p + "mlp.c_proj.weight": (width, 4 * width), p + "mlp.c_proj.bias": (width,),
                p + "ln_2.weight": (width,), p + "ln_2.bias": (width,),
            })
    if wti:
        for head in ("text_weight_fc", "video_weight_fc"):
            shapes.update({f"{head}.0.weight": (width, width), f"{head}.0.bias": (width,),
                           f"{head}.2.weight": (1, width), f"{head}.2.bias": (1,)})
    return shapes


def clip4clip_state_dict(arch: Mapping[str, Any] | str = "ViT-B-32", seed: int = 0, seq_transf: bool = True,
                         wti: bool = False, seq_layers: int = 4) -> dict[str, torch.Tensor]:
    """A CLIP4Clip / DRL state dict: clip.* + heads, random values (LayerNorm weights near 1)."""
    clip_sd = clip_state_dict(arch, seed)
    width = clip_sd["ln_final.weight"].shape[0]
    sd = {f"clip.{k}": v for k, v in clip_sd.items()}
    g = torch.Generator().manual_seed(seed + 1000)
    for k, shape in clip4clip_head_shapes(width, seq_layers, seq_transf, wti).items():
        t = torch.randn(shape, generator=g) * 0.05
        if k.endswith(("ln_1.weight", "ln_2.weight")):
            t = t + 1.0
        sd[k] = t
    return sd


def write_raw_state_dict(path: str | os.PathLike, sd: Mapping[str, torch.Tensor], ddp: bool = False) -> Path:
    """A raw `torch.save(model.state_dict())` file (CLIP4Clip's pytorch_model.bin.<epoch>)."""
    obj = {(f"module.{k}" if ddp else k): v for k, v in sd.items()}
    torch.save(obj, path)
    return Path(path)


# ----------------------------------------------------------------------------------------------------------
# LocVTP (C3D + DistilBERT)
# ----------------------------------------------------------------------------------------------------------
C3D_TABLE = [("conv1", 3, 64), ("conv2", 64, 128), ("conv3a", 128, 256), ("conv3b", 256, 256),
             ("conv4a", 256, 512), ("conv4b", 512, 512), ("conv5a", 512, 512), ("conv5b", 512, 512)]
TINY_DISTILBERT = {"text_dim": 64, "text_layers": 2, "text_heads": 2, "text_hidden": 128, "vocab_size": 30522}


def c3d_shapes() -> dict[str, tuple[int, ...]]:
    """Sports-1M C3D parameter names and shapes, as in the released weights."""
    shapes: dict[str, tuple[int, ...]] = {}
    for name, cin, cout in C3D_TABLE:
        shapes[f"{name}.weight"] = (cout, cin, 3, 3, 3)
        shapes[f"{name}.bias"] = (cout,)
    shapes.update({"fc6.weight": (4096, 8192), "fc6.bias": (4096,), "fc7.weight": (4096, 4096), "fc7.bias": (4096,),
                   "fc8.weight": (487, 4096), "fc8.bias": (487,)})
    return shapes


def distilbert_shapes(dim=768, layers=6, hidden=3072, vocab=30522, positions=512) -> dict[str, tuple[int, ...]]:
    """Hugging Face DistilBertModel state-dict names and shapes."""
    shapes = {"embeddings.word_embeddings.weight": (vocab, dim), "embeddings.position_embeddings.weight": (positions, dim),
              "embeddings.LayerNorm.weight": (dim,), "embeddings.LayerNorm.bias": (dim,)}
    for i in range(layers):
        p = f"transformer.layer.{i}."
        for lin in ("q_lin", "k_lin", "v_lin", "out_lin"):
            shapes[p + f"attention.{lin}.weight"] = (dim, dim)
            shapes[p + f"attention.{lin}.bias"] = (dim,)
        shapes.update({p + "sa_layer_norm.weight": (dim,), p + "sa_layer_norm.bias": (dim,),
                       p + "ffn.lin1.weight": (hidden, dim), p + "ffn.lin1.bias": (hidden,),
                       p + "ffn.lin2.weight": (dim, hidden), p + "ffn.lin2.bias": (dim,),
                       p + "output_layer_norm.weight": (dim,), p + "output_layer_norm.bias": (dim,)})
    return shapes


def locvtp_shapes(text: Mapping[str, int] | None = None, training_heads: bool = True) -> dict[str, tuple[int, ...]]:
    """Every key of LocVTP's model_<epoch>e.pth "model" dict (without the `module.` prefix)."""
    t = {"text_dim": 768, "text_layers": 6, "text_hidden": 3072, "vocab_size": 30522, **(text or {})}
    shapes = {f"videoEncoder.embednet.{k}": v for k, v in c3d_shapes().items()}
    for proj, din in (("vidProjector", 4096), ("textProjector", t["text_dim"])):
        shapes.update({f"{proj}.projection.weight": (256, din), f"{proj}.projection.bias": (256,),
                       f"{proj}.fc.weight": (256, 256), f"{proj}.fc.bias": (256,),
                       f"{proj}.layer_norm.weight": (256,), f"{proj}.layer_norm.bias": (256,)})
    bert = distilbert_shapes(t["text_dim"], t["text_layers"], t["text_hidden"], t["vocab_size"])
    shapes.update({f"textEncoder.model.{k}": v for k, v in bert.items()})
    if training_heads:
        shapes.update({"shiftpredict.f_cls.weight": (5, 1280), "shiftpredict.f_cls.bias": (5,)})
        for h in ("signProjWord", "distProjWord", "signProjVid", "distProjVid"):
            shapes.update({f"{h}.weight": (256, 1), f"{h}.bias": (256,)})
    return shapes


def random_state_dict(shapes: Mapping[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded random tensors: LayerNorm weights ~1, others ~N(0, fan-in scaled)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, shape in shapes.items():
        if "norm" in k.lower() and k.endswith("weight"):
            sd[k] = 1.0 + 0.05 * torch.randn(shape, generator=g)
        elif len(shape) >= 2:
            fan_in = int(np.prod(shape[1:]))
            sd[k] = torch.randn(shape, generator=g) / np.sqrt(fan_in)
        else:
            sd[k] = 0.02 * torch.randn(shape, generator=g)
    return sd


def write_locvtp_checkpoint(path: str | os.PathLike, sd: Mapping[str, torch.Tensor]) -> Path:
    """LocVTP release format: {"model": {"module." + key: tensor}, "optimizer", "scheduler", "epoch"}."""
    obj = {
        "model": {f"module.{k}": v for k, v in sd.items()},
        "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1]}]},
        "scheduler": {"milestones": {8: 1}, "last_epoch": 10},
        "epoch": 10,
    }
    torch.save(obj, path)
    return Path(path)


TINY_VOCAB = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [
    "a", "man", "is", "playing", "the", "guitar", "hello", "world", ",", "!", ".", "un", "##aff", "##able",
    "play", "##ing", "dog", "runs", "on", "beach", "cafe",
]


def write_vocab(path: str | os.PathLike, tokens: list[str] | None = None) -> Path:
    Path(path).write_text("\n".join(tokens or TINY_VOCAB) + "\n", encoding="utf-8")
    return Path(path)


# ----------------------------------------------------------------------------------------------------------
# S3D-G (MIL-NCE, VT-TWINS)
# ----------------------------------------------------------------------------------------------------------
S3D_INCEPTION = [  # name, in, b0, b1a, b1b, b2a, b2b, b3b
    ("mixed_3b", 192, 64, 96, 128, 16, 32, 32), ("mixed_3c", 256, 128, 128, 192, 32, 96, 64),
    ("mixed_4b", 480, 192, 96, 208, 16, 48, 64), ("mixed_4c", 512, 160, 112, 224, 24, 64, 64),
    ("mixed_4d", 512, 128, 128, 256, 24, 64, 64), ("mixed_4e", 512, 112, 144, 288, 32, 64, 64),
    ("mixed_4f", 528, 256, 160, 320, 32, 128, 128), ("mixed_5b", 832, 256, 160, 320, 32, 128, 128),
    ("mixed_5c", 832, 384, 192, 384, 48, 128, 128),
]


def _bn(prefix: str, c: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.weight": (c,), f"{prefix}.bias": (c,), f"{prefix}.running_mean": (c,),
            f"{prefix}.running_var": (c,), f"{prefix}.num_batches_tracked": ()}


def _stconv(prefix: str, cin: int, cout: int, k: tuple[int, int, int], separable: bool = False) -> dict:
    if not separable:
        return {f"{prefix}.conv1.weight": (cout, cin, *k), **_bn(f"{prefix}.bn1", cout)}
    return {f"{prefix}.conv1.weight": (cout, cin, 1, k[1], k[2]), **_bn(f"{prefix}.bn1", cout),
            f"{prefix}.conv2.weight": (cout, cout, k[0], 1, 1), **_bn(f"{prefix}.bn2", cout)}


def s3d_shapes(space_to_depth: bool = True) -> dict[str, tuple[int, ...]]:
    """Every key of the released S3D-G state dict (MIL-NCE s3d_howto100m.pth layout)."""
    shapes: dict[str, tuple[int, ...]] = {}
    shapes.update(_stconv("conv1", 24, 64, (2, 4, 4)) if space_to_depth else _stconv("conv1", 3, 64, (3, 7, 7)))
    shapes.update(_stconv("conv_2b", 64, 64, (1, 1, 1)))
    shapes.update(_stconv("conv_2c", 64, 192, (3, 3, 3), separable=True))
    shapes.update({"gating.fc.weight": (192, 192), "gating.fc.bias": (192,)})
    for name, cin, b0, b1a, b1b, b2a, b2b, b3b in S3D_INCEPTION:
        shapes.update(_stconv(f"{name}.conv_b0", cin, b0, (1, 1, 1)))
        shapes.update(_stconv(f"{name}.conv_b1_a", cin, b1a, (1, 1, 1)))
        shapes.update(_stconv(f"{name}.conv_b1_b", b1a, b1b, (3, 3, 3), separable=True))
        shapes.update(_stconv(f"{name}.conv_b2_a", cin, b2a, (1, 1, 1)))
        shapes.update(_stconv(f"{name}.conv_b2_b", b2a, b2b, (3, 3, 3), separable=True))
        shapes.update(_stconv(f"{name}.conv_b3_b", cin, b3b, (1, 1, 1)))
        for g, c in (("gating_b0", b0), ("gating_b1", b1b), ("gating_b2", b2b), ("gating_b3", b3b)):
            shapes.update({f"{name}.{g}.fc.weight": (c, c), f"{name}.{g}.fc.bias": (c,)})
    shapes.update({"fc.weight": (512, 1024), "fc.bias": (512,),
                   "text_module.word_embd.weight": (66250, 300),
                   "text_module.fc1.weight": (2048, 300), "text_module.fc1.bias": (2048,),
                   "text_module.fc2.weight": (512, 2048), "text_module.fc2.bias": (512,)})
    return shapes


def s3d_state_dict(space_to_depth: bool = True, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random S3D-G weights with sane BatchNorm statistics (positive variances, counters as int64)."""
    shapes = s3d_shapes(space_to_depth)
    sd = random_state_dict({k: v for k, v in shapes.items() if not k.endswith("num_batches_tracked")}, seed)
    g = torch.Generator().manual_seed(seed + 1)
    for k in list(sd):
        if k.endswith("running_var"):
            sd[k] = 0.5 + torch.rand(sd[k].shape, generator=g)
        elif k.endswith("running_mean"):
            sd[k] = 0.1 * torch.randn(sd[k].shape, generator=g)
        elif ".bn" in k and k.endswith(".weight"):
            sd[k] = 1.0 + 0.1 * torch.randn(sd[k].shape, generator=g)
    for k in shapes:
        if k.endswith("num_batches_tracked"):
            sd[k] = torch.tensor(1000, dtype=torch.long)
    return {k: sd[k] for k in shapes}


def write_word_dict(path: str | os.PathLike, words: list[str]) -> Path:
    """A dict .npy: plain unicode array of words (id = position + 1)."""
    np.save(path, np.array(words, dtype=str))
    return Path(path)


# ----------------------------------------------------------------------------------------------------------
# TVTSv2
# ----------------------------------------------------------------------------------------------------------
def tvtsv2_shapes(vision_width=768, vision_layers=12, patch=32, image=224, frames=12, embed=512,
                  text_width=512, text_layers=12, vocab=49408, context=77,
                  pred_model: bool = True) -> dict[str, tuple[int, ...]]:
    """Every key of TVTSv2's ckpt['state_dict'] (without `module.`), B/32 by default."""
    s: dict[str, tuple[int, ...]] = {}
    for i in range(text_layers):
        p, w = f"text_model.resblocks.{i}.", text_width
        s.update({p + "ln_1.weight": (w,), p + "ln_1.bias": (w,), p + "attn.in_proj_weight": (3 * w, w),
                  p + "attn.in_proj_bias": (3 * w,), p + "attn.out_proj.weight": (w, w), p + "attn.out_proj.bias": (w,),
                  p + "ln_2.weight": (w,), p + "ln_2.bias": (w,), p + "mlp.c_fc.weight": (4 * w, w),
                  p + "mlp.c_fc.bias": (4 * w,), p + "mlp.c_proj.weight": (w, 4 * w), p + "mlp.c_proj.bias": (w,)})
    s.update({"text_token_embedding.weight": (vocab, text_width), "text_positional_embedding": (context, text_width),
              "text_ln_final.weight": (text_width,), "text_ln_final.bias": (text_width,),
              "text_projection": (text_width, embed)})
    w, grid = vision_width, image // patch
    s.update({"video_model.conv1.weight": (w, 3, patch, patch), "video_model.class_embedding": (w,),
              "video_model.positional_embedding": (grid * grid + 1, w), "video_model.temporal_embedding": (frames, w),
              "video_model.ln_pre.weight": (w,), "video_model.ln_pre.bias": (w,),
              "video_model.ln_post.weight": (w,), "video_model.ln_post.bias": (w,), "video_model.proj": (w, embed)})
    for i in range(vision_layers):
        p = f"video_model.transformer.resblocks.{i}."
        for a in ("attn", "timeattn"):
            s.update({p + f"{a}.qkv.weight": (3 * w, w), p + f"{a}.qkv.bias": (3 * w,),
                      p + f"{a}.proj.weight": (w, w), p + f"{a}.proj.bias": (w,)})
        for ln in ("ln_1", "ln_2", "ln_3"):
            s.update({p + f"{ln}.weight": (w,), p + f"{ln}.bias": (w,)})
        s.update({p + "mlp.c_fc.weight": (4 * w, w), p + "mlp.c_fc.bias": (4 * w,),
                  p + "mlp.c_proj.weight": (w, 4 * w), p + "mlp.c_proj.bias": (w,)})
    if pred_model:  # training-only order predictor (shapes illustrative; ignored by name)
        s.update({"pred_model.cls_token": (1, 1, 512), "pred_model.head.weight": (4, 512), "pred_model.head.bias": (4,)})
    return s


TINY_TVTS = dict(vision_width=128, vision_layers=2, patch=32, image=64, frames=12, embed=32,
                 text_width=128, text_layers=2)
TINY_TVTS_ARCH = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 128, "head_width": 64, "patch_size": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 128, "heads": 2, "layers": 2},
}


def write_tvtsv2_checkpoint(path: str | os.PathLike, sd: Mapping[str, torch.Tensor]) -> Path:
    """TVTSv2 release format: {"state_dict": {"module." + key: tensor}, "epoch", "optimizer"}."""
    torch.save({"epoch": 10, "state_dict": {f"module.{k}": v for k, v in sd.items()}, "optimizer": {}}, path)
    return Path(path)


# Reduced-depth TVTSv2 variants for the golden tests against the reference code: every width, head count,
# patch size, activation and key name of the release, but 2 video and 2 text blocks (the full models are
# too heavy to run twice per test on a CPU). scripts/golden/tvtsv2_reference.py builds the reference with
# the same dimensions.
GOLDEN_TVTS = {
    "b16": {
        "arch_cfg": {"embed_dim": 512,
                     "vision_cfg": {"image_size": 224, "layers": 2, "width": 768, "head_width": 64, "patch_size": 16},
                     "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 2}},
        "activation": "quick_gelu",
    },
    "h14": {
        "arch_cfg": {"embed_dim": 1024,
                     "vision_cfg": {"image_size": 224, "layers": 2, "width": 1280, "head_width": 80, "patch_size": 14},
                     "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 1024, "heads": 16, "layers": 2}},
        "activation": "gelu",
    },
}


def tvtsv2_shapes_for(arch_cfg: Mapping[str, Any], frames: int = 12, pred_model: bool = False) -> dict[str, tuple[int, ...]]:
    """tvtsv2_shapes for an open_clip-style {embed_dim, vision_cfg, text_cfg} mapping."""
    v, t = arch_cfg["vision_cfg"], arch_cfg["text_cfg"]
    return tvtsv2_shapes(vision_width=v["width"], vision_layers=v["layers"], patch=v["patch_size"],
                         image=v["image_size"], frames=frames, embed=arch_cfg["embed_dim"], text_width=t["width"],
                         text_layers=t["layers"], vocab=t["vocab_size"], context=t["context_length"],
                         pred_model=pred_model)


def tvtsv2_seeded_state_dict(arch_cfg: Mapping[str, Any], seed: int) -> dict[str, torch.Tensor]:
    """Seeded TVTSv2 weights (no pred_model keys, as the downstream checkpoints load strictly): fan-in scaled
    noise, with the class / positional / temporal embeddings large enough to move the output."""
    sd = random_state_dict(tvtsv2_shapes_for(arch_cfg), seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    for k in list(sd):
        if k.endswith(("class_embedding", "positional_embedding", "temporal_embedding")):
            sd[k] = sd[k] * 10 if sd[k].ndim == 2 else 0.05 * torch.randn(sd[k].shape, generator=g)
        elif ".ln_" in k or k.startswith("text_ln_final"):  # LayerNorm gains near 1, so every block counts
            if k.endswith("weight"):
                sd[k] = 1.0 + 0.1 * torch.randn(sd[k].shape, generator=g)
    return sd


def tvtsv2_golden_inputs(seed: int, clips: int, frames: int, image: int) -> torch.Tensor:
    """Seeded clips [B, 3, T, H, W] in vtpipe's layout (roughly normalised pixel values)."""
    return torch.randn(clips, 3, frames, image, image, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------------------------------------
# UCoFiA
# ----------------------------------------------------------------------------------------------------------
def ucofia_extra_shapes(dim: int, max_words: int = 32, max_frames: int = 12) -> dict[str, tuple[int, ...]]:
    """UCoFiA's keys beyond CLIP4Clip seqTransf's: alignment matrices and the patch selector."""
    shapes: dict[str, tuple[int, ...]] = {}
    for k in ("global_mat_weight", "global_mat_weight_1", "local_mat_weight", "local_mat_weight1"):
        shapes[k] = (dim, dim)
    for k in ("word_logit_weight", "word_mat_weight", "word_mat_weight2", "word_mat_weight_for_pixel"):
        shapes[k] = (max_words, max_words)
    for k in ("frame_logit_weight", "frame_mat_weight", "frame_mat_weight2"):
        shapes[k] = (max_frames, max_frames)
    for k in ("pixel_mat_weight", "pixel_mat_weight2"):
        shapes[k] = (4 * max_frames, 4 * max_frames)
    p = "visual_token_selector.score_predictor."
    shapes.update({p + "in_conv.0.weight": (2 * dim,), p + "in_conv.0.bias": (2 * dim,),
                   p + "in_conv.1.weight": (dim, 2 * dim), p + "out_conv.0.weight": (dim, 2 * dim),
                   p + "out_conv.2.weight": (1, dim)})
    return shapes


def ucofia_state_dict(arch: Mapping[str, Any] | str = "ViT-B-32", seed: int = 0, max_words: int = 32,
                      max_frames: int = 12) -> dict[str, torch.Tensor]:
    """A UCoFiA eval checkpoint (seqTransf): CLIP4Clip's keys + identity-plus-noise matrices + a random
    selector; logit_scale = ln 100 (the trained value's order)."""
    sd = clip4clip_state_dict(arch, seed, seq_transf=True)
    dim = sd["clip.text_projection"].shape[1]
    g = torch.Generator().manual_seed(seed + 2000)
    for k, shape in ucofia_extra_shapes(dim, max_words, max_frames).items():
        if "." not in k:  # the alignment matrices
            sd[k] = torch.eye(shape[0]) + 0.05 * torch.randn(shape, generator=g)
        elif k.endswith("in_conv.0.weight"):
            sd[k] = 1.0 + 0.1 * torch.randn(shape, generator=g)
        elif len(shape) == 2:
            sd[k] = torch.randn(shape, generator=g) / np.sqrt(shape[1])
        else:
            sd[k] = 0.05 * torch.randn(shape, generator=g)
    sd["clip.logit_scale"] = torch.tensor(float(np.log(100.0)))
    # UCoFiA converts its CLIP to fp16 (CLIP's convert_weights: conv / linear / attention weights and biases,
    # proj, text_projection), so a trained checkpoint stores those tensors as float16, as here
    for k in list(sd):
        name = k[len("clip."):]
        if k.startswith("clip.") and (name in ("visual.conv1.weight", "visual.proj", "text_projection")
                                      or any(t in name for t in (".attn.in_proj_", ".attn.out_proj.", ".mlp.c_fc.",
                                                                 ".mlp.c_proj."))):
            sd[k] = sd[k].half()
    return sd
