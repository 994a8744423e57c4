"""Caption readers for the video-text retrieval sets: MSVD, DiDeMo, ActivityNet Captions, LSMDC, YouCook2, VATEX.

Each reader returns the standard table (caption_id, video_id, caption; all str, in the file's order) and, where
the dataset has them, extra columns:
- `start_s`, `end_s` (float seconds): the captioned segment *inside the video file* (segment modes);
- `duration_s` (float): the video's duration as the annotation gives it (ActivityNet, YouCook2);
- LSMDC's `aligned_start_s` ... `extracted_end_s`: where the (already cut) clip sits in its movie.
Paragraph modes give one caption per video (caption_id = video_id), as CLIP4Clip evaluates DiDeMo and
ActivityNet; segment/sentence modes give one caption per annotated segment (caption_id = <video_id>#<n>).

Video ids follow vtpipe's rule (path relative to the input root, no extension); known video extensions in
annotation files are stripped (stages.datasets.common.VIDEO_EXTENSIONS). Options that depend on how the videos
are laid out on disk (LSMDC movie folders, YouCook2 subset/recipe folders, ActivityNet's "v_" prefix) are
keyword arguments; see each reader.

Pickles (CLIP4Clip's raw-captions.pkl) are never read: unpickling runs code. Export them once to JSON
({video_id: [caption, ...]}) and read that with the `captions-json` format.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stages.datasets.common import (
    as_seconds,
    load_json,
    numbered_ids,
    parse_hms,
    read_id_list,
    read_lines,
    restrict_to_ids,
    strip_video_ext,
)
from stages.contract.errors import VtpipeError

COLUMNS = ["caption_id", "video_id", "caption"]


def _table(rows: list[tuple], extra: list[str] | None = None) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=COLUMNS + list(extra or []))


def _maybe_split(df: pd.DataFrame, split: str | Path | None, path: Path) -> pd.DataFrame:
    if split is None:
        return df
    return restrict_to_ids(df, read_id_list(Path(split)), Path(split), path)


def _paragraphs(df: pd.DataFrame, keep: list[str] | None = None) -> pd.DataFrame:
    """One row per video (first-appearance order): its captions joined by one space; caption_id = video_id.
    `keep` names per-video columns carried over from the video's first row."""
    order = list(pd.unique(df["video_id"]))
    groups = df.groupby("video_id", sort=False)
    out = pd.DataFrame({
        "caption_id": order,
        "video_id": order,
        "caption": groups["caption"].agg(" ".join).loc[order].tolist(),
    })
    for col in keep or []:
        out[col] = groups[col].first().loc[order].tolist()
    return out


def _str_field(item: dict, key: str, where: str) -> str:
    if key not in item:
        raise VtpipeError(f"{where}: missing key {key!r} (keys: {sorted(item)})")
    value = item[key]
    if not isinstance(value, str):
        raise VtpipeError(f"{where}: {key!r} must be a string, got {value!r}")
    return value


# ---------------------------------------------------------------------------------------------------------
# MSVD
# ---------------------------------------------------------------------------------------------------------


