"""Find models by name: one YAML per model in configs/models, one loader function per family.

A family loader has the signature ``load(info: ModelInfo, weights: dict[str, str | None], device: str,
amp_dtype: str | None, allow_random: bool) -> VideoTextModel``. It loads every file it needs from the local
paths in `weights` (keys = the names in the model YAML's `files`), strictly, and raises VtpipeError naming
missing or unexpected checkpoint keys. With no weights and allow_random=True it builds random weights and
sets model.random_weights = True.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Mapping, Sequence

import torch
import yaml

from stages.contract.assets import configs_root, presets_dir  # noqa: F401 (configs_root: re-exported)
from stages.backbones.base import ModelInfo, VideoTextModel
from stages.contract.errors import ConfigError

# family name -> "module:function"; imported lazily so listing models stays cheap.
FAMILIES: dict[str, str] = {
    "clip": "stages.backbones.clip:load",
    "shapes-tiny": "stages.backbones.shapes_tiny:load",
    "clip4clip": "stages.backbones.clip4clip:load",
    "locvtp": "stages.backbones.locvtp:load",
    "s3d": "stages.backbones.s3d:load",
    "tvtsv2": "stages.backbones.tvtsv2:load",
    "ucofia": "stages.backbones.ucofia:load",
}

RANDOM_WEIGHTS_SEED = 0

_INFO_KEYS = {"name", "family", "embed_dim", "unit", "sampling", "preprocess", "files", "params", "description",
              "precision", "aspect", "protocol", "protocols"}
# what a protocol may change: how frames are chosen and turned into input, and the precision the reference ran
PROTOCOL_KEYS = {"description", "sampling", "preprocess", "precision", "aspect"}
PRECISIONS = ("fp32", "fp16", "bf16")
ASPECTS = ("stored", "display")


def _models_dir() -> Path:
    """configs/models: $VTPIPE_CONFIGS, the checkout or the installed package (stages.contract.assets); none with a
    preset raises ConfigError naming where it looked."""
    return presets_dir("models")


def list_models() -> list[ModelInfo]:
    """Every registered model, sorted by name."""
    return [model_config(p.stem) for p in sorted(_models_dir().glob("*.yaml"))]


def model_config(name: str, protocol: str | None = None) -> ModelInfo:
    """The ModelInfo of a registered model under one of its protocols (None: the YAML's default one, named by
    its `protocol` key). An unknown model or protocol raises ConfigError listing the known ones.

    A model YAML's top level describes its default protocol; `protocols: {name: {...}}` lists others, each
    overriding some of description / sampling / preprocess / precision / aspect (e.g. TVTSv2's extraction
    script vs its zero-shot evaluation)."""
    path = _models_dir() / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in _models_dir().glob("*.yaml"))) or "(none)"
        raise ConfigError(f"unknown model {name!r}; registered models: {known} (see `vtpipe models`)")
    with open(path, encoding="utf-8") as f:
        raw = yaml.safe_load(f) or {}
    unknown = set(raw) - _INFO_KEYS
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_INFO_KEYS)}")
    if raw.get("name", name) != name:
        raise ConfigError(f"{path}: name {raw['name']!r} does not match the file name {name!r}")
    raw["name"] = name
    for key in ("family", "embed_dim"):
        if key not in raw:
            raise ConfigError(f"{path}: missing required key {key!r}")
    if raw["family"] not in FAMILIES:
        raise ConfigError(f"{path}: unknown family {raw['family']!r}; known: {sorted(FAMILIES)}")
    if raw.get("unit", "frame") not in ("frame", "clip"):
        raise ConfigError(f"{path}: unit must be 'frame' or 'clip', got {raw['unit']!r}")
    raw.setdefault("protocol", "default")
    protocols = dict(raw.get("protocols") or {})
    for pname, over in protocols.items():
        bad = set(over or {}) - PROTOCOL_KEYS
        if bad:
            raise ConfigError(f"{path}: protocol {pname!r}: unknown key(s) {sorted(bad)}; allowed: {sorted(PROTOCOL_KEYS)}")
    default_name = raw["protocol"]
    if protocol is not None and protocol != default_name:
        if protocol not in protocols:
            known = ", ".join([default_name, *protocols])
            raise ConfigError(f"model {name!r} has no protocol {protocol!r}; its protocols: {known}")
        raw.update(protocols[protocol] or {})
        raw["protocol"] = protocol
    raw["protocols"] = {k: (v or {}).get("description", "") for k, v in protocols.items() if k != raw["protocol"]}
    if raw["protocol"] != default_name:
        raw["protocols"][default_name] = "the model's default protocol"
    if raw.get("precision", "fp32") not in PRECISIONS:
        raise ConfigError(f"{path}: precision must be one of {PRECISIONS}, got {raw['precision']!r}")
    if raw.get("aspect", "stored") not in ASPECTS:
        raise ConfigError(f"{path}: aspect must be one of {ASPECTS}, got {raw['aspect']!r}")
    return ModelInfo(**raw)


def load_model(
    name: str,
    weights: str | Mapping[str, str | None] | None = None,
    device: str = "cpu",
    amp_dtype: str | None = None,
    allow_random: bool = False,
    allow_torchscript: bool = False,
    protocol: str | None = None,
    allow_globals: Sequence[str] = (),
) -> VideoTextModel:
    """Build a registered model and load its weights from local paths.

    Pickled checkpoints load with torch.load(weights_only=True); a TorchScript archive (OpenAI's CLIP .pt
    files) only with allow_torchscript=True, since loading one runs the code inside it. A pickle holding
    non-tensor objects (a trainer's argparse.Namespace) loads only if each object's type is named in
    `allow_globals` (dotted names, classes only; see safe_globals.py).

    `protocol` selects one of the model's protocols (None: its default); amp_dtype "auto" means the
    protocol's reference precision (`precision` in the YAML).

    `weights` is either one path (the model's first file, usually the checkpoint) or a mapping from the
    file names declared in the model YAML to paths.
    """
    info = model_config(name, protocol)
    files = list(info.files)
    if weights is None:
        paths: dict[str, str | None] = {}
    elif isinstance(weights, (str, os.PathLike)):
        if not files:
            raise ConfigError(f"model {name!r} takes no weight files, but weights={weights!r} was given")
        paths = {files[0]: str(weights)}
    else:
        paths = {k: (str(v) if v is not None else None) for k, v in weights.items()}
        unknown = set(paths) - set(files)
        if unknown:
            raise ConfigError(f"model {name!r}: unknown weight file name(s) {sorted(unknown)}; it takes {files}")
    for key, p in paths.items():
        if p is not None and not Path(p).exists():
            raise ConfigError(f"model {name!r}: {key} file {p!r} does not exist")
    if amp_dtype == "auto":
        amp_dtype = None if info.precision == "fp32" else info.precision
    elif amp_dtype == "none":
        amp_dtype = None
    module_name, func_name = FAMILIES[info.family].split(":")
    loader = getattr(importlib.import_module(module_name), func_name)
    # Random weights (allow_random) are drawn from a fixed seed, so every process of a run, and every re-run,
    # builds the same model: resumed and sharded extractions stay identical to a one-process run.
    from stages.backbones.checkpoints import ALLOW_TORCHSCRIPT
    from stages.backbones.safe_globals import ALLOWED_GLOBALS, resolve_globals

    resolve_globals(allow_globals)  # a bad name fails here, before any file is read
    token = ALLOW_TORCHSCRIPT.set(bool(allow_torchscript))
    globals_token = ALLOWED_GLOBALS.set(tuple(allow_globals))
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_WEIGHTS_SEED)
            return loader(info, paths, device=device, amp_dtype=amp_dtype, allow_random=allow_random)
    finally:
        ALLOW_TORCHSCRIPT.reset(token)
        ALLOWED_GLOBALS.reset(globals_token)
