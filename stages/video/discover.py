"""List the input videos: a folder (recursive) or a CSV.

Every video gets an id: for a folder, its path relative to the root without the extension, with '/'
separators ("cooking/v_001"), so equal file names in different folders never collide and the id maps
straight to an output path (<out>/<id>.mp4). Ids are data, never shell text.

Folder walks follow symlinked folders but visit each real folder once (a symlink loop cannot trap the walk),
skip hidden files and folders (names starting with '.', e.g. macOS '._x.mp4' leftovers and vtpipe's own
'.x.tmp' temporaries), and match extensions case-insensitively. The list is sorted by id.

Bad ids (empty, absolute, with a '..' or '.' component, a NUL / newline / carriage return, a backslash)
could escape the output root or break the line-based tools downstream. Policy: on_bad_id="raise" (the
default) raises VtpipeError listing every bad id and the fix; on_bad_id="skip" leaves them out and lists
them, with the reason, in the result's `.skipped`.
Two files with the same id (a.mp4 and a.avi in one folder; one id on two CSV rows with different paths)
always raise VtpipeError: which one is meant is the user's call.
"""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable, NamedTuple, Sequence

from stages.contract.errors import VtpipeError

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v")
_BAD_CHARS = {"\x00": "NUL", "\n": "newline", "\r": "carriage return", "\\": "backslash"}


class VideoEntry(NamedTuple):
    id: str
    path: Path


@dataclass(frozen=True)
class Skipped:
    id: str
    path: str
    reason: str


class VideoList(list):
    """A list of VideoEntry; `.skipped` lists the entries left out (on_bad_id="skip")."""

    skipped: list[Skipped]

    def __init__(self, entries: Iterable[VideoEntry] = (), skipped: Iterable[Skipped] = ()) -> None:
        super().__init__(entries)
        self.skipped = list(skipped)


def id_problem(video_id: str) -> str | None:
    """Why `video_id` is unsafe as an id (None when it is fine)."""
    if not isinstance(video_id, str) or not video_id.strip():
        return "empty id"
    for ch, name in _BAD_CHARS.items():
        if ch in video_id:
            return f"contains a {name}"
    if video_id.startswith("/") or (len(video_id) > 2 and video_id[0].isalpha() and video_id[1:3] == ":/"):
        return "absolute path"
    parts = PurePosixPath(video_id).parts
    if any(p in ("..", ".") for p in video_id.split("/")):
        return "has a '..' or '.' path component"
    if not parts or video_id.endswith("/") or "//" in video_id:
        return "empty path component"
    return None


def _strip_ext(name: str, extensions: Sequence[str]) -> str:
    low = name.lower()
    for ext in extensions:
        if low.endswith(ext):
            return name[: -len(ext)]
    return name


def _norm_exts(extensions: Sequence[str]) -> tuple[str, ...]:
    out = []
    for e in extensions:
        e = e.lower()
        out.append(e if e.startswith(".") else "." + e)
    return tuple(out)


def _finish(entries: list[VideoEntry], bad: list[Skipped], on_bad_id: str, source: str) -> VideoList:
    if bad and on_bad_id == "raise":
        shown = "; ".join(f"{b.id!r} ({b.reason})" for b in bad[:20])
        more = f" and {len(bad) - 20} more" if len(bad) > 20 else ""
        raise VtpipeError(
            f"{len(bad)} unsafe video id(s) in {source}: {shown}{more}. Rename those files (or fix the CSV), "
            f"or pass on_bad_id='skip' to leave them out and list them."
        )
    for b in bad:
        log.warning("skipping video %r: %s", b.id, b.reason)
    return VideoList(entries, bad)


def _check_duplicates(entries: list[VideoEntry], source: str) -> list[VideoEntry]:
    seen: dict[str, Path] = {}
    clashes: list[str] = []
    out = []
    for e in entries:
        prev = seen.get(e.id)
        if prev is None:
            seen[e.id] = e.path
            out.append(e)
        elif prev != e.path:
            clashes.append(f"{e.id!r}: {str(prev)!r} and {str(e.path)!r}")
    if clashes:
        raise VtpipeError(
            f"{len(clashes)} video id(s) in {source} name two different files: {'; '.join(clashes[:10])}. "
            f"Ids drop the extension, so rename one file of each pair (or list only one in the CSV)."
        )
    return out


