"""CLIP (OpenAI / OpenCLIP ViTs) as a per-frame video-text model, built by open_clip from local files only.

Accepted checkpoint formats (the model YAML's first file, `checkpoint`):

* an OpenAI TorchScript archive (``ViT-B-32.pt``): its ``state_dict()`` is used; the archive's metadata
  entries ``input_resolution``, ``context_length``, ``vocab_size`` are ignored; fp16 weights become fp32;
  OpenAI models always use QuickGELU.
* an OpenCLIP / plain state dict (``open_clip_pytorch_model.bin``, ``epoch_N.pt``): the tensors at the top
  level or under ``"state_dict"``; a ``module.`` prefix on every key is stripped. The activation is not
  recorded in such a file: params.quick_gelu decides (true for OpenAI-trained weights).

Every key must match (names and shapes); otherwise VtpipeError names the missing/unexpected keys.

params (configs/models/clip-*.yaml):
    arch:        open_clip architecture name ("ViT-B-32", "ViT-B-16", "ViT-L-14", "ViT-H-14"), or
    arch_cfg:    an explicit {embed_dim, vision_cfg, text_cfg} mapping (small test models);
    quick_gelu:  QuickGELU activations (OpenAI weights), default true;
    max_words:   text truncation length incl. SOT/EOT (77 = CLIP; 32 = CLIP4Clip/DRL), default context length;
    seed:        seed of the random initialisation used when no checkpoint is given (default 0).

Outputs (all float32 numpy / CPU tensors, *not* L2-normalised):
    encode_units: [B, 3, H, W] -> [B, D]   per-frame ``ln_post(CLS) @ proj``
    encode_text:  pooled [N, D] (EOT token of ``ln_final(x) @ text_projection``), tokens [N, L, D] (every
                  token of the same), mask [N, L] (True from SOT through EOT). L is the longest tokenised
                  caption of the call (<= max_words); positions past a caption's EOT are zeros.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from stages.backbones import checkpoints as ck
from stages.backbones.base import ModelInfo, TextFeatures, VideoTextModel
from stages.contract.errors import ConfigError

# Metadata entries in OpenAI's TorchScript state dicts; they are not weights.
OPENAI_METADATA_KEYS = ("input_resolution", "context_length", "vocab_size")
TEXT_BATCH = 256


# ----------------------------------------------------------------------------------------------------------
# building and loading
# ----------------------------------------------------------------------------------------------------------
def clip_arch_config(params: Mapping[str, Any]) -> dict:
    """{embed_dim, vision_cfg, text_cfg} for params.arch (an open_clip config name) or params.arch_cfg."""
    import open_clip

    if params.get("arch_cfg") is not None:
        cfg = dict(params["arch_cfg"])
    elif params.get("arch"):
        cfg = open_clip.get_model_config(str(params["arch"]))
        if cfg is None:
            raise ConfigError(f"unknown open_clip architecture {params['arch']!r} (params.arch)")
    else:
        raise ConfigError("CLIP model config needs params.arch (e.g. 'ViT-B-32') or params.arch_cfg")
    cfg.pop("quick_gelu", None)
    extra = set(cfg) - {"embed_dim", "vision_cfg", "text_cfg"}
    if extra:
        raise ConfigError(f"CLIP architecture has unsupported option(s) {sorted(extra)} (only plain CLIP ViTs)")
    missing = {"embed_dim", "vision_cfg", "text_cfg"} - set(cfg)
    if missing:
        raise ConfigError(f"CLIP architecture config is missing {sorted(missing)}")
    return cfg


def build_clip(params: Mapping[str, Any], quick_gelu: bool | None = None, seed: int | None = None) -> nn.Module:
    """An open_clip.CLIP with this architecture (random init; seeded when `seed` is given), in eval mode."""
    import open_clip

    cfg = clip_arch_config(params)
    qg = bool(params.get("quick_gelu", True)) if quick_gelu is None else bool(quick_gelu)
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        model = open_clip.CLIP(**cfg, quick_gelu=qg)
    return model.eval()


def read_clip_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], str]:
    """(state dict in OpenAI/open_clip key names, format) where format is "openai-jit" or "state-dict"."""
    if ck.is_torchscript_archive(path):
        sd = ck.load_torchscript_state_dict(path, what="OpenAI CLIP TorchScript archive")
        return ck.drop_ignored(sd, OPENAI_METADATA_KEYS), "openai-jit"
    obj = ck.load_torch_file(path, what="CLIP checkpoint")
    sd = ck.unwrap_state_dict(obj, ("state_dict",), what=f"CLIP checkpoint {os.fspath(path)!r}")
    sd = ck.strip_prefix(sd, "module.")
    return ck.drop_ignored(sd, OPENAI_METADATA_KEYS), "state-dict"


def load_clip_state_dict(model: nn.Module, sd: Mapping[str, torch.Tensor], what: str) -> None:
    """Strictly load a CLIP state dict (OpenAI/open_clip names) into an open_clip.CLIP."""
    ck.load_strict(
        model, sd, ignore=OPENAI_METADATA_KEYS, what=what,
        hint="is the file for this architecture (params.arch)?",
    )


# ----------------------------------------------------------------------------------------------------------
# text tower
# ----------------------------------------------------------------------------------------------------------
class ClipTokenizer:
    """CLIP's BPE tokenizer (shipped with open_clip): SOT + BPE tokens + EOT, truncated to `max_words`
    (keeping SOT, the first max_words-2 tokens and EOT, as CLIP and CLIP4Clip do), zero-padded."""

    def __init__(self, max_words: int = 77) -> None:
        from open_clip.tokenizer import SimpleTokenizer

        self.max_words = int(max_words)
        self._tok = SimpleTokenizer(context_length=self.max_words)
        self.sot_id = self._tok.sot_token_id
        self.eot_id = self._tok.eot_token_id

    def __call__(self, captions: Sequence[str]) -> torch.Tensor:
        if isinstance(captions, str):
            raise TypeError("captions must be a sequence of strings, not one string")
        return self._tok(list(captions), context_length=self.max_words)


def clip_text_tokens(model: nn.Module, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run the CLIP text tower on token ids [N, L] (L <= context length).

    Returns (tokens [N, L, D] = ln_final(x) @ text_projection for every position, pooled [N, D] = the EOT
    position, mask [N, L] bool, True from SOT through EOT). Uses positional_embedding[:L] and the causal
    mask [:L, :L], which gives exactly the values of a full-length run at the real positions."""
    n, length = ids.shape
    if length > model.positional_embedding.shape[0]:
        raise ValueError(f"text length {length} exceeds the context length {model.positional_embedding.shape[0]}")
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(ids).to(cast_dtype)
    x = x + model.positional_embedding[:length].to(cast_dtype)
    attn_mask = model.attn_mask[:length, :length] if model.attn_mask is not None else None
    x = model.transformer(x, attn_mask=attn_mask)
    x = model.ln_final(x)
    proj = model.text_projection
    tokens = proj(x) if isinstance(proj, nn.Linear) else x @ proj
    eot = ids.argmax(dim=-1)  # the EOT id is the largest id in CLIP's vocabulary
    pooled = tokens[torch.arange(n, device=ids.device), eot]
    mask = torch.arange(length, device=ids.device)[None, :] <= eot[:, None]
    return tokens, pooled, mask


