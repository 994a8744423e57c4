"""The extraction engine: decode in worker processes, batch units across video boundaries, encode, pool.

    DataLoader workers:  read_video (decord; or the preprocess object's own read_video, e.g. S3D's ffmpeg
                         square crop) -> model.preprocess() -> units [U, ...] float32
    this process:        a FIFO of units from consecutive videos -> full batches of `batch_size` units
                         (a batch may hold the tail of one video and the head of the next, so the model
                         always sees full batches even when videos are short) -> encode_units
                         -> when all of a video's units are back: pool -> on_video(...)

Videos come out in input order, and batches are formed the same way on every run, so the output is
deterministic. A video that fails to decode is reported through on_failure and the engine goes on.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from stages.backbones.base import Preprocess, VideoTextModel
from stages.contract.faults import fault_point
from stages.video.decode import read_video
from stages.video.errors import VideoError, VideoInterrupted
from stages.video.sampling import make_policy

log = logging.getLogger("vtpipe.engine")

# Test-only fault hook: set VTPIPE_TEST_CORRUPT to one of these to corrupt decoded frames on purpose, so the
# end-to-end oracle test can prove that it fails when a stage damages the signal. Never set in real runs.
_CORRUPTIONS = {
    "swap_rgb": lambda fr: fr[..., ::-1],
    "reverse_frames": lambda fr: fr[::-1],
}


@dataclass
class DecodedUnits:
    video_id: str
    units: np.ndarray | None  # [U, ...] preprocessed model input
    times_s: np.ndarray | None
    mask: np.ndarray | None
    num_frames: int = 0
    error: tuple[str, str] | None = None  # (reason, detail)
    indices: np.ndarray | None = None  # the decoded stream's frame numbers behind each unit (-1 = padding)


class _VideoDataset(Dataset):
    def __init__(self, videos: Sequence[tuple[str, str]], policy_spec: dict, preprocess: Preprocess,
                 unit: str = "frame", fast_resize: bool = False, decode_device: str = "cpu", aspect: str = "stored"):
        self.videos = list(videos)
        self.aspect = aspect
        self.fast_resize = fast_resize
        self.decode_device = decode_device
        self.unit = unit
        self.policy_spec = policy_spec
        self.preprocess = preprocess
        self.corrupt = os.environ.get("VTPIPE_TEST_CORRUPT", "")

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, i: int) -> DecodedUnits:
        vid, path, *extra = self.videos[i]
        policy = make_policy({**self.policy_spec, **(extra[0] if extra else {})})  # segment bounds, if any
        own_reader = getattr(self.preprocess, "read_video", None)  # an input stage that decodes for itself
        try:
            if own_reader is not None:  # e.g. S3D's square crop, made by the ffmpeg binary as its references did
                dec = own_reader(path, policy, ctx=self.decode_device)
            else:
                dec = read_video(path, policy, ctx=self.decode_device, aspect=self.aspect,
                                 resize=decoder_resize(self.preprocess, self.fast_resize))
        except VideoError as e:
            return DecodedUnits(vid, None, None, None, error=(e.reason, e.detail))
        except VideoInterrupted:  # ffmpeg stopped from outside: not the video's fault, the task fails
            raise
        except Exception as e:  # a decoder crash on one file must not stop the shard
            return DecodedUnits(vid, None, None, None, error=("decode_error", f"{type(e).__name__}: {e}"))
        frames = dec.frames
        if self.corrupt in _CORRUPTIONS:
            frames = np.ascontiguousarray(_CORRUPTIONS[self.corrupt](frames))
        if len(frames) == 0:
            return DecodedUnits(vid, None, None, None, error=("no_frames", "the sampling policy selected no frames"))
        sel = dec.selection
        mask = np.ones(len(frames), bool) if sel.mask is None else np.asarray(sel.mask, bool)
        times = np.asarray(sel.times_s, np.float64)
        pad = np.asarray(sel.indices) < 0  # padding frames: zero model input, as the references pad
        if self.unit == "clip" and frames.ndim == 4:
            # a clip model fed by a frame policy (TVTSv2's 12 frames): the whole selection is one clip
            frames, mask, times, pad = frames[None], np.array([bool(mask.any())]), times[:1], pad[None]
        units = self.preprocess(frames, pad=pad)
        n_frames = int(np.prod(frames.shape[: frames.ndim - 3]))
        return DecodedUnits(vid, units, times, mask, num_frames=n_frames, indices=np.asarray(sel.indices))


def decoder_resize(pre: Preprocess, fast_resize: bool = False) -> Callable[[int, int], tuple[int, int]] | None:
    """What the decoder should resize to, as a function (display height, width) -> (w, h); None: native size.

    Only where that gives the reference's pixels: the "decoder" backend (the reference resized with ffmpeg's
    swscale too). extract.fast_resize also lets the decoder resize (bilinear) for the other backends, trading
    exactness for speed; the backend then sees frames that already have its target size."""
    if pre.backend == "decoder" or fast_resize:
        return lambda h, w: pre.target_size(h, w)[::-1]
    return None


def usable_decode_workers(requested: int) -> int:
    """The decode workers this process can start: `requested`, or 0 inside a daemonic process.

    A daemonic process may not have children (multiprocessing refuses), and dask's nanny starts its worker
    processes daemonic unless `distributed.worker.daemon` is False. The clusters vtpipe starts itself turn
    that off; on a user's own dask workers that leave it on, decoding runs in the task's own process instead
    (same output, slower), with a warning that says how to turn it off."""
    requested = max(0, int(requested))
    if requested and multiprocessing.current_process().daemon:
        log.warning("this process is daemonic (a dask worker started with distributed.worker.daemon=True), so it "
                    "cannot start %d decode worker(s): decoding in the task's process instead. Start the dask "
                    "workers with DASK_DISTRIBUTED__WORKER__DAEMON=False to decode in parallel.", requested)
        return 0
    return requested


def _identity(x):
    return x


def _die_with_parent(parent_pid: int, worker_id: int = 0) -> None:
    """DataLoader worker_init_fn: end this decode worker when the process that feeds the model dies.

    After a kill -9 of the extracting process, its decode workers would otherwise linger forever (blocked
    flushing a result queue nobody reads), holding memory and file handles. Linux: PR_SET_PDEATHSIG.
    Only for workers forked straight from the extracting process: one started through a fork server (or
    spawned) has another parent, whose death the signal would follow instead."""
    if os.getppid() != parent_pid:
        return
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):  # not Linux: the worker's own parent watchdog is all there is
        return
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


@dataclass
class _Pending:
    item: DecodedUnits
    feats: np.ndarray
    filled: int = 0


def run_engine(
    model: VideoTextModel,
    videos: Sequence[tuple],
    policy_spec: dict,
    on_video: Callable[[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray], None],
    on_failure: Callable[[str, str, str], None],
    batch_size: int = 64,
    decode_workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
    fast_resize: bool = False,
    decode_device: str = "cpu",
    aspect: str = "stored",
) -> dict[str, float]:
    """Encode `videos` ((id, path) pairs, or (id, path, {policy overrides}) for segments); call
    on_video(id, unit_feats, times, mask, pooled) in input order.

    Returns throughput counters: videos, frames, units, batches, seconds, and decode_workers (the number
    really used: 0 in a daemonic process, see usable_decode_workers).
    """
    decode_workers = usable_decode_workers(decode_workers)
    dataset = _VideoDataset(videos, policy_spec, model.preprocess(), unit=model.unit, fast_resize=fast_resize,
                            decode_device=decode_device, aspect=aspect)
    loader = DataLoader(
        dataset,
        batch_size=None,
        shuffle=False,
        num_workers=decode_workers,
        collate_fn=_identity,
        prefetch_factor=4 if decode_workers > 0 else None,
        persistent_workers=False,
        worker_init_fn=functools.partial(_die_with_parent, os.getpid()) if decode_workers > 0 else None,
    )
    pending: deque[_Pending] = deque()  # videos whose units are not all encoded yet, in input order
    queue: deque[tuple[_Pending, int]] = deque()  # (video, first unit not yet batched)
    queued_units = 0
    stats = {"videos": 0, "frames": 0, "units": 0, "batches": 0, "failed": 0, "decode_workers": decode_workers}
    t0 = time.perf_counter()

    def encode(n: int) -> None:
        nonlocal queued_units
        parts, owners = [], []
        need = n
        while need > 0:
            pend, start = queue[0]
            take = min(need, len(pend.item.units) - start)
            parts.append(pend.item.units[start : start + take])
            owners.append((pend, start, take))
            if start + take == len(pend.item.units):
                queue.popleft()
            else:
                queue[0] = (pend, start + take)
            need -= take
        batch = torch.from_numpy(np.concatenate(parts) if len(parts) > 1 else parts[0])
        out = model.encode_units(batch)
        out = out.detach().cpu().numpy().astype(np.float32, copy=False) if torch.is_tensor(out) else out
        stats["batches"] += 1
        row = 0
        for pend, start, take in owners:
            pend.feats[start : start + take] = out[row : row + take]
            pend.filled += take
            row += take
        queued_units -= n
        flush_finished()

    def flush_finished() -> None:
        while pending and pending[0].filled == len(pending[0].item.units):
            pend = pending.popleft()
            it = pend.item
            pooled = model.pool(pend.feats, it.mask)
            on_video(it.video_id, pend.feats, it.times_s, it.mask, pooled)
            stats["videos"] += 1
            stats["frames"] += it.num_frames
            stats["units"] += len(it.units)
            if progress:
                progress(1, it.num_frames)

    for item in loader:
        fault_point("decoded")
        if item.error is not None:
            on_failure(item.video_id, item.error[0], item.error[1])
            stats["failed"] += 1
            if progress:
                progress(1, 0)
            continue
        if getattr(model, "encodes_whole_videos", False):  # e.g. UCoFiA: a video's frames are encoded together
            rows, rmask, rtimes = model.encode_video(item.units, item.mask, item.times_s)
            on_video(item.video_id, rows, rtimes, rmask, model.pool(rows, rmask))
            stats["videos"] += 1
            stats["frames"] += item.num_frames
            stats["units"] += len(item.units)
            stats["batches"] += 1
            if progress:
                progress(1, item.num_frames)
            continue
        pend = _Pending(item, np.zeros((len(item.units), model.embed_dim), np.float32))
        pending.append(pend)
        queue.append((pend, 0))
        queued_units += len(item.units)
        while queued_units >= batch_size:
            encode(batch_size)
    while queued_units:
        encode(min(batch_size, queued_units))
    stats["seconds"] = time.perf_counter() - t0
    return stats
