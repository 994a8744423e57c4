"""shapes-tiny: a small video-text model trained on vtpipe's embedded sample (coloured shapes moving).

It exists so the demo's retrieval numbers mean something: it was trained contrastively (InfoNCE) on the
sample's training split, whose colour-shape-direction combinations never occur in the test split, and it
retrieves the test clips' captions far above chance (see data/models/shapes-tiny.json).

Video side (unit = one frame, sampled at 3 fps):
    frame [3, 64, 64] -> 4 small convs (16x16 map) -> a 1x1 "saliency" conv -> softmax over positions
    -> attention-pooled + globally pooled features -> MLP -> L2-normalised appearance a (embed_dim - 2)
    -> soft-argmax position p = (x, y) in [-1, 1]   (where the network attends, learned, not given)
    unit feature = [a ; p]
  pool(units) (cheap numpy, also in torch for training):
    appearance = normalise(mean_t a_t); motion s = least-squares slope of p over time (per second);
    m = gain * s / sqrt(|s|^2 + c^2) (a saturating direction vector); video = normalise([appearance ; m]).
  So the per-frame features say *what* and *where*, and only the pooled vector says *which way*: time order
  matters (reversing the frames flips m), colour matters (swapping R and B changes the appearance).
Text side: lower-cased words -> embedding (mean over known words) -> linear -> L2-normalised; unknown words
  are dropped; a caption with no known word gets the zero vector.
Score: cosine similarity (dot product of the L2-normalised vectors).

Checkpoint: ``torch.save({"state_dict", "vocab", "config"})``, loadable with ``torch.load(weights_only=True)``;
the committed one is data/models/shapes-tiny.pt (trained by scripts/train_shapes_tiny.py).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from stages.contract.assets import data_path
from stages.backbones.base import ModelInfo, Preprocess, TextFeatures, VideoTextModel
from stages.contract.errors import VtpipeError

ARCH = "shapes-tiny-v1"
DEFAULT_WEIGHTS = data_path("models/shapes-tiny.pt")  # the checkout's data/models, or the wheel's copy
MOTION_DIMS = 2
DEFAULT_CONFIG: dict[str, Any] = {
    "arch": ARCH,
    "image_size": 64,
    "channels": [16, 24, 32, 32],
    "hidden": 64,
    "embed_dim": 32,
    "word_dim": 32,
    "motion_softness": 0.1,  # c in s / sqrt(|s|^2 + c^2), in frame-widths per second
    "fps": 3.0,  # frame rate the units are sampled at (the slope's time step is 1 / fps)
}
# Used only for random weights (no checkpoint); a trained checkpoint carries its own vocabulary.
FALLBACK_VOCAB = sorted(
    "a and blue box ball circle cyan down going heading is it left moves moving red right square the "
    "triangle up yellow".split()
)
_WORD = re.compile(r"[a-z]+")


def tokenize(text: str) -> list[str]:
    """Lower-cased alphabetic words."""
    return _WORD.findall(text.lower())


# ---- the network ----------------------------------------------------------------------------------------
class FrameEncoder(nn.Module):
    """[N, 3, h, w] -> [N, embed_dim]: L2-normalised appearance (embed_dim - 2) then soft-argmax (x, y)."""

    def __init__(self, channels: Sequence[int], hidden: int, appearance_dim: int) -> None:
        super().__init__()
        c0, c1, c2, c3 = channels
        self.convs = nn.Sequential(
            nn.Conv2d(3, c0, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(c0, c1, 3, stride=1, padding=1), nn.ReLU(),
            nn.Conv2d(c1, c2, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(c2, c3, 3, stride=1, padding=1), nn.ReLU(),
        )  # fmt: skip
        self.saliency = nn.Conv2d(c3, 1, 1)
        self.head = nn.Sequential(nn.Linear(2 * c3, hidden), nn.ReLU(), nn.Linear(hidden, appearance_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.convs(x)  # [N, C, h, w]
        n, c, h, w = f.shape
        att = torch.softmax(self.saliency(f).reshape(n, h * w), dim=1)  # [N, hw]
        ys = (2 * torch.arange(h, dtype=f.dtype, device=f.device) + 1) / h - 1
        xs = (2 * torch.arange(w, dtype=f.dtype, device=f.device) + 1) / w - 1
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).reshape(h * w, 2)  # (x, y) per cell
        pos = att @ grid  # [N, 2]
        flat = f.reshape(n, c, h * w)
        obj = torch.bmm(flat, att.unsqueeze(2)).squeeze(2)  # attention-pooled [N, C]
        glob = flat.mean(dim=2)
        a = F.normalize(self.head(torch.cat([obj, glob], dim=1)), dim=1)
        return torch.cat([a, pos], dim=1)


class TextEncoder(nn.Module):
    """Token ids [B, L] (0 = padding) -> [B, embed_dim], L2-normalised (zero for a caption of no known word)."""

    def __init__(self, vocab_size: int, word_dim: int, embed_dim: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size + 1, word_dim, padding_idx=0)
        self.proj = nn.Linear(word_dim, embed_dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = (ids > 0).to(self.embed.weight.dtype).unsqueeze(2)  # [B, L, 1]
        count = mask.sum(dim=1)  # [B, 1]
        mean = (self.embed(ids) * mask).sum(dim=1) / count.clamp(min=1)
        out = F.normalize(self.proj(mean), dim=1)
        return out * (count > 0).to(out.dtype)


class ShapesTinyNet(nn.Module):
    """Both towers, the motion gain used by pooling, and the contrastive temperature (training only)."""

    def __init__(self, config: Mapping[str, Any], vocab_size: int) -> None:
        super().__init__()
        self.config = dict(config)
        d = int(config["embed_dim"])
        self.frame = FrameEncoder(config["channels"], int(config["hidden"]), d - MOTION_DIMS)
        self.text = TextEncoder(vocab_size, int(config["word_dim"]), d)
        self.motion_gain = nn.Parameter(torch.tensor(1.0))
        self.logit_scale = nn.Parameter(torch.tensor(float(np.log(10.0))))

    def pool(self, units: torch.Tensor, mask: torch.Tensor, fps: float | None = None) -> torch.Tensor:
        """Differentiable twin of :func:`pool_features`: units [B, T, D], mask [B, T] bool -> [B, D]."""
        fps = float(fps or self.config["fps"])
        m = mask.to(units.dtype)
        n = m.sum(dim=1, keepdim=True)  # [B, 1]
        app = F.normalize((units[..., :-MOTION_DIMS] * m.unsqueeze(2)).sum(dim=1), dim=1)
        pos = units[..., -MOTION_DIMS:]
        t = torch.arange(units.shape[1], dtype=units.dtype, device=units.device).unsqueeze(0) / fps  # [1, T]
        t_mean = (t * m).sum(dim=1, keepdim=True) / n.clamp(min=1)
        dt = (t - t_mean) * m  # [B, T]
        p_mean = (pos * m.unsqueeze(2)).sum(dim=1, keepdim=True) / n.clamp(min=1).unsqueeze(2)
        cov = (dt.unsqueeze(2) * (pos - p_mean)).sum(dim=1)  # [B, 2]
        var = (dt * dt).sum(dim=1, keepdim=True)
        slope = torch.where(var > 0, cov / var.clamp(min=1e-12), torch.zeros_like(cov))
        c = float(self.config["motion_softness"])
        motion = self.motion_gain * slope / torch.sqrt((slope * slope).sum(dim=1, keepdim=True) + c * c)
        return F.normalize(torch.cat([app, motion], dim=1), dim=1)


def pool_features(
    units: np.ndarray, mask: np.ndarray | None, gain: float, softness: float, fps: float
) -> np.ndarray:
    """Numpy pooling of one video's unit features [U, D] (frames in time order) -> [D] (see module doc)."""
    units = np.asarray(units, dtype=np.float32)
    d = units.shape[1]
    m = np.ones(len(units), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    idx = np.nonzero(m)[0]
    if len(idx) == 0:
        return np.zeros(d, dtype=np.float32)
    real = units[idx].astype(np.float64)
    app = real[:, :-MOTION_DIMS].sum(axis=0)
    app /= max(float(np.linalg.norm(app)), 1e-12)
    t = idx.astype(np.float64) / fps
    dt = t - t.mean()
    var = float((dt * dt).sum())
    pos = real[:, -MOTION_DIMS:]
    slope = (dt[:, None] * (pos - pos.mean(axis=0))).sum(axis=0) / var if var > 0 else np.zeros(MOTION_DIMS)
    motion = gain * slope / np.sqrt(float((slope * slope).sum()) + softness * softness)
    v = np.concatenate([app, motion])
    return (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32)


# ---- the VideoTextModel ------------------------------------------------------------------------------------
class ShapesTinyModel(VideoTextModel):
    """shapes-tiny behind the engine's interface: frame units, numpy pooling, bag-of-words text."""

    def __init__(
        self, info: ModelInfo, net: ShapesTinyNet, vocab: Sequence[str], device: str = "cpu",
        amp_dtype: str | None = None,
    ) -> None:  # fmt: skip
        super().__init__(info, device=device, amp_dtype=amp_dtype)
        if info.unit != "frame":
            raise VtpipeError(f"model {info.name!r}: shapes-tiny works on frame units, the config says unit={info.unit!r}")
        self.net = net.to(self.device).eval()
        self.vocab = list(vocab)
        self.word_ids = {w: i + 1 for i, w in enumerate(self.vocab)}
        self.fps = float(info.sampling.get("fps") or net.config["fps"])
        self._gain = float(net.motion_gain.detach().cpu())
        self._softness = float(net.config["motion_softness"])

    def preprocess(self) -> Preprocess:
        kw: dict[str, Any] = {"size": int(self.net.config["image_size"]), "resize": "exact", "crop": "none",
                              "interpolation": "bilinear", "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}  # fmt: skip
        kw.update(self.info.preprocess)
        for k in ("mean", "std"):
            if kw.get(k) is not None:
                kw[k] = tuple(float(v) for v in kw[k])
        return Preprocess(**kw)

    @torch.no_grad()
    def encode_units(self, units: torch.Tensor) -> torch.Tensor:
        """[B, 3, h, w] preprocessed frames -> [B, embed_dim]: [appearance ; x ; y] per frame."""
        x = torch.as_tensor(units)
        if x.ndim != 4 or x.shape[1] != 3:
            raise VtpipeError(f"shapes-tiny encodes frame units [B, 3, h, w], got shape {tuple(x.shape)}")
        with self.autocast():
            out = self.net.frame(x.to(self.device, torch.float32))
        return out.float().cpu()

    def pool(self, unit_features: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """Appearance mean + least-squares motion direction over the frames in time order (see module doc)."""
        return pool_features(unit_features, mask, self._gain, self._softness, self.fps)

    def token_ids(self, captions: Sequence[str]) -> torch.Tensor:
        """Captions -> padded word ids [N, L] (0 = padding; unknown words dropped)."""
        rows = [[self.word_ids[w] for w in tokenize(c) if w in self.word_ids] for c in captions]
        width = max([1] + [len(r) for r in rows])
        ids = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        return ids

    @torch.no_grad()
    def encode_text(self, captions: Sequence[str]) -> TextFeatures:
        if isinstance(captions, str):
            raise VtpipeError("encode_text takes a list of captions, not one string")
        if len(captions) == 0:
            return TextFeatures(pooled=np.zeros((0, self.embed_dim), dtype=np.float32))
        out = self.net.text(self.token_ids(captions).to(self.device))
        return TextFeatures(pooled=out.float().cpu().numpy())


# ---- checkpoints ------------------------------------------------------------------------------------------
def save_checkpoint(net: ShapesTinyNet, vocab: Sequence[str], path: str | Path) -> None:
    """Write the checkpoint format `load` reads (plain tensors, lists and numbers only)."""
    state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    torch.save({"state_dict": state, "vocab": list(vocab), "config": dict(net.config)}, str(path))


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], list[str], dict[str, Any]]:
    """(state_dict, vocab, config) of a shapes-tiny checkpoint, with errors that say what is wrong."""
    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user error
        raise VtpipeError(f"shapes-tiny: cannot read checkpoint {str(path)!r} with torch.load(weights_only=True): {e}") from e
    if not isinstance(ckpt, dict) or not {"state_dict", "vocab", "config"} <= set(ckpt):
        keys = sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise VtpipeError(
            f"shapes-tiny: {str(path)!r} is not a shapes-tiny checkpoint: expected a dict with keys "
            f"'state_dict', 'vocab', 'config', got {keys}"
        )
    config = {**DEFAULT_CONFIG, **dict(ckpt["config"])}
    if config.get("arch") != ARCH:
        raise VtpipeError(f"shapes-tiny: {str(path)!r} has arch {config.get('arch')!r}, this code reads {ARCH!r}")
    return dict(ckpt["state_dict"]), [str(w) for w in ckpt["vocab"]], config


def load_state_strict(net: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """load_state_dict that names every missing, unexpected or mis-shaped key in a VtpipeError."""
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} != model {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if tuple(state[k].shape) != tuple(own[k].shape)
    )
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys {missing}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected}")
        if shapes:
            parts.append(f"shape mismatches {shapes}")
        raise VtpipeError(f"shapes-tiny: checkpoint {source!r} does not match the model: " + "; ".join(parts))
    net.load_state_dict(dict(state), strict=True)


