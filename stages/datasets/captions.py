"""Caption annotation readers.

Every reader returns a DataFrame whose first columns are ``caption_id``, ``video_id``, ``caption`` (all str),
in the file's order. Row order matters: MSR-VTT 1k-A pairs row i with video i. Readers of segment-level
datasets add ``start_s`` / ``end_s`` (float seconds inside the video) and other typed columns; see
stages/datasets/video_text.py and stages/datasets/crosstask.py. ``CAPTION_FORMATS`` lists every format.
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from stages.datasets import video_text
from stages.datasets.common import read_id_list
from stages.datasets.crosstask import read_crosstask_captions
from stages.contract.errors import VtpipeError

COLUMNS = ["caption_id", "video_id", "caption"]


def _read_csv(path: Path, required: list[str]) -> pd.DataFrame:
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except UnicodeDecodeError as e:
        raise VtpipeError(f"{path}: not UTF-8 text ({e}); re-save the file as UTF-8") from e
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise VtpipeError(f"{path}: not a readable CSV file ({e})") from e
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise VtpipeError(f"{path}: missing column(s) {missing}; found {list(df.columns)}")
    return df


def read_msrvtt_jsfusion(path: Path) -> pd.DataFrame:
    """MSRVTT_JSFUSION_test.csv: key,vid_key,video_id,sentence (one caption per video)."""
    df = _read_csv(path, ["key", "video_id", "sentence"])
    return pd.DataFrame({"caption_id": df["key"], "video_id": df["video_id"], "caption": df["sentence"]})


def read_msrvtt_json(path: Path, split_csv: Path | None = None) -> pd.DataFrame:
    """MSRVTT_data.json / test_videodatainfo.json ({"sentences": [{video_id, caption}, ...]}), optionally
    restricted to the video ids of a split file: a CSV with column video_id (MSRVTT_train.9k.csv), or a text
    file with one id a line (test_list_full.txt: the 2990-video full test split), or a JSON list.
    Caption ids are <video_id>#<n>."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        sentences = data["sentences"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise VtpipeError(f"{path}: expected a JSON object with a 'sentences' list ({e})") from e
    rows = []
    counts: dict[str, int] = {}
    for s in sentences:
        if not isinstance(s, dict) or "video_id" not in s or "caption" not in s:
            raise VtpipeError(f"{path}: every sentence needs video_id and caption, got {s!r}")
        vid = str(s["video_id"])
        n = counts.get(vid, 0)
        counts[vid] = n + 1
        rows.append((f"{vid}#{n}", vid, str(s["caption"])))
    df = pd.DataFrame(rows, columns=COLUMNS)
    if split_csv is not None:
        if Path(split_csv).suffix.lower() == ".csv":
            keep = set(_read_csv(Path(split_csv), ["video_id"])["video_id"])
        else:  # one id a line (.txt, e.g. collaborative-experts' test_list_full.txt) or a JSON list
            keep = set(read_id_list(Path(split_csv)))
        df = df[df["video_id"].isin(keep)].reset_index(drop=True)
    return df


def read_generic_csv(path: Path) -> pd.DataFrame:
    """Any CSV with columns video_id and caption (caption_id optional: defaults to the row number)."""
    df = _read_csv(path, ["video_id", "caption"])
    ids = df["caption_id"] if "caption_id" in df.columns else [str(i) for i in range(len(df))]
    return pd.DataFrame({"caption_id": ids, "video_id": df["video_id"], "caption": df["caption"]})


CAPTION_FORMATS: dict[str, Callable[..., pd.DataFrame]] = {
    "msrvtt-jsfusion": read_msrvtt_jsfusion,
    "msrvtt-json": read_msrvtt_json,
    "csv": read_generic_csv,
    # plain-text / JSON exports (never pickles); options in each reader's docstring
    "msvd-txt": video_text.read_msvd_txt,
    "captions-json": video_text.read_captions_json,
    "didemo": video_text.read_didemo_paragraph,
    "didemo-sentences": video_text.read_didemo_sentences,
    "activitynet-paragraph": video_text.read_activitynet_paragraph,
    "activitynet-segments": video_text.read_activitynet_segments,
    "lsmdc": video_text.read_lsmdc,
    "youcook2-segments": video_text.read_youcook2_segments,
    "youcook2-paragraph": video_text.read_youcook2_paragraph,
    "vatex": video_text.read_vatex,
    "crosstask": read_crosstask_captions,
}


def _check_extra_columns(df: pd.DataFrame, path: Path) -> None:
    """Segment columns, where present: finite numbers >= 0 with start_s <= end_s."""
    for col in ("start_s", "end_s"):
        if col in df.columns:
            x = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float)
            bad = ~np.isfinite(x) | (x < 0)
            if bad.any():
                ids = df["caption_id"][bad].tolist()[:5]
                raise VtpipeError(f"{path}: {col} must be a finite number of seconds >= 0; bad for caption id(s) {ids}")
    if "start_s" in df.columns and "end_s" in df.columns:
        bad = (df["end_s"].to_numpy(dtype=float) < df["start_s"].to_numpy(dtype=float))
        if bad.any():
            rows = df[bad].head(5)
            which = [f"{c} [{s}, {e}]" for c, s, e in zip(rows["caption_id"], rows["start_s"], rows["end_s"])]
            raise VtpipeError(f"{path}: segment(s) ending before they start: {which}; fix the annotation file")


def read_captions(fmt: str, path: str | os.PathLike, **kwargs) -> pd.DataFrame:
    """Read a caption file in a named format and check it: unique caption ids, no empty captions or ids, and
    (where present) start_s <= end_s, both finite and >= 0. `kwargs` are the format's options (split lists,
    layouts; see the reader's docstring); an option the format does not take is an error."""
    if fmt not in CAPTION_FORMATS:
        raise VtpipeError(f"unknown caption format {fmt!r}; known: {sorted(CAPTION_FORMATS)}")
    path = Path(path)
    if not path.is_file():
        raise VtpipeError(f"caption file {path} does not exist")
    reader = CAPTION_FORMATS[fmt]
    try:
        inspect.signature(reader).bind(path, **kwargs)
    except TypeError as e:
        allowed = [p for p in inspect.signature(reader).parameters if p != "path"]
        raise VtpipeError(f"caption format {fmt!r} does not take option(s) {sorted(kwargs)}; its options: "
                          f"{allowed}") from e
    df = reader(path, **kwargs)
    df = df.astype({c: str for c in COLUMNS})
    if len(df) == 0:
        raise VtpipeError(f"{path}: no captions")
    dup = df["caption_id"][df["caption_id"].duplicated()].unique().tolist()
    if dup:
        raise VtpipeError(f"{path}: duplicate caption id(s) {dup[:5]}")
    empty = df["caption_id"][df["caption"].str.strip() == ""].tolist()
    if empty:
        raise VtpipeError(f"{path}: empty caption(s) for caption id(s) {empty[:5]}")
    if (df["video_id"].str.strip() == "").any():
        raise VtpipeError(f"{path}: rows with an empty video_id")
    _check_extra_columns(df, path)
    return df.reset_index(drop=True)
