"""Build hook: put the shipped presets and data files inside the package, so a wheel works without the checkout.

Metadata lives in setup.cfg. The top-level configs/ and data/ folders stay the source of truth; building a
wheel (directly or from the sdist, which carries them through MANIFEST.in) copies the files listed in ASSETS
to stages/_assets/<same relative path>, where stages/contract/assets.py finds them with importlib.resources. An
editable install copies nothing: it reads the top-level folders in place.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
PACKAGED_DIR = Path("stages") / "_assets"

# folder (relative to the project root) -> glob patterns of the files a wheel needs at run time
ASSETS: dict[str, tuple[str, ...]] = {
    "configs/models": ("*.yaml",),
    "configs/datasets": ("*.yaml",),
    "configs/pipelines": ("*.yaml",),
    "configs/presets": ("*.yaml",),
    "data/models": ("shapes-tiny.pt", "shapes-tiny.json"),
    "data/sample": ("make_sample.py", "*.csv", "*.json", "README.md"),
}


def asset_files(root: Path = HERE) -> list[Path]:
    """Every shipped file, relative to `root`; a pattern that matches nothing stops the build."""
    out: list[Path] = []
    for folder, patterns in ASSETS.items():
        for pattern in patterns:
            found = sorted((root / folder).glob(pattern))
            if not found:
                raise SystemExit(f"setup.py: no {folder}/{pattern} under {root}: the wheel would lack it")
            out += [p.relative_to(root) for p in found if p.is_file()]
    return out


class BuildPyWithAssets(build_py):
    """build_py, then copy ASSETS into <build_lib>/stages/_assets/ (not for editable installs)."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        for rel in asset_files():
            dst = Path(self.build_lib) / PACKAGED_DIR / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(HERE / rel, dst)


setup(cmdclass={"build_py": BuildPyWithAssets})
