"""The feature store: flat, ragged HDF5 files that are fast to write, merge and read.

Video store (one per shard, and the concatenated one)::

    ids              [N]        utf-8 video ids, in write order
    offsets          [N+1]      int64; video i owns unit rows offsets[i]:offsets[i+1]
    unit_features    [U, D]     per-unit features (a unit = one frame, or one clip for C3D/S3D models)
    unit_times_s     [U]        float64 start time of each unit in the decoded video
    unit_mask        [U]        bool; False on padding units (policies that zero-pad)
    pooled           [N, D]     the video-level vector (the model's pool(): meanP for CLIP)
    attrs: kind="video", model, embed_dim, unit, dtype, sampling (json), fingerprint, vtpipe_version,
           random_weights, created_by

Text store::

    caption_ids [N], video_ids [N], captions [N] (utf-8), pooled [N, D],
    optionally tokens [N, L, D] and token_mask [N, L]; attrs as above with kind="text".

A million tiny HDF5 groups are slow to write and to open; a few large datasets are not. Writers append
into chunked, resizable datasets, so a shard never has to fit in memory. Files are written under a
temporary name and renamed into place when closed (see stages.contract.tasks.atomic_path), so a reader never opens a
half-written store.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import h5py
import numpy as np

from stages import __version__
from stages.contract.errors import VtpipeError
from stages.contract.faults import fault_point

STR = h5py.string_dtype("utf-8")
STORE_FORMAT_VERSION = 1


def _create_growable(f: h5py.File, name: str, tail: tuple[int, ...], dtype, chunk_rows: int) -> h5py.Dataset:
    return f.create_dataset(
        name, shape=(0,) + tail, maxshape=(None,) + tail, dtype=dtype, chunks=(chunk_rows,) + tail
    )


def _append(ds: h5py.Dataset, rows: np.ndarray) -> None:
    n = ds.shape[0]
    ds.resize(n + len(rows), axis=0)
    ds[n:] = rows


def _attrs_in(f: h5py.File, attrs: dict[str, Any]) -> None:
    for k, v in attrs.items():
        f.attrs[k] = json.dumps(v) if isinstance(v, (dict, list, tuple)) else ("" if v is None else v)
    f.attrs["vtpipe_version"] = __version__
    f.attrs["store_format"] = STORE_FORMAT_VERSION


class VideoStoreWriter:
    """Append videos to a (temporary) HDF5 file; call close() to finish it.

    >>> w = VideoStoreWriter(path, embed_dim=512, attrs={"model": "clip-vit-b-32"})
    >>> w.add("video0", unit_features, unit_times_s, unit_mask, pooled)
    >>> w.close()
    """

    def __init__(self, path: str | os.PathLike, embed_dim: int, attrs: dict[str, Any], dtype: str = "float32"):
        if dtype not in ("float32", "float16"):
            raise VtpipeError(f"store dtype must be float32 or float16, got {dtype!r}")
        self.path = Path(path)
        self.embed_dim = int(embed_dim)
        self.dtype = np.dtype(dtype)
        self._f = h5py.File(self.path, "w", libver="latest")
        _attrs_in(self._f, {**attrs, "kind": "video", "embed_dim": self.embed_dim, "dtype": dtype})
        rows = max(1, min(4096, (1 << 20) // (self.embed_dim * self.dtype.itemsize)))
        self._ids = _create_growable(self._f, "ids", (), STR, 1024)
        self._units = _create_growable(self._f, "unit_features", (self.embed_dim,), self.dtype, rows)
        self._times = _create_growable(self._f, "unit_times_s", (), np.float64, 4096)
        self._mask = _create_growable(self._f, "unit_mask", (), np.bool_, 4096)
        self._pooled = _create_growable(self._f, "pooled", (self.embed_dim,), self.dtype, rows)
        self._offsets = [0]
        self._seen: set[str] = set()
        # rows are buffered and appended in large slabs: one resize per ~32 MB, not five per video
        self._buf: dict[str, list[np.ndarray]] = {"ids": [], "units": [], "times": [], "mask": [], "pooled": []}
        self._buf_bytes = 0
        self._flush_bytes = 32 << 20

    def add(
        self,
        video_id: str,
        unit_features: np.ndarray,
        unit_times_s: np.ndarray,
        unit_mask: np.ndarray | None,
        pooled: np.ndarray,
    ) -> None:
        if video_id in self._seen:
            raise VtpipeError(f"video id {video_id!r} written twice to {self.path}")
        feats = np.asarray(unit_features)
        if feats.ndim != 2 or feats.shape[1] != self.embed_dim:
            raise VtpipeError(f"{video_id}: unit features must be [U, {self.embed_dim}], got {feats.shape}")
        if not np.isfinite(feats).all() or not np.isfinite(pooled).all():
            raise VtpipeError(f"{video_id}: features contain NaN or Inf")
        u = len(feats)
        times = np.asarray(unit_times_s, dtype=np.float64).reshape(-1)
        mask = np.ones(u, dtype=bool) if unit_mask is None else np.asarray(unit_mask, dtype=bool).reshape(-1)
        if len(times) != u or len(mask) != u:
            raise VtpipeError(f"{video_id}: {u} units but {len(times)} times and {len(mask)} mask entries")
        self._seen.add(video_id)
        b = self._buf
        b["ids"].append(np.array([video_id], dtype=object))
        b["units"].append(feats.astype(self.dtype, copy=True))
        b["times"].append(times.copy())
        b["mask"].append(mask.copy())
        b["pooled"].append(np.asarray(pooled, dtype=self.dtype).reshape(1, self.embed_dim).copy())
        self._offsets.append(self._offsets[-1] + u)
        self._buf_bytes += feats.shape[0] * self.embed_dim * self.dtype.itemsize
        if self._buf_bytes >= self._flush_bytes:
            self.flush()
        fault_point("store_add")  # a store half written (an extract shard, or the concat merge)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def flush(self) -> None:
        """Append the buffered rows to the file."""
        b = self._buf
        if not b["ids"]:
            return
        for key, ds in (("ids", self._ids), ("units", self._units), ("times", self._times), ("mask", self._mask),
                        ("pooled", self._pooled)):
            _append(ds, np.concatenate(b[key]))
            b[key].clear()
        self._buf_bytes = 0

    def close(self) -> None:
        if self._f is None:
            return
        try:
            self.flush()
            self._f.create_dataset("offsets", data=np.asarray(self._offsets, dtype=np.int64))
            self._f.flush()  # a full disk fails here, where the file can still be abandoned safely
        except BaseException:
            self.abort()
            raise
        f, self._f = self._f, None
        f.close()

    def abort(self) -> None:
        """Close without finishing (after an error; the caller deletes the file)."""
        f, self._f = self._f, None
        if f is not None:
            abandon_h5(f)


def abandon_h5(f: h5py.File) -> None:
    """Close an HDF5 file that is being thrown away, even when its disk is full.

    HDF5 flushes on close; when that write fails (ENOSPC) the close fails half-way and the handle crashes
    the interpreter later (a segfault when it is garbage-collected). So the file's descriptor is first
    pointed at /dev/null: the final writes succeed into nothing and the close completes."""
    try:
        fd = f.id.get_vfd_handle()
        null = os.open(os.devnull, os.O_RDWR)
        try:
            os.dup2(null, fd)
        finally:
            os.close(null)
    except Exception:  # noqa: BLE001 - not the sec2 driver, or already closed: just close it
        pass
    try:
        f.close()
    except Exception:  # noqa: BLE001 - the error that doomed the file is the one to report
        pass


def write_text_store(
    path: str | os.PathLike,
    caption_ids: Sequence[str],
    video_ids: Sequence[str],
    captions: Sequence[str],
    pooled: np.ndarray,
    attrs: dict[str, Any],
    tokens: np.ndarray | None = None,
    token_mask: np.ndarray | None = None,
    dtype: str = "float32",
) -> None:
    """Write a whole text store (captions are small next to videos: one write)."""
    pooled = np.asarray(pooled)
    n = len(caption_ids)
    if not (len(video_ids) == len(captions) == pooled.shape[0] == n):
        raise VtpipeError(
            f"text store: {n} caption ids, {len(video_ids)} video ids, {len(captions)} captions, "
            f"{pooled.shape[0]} feature rows: they must all match"
        )
    if len(set(caption_ids)) != n:
        raise VtpipeError("text store: caption ids are not unique")
    if not np.isfinite(pooled).all():
        raise VtpipeError("text store: caption features contain NaN or Inf")
    f = h5py.File(path, "w", libver="latest")
    try:
        _attrs_in(f, {**attrs, "kind": "text", "embed_dim": int(pooled.shape[1]), "dtype": dtype})
        f.create_dataset("caption_ids", data=np.array(caption_ids, dtype=object), dtype=STR)
        f.create_dataset("video_ids", data=np.array(video_ids, dtype=object), dtype=STR)
        f.create_dataset("captions", data=np.array(captions, dtype=object), dtype=STR)
        f.create_dataset("pooled", data=pooled.astype(dtype))
        if tokens is not None:
            f.create_dataset("tokens", data=np.asarray(tokens).astype(dtype), chunks=True)
            f.create_dataset("token_mask", data=np.asarray(token_mask, dtype=bool))
        f.flush()  # a full disk fails here, where the file can still be abandoned safely
    except BaseException:
        abandon_h5(f)
        raise
    f.close()


# ---- reading ------------------------------------------------------------------------------------------
def _decode(arr: np.ndarray) -> list[str]:
    return [x.decode("utf-8") if isinstance(x, bytes) else str(x) for x in arr]


def read_attrs(f: h5py.File) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in f.attrs.items():
        if isinstance(v, bytes):
            v = v.decode()
        if isinstance(v, str) and v[:1] in "[{":
            try:
                v = json.loads(v)
            except json.JSONDecodeError:
                pass
        elif isinstance(v, np.generic):
            v = v.item()
        out[k] = v
    return out


@dataclass
class VideoFeatures:
    id: str
    unit_features: np.ndarray  # [U, D] float32
    unit_times_s: np.ndarray
    unit_mask: np.ndarray
    pooled: np.ndarray


class _StoreFile:
    """An open, read-only store file of a given kind ("video" or "text"), usable as a context manager."""

    kind = ""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise VtpipeError(f"{self.kind} feature store {self.path} does not exist (run `vtpipe concat` first?)")
        try:
            self._f = h5py.File(self.path, "r")
        except OSError as e:
            raise VtpipeError(f"{self.path} is not a readable HDF5 feature store: {e}") from e
        self.attrs = read_attrs(self._f)
        if self.attrs.get("kind") != self.kind:
            self._f.close()
            raise VtpipeError(f"{self.path} is a {self.attrs.get('kind')!r} store, not a {self.kind} feature store")

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._f.close()

    @property
    def embed_dim(self) -> int:
        return int(self.attrs["embed_dim"])


class VideoStore(_StoreFile):
    """Read a video feature store without loading it whole.

    >>> with VideoStore("features/clip-vit-b-32.h5") as s:
    ...     s.get("video7").unit_features      # one video: milliseconds, whatever N is
    ...     P = s.pooled()                      # [N, D] float32 in memory
    ...     for ids, block in s.iter_pooled(65536): ...
    """

    kind = "video"

    def __init__(self, path: str | os.PathLike):
        super().__init__(path)
        self.ids: list[str] = _decode(self._f["ids"][:])
        self.offsets: np.ndarray = self._f["offsets"][:]
        self._index: dict[str, int] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, video_id: str) -> bool:
        return video_id in self.index

    @property
    def index(self) -> dict[str, int]:
        if self._index is None:
            self._index = {v: i for i, v in enumerate(self.ids)}
        return self._index

    @property
    def model(self) -> str:
        return str(self.attrs.get("model", ""))

    def get(self, video_id: str) -> VideoFeatures:
        try:
            i = self.index[video_id]
        except KeyError:
            raise KeyError(f"video id {video_id!r} is not in {self.path}") from None
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return VideoFeatures(
            id=video_id,
            unit_features=self._f["unit_features"][a:b].astype(np.float32),
            unit_times_s=self._f["unit_times_s"][a:b],
            unit_mask=self._f["unit_mask"][a:b],
            pooled=self._f["pooled"][i].astype(np.float32),
        )

    def pooled(self, rows: slice | None = None) -> np.ndarray:
        """The [N, D] (or a row range of) video-level vectors as float32."""
        ds = self._f["pooled"]
        return np.asarray(ds[rows] if rows is not None else ds[:], dtype=np.float32)

    def iter_pooled(self, batch: int = 65536) -> Iterator[tuple[list[str], np.ndarray]]:
        for a in range(0, len(self), batch):
            b = min(a + batch, len(self))
            yield self.ids[a:b], self.pooled(slice(a, b))

    def iter_videos(self) -> Iterator[VideoFeatures]:
        for v in self.ids:
            yield self.get(v)

    def unit_features(self, rows: slice | None = None) -> np.ndarray:
        ds = self._f["unit_features"]
        return np.asarray(ds[rows] if rows is not None else ds[:], dtype=np.float32)

    def unit_mask(self, rows: slice | None = None) -> np.ndarray:
        """bool [U] (or a row range): False on padding units."""
        ds = self._f["unit_mask"]
        return ds[rows] if rows is not None else ds[:]

    def unit_table(self) -> tuple[np.ndarray, np.ndarray]:
        """For frame/clip-level indices: (video_index [U], unit_times_s [U]) for every unit row."""
        counts = np.diff(self.offsets)
        return np.repeat(np.arange(len(self.ids)), counts), self._f["unit_times_s"][:]


class TextStore(_StoreFile):
    """Read a caption feature store."""

    kind = "text"

    def __init__(self, path: str | os.PathLike):
        super().__init__(path)
        self.caption_ids = _decode(self._f["caption_ids"][:])
        self.video_ids = _decode(self._f["video_ids"][:])
        self.captions = _decode(self._f["captions"][:])

    def __len__(self) -> int:
        return len(self.caption_ids)

    def pooled(self) -> np.ndarray:
        return self._f["pooled"][:].astype(np.float32)

    @property
    def has_tokens(self) -> bool:
        return "tokens" in self._f

    def tokens(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.has_tokens:
            raise VtpipeError(f"{self.path} holds no token features (the model has none)")
        return self._f["tokens"][:].astype(np.float32), self._f["token_mask"][:]


def open_store(path: str | os.PathLike) -> VideoStore | TextStore:
    """Open a video or text store by what its attrs say it is."""
    with h5py.File(path, "r") as f:
        kind = f.attrs.get("kind")
    return TextStore(path) if kind == "text" else VideoStore(path)
