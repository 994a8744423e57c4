"""Content identity of input files: what a run's fingerprints use instead of paths and modification times.

* Videos: ``video:v1:<size>:<hash>`` where the hash (BLAKE2b, 16 bytes) covers the size and three fixed
  64 KiB blocks (first, middle, last; the whole file when it is smaller than that). Cheap on any file
  system, and the same after `cp -r`, `rsync`, a tarball or a restore that does not keep modification times.
  An edit that keeps the size and touches none of the three blocks goes unnoticed; re-encoding, truncating
  or replacing a video does not.
* Checkpoints and caption files: ``sha256:<hex>`` of the whole file.

Results are cached in a small SQLite file (``$VTPIPE_CACHE_DIR`` or ``$XDG_CACHE_HOME/vtpipe`` or
``~/.cache/vtpipe``: ``identity.sqlite3``) keyed by (absolute path, size, mtime_ns, inode, kind), so a
re-plan of 100k unchanged videos costs a stat and a lookup each. The cache is best effort: when it cannot be
opened or written (read-only home, a locked file on a network file system) identities are computed and
nothing is stored. ``VTPIPE_IDENTITY_CACHE=0`` turns it off.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import threading
from pathlib import Path
from typing import Iterable

log = logging.getLogger("vtpipe.identity")

BLOCK = 64 * 1024
VIDEO = "video:v1"
FULL = "sha256"
_KINDS = (VIDEO, FULL)
_CHUNK = 500  # rows per SQL query (well under SQLite's variable limit)

_lock = threading.Lock()
_memo: dict[tuple, str] = {}  # this process: (path, size, mtime_ns, ino, kind) -> identity


def cache_path() -> Path | None:
    if os.environ.get("VTPIPE_IDENTITY_CACHE", "1") in ("0", "false", "no", "off"):
        return None
    base = os.environ.get("VTPIPE_CACHE_DIR")
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        base = os.path.join(xdg, "vtpipe")
    return Path(base) / "identity.sqlite3"


def video_identity_uncached(path: str | os.PathLike, size: int | None = None) -> str:
    """size + BLAKE2b of the first, middle and last 64 KiB (the whole file when small)."""
    with open(path, "rb") as f:
        if size is None:
            size = os.fstat(f.fileno()).st_size
        h = hashlib.blake2b(digest_size=16)
        h.update(str(size).encode())
        if size <= 3 * BLOCK:
            h.update(f.read())
        else:
            for start in (0, (size - BLOCK) // 2, size - BLOCK):
                f.seek(start)
                h.update(f.read(BLOCK))
    return f"{VIDEO}:{size}:{h.hexdigest()}"


def sha256_uncached(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return f"{FULL}:{h.hexdigest()}"


def _compute(path: str, size: int, kind: str) -> str:
    return video_identity_uncached(path, size) if kind == VIDEO else sha256_uncached(path)


class _Cache:
    """The SQLite cache, opened lazily; every error turns it off for the rest of the process."""

    def __init__(self, path: Path | None):
        self.path = path
        self.db: sqlite3.Connection | None = None
        self.broken = path is None

    def _open(self) -> sqlite3.Connection | None:
        if self.broken:
            return None
        if self.db is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(str(self.path), timeout=10, check_same_thread=False)
                db.execute("CREATE TABLE IF NOT EXISTS identity (path TEXT, size INTEGER, mtime_ns INTEGER, "
                           "ino INTEGER, kind TEXT, value TEXT, PRIMARY KEY (path, kind))")
                db.commit()
                self.db = db
            except (sqlite3.Error, OSError) as e:
                self._off(e)
        return self.db

    def _off(self, e: Exception) -> None:
        log.warning("input identity cache %s unavailable (%s): identities are computed without it", self.path, e)
        self.broken = True
        self.db = None

    def lookup(self, keys: list[tuple]) -> dict[tuple, str]:
        db = self._open()
        found: dict[tuple, str] = {}
        if db is None or not keys:
            return found
        by_kind: dict[str, dict[str, tuple]] = {}
        for k in keys:
            by_kind.setdefault(k[4], {})[k[0]] = k
        try:
            for kind, wanted in by_kind.items():
                paths = list(wanted)
                for a in range(0, len(paths), _CHUNK):
                    part = paths[a:a + _CHUNK]
                    q = (f"SELECT path, size, mtime_ns, ino, value FROM identity WHERE kind = ? AND path IN "
                         f"({','.join('?' * len(part))})")
                    for p, size, mtime, ino, value in db.execute(q, [kind, *part]):
                        k = wanted.get(p)
                        if k is not None and (size, mtime, ino) == k[1:4]:
                            found[k] = value
        except sqlite3.Error as e:
            self._off(e)
        return found

    def store(self, rows: dict[tuple, str]) -> None:
        db = self._open()
        if db is None or not rows:
            return
        try:
            with db:
                db.executemany("INSERT OR REPLACE INTO identity VALUES (?, ?, ?, ?, ?, ?)",
                               [(*k, v) for k, v in rows.items()])
        except sqlite3.Error as e:
            self._off(e)


_cache: _Cache | None = None


def _get_cache() -> _Cache:
    global _cache
    p = cache_path()
    if _cache is None or _cache.path != p:
        _cache = _Cache(p)
    return _cache


def identities(paths: Iterable[str | os.PathLike], kind: str = VIDEO) -> list[str]:
    """The identity of every path (in order). A missing file raises FileNotFoundError naming it."""
    if kind not in _KINDS:
        raise ValueError(f"identity kind must be one of {_KINDS}, got {kind!r}")
    keys = []
    for p in paths:
        ap = os.path.abspath(p)
        st = os.stat(ap)
        keys.append((ap, st.st_size, st.st_mtime_ns, st.st_ino, kind))
    with _lock:
        out = {k: _memo[k] for k in keys if k in _memo}
        missing = [k for k in dict.fromkeys(keys) if k not in out]
        if missing:
            cache = _get_cache()
            hits = cache.lookup(missing)
            out.update(hits)
            new = {k: _compute(k[0], k[1], kind) for k in missing if k not in hits}
            out.update(new)
            cache.store(new)
            _memo.update(hits)
            _memo.update(new)
    return [out[k] for k in keys]


def video_identity(path: str | os.PathLike) -> str:
    return identities([path], VIDEO)[0]


def file_sha256(path: str | os.PathLike) -> str:
    """The hex sha256 of a whole file (cached)."""
    return identities([path], FULL)[0].split(":", 1)[1]


def forget_memo() -> None:
    """Drop this process's in-memory memo (benches and tests measure the on-disk cache alone)."""
    with _lock:
        _memo.clear()
