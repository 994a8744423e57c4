"""The evaluate stage's UCoFiA path: read the stores, load the model's alignment head, score the three
levels, SK-norm each with its own bias from the query bank (training captions), average (see
stages.retrieval.ucofia_similarity). Returns a MatrixScorer for the blockwise rank functions."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stages.contract.errors import ConfigError, VtpipeError
from stages.retrieval.ucofia_similarity import LEVELS, MatrixScorer, ucofia_levels, ucofia_scores
from stages.features.store import TextStore, VideoStore


def _texts(path: str, rows: np.ndarray | None, what: str) -> tuple[np.ndarray, np.ndarray]:
    with TextStore(path) as ts:
        if not ts.has_tokens:
            raise VtpipeError(f"{path} holds no word features: UCoFiA's patch-word level needs them "
                              f"(re-extract the {what} with the ucofia model)")
        sent = ts.pooled()
        words, _ = ts.tokens()
    if rows is not None:
        sent, words = sent[rows], words[rows]
    return sent, words


def _videos(path: str, rows: np.ndarray, max_frames: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pooled [V, D], frames [V, F, D], selected tokens [V, 4F, D]) of the videos at store rows `rows`."""
    with VideoStore(path) as vs:
        off = vs.offsets
        feats = vs.unit_features()
        per = off[rows + 1] - off[rows]
        if len(rows) and (per != 5 * max_frames).any():
            raise VtpipeError(f"{path}: a UCoFiA video has {5 * max_frames} feature rows (frames + selected tokens); "
                              f"found {sorted(set(per.tolist()))[:5]}: were these features extracted with ucofia?")
        stacked = np.stack([feats[int(off[r]):int(off[r + 1])] for r in rows]) if len(rows) else \
            np.zeros((0, 5 * max_frames, vs.embed_dim), np.float32)
        pooled = vs.pooled()[rows]
    pooled = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
    return pooled, stacked[:, :max_frames], stacked[:, max_frames:]


def ucofia_scorer(p: dict, data: dict, present: np.ndarray) -> tuple[MatrixScorer, dict]:
    from stages.backbones.registry import load_model

    if p["rerank"] not in ("none", "sk-norm"):
        raise ConfigError(f"evaluate.similarity=ucofia applies SK-norm per level itself (rerank sk-norm) or none; "
                          f"rerank {p['rerank']!r} is not defined for it")
    if p.get("model") not in (None, data["model"]) and p.get("weights"):
        raise ConfigError(f"the weights given are for model {p['model']!r}, but the features are from {data['model']!r}")
    model = load_model(data["model"], weights=p.get("weights"),
                       allow_random=bool(p.get("allow_random")) or data["random_weights"],
                       allow_globals=p.get("allow_globals", ()))
    if not hasattr(model, "head"):
        raise ConfigError(f"evaluate.similarity=ucofia needs a ucofia-family model; {data['model']!r} is "
                          f"{model.info.family!r}")
    head = model.head()
    sent, words = _texts(p["text_features"], data["caption_rows"], "captions")
    video, frames, pixels = _videos(p["features"], np.asarray(present, np.int64), model.max_frames)
    test = ucofia_levels(sent, words, video, frames, pixels, head)
    bank = None
    n_iters = int(p.get("rerank_params", {}).get("n_iters", 4))
    if p["rerank"] == "sk-norm":
        path = p.get("bank_features")
        if not path or not Path(path).is_file():
            raise VtpipeError(f"SK-norm needs the query bank {path}: set dataset.train_captions so that extract "
                              "encodes the training captions")
        with TextStore(path) as bs:
            if bs.attrs.get("model") != data["model"]:
                raise VtpipeError(f"query bank {path} is from model {bs.attrs.get('model')!r}, not {data['model']!r}")
        bsent, bwords = _texts(path, None, "query bank")
        bank = ucofia_levels(bsent, bwords, video, frames, pixels, head)
    res = ucofia_scores(test, bank, n_iters)
    info = {"levels": list(LEVELS), "logit_scale": float(head["logit_scale"]),
            "sk_norm": ("per level, bias from the query bank's scores of that level (UCoFiA's sinkhorn_knopp, "
                        f"{n_iters} iterations), then the mean of the levels") if bank is not None else None,
            "bank_captions": None if bank is None else int(bank.shape[1]),
            "model_loaded": True,
            "v2t": "the same (biased, averaged) matrix transposed, as eval_t2v's video-to-text metrics"}
    return MatrixScorer(res["scores"]), info
