"""The BERT uncased WordPiece tokenizer (what DistilBERT / LocVTP use), built on the `tokenizers` package.

The reference is transformers' slow DistilBertTokenizer as LocVTP (229bef6) calls it: do_lower_case,
tokenize_chinese_chars, strip_accents None (stripped because lower-cased), literal [CLS]/[SEP]/[MASK]/
[PAD]/[UNK] in the text kept as those special tokens, [CLS] ... [SEP], truncated to max_length (512).
The `tokenizers` pipeline below (BertNormalizer + BertPreTokenizer + WordPiece, max 100 characters a
word) gives the same ids on the tricky-caption goldens (tests/golden/distilbert_tokens.json) but for two
kinds of character, which a pre-pass handles:

* the reference drops every character of a Unicode C* category (Cc, Cf, Co, Cn, Cs; not \\t \\n \\r),
  judged by Python's own Unicode tables. `tokenizers` keeps unassigned (Cn) characters and cannot take a
  lone surrogate (Cs) at all. The pre-pass turns each such character into NUL, which both drop; NUL (not
  deletion) keeps a control character inside a literal "[CL\\x00S]" from creating a special token, as in
  the reference, which splits special tokens off before it cleans the text.
"""

from __future__ import annotations

import functools
import os
import unicodedata
from collections.abc import Sequence

import torch

from stages.contract.errors import ConfigError, VtpipeError

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
MAX_WORD_CHARS = 100


def _tokenizers():
    try:
        import tokenizers
    except ImportError as e:  # pragma: no cover - a hard dependency
        raise ConfigError("the 'tokenizers' package is missing: pip install tokenizers") from e
    return tokenizers


def _clean_others(text: str) -> str:
    """Every character of a Unicode C* category but tab, newline and carriage return -> NUL."""
    if text.isascii() and text.isprintable():
        return text
    return "".join("\x00" if (c not in "\t\n\r" and unicodedata.category(c)[0] == "C") else c for c in text)


@functools.lru_cache(maxsize=2)
def _normalizer_and_pretokenizer(lower_case: bool):
    """BERT's normalizer and pre-tokenizer, built once per casing (basic_tokenize runs once per caption)."""
    tk = _tokenizers()
    norm = tk.normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                         strip_accents=None if lower_case else False, lowercase=lower_case)
    return norm, tk.pre_tokenizers.BertPreTokenizer()


def basic_tokenize(text: str, lower_case: bool = True) -> list[str]:
    """BERT's basic tokenization (cleanup, CJK spacing, lower-case + accent stripping, whitespace and
    punctuation split) of one text, as words."""
    norm, pre = _normalizer_and_pretokenizer(bool(lower_case))
    words = pre.pre_tokenize_str(norm.normalize_str(_clean_others(str(text))))
    return [w for w, _ in words]


class WordPieceTokenizer:
    """BERT uncased tokenizer over a vocab.txt (one token a line, id = line number; the first of duplicate
    lines wins). __call__(texts) -> (ids [N, L] long, mask [N, L] bool), padded with [PAD] to the longest."""

    def __init__(self, vocab: dict[str, int], lower_case: bool = True, max_length: int = 512,
                 unk: str = "[UNK]", cls: str = "[CLS]", sep: str = "[SEP]", pad: str = "[PAD]") -> None:
        missing = [t for t in (unk, cls, sep, pad) if t not in vocab]
        if missing:
            raise VtpipeError(f"vocab has no special token(s) {missing}")
        if int(max_length) < 2:
            raise ConfigError(f"max_length must be >= 2 ([CLS] and [SEP]), got {max_length!r}")
        tk = _tokenizers()
        self.vocab = vocab
        self.lower_case = lower_case
        self.max_length = int(max_length)
        self.unk_id, self.cls_id, self.sep_id, self.pad_id = (vocab[t] for t in (unk, cls, sep, pad))
        tok = tk.Tokenizer(tk.models.WordPiece(dict(vocab), unk_token=unk, max_input_chars_per_word=MAX_WORD_CHARS))
        tok.normalizer = tk.normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                       strip_accents=None if lower_case else False, lowercase=lower_case)
        tok.pre_tokenizer = tk.pre_tokenizers.BertPreTokenizer()
        tok.post_processor = tk.processors.BertProcessing((sep, self.sep_id), (cls, self.cls_id))
        tok.add_special_tokens([t for t in (pad, unk, cls, sep, "[MASK]") if t in vocab])
        tok.enable_truncation(self.max_length)
        self._tok = tok

    @classmethod
    def from_file(cls, path: str | os.PathLike, **kw) -> WordPieceTokenizer:
        try:
            with open(path, encoding="utf-8") as f:
                tokens = [line.rstrip("\n").rstrip("\r") for line in f]
        except (OSError, UnicodeDecodeError) as exc:
            raise VtpipeError(f"cannot read vocab file {os.fspath(path)!r}: {exc}") from exc
        vocab: dict[str, int] = {}
        for i, tok in enumerate(tokens):
            vocab.setdefault(tok, i)
        return cls(vocab, **kw)

    def wordpiece(self, word: str) -> list[int]:
        """Greedy longest-match-first split of one (already basic-tokenized) word into ids ([UNK] if none)."""
        return [t.id for t in self._tok.model.tokenize(word)]

    def encode(self, text: str) -> list[int]:
        """[CLS] wordpieces [SEP], truncated to max_length."""
        return list(self._tok.encode(_clean_others(str(text))).ids)

    def __call__(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of strings, not one string")
        seqs = [enc.ids for enc in self._tok.encode_batch([_clean_others(str(t)) for t in texts])]
        width = max((len(s) for s in seqs), default=2)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.bool)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[i, : len(s)] = True
        return ids, mask
