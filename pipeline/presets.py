"""Paper presets: one YAML per table a published system reports, in configs/presets/.

A paper preset is a partial pipeline config (model, dataset preset, sampling, features, prompts, splits,
metric conventions) plus where its values come from:

    name: tvtsv2-zeroshot-ucf101
    paper: "TVTSv2, zero-shot action recognition, UCF101 (top-1 / top-5)"
    reference: "TencentARC/TVTS@290a63e v2/downstream/zero_recognition_TVTSv2_ViT_B_32.py"
    notes: "..."
    config: {model: {...}, dataset: {...}, evaluate: {...}}

`preset: NAME` at the top of a pipeline YAML (or `--set preset=NAME`) lays the preset's config under the
user's: every key the user sets wins, every key the user leaves alone is the paper's. `vtpipe presets` lists
them. tests/test_paper_presets.py checks each against facts read from the reference code
(tests/golden/paper_presets.json, made by scripts/golden/paper_presets.py).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

from stages.contract.errors import ConfigError

REQUIRED = ("name", "paper", "reference", "config")
ALLOWED = (*REQUIRED, "notes")


@dataclass(frozen=True)
class PaperPreset:
    name: str
    paper: str
    reference: str
    config: dict
    notes: str = ""
    path: Path = field(default=Path())


def presets_dir() -> Path:
    from stages.backbones.registry import configs_root

    return configs_root() / "presets"


def _read(path: Path) -> PaperPreset:
    from pipeline.config import load_yaml  # safe_load, a mapping at the top, errors that name the file

    data = load_yaml(path)
    missing = [k for k in REQUIRED if k not in data]
    unknown = sorted(set(data) - set(ALLOWED))
    if missing or unknown:
        raise ConfigError(f"{path}: " + "; ".join(
            ([f"missing {missing}"] if missing else []) + ([f"unknown keys {unknown}"] if unknown else [])))
    if data["name"] != path.stem:
        raise ConfigError(f"{path}: name {data['name']!r} differs from the file name {path.stem!r}")
    if not isinstance(data["config"], dict) or "preset" in data["config"]:
        raise ConfigError(f"{path}: 'config' is a mapping of pipeline config keys (no nested 'preset')")
    return PaperPreset(data["name"], str(data["paper"]), str(data["reference"]), data["config"],
                       str(data.get("notes", "")), path)


def list_presets() -> list[PaperPreset]:
    d = presets_dir()
    return [_read(p) for p in sorted(d.glob("*.yaml"))] if d.is_dir() else []


def load_preset(name: str) -> PaperPreset:
    path = presets_dir() / f"{name}.yaml"
    if not path.is_file():
        known = [p.name for p in list_presets()]
        raise ConfigError(f"unknown paper preset {name!r}; known: {known} (`vtpipe presets` lists them)")
    return _read(path)


def layer_under(preset_config: dict, user: dict) -> dict:
    """The preset's config with the user's keys laid over it (recursively: a user's `dataset.root` keeps the
    preset's `dataset.preset`)."""
    out = copy.deepcopy(preset_config)
    for key, value in user.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = layer_under(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
