"""Stage 5, evaluate: retrieval (t2v, v2t, with re-ranking) and recognition (zero-shot, linear probe, CrossTask).

plan() makes one task per kind; run_task() runs one. Retrieval is this module's own task; the recognition tasks
run in stages.recognition.runners.

Tasks:
  retrieval     t2v and/or v2t from the video store and the caption store, blockwise and exact
                (stages.retrieval.evaluate_retrieval), optionally re-ranked (sk-norm / qb-norm with the query
                bank of training captions, dsl). Writes <eval_dir>/<t2v|v2t>/{metrics.json, metrics.md,
                ranks.csv, recall_at_k.png, rank_histogram.png}. The similarity (metrics.json "similarity"):
                "dp" = dot product of the L2-normalised pooled vectors, "dot" = of the pooled vectors as stored
                (MIL-NCE's and VT-TWINS's eval scripts: np.dot of un-normalised S3D embeddings), or, for DRL models (clip4clip family,
                params.interaction ti / wti; evaluate.similarity = auto), DRL's token-wise "ti" / "wti"
                between the caption's token features (text store) and the video's frame features (video
                store), see stages.retrieval.token_scorer; UCoFiA models: stages.retrieval.ucofia_scorer.
  zeroshot      class-name prompts -> the model's text encoder; top-1/top-5 over each split's test videos.
  linear-probe  per-clip features of each video (the unit features in the store) -> LinearSVC, summed clip
                scores, mean top-1 over the dataset's splits (VT-TWINS / MIL-NCE protocol).
  crosstask     VT-TWINS CrossTask segment accuracy (stages.recognition.segment_accuracy).
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
from stages.contract.tasks import Result, Task, atomic_path, register_stage, write_json_atomic, write_text_atomic
from stages.features.provenance import check_store_pair, store_fingerprint, store_summary, stores_used
from stages.recognition.runners import run_crosstask, run_linear_probe, run_zeroshot
from stages.retrieval.diagnostics import missing_warning
from stages.retrieval.faiss_candidates import t2v_from_index
from stages.retrieval.inputs import load_pairs, load_text_bank, load_video_bank
from stages.retrieval.plots import write_plots
from stages.retrieval.report_table import metrics_table, ranks_frame
from stages.retrieval.token_scorer import BANK, TEXT, VIDEO, token_sets

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
SIMILARITIES = ("auto", "dp", "dot", "ti", "wti", "ucofia")


def _sig(p: Path) -> str | None:
    """A store as the fingerprint sees it: its own fingerprint attribute (the same after a copy)."""
    return store_fingerprint(p)



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
        return run_zeroshot(task)
    if name == "crosstask":
        return run_crosstask(task)
    return run_linear_probe(task)



def _run_retrieval(task: Task) -> Result:
    from stages.retrieval import evaluate_retrieval

    p = task.params
    t0 = time.perf_counter()
    check_store_pair(p["features"], p["text_features"])
    if p.get("bank_features") and Path(p["bank_features"]).is_file():
        check_store_pair(p["features"], p["bank_features"])
    if p.get("candidates") == "faiss" and p.get("index_dir"):
        _check_index(p["index_dir"], store_summary(p["features"]))
    data = load_pairs(p["features"], p["text_features"], normalise=p.get("similarity") != "dot")
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
    if mode == "dot" and (use_index or p["rerank"] != "none"):
        raise ConfigError("evaluate.similarity=dot (un-normalised dot product) works with exact candidates and no "
                          "re-ranking only")
    if mode in ("dp", "dot"):
        text_q, video_g, score_fn = data["captions"], videos, None
        bank = load_text_bank(p["bank_features"], data["model"], data["videos"].shape[1])
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


# ---- which similarity a model's stores are ranked by -------------------------------------------------
TOKEN_MODES = ("ti", "wti")


def similarity_mode(model: str, requested: str = "auto"):
    """("dp" | "ti" | "wti", ModelInfo or None) for the store's model.

    auto: the model's own interaction - "ti" / "wti" for clip4clip-family models whose params.interaction
    says so (drl-ti, drl-wti), "dp" otherwise (and for model names the registry does not know). An explicit
    "ti" needs a registered model whose stores hold token features; "wti" needs WTI weight heads."""
    from stages.backbones.registry import model_config

    if requested not in SIMILARITIES:
        raise ConfigError(f"evaluate.similarity must be one of {list(SIMILARITIES)}, got {requested!r}")
    if requested in ("dp", "dot"):
        return requested, None
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
