"""Progress bars for long work (tqdm on stderr), quiet when VTPIPE_QUIET=1 or stderr is not a terminal."""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from typing import Iterator

from tqdm import tqdm


class _Bar:
    def __init__(self, total: int, desc: str):
        disable = os.environ.get("VTPIPE_QUIET") == "1" or not sys.stderr.isatty()
        self._bar = tqdm(total=total, desc=desc, unit="video", disable=disable, dynamic_ncols=True)
        self._frames = 0
        self._t0 = time.perf_counter()

    def advance(self, videos: int = 1, frames: int = 0) -> None:
        self._frames += frames
        dt = max(time.perf_counter() - self._t0, 1e-9)
        self._bar.set_postfix_str(f"{self._frames / dt:.1f} frames/s", refresh=False)
        self._bar.update(videos)

    def close(self) -> None:
        self._bar.close()


@contextmanager
def progress_bar(total: int, desc: str) -> Iterator[_Bar]:
    bar = _Bar(total, desc)
    try:
        yield bar
    finally:
        bar.close()
