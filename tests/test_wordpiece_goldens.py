"""The DistilBERT tokenizer against goldens from transformers' own (slow) DistilBertTokenizer.

tests/golden/distilbert_tokens.json holds the ids transformers 4.x gave for every caption of
tests/golden/captions_tricky.json with tests/golden/wordpiece_vocab.txt and LocVTP's tokenizer options
(scripts/golden/distilbert_tokens.py regenerates it from a LocVTP checkout). The ids with LocVTP's real
vocab are in the file too; set VTPIPE_BERT_VOCAB to that vocab.txt to check them as well.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from stages.backbones.wordpiece import WordPieceTokenizer

GOLDEN = Path(__file__).parent / "golden"


def _load():
    gold = json.loads((GOLDEN / "distilbert_tokens.json").read_text(encoding="ascii"))
    corpus = json.loads((GOLDEN / "captions_tricky.json").read_text(encoding="ascii"))["captions"]
    assert [c["name"] for c in corpus] == gold["names"], "corpus and goldens are out of step: rerun the golden script"
    return gold, [c["text"] for c in corpus]


def test_corpus_covers_the_tricky_cases():
    gold, texts = _load()
    assert len(texts) >= 50
    names = set(gold["names"])
    for need in ("final_sigma", "special_cls_sep", "special_mask", "private_use_bmp", "emoji", "chinese",
                 "overlong_words", "empty", "spaces_only", "nul", "lone_surrogate", "unassigned"):
        assert need in names
    assert max(len(i) for i in gold["ids"]) == 512  # truncation is exercised
    assert gold["batch_equals_single_plus_pad"]


def test_ids_equal_transformers_on_every_caption():
    gold, texts = _load()
    vocab = GOLDEN / gold["vocab"]
    assert hashlib.sha256(vocab.read_bytes()).hexdigest() == gold["vocab_sha256"]
    tok = WordPieceTokenizer.from_file(vocab, max_length=512)
    got = [tok.encode(t) for t in texts]
    bad = [n for n, g, w in zip(gold["names"], got, gold["ids"]) if g != w]
    assert not bad, f"ids differ from transformers for {bad}"
    # the padded batch (what the model gets) equals the single encodings plus [PAD] / mask 0
    ids, mask = tok(texts)
    assert ids.shape == (len(texts), gold["batch_padded_width"])
    for row, m, want in zip(ids.tolist(), mask.tolist(), gold["ids"]):
        assert row[: len(want)] == want and set(row[len(want):]) <= {tok.pad_id}
        assert m == [True] * len(want) + [False] * (len(row) - len(want))


def test_the_rules_behind_the_goldens():
    """Hand-checked cases of the rules the old hand-written tokenizer broke."""
    gold, texts = _load()
    tok = WordPieceTokenizer.from_file(GOLDEN / gold["vocab"])
    v = tok.vocab
    by_name = dict(zip(gold["names"], texts))
    assert tok.encode(by_name["special_alone"]) == [v["[CLS]"], v["[CLS]"], v["[SEP]"]]
    assert tok.encode(by_name["special_twice"]) == [v["[CLS]"], v["[MASK]"], v["[MASK]"], v["[SEP]"]]
    assert tok.encode(by_name["sigma_alone"]) == [v["[CLS]"], v["σ"], v["[SEP]"]]  # per character: not ς
    assert tok.encode("a\ue000b") == tok.encode("ab")  # private use (Co) dropped
    assert tok.encode("a\u0378b") == tok.encode("ab")  # unassigned (Cn) dropped
    assert tok.encode("[CL\x00S]") == tok.encode("[cls]")  # a control char inside breaks the special token


@pytest.mark.skipif(not os.environ.get("VTPIPE_BERT_VOCAB"), reason="set VTPIPE_BERT_VOCAB to LocVTP's vocab.txt")
def test_ids_equal_transformers_with_the_real_vocab():
    gold, texts = _load()
    path = Path(os.environ["VTPIPE_BERT_VOCAB"])
    assert hashlib.sha256(path.read_bytes()).hexdigest() == gold["real_vocab_sha256"]
    tok = WordPieceTokenizer.from_file(path)
    bad = [n for n, t, w in zip(gold["names"], texts, gold["real_vocab_ids"]) if tok.encode(t) != w]
    assert not bad
