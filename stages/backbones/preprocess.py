"""Frame preprocessing as plain, picklable data: decoded uint8 RGB frames -> a backbone's float input.

Each reference reader is reproduced by choosing *how* the resize is computed, not only its size:

* backend "pil":   Pillow's ``Image.resize`` on the uint8 frame, what torchvision's ``Resize`` does to a PIL
                   image (CLIP, CLIP4Clip, DRL: bicubic; TVTSv2 extraction: bilinear; TVTSv2 zero-shot:
                   NEAREST). Pillow resizes in two 1-D passes (horizontal, then vertical) and rounds to uint8
                   between them, so only Pillow itself gives the reference's pixels.
* backend "torch": ``torch.nn.functional.interpolate`` on float frames, what torchvision's ``Resize`` does to
                   a float tensor (LocVTP: bilinear on ``to_tensor`` frames, no antialias before
                   torchvision 0.17, hence ``antialias``).
* backend "decoder": the frames are resized by the video decoder (decord = ffmpeg swscale, bilinear), what
                   the ffmpeg-based references do (``ffmpeg -vf scale=...``); the engine asks the decoder for
                   the target size, so the frames arrive resized. Frames of another size (a direct call)
                   are resized with torch bilinear, without antialias.

Geometry is torchvision's everywhere: ``Resize(s)`` makes the short side s and the long side
``int(s * long / short)`` (truncated, portrait alike); ``CenterCrop`` takes offsets
``int(round((H - s) / 2))`` and pads with zeros when the frame is smaller. Values: ``/ 255`` then
``(x - mean) / std``. Padding frames (the sampler's index -1) are zero *after* normalisation, as every
reference pads (CLIP4Clip and DRL fill a zero array, TVTSv2's eval a zero tensor, MIL-NCE zero pixels / 255).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

BACKENDS = ("torch", "pil", "decoder")
INTERPOLATIONS = ("bicubic", "bilinear", "nearest", "nearest-exact")


def resized_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(h, w) after torchvision's ``Resize(short_side)``: the short side becomes short_side, the long side
    ``int(short_side * long / short)`` (truncated, in floating point as torchvision computes it)."""
    if height <= 0 or width <= 0:
        raise ValueError(f"bad frame size {width}x{height}")
    if width <= height:
        return int(short_side * height / width), short_side
    return short_side, int(short_side * width / height)


def center_crop_offsets(height: int, width: int, size: int) -> tuple[int, int]:
    """(top, left) of torchvision's ``CenterCrop(size)`` on a frame at least size x size."""
    return int(round((height - size) / 2.0)), int(round((width - size) / 2.0))


