"""Small helpers shared by the annotation readers: safe text/JSON loading, id lists, time stamps, video ids.

Every error names the file (and where it helps, the line or key) and says what to fix.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd

from stages.contract.errors import VtpipeError

# Extensions stripped from video names found inside annotation files (DiDeMo's "video" field, split lists,
# UCF101/HMDB51 split files), so that ids match vtpipe's (path relative to the input root, no extension).
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".3gp", ".3gpp", ".wmv", ".mpg", ".mpeg",
                    ".flv", ".mts", ".m2ts", ".ogv", ".vob", ".dv")


def read_text(path: Path) -> str:
    """The whole file as UTF-8 text (a leading BOM is dropped); a clear error when it is not UTF-8."""
    path = Path(path)
    if not path.is_file():
        raise VtpipeError(f"annotation file {path} does not exist")
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise VtpipeError(f"{path}: not UTF-8 text ({e}); re-save the file as UTF-8") from e


def read_lines(path: Path) -> list[str]:
    """Lines of a text file without their line ends (CRLF and LF alike)."""
    return read_text(path).splitlines()


def load_json(path: Path, expect: type, what: str) -> Any:
    """Parse a JSON file and check the top-level type; `what` describes the expected layout for the error."""
    text = read_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise VtpipeError(f"{path}: not valid JSON ({e}); expected {what}") from e
    if not isinstance(data, expect):
        raise VtpipeError(f"{path}: expected {what}, but the top level is a {type(data).__name__}")
    return data


def strip_video_ext(name: str) -> str:
    """'a/b.mp4' -> 'a/b' for a known video extension (case-insensitive); other names are returned unchanged."""
    low = name.lower()
    for ext in VIDEO_EXTENSIONS:
        if low.endswith(ext) and len(name) > len(ext):
            return name[: -len(ext)]
    return name


def read_id_list(path: Path) -> list[str]:
    """Video ids of a split file, in file order, known extensions stripped:
    - `.json`: a list of ids (ActivityNet's train_ids.json / val_ids.json);
    - `.csv`: a CSV with a `video_id` column (MSRVTT_train.9k.csv);
    - anything else: one id per line (MSVD/DiDeMo train_list.txt, MSR-VTT test_list_full.txt); blank lines
      are skipped; only the first whitespace-separated field of a line is used.
    Duplicate ids are an error."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".json":
        data = load_json(path, list, "a JSON list of video ids")
        ids = [str(x).strip() for x in data]
    elif suffix == ".csv":
        try:
            df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
        except UnicodeDecodeError as e:
            raise VtpipeError(f"{path}: not UTF-8 text ({e}); re-save the file as UTF-8") from e
        except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:
            raise VtpipeError(f"{path}: not a readable CSV file ({e})") from e
        if "video_id" not in df.columns:
            raise VtpipeError(f"{path}: a split CSV needs a 'video_id' column; found {list(df.columns)}")
        ids = [s.strip() for s in df["video_id"]]
    else:
        ids = [line.split()[0] for line in read_lines(path) if line.strip()]
    ids = [strip_video_ext(i) for i in ids if i]
    if not ids:
        raise VtpipeError(f"split file {path} lists no video ids")
    dup = sorted(pd.Series(ids)[pd.Series(ids).duplicated()].unique())
    if dup:
        raise VtpipeError(f"split file {path}: duplicate video id(s) {dup[:5]}")
    return ids


def restrict_to_ids(df: pd.DataFrame, ids: Sequence[str], split_path: Path, ann_path: Path) -> pd.DataFrame:
    """Keep the rows whose video_id is in `ids`, ordered like `ids` (then by file order within a video), as the
    reference loaders iterate the split list. Every listed id must have at least one caption."""
    have = set(df["video_id"])
    missing = [i for i in ids if i not in have]
    if missing:
        raise VtpipeError(
            f"{split_path}: {len(missing)} video id(s) have no caption in {ann_path}, e.g. {missing[:5]}; "
            f"check that the split file belongs to this annotation file"
        )
    order = {v: k for k, v in enumerate(ids)}
    keep = df[df["video_id"].isin(order)].copy()
    keep["_order"] = keep["video_id"].map(order)
    keep["_row"] = range(len(keep))
    return keep.sort_values(["_order", "_row"], kind="stable").drop(columns=["_order", "_row"]).reset_index(drop=True)


def as_seconds(value: Any, where: str) -> float:
    """A finite, non-negative number of seconds (int, float or numeric string)."""
    try:
        x = float(value)
    except (TypeError, ValueError) as e:
        raise VtpipeError(f"{where}: time {value!r} is not a number of seconds") from e
    if not math.isfinite(x) or x < 0:
        raise VtpipeError(f"{where}: time {value!r} must be a finite number >= 0")
    return x


_HMS = re.compile(r"^(\d+)[.:](\d{1,2})[.:](\d{1,2})(?:[.,](\d+))?$")


def parse_hms(stamp: str, where: str) -> float:
    """'01.02.27.034' (LSMDC's hh.mm.ss.msmsms; ':' accepted too) -> seconds (3747.034)."""
    m = _HMS.match(stamp.strip())
    if not m:
        raise VtpipeError(f"{where}: time stamp {stamp!r} is not hh.mm.ss.mmm")
    h, mi, s, frac = m.groups()
    return int(h) * 3600 + int(mi) * 60 + int(s) + (float("0." + frac) if frac else 0.0)


def numbered_ids(video_ids: Iterable[str]) -> list[str]:
    """'<video_id>#<n>' with n counting that video's captions from 0, in order."""
    counts: dict[str, int] = {}
    out = []
    for v in video_ids:
        n = counts.get(v, 0)
        counts[v] = n + 1
        out.append(f"{v}#{n}")
    return out
