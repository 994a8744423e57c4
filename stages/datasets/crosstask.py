"""CrossTask annotations (crosstask_release/): task step lists and per-video step segments.

Files read:
- `tasks_primary.txt` (or tasks_related.txt): blocks of 5 lines separated by a blank line -
  task id, task name, wikiHow URL, number of steps, the steps comma-separated.
- `annotations/<task id>_<youtube id>.csv`: no header, one segment a line `step,start,end`, step 1-based into
  the task's step list, start/end in seconds.
- optional `videos_val.csv` / `videos.csv`: no header, `task id,youtube id,url`; restricts the segments to the
  listed (task, video) pairs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from stages.datasets.common import as_seconds, read_lines
from stages.contract.errors import VtpipeError

SEGMENT_COLUMNS = ["segment_id", "task", "video_id", "step", "step_text", "start_s", "end_s"]


@dataclass(frozen=True)
class CrossTaskTask:
    """One task of tasks_primary.txt; `steps[k - 1]` is step k's text."""

    id: str
    name: str
    url: str
    steps: tuple[str, ...]


def read_crosstask_tasks(path: str | Path) -> dict[str, CrossTaskTask]:
    """tasks_primary.txt -> {task id: CrossTaskTask}, in file order."""
    path = Path(path)
    blocks: list[list[tuple[int, str]]] = [[]]
    for n, line in enumerate(read_lines(path), start=1):
        if line.strip():
            blocks[-1].append((n, line.strip()))
        elif blocks[-1]:
            blocks.append([])
    blocks = [b for b in blocks if b]
    if not blocks:
        raise VtpipeError(f"{path}: no task blocks")
    tasks: dict[str, CrossTaskTask] = {}
    for block in blocks:
        first = block[0][0]
        if len(block) != 5:
            raise VtpipeError(f"{path}:{first}: a task block has 5 lines (id, name, url, number of steps, steps "
                              f"comma-separated) followed by a blank line; got {len(block)} lines")
        (_, tid), (_, name), (_, url), (ln, n_steps), (ls, steps_line) = block
        try:
            n = int(n_steps)
        except ValueError as e:
            raise VtpipeError(f"{path}:{ln}: number of steps {n_steps!r} is not an integer") from e
        steps = tuple(s.strip() for s in steps_line.split(","))
        if len(steps) != n or any(not s for s in steps):
            raise VtpipeError(f"{path}:{ls}: task {tid} declares {n} steps but its step line has {len(steps)} "
                              f"comma-separated step(s) (empty ones included): {steps_line!r}")
        if tid in tasks:
            raise VtpipeError(f"{path}:{first}: task id {tid} appears twice")
        tasks[tid] = CrossTaskTask(tid, name, url, steps)
    return tasks


def _read_pairs(path: Path) -> set[tuple[str, str]]:
    """(task id, video id) pairs to keep, from CrossTask's videos_val.csv (`task id,video id,url`, no header) or
    from a CSV with a header naming `task_id` and `video_id` columns (VT-TWINS's data/crosstask.csv:
    end,start,task_id,text,video_id, one row per segment)."""
    lines = [ln for ln in read_lines(path) if ln.strip()]
    head = [c.strip() for c in lines[0].split(",")] if lines else []
    if "task_id" in head and "video_id" in head:
        import pandas as pd

        df = pd.read_csv(path, dtype=str, keep_default_na=False)
        return {(t.strip(), v.strip()) for t, v in zip(df["task_id"], df["video_id"])}
    pairs = set()
    for n, line in enumerate(lines, start=1):
        f = line.split(",")
        if len(f) < 2:
            raise VtpipeError(f"{path}:{n}: expected 'task id,video id,url' (or a header with task_id and "
                              f"video_id columns), got {line!r}")
        pairs.add((f[0].strip(), f[1].strip()))
    return pairs


def read_crosstask_segments(tasks_file: str | Path, annotations_dir: str | Path | None = None,
                            videos_csv: str | Path | None = None) -> pd.DataFrame:
    """Every annotated step segment of the tasks in `tasks_file`:
    DataFrame[segment_id, task, video_id, step (1-based int), step_text, start_s, end_s], sorted by annotation
    file name then file order. segment_id = `<task>_<video>#<k>` (k-th segment of that file, from 0).
    `annotations_dir` defaults to `annotations/` next to `tasks_file`. Annotation files of tasks not in
    `tasks_file` are skipped (pass tasks_related.txt to read those)."""
    tasks_file = Path(tasks_file)
    tasks = read_crosstask_tasks(tasks_file)
    ann_dir = Path(annotations_dir) if annotations_dir is not None else tasks_file.parent / "annotations"
    if not ann_dir.is_dir():
        raise VtpipeError(f"CrossTask annotations folder {ann_dir} does not exist; pass annotations_dir")
    keep = _read_pairs(Path(videos_csv)) if videos_csv is not None else None
    rows = []
    for f in sorted(ann_dir.glob("*.csv")):
        tid, sep, vid = f.stem.partition("_")
        if not sep or not vid:
            raise VtpipeError(f"{f}: annotation files are named <task id>_<video id>.csv")
        if tid not in tasks or (keep is not None and (tid, vid) not in keep):
            continue
        steps = tasks[tid].steps
        k = 0
        for n, line in enumerate(read_lines(f), start=1):
            if not line.strip():
                continue
            where = f"{f}:{n}"
            parts = [p.strip() for p in line.split(",")]
            if len(parts) != 3:
                raise VtpipeError(f"{where}: expected 'step,start,end', got {line!r}")
            try:
                step = int(float(parts[0]))
            except ValueError as e:
                raise VtpipeError(f"{where}: step {parts[0]!r} is not an integer") from e
            if not 1 <= step <= len(steps):
                raise VtpipeError(f"{where}: step {step} is outside 1..{len(steps)} for task {tid} "
                                  f"({tasks[tid].name!r}); steps are 1-based")
            start, end = as_seconds(parts[1], where), as_seconds(parts[2], where)
            if end < start:
                raise VtpipeError(f"{where}: segment ends ({end}) before it starts ({start})")
            rows.append((f"{tid}_{vid}#{k}", tid, vid, step, steps[step - 1], start, end))
            k += 1
    if not rows:
        raise VtpipeError(f"no CrossTask segments in {ann_dir} for the tasks of {tasks_file}"
                          + (f" and the videos of {videos_csv}" if videos_csv is not None else ""))
    return pd.DataFrame(rows, columns=SEGMENT_COLUMNS)


def read_crosstask_captions(path: Path, annotations_dir: str | Path | None = None,
                            videos_csv: str | Path | None = None) -> pd.DataFrame:
    """The `crosstask` caption format: one caption per segment (its step's text), so step texts can be encoded
    by the extract stage like any captions. Columns caption_id (= segment_id), video_id, caption (= step_text),
    start_s, end_s, task, step. `path` is tasks_primary.txt; options as read_crosstask_segments."""
    seg = read_crosstask_segments(path, annotations_dir, videos_csv)
    return pd.DataFrame({
        "caption_id": seg["segment_id"], "video_id": seg["video_id"], "caption": seg["step_text"],
        "start_s": seg["start_s"], "end_s": seg["end_s"], "task": seg["task"], "step": seg["step"],
    })
