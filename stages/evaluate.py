"""Stage 5, evaluate: retrieval (t2v, v2t, with re-ranking) and action recognition (zero-shot, linear probe).

Tasks:
  retrieval     t2v and/or v2t from the video store and the caption store, blockwise and exact
                (stages.retrieval.evaluate_retrieval), optionally re-ranked (sk-norm / qb-norm with the query
                bank of training captions, dsl). Writes <eval_dir>/<t2v|v2t>/{metrics.json, metrics.md,
                ranks.csv, recall_at_k.png, rank_histogram.png}. The similarity (metrics.json "similarity"):
                "dp" = dot product of the L2-normalised pooled vectors, or, for DRL models (clip4clip family,
                params.interaction ti / wti; evaluate.similarity = auto), DRL's token-wise "ti" / "wti"
                between the caption's token features (text store) and the video's frame features (video
                store), see `token_sets` below.
  zeroshot      class-name prompts -> the model's text encoder; top-1/top-5 over each split's test videos.
  linear-probe  per-clip features of each video (the unit features in the store) -> LinearSVC, summed clip
                scores, mean top-1 over the dataset's splits (VT-TWINS / MIL-NCE protocol).
Every metrics.json records the conventions used (ties = a named convention of stages.retrieval.conventions and
its reference file, median, v2t gallery, re-ranker, its parameters and bank), tie diagnostics and warnings
(ground truths tied within the top K, captions whose video has no features, a requested re-ranker without its
bank); the v2t bank of sk-norm / qb-norm is a video store of training videos (extract task bank-videos).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from stages import __version__
from stages.contract.errors import ConfigError, VtpipeError
from stages.contract.layout import Layout
from stages.retrieval.report_table import metrics_table, ranks_frame
from stages.retrieval.diagnostics import missing_warning
from stages.features.store import TextStore, VideoStore
from stages.features.provenance import check_same_source, store_fingerprint, store_summary
from stages.contract.tasks import Result, Task, atomic_path, register_stage, write_json_atomic, write_text_atomic

STAGE = "evaluate"
# ignore: where the checkpoint is (its sha256, checkpoint_sha256, is hashed) and where the stores are read from
# (their fingerprints, sigs, are hashed) - a moved checkpoint or store is the same one
SPEC = register_stage(STAGE, version=1, neutral={"similarity": "auto", "candidates": "exact"}, ignore=("weights",))


def _checkpoint(cfg: dict) -> dict:
    from stages.features.provenance import checkpoint_sha256

    try:
        return checkpoint_sha256(cfg["model"]["name"], cfg["model"]["weights"])
    except ConfigError:  # a store of a model this vtpipe does not register: nothing to load, nothing to hash
        return {}
RETRIEVAL = ("t2v", "v2t")
ACTION = ("zeroshot", "linear-probe")
TASKS = RETRIEVAL + ACTION + ("crosstask",)
SIMILARITIES = ("auto", "dp", "ti", "wti", "ucofia")


def _sig(p: Path) -> str | None:
    """A store as the fingerprint sees it: its own fingerprint attribute (the same after a copy)."""
    return store_fingerprint(p)


def stores_used(p: dict, metrics_dir: str | Path | None = None) -> dict:
    """metrics.json "stores": every store the task read, by fingerprint and checkpoint sha256, and by path
    relative to the metrics file's folder (so a moved run still names its own stores)."""
    import os

    out = {}
    for key, name in (("features", "video"), ("text_features", "text"), ("bank_features", "bank")):
        if p.get(key) and Path(p[key]).is_file():
            out[name] = store_summary(p[key])
            out[name]["path"] = os.path.relpath(os.path.abspath(p[key]),
                                                os.path.abspath(metrics_dir or p["out_dir"]))
    return out


