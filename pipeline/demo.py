"""`vtpipe demo`: generate the embedded sample and find the sample pipeline, from the checkout or the wheel.

The generator (data/sample/make_sample.py), its caption file and the sample pipeline preset ship inside the
installed package (stages.contract.assets), so the demo needs no checkout; the clips are written where the user says
(an installed package's folder may be read-only).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Callable

from stages.contract.assets import presets_dir, require_data
from stages.contract.errors import ConfigError

SAMPLE_PIPELINE = "sample"


def sample_generator() -> ModuleType:
    """The shipped data/sample/make_sample.py, imported as a module (it is a script, not a package)."""
    path = require_data("sample/make_sample.py")
    spec = importlib.util.spec_from_file_location("vtpipe_make_sample", path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot import the sample generator {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def sample_pipeline() -> Path:
    """configs/pipelines/sample.yaml of the checkout or the installed package."""
    path = presets_dir("pipelines") / f"{SAMPLE_PIPELINE}.yaml"
    if not path.is_file():
        raise ConfigError(f"the sample pipeline preset {path} is missing")
    require_data("sample/msrvtt_test.csv")  # its captions, found relative to it
    return path


def make_sample_videos(dest: Path, echo: Callable[[str], object] = print) -> list[Path]:
    """Write the sample's 24 test clips to dest/<video_id>.mp4 (kept when already there: deterministic)."""
    gen = sample_generator()
    dest.mkdir(parents=True, exist_ok=True)
    paths = gen.write_videos(gen.test_specs(gen.DEFAULT_SEED), dest)
    echo(f"sample: {len(paths)} clips in {dest}")
    return paths
