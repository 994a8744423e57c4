"""S3D-G video encoder + word2vec sentence encoder: MIL-NCE (S3D_HowTo100M) and VT-TWINS.

Architecture (parameter names as in the released PyTorch files):

    conv1     STConv3D: space_to_depth=True  -> Conv3d(24, 64, [2,4,4], pad (1,2,2)) on the input reshaped to
                        [B, 24, T/2, H/2, W/2], output cropped [:, :, 1:, 1:, 1:]
                        space_to_depth=False -> Conv3d(3, 64, [3,7,7], stride 2, pad (1,3,3))
              (which one is detected from the checkpoint's conv1.conv1.weight shape)
    maxpool_2a (1,3,3)/(1,2,2) SAME; conv_2b 1x1x1 64->64; conv_2c separable 3x3x3 64->192; gating (192)
    maxpool_3a (1,3,3)/(1,2,2) SAME; mixed_3b, mixed_3c; maxpool_4a (3,3,3)/(2,2,2) SAME;
    mixed_4b..mixed_4f; maxpool_5a (2,2,2)/(2,2,2) SAME; mixed_5b, mixed_5c (1024 channels)
    mean over T, H, W -> 1024 ("mixed_5c"); fc 1024 -> 512 ("embedding")

Every STConv3D is conv (no bias) + BatchNorm3d (eps 1e-5) + ReLU; a separable one is a [1,k,k] conv (conv1/bn1)
then a [k,1,1] conv (conv2/bn2). Inception blocks: branches conv_b0; conv_b1_a -> conv_b1_b; conv_b2_a ->
conv_b2_b; maxpool_b3 (3x3x3, stride 1, pad 1) -> conv_b3_b; each branch self-gated (gating_bN.fc: sigmoid
of a Linear on the branch's spatio-temporal mean, multiplied in), concatenated.
"SAME" max pools follow the released PyTorch port: zero-pad max(k - s, 0) per axis (the smaller half
first), then max-pool with ceil_mode=True. (This equals TensorFlow's SAME on even sizes.)

Text: regex ``[\\w']+`` words (lower-cased for MIL-NCE, as-is for VT-TWINS: params.lowercase), ids from the
dict file (id = position + 1, unknown words dropped), truncated / zero-padded to params.max_words (16 or 30),
word_embd (66250 x 300) -> ReLU(fc1 300->2048) -> max over all max_words positions (padding included, as in
the release) -> fc2 -> 512.

Input units: clips [B, 3, T, H, W] in [0, 1] (no mean/std), T, H, W even; with ``preprocess: {crop: square}``
(the registered presets) made as the references' loaders make them (stages.video.square_clips).
Outputs (float32, not normalised):
params.output "embedding" (512, default) or "mixed_5c" (1024; then embed_dim must be 1024, and encode_text
still gives the 512-d text embedding, which is not comparable). ``encode_mixed_5c`` and ``encode_embedding``
give either one regardless of params.output. pool(): plain mean of the clip vectors over real clips (the
MIL-NCE / VT-TWINS video embedding for retrieval); scores are dot products (no L2 normalisation).

Files:
    MIL-NCE (s3d-howto100m): checkpoint = s3d_howto100m.pth (plain state dict, no prefix), dict = s3d_dict.npy
    VT-TWINS (vt-twins): checkpoint = checkpoint/pretrained.pth.tar (flat DDP state dict, `module.` stripped;
        also accepted under "state_dict"), dict = data/dict.npy, word2vec = data/word2vec.pth (a [66250, 300]
        tensor; used for text_module.word_embd.weight when the checkpoint lacks that key, else it must match)
BatchNorm ``num_batches_tracked`` entries may be present or absent.
"""

from __future__ import annotations

import os
import re
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from stages.backbones import checkpoints as ck
from stages.backbones.base import ModelInfo, TextFeatures, VideoTextModel
from stages.backbones.base import as_float_tensor
from stages.contract.errors import ConfigError, VtpipeError
from stages.video.square_clips import SquareClipInput

