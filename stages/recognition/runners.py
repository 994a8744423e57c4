"""The evaluate stage's recognition tasks: read the stores and the dataset's splits or annotations, score with
this package's protocols, write metrics.json.

  zeroshot      class-name prompts -> the model's text encoder; top-1/top-5 over each split's test videos.
  linear-probe  per-clip features of each video (the unit features in the store) -> LinearSVC, summed clip
                scores, mean top-1 over the dataset's splits (VT-TWINS / MIL-NCE protocol).
  crosstask     VT-TWINS CrossTask segment accuracy over the extract stage's segment clips and step texts.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from stages import __version__
from stages.contract.errors import VtpipeError
from stages.contract.tasks import Result, Task, write_json_atomic
from stages.features.provenance import check_store_pair, stores_used
from stages.features.store import TextStore, VideoStore


def _splits(p: dict):
    from stages.datasets.actions import read_action_split

    for split in p["splits"]:
        yield split, read_action_split(p["dataset"], p["splits_dir"], split, layout=p["layout"])


def run_zeroshot(task: Task) -> Result:
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


def run_linear_probe(task: Task) -> Result:
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


def run_crosstask(task: Task) -> Result:
    """VT-TWINS CrossTask segment accuracy: per task, is each segment's clip closest to its own step's text
    among the task's steps? Segment clips and step texts are the extract stage's segment items and captions."""
    from stages.recognition.segment_accuracy import crosstask_vt_twins
    from stages.datasets.captions import read_captions

    p = task.params
    t0 = time.perf_counter()
    df = read_captions("crosstask", p["captions"], **p["options"])
    check_store_pair(p["features"], p["text_features"])
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