def _check_index(index_dir: str, video: dict) -> None:
    """--candidates faiss: the index must be built from this very store (its fingerprint), not another one."""
    import json

    try:
        infos = json.loads((Path(index_dir) / "index_infos.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # search() says what is wrong with the folder
    built, now = infos.get("features_fingerprint"), video.get("fingerprint")
    if built and now and built != now:
        raise VtpipeError(f"the index at {index_dir} was built from a store with fingerprint {built}, but "
                          f"{video['path']} has fingerprint {now}: rebuild the index (vtpipe index) for this store")


def _check_pair(video_path: str, text_path: str) -> None:
    """A video store and a caption store are evaluated together only when made by the same model and weights."""
    from stages.features.provenance import store_provenance

    check_same_source(store_provenance(video_path), store_provenance(text_path), f"video store {video_path}",
                      f"text store {text_path}")


def plan(cfg: dict, layout: Layout, features: Path | None = None, text_features: Path | None = None,
         bank_features: Path | None = None, bank_video_features: Path | None = None) -> list[Task]:
    model = cfg["model"]["name"]
    ev, ds = cfg["evaluate"], cfg["dataset"]
    unknown = [t for t in ev["tasks"] if t not in TASKS]
    if unknown:
        raise ConfigError(f"unknown evaluate task(s) {unknown}; choose from {list(TASKS)}")
    feats = Path(features or layout.features(model))
    eval_dir = layout.eval_dir(model)
    tasks = []
    directions = [t for t in ev["tasks"] if t in RETRIEVAL]
    if directions:
        text = Path(text_features or layout.text_features(model))
        bank = Path(bank_features or layout.bank_features(model))
        vbank = Path(bank_video_features or layout.bank_video_features(model))
        use_bank = ev["rerank"] in ("sk-norm", "qb-norm")
        use_vbank = use_bank and "v2t" in directions
        method = ev["rerank"].replace("-", "_")
        params = {
            "task": "retrieval",
            "directions": directions,
            "features": str(feats),
            "text_features": str(text),
            "bank_features": str(bank) if use_bank and "t2v" in directions else None,
            "bank_video_features": str(vbank) if use_vbank else None,
            # a bank that was asked for must exist; the default path is used when it does
            "bank_video_required": bool(bank_video_features) or bool(ds.get("train_videos")),
            "sigs": [_sig(feats), _sig(text), _sig(bank) if use_bank else None, _sig(vbank) if use_vbank else None],
            "missing": ev.get("missing", "drop"),
            "rerank": ev["rerank"],
            "rerank_params": dict(ev.get(method, {})) if ev["rerank"] != "none" else {},
            "ties": ev["ties"],
            "median": ev["median"],
            "ks": list(ev["ks"]),
            "v2t_gallery": ev["v2t_gallery"],
            "candidates": ev["candidates"],
            "candidates_k": int(ev["candidates_k"]),
            "index_dir": str(layout.index_dir(model)) if ev["candidates"] == "faiss" else None,
            "out_dir": str(eval_dir),
            "dataset": ds.get("name") or Path(str(ds["captions"] or "")).stem,
            # token-wise similarity (DRL TI / WTI): the model is loaded only where its heads are needed
            "similarity": ev.get("similarity", "auto"),
            "model": model,
            "weights": cfg["model"]["weights"],
            "checkpoint_sha256": _checkpoint(cfg),
            "allow_random": cfg["model"]["allow_random"],
            **({"allow_globals": list(cfg["model"]["allow_globals"])} if cfg["model"].get("allow_globals") else {}),
        }
        if params["similarity"] not in SIMILARITIES:
            raise ConfigError(f"evaluate.similarity must be one of {list(SIMILARITIES)}, got {params['similarity']!r}")
        tasks.append(Task(STAGE, "retrieval", str(eval_dir), params, root=str(layout.root)))
    for name in (t for t in ev["tasks"] if t in ACTION):
        if ds["kind"] != "action" or not ds["splits_dir"]:
            raise ConfigError(f"evaluate task {name!r} needs an action dataset: set dataset.preset (ucf101, hmdb51) "
                              "and dataset.root, or dataset.kind=action, dataset.name and dataset.splits_dir")
        params = {
            "task": name,
            "features": str(feats),
            "sigs": [_sig(feats)],
            "dataset": ds["name"],
            "splits_dir": ds["splits_dir"],
            "splits": list(ds["splits"]),
            "layout": ds["layout"],
            "out_dir": str(eval_dir / name),
        }
        if name == "zeroshot":
            params.update({"model": model, "weights": cfg["model"]["weights"], "checkpoint_sha256": _checkpoint(cfg),
                           "allow_random": cfg["model"]["allow_random"],
                           "prompt_template": ds["prompt_template"]})
        else:
            params["C"] = float(ev["linear_probe"]["C"])
        tasks.append(Task(STAGE, name, str(eval_dir), params, root=str(layout.root)))
    if "crosstask" in ev["tasks"]:
        if not ds["captions"] or ds["format"] != "crosstask" or not cfg["extract"]["segments"]:
            raise ConfigError("evaluate task 'crosstask' needs dataset.format=crosstask with dataset.captions "
                              "(tasks_primary.txt) and extract.segments=true (one clip per annotated segment); "
                              "see configs/pipelines/crosstask-vt-twins.yaml")
        text = Path(text_features or layout.text_features(model))
        params = {"task": "crosstask", "features": str(feats), "text_features": str(text),
                  "sigs": [_sig(feats), _sig(text)], "captions": ds["captions"], "options": dict(ds["options"]),
                  "out_dir": str(eval_dir / "crosstask")}
        tasks.append(Task(STAGE, "crosstask", str(eval_dir), params, root=str(layout.root)))
    return tasks


def run_task(task: Task) -> Result:
    name = task.params["task"]
    if name == "retrieval":
        return _run_retrieval(task)
    if name == "zeroshot":
        return _run_zeroshot(task)
    if name == "crosstask":
        return _run_crosstask(task)
    return _run_linear_probe(task)


def _run_crosstask(task: Task) -> Result:
    """VT-TWINS CrossTask segment accuracy: per task, is each segment's clip closest to its own step's text
    among the task's steps? Segment clips and step texts are the extract stage's segment items and captions."""
    from stages.recognition.segment_accuracy import crosstask_vt_twins
    from stages.datasets.captions import read_captions

    p = task.params
    t0 = time.perf_counter()
    df = read_captions("crosstask", p["captions"], **p["options"])
    _check_pair(p["features"], p["text_features"])
    with VideoStore(p["features"]) as vs, TextStore(p["text_features"]) as ts:
        if vs.model != ts.attrs.get("model"):
            raise VtpipeError(f"video store is from model {vs.model!r} but text store from {ts.attrs.get('model')!r}")
        vrow, trow = vs.index, {c: i for i, c in enumerate(ts.caption_ids)}
        keep = [c in vrow and c in trow for c in df["caption_id"]]
        seg = df[keep]
        if seg.empty:
            raise VtpipeError("no CrossTask segment has both clip and step-text features: was extract run with "
                              "extract.segments=true on these annotations?")
        v = vs.pooled()[[vrow[c] for c in seg["caption_id"]]]
        t = ts.pooled()[[trow[c] for c in seg["caption_id"]]]
        model = vs.model
    res = crosstask_vt_twins(v, t, seg["task"].tolist(), seg["step"].tolist())
    m = {"task": "crosstask", "model": model, "stores": stores_used(p), "vtpipe_version": __version__,
         "metric": res["metric"], "ctr": res["ctr"], "per_task": res["per_task"],
         "n_segments": res["n_segments"], "n_tasks": res["n_tasks"], "segments_missing": int(len(df) - len(seg))}
    write_json_atomic(Path(p["out_dir"]) / "metrics.json", m)
    return Result(task.id, outputs={"metrics": str(Path(p["out_dir"]) / "metrics.json")}, info={"ctr": m["ctr"]},
                  seconds=time.perf_counter() - t0)


# ---- retrieval -----------------------------------------------------------------------------------------
def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def check_finite(x: np.ndarray, ids, what: str) -> None:
    bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if len(bad):
        raise VtpipeError(f"{what} features contain NaN or Inf in {len(bad)} row(s) (e.g. id {ids[bad[0]]!r}); "
                          "re-extract them")


def load_pairs(features: str, text_features: str) -> dict:
    """Normalised video and caption vectors, and the caption -> video map restricted to extracted videos."""
    with VideoStore(features) as vs, TextStore(text_features) as ts:
        if vs.model != ts.attrs.get("model"):
            raise VtpipeError(f"video store is from model {vs.model!r} but text store from {ts.attrs.get('model')!r}")
        if vs.embed_dim != ts.embed_dim:
            raise VtpipeError(f"video features are {vs.embed_dim}-d but text features {ts.embed_dim}-d")
        vraw, craw = vs.pooled(), ts.pooled()
        for what, x, ids in (("video", vraw, vs.ids), ("text", craw, ts.caption_ids)):
            check_finite(x, ids, what)
        videos = _normalise(vraw)
        captions = _normalise(craw)
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


def _load_bank(path: str | None, model: str, dim: int) -> np.ndarray | None:
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


def _run_retrieval(task: Task) -> Result:
    from stages.retrieval import evaluate_retrieval

    p = task.params
    t0 = time.perf_counter()
    _check_pair(p["features"], p["text_features"])
    if p.get("bank_features") and Path(p["bank_features"]).is_file():
        _check_pair(p["features"], p["bank_features"])
    if p.get("candidates") == "faiss" and p.get("index_dir"):
        _check_index(p["index_dir"], store_summary(p["features"]))
    data = load_pairs(p["features"], p["text_features"])
    if len(data["cap_video"]) == 0:
        raise VtpipeError("no caption has an extracted video: nothing to evaluate")
    rp = p["rerank_params"]
    # v2t needs every gallery video to have a caption: restrict the gallery to videos with captions
    present = np.unique(data["cap_video"])
    videos = data["videos"][present]
    cap_to_row = np.searchsorted(present, data["cap_video"])
    kwargs = {k: rp[k] for k in ("scale", "n_iters", "temperature", "beta", "k") if k in rp}
    kwargs.update({f"sk_{k}": rp[k] for k in ("kernel", "max_error") if k in rp})
    video_ids = [data["video_ids"][i] for i in present]
    use_index = p.get("candidates") == "faiss" and "t2v" in p["directions"]
    exact_dirs = tuple(d for d in p["directions"] if not (use_index and d == "t2v"))
    mode, info = similarity_mode(data["model"], p.get("similarity", "auto"))
    sim_info: dict = {}
    vbank = None
    if mode == "dp":
        text_q, video_g, score_fn = data["captions"], videos, None
        bank = _load_bank(p["bank_features"], data["model"], data["videos"].shape[1])
        vpath = p.get("bank_video_features")
        if vpath and not p.get("bank_video_required") and not Path(vpath).is_file():
            vpath = None  # no training videos configured: v2t is evaluated without re-ranking and says so
        vbank = load_video_bank(vpath, data["model"], data["videos"].shape[1])
    elif mode == "ucofia":  # three levels, SK-norm per level inside (stages/retrieval/ucofia_scorer.py)
        if use_index:
            raise ConfigError("--candidates faiss cannot rank by UCoFiA's three-level similarity: use exact candidates")
        from stages.retrieval.ucofia_scorer import ucofia_scorer

        scorer, sim_info = ucofia_scorer(p, data, present)
        text_q, video_g, score_fn, bank = scorer.ids(scorer.TEXT), scorer.ids(scorer.VIDEO), scorer, None
    else:
        if use_index:
            raise ConfigError(f"--candidates faiss ranks by the index's dot products; the store's model {data['model']!r} "
                              f"is evaluated with DRL {mode.upper()} similarity: use exact candidates (or "
                              "evaluate.similarity=dp)")
        scorer, sim_info = token_sets(p, data, present, mode, info)
        text_q, video_g, score_fn = scorer.ids(TEXT), scorer.ids(VIDEO), scorer
        bank = scorer.ids(BANK) if BANK in scorer.sides else None
    res: dict = {"ranks": {}, "counts": {}}
    n_miss_caps = len(data["captions_missing_video"])
    misses = {"t2v": n_miss_caps, "v2t": len(data["missing_videos"])} if p.get("missing") == "miss" else {}
    if exact_dirs:
        res = evaluate_retrieval(
            text_q, video_g, cap_to_row, rerank="none" if mode == "ucofia" else p["rerank"], directions=exact_dirs,
            ties=p["ties"], median=p["median"], ks=tuple(p["ks"]), v2t_gallery=p["v2t_gallery"],
            bank_text_feats=bank, bank_video_feats=vbank, score_fn=score_fn, misses=misses, return_ranks=True,
            **kwargs,
        )
    if use_index:
        if p["rerank"] != "none":
            raise ConfigError("--candidates faiss ranks by the index's own scores: it cannot be combined with re-ranking")
        res["t2v"], res["ranks"]["t2v"] = t2v_from_index(p["index_dir"], data, [video_ids[i] for i in cap_to_row],
                                                         p["candidates_k"], p["ks"],
                                                         "numpy" if p["median"] == "auto" else p["median"])
    outputs, info_out = {}, {}
    for d in p["directions"]:
        m = dict(res[d])
        m.update({
            "task": d, "model": data["model"], "dataset": p["dataset"], "rerank_params": rp if m.get("rerank") != "none" else {},
            "videos": len(video_ids), "captions": len(data["caption_ids"]), "videos_missing": data["missing_videos"],
            "captions_missing_video": n_miss_caps, "missing_policy": p.get("missing", "drop"),
            "videos_without_captions": len(data["video_ids"]) - len(video_ids), "random_weights": data["random_weights"],
            "similarity": mode,
            "stores": stores_used(p, Path(p["out_dir"]) / d), "vtpipe_version": __version__,
        })
        m.setdefault("v2t_gallery", p["v2t_gallery"] if d == "v2t" else None)
        miss_warn = missing_warning(len(data["missing_videos"]), n_miss_caps, p.get("missing", "drop"), len(video_ids))
        m["warnings"] = ([miss_warn] if miss_warn else []) + list(m.get("warnings", []))
        if sim_info:
            m["similarity_info"] = sim_info
        if mode == "ucofia":
            m["rerank"] = p["rerank"]  # applied per level before the average (similarity_info.sk_norm)
        m.setdefault("rerank", p["rerank"])
        out = Path(p["out_dir"]) / d
        ranks = np.asarray(res["ranks"][d])
        write_json_atomic(out / "metrics.json", m)
        write_text_atomic(out / "metrics.md", metrics_table([m], p["ks"]))
        queries = data["caption_ids"] if d == "t2v" else video_ids
        truth = [video_ids[i] for i in cap_to_row] if d == "t2v" else ["(its captions)"] * len(video_ids)
        with atomic_path(out / "ranks.csv") as tmp:
            ranks_frame(queries, truth, ranks, res["counts"].get(d), misses.get(d, 0)).to_csv(
                tmp, index=False, float_format="%g")
        write_plots(ranks, out, f"{data['model']} {d}")
        outputs[d] = str(out / "metrics.json")
        info_out[d] = {k: m[k] for k in m if k.startswith("R@")}
    return Result(task.id, outputs=outputs, counts={"captions": len(data["caption_ids"]), "videos": len(video_ids)},
                  info=info_out, seconds=time.perf_counter() - t0)


# ---- DRL token-wise similarity ---------------------------------------------------------------------------
TEXT, VIDEO, BANK = 0, 1, 2
TOKEN_MODES = ("ti", "wti")


def similarity_mode(model: str, requested: str = "auto"):
    """("dp" | "ti" | "wti", ModelInfo or None) for the store's model.

    auto: the model's own interaction - "ti" / "wti" for clip4clip-family models whose params.interaction
    says so (drl-ti, drl-wti), "dp" otherwise (and for model names the registry does not know). An explicit
    "ti" needs a registered model whose stores hold token features; "wti" needs WTI weight heads."""
    from stages.backbones.registry import model_config

    if requested not in SIMILARITIES:
        raise ConfigError(f"evaluate.similarity must be one of {list(SIMILARITIES)}, got {requested!r}")
    if requested == "dp":
        return "dp", None
    try:
        info = model_config(model)
    except ConfigError:
        if requested == "auto":
            return "dp", None
        raise
    if info.family == "ucofia" or requested == "ucofia":  # UCoFiA's own three-level similarity
        if info.family != "ucofia" or requested not in ("auto", "ucofia"):
            raise ConfigError(f"evaluate.similarity={requested} does not apply to {model!r} (family {info.family!r}); "
                              "ucofia features are scored with ucofia (or dp), and ucofia only scores them")
        return "ucofia", info
    interaction = str(info.params.get("interaction", "dp")) if info.family == "clip4clip" else "dp"
    if requested == "auto":
        return (interaction if interaction in TOKEN_MODES else "dp"), info
    if requested == "wti" and interaction != "wti":
        raise ConfigError(f"evaluate.similarity=wti needs a model with DRL weight heads (params.interaction: wti); "
                          f"{model!r} has interaction {interaction!r}")
    return requested, info


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


def t2v_from_index(index_dir: str, data: dict, truth: list[str], k: int, ks, median: str) -> tuple[dict, np.ndarray]:
    """t2v ranks from the top-k candidates of a FAISS index (million-video galleries).

    A caption whose video is among its k candidates gets rank = number of candidates scoring strictly
    higher (optimistic ties); otherwise its rank is only known to be >= k and is recorded as k. So R@K is
    exact for K <= k (relative to the index: exact with a Flat index), MdR is exact while it is below k, and
    MnR is a lower bound (reported as MnR_lower_bound)."""
    from stages.ann.io import search
    from stages.retrieval import retrieval_metrics

    scores, hits = search(index_dir, data["captions"], k, model=data["model"])
    ranks = np.full(len(truth), float(k))
    for q, (row, ids) in enumerate(zip(scores, hits)):
        for j, hit in enumerate(ids):
            if hit == truth[q]:
                ranks[q] = float(np.sum(row[:j] > row[j]))
                break
    m = retrieval_metrics(ranks, ks=tuple(x for x in ks if x <= k), median=median, ties="optimistic")
    m["MnR_lower_bound"] = m.pop("MnR")
    m.pop("StdR", None)
    m["censored_queries"] = int(np.sum(ranks >= k))
    if m["MdR"] > k:
        m["MdR"] = None
    m.update({"rerank": "none", "candidates": "faiss", "candidates_k": k, "index_dir": index_dir})
    return m, ranks


def write_plots(ranks: np.ndarray, out: Path, title: str) -> None:
    """recall_at_k.png (R@K for K = 1..max) and rank_histogram.png (1-based ranks, log-spaced bins)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = np.asarray(ranks, dtype=np.float64) + 1
    ks = np.unique(np.clip(np.round(np.logspace(0, np.log10(max(2.0, r.max())), 60)), 1, None))
    recall = [100.0 * np.mean(r <= k) for k in ks]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(ks, recall, marker=".")
    ax.set(xscale="log", xlabel="K", ylabel="R@K (%)", ylim=(0, 101), title=f"{title}: recall@K")
    ax.grid(alpha=0.3)
    with atomic_path(out / "recall_at_k.png", suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    bins = np.unique(np.round(np.logspace(0, np.log10(max(2.0, r.max() + 1)), 30)))
    ax.hist(r, bins=bins)
    ax.set(xscale="log", xlabel="rank of the ground truth (1 = first)", ylabel="queries", title=f"{title}: ranks")
    with atomic_path(out / "rank_histogram.png", suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)


# ---- action recognition --------------------------------------------------------------------------------
def _splits(p: dict):
    from stages.datasets.actions import read_action_split

    for split in p["splits"]:
        yield split, read_action_split(p["dataset"], p["splits_dir"], split, layout=p["layout"])


def _run_zeroshot(task: Task) -> Result:
    from stages.backbones.registry import load_model
    from stages.recognition.action import prompt_classnames, zeroshot_accuracy

    p = task.params
    t0 = time.perf_counter()
    model = load_model(p["model"], weights=p["weights"], allow_random=p["allow_random"])
    per_split, missing = [], set()
    with VideoStore(p["features"]) as store:
        index = store.index
        pooled = store.pooled()
        for split, (_train, test, classes) in _splits(p):
            text = model.encode_text(prompt_classnames(classes, p["prompt_template"])).pooled
            rows = [index.get(v, -1) for v in test["video_id"]]
            missing |= {v for v, r in zip(test["video_id"], rows) if r < 0}
            keep = np.array([r >= 0 for r in rows])
            if not keep.any():
                raise VtpipeError(f"split {split}: none of the {len(test)} test videos is in {p['features']}")
            acc = zeroshot_accuracy(pooled[[r for r in rows if r >= 0]], text, test["label"].to_numpy()[keep])
            per_split.append({"split": split, "top1": acc["top1"], "top5": acc.get("top5"), "videos": int(keep.sum())})
    m = {"task": "zeroshot", "model": p["model"], "stores": stores_used(p), "vtpipe_version": __version__,
         "dataset": p["dataset"], "prompt_template": p["prompt_template"],
         "per_split": per_split, "top1": float(np.mean([s["top1"] for s in per_split])),
         "top5": float(np.mean([s["top5"] for s in per_split if s["top5"] is not None] or [np.nan])),
         "videos_missing": sorted(missing), "random_weights": bool(getattr(model, "random_weights", False))}
    write_json_atomic(Path(p["out_dir"]) / "metrics.json", m)
    return Result(task.id, outputs={"metrics": str(Path(p["out_dir"]) / "metrics.json")},
                  info={"top1": m["top1"]}, seconds=time.perf_counter() - t0)


def _run_linear_probe(task: Task) -> Result:
    from stages.recognition.action import linear_probe_splits

    p = task.params
    t0 = time.perf_counter()
    splits, missing = [], set()
    with VideoStore(p["features"]) as store:
        index = store.index

        def clips(ids) -> tuple[np.ndarray, np.ndarray]:
            rows = [index.get(v, -1) for v in ids]
            missing.update(v for v, r in zip(ids, rows) if r < 0)
            got = [store.get(ids[i]).unit_features for i, r in enumerate(rows) if r >= 0]
            if got and len({g.shape[0] for g in got}) != 1:
                raise VtpipeError("linear probe needs the same number of clips per video (use a fixed-count "
                                  "sampling policy such as milnce-ucf)")
            return (np.stack(got) if got else np.zeros((0, 1, store.embed_dim), np.float32)), np.array([r >= 0 for r in rows])

        for split, (train, test, _classes) in _splits(p):
            xtr, ktr = clips(list(train["video_id"]))
            xte, kte = clips(list(test["video_id"]))
            if len(xtr) == 0 or len(xte) == 0:
                raise VtpipeError(f"split {split}: no training or no test video has features in {p['features']}")
            splits.append((xtr, train["label"].to_numpy()[ktr], xte, test["label"].to_numpy()[kte]))
    res = linear_probe_splits(splits, C=p["C"])
    m = {"task": "linear-probe", "stores": stores_used(p), "vtpipe_version": __version__,
         "dataset": p["dataset"], "splits": p["splits"], "C": p["C"],
         **{k: v for k, v in res.items() if not isinstance(v, np.ndarray)}, "videos_missing": sorted(missing)}
    write_json_atomic(Path(p["out_dir"]) / "metrics.json", m)
    return Result(task.id, outputs={"metrics": str(Path(p["out_dir"]) / "metrics.json")},
                  info={"top1": m.get("top1")}, seconds=time.perf_counter() - t0)
