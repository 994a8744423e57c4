"""LocVTP: C3D video encoder + DistilBERT text encoder with 256-d projection heads.

Files (model YAML `files`):
    checkpoint: ``model_<epoch>e.pth`` = {"model": state_dict, "optimizer", "scheduler", "epoch"}, keys prefixed
                ``module.`` (stripped when every key has it). Loaded strictly; the training-only heads
                ``shiftpredict.*``, ``signProjWord.*``, ``distProjWord.*``, ``signProjVid.*``, ``distProjVid.*``
                (and a ``textEncoder.model.embeddings.position_ids`` buffer some transformers versions save)
                are ignored by name. Expected keys:
                  videoEncoder.embednet.{conv1..conv5b, fc6, fc7, fc8}.{weight, bias}   (see c3d.py)
                  vidProjector.{projection [256,4096], fc [256,256], layer_norm [256]}.{weight, bias}
                  textEncoder.model.*   (DistilBERT, see distilbert.py)
                  textProjector.{projection [256,768], fc [256,256], layer_norm [256]}.{weight, bias}
    vocab:      the DistilBERT uncased ``vocab.txt`` (needed for encode_text only).

Video: one 256-d feature per 16-frame clip [3, 16, 112, 112] (values in [-1, 1]):
    x = ReLU(fc6(C3D pool5));  h = projection(x);  out = layer_norm(h + fc(GELU(h)))
The original extractor never called model.eval(), so its dropout made features random; vtpipe runs in eval
mode (dropout off) and is deterministic. LocVTP's HDF5 files store (num_clips, 1, 256) per video
(dataset ``c3d_features``); vtpipe stores [num_clips, 256] (squeezed) and the writer may add the axis back.

Text: [CLS] wordpieces [SEP] (max 512), DistilBERT, sentence feature = last_hidden_state[:, 0] (CLS),
then the text projector -> 256-d. encode_text returns pooled only (tokens=None).

pool(): CLIP-style meanP over clips (normalise, mean, normalise); LocVTP itself is used clip-wise.

params: text_dim/text_layers/text_heads/text_hidden/vocab_size (DistilBERT size; defaults = base),
        proj_dim (256), max_length (512), seed (random init).
"""

from __future__ import annotations

import warnings
import zlib
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from stages.backbones import checkpoints as ck
from stages.backbones.base import ModelInfo, TextFeatures, VideoTextModel
from stages.backbones.c3d import C3D, FC_DIM
from stages.backbones.distilbert import DistilBert, DistilBertConfig, WordPieceTokenizer, basic_tokenize
from stages.contract.errors import ConfigError, VtpipeError

# training-only keys of the released checkpoint (after stripping `module.`), ignored by name
TRAINING_ONLY_KEYS = (
    "shiftpredict.*",
    "signProjWord.*",
    "distProjWord.*",
    "signProjVid.*",
    "distProjVid.*",
    "textEncoder.model.embeddings.position_ids",
)
TEXT_BATCH = 64


