"""The text length of a CLIP-family model's caption path, set from the pipeline config (`model.max_words`).

CLIP4Clip runs 32 tokens on MSR-VTT / MSVD / LSMDC but 64 on DiDeMo and ActivityNet, whose queries are
paragraphs (README.md run commands: max_words 64); its loaders keep the start token, the first
max_words - 2 BPE tokens and the end token. The model YAML's `params.max_words` is the default;
`model.max_words` in a pipeline config (or a paper preset) replaces it for the captions the extract stage
encodes, without a second model YAML. Only models whose text path is CLIP's BPE tokenizer + text tower take it
(clip, clip4clip, DRL); UCoFiA's word matrices are sized by its checkpoint's max_words, so it refuses.
"""

from __future__ import annotations

from stages.contract.errors import ConfigError


def check_max_words(value) -> int | None:
    """None, or the integer text length (>= 2: start and end tokens)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 2:
        raise ConfigError(f"model.max_words must be an integer >= 2 (tokens, start and end included), got {value!r}")
    return int(value)


def set_max_words(model, max_words: int | None):
    """Give `model` (a loaded VideoTextModel) a caption tokenizer of `max_words` tokens; None leaves it as is.
    Returns the model."""
    from stages.backbones.clip import ClipTokenizer, ClipVideoText

    n = check_max_words(max_words)
    if n is None:
        return model
    name = getattr(getattr(model, "info", None), "name", type(model).__name__)
    family = getattr(getattr(model, "info", None), "family", "")
    if not isinstance(model, ClipVideoText) or family == "ucofia":
        raise ConfigError(f"model.max_words applies to CLIP-tokenizer models (clip, clip4clip, DRL); {name!r} "
                          f"(family {family!r}) has a fixed text length: unset model.max_words")
    ctx = int(model.clip.positional_embedding.shape[0])
    if n > ctx:
        raise ConfigError(f"model.max_words={n} exceeds {name}'s {ctx} text positions")
    model.max_words = n
    model.tokenizer = ClipTokenizer(n)
    return model
