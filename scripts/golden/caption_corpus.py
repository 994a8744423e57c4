"""Write tests/golden/captions_tricky.json: the tricky-caption corpus the tokenizer goldens are made from.

Each caption exercises one rule of the BERT uncased tokenizer (cleanup of Unicode C* characters, whitespace
kinds, CJK spacing, per-character lower-casing and accent stripping, punctuation, literal special tokens,
WordPiece limits, truncation). The file is JSON with ASCII escapes, so control characters and a lone
surrogate survive any editor. Run: python scripts/golden/caption_corpus.py [OUT.json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

CAPTIONS: list[tuple[str, str]] = [
    ("plain", "A man is cooking pasta in a kitchen."),
    ("empty", ""),
    ("spaces_only", "   "),
    ("whitespace_mix", "\t\n\r "),
    ("accents_fr", "Café crème brûlée"),
    ("accents_mix", "naïve résumé façade"),
    ("final_sigma", "ΟΔΟΣ ΣΟΦΟΣ"),
    ("sigma_alone", "Σ"),
    ("greek_tonos", "ὈΔΥΣΣΕΎΣ"),
    ("special_cls_sep", "[CLS] a dog [SEP]"),
    ("special_mask", "[MASK] the ball"),
    ("special_pad", "[PAD][PAD] padding"),
    ("special_unk", "[UNK] unknown"),
    ("special_lower_literal", "[cls] lowercase literal"),
    ("special_inside_word", "foo[SEP]bar"),
    ("special_mixed_case", "[Sep] mixed case"),
    ("special_alone", "[CLS]"),
    ("special_twice", "[MASK][MASK]"),
    ("special_broken_by_control", "[CL\x00S] x [SE\u0378P] y [MA\u200bSK]"),
    ("emoji", "emoji \U0001F600 party \U0001F389\U0001F389"),
    ("emoji_alone", "\U0001F642"),
    ("emoji_zwj", "family \U0001F468\u200d\U0001F469\u200d\U0001F467 zwj"),
    ("flag", "flag \U0001F1EF\U0001F1F5"),
    ("nul", "control\x00null"),
    ("bell", "bell\x07char"),
    ("escape_seq", "esc\x1b[31mred"),
    ("delete", "\x7f delete char"),
    ("nel", "\x85 next line"),
    ("soft_hyphen", "soft\u00adhyphen"),
    ("zero_width_space", "zero\u200bwidth space"),
    ("bom", "bom\ufeffmark"),
    ("private_use_bmp", "private \ue000\uf8ff use"),
    ("private_use_plane15", "supplementary private \U000F0000 use"),
    ("unassigned", "unassigned \u0378 char"),
    ("lone_surrogate", "lone \ud800 surrogate"),
    ("replacement_char", "replacement \ufffd char"),
    ("japanese", "日本語のテキスト"),
    ("chinese", "中文字幕测试"),
    ("korean", "한국어 문장"),
    ("cjk_in_word", "mixed中文english"),
    ("fullwidth", "Ｆｕｌｌｗｉｄｔｈ ＡＢＣ"),
    ("ligature", "ligature \ufb01 \ufb02"),
    ("eszett", "Straße"),
    ("dotted_capital_i", "İstanbul"),
    ("titlecase_digraph", "\u01c5 titlecase"),
    ("numbers", "numbers 3.14 1,000 42nd"),
    ("punctuation_runs", "punctuation!!! ??? ... --- ___"),
    ("smart_quotes", "quotes \u201csmart\u201d \u2018single\u2019 \u00abguillemets\u00bb"),
    ("ascii_symbols", "symbols $ ^ ` ~ | < > + = @ #"),
    ("math", "math \u2211 \u222b \u221a \u2260"),
    ("currency", "currency \u20ac \u00a3 \u00a5 \u20b9"),
    ("apostrophes", "apostrophe don't it's rock'n'roll"),
    ("hyphens", "hyphenated well-known state-of-the-art"),
    ("url", "URL https://example.com/a?b=c&d=e"),
    ("email", "email someone@example.org"),
    ("tabs_newlines", "Tabs\tand\nnewlines\r\nmixed"),
    ("nbsp_emspace", "non-breaking\u00a0space and\u2003em space"),
    ("line_para_sep", "line\u2028separator para\u2029sep"),
    ("combining_accent", "combining e\u0301 vs \u00e9 precomposed"),
    ("devanagari", "Hindi देवनागरी"),
    ("arabic", "Arabic العربية"),
    ("thai", "Thai ภาษาไทย"),
    ("mixed_case", "MiXeD CaSe WORDS"),
    ("all_caps", "ALL CAPS SHOUTING"),
    ("unknown_word", "unknownword qwertyzxcv"),
    ("leading_trailing", "  leading and trailing  "),
    ("word_100_chars", "a" * 100),
    ("word_101_chars", "b" * 101),
    ("long_word_in_text", "a very long word " + "x" * 150 + " end"),
    ("overlong_words", "cooking " * 600),
    ("overlong_wordpieces", "unbelievably " * 300),
    ("overlong_cjk", "中" * 700),
]


def main(argv: list[str]) -> None:
    out = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parents[2] / "tests/golden/captions_tricky.json"
    names = [n for n, _ in CAPTIONS]
    assert len(set(names)) == len(names), "caption names must be unique"
    doc = {"about": "tricky captions for the DistilBERT tokenizer goldens; written by scripts/golden/caption_corpus.py",
           "captions": [{"name": n, "text": t} for n, t in CAPTIONS]}
    out.write_text(json.dumps(doc, ensure_ascii=True, indent=1) + "\n", encoding="ascii")
    print(f"wrote {len(CAPTIONS)} captions to {out}")


if __name__ == "__main__":
    main(sys.argv)
