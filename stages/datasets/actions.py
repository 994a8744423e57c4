"""Action-recognition class lists and train/test splits: UCF101 and HMDB51, from their official split files.

Video ids follow vtpipe's rule: the video's path relative to the input root, without extension, with '/'.
Both datasets ship as one folder per class, so by default (`layout="class_dirs"`) an id is
`<class folder>/<file name without extension>`; `layout="flat"` gives the bare file name (all videos in one
folder); `prefix` is prepended (`prefix="UCF-101"` when the input root is the folder above UCF-101/).

UCF101 (`ucfTrainTestlist/`): `classInd.txt` lines `1 ApplyEyeMakeup` (1-based index, class name);
`trainlist0<k>.txt` lines `ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1` (path, 1-based class index);
`testlist0<k>.txt` lines `ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi` (class taken from the folder).
Split 1: 9537 train / 3783 test videos. Labels are 0-based: classInd index - 1.

HMDB51 (`testTrainMulti_7030_splits/`): `<class>_test_split<k>.txt` lines `<video>.avi <tag>`, tag 1 = train,
2 = test, 0 = not used in this split. Each split: 3570 train / 1530 test. Labels are the index of the class
in the sorted class names (what sklearn's LabelEncoder gives the MIL-NCE / VT-TWINS evaluation).
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from stages.datasets.common import read_lines, strip_video_ext
from stages.contract.errors import VtpipeError

LAYOUTS = ("class_dirs", "flat")
DATASETS = ("ucf101", "hmdb51")


def _split_number(split: int | str) -> int:
    try:
        k = int(split)
    except (TypeError, ValueError):
        k = -1
    if k not in (1, 2, 3):
        raise VtpipeError(f"split {split!r} does not exist; UCF101 and HMDB51 have splits 1, 2, 3")
    return k


def _make_id(class_dir: str, file_name: str, layout: str, prefix: str) -> str:
    stem = strip_video_ext(file_name)
    vid = f"{class_dir}/{stem}" if layout == "class_dirs" else stem
    return f"{prefix.strip('/')}/{vid}" if prefix.strip("/") else vid


def _check_unique(df: pd.DataFrame, where: str) -> None:
    dup = df["video_id"][df["video_id"].duplicated()].unique().tolist()
    if dup:
        raise VtpipeError(f"{where}: video id(s) listed twice: {dup[:5]}")


def read_ucf101_classes(path: str | Path) -> list[str]:
    """classInd.txt -> class names ordered by their 1-based index (which must run 1..C without gaps)."""
    path = Path(path)
    entries: dict[int, str] = {}
    for n, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise VtpipeError(f"{path}:{n}: expected '<index> <ClassName>', got {line!r}")
        idx = int(parts[0])
        if idx in entries:
            raise VtpipeError(f"{path}:{n}: class index {idx} appears twice")
        entries[idx] = parts[1]
    if sorted(entries) != list(range(1, len(entries) + 1)):
        raise VtpipeError(f"{path}: class indices must run 1..{len(entries)} without gaps; got {sorted(entries)[:10]}...")
    names = [entries[i] for i in range(1, len(entries) + 1)]
    if len(set(names)) != len(names):
        raise VtpipeError(f"{path}: a class name appears twice")
    return names


def read_ucf101_split(root: str | Path, split: int | str = 1, layout: str = "class_dirs",
                      prefix: str = "") -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """UCF101 split `split` from `root` (the ucfTrainTestlist folder)."""
    root, k = Path(root), _split_number(split)
    names = read_ucf101_classes(root / "classInd.txt")
    by_name = {c: i for i, c in enumerate(names)}

    def parse(file: Path, labelled: bool) -> pd.DataFrame:
        rows = []
        for n, line in enumerate(read_lines(file), start=1):
            if not line.strip():
                continue
            parts = line.split()
            where = f"{file}:{n}"
            if len(parts) not in ((2,) if labelled else (1, 2)):
                raise VtpipeError(f"{where}: expected '<Class>/<video>.avi" + (" <index>'" if labelled else "'")
                                  + f", got {line!r}")
            rel = parts[0].replace("\\", "/")
            if rel.count("/") != 1:
                raise VtpipeError(f"{where}: expected a path '<Class>/<video>.avi', got {rel!r}")
            class_dir, file_name = rel.split("/")
            if class_dir not in by_name:
                raise VtpipeError(f"{where}: class folder {class_dir!r} is not in classInd.txt")
            label = by_name[class_dir]
            if len(parts) == 2:
                if not parts[1].isdigit() or not 1 <= int(parts[1]) <= len(names):
                    raise VtpipeError(f"{where}: class index {parts[1]!r} is not in 1..{len(names)}")
                if int(parts[1]) - 1 != label:
                    raise VtpipeError(f"{where}: class index {parts[1]} ({names[int(parts[1]) - 1]}) does not "
                                      f"match the folder {class_dir!r}")
            rows.append((_make_id(class_dir, file_name, layout, prefix), label))
        if not rows:
            raise VtpipeError(f"{file}: no videos listed")
        df = pd.DataFrame(rows, columns=["video_id", "label"])
        _check_unique(df, str(file))
        return df

    train = parse(root / f"trainlist0{k}.txt", labelled=True)
    test = parse(root / f"testlist0{k}.txt", labelled=False)  # some copies carry the index too: checked above
    return train, test, names


_HMDB_FILE = re.compile(r"^(?P<cls>.+)_test_split(?P<k>\d)$")


def read_hmdb51_split(root: str | Path, split: int | str = 1, layout: str = "class_dirs",
                      prefix: str = "") -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """HMDB51 split `split` from `root` (the testTrainMulti_7030_splits folder)."""
    root, k = Path(root), _split_number(split)
    if not root.is_dir():
        raise VtpipeError(f"HMDB51 split folder {root} does not exist")
    files = {}
    for f in sorted(root.glob("*.txt")):
        m = _HMDB_FILE.match(f.stem)
        if m and int(m["k"]) == k:
            files[m["cls"]] = f
    if not files:
        raise VtpipeError(f"{root}: no '<class>_test_split{k}.txt' files; point root at testTrainMulti_7030_splits/")
    names = sorted(files)
    train, test = [], []
    for label, cls in enumerate(names):
        f = files[cls]
        for n, line in enumerate(read_lines(f), start=1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise VtpipeError(f"{f}:{n}: expected '<video>.avi <0|1|2>', got {line!r}")
            row = (_make_id(cls, parts[0], layout, prefix), label)
            if parts[1] == "1":
                train.append(row)
            elif parts[1] == "2":
                test.append(row)
    tr = pd.DataFrame(train, columns=["video_id", "label"])
    te = pd.DataFrame(test, columns=["video_id", "label"])
    both = pd.concat([tr, te], ignore_index=True)
    _check_unique(both, f"{root} split {k}")
    if tr.empty or te.empty:
        raise VtpipeError(f"{root} split {k}: no {'training' if tr.empty else 'test'} videos (tag "
                          f"{'1' if tr.empty else '2'})")
    return tr, te, names


def read_action_split(dataset: str, root: str | Path, split: int | str = 1, layout: str = "class_dirs",
                      prefix: str = "") -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(train DataFrame[video_id, label], test DataFrame[video_id, label], class_names) for `dataset`
    ("ucf101" or "hmdb51") split 1, 2 or 3, read from the split folder `root`. Labels are 0-based ints into
    class_names. See the module docstring for the files, ids and label order."""
    if layout not in LAYOUTS:
        raise VtpipeError(f"layout {layout!r} is not one of {LAYOUTS}")
    key = dataset.lower().replace("-", "").replace("_", "")
    if key == "ucf101":
        return read_ucf101_split(root, split, layout, prefix)
    if key == "hmdb51":
        return read_hmdb51_split(root, split, layout, prefix)
    raise VtpipeError(f"unknown action dataset {dataset!r}; choose from {list(DATASETS)}")