def encode_clip_text(
    model: nn.Module,
    tokenizer: ClipTokenizer,
    captions: Sequence[str],
    device: torch.device,
    autocast,
    with_tokens: bool = True,
) -> TextFeatures:
    """Captions -> TextFeatures through a CLIP text tower, in batches of TEXT_BATCH (float32 numpy)."""
    captions = list(captions)
    ids_all = tokenizer(captions) if captions else torch.zeros(0, tokenizer.max_words, dtype=torch.long)
    lengths = (ids_all.argmax(dim=-1) + 1) if len(captions) else torch.zeros(0, dtype=torch.long)
    width = int(lengths.max()) if len(captions) else 1
    dim = model.text_projection.shape[-1] if not isinstance(model.text_projection, nn.Linear) \
        else model.text_projection.out_features
    pooled_out = np.zeros((len(captions), dim), dtype=np.float32)
    tokens_out = np.zeros((len(captions), width, dim), dtype=np.float32) if with_tokens else None
    mask_out = np.zeros((len(captions), width), dtype=bool)
    with torch.inference_mode():
        for start in range(0, len(captions), TEXT_BATCH):
            ids = ids_all[start : start + TEXT_BATCH, :width].to(device)
            with autocast():
                tokens, pooled, mask = clip_text_tokens(model, ids)
            pooled_out[start : start + len(ids)] = pooled.float().cpu().numpy()
            m = mask.cpu().numpy()
            mask_out[start : start + len(ids)] = m
            if with_tokens:
                t = tokens.float().cpu().numpy()
                t[~m] = 0.0
                tokens_out[start : start + len(ids)] = t
    return TextFeatures(pooled=pooled_out, tokens=tokens_out, mask=mask_out if with_tokens else None)