# (name, in, b0, b1a, b1b, b2a, b2b, b3b) — the S3D-G / Inception-v1 channel table
INCEPTION_TABLE: tuple[tuple[str, int, int, int, int, int, int, int], ...] = (
    ("mixed_3b", 192, 64, 96, 128, 16, 32, 32),
    ("mixed_3c", 256, 128, 128, 192, 32, 96, 64),
    ("mixed_4b", 480, 192, 96, 208, 16, 48, 64),
    ("mixed_4c", 512, 160, 112, 224, 24, 64, 64),
    ("mixed_4d", 512, 128, 128, 256, 24, 64, 64),
    ("mixed_4e", 512, 112, 144, 288, 32, 64, 64),
    ("mixed_4f", 528, 256, 160, 320, 32, 128, 128),
    ("mixed_5b", 832, 256, 160, 320, 32, 128, 128),
    ("mixed_5c", 832, 384, 192, 384, 48, 128, 128),
)
WORD_REGEX = re.compile(r"[\w']+")
TEXT_BATCH = 256


class STConv3D(nn.Module):
    """Conv3d (no bias) + BN + ReLU, or its separable [1,k,k] + [k,1,1] version."""

    def __init__(self, cin: int, cout: int, kernel, stride=1, padding=0, separable: bool = False) -> None:
        super().__init__()
        self.separable = separable
        k = tuple(kernel)
        if separable:
            s = stride if isinstance(stride, (tuple, list)) else (stride,) * 3
            p = padding if isinstance(padding, (tuple, list)) else (padding,) * 3
            self.conv1 = nn.Conv3d(cin, cout, (1, k[1], k[2]), (1, s[1], s[2]), (0, p[1], p[2]), bias=False)
            self.bn1 = nn.BatchNorm3d(cout)
            self.conv2 = nn.Conv3d(cout, cout, (k[0], 1, 1), (s[0], 1, 1), (p[0], 0, 0), bias=False)
            self.bn2 = nn.BatchNorm3d(cout)
        else:
            self.conv1 = nn.Conv3d(cin, cout, k, stride, padding, bias=False)
            self.bn1 = nn.BatchNorm3d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        if self.separable:
            x = torch.relu(self.bn2(self.conv2(x)))
        return x


