"""DistilBERT (base, uncased) text encoder, without `transformers`.

Parameter names follow Hugging Face's DistilBertModel state dict, so released weights load as they are:

    embeddings.word_embeddings.weight [V, D], embeddings.position_embeddings.weight [512, D],
    embeddings.LayerNorm.{weight,bias}
    transformer.layer.N.attention.{q_lin,k_lin,v_lin,out_lin}.{weight,bias}
    transformer.layer.N.sa_layer_norm.{weight,bias}
    transformer.layer.N.ffn.{lin1,lin2}.{weight,bias}
    transformer.layer.N.output_layer_norm.{weight,bias}

Defaults: V 30522, D 768, 6 layers, 12 heads, FFN 3072, exact (erf) GELU, post-LayerNorm blocks with
eps 1e-12, learned positions. Padded keys (attention_mask 0) are excluded from attention.

The tokenizer (stages.backbones.wordpiece, re-exported here) is the BERT uncased WordPiece tokenizer of
the `tokenizers` package, checked token for token against transformers' DistilBertTokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from stages.backbones.wordpiece import WordPieceTokenizer, basic_tokenize  # noqa: F401 (re-exported)


@dataclass(frozen=True)
class DistilBertConfig:
    vocab_size: int = 30522
    dim: int = 768
    n_layers: int = 6
    n_heads: int = 12
    hidden_dim: int = 3072
    max_position_embeddings: int = 512
    eps: float = 1e-12


class _Embeddings(nn.Module):
    def __init__(self, cfg: DistilBertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.dim, padding_idx=0)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.dim)
        self.LayerNorm = nn.LayerNorm(cfg.dim, eps=cfg.eps)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(ids.shape[1], device=ids.device)
        return self.LayerNorm(self.word_embeddings(ids) + self.position_embeddings(pos)[None])


class _SelfAttention(nn.Module):
    def __init__(self, cfg: DistilBertConfig) -> None:
        super().__init__()
        self.n_heads = cfg.n_heads
        self.q_lin = nn.Linear(cfg.dim, cfg.dim)
        self.k_lin = nn.Linear(cfg.dim, cfg.dim)
        self.v_lin = nn.Linear(cfg.dim, cfg.dim)
        self.out_lin = nn.Linear(cfg.dim, cfg.dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        hd = d // self.n_heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, n, self.n_heads, hd).transpose(1, 2)  # [B, H, N, hd]

        q = split(self.q_lin(x)) / (hd**0.5)
        k = split(self.k_lin(x))
        v = split(self.v_lin(x))
        scores = q @ k.transpose(-1, -2)  # [B, H, N, N]
        scores = scores.masked_fill(~mask[:, None, None, :], torch.finfo(scores.dtype).min)
        ctx = torch.softmax(scores, dim=-1) @ v
        return self.out_lin(ctx.transpose(1, 2).reshape(b, n, d))


class _FFN(nn.Module):
    def __init__(self, cfg: DistilBertConfig) -> None:
        super().__init__()
        self.lin1 = nn.Linear(cfg.dim, cfg.hidden_dim)
        self.lin2 = nn.Linear(cfg.hidden_dim, cfg.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(nn.functional.gelu(self.lin1(x)))


class _Block(nn.Module):
    def __init__(self, cfg: DistilBertConfig) -> None:
        super().__init__()
        self.attention = _SelfAttention(cfg)
        self.sa_layer_norm = nn.LayerNorm(cfg.dim, eps=cfg.eps)
        self.ffn = _FFN(cfg)
        self.output_layer_norm = nn.LayerNorm(cfg.dim, eps=cfg.eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.sa_layer_norm(self.attention(x, mask) + x)
        return self.output_layer_norm(self.ffn(x) + x)


class _Transformer(nn.Module):
    def __init__(self, cfg: DistilBertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList([_Block(cfg) for _ in range(cfg.n_layers)])


class DistilBert(nn.Module):
    """DistilBertModel's encoder: ids [B, N] + attention mask [B, N] -> last_hidden_state [B, N, D]."""

    def __init__(self, cfg: DistilBertConfig | None = None) -> None:
        super().__init__()
        self.config = cfg or DistilBertConfig()
        self.embeddings = _Embeddings(self.config)
        self.transformer = _Transformer(self.config)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if input_ids.shape[1] > self.config.max_position_embeddings:
            raise ValueError(f"sequence of {input_ids.shape[1]} tokens exceeds {self.config.max_position_embeddings}")
        mask = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        x = self.embeddings(input_ids)
        for block in self.transformer.layer:
            x = block(x, mask)
        return x

