"""Stage 1, compress: re-encode every input video to `fps` frames/s with short side `size` (3 fps, 224).

Tasks are chunks of videos; inside a task, ffmpeg processes run `workers` at a time. Each output
<compress_dir>/<id>.mp4 is written atomically, so an existing output is a finished video: a re-run after a
crash redoes only what is missing. A video that fails is recorded with its reason, never copied over.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from stages.contract.errors import VtpipeError
from stages.contract.faults import fault_point
from stages.contract.layout import Layout
from stages.contract.tasks import Result, Task, register_stage
from stages.video.encode import compress_video
from stages.video.discover import discover_videos
from stages.video.errors import VideoError

STAGE = "compress"
# version: bump when a code change makes the compressed videos differ; neutral: params added after version 1
# with the value that keeps version 1's output (left out of the fingerprint)
# ignore: where the sources are (their content identities, `inputs`, are hashed: a moved dataset is the same)
SPEC = register_stage(STAGE, version=1, neutral={"legacy_scale": False}, ignore=("videos",))


def source_videos(cfg: dict) -> list[tuple[str, Path]]:
    """(id, path) of every input video, sorted by id."""
    src = cfg["input"]["videos"]
    if not src:
        from stages.contract.errors import ConfigError

        raise ConfigError("input.videos is not set: give a folder of videos or a CSV of video paths")
    entries = discover_videos(src, extensions=tuple(cfg["input"]["extensions"]))
    return sorted(((e.id, Path(e.path)) for e in entries), key=lambda x: x[0])


def source_identities(videos: list[tuple[str, Path]]) -> dict[str, str]:
    """{video id: content identity} of the input videos (stages.features.identity; cached)."""
    from stages.features.identity import identities

    try:
        return dict(zip((v for v, _ in videos), identities([p for _, p in videos])))
    except OSError as e:
        raise VtpipeError(f"input video {e.filename} cannot be read ({e.strerror}): was it moved or deleted?") from e


def output_path(layout: Layout, video_id: str) -> Path:
    return layout.compress_dir / f"{video_id}.mp4"


def plan(cfg: dict, layout: Layout) -> list[Task]:
    c = cfg["compress"]
    videos = source_videos(cfg)
    ident = source_identities(videos)
    per = max(1, int(c["videos_per_task"]))
    tasks = []
    for k, start in enumerate(range(0, len(videos), per)):
        chunk = videos[start : start + per]
        params = {
            "videos": [[vid, str(p)] for vid, p in chunk],
            "inputs": [[vid, ident[vid]] for vid, _ in chunk],
            "out_dir": str(layout.compress_dir),
            "fps": c["fps"],
            "size": c["size"],
            "crop": c["crop"],
            "crf": c["crf"],
            "preset": c["preset"],
            "legacy_scale": c["legacy_scale"],
            "aspect": c.get("aspect", "stored"),
        }
        tasks.append(Task(STAGE, f"videos-{k:05d}", str(layout.compress_dir), params, runtime={"workers": c["workers"]},
                          root=str(layout.root)))
    return tasks


def run_task(task: Task) -> Result:
    p = task.params
    out_dir = Path(p["out_dir"])
    overwrite = bool(task.runtime.get("overwrite"))
    t0 = time.perf_counter()

    def one(item: list) -> tuple[str, str, str | None, str | None]:
        vid, src = item[0], item[1]
        dst = out_dir / f"{vid}.mp4"
        if dst.exists() and not overwrite:
            return vid, "existing", None, None
        try:
            compress_video(Path(src), dst, fps=p["fps"], size=p["size"], crop=p["crop"], crf=p["crf"],
                           preset=p["preset"], legacy_scale=p["legacy_scale"], aspect=p.get("aspect", "stored"))
            fault_point("compressed")  # between videos: this one in place, the task not finished
            return vid, "compressed", None, None
        except VideoError as e:
            return vid, "failed", e.reason, e.detail

    workers = max(1, int(task.runtime.get("workers", 1)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        outcomes = list(pool.map(one, p["videos"]))
    counts = {"videos": len(outcomes), "compressed": 0, "existing": 0, "failed": 0}
    failures = []
    for vid, status, reason, detail in outcomes:
        counts[status] += 1
        if status == "failed":
            failures.append({"id": vid, "stage": STAGE, "reason": reason or "unknown", "detail": detail or ""})
    return Result(task.id, outputs={"dir": str(out_dir)}, counts=counts, failures=failures,
                  seconds=time.perf_counter() - t0)