class ProjectionHead(nn.Module):
    """h = projection(x); out = layer_norm(h + dropout(fc(GELU(h)))) (dropout is a no-op in eval)."""

    def __init__(self, in_dim: int, out_dim: int = 256) -> None:
        super().__init__()
        self.projection = nn.Linear(in_dim, out_dim)
        self.fc = nn.Linear(out_dim, out_dim)
        self.layer_norm = nn.LayerNorm(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.projection(x)
        return self.layer_norm(h + self.fc(nn.functional.gelu(h)))


class _VideoEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embednet = C3D()


class _TextEncoder(nn.Module):
    def __init__(self, cfg: DistilBertConfig) -> None:
        super().__init__()
        self.model = DistilBert(cfg)


class LocVTPNet(nn.Module):
    """The inference part of LocVTP's CLIP module, with the checkpoint's names."""

    def __init__(self, text_cfg: DistilBertConfig | None = None, proj_dim: int = 256) -> None:
        super().__init__()
        text_cfg = text_cfg or DistilBertConfig()
        self.videoEncoder = _VideoEncoder()
        self.vidProjector = ProjectionHead(FC_DIM, proj_dim)
        self.textEncoder = _TextEncoder(text_cfg)
        self.textProjector = ProjectionHead(text_cfg.dim, proj_dim)

    def encode_clips(self, clips: torch.Tensor) -> torch.Tensor:
        return self.vidProjector(self.videoEncoder.embednet.features(clips))

    def encode_ids(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden = self.textEncoder.model(ids, mask)
        return self.textProjector(hidden[:, 0])


class _HashTokenizer:
    """Stand-in for random-weight runs without a vocab file: word -> stable pseudo-id. Not BERT."""

    def __init__(self, vocab_size: int, max_length: int) -> None:
        self.vocab_size, self.max_length = vocab_size, max_length

    def __call__(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        seqs = []
        for t in texts:
            words = basic_tokenize(t)[: self.max_length - 2]
            seqs.append([101] + [1000 + zlib.crc32(w.encode()) % (self.vocab_size - 1000) for w in words] + [102])
        width = max((len(s) for s in seqs), default=2)
        ids = torch.zeros((len(seqs), width), dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.bool)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s)
            mask[i, : len(s)] = True
        return ids, mask


class LocVTPModel(VideoTextModel):
    """LocVTP clip features (256-d per 16-frame clip) and sentence features."""

    def __init__(self, info: ModelInfo, net: LocVTPNet, tokenizer, device: str = "cpu", amp_dtype: str | None = None) -> None:
        super().__init__(info, device, amp_dtype)
        self.net = net.to(self.device).eval()
        self.tokenizer = tokenizer
        proj = int(net.vidProjector.fc.out_features)
        if proj != info.embed_dim:
            raise ConfigError(f"{info.name}: embed_dim {info.embed_dim} in the YAML, but the projector outputs {proj}")

    def encode_units(self, units: torch.Tensor) -> torch.Tensor:
        """[B, 3, 16, 112, 112] clips -> [B, 256]."""
        return self.run_forward(self.net.encode_clips, units, 5)

    def encode_text(self, captions: Sequence[str]) -> TextFeatures:
        if self.tokenizer is None:
            raise VtpipeError(f"model {self.name!r} needs its 'vocab' file (DistilBERT uncased vocab.txt) to encode text")
        captions = list(captions)
        out = np.zeros((len(captions), self.embed_dim), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(captions), TEXT_BATCH):
                ids, mask = self.tokenizer(captions[start : start + TEXT_BATCH])
                with self.autocast():
                    feats = self.net.encode_ids(ids.to(self.device), mask.to(self.device))
                out[start : start + len(ids)] = feats.float().cpu().numpy()
        return TextFeatures(pooled=out)


def text_config(params: Mapping[str, Any]) -> DistilBertConfig:
    """DistilBERT size from params (defaults: distilbert-base-uncased)."""
    d = DistilBertConfig()
    return DistilBertConfig(
        vocab_size=int(params.get("vocab_size", d.vocab_size)),
        dim=int(params.get("text_dim", d.dim)),
        n_layers=int(params.get("text_layers", d.n_layers)),
        n_heads=int(params.get("text_heads", d.n_heads)),
        hidden_dim=int(params.get("text_hidden", d.hidden_dim)),
        max_position_embeddings=int(params.get("max_positions", d.max_position_embeddings)),
    )


def read_locvtp_checkpoint(path: str) -> dict[str, torch.Tensor]:
    """The state dict inside model_<epoch>e.pth (under "model"), `module.` stripped."""
    obj = ck.load_torch_file(path, what="LocVTP checkpoint")
    return ck.strip_prefix(ck.unwrap_state_dict(obj, ("model", "state_dict"), what=f"LocVTP checkpoint {path!r}"))


def load(
    info: ModelInfo,
    weights: Mapping[str, str | None],
    device: str = "cpu",
    amp_dtype: str | None = None,
    allow_random: bool = False,
) -> LocVTPModel:
    """Registry loader for family "locvtp"."""
    cfg = text_config(info.params)
    max_length = int(info.params.get("max_length", 512))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(info.params.get("seed", 0)))
        net = LocVTPNet(cfg, int(info.params.get("proj_dim", 256)))
    ckpt = weights.get("checkpoint")
    random_weights = ckpt is None
    if ckpt is None:
        ck.missing_weights(info.name, "checkpoint", str(info.files.get("checkpoint", "")), allow_random)
    else:
        sd = read_locvtp_checkpoint(ckpt)
        ck.load_strict(net, sd, ignore=TRAINING_ONLY_KEYS, what=f"{info.name}: checkpoint {ckpt!r}")
    vocab = weights.get("vocab")
    if vocab is not None:
        tokenizer = WordPieceTokenizer.from_file(vocab, max_length=max_length)
        too_big = max(tokenizer.vocab.values()) >= cfg.vocab_size
        if too_big:
            raise VtpipeError(f"{info.name}: vocab file {vocab!r} has ids >= the embedding size {cfg.vocab_size}")
    elif random_weights:
        warnings.warn(f"model {info.name!r}: no 'vocab' file; random-weight run uses a hashing stand-in tokenizer")
        tokenizer = _HashTokenizer(cfg.vocab_size, max_length)
    else:
        tokenizer = None  # encode_text raises, naming the file
    model = LocVTPModel(info, net, tokenizer, device, amp_dtype)
    model.random_weights = random_weights
    return model