def discover_folder(
    root: str | os.PathLike, extensions: Sequence[str] = VIDEO_EXTENSIONS, on_bad_id: str = "raise"
) -> VideoList:
    root = Path(root)
    exts = _norm_exts(extensions)
    visited: set[tuple[int, int]] = set()
    entries: list[VideoEntry] = []
    bad: list[Skipped] = []

    def walk(folder: Path, rel: PurePosixPath) -> None:
        try:
            st = folder.stat()
        except OSError as e:
            log.warning("cannot read folder %s: %s", folder, e)
            return
        key = (st.st_dev, st.st_ino)
        if key in visited:  # a symlink loop, or a second link to a folder already listed
            return
        visited.add(key)
        try:
            children = sorted(os.scandir(folder), key=lambda d: d.name)
        except OSError as e:
            log.warning("cannot list folder %s: %s", folder, e)
            return
        for d in children:
            if d.name.startswith("."):
                continue
            try:
                is_dir = d.is_dir(follow_symlinks=True)
                is_file = d.is_file(follow_symlinks=True)
            except OSError:
                continue  # a dangling or looping symlink
            if is_dir:
                walk(Path(d.path), rel / d.name)
            elif is_file and d.name.lower().endswith(exts):
                vid = str(rel / _strip_ext(d.name, exts)) if str(rel) != "." else _strip_ext(d.name, exts)
                problem = id_problem(vid)
                if problem:
                    bad.append(Skipped(vid, d.path, problem))
                else:
                    entries.append(VideoEntry(vid, Path(d.path)))

    if not root.is_dir():
        raise VtpipeError(f"video folder {str(root)!r} does not exist or is not a folder")
    walk(root, PurePosixPath("."))
    entries = _check_duplicates(entries, str(root))
    entries.sort(key=lambda e: e.id)
    return _finish(entries, bad, on_bad_id, str(root))


def discover_csv(
    csv_path: str | os.PathLike,
    extensions: Sequence[str] = VIDEO_EXTENSIONS,
    id_column: str = "video_id",
    path_column: str | None = None,
    videos_root: str | os.PathLike | None = None,
    on_bad_id: str = "raise",
) -> VideoList:
    csv_path = Path(csv_path)
    exts = _norm_exts(extensions)
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f, delimiter="\t" if csv_path.suffix.lower() == ".tsv" else ",")
            columns = reader.fieldnames or []
            rows = list(reader)
    except OSError as e:
        raise VtpipeError(f"cannot read video list {str(csv_path)!r}: {e}") from e
    has_id = id_column in columns
    if path_column is not None and path_column not in columns:
        raise VtpipeError(f"{str(csv_path)!r} has no column {path_column!r} (columns: {columns}); set path_column")
    if path_column is None and not has_id:
        raise VtpipeError(
            f"{str(csv_path)!r} has neither an id column {id_column!r} nor a path_column (columns: {columns}); "
            f"set id_column or path_column"
        )
    base = csv_path.parent
    root = Path(videos_root) if videos_root is not None else base
    entries: list[VideoEntry] = []
    bad: list[Skipped] = []
    for i, row in enumerate(rows, start=2):  # line 1 is the header
        if path_column is not None:
            raw_path = (row.get(path_column) or "").strip()
            if not raw_path:
                bad.append(Skipped(f"<line {i}>", "", f"empty {path_column!r}"))
                continue
            path = Path(raw_path)
            if not path.is_absolute():
                path = base / path
            if has_id and (row.get(id_column) or "").strip():
                vid = _strip_ext(row[id_column].strip(), exts)
            else:
                vid = _strip_ext(PurePosixPath(raw_path.replace(os.sep, "/")).as_posix(), exts)
        else:
            vid = _strip_ext((row.get(id_column) or "").strip(), exts)
            path = _resolve_id(root, vid, exts)
        problem = id_problem(vid)
        if problem:
            bad.append(Skipped(vid, str(path), problem))
            continue
        entries.append(VideoEntry(vid, path))
    entries = _check_duplicates(entries, str(csv_path))
    return _finish(entries, bad, on_bad_id, str(csv_path))


def _resolve_id(root: Path, vid: str, exts: Sequence[str]) -> Path:
    """<root>/<id><ext> for the first extension that exists; <root>/<id><first ext> when none does (the
    probe then reports it as 'missing', as data)."""
    for ext in exts:
        for cand in (root / f"{vid}{ext}", root / f"{vid}{ext.upper()}"):
            if cand.is_file():
                return cand
    return root / f"{vid}{exts[0]}"


def discover_videos(
    root_or_csv: str | os.PathLike,
    extensions: Sequence[str] = VIDEO_EXTENSIONS,
    id_column: str = "video_id",
    path_column: str | None = None,
    *,
    videos_root: str | os.PathLike | None = None,
    on_bad_id: str = "raise",
) -> VideoList:
    """Videos under a folder (recursive), or listed in a CSV (a path column relative to the CSV's folder,
    or an id column resolved against `videos_root`, default the CSV's folder). See the module docstring."""
    if on_bad_id not in ("raise", "skip"):
        raise VtpipeError(f"on_bad_id must be 'raise' or 'skip', got {on_bad_id!r}")
    p = Path(root_or_csv)
    if p.is_dir():
        return discover_folder(p, extensions, on_bad_id)
    if p.is_file() and p.suffix.lower() in (".csv", ".tsv"):
        return discover_csv(p, extensions, id_column, path_column, videos_root, on_bad_id)
    if not p.exists():
        raise VtpipeError(f"video input {str(p)!r} does not exist; give a folder of videos or a CSV")
    raise VtpipeError(f"video input {str(p)!r} is neither a folder nor a .csv/.tsv file")
