"""CLIP4Clip (meanP / seqTransf) and DRL (TI / WTI) fine-tuned CLIP checkpoints.

Checkpoint (the YAML's `checkpoint` file): a raw ``state_dict()`` file (``pytorch_model.bin.<epoch>``,
``best.pth``), read with torch.load(weights_only=True); a ``module.`` prefix on every key is stripped; the
tensors may also sit under "state_dict"/"model". Keys, by params:

* always ``clip.*``: the CLIP model (OpenAI names, see clip.py), e.g. ``clip.visual.conv1.weight``;
* sim_header "seqTransf": ``frame_position_embeddings.weight`` [77, W] and
  ``transformerClip.resblocks.{0..L-1}.{attn.in_proj_weight, attn.in_proj_bias, attn.out_proj.weight,
  attn.out_proj.bias, ln_1.*, mlp.c_fc.*, mlp.c_proj.*, ln_2.*}`` (L = 4, width W = CLIP text width = 512
  for ViT-B, W/64 heads, QuickGELU, LayerNorm eps 1e-12 as in CLIP4Clip's TF-style LayerNorm);
* interaction "wti" (DRL): ``text_weight_fc.{0,2}.{weight,bias}`` and ``video_weight_fc.{0,2}.{weight,bias}``
  (Linear(W, W), ReLU, Linear(W, 1)).

Everything is loaded strictly. Features (float32, not normalised):

* ``encode_units(frames)`` -> raw per-frame CLIP features [B, D] (``ln_post(CLS) @ proj``); store these.
* ``aggregate_frames(frames [U, D], mask)`` -> the per-frame features after the temporal module:
  seqTransf: v' = Transformer(v + P[:U]) + v, padded frames (mask False) masked out as attention keys;
  meanP: unchanged. These are the "frame tokens" of DRL's TI/WTI.
* ``pool(frames, mask)`` -> meanP over ``aggregate_frames``: L2-normalise each frame, mean over real frames,
  L2-normalise (CLIP4Clip's video vector; DRL's "dp" interaction).
* ``encode_text`` -> pooled EOT feature, token features and mask (SOT..EOT), max_words (32) tokens.
* DRL heads, for the evaluate stage: ``text_token_weights(tokens, mask)`` [N, L] and
  ``video_frame_weights(frames, mask)`` [B, T]: softmax of the weight MLP over valid positions (0 on padding),
  applied to *raw* token features and to *aggregated* frame features (not normalised), as DRL does.
  ``token_wise_scores`` computes TI (no weights) or WTI (with these weights) between texts and videos.

Difference from the reference on purpose: CLIP4Clip/DRL build the [B*heads, T, T] attention mask with
``repeat`` (head-major) where torch expects batch-major order, so in a batch of videos with different frame
counts masks get mixed between videos. vtpipe aggregates each video with its own mask (identical to the
reference at batch size 1, and whenever all videos in a batch have the same number of frames).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Mapping

import numpy as np
import torch
from torch import nn

from stages.backbones import checkpoints as ck
from stages.backbones.base import ModelInfo
from stages.backbones.clip import (
    OPENAI_METADATA_KEYS,
    ClipVideoText,
    build_clip,
    checkpoint_path,
)
from stages.contract.errors import ConfigError, VtpipeError

SIM_HEADERS = ("meanP", "seqTransf")
INTERACTIONS = ("dp", "ti", "wti")


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class SeqResidualBlock(nn.Module):
    """Pre-LN transformer block with CLIP4Clip's names (attn, ln_1, mlp.c_fc, mlp.c_proj, ln_2)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)  # sequence-first, as in the reference
        self.ln_1 = nn.LayerNorm(width, eps=1e-12)
        self.mlp = nn.Sequential(
            OrderedDict([("c_fc", nn.Linear(width, width * 4)), ("gelu", QuickGELU()), ("c_proj", nn.Linear(width * 4, width))])
        )
        self.ln_2 = nn.LayerNorm(width, eps=1e-12)
        self.heads = heads

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=attn_mask)[0]
        return x + self.mlp(self.ln_2(x))


