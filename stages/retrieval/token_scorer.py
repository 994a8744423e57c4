"""DRL token-wise similarity (TI / WTI) from feature stores: the TokenScorer over the test captions, the test
videos and the query bank that the evaluate stage ranks with (the similarity itself is in
stages.retrieval.similarity)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stages.contract.errors import ConfigError, VtpipeError
from stages.features.store import TextStore, VideoStore

TEXT, VIDEO, BANK = 0, 1, 2  # the TokenScorer's sides


def _video_frames(features: str, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stored unit features of the videos at store rows `rows`, padded to a common count: frames [V, U, D]
    float32 (zeros on padding), mask [V, U] (the store's unit_mask, False on padding), pooled [V, D]."""
    with VideoStore(features) as vs:
        off = vs.offsets
        counts = (off[rows + 1] - off[rows]).astype(np.int64)
        u = int(counts.max()) if len(rows) else 1
        frames = np.zeros((len(rows), u, vs.embed_dim), np.float32)
        mask = np.zeros((len(rows), u), bool)
        feats = vs.unit_features()
        umask = vs.unit_mask()
        for k, (r, n) in enumerate(zip(rows, counts)):
            a = int(off[r])
            frames[k, :n] = feats[a:a + n]
            mask[k, :n] = umask[a:a + n]
        pooled = vs.pooled()[rows]
    return frames, mask, pooled



def token_sets(p: dict, data: dict, present: np.ndarray, mode: str, info):
    """The TokenScorer (test texts, test videos, and the query bank when a re-ranker uses one) for DRL TI/WTI.

    * Text side: the text store's token features (``ln_final(x) @ text_projection`` at every position,
      SOT..EOT real) and mask; WTI weights = softmax over real tokens of text_weight_fc(raw token).
    * Video side: the store holds the *raw* per-frame CLIP features (encode_units) and a pooled vector
      (meanP over the aggregated frames). DRL's frame tokens are the frames after the model's temporal
      module, so for sim_header=seqTransf the stored frames go through ``model.aggregate_frames_batch``
      (each video with its own unit mask; padded units masked as attention keys) - this needs the
      checkpoint even for TI; for meanP they are used as stored. WTI weights = softmax over real frames of
      video_weight_fc(aggregated frame). As a consistency check the pooled vector is recomputed from the
      aggregated frames (meanP) and compared with the stored one (min cosine recorded; a clear mismatch,
      e.g. a different checkpoint than at extraction, raises).
    * Padding: as DRL, captions count as padded to max(L, params.max_words) tokens and videos to
      max(U, sampling.max_frames) frames (see stages.retrieval.similarity).
    """
    from stages.retrieval.similarity import TokenScorer, TokenSets

    params = info.params
    seq = info.family == "clip4clip" and str(params.get("sim_header", "meanP")) == "seqTransf"
    need_model = mode == "wti" or seq
    model = None
    if need_model:
        from stages.backbones.registry import load_model

        if p.get("model") not in (None, data["model"]) and p.get("weights"):
            raise ConfigError(f"the weights given are for model {p['model']!r}, but the features are from "
                              f"{data['model']!r}: DRL {mode.upper()} needs that model's checkpoint")
        model = load_model(data["model"], weights=p.get("weights"),
                           allow_random=bool(p.get("allow_random")) or data["random_weights"],
                           allow_globals=p.get("allow_globals", ()))
        if mode == "wti" and not model.has_weight_heads:
            raise VtpipeError(f"model {data['model']!r} has no WTI weight heads")
    # text side
    with TextStore(p["text_features"]) as ts:
        if not ts.has_tokens:
            raise VtpipeError(f"{p['text_features']} holds no token features: DRL {mode.upper()} needs them "
                              "(re-extract the captions with this model)")
        tokens, tmask = ts.tokens()
    rows = data["caption_rows"]
    tokens, tmask = tokens[rows], tmask[rows].astype(bool)
    t_pad = max(tokens.shape[1], int(params.get("max_words", 0) or 0))
    tw = _batched(model.text_token_weights, tokens, tmask) if mode == "wti" else None
    sides = {TEXT: TokenSets(tokens, tmask, tw, padded_len=t_pad, name="captions")}
    del tokens
    # video side
    store_rows = np.asarray(present, np.int64)
    frames, vmask, pooled = _video_frames(p["features"], store_rows)
    if seq:
        frames = _batched(model.aggregate_frames_batch, frames, vmask)
        frames[~vmask] = 0.0
    # the store's pooled vector is meanP over these frames for the clip / clip4clip families
    check = _pooled_check(frames, vmask, pooled) if info.family in ("clip", "clip4clip") else None
    if check is not None and check < 0.99:
        raise VtpipeError(f"the frame features rebuilt for DRL {mode.upper()} do not reproduce the store's pooled "
                          f"vectors (min cosine {check:.4f}): evaluate with the checkpoint the features were "
                          "extracted with")
    v_pad = max(frames.shape[1], int((info.sampling or {}).get("max_frames", 0) or 0))
    vw = _batched(model.video_frame_weights, frames, vmask) if mode == "wti" else None
    sides[VIDEO] = TokenSets(frames, vmask, vw, padded_len=v_pad, name="videos")
    del frames
    # query bank (sk-norm / qb-norm)
    if p.get("bank_features"):
        path = p["bank_features"]
        if not Path(path).is_file():
            raise VtpipeError(f"re-ranking needs the query bank {path}: set dataset.train_captions (the training "
                              "captions) so that extract encodes it, or pass --bank-text-features")
        with TextStore(path) as bs:
            if bs.attrs.get("model") != data["model"]:
                raise VtpipeError(f"query bank {path} is from model {bs.attrs.get('model')!r}, not {data['model']!r}")
            if not bs.has_tokens:
                raise VtpipeError(f"query bank {path} holds no token features: DRL {mode.upper()} re-ranking needs them")
            btok, bmask = bs.tokens()
        bmask = bmask.astype(bool)
        bw = _batched(model.text_token_weights, btok, bmask) if mode == "wti" else None
        sides[BANK] = TokenSets(btok, bmask, bw, padded_len=max(btok.shape[1], t_pad), name="query bank")
    sim_info = {
        "frames": "seqTransf-aggregated" if seq else "stored",
        "weights": "model heads" if mode == "wti" else "uniform",
        "model_loaded": model is not None,
        "text_padded_len": t_pad,
        "video_padded_len": v_pad,
        "pooled_check_min_cosine": None if check is None else round(float(check), 6),
    }
    return TokenScorer(sides), sim_info


def _batched(fn, x: np.ndarray, mask: np.ndarray, batch: int = 512) -> np.ndarray:
    """fn(x, mask) over batches of items (the model's heads / temporal module), float32."""
    return np.concatenate([np.asarray(fn(x[a:a + batch], mask[a:a + batch]), dtype=np.float32)
                           for a in range(0, max(1, len(x)), batch)])


def _pooled_check(frames: np.ndarray, mask: np.ndarray, pooled: np.ndarray) -> float:
    """min over videos of cos(meanP(frames[mask]), stored pooled) (meanP: normalise, mean, normalise)."""
    if len(frames) == 0:
        return 1.0
    f = frames / np.maximum(np.linalg.norm(frames, axis=-1, keepdims=True), 1e-12)
    v = (f * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1)
    v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    pn = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
    return float(np.min(np.sum(v * pn, axis=1)))