# ----------------------------------------------------------------------------------------------------------
# the model
# ----------------------------------------------------------------------------------------------------------
class ClipVideoText(VideoTextModel):
    """OpenAI CLIP / OpenCLIP ViT: one feature per frame, meanP video pooling, CLIP text tower."""

    checkpoint_format: str = "random"  # "openai-jit" or "state-dict" once loaded from a file

    def __init__(self, info: ModelInfo, clip: nn.Module, device: str = "cpu", amp_dtype: str | None = None) -> None:
        super().__init__(info, device, amp_dtype)
        self.clip = clip.to(self.device).eval()
        ctx = int(clip.positional_embedding.shape[0])
        self.max_words = int(info.params.get("max_words", ctx))
        if not 2 <= self.max_words <= ctx:
            raise ConfigError(f"{info.name}: params.max_words must be in [2, {ctx}], got {self.max_words}")
        self.tokenizer = ClipTokenizer(self.max_words)
        out_dim = int(clip.visual.proj.shape[1]) if clip.visual.proj is not None else int(clip.visual.output_dim)
        if out_dim != info.embed_dim:
            raise ConfigError(f"{info.name}: embed_dim {info.embed_dim} in the YAML, but the model outputs {out_dim}")

    def encode_units(self, units: torch.Tensor) -> torch.Tensor:
        return self.run_forward(self.clip.encode_image, units, 4)

    def encode_text(self, captions: Sequence[str]) -> TextFeatures:
        return encode_clip_text(self.clip, self.tokenizer, captions, self.device, self.autocast)


def checkpoint_path(info: ModelInfo, weights: Mapping[str, str | None], key: str | None = None) -> tuple[str, str | None]:
    """(file key, path or None) of the model's main checkpoint (the first file in the YAML by default)."""
    files = list(info.files)
    if key is None:
        if not files:
            raise ConfigError(f"{info.name}: the model YAML declares no files")
        key = files[0]
    return key, weights.get(key)


def load(
    info: ModelInfo,
    weights: Mapping[str, str | None],
    device: str = "cpu",
    amp_dtype: str | None = None,
    allow_random: bool = False,
) -> ClipVideoText:
    """Registry loader for family "clip"."""
    key, path = checkpoint_path(info, weights)
    seed = int(info.params.get("seed", 0))
    if path is None:
        ck.missing_weights(info.name, key, str(info.files.get(key, "")), allow_random)
        model = ClipVideoText(info, build_clip(info.params, seed=seed), device, amp_dtype)
        model.random_weights = True
        model.checkpoint_format = "random"
        return model
    sd, fmt = read_clip_checkpoint(path)
    clip = build_clip(info.params, quick_gelu=True if fmt == "openai-jit" else None, seed=seed)
    load_clip_state_dict(clip, sd, what=f"{info.name}: CLIP checkpoint {path!r} ({fmt})")
    model = ClipVideoText(info, clip, device, amp_dtype)
    model.checkpoint_format = fmt
    return model