class SeqTransformer(nn.Module):
    """CLIP4Clip's `transformerClip`: `layers` blocks over the frame sequence."""

    def __init__(self, width: int, layers: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.resblocks = nn.ModuleList([SeqResidualBlock(width, heads) for _ in range(layers)])

    def forward(self, x: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        """x [B, T, W], frame_mask [B, T] (1 = real frame) -> [B, T, W]."""
        b, t, _ = x.shape
        additive = (1.0 - frame_mask.to(x.dtype))[:, None, :] * -1000000.0  # [B, 1, T] on the keys
        additive = additive.expand(b, t, t).repeat_interleave(self.heads, dim=0)  # batch-major [B*h, T, T]
        x = x.transpose(0, 1)
        for block in self.resblocks:
            x = block(x, additive)
        return x.transpose(0, 1)


def weight_mlp(width: int) -> nn.Sequential:
    """DRL's weight branch (wti_arch 2): Linear(W, W), ReLU, Linear(W, 1) -> keys 0.* and 2.*."""
    return nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 1))


class Clip4ClipNet(nn.Module):
    """The checkpoint's module tree: `clip` plus the optional temporal and weight heads."""

    def __init__(self, clip: nn.Module, sim_header: str, interaction: str, seq_layers: int = 4, max_positions: int = 77) -> None:
        super().__init__()
        self.clip = clip
        width = int(clip.ln_final.weight.shape[0])  # CLIP text width, as in CLIP4Clip/DRL
        embed = int(clip.text_projection.shape[-1])
        if (sim_header == "seqTransf" or interaction == "wti") and embed != width:
            raise ConfigError(f"{sim_header}/{interaction} heads need CLIP embed_dim == text width, got {embed} != {width}")
        self.sim_header = sim_header
        if sim_header == "seqTransf":
            self.frame_position_embeddings = nn.Embedding(max_positions, width)
            self.transformerClip = SeqTransformer(width, seq_layers, width // 64)
        if interaction == "wti":
            self.text_weight_fc = weight_mlp(width)
            self.video_weight_fc = weight_mlp(width)

    def aggregate(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """frames [B, T, D], mask [B, T] -> temporally aggregated frames [B, T, D]."""
        if self.sim_header != "seqTransf":
            return frames
        t = frames.shape[1]
        if t > self.frame_position_embeddings.num_embeddings:
            raise ValueError(f"{t} frames exceed the {self.frame_position_embeddings.num_embeddings} frame positions")
        x = frames + self.frame_position_embeddings.weight[:t][None]
        x = self.transformerClip(x, mask)
        return x + frames


def _masked_softmax(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    logits = logits.masked_fill(~mask, float("-inf"))
    w = torch.softmax(logits, dim=-1)
    return torch.nan_to_num(w, nan=0.0)  # rows with no valid position


def token_wise_scores(
    text_tokens: np.ndarray | torch.Tensor,
    text_mask: np.ndarray | torch.Tensor,
    video_frames: np.ndarray | torch.Tensor,
    video_mask: np.ndarray | torch.Tensor,
    text_weights: np.ndarray | torch.Tensor | None = None,
    video_weights: np.ndarray | torch.Tensor | None = None,
) -> np.ndarray:
    """DRL's TI (no weights: uniform over valid positions) or WTI (with the weight-head outputs) scores.

    text_tokens [Nt, L, D], text_mask [Nt, L]; video_frames [Nv, T, D] (aggregated), video_mask [Nv, T].
    s_tv = <norm(t), norm(v)>, 0 on padded pairs; score = (sum_t w_t max_v s_tv + sum_v w_v max_t s_tv) / 2.
    Returns [Nt, Nv] float32 (a reference implementation; the evaluate stage may block this)."""
    t = torch.as_tensor(text_tokens, dtype=torch.float32)
    v = torch.as_tensor(video_frames, dtype=torch.float32)
    tm = torch.as_tensor(text_mask).bool()
    vm = torch.as_tensor(video_mask).bool()
    t = t / t.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    v = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    s = torch.einsum("atd,bvd->abtv", t, v)
    s = s * tm[:, None, :, None] * vm[None, :, None, :]
    if text_weights is None:
        wt = tm.float() / tm.float().sum(-1, keepdim=True).clamp_min(1.0)
    else:
        wt = torch.as_tensor(text_weights, dtype=torch.float32)
    if video_weights is None:
        wv = vm.float() / vm.float().sum(-1, keepdim=True).clamp_min(1.0)
    else:
        wv = torch.as_tensor(video_weights, dtype=torch.float32)
    t2v = torch.einsum("abt,at->ab", s.max(dim=-1).values, wt)
    v2t = torch.einsum("abv,bv->ab", s.max(dim=-2).values, wv)
    return ((t2v + v2t) / 2.0).numpy().astype(np.float32)


class Clip4ClipVideoText(ClipVideoText):
    """CLIP4Clip / DRL: CLIP per-frame features, a temporal head in pool(), optional DRL weight heads."""

    def __init__(self, info: ModelInfo, net: Clip4ClipNet, device: str = "cpu", amp_dtype: str | None = None) -> None:
        super().__init__(info, net.clip, device, amp_dtype)
        self.net = net.to(self.device).eval()
        self.sim_header = net.sim_header
        self.interaction = str(info.params.get("interaction", "dp"))

    @property
    def has_weight_heads(self) -> bool:
        return hasattr(self.net, "text_weight_fc")

    # --- video side -------------------------------------------------------------------------------------
    def aggregate_frames(self, unit_features: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """One video's frame features [U, D] (+ mask [U], True = real) -> aggregated frames [U, D] float32."""
        feats, m = self._frames_and_mask(unit_features, mask)
        with torch.inference_mode(), self.autocast():
            out = self.net.aggregate(feats[None], m[None])[0]
        return out.float().cpu().numpy()

    def aggregate_frames_batch(self, frames: np.ndarray | torch.Tensor, mask: np.ndarray | torch.Tensor) -> np.ndarray:
        """Batched aggregate_frames: frames [B, T, D], mask [B, T] -> [B, T, D] (each video its own mask)."""
        x = torch.as_tensor(frames, dtype=torch.float32).to(self.device)
        m = torch.as_tensor(mask).to(self.device).bool()
        with torch.inference_mode(), self.autocast():
            out = self.net.aggregate(x, m)
        return out.float().cpu().numpy()

    def pool(self, unit_features: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """meanP over the aggregated frames (seqTransf) or the raw frames (meanP)."""
        agg = self.aggregate_frames(unit_features, mask) if self.sim_header == "seqTransf" else unit_features
        return super().pool(np.asarray(agg, dtype=np.float32), mask)

    def _frames_and_mask(self, unit_features, mask) -> tuple[torch.Tensor, torch.Tensor]:
        feats = torch.as_tensor(np.asarray(unit_features), dtype=torch.float32)
        if feats.ndim != 2:
            raise ValueError(f"expected frame features [U, D], got shape {tuple(feats.shape)}")
        m = torch.ones(len(feats), dtype=torch.bool) if mask is None else torch.as_tensor(np.asarray(mask, dtype=bool))
        if m.shape != (len(feats),):
            raise ValueError(f"mask shape {tuple(m.shape)} does not match {len(feats)} frames")
        return feats.to(self.device), m.to(self.device)

    # --- DRL weight heads ----------------------------------------------------------------------------------
    def _require_heads(self) -> None:
        if not self.has_weight_heads:
            raise VtpipeError(f"model {self.name!r} has no WTI weight heads (params.interaction is {self.interaction!r})")

    def text_token_weights(self, tokens: np.ndarray | torch.Tensor, mask: np.ndarray | torch.Tensor) -> np.ndarray:
        """DRL text weights: softmax over valid tokens of text_weight_fc(raw token feature). [N, L] float32."""
        self._require_heads()
        x = torch.as_tensor(tokens, dtype=torch.float32).to(self.device)
        m = torch.as_tensor(mask).bool().to(self.device)
        with torch.inference_mode(), self.autocast():
            logits = self.net.text_weight_fc(x).squeeze(-1).float()
        return _masked_softmax(logits, m).cpu().numpy()

    def video_frame_weights(self, frames: np.ndarray | torch.Tensor, mask: np.ndarray | torch.Tensor) -> np.ndarray:
        """DRL video weights: softmax over valid frames of video_weight_fc(aggregated frame feature).
        frames [B, T, D] (from aggregate_frames), mask [B, T] -> [B, T] float32."""
        self._require_heads()
        x = torch.as_tensor(frames, dtype=torch.float32).to(self.device)
        m = torch.as_tensor(mask).bool().to(self.device)
        with torch.inference_mode(), self.autocast():
            logits = self.net.video_weight_fc(x).squeeze(-1).float()
        return _masked_softmax(logits, m).cpu().numpy()


def _head_config(info: ModelInfo) -> tuple[str, str, int]:
    p = info.params
    sim_header = str(p.get("sim_header", "meanP"))
    if sim_header not in SIM_HEADERS:
        raise ConfigError(f"{info.name}: params.sim_header must be one of {SIM_HEADERS}, got {sim_header!r}")
    interaction = str(p.get("interaction", "dp"))
    if interaction not in INTERACTIONS:
        raise ConfigError(f"{info.name}: params.interaction must be one of {INTERACTIONS}, got {interaction!r}")
    return sim_header, interaction, int(p.get("seq_layers", 4))


def _layout_hint(sd: Mapping[str, torch.Tensor]) -> str:
    has_seq = any(k.startswith("transformerClip.") for k in sd)
    has_wti = any(k.startswith("text_weight_fc.") for k in sd)
    has_cross = any(k.startswith("cross.") for k in sd)
    parts = [f"the file has seqTransf keys: {has_seq}, WTI weight heads: {has_wti}"]
    if has_cross:
        parts.append("it has `cross.*` keys (tightTransf), which vtpipe does not support")
    parts.append("pick the model whose params.sim_header / params.interaction match the file")
    return "; ".join(parts)


def load(
    info: ModelInfo,
    weights: Mapping[str, str | None],
    device: str = "cpu",
    amp_dtype: str | None = None,
    allow_random: bool = False,
) -> Clip4ClipVideoText:
    """Registry loader for family "clip4clip"."""
    sim_header, interaction, seq_layers = _head_config(info)
    key, path = checkpoint_path(info, weights)
    seed = int(info.params.get("seed", 0))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        clip = build_clip(info.params)
        net = Clip4ClipNet(clip, sim_header, interaction, seq_layers)
    if path is None:
        ck.missing_weights(info.name, key, str(info.files.get(key, "")), allow_random)
        model = Clip4ClipVideoText(info, net.eval(), device, amp_dtype)
        model.random_weights = True
        return model
    obj = ck.load_torch_file(path, what=f"{info.name} checkpoint")
    sd = ck.strip_prefix(ck.unwrap_state_dict(obj, ("state_dict", "model"), what=f"{info.name} checkpoint {path!r}"))
    ignore = [f"clip.{k}" for k in OPENAI_METADATA_KEYS]
    ck.load_strict(net, sd, ignore=ignore, what=f"{info.name}: checkpoint {path!r}", hint=_layout_hint(sd))
    return Clip4ClipVideoText(info, net.eval(), device, amp_dtype)