def read_msvd_txt(path: Path, split: str | Path | None = None) -> pd.DataFrame:
    """MSVD captions as plain text, one caption per line: `<video_id> <caption>` (the first whitespace run
    separates them). This is the layout of the corpus's own `AllVideoDescriptions.txt` (video ids such as
    `-4wsuPCjDBc_5_15`, i.e. YouTube id _ start _ end); lines starting with '#' and blank lines are skipped.
    `split`: CLIP4Clip / collaborative-experts `train_list.txt` / `val_list.txt` / `test_list.txt` (one id a
    line; 1200 / 100 / 670 videos); rows then follow the list's video order, every listed video must have a
    caption. Caption ids: `<video_id>#<n>`.

    The captions are the raw sentences; CLIP4Clip read collaborative-experts' pre-tokenised raw-captions.pkl
    and joined the tokens with spaces, so punctuation spacing can differ (CLIP's tokenizer splits punctuation
    anyway)."""
    rows = []
    for n, line in enumerate(read_lines(path), start=1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        parts = s.split(None, 1)
        if len(parts) < 2:
            raise VtpipeError(f"{path}:{n}: expected '<video_id> <caption>', got {line!r}")
        rows.append((strip_video_ext(parts[0]), parts[1]))
    if not rows:
        raise VtpipeError(f"{path}: no '<video_id> <caption>' lines")
    vids = [r[0] for r in rows]
    df = _table([(c, v, t) for c, (v, t) in zip(numbered_ids(vids), rows)])
    return _maybe_split(df, split, path)


def read_captions_json(path: Path, split: str | Path | None = None) -> pd.DataFrame:
    """`{video_id: [caption, ...]}` as JSON, each caption a string or a list of tokens (joined by one space, as
    CLIP4Clip joins raw-captions.pkl's tokens). The safe export of CLIP4Clip's MSVD raw-captions.pkl:
    `json.dump({k: v for k, v in pickle.load(f).items()}, out)` run once, by the user, on a trusted file.
    `split` as for msvd-txt. Caption ids: `<video_id>#<n>`."""
    data = load_json(path, dict, "a JSON object {video_id: [caption, ...]}")
    rows = []
    for vid, caps in data.items():
        where = f"{path}: video {vid!r}"
        if not isinstance(caps, list) or not caps:
            raise VtpipeError(f"{where}: expected a non-empty list of captions, got {caps!r}")
        vid = strip_video_ext(str(vid))
        for n, cap in enumerate(caps):
            if isinstance(cap, list) and all(isinstance(t, str) for t in cap):
                cap = " ".join(cap)
            if not isinstance(cap, str):
                raise VtpipeError(f"{where}: caption {n} must be a string or a list of token strings, got {cap!r}")
            rows.append((f"{vid}#{n}", vid, cap))
    return _maybe_split(_table(rows), split, path)


# ---------------------------------------------------------------------------------------------------------
# DiDeMo
# ---------------------------------------------------------------------------------------------------------


def _didemo_rows(path: Path) -> pd.DataFrame:
    data = load_json(path, list, "a JSON list of {video, description, times} (DiDeMo {train,val,test}_data.json)")
    rows = []
    for k, item in enumerate(data):
        where = f"{path}: item {k}"
        if not isinstance(item, dict):
            raise VtpipeError(f"{where}: expected an object with video, description and times, got {item!r}")
        vid = strip_video_ext(_str_field(item, "video", where))
        desc = _str_field(item, "description", where)
        times = item.get("times")
        if (not isinstance(times, list) or not times
                or not all(isinstance(t, (list, tuple)) and len(t) == 2 for t in times)):
            raise VtpipeError(f"{where} (video {vid!r}): 'times' must be a non-empty list of [start, end] "
                              f"5-second chunk indices, got {times!r}")
        starts = [as_seconds(t[0], where) for t in times]
        ends = [as_seconds(t[1], where) for t in times]
        # DiDeMo marks 5-second chunks (0..5); CLIP4Clip averages the annotators' chunk indices.
        rows.append((vid, desc, float(np.mean(starts)) * 5.0, (float(np.mean(ends)) + 1.0) * 5.0))
    if not rows:
        raise VtpipeError(f"{path}: no annotations")
    df = pd.DataFrame(rows, columns=["video_id", "caption", "start_s", "end_s"])
    df.insert(0, "caption_id", numbered_ids(df["video_id"]))
    return df


def read_didemo_paragraph(path: Path, split: str | Path | None = None) -> pd.DataFrame:
    """DiDeMo `{train,val,test}_data.json` (list of {video, description, times, ...}), one caption per video:
    the video's descriptions joined by one space in file order, as CLIP4Clip evaluates DiDeMo (paragraph to
    whole video; CLIP4Clip reads the first 31 s). `split`: `{train,val,test}_list.txt` (file names; their
    extension is stripped like the `video` field's). Caption id = video id."""
    df = _maybe_split(_didemo_rows(path), split, path)
    return _paragraphs(df)


def read_didemo_sentences(path: Path, split: str | Path | None = None) -> pd.DataFrame:
    """DiDeMo, one caption per description with its moment: start_s = mean(chunk starts) * 5,
    end_s = (mean(chunk ends) + 1) * 5 over the annotators' `times` (CLIP4Clip's arithmetic).
    Caption ids: `<video_id>#<n>` (n = the description's index among the video's, in file order)."""
    return _maybe_split(_didemo_rows(path), split, path)


# ---------------------------------------------------------------------------------------------------------
# ActivityNet Captions
# ---------------------------------------------------------------------------------------------------------


def _activitynet_rows(path: Path, strip_v_prefix: bool) -> pd.DataFrame:
    data = load_json(path, dict, "a JSON object {video_id: {duration, timestamps, sentences}} (ActivityNet "
                                 "Captions train.json / val_1.json)")
    rows = []
    for key, v in data.items():
        where = f"{path}: video {key!r}"
        if not isinstance(v, dict):
            raise VtpipeError(f"{where}: expected an object with duration, timestamps, sentences")
        for k in ("duration", "timestamps", "sentences"):
            if k not in v:
                raise VtpipeError(f"{where}: missing key {k!r} (keys: {sorted(v)})")
        sents, stamps = v["sentences"], v["timestamps"]
        if not isinstance(sents, list) or not sents or not all(isinstance(s, str) for s in sents):
            raise VtpipeError(f"{where}: 'sentences' must be a non-empty list of strings")
        if not isinstance(stamps, list) or len(stamps) != len(sents):
            raise VtpipeError(f"{where}: 'timestamps' must list one [start, end] per sentence "
                              f"({len(sents)} sentences, got {stamps!r})")
        duration = as_seconds(v["duration"], where)
        vid = key[2:] if strip_v_prefix and key.startswith("v_") else key
        for n, (ts, s) in enumerate(zip(stamps, sents)):
            if not isinstance(ts, (list, tuple)) or len(ts) != 2:
                raise VtpipeError(f"{where}: timestamp {n} must be [start, end], got {ts!r}")
            rows.append((f"{vid}#{n}", vid, s, as_seconds(ts[0], where), as_seconds(ts[1], where), duration))
    if not rows:
        raise VtpipeError(f"{path}: no videos")
    return _table(rows, ["start_s", "end_s", "duration_s"])


def _activitynet_split(split: str | Path | None, strip_v_prefix: bool) -> list[str] | None:
    if split is None:
        return None
    ids = read_id_list(Path(split))
    return [i[2:] if strip_v_prefix and i.startswith("v_") else i for i in ids]


def read_activitynet_paragraph(path: Path, split: str | Path | None = None,
                               strip_v_prefix: bool = False) -> pd.DataFrame:
    """ActivityNet Captions `val_1.json` / `train.json` ({"v_<id>": {duration, timestamps, sentences}}), one
    caption per video: the sentences joined by one space (exactly as CLIP4Clip; the sentences' own leading
    spaces are kept), with `duration_s`. CLIP4Clip evaluates val_1.json (4917 videos). `split`: `val_ids.json`
    / `train_ids.json` (a JSON list) or a text list. `strip_v_prefix=True` drops the leading "v_" from ids, as
    CLIP4Clip does (its videos are named `<youtube id>.mp4`); keep it False when the files are `v_<id>.mp4`."""
    df = _activitynet_rows(path, strip_v_prefix)
    ids = _activitynet_split(split, strip_v_prefix)
    if ids is not None:
        df = restrict_to_ids(df, ids, Path(split), path)  # type: ignore[arg-type]
    return _paragraphs(df, keep=["duration_s"])


def read_activitynet_segments(path: Path, split: str | Path | None = None,
                              strip_v_prefix: bool = False) -> pd.DataFrame:
    """ActivityNet Captions, one caption per timestamped sentence: start_s / end_s as given (seconds, not
    rounded), duration_s. Caption ids `<video_id>#<n>`. Options as for activitynet-paragraph."""
    df = _activitynet_rows(path, strip_v_prefix)
    ids = _activitynet_split(split, strip_v_prefix)
    if ids is not None:
        df = restrict_to_ids(df, ids, Path(split), path)  # type: ignore[arg-type]
    return df


# ---------------------------------------------------------------------------------------------------------
# LSMDC
# ---------------------------------------------------------------------------------------------------------

LSMDC_TIMES = ["aligned_start_s", "aligned_end_s", "extracted_start_s", "extracted_end_s"]


def read_lsmdc(path: Path, movie_dirs: bool = False) -> pd.DataFrame:
    """LSMDC 2016 `LSMDC16_annos_{training,val,test}.csv` / `LSMDC16_challenge_1000_publictect.csv`: no header,
    TAB-separated `<clip_id> <start_aligned> <end_aligned> <start_extracted> <end_extracted> <sentence>`, times
    as hh.mm.ss.mmm in the movie. One caption per line (a clip id can repeat in the training file); caption ids
    `<clip_id>#<n>`. The four times are returned as where the clip sits in its movie (`aligned_start_s` ...),
    not as start_s/end_s: the clip file is already cut. `movie_dirs=True` gives ids `<movie>/<clip_id>` (movie =
    the clip id up to its last '_', the official download's folder layout); False gives `<clip_id>` (CLIP4Clip
    finds files by name anywhere under its folder)."""
    rows = []
    for n, line in enumerate(read_lines(path), start=1):
        s = line.strip()
        if not s:
            continue
        f = s.split("\t")
        where = f"{path}:{n}"
        if len(f) == 5:
            raise VtpipeError(f"{where}: 5 fields and no sentence - this is the blind-test file; use a file with "
                              f"sentences (LSMDC16_annos_test.csv or LSMDC16_challenge_1000_publictect.csv)")
        if len(f) != 6:
            raise VtpipeError(f"{where}: expected 6 TAB-separated fields (clip id, 4 times, sentence), got "
                              f"{len(f)}; is the file TAB-separated?")
        clip = strip_video_ext(f[0].strip())
        vid = f"{clip.rsplit('_', 1)[0]}/{clip}" if movie_dirs else clip
        if movie_dirs and "_" not in clip:
            raise VtpipeError(f"{where}: clip id {clip!r} has no '_<times>' part to take the movie name from")
        rows.append((vid, f[5], *(parse_hms(t, where) for t in f[1:5])))
    if not rows:
        raise VtpipeError(f"{path}: no annotation lines")
    df = pd.DataFrame(rows, columns=["video_id", "caption", *LSMDC_TIMES])
    df.insert(0, "caption_id", numbered_ids(df["video_id"]))
    return df


# ---------------------------------------------------------------------------------------------------------
# YouCook2
# ---------------------------------------------------------------------------------------------------------

YOUCOOK2_LAYOUTS = ("flat", "subset-recipe")


def _youcook2_rows(path: Path, subset: str | None, layout: str) -> pd.DataFrame:
    if layout not in YOUCOOK2_LAYOUTS:
        raise VtpipeError(f"YouCook2 layout {layout!r} is not one of {YOUCOOK2_LAYOUTS}")
    data = load_json(path, dict, '{"database": {video_id: {annotations: [{segment, sentence}], subset}}} '
                                 "(youcookii_annotations_trainval.json)")
    db = data.get("database")
    if not isinstance(db, dict):
        raise VtpipeError(f"{path}: expected a 'database' object of videos (keys found: {sorted(data)})")
    subsets = sorted({str(v.get("subset")) for v in db.values() if isinstance(v, dict)})
    if subset is not None and subset not in subsets:
        raise VtpipeError(f"{path}: no video has subset {subset!r}; subsets present: {subsets}")
    rows = []
    for key, v in db.items():
        where = f"{path}: video {key!r}"
        if not isinstance(v, dict):
            raise VtpipeError(f"{where}: expected an object with annotations and subset")
        if subset is not None and v.get("subset") != subset:
            continue
        anns = v.get("annotations")
        if not isinstance(anns, list) or not anns:
            raise VtpipeError(f"{where}: 'annotations' must be a non-empty list of {{segment, sentence}} (the "
                              f"test file youcookii_annotations_test_segments_only.json has no sentences)")
        if layout == "subset-recipe":
            if "recipe_type" not in v or "subset" not in v:
                raise VtpipeError(f"{where}: layout 'subset-recipe' needs 'subset' and 'recipe_type'")
            vid = f"{v['subset']}/{v['recipe_type']}/{key}"
        else:
            vid = key
        duration = as_seconds(v["duration"], where) if "duration" in v else float("nan")
        for n, a in enumerate(anns):
            w = f"{where}, annotation {n}"
            if not isinstance(a, dict):
                raise VtpipeError(f"{w}: expected {{segment, sentence}}, got {a!r}")
            sent = _str_field(a, "sentence", w)
            seg = a.get("segment")
            if not isinstance(seg, (list, tuple)) or len(seg) != 2:
                raise VtpipeError(f"{w}: 'segment' must be [start, end] in seconds, got {seg!r}")
            seg_id = a.get("id", n)
            rows.append((f"{vid}#{seg_id}", vid, sent, as_seconds(seg[0], w), as_seconds(seg[1], w), duration))
    if not rows:
        raise VtpipeError(f"{path}: no annotated videos" + (f" in subset {subset!r}" if subset else ""))
    return _table(rows, ["start_s", "end_s", "duration_s"])


def read_youcook2_segments(path: Path, subset: str | None = "validation", layout: str = "flat") -> pd.DataFrame:
    """YouCook2 `youcookii_annotations_trainval.json`, one caption per annotated segment (clip retrieval, as
    MIL-NCE / VT-TWINS evaluate it on the validation clips): start_s / end_s from `segment`, duration_s.
    Caption ids `<video_id>#<annotation id>`. `subset`: "validation" (default), "training" or None for all.
    `layout`: "flat" ids `<youtube id>`; "subset-recipe" ids `<subset>/<recipe_type>/<youtube id>` (the
    raw_videos folder layout of the official download)."""
    return _youcook2_rows(path, subset, layout)


def read_youcook2_paragraph(path: Path, subset: str | None = "validation", layout: str = "flat") -> pd.DataFrame:
    """YouCook2, one caption per video: its segment sentences joined by one space in annotation order
    (video-paragraph retrieval), with duration_s. Options as for youcook2-segments."""
    return _paragraphs(_youcook2_rows(path, subset, layout), keep=["duration_s"])


# ---------------------------------------------------------------------------------------------------------
# VATEX
# ---------------------------------------------------------------------------------------------------------


def read_vatex(path: Path, split: str | Path | None = None) -> pd.DataFrame:
    """VATEX `vatex_training_v1.0.json` / `vatex_validation_v1.0.json` / `vatex_public_test_english_v1.1.json`:
    a list of {videoID, enCap: [10 English captions], chCap}. English captions only; caption ids
    `<videoID>#<n>`; videoID (`<youtube id>_<start 6 digits>_<end 6 digits>`) is the video id. `split`: a list
    of video ids (e.g. the 1500-video retrieval test list drawn from the validation set)."""
    data = load_json(path, list, "a JSON list of {videoID, enCap} (VATEX)")
    rows = []
    for k, item in enumerate(data):
        where = f"{path}: item {k}"
        if not isinstance(item, dict):
            raise VtpipeError(f"{where}: expected an object with videoID and enCap, got {item!r}")
        vid = strip_video_ext(_str_field(item, "videoID", where))
        caps: Any = item.get("enCap")
        if not isinstance(caps, list) or not caps or not all(isinstance(c, str) for c in caps):
            raise VtpipeError(f"{where} (video {vid!r}): 'enCap' must be a non-empty list of strings (the "
                              f"private test file has no captions)")
        rows.extend((f"{vid}#{n}", vid, c) for n, c in enumerate(caps))
    if not rows:
        raise VtpipeError(f"{path}: no videos")
    return _maybe_split(_table(rows), split, path)
