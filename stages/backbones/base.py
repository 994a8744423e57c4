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

from stages.backbones.preprocess import (  # noqa: F401 - re-exported: the preprocessing lives beside the interface
    CLIP_MEAN,
    CLIP_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Preprocess,
)


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
    precision: str = "fp32"  # what the reference ran on CUDA: fp32, or fp16 / bf16 (autocast); CPU is always fp32
    aspect: str = "stored"  # stored: frames as the stream stores its pixels (every reference) | display: SAR-corrected
    protocol: str = "default"  # the protocol whose sampling/preprocess/precision/aspect these are
    protocols: dict = field(default_factory=dict)  # name -> description of the other selectable protocols


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

    @property
    def precision(self) -> str:
        """The precision the forward passes run in: "fp32", or "fp16"/"bf16" autocast (CUDA only)."""
        if self.device.type == "cuda" and self.amp_dtype in ("bf16", "fp16"):
            return self.amp_dtype
        return "fp32"

    def autocast(self):
        """Autocast on CUDA when amp_dtype is set ("bf16"/"fp16"); a no-op context on CPU."""
        if self.device.type == "cuda" and self.amp_dtype:
            dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[self.amp_dtype]
            return torch.autocast("cuda", dtype=dtype)
        return torch.autocast("cpu", enabled=False)