@dataclass(frozen=True)
class Preprocess:
    """Frame preprocessing (see the module docstring).

    size:    output side length (square output size x size unless crop == "none").
    resize:  "short" (short side -> resize_to, aspect kept, long side truncated) or "exact" (size x size).
    resize_to: short side before cropping (default: size).
    crop:    "center" (torchvision CenterCrop(size)) or "none".
    interpolation: "bicubic", "bilinear", "nearest" (PIL NEAREST / torch legacy nearest) or "nearest-exact"
             (torch only).
    backend: "pil", "torch" or "decoder" (see the module docstring).
    antialias: torch backend only: antialiased down-scaling (torchvision >= 0.17 on tensors) or not.
    mean/std: per-channel normalisation after / 255; None leaves values in [0, 1].
    """

    size: int = 224
    resize: str = "short"
    resize_to: int | None = None
    crop: str = "center"
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] | None = CLIP_MEAN
    std: tuple[float, float, float] | None = CLIP_STD
    backend: str = "torch"
    antialias: bool = True

    def __post_init__(self) -> None:
        if self.resize not in ("short", "exact"):
            raise ValueError(f"Preprocess.resize must be 'short' or 'exact', got {self.resize!r}")
        if self.crop not in ("center", "none"):
            raise ValueError(f"Preprocess.crop must be 'center' or 'none', got {self.crop!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"Preprocess.interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"Preprocess.backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.backend == "pil" and self.interpolation == "nearest-exact":
            raise ValueError("Preprocess: 'nearest-exact' is a torch mode; Pillow's NEAREST is 'nearest'")
        if self.backend == "decoder" and self.interpolation != "bilinear":
            raise ValueError("Preprocess: the decoder backend resizes bilinearly (swscale); set interpolation: bilinear")
        if not isinstance(self.size, int) or self.size <= 0:
            raise ValueError(f"Preprocess.size must be a positive integer, got {self.size!r}")

    # --- geometry ------------------------------------------------------------------------------------------
    def target_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) of a height x width frame after the resize step (before cropping)."""
        if self.resize == "exact":
            return self.size, self.size
        return resized_size(height, width, self.resize_to or self.size)

    # --- the transform ------------------------------------------------------------------------------------
    def __call__(self, frames: np.ndarray, pad: np.ndarray | None = None) -> np.ndarray:
        """uint8 RGB [U, H, W, 3] or [U, L, H, W, 3] -> float32 [U, 3, h, w] or [U, 3, L, h, w].

        pad: optional bool array of the frames' leading shape ([U] or [U, L]); True marks a padding frame,
        which comes out all zeros (zero after normalisation, as the references pad)."""
        if frames.dtype != np.uint8 or frames.shape[-1] != 3 or frames.ndim not in (4, 5):
            raise ValueError(f"expected uint8 RGB frames [U,H,W,3] or [U,L,H,W,3], got {frames.dtype} {frames.shape}")
        lead = frames.shape[:-3]
        clip_len = frames.shape[1] if frames.ndim == 5 else None
        flat = frames.reshape((-1,) + frames.shape[-3:])
        if self.backend == "pil":
            x = torch.from_numpy(self._resize_pil(flat)).permute(0, 3, 1, 2).float()
        else:
            x = torch.from_numpy(np.ascontiguousarray(flat)).permute(0, 3, 1, 2).float()
            x = self._resize_torch(x)
        if self.crop == "center":
            x = _center_crop(x, self.size)
        x = x.div_(255.0)
        if self.mean is not None:
            mean = torch.tensor(self.mean, dtype=torch.float32).view(1, 3, 1, 1)
            std = torch.tensor(self.std, dtype=torch.float32).view(1, 3, 1, 1)
            x = (x - mean) / std
        if pad is not None:
            p = np.asarray(pad, dtype=bool)
            if p.shape != lead:
                raise ValueError(f"pad mask of shape {p.shape} for frames of leading shape {lead}")
            x[torch.from_numpy(p.reshape(-1))] = 0.0
        # C order always: the permute above leaves x channels-last, and a model's conv takes another code path
        # (other float roundings) on such input than on the C-ordered copy a decode worker's pickling makes
        out = np.ascontiguousarray(x.numpy(), dtype=np.float32)
        if clip_len is not None:
            u = frames.shape[0]
            out = out.reshape(u, clip_len, 3, out.shape[-2], out.shape[-1]).transpose(0, 2, 1, 3, 4)
            out = np.ascontiguousarray(out)
        return out

    def _resize_pil(self, flat: np.ndarray) -> np.ndarray:
        from PIL import Image

        h, w = flat.shape[1:3]
        th, tw = self.target_size(h, w)
        if (th, tw) == (h, w):
            return np.ascontiguousarray(flat)
        resample = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}[self.interpolation]
        out = np.empty((len(flat), th, tw, 3), dtype=np.uint8)
        for i, fr in enumerate(flat):
            out[i] = np.asarray(Image.fromarray(np.ascontiguousarray(fr), mode="RGB").resize((tw, th), resample))
        return out

    def _resize_torch(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        th, tw = self.target_size(h, w)
        if (th, tw) == (h, w):
            return x
        mode = self.interpolation
        kwargs: dict[str, Any] = {}
        if mode in ("bicubic", "bilinear"):
            kwargs = {"align_corners": False, "antialias": bool(self.antialias) and self.backend == "torch"}
        return F.interpolate(x, size=(th, tw), mode=mode, **kwargs)

    def describe(self) -> dict[str, Any]:
        """JSON-able provenance for stores and manifests."""
        return {
            "size": self.size, "resize": self.resize, "resize_to": self.resize_to, "crop": self.crop,
            "interpolation": self.interpolation, "backend": self.backend,
            "antialias": bool(self.antialias) if self.backend == "torch" else None,
            "mean": list(self.mean) if self.mean is not None else None,
            "std": list(self.std) if self.std is not None else None,
        }


def _center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    if h < size or w < size:  # pad with zeros like torchvision's CenterCrop
        ph, pw = max(0, size - h), max(0, size - w)
        x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        h, w = x.shape[-2:]
    top, left = center_crop_offsets(h, w, size)
    return x[..., top : top + size, left : left + size]
