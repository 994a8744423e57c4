"""TVTSv2 (ViT-B/32, B/16, H/14): a divided space-time ViT video encoder and a CLIP text tower.

Checkpoint: ``ckpt['state_dict']`` with every key prefixed ``module.`` (stripped); training-only
``pred_model.*`` keys (the order-prediction SortTransformer) are ignored by name; all else strict
(shapes below for B/32; B/16: conv1 [768, 3, 16, 16], positional_embedding [197, 768]; H/14: width 1280,
32 layers of 16 heads, conv1 [1280, 3, 14, 14], positional_embedding [257, 1280], proj [1280, 1024], text
width 1024 in 24 layers, text_projection [1024, 1024]):

    text_model.resblocks.N.{ln_1, attn.in_proj_weight/bias, attn.out_proj, ln_2, mlp.c_fc, mlp.c_proj}.*
    text_token_embedding.weight [49408, 512], text_positional_embedding [77, 512], text_ln_final.*,
    text_projection [512, 512]
    video_model.conv1.weight [768, 3, 32, 32] (no bias), video_model.class_embedding [768],
    video_model.positional_embedding [50, 768], video_model.temporal_embedding [12, 768],
    video_model.ln_pre.*, video_model.ln_post.*, video_model.proj [768, 512],
    video_model.transformer.resblocks.N.{attn.qkv, attn.proj, timeattn.qkv, timeattn.proj, ln_1, ln_2,
    ln_3, mlp.c_fc, mlp.c_proj}.{weight, bias}

Video (one unit = one clip of T <= 12 frames, [B, 3, T, 224, 224] -> [B, 512]): frames are patchified
separately, one CLS token for the whole clip; token positions = CLIP spatial positions + temporal
embedding[t]; ln_pre; 12 blocks of
    time_out = timeattn(ln_3(x))          # each patch attends over the same patch in all frames + CLS
    s = x + attn(ln_1(x + time_out))      # each patch attends within its frame + CLS
    out = s + mlp(ln_2(s))                # activation: QuickGELU (B/32, B/16) or exact GELU (H/14)
where in both attentions the CLS query attends to every token of the clip; output ln_post(CLS) @ proj.
LayerNorms return their input's dtype (the reference's LayerNorm subclass), which matters under autocast.

Text: CLIP BPE, 77 tokens (truncated), EOT feature of ln_final(x) @ text_projection; token features and
mask as in clip.py; same activation as the video tower (OpenAI CLIP text for B/32, B/16; OpenCLIP ViT-H-14
text for H/14). Nothing is L2-normalised.

params: arch / arch_cfg (open_clip CLIP config for the dimensions, default ViT-B-32), activation
("quick_gelu", default, or "gelu"), num_frames (12), seed. The precision on CUDA is
the YAML's `precision` (fp16 for H/14, as its reference autocasts) under extract.amp auto.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Mapping, Sequence

import torch
from torch import nn

from stages.backbones import checkpoints as ck
from stages.backbones.base import ModelInfo, TextFeatures, VideoTextModel
from stages.backbones.clip import ClipTokenizer, clip_arch_config, encode_clip_text
from stages.contract.errors import ConfigError

TRAINING_ONLY_KEYS = ("pred_model.*",)


ACTIVATIONS = ("quick_gelu", "gelu")


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


def make_activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ConfigError(f"TVTSv2 params.activation must be one of {list(ACTIVATIONS)}, got {name!r}")
    return QuickGELU() if name == "quick_gelu" else nn.GELU()


class LayerNorm(nn.LayerNorm):
    """LayerNorm whose output has its input's dtype (fp16 in, fp16 out under autocast), as in TVTSv2."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).to(x.dtype)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.softmax(q @ k.transpose(-1, -2), dim=-1) @ v