class SelfGating(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.sigmoid(self.fc(x.mean(dim=(2, 3, 4))))
        return x * w[:, :, None, None, None]


class InceptionBlock(nn.Module):
    def __init__(self, cin: int, b0: int, b1a: int, b1b: int, b2a: int, b2b: int, b3b: int) -> None:
        super().__init__()
        self.conv_b0 = STConv3D(cin, b0, (1, 1, 1))
        self.conv_b1_a = STConv3D(cin, b1a, (1, 1, 1))
        self.conv_b1_b = STConv3D(b1a, b1b, (3, 3, 3), padding=1, separable=True)
        self.conv_b2_a = STConv3D(cin, b2a, (1, 1, 1))
        self.conv_b2_b = STConv3D(b2a, b2b, (3, 3, 3), padding=1, separable=True)
        self.conv_b3_b = STConv3D(cin, b3b, (1, 1, 1))
        self.gating_b0 = SelfGating(b0)
        self.gating_b1 = SelfGating(b1b)
        self.gating_b2 = SelfGating(b2b)
        self.gating_b3 = SelfGating(b3b)
        self.output_dim = b0 + b1b + b2b + b3b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b0 = self.gating_b0(self.conv_b0(x))
        b1 = self.gating_b1(self.conv_b1_b(self.conv_b1_a(x)))
        b2 = self.gating_b2(self.conv_b2_b(self.conv_b2_a(x)))
        b3 = nn.functional.max_pool3d(x, kernel_size=3, stride=1, padding=1)
        b3 = self.gating_b3(self.conv_b3_b(b3))
        return torch.cat((b0, b1, b2, b3), dim=1)


def max_pool_same(x: torch.Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> torch.Tensor:
    """The release's TF-'SAME' max pool: zero-pad max(k - s, 0) per axis (smaller half first), ceil_mode."""
    pads: list[int] = []
    for k, s in reversed(list(zip(kernel, stride))):  # F.pad order: W, H, T
        along = max(k - s, 0)
        pads += [along // 2, along - along // 2]
    x = nn.functional.pad(x, pads, value=0.0)
    return nn.functional.max_pool3d(x, kernel, stride, ceil_mode=True)


class SentenceEmbedding(nn.Module):
    """word_embd -> ReLU(fc1) -> max over positions -> fc2."""

    def __init__(self, embed_dim: int = 512, num_embeddings: int = 66250, word_dim: int = 300, hidden: int = 2048) -> None:
        super().__init__()
        self.word_embd = nn.Embedding(num_embeddings, word_dim)
        self.fc1 = nn.Linear(word_dim, hidden)
        self.fc2 = nn.Linear(hidden, embed_dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.fc1(self.word_embd(ids)))
        return self.fc2(x.max(dim=1).values)


class S3DG(nn.Module):
    """S3D-G with the released parameter names (see module docstring)."""

    def __init__(self, space_to_depth: bool = True, embed_dim: int = 512, num_embeddings: int = 66250) -> None:
        super().__init__()
        self.space_to_depth = space_to_depth
        if space_to_depth:
            self.conv1 = STConv3D(24, 64, (2, 4, 4), stride=1, padding=(1, 2, 2))
        else:
            self.conv1 = STConv3D(3, 64, (3, 7, 7), stride=2, padding=(1, 3, 3))
        self.conv_2b = STConv3D(64, 64, (1, 1, 1))
        self.conv_2c = STConv3D(64, 192, (3, 3, 3), padding=1, separable=True)
        self.gating = SelfGating(192)
        for name, *chans in INCEPTION_TABLE:
            setattr(self, name, InceptionBlock(*chans))
        self.fc = nn.Linear(1024, embed_dim)
        self.text_module = SentenceEmbedding(embed_dim, num_embeddings)

    @staticmethod
    def to_depth(x: torch.Tensor) -> torch.Tensor:
        """[B, C, T, H, W] -> [B, 8C, T/2, H/2, W/2] (channel = (t, h, w) offset major, then C)."""
        b, c, t, h, w = x.shape
        x = x.view(b, c, t // 2, 2, h // 2, 2, w // 2, 2)
        return x.permute(0, 3, 5, 7, 1, 2, 4, 6).reshape(b, 8 * c, t // 2, h // 2, w // 2)

    def mixed5c_features(self, x: torch.Tensor) -> torch.Tensor:
        """Clips [B, 3, T, H, W] in [0, 1] -> spatio-temporal mean of mixed_5c [B, 1024]."""
        if x.ndim != 5 or x.shape[1] != 3:
            raise ValueError(f"S3D expects clips [B, 3, T, H, W], got {tuple(x.shape)}")
        if any(d % 2 for d in x.shape[2:]):
            raise ValueError(f"S3D needs even T, H, W, got {tuple(x.shape[2:])}")
        if self.space_to_depth:
            x = self.conv1(self.to_depth(x))[:, :, 1:, 1:, 1:]
        else:
            x = self.conv1(x)
        x = max_pool_same(x, (1, 3, 3), (1, 2, 2))
        x = self.gating(self.conv_2c(self.conv_2b(x)))
        x = max_pool_same(x, (1, 3, 3), (1, 2, 2))
        x = self.mixed_3c(self.mixed_3b(x))
        x = max_pool_same(x, (3, 3, 3), (2, 2, 2))
        for name in ("mixed_4b", "mixed_4c", "mixed_4d", "mixed_4e", "mixed_4f"):
            x = getattr(self, name)(x)
        x = max_pool_same(x, (2, 2, 2), (2, 2, 2))
        x = self.mixed_5c(self.mixed_5b(x))
        return x.mean(dim=(2, 3, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.mixed5c_features(x))


class WordTokenizer:
    """Regex word split + dict lookup (id = position + 1, unknown words dropped), zero-padded to max_words."""

    def __init__(self, words: Sequence[str], max_words: int = 16, lowercase: bool = True) -> None:
        self.word_to_id = {}
        for i, w in enumerate(words):
            self.word_to_id[str(w)] = i + 1  # later duplicates win, as with a dict comprehension
        self.max_words = int(max_words)
        self.lowercase = lowercase

    @classmethod
    def from_file(cls, path: str | os.PathLike, **kw) -> "WordTokenizer":
        try:
            words = np.load(os.fspath(path), allow_pickle=False)
        except ValueError as exc:
            raise VtpipeError(f"dict file {os.fspath(path)!r} holds Python objects; vtpipe reads only plain string "
                              f"arrays (re-save it with np.save(path, np.array(words, dtype=str)))") from exc
        except OSError as exc:
            raise VtpipeError(f"cannot read dict file {os.fspath(path)!r}: {exc}") from exc
        return cls([str(w) for w in np.asarray(words).reshape(-1)], **kw)

    def __call__(self, captions: Sequence[str]) -> torch.Tensor:
        out = torch.zeros((len(captions), self.max_words), dtype=torch.long)
        for i, cap in enumerate(captions):
            text = str(cap).lower() if self.lowercase else str(cap)
            ids = [self.word_to_id[w] for w in WORD_REGEX.findall(text) if w in self.word_to_id][: self.max_words]
            if ids:
                out[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out


class S3DVideoText(VideoTextModel):
    """MIL-NCE / VT-TWINS S3D-G: one vector per clip; video = mean of its clip vectors."""

    def __init__(self, info: ModelInfo, net: S3DG, tokenizer: WordTokenizer | None, device: str = "cpu",
                 amp_dtype: str | None = None) -> None:
        super().__init__(info, device, amp_dtype)
        self.net = net.to(self.device).eval()
        self.tokenizer = tokenizer
        self.output = str(info.params.get("output", "embedding"))
        if self.output not in ("embedding", "mixed_5c"):
            raise ConfigError(f"{info.name}: params.output must be 'embedding' or 'mixed_5c', got {self.output!r}")
        dim = 1024 if self.output == "mixed_5c" else net.fc.out_features
        if dim != info.embed_dim:
            raise ConfigError(f"{info.name}: embed_dim {info.embed_dim} in the YAML, but output {self.output!r} is {dim}-d")

    def preprocess(self):
        """The model YAML's `preprocess`: ``crop: square`` is the MIL-NCE / VT-TWINS loaders' input (centre
        min(w, h) square, ffmpeg scale to size x size with swscale `flags`, value / 255; decoded by the ffmpeg
        binary, see stages.video.square_clips); anything else is the generic Preprocess."""
        cfg = dict(self.info.preprocess)
        if cfg.get("crop") != "square":
            return super().preprocess()
        unknown = sorted(set(cfg) - {"crop", "size", "flags", "mean", "std"})
        if unknown or cfg.get("mean") is not None or cfg.get("std") is not None:
            raise ConfigError(f"{self.name}: preprocess with crop 'square' takes size and flags (no mean/std); "
                              f"got {sorted(cfg)}")
        return SquareClipInput(size=int(cfg.get("size", 224)), flags=str(cfg.get("flags", "bilinear")))

    def _run(self, units, head: bool) -> torch.Tensor:
        x = as_float_tensor(units, 5, f"{self.name}.encode_units").to(self.device)
        with torch.inference_mode(), self.autocast():
            feats = self.net.mixed5c_features(x)
            if head:
                feats = self.net.fc(feats)
        return feats.float().cpu()

    def encode_mixed_5c(self, units: torch.Tensor) -> torch.Tensor:
        """[B, 3, T, H, W] -> mixed_5c mean [B, 1024]."""
        return self._run(units, head=False)

    def encode_embedding(self, units: torch.Tensor) -> torch.Tensor:
        """[B, 3, T, H, W] -> joint-space video embedding [B, 512]."""
        return self._run(units, head=True)

    def encode_units(self, units: torch.Tensor) -> torch.Tensor:
        return self._run(units, head=self.output == "embedding")

    def pool(self, unit_features: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """Mean of the clip vectors over real clips, not normalised (MIL-NCE / VT-TWINS retrieval)."""
        feats = unit_features if mask is None else unit_features[np.asarray(mask, dtype=bool)]
        if len(feats) == 0:
            return np.zeros(unit_features.shape[1], dtype=np.float32)
        return feats.mean(axis=0).astype(np.float32)

    def encode_text(self, captions: Sequence[str]) -> TextFeatures:
        if self.tokenizer is None:
            raise VtpipeError(f"model {self.name!r} needs its 'dict' file (the word list .npy) to encode text")
        captions = list(captions)
        out = np.zeros((len(captions), self.net.fc.out_features), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(captions), TEXT_BATCH):
                ids = self.tokenizer(captions[start : start + TEXT_BATCH]).to(self.device)
                with self.autocast():
                    out[start : start + len(ids)] = self.net.text_module(ids).float().cpu().numpy()
        return TextFeatures(pooled=out)


def detect_space_to_depth(sd: Mapping[str, torch.Tensor]) -> bool:
    """From conv1.conv1.weight: [64, 24, 2, 4, 4] -> True, [64, 3, 3, 7, 7] -> False."""
    w = sd.get("conv1.conv1.weight")
    if w is None:
        raise VtpipeError("S3D checkpoint has no 'conv1.conv1.weight'; is it an S3D-G state dict?")
    shape = tuple(w.shape)
    if shape == (64, 24, 2, 4, 4):
        return True
    if shape == (64, 3, 3, 7, 7):
        return False
    raise VtpipeError(f"S3D checkpoint conv1.conv1.weight has shape {shape}; expected (64, 24, 2, 4, 4) "
                      f"(space_to_depth) or (64, 3, 3, 7, 7)")


def read_s3d_checkpoint(path: str) -> dict[str, torch.Tensor]:
    obj = ck.load_torch_file(path, what="S3D checkpoint")
    return ck.strip_prefix(ck.unwrap_state_dict(obj, ("state_dict", "model"), what=f"S3D checkpoint {path!r}"))


def load(
    info: ModelInfo,
    weights: Mapping[str, str | None],
    device: str = "cpu",
    amp_dtype: str | None = None,
    allow_random: bool = False,
) -> S3DVideoText:
    """Registry loader for family "s3d"."""
    p = info.params
    ckpt = weights.get("checkpoint")
    sd = read_s3d_checkpoint(ckpt) if ckpt else None
    w2v_path = weights.get("word2vec")
    if sd is not None and w2v_path:
        w2v = ck.load_torch_file(w2v_path, what="word2vec file")
        if isinstance(w2v, Mapping):
            w2v = w2v.get("weight", w2v.get("word_embd.weight"))
        if not isinstance(w2v, torch.Tensor):
            raise VtpipeError(f"word2vec file {w2v_path!r} should hold one [66250, 300] tensor")
        key = "text_module.word_embd.weight"
        if key not in sd:
            sd[key] = w2v
        elif tuple(sd[key].shape) != tuple(w2v.shape) or not torch.equal(sd[key].float(), w2v.float()):
            raise VtpipeError(f"word2vec file {w2v_path!r} differs from the checkpoint's {key}")
    s2d = detect_space_to_depth(sd) if sd is not None else bool(p.get("space_to_depth", True))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(p.get("seed", 0)))
        net = S3DG(space_to_depth=s2d, embed_dim=int(p.get("text_embed_dim", 512)),
                   num_embeddings=int(p.get("num_embeddings", 66250)))
    if sd is None:
        ck.missing_weights(info.name, "checkpoint", str(info.files.get("checkpoint", "")), allow_random)
    else:
        ck.load_strict(net, sd, what=f"{info.name}: checkpoint {ckpt!r}", optional=["*.num_batches_tracked"])
    dict_path = weights.get("dict")
    tokenizer = None
    if dict_path:
        tokenizer = WordTokenizer.from_file(dict_path, max_words=int(p.get("max_words", 16)),
                                            lowercase=bool(p.get("lowercase", True)))
        if len(tokenizer.word_to_id) and max(tokenizer.word_to_id.values()) >= net.text_module.word_embd.num_embeddings:
            raise VtpipeError(f"{info.name}: dict file {dict_path!r} has more words than the word embedding rows")
    model = S3DVideoText(info, net, tokenizer, device, amp_dtype)
    model.random_weights = sd is None
    model.space_to_depth = s2d
    return model
