"""Where every stage reads and writes, for one run directory (see design.md "Artifacts").

`vtpipe run` uses Layout(run_dir). The single-stage commands (`vtpipe compress --output DIR`, ...) point the
one folder they write at the user's --output with Layout.custom(...).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Layout:
    root: Path
    overrides: dict[str, Path] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # absolute (not resolved: a symlinked run folder keeps its name), so that task fingerprints can
        # write every path under the root relative to it (stages.contract.tasks.relative_to_run)
        self.root = Path(os.path.abspath(self.root))
        self.overrides = {k: Path(os.path.abspath(v)) for k, v in self.overrides.items()}

    @classmethod
    def custom(cls, root: str | Path, **paths: str | Path) -> "Layout":
        return cls(Path(root), {k: Path(v) for k, v in paths.items() if v is not None})

    def _get(self, key: str, default: Path) -> Path:
        return self.overrides.get(key, default)

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def compress_dir(self) -> Path:
        """Compressed videos <id>.mp4 and the stage's _manifests/."""
        return self._get("compress_dir", self.root / "compress")

    def extract_dir(self, model: str) -> Path:
        return self._get("extract_dir", self.root / "extract" / model)

    def features(self, model: str) -> Path:
        return self._get("features", self.root / "features" / f"{model}.h5")

    def text_features(self, model: str) -> Path:
        default = self.features(model)
        return self._get("text_features", default.with_name(default.stem + ".text.h5"))

    def bank_features(self, model: str) -> Path:
        """Training-caption features: the query bank for SK-norm / QB-Norm re-ranking."""
        default = self.features(model)
        return self._get("bank_features", default.with_name(default.stem + ".bank.text.h5"))

    def bank_video_features(self, model: str) -> Path:
        """Training-video features: the v2t bank for SK-norm / QB-Norm re-ranking (a video store)."""
        default = self.features(model)
        return self._get("bank_video_features", default.with_name(default.stem + ".bank.h5"))

    def concat_dir(self) -> Path:
        """Where the concat stage keeps its manifests."""
        return self._get("concat_dir", self.features("_").parent)

    def index_dir(self, model: str) -> Path:
        return self._get("index_dir", self.root / "index" / model)

    def eval_dir(self, model: str) -> Path:
        return self._get("eval_dir", self.root / "eval" / model)
