"""The interface every backbone implements, and the picklable preprocessing that feeds it.

Data flow in the extract engine::

    decode worker:  sampled frames uint8 RGB, [U, H, W, 3] (frame units) or [U, L, H, W, 3] (clip units)
                    -> Preprocess(...)  -> float32 numpy, [U, 3, h, w] or [U, 3, L, h, w]
    model process:  batches of units from many videos -> encode_units -> [B, D] float32
                    per video: pool(unit features [U, D]) -> [D]

A "unit" is what one feature row covers: one frame for CLIP-style models, one clip of L frames for C3D/S3D.
The frame-sampling policy (stages.video.sampling) decides which frames form the units.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocess:
    """Frame preprocessing as plain data, so it pickles into decode worker processes.

    size:    target side length (square output `size` x `size` unless crop == "none").
    resize:  "short" (short side -> resize_to, aspect kept) or "exact" (both sides -> size, aspect lost).
    resize_to: short-side length before cropping (defaults to `size`).
    crop:    "center" (centre crop size x size) or "none".
    interpolation: "bicubic", "bilinear" or "nearest".
    mean/std: per-channel normalisation after scaling to [0, 1]; None leaves values in [0, 1].
    """

    size: int = 224
    resize: str = "short"
    resize_to: int | None = None
    crop: str = "center"
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] | None = CLIP_MEAN
    std: tuple[float, float, float] | None = CLIP_STD

    def __post_init__(self) -> None:
        if self.resize not in ("short", "exact"):
            raise ValueError(f"Preprocess.resize must be 'short' or 'exact', got {self.resize!r}")
        if self.crop not in ("center", "none"):
            raise ValueError(f"Preprocess.crop must be 'center' or 'none', got {self.crop!r}")
        if self.interpolation not in ("bicubic", "bilinear", "nearest"):
            raise ValueError(f"Preprocess.interpolation must be bicubic, bilinear or nearest, got {self.interpolation!r}")

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """uint8 RGB [U, H, W, 3] or [U, L, H, W, 3] -> float32 [U, 3, h, w] or [U, 3, L, h, w]."""
        if frames.dtype != np.uint8 or frames.shape[-1] != 3 or frames.ndim not in (4, 5):
            raise ValueError(f"expected uint8 RGB frames [U,H,W,3] or [U,L,H,W,3], got {frames.dtype} {frames.shape}")
        clip_len = frames.shape[1] if frames.ndim == 5 else None
        flat = frames.reshape((-1,) + frames.shape[-3:])
        x = torch.from_numpy(np.ascontiguousarray(flat)).permute(0, 3, 1, 2).float()  # [N, 3, H, W], 0..255
        x = self._resize(x)
        if self.crop == "center":
            x = _center_crop(x, self.size)
        x = x.clamp_(0, 255).div_(255.0)
        if self.mean is not None:
            mean = torch.tensor(self.mean).view(1, 3, 1, 1)
            std = torch.tensor(self.std).view(1, 3, 1, 1)
            x = (x - mean) / std
        # C order always: the permute above leaves x channels-last, and a model's conv takes another code path
        # (other float roundings) on such input than on the C-ordered copy a decode worker's pickling makes
        out = np.ascontiguousarray(x.numpy(), dtype=np.float32)
        if clip_len is not None:
            u = frames.shape[0]
            out = out.reshape(u, clip_len, 3, out.shape[-2], out.shape[-1]).transpose(0, 2, 1, 3, 4)
            out = np.ascontiguousarray(out)
        return out

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if self.resize == "exact":
            th, tw = self.size, self.size
        else:
            target = self.resize_to or self.size
            if h <= w:
                th, tw = target, max(1, int(round(w * target / h)))
            else:
                th, tw = max(1, int(round(h * target / w))), target
        if (th, tw) == (h, w):
            return x
        mode = self.interpolation
        kwargs: dict[str, Any] = {}
        if mode in ("bicubic", "bilinear"):
            kwargs = {"align_corners": False, "antialias": True}
        return F.interpolate(x, size=(th, tw), mode=mode, **kwargs)


def _center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    if h < size or w < size:  # pad like torchvision's CenterCrop would
        ph, pw = max(0, size - h), max(0, size - w)
        x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        h, w = x.shape[-2:]
    top = int(round((h - size) / 2.0))
    left = int(round((w - size) / 2.0))
    return x[..., top : top + size, left : left + size]


def as_float_tensor(units: Any, ndim: int, what: str) -> torch.Tensor:
    """numpy or torch input -> float tensor, checking the number of dimensions."""
    t = torch.as_tensor(units)
    if t.ndim != ndim:
        raise ValueError(f"{what}: expected a {ndim}-d batch, got shape {tuple(t.shape)}")
    return t.float()


@dataclass
class TextFeatures:
    """Caption features. pooled: [N, D]; tokens/mask only for models with token-level outputs."""

    pooled: np.ndarray
    tokens: np.ndarray | None = None  # [N, L, D] float32
    mask: np.ndarray | None = None  # [N, L] bool, True on real tokens


@dataclass
class ModelInfo:
    """What the registry knows of a model, from configs/models/<name>.yaml."""

    name: str
    family: str
    embed_dim: int
    unit: str = "frame"  # "frame" or "clip"
    sampling: dict = field(default_factory=dict)
    preprocess: dict = field(default_factory=dict)
    files: dict = field(default_factory=dict)  # name -> description of a local file the model needs
    params: dict = field(default_factory=dict)  # family-specific architecture parameters
    description: str = ""


class VideoTextModel(abc.ABC):
    """A video encoder and a text encoder that share one embedding space.

    Subclasses set `info` and implement encode_units and encode_text. All outputs are float32 numpy on the
    CPU; on CUDA the forward passes may run under autocast, but results are cast back to float32.
    """

    info: ModelInfo
    random_weights: bool = False  # True when no checkpoint was given (the report says so, loudly)

    def __init__(self, info: ModelInfo, device: str = "cpu", amp_dtype: str | None = None) -> None:
        self.info = info
        self.device = torch.device(device)
        self.amp_dtype = amp_dtype

    # --- what the engine asks -------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.info.name

    @property
    def embed_dim(self) -> int:
        return self.info.embed_dim

    @property
    def unit(self) -> str:
        return self.info.unit

    def preprocess(self) -> Preprocess:
        """The picklable preprocessing that turns decoded frames into this model's input; by default the
        model YAML's `preprocess` section."""
        from stages.backbones.checkpoints import preprocess_from_config

        return preprocess_from_config(self.info.preprocess)

    @abc.abstractmethod
    def encode_units(self, units: torch.Tensor) -> torch.Tensor:
        """[B, 3, h, w] frames or [B, 3, L, h, w] clips -> [B, D] unit features (float32, on CPU)."""

    def pool(self, unit_features: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """Video-level vector from its unit features [U, D]. Default: CLIP4Clip's meanP (normalise, mean,
        normalise) over real units (mask True)."""
        feats = unit_features if mask is None else unit_features[np.asarray(mask, dtype=bool)]
        if len(feats) == 0:
            return np.zeros(unit_features.shape[1], dtype=np.float32)
        feats = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
        v = feats.mean(axis=0)
        return (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32)

    @abc.abstractmethod
    def encode_text(self, captions: Sequence[str]) -> TextFeatures:
        """Captions -> TextFeatures (pooled [N, D], and token features + mask where the model has them)."""

    # --- helpers for subclasses ---------------------------------------------------------------------
    def run_forward(self, forward, units: Any, ndim: int) -> torch.Tensor:
        """The shared body of encode_units: units (numpy or torch, `ndim`-d) -> forward(x) on the model's
        device, under inference mode and autocast -> float32 on the CPU."""
        x = as_float_tensor(units, ndim, f"{self.name}.encode_units").to(self.device)
        with torch.inference_mode(), self.autocast():
            out = forward(x)
        return out.float().cpu()

    def autocast(self):
        """Autocast on CUDA when amp_dtype is set ("bf16"/"fp16"); a no-op context on CPU."""
        if self.device.type == "cuda" and self.amp_dtype:
            dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[self.amp_dtype]
            return torch.autocast("cuda", dtype=dtype)
        return torch.autocast("cpu", enabled=False)
