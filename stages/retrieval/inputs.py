"""The evaluate stage's retrieval inputs, read from feature stores: normalised video and caption vectors, the
caption -> video map restricted to extracted videos, and the re-rankers' query banks (checked: finite, same
model, same width)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stages.contract.errors import VtpipeError
from stages.features.store import TextStore, VideoStore


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def check_finite(x: np.ndarray, ids, what: str) -> None:
    bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if len(bad):
        raise VtpipeError(f"{what} features contain NaN or Inf in {len(bad)} row(s) (e.g. id {ids[bad[0]]!r}); "
                          "re-extract them")


def load_pairs(features: str, text_features: str, normalise: bool = True) -> dict:
    """Normalised (or, normalise=False, as stored) video and caption vectors, and the caption -> video map
    restricted to extracted videos."""
    with VideoStore(features) as vs, TextStore(text_features) as ts:
        if vs.model != ts.attrs.get("model"):
            raise VtpipeError(f"video store is from model {vs.model!r} but text store from {ts.attrs.get('model')!r}")
        if vs.embed_dim != ts.embed_dim:
            raise VtpipeError(f"video features are {vs.embed_dim}-d but text features {ts.embed_dim}-d")
        vraw, craw = vs.pooled(), ts.pooled()
        for what, x, ids in (("video", vraw, vs.ids), ("text", craw, ts.caption_ids)):
            check_finite(x, ids, what)
        videos = _normalise(vraw) if normalise else vraw
        captions = _normalise(craw) if normalise else craw
        vindex = vs.index
        cap_video = np.array([vindex.get(v, -1) for v in ts.video_ids], dtype=np.int64)
        missing = sorted({v for v, i in zip(ts.video_ids, cap_video) if i < 0})
        keep = cap_video >= 0
        return {
            "video_ids": list(vs.ids),
            "videos": videos,
            "caption_rows": np.flatnonzero(keep),
            "caption_ids": [c for c, k in zip(ts.caption_ids, keep) if k],
            "captions": captions[keep],
            "cap_video": cap_video[keep],
            "missing_videos": missing,
            "captions_missing_video": [c for c, k in zip(ts.caption_ids, keep) if not k],
            "random_weights": bool(vs.attrs.get("random_weights")) or bool(ts.attrs.get("random_weights")),
            "model": vs.model,
        }


def load_text_bank(path: str | None, model: str, dim: int) -> np.ndarray | None:
    """Query-bank caption features (the t2v bank for SK-norm / QB-Norm), normalised; None if not given.

    load_video_bank below has the same shape on purpose: the two read different stores (TextStore: model in
    attrs, caption ids; VideoStore: .model, video ids) and name different config keys in their errors, so a
    shared helper would take as many parameters as it saves lines."""
    if not path:
        return None
    if not Path(path).is_file():
        raise VtpipeError(f"re-ranking needs the query bank {path}: set dataset.train_captions (the training "
                          "captions) so that extract encodes it, or pass --bank-text-features")
    with TextStore(path) as bank:
        if bank.attrs.get("model") != model or bank.embed_dim != dim:
            raise VtpipeError(f"query bank {path} is from model {bank.attrs.get('model')!r} ({bank.embed_dim}-d), "
                              f"not {model!r} ({dim}-d)")
        x = bank.pooled()
        check_finite(x, bank.caption_ids, "query bank")
        return _normalise(x)


def load_video_bank(path: str | None, model: str, dim: int) -> np.ndarray | None:
    """Training-video pooled features (the v2t bank for SK-norm / QB-Norm), normalised; None if not given."""
    if not path:
        return None
    if not Path(path).is_file():
        raise VtpipeError(f"v2t re-ranking needs the video bank {path} (training-split video features): set "
                          "dataset.train_videos so that extract encodes it, or pass --bank-video-features")
    with VideoStore(path) as vb:
        if vb.model != model or vb.embed_dim != dim:
            raise VtpipeError(f"video bank {path} is from model {vb.model!r} ({vb.embed_dim}-d), not {model!r} ({dim}-d)")
        x = vb.pooled()
        check_finite(x, vb.ids, "video bank")
        return _normalise(x)
