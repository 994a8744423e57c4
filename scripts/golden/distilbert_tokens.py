"""Token-id goldens of the DistilBERT (BERT uncased) tokenizer, from `transformers` itself.

    python scripts/golden/distilbert_tokens.py LOCVTP_CHECKOUT [--out tests/golden]

Run it in a scratch environment that has `transformers` 4.x (its slow, pure-Python DistilBertTokenizer is
what LocVTP 229bef6 calls in clip/data/collate_batch.py: DistilBertTokenizer.from_pretrained('datasets/
distilbert') then tokenizer(captions, padding=True, truncation=True, max_length=512)). Never install it
into the project.

What it writes (all small):
  tests/golden/wordpiece_vocab.txt   a deterministic BERT-style uncased vocab (the real one is not ours to
                                     ship): [PAD], [unused0..98], [UNK], [CLS], [SEP], [MASK], the corpus'
                                     characters (some scripts and all emoji left out, so [UNK] happens),
                                     their ## forms, and a fixed list of words and word pieces.
  tests/golden/distilbert_tokens.json  input ids of every caption of tests/golden/captions_tricky.json,
                                     tokenized one at a time and as one padded batch, with the
                                     tokenizer_config.json options of LocVTP's datasets/distilbert.
With the LocVTP checkout it also tokenizes the corpus with LocVTP's own vocab.txt (the real 30522-token
uncased vocab) and stores only the ids, so a developer with that file can check vtpipe against it too.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import unicodedata
from pathlib import Path

SPECIALS = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = """a an the man woman dog cat is are in on of and to with for cooking cook ##ing pasta kitchen ball
party family flag control null bell char red delete next line soft hyphen zero width space mark private use
supplementary unassigned lone surrogate replacement ligature titlecase numbers punctuation quotes smart
single symbols math currency apostrophe don ' t it s rock n roll hyphenated well known state art url https
example com email someone org tabs newlines mixed non breaking em line separator para sep combining vs
precomposed hindi arabic thai case words all caps shouting unknown ##word leading trailing very long word end
un ##believ ##ably ##able believe cafe creme brulee naive resume facade foo bar padding lowercase literal
emoji zwj mix ##ed english full ##width abc strasse istanbul 3 14 1 000 42 ##nd odos sofos play ##ing
##s ##er ##est ##ly ##tion""".split()  # noqa: SIM905
LEFT_OUT = ("THAI", "HANGUL", "HIRAGANA")  # whole scripts without characters in the vocab -> [UNK]


def _keep_char(c: str) -> bool:
    if unicodedata.category(c)[0] in "CZM" or c.isspace():
        return False
    if ord(c) >= 0x1F000 or ord(c) in (0x2211, 0x222B):  # emoji and two math signs: [UNK]
        return False
    name = unicodedata.name(c, "")
    return not any(s in name for s in LEFT_OUT)


def build_vocab(captions: list[str]) -> list[str]:
    chars: set[str] = set()
    for text in captions:
        for c in unicodedata.normalize("NFD", "".join(ch.lower() for ch in text if not 0xD800 <= ord(ch) <= 0xDFFF)):
            if _keep_char(c):
                chars.add(c)
    ordered = sorted(chars)
    tokens = SPECIALS + ordered + ["##" + c for c in ordered]
    seen = set(tokens)
    for w in WORDS:
        if w not in seen:
            tokens.append(w)
            seen.add(w)
    return tokens


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("locvtp", type=Path, help="a checkout of mengcaopku/LocVTP (datasets/distilbert/*)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[2] / "tests/golden")
    args = ap.parse_args(argv)
    import transformers
    from transformers import DistilBertTokenizer

    corpus = json.loads((args.out / "captions_tricky.json").read_text(encoding="ascii"))["captions"]
    texts = [c["text"] for c in corpus]
    cfg = json.loads((args.locvtp / "datasets/distilbert/tokenizer_config.json").read_text())
    options = {k: cfg[k] for k in ("do_lower_case", "do_basic_tokenize", "never_split", "tokenize_chinese_chars",
                                   "strip_accents")}
    vocab_path = args.out / "wordpiece_vocab.txt"
    vocab_path.write_text("\n".join(build_vocab(texts)) + "\n", encoding="utf-8")

    def run(vocab_file: Path) -> tuple[list[list[int]], list[list[int]]]:
        tok = DistilBertTokenizer(vocab_file=str(vocab_file), **options, model_max_length=512)
        if tok.__class__.__mro__[1].__name__ != "PreTrainedTokenizer":
            raise SystemExit(f"need the slow (pure-Python) tokenizer of transformers 4.x, got {type(tok).__mro__}")
        one = [tok(t, truncation=True, max_length=512)["input_ids"] for t in texts]
        batch = tok(texts, padding=True, truncation=True, max_length=512)
        return one, batch["input_ids"]

    one, batch = run(vocab_path)
    real_one, _ = run(args.locvtp / "datasets/distilbert/vocab.txt")
    real_vocab = (args.locvtp / "datasets/distilbert/vocab.txt").read_bytes()
    doc = {
        "about": "input ids from transformers' slow DistilBertTokenizer (as LocVTP calls it); "
                 "written by scripts/golden/distilbert_tokens.py",
        "transformers": transformers.__version__,
        "python_unicodedata": unicodedata.unidata_version,
        "reference": "mengcaopku/LocVTP 229bef6 clip/data/collate_batch.py, datasets/distilbert/tokenizer_config.json",
        "options": {**options, "max_length": 512, "truncation": True},
        "vocab": vocab_path.name,
        "vocab_sha256": hashlib.sha256(vocab_path.read_bytes()).hexdigest(),
        "names": [c["name"] for c in corpus],
        "ids": one,
        "batch_padded_width": len(batch[0]),
        "batch_equals_single_plus_pad": all(b[: len(o)] == o and set(b[len(o):]) <= {0} for o, b in zip(one, batch)),
        "real_vocab_sha256": hashlib.sha256(real_vocab).hexdigest(),
        "real_vocab_ids": real_one,
    }
    (args.out / "distilbert_tokens.json").write_text(json.dumps(doc, separators=(",", ":")) + "\n", encoding="ascii")
    print(f"{len(texts)} captions; vocab {len(build_vocab(texts))} tokens; transformers {transformers.__version__}")


if __name__ == "__main__":
    main(sys.argv[1:])
