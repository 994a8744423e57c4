"""Where vtpipe's shipped files are: the presets (configs/) and the small data files (data/: the shapes-tiny
weights, the embedded sample's generator and annotations).

The top-level configs/ and data/ folders of the repository are the source of truth. A checkout (editable
install, or PYTHONPATH pointing at it) reads them in place; a wheel or sdist install reads the copies the
build put inside this package, stages/_assets/{configs,data}/ (see setup.py), through importlib.resources.
$VTPIPE_CONFIGS overrides the configs folder. Nothing is found -> ConfigError naming every place looked at.
"""

from __future__ import annotations

import importlib.resources
import os
from pathlib import Path

from stages.contract.errors import ConfigError

PACKAGED_DIR = "_assets"  # stages/_assets/, written by the build (setup.py), absent from the checkout
ENV_CONFIGS = "VTPIPE_CONFIGS"


def checkout_root() -> Path | None:
    """The repository this package is imported from (setup.cfg and configs/ beside stages/), else None."""
    root = Path(__file__).resolve().parents[2]
    if (root / "setup.cfg").is_file() and (root / "configs").is_dir():
        return root
    return None


def packaged_root() -> Path | None:
    """stages/_assets/ of an installed wheel, as a file-system path, else None."""
    try:
        node = importlib.resources.files("stages") / PACKAGED_DIR
    except (ModuleNotFoundError, TypeError):  # pragma: no cover - stages is always importable here
        return None
    if isinstance(node, Path) and node.is_dir():
        return node
    return None


def _candidates(folder: str) -> list[tuple[str, Path | None]]:
    """(how it is found, path or None) for `folder` ('configs' or 'data'), in the order they are tried."""
    if folder == "configs" and os.environ.get(ENV_CONFIGS):
        return [(f"${ENV_CONFIGS}", Path(os.environ[ENV_CONFIGS]))]
    checkout = checkout_root()
    packaged = packaged_root()
    return [("checkout", checkout / folder if checkout else None),
            ("installed package",
             packaged / folder if packaged else Path(__file__).resolve().parents[1] / PACKAGED_DIR / folder)]


def _where_looked(folder: str, sub: str) -> str:
    here = Path(__file__).resolve().parents[2]
    return "; ".join(f"{how}: {path / sub}" if path is not None
                     else f"{how}: none (no setup.cfg and configs/ in {here})"
                     for how, path in _candidates(folder))


def configs_root() -> Path:
    """The configs folder: $VTPIPE_CONFIGS, else the checkout's configs/, else the installed package's copy.
    Returns the first candidate that exists (or the first candidate, for error messages)."""
    cands = [path for _, path in _candidates("configs") if path is not None]
    for path in cands:
        if path.is_dir():
            return path
    return cands[0]


def presets_dir(kind: str) -> Path:
    """configs/<kind>/ (kind: models, datasets, pipelines) holding at least one *.yaml; else ConfigError
    naming every place looked at (a wheel built without its presets, a wrong $VTPIPE_CONFIGS)."""
    for _, path in _candidates("configs"):
        if path is None:
            continue
        folder = path / kind
        if folder.is_dir() and any(folder.glob("*.yaml")):
            return folder
        if os.environ.get(ENV_CONFIGS):
            break
    hint = (f"unset {ENV_CONFIGS} or point it at a folder with {kind}/*.yaml" if os.environ.get(ENV_CONFIGS)
            else f"reinstall vtpipe from a wheel or sdist that carries its presets, or set {ENV_CONFIGS}")
    raise ConfigError(f"no {kind} presets (*.yaml) found; looked in {_where_looked('configs', kind)}; {hint}")


def data_path(relative: str) -> Path:
    """A shipped data file or folder, e.g. 'models/shapes-tiny.pt' or 'sample/make_sample.py': the checkout's
    data/, else the installed package's copy. Returns the first candidate when none exists (check .exists())."""
    cands = [path / relative for _, path in _candidates("data") if path is not None]
    for path in cands:
        if path.exists():
            return path
    return cands[0]


def require_data(relative: str) -> Path:
    """data_path(relative), or ConfigError naming every place looked at."""
    path = data_path(relative)
    if not path.exists():
        raise ConfigError(f"shipped file data/{relative} not found; looked in {_where_looked('data', relative)}; "
                          "reinstall vtpipe from a wheel or sdist that carries its data")
    return path