def load(
    info: ModelInfo,
    paths: Mapping[str, str | None],
    device: str = "cpu",
    amp_dtype: str | None = None,
    allow_random: bool = False,
) -> ShapesTinyModel:
    """Registry loader. paths["weights"] defaults to the committed data/models/shapes-tiny.pt."""
    path = paths.get("weights") or (str(DEFAULT_WEIGHTS) if DEFAULT_WEIGHTS.is_file() else None)
    if path is None:
        if not allow_random:
            raise VtpipeError(
                f"model {info.name!r}: no weights given and the default {DEFAULT_WEIGHTS} is missing; pass "
                "--weights PATH (train one with scripts/train_shapes_tiny.py) or allow random weights"
            )
        config = {**DEFAULT_CONFIG, "embed_dim": int(info.embed_dim), **info.params}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            net = ShapesTinyNet(config, len(FALLBACK_VOCAB))
        model = ShapesTinyModel(info, net, FALLBACK_VOCAB, device=device, amp_dtype=amp_dtype)
        model.random_weights = True
        return model
    state, vocab, config = read_checkpoint(path)
    if int(config["embed_dim"]) != int(info.embed_dim):
        raise VtpipeError(
            f"model {info.name!r}: checkpoint {path!r} has embed_dim {config['embed_dim']}, the model config "
            f"says {info.embed_dim}; fix configs/models/{info.name}.yaml or use the matching checkpoint"
        )
    for key, value in info.params.items():
        if key in config and config[key] != value:
            raise VtpipeError(
                f"model {info.name!r}: params.{key}={value!r} in the model config but {config[key]!r} in "
                f"checkpoint {path!r}"
            )
    net = ShapesTinyNet(config, len(vocab))
    load_state_strict(net, state, str(path))
    return ShapesTinyModel(info, net, vocab, device=device, amp_dtype=amp_dtype)