class DividedAttention(nn.Module):
    """TVTS's VarAttention: `qkv` and `proj` linears; CLS attends to all, patches within a frame (space)
    or across frames at one position (time), each plus the CLS key/value."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, frames: int, mode: str) -> torch.Tensor:
        b, s, d = x.shape
        h, hd = self.heads, d // self.heads
        n = (s - 1) // frames  # patches per frame
        q, k, v = (t.view(b, s, h, hd).transpose(1, 2) for t in self.qkv(x).chunk(3, dim=-1))  # [B, H, S, hd]
        q = q * self.scale
        cls_out = _attend(q[:, :, :1], k, v)  # [B, H, 1, hd]
        qp, kp, vp = (t[:, :, 1:].reshape(b, h, frames, n, hd) for t in (q, k, v))
        if mode == "time":
            qp, kp, vp = (t.transpose(2, 3) for t in (qp, kp, vp))  # [B, H, N, T, hd]
        groups = qp.shape[2]
        kc = k[:, :, None, :1].expand(b, h, groups, 1, hd)
        vc = v[:, :, None, :1].expand(b, h, groups, 1, hd)
        out = _attend(qp, torch.cat((kc, kp), dim=3), torch.cat((vc, vp), dim=3))
        if mode == "time":
            out = out.transpose(2, 3)
        out = torch.cat((cls_out, out.reshape(b, h, frames * n, hd)), dim=2)
        return self.proj(out.transpose(1, 2).reshape(b, s, d))


class SpaceTimeBlock(nn.Module):
    def __init__(self, width: int, heads: int, activation: str = "quick_gelu") -> None:
        super().__init__()
        self.attn = DividedAttention(width, heads)
        self.timeattn = DividedAttention(width, heads)
        self.ln_3 = LayerNorm(width)
        self.ln_1 = LayerNorm(width)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, width * 4))
        self.mlp.add_module("gelu", make_activation(activation))
        self.mlp.add_module("c_proj", nn.Linear(width * 4, width))
        self.ln_2 = LayerNorm(width)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        time_out = self.timeattn(self.ln_3(x), frames, "time")
        s = x + self.attn(self.ln_1(x + time_out), frames, "space")
        return s + self.mlp(self.ln_2(s))


class _Blocks(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, activation: str = "quick_gelu") -> None:
        super().__init__()
        self.resblocks = nn.ModuleList([SpaceTimeBlock(width, heads, activation) for _ in range(layers)])


class SpaceTimeViT(nn.Module):
    """TVTSv2's video_model (names as in the checkpoint)."""

    def __init__(self, image_size: int = 224, patch_size: int = 32, width: int = 768, layers: int = 12,
                 heads: int = 12, output_dim: int = 512, num_frames: int = 12, activation: str = "quick_gelu") -> None:
        super().__init__()
        grid = image_size // patch_size
        self.image_size, self.patch_size, self.num_frames = image_size, patch_size, num_frames
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        scale = width**-0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(grid * grid + 1, width))
        self.temporal_embedding = nn.Parameter(scale * torch.randn(num_frames, width))
        self.ln_pre = LayerNorm(width)
        self.transformer = _Blocks(width, layers, heads, activation)
        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        """[B, 3, T, H, W] -> ln_post(CLS) @ proj [B, output_dim]."""
        b, c, t, hgt, wid = clips.shape
        if c != 3 or hgt != self.image_size or wid != self.image_size:
            raise ValueError(f"expected clips [B, 3, T, {self.image_size}, {self.image_size}], got {tuple(clips.shape)}")
        if not 1 <= t <= self.num_frames:
            raise ValueError(f"clip has {t} frames; the temporal embedding has {self.num_frames}")
        x = clips.transpose(1, 2).reshape(b * t, c, hgt, wid)
        x = self.conv1(x).flatten(2).transpose(1, 2)  # [B*T, N, D]
        n, d = x.shape[1], x.shape[2]
        x = x.reshape(b, t * n, d)
        pos = self.positional_embedding[1:].repeat(t, 1) + self.temporal_embedding[:t].repeat_interleave(n, dim=0)
        pos = torch.cat((self.positional_embedding[:1], pos), dim=0)
        x = torch.cat((self.class_embedding.view(1, 1, d).expand(b, 1, d), x), dim=1) + pos
        x = self.ln_pre(x)
        for block in self.transformer.resblocks:
            x = block(x, t)
        return self.ln_post(x[:, 0]) @ self.proj


class TVTSv2Net(nn.Module):
    """Module tree with the checkpoint's names: CLIP text parts (text_*) and video_model."""

    def __init__(self, arch: Mapping, num_frames: int = 12, activation: str = "quick_gelu") -> None:
        super().__init__()
        from open_clip.model import _build_text_tower

        make_activation(activation)  # validates the name
        vcfg, tcfg = dict(arch["vision_cfg"]), dict(arch["text_cfg"])
        text = _build_text_tower(arch["embed_dim"], tcfg, quick_gelu=activation == "quick_gelu")
        self.text_model = text.transformer
        self.text_token_embedding = text.token_embedding
        self.text_positional_embedding = text.positional_embedding
        self.text_ln_final = text.ln_final
        self.text_projection = text.text_projection
        self.register_buffer("text_attn_mask", text.attn_mask, persistent=False)
        width = int(vcfg.get("width", 768))
        self.video_model = SpaceTimeViT(
            image_size=int(vcfg.get("image_size", 224)), patch_size=int(vcfg.get("patch_size", 32)), width=width,
            layers=int(vcfg.get("layers", 12)), heads=width // int(vcfg.get("head_width", 64)),
            output_dim=int(arch["embed_dim"]), num_frames=num_frames, activation=activation,
        )

    def text_tower(self) -> SimpleNamespace:
        """The attributes clip.clip_text_tokens expects, under CLIP's names."""
        return SimpleNamespace(
            token_embedding=self.text_token_embedding, positional_embedding=self.text_positional_embedding,
            transformer=self.text_model, ln_final=self.text_ln_final, text_projection=self.text_projection,
            attn_mask=self.text_attn_mask,
        )


class TVTSv2VideoText(VideoTextModel):
    """TVTSv2: one vector (512-d B/32 and B/16, 1024-d H/14) per clip of up to 12 frames; CLIP text tower."""

    def __init__(self, info: ModelInfo, net: TVTSv2Net, device: str = "cpu", amp_dtype: str | None = None) -> None:
        super().__init__(info, device, amp_dtype)
        self.net = net.to(self.device).eval()
        ctx = int(net.text_positional_embedding.shape[0])
        self.tokenizer = ClipTokenizer(int(info.params.get("max_words", ctx)))
        out = int(net.video_model.proj.shape[1])
        if out != info.embed_dim:
            raise ConfigError(f"{info.name}: embed_dim {info.embed_dim} in the YAML, but the model outputs {out}")

    def encode_units(self, units: torch.Tensor) -> torch.Tensor:
        return self.run_forward(self.net.video_model, units, 5)

    def encode_text(self, captions: Sequence[str]) -> TextFeatures:
        return encode_clip_text(self.net.text_tower(), self.tokenizer, captions, self.device, self.autocast)


def load(
    info: ModelInfo,
    weights: Mapping[str, str | None],
    device: str = "cpu",
    amp_dtype: str | None = None,
    allow_random: bool = False,
) -> TVTSv2VideoText:
    """Registry loader for family "tvtsv2"."""
    params = dict(info.params)
    params.setdefault("arch", "ViT-B-32")
    arch = clip_arch_config(params)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(params.get("seed", 0)))
        net = TVTSv2Net(arch, int(params.get("num_frames", 12)), str(params.get("activation", "quick_gelu")))
    path = weights.get("checkpoint")
    if path is None:
        ck.missing_weights(info.name, "checkpoint", str(info.files.get("checkpoint", "")), allow_random)
    else:
        obj = ck.load_torch_file(path, what="TVTSv2 checkpoint")
        sd = ck.strip_prefix(ck.unwrap_state_dict(obj, ("state_dict",), what=f"TVTSv2 checkpoint {path!r}"))
        ck.load_strict(net, sd, ignore=TRAINING_ONLY_KEYS, what=f"{info.name}: checkpoint {path!r}")
    model = TVTSv2VideoText(info, net, device, amp_dtype)
    model.random_weights = path is None
    return model
