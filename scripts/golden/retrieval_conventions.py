#!/usr/bin/env python
"""Regenerate tests/golden/retrieval_conventions.json from the reference codes' own metric functions.

Run it on checkouts of the references (never committed here), e.g.::

    python scripts/golden/retrieval_conventions.py \\
        --clip4clip /tmp/ref-clip4clip --collaborative-experts /tmp/ref-ce --qb-norm /tmp/ref-qbnorm \\
        --ucofia /tmp/ref-ucofia --camoe /tmp/ref-camoe -o tests/golden/retrieval_conventions.json

What it runs (each file imported on its own from the checkout, with numpy / torch / scipy / sklearn):

* CLIP4Clip ``metrics.py`` (ArrowLuo/CLIP4Clip 508ffa3): ``compute_metrics``,
  ``tensor_text_to_video_metrics``, ``tensor_video_to_text_sim`` - as ``main_task_retrieval.py`` calls
  them (square matrix: ``compute_metrics(S)`` / ``compute_metrics(S.T)``; several captions per video:
  the ``[V, captions, V]`` tensor).
* collaborative-experts ``model/metric.py`` (albanie/collaborative-experts): ``t2v_metrics``,
  ``v2t_metrics`` (captions ordered video-major, equal count per video, as that code requires).
* QB-Norm (ioanacroi/qb-norm 76d4d90): ``dynamic_inverted_softmax.qb_norm`` then its ``metric.py``
  (``t2v_metrics``; v2t with the video bank: ``qb_norm`` on the transposed matrices, ``v2t_metrics``).
  Its metric rounds every number to one decimal.
* UCoFiA (Ziyang412/UCoFiA 6098be2): ``sinkhorn_knopp`` from ``eval_t2v/main_ucofia.py`` and
  ``eval_v2t/main_ucofia.py``. Those files import the whole model (CLIP weights, tokenizer,
  dataloaders), so only the function's definition is taken from the file (``ast``) and executed with
  ``torch`` and ``torch.nn.functional as F``; the biases are added as its ``eval_epoch`` does (t2v: video
  bias per column; v2t: text bias per text row, from the transposed training-video x test-text matrix) and
  the metrics are UCoFiA's own ``eval_t2v/metrics.py`` ``compute_metrics``.
* CAMoE (starmemda/CAMoE 390e5ab) ``DSL.py``: ``dual_softmax_loss.forward`` with ``temp=1`` on the
  logit-scale matrix; the re-ranked matrix it builds (``S * softmax(S / temp, 0) * len(S)``) is
  captured at its ``F.log_softmax`` call (the module's ``F`` is swapped for a recorder that calls the
  real function). CAMoE has no metric code of its own (it builds on CLIP4Clip): CLIP4Clip's
  ``compute_metrics`` scores it.

Data (seeded, stored in the JSON so the tests feed vtpipe the very same vectors): unit vectors of
16 entries +-0.25, so normalisation and every dot product are exact in float32 and float64 and the
similarities are multiples of 1/16 - ties everywhere, plus duplicated videos and duplicated captions
(within a video and across videos).
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np
import torch

SCALE = 100.0  # logit scale for SK-norm and DSL (vtpipe's evaluate.sk_norm.scale / evaluate.dsl.scale)


def load_module(path: Path, name: str):
    if not path.is_file():
        sys.exit(f"missing reference file {path}")
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # qb-norm's dynamic_inverted_softmax imports `metric`
    spec.loader.exec_module(mod)
    return mod


def load_function(path: Path, func: str, namespace: dict):
    """One top-level function of a file whose imports cannot be satisfied, executed from its own source."""
    tree = ast.parse(path.read_text())
    node = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == func), None)
    if node is None:
        sys.exit(f"{path} defines no {func}()")
    ns = dict(namespace)
    exec(compile(ast.Module(body=[node], type_ignores=[]), str(path), "exec"), ns)
    return ns[func]


def units(rng, n: int, d: int = 16) -> np.ndarray:
    return rng.choice([-0.25, 0.25], size=(n, d))


def near(rng, base: np.ndarray, max_flips: int = 6) -> np.ndarray:
    out = base.copy()
    for row in out:
        flips = rng.choice(len(row), size=rng.integers(0, max_flips + 1), replace=False)
        row[flips] *= -1
    return out


def make_single(rng) -> dict:
    v = units(rng, 20)
    v[7] = v[3]
    v[11] = v[10]  # duplicate videos
    t = near(rng, v)
    t[15] = t[14]  # duplicate captions of different videos
    return {"videos": v, "captions": t, "caption_to_video": np.arange(20)}


def make_multi(rng, n_videos: int = 12, per_video: int = 3) -> dict:
    """Video-major captions, `per_video` each (the layout collaborative-experts' metric needs). 12 videos: a
    torch.argsort row of <= 16 items is an insertion sort (stable), so CLIP4Clip's tie order is defined."""
    v = units(rng, n_videos)
    v[5] = v[2]
    c2v = np.repeat(np.arange(n_videos), per_video)
    t = near(rng, v[c2v])
    t[4 * per_video + 1] = t[4 * per_video]  # duplicated caption within video 4
    t[9 * per_video] = t[8 * per_video + 2]  # the same caption for videos 8 and 9
    return {"videos": v, "captions": t, "caption_to_video": c2v}


def c4c_metrics(m: dict) -> dict:
    key = {"R1": "R@1", "R5": "R@5", "R10": "R@10", "MR": "MdR", "MedianR": "MdR", "MeanR": "MnR", "Std_Rank": "StdR"}
    out = {key[k]: float(v) for k, v in m.items() if k in key}
    if "cols" in m:
        out["entries"] = [int(x) for x in m["cols"]]
    return out


def ce_metrics(m: dict) -> dict:
    key = {"R1": "R@1", "R5": "R@5", "R10": "R@10", "R50": "R@50", "MedR": "MdR", "MeanR": "MnR",
           "geometric_mean_R1-R5-R10": "Geom"}
    return {key[k]: float(v) for k, v in m.items() if k in key}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name in ("clip4clip", "collaborative-experts", "qb-norm", "ucofia", "camoe"):
        ap.add_argument(f"--{name}", type=Path, required=True, help=f"checkout of the {name} reference")
    ap.add_argument("-o", "--output", type=Path, default=Path("tests/golden/retrieval_conventions.json"))
    ap.add_argument("--seed", type=int, default=15)
    a = ap.parse_args(argv)

    c4c = load_module(a.clip4clip / "metrics.py", "ref_c4c_metrics")
    ce = load_module(a.collaborative_experts / "model/metric.py", "ref_ce_metric")
    qb_metric = load_module(a.qb_norm / "metric.py", "metric")
    qb = load_module(a.qb_norm / "dynamic_inverted_softmax.py", "ref_qb_dis")
    uc_metrics = load_module(a.ucofia / "eval_t2v/metrics.py", "ref_ucofia_metrics")
    ns = {"torch": torch, "F": torch.nn.functional}
    sk_t2v = load_function(a.ucofia / "eval_t2v/main_ucofia.py", "sinkhorn_knopp", ns)
    sk_v2t = load_function(a.ucofia / "eval_v2t/main_ucofia.py", "sinkhorn_knopp", ns)
    dsl_mod = load_module(a.camoe / "DSL.py", "ref_camoe_dsl")

    rng = np.random.default_rng(a.seed)
    sets = {"single": make_single(rng), "multi": make_multi(rng)}
    bank_text, bank_video = units(rng, 40), units(rng, 30)
    cases = []

    for name, ds in sets.items():
        S = ds["captions"] @ ds["videos"].T  # exact: multiples of 1/16
        nv = len(ds["videos"])
        if name == "single":
            t2v, v2t = c4c.compute_metrics(S.copy()), c4c.compute_metrics(S.T.copy())
        else:
            per = len(S) // nv
            tensor = S.reshape(nv, per, nv)
            t2v = c4c.tensor_text_to_video_metrics(torch.from_numpy(tensor.copy()))
            v2t = c4c.compute_metrics(c4c.tensor_video_to_text_sim(torch.from_numpy(tensor.copy())).numpy())
        cases.append({"data": name, "rerank": "none", "ties": "clip4clip", "reference": "CLIP4Clip metrics.py",
                      "t2v": c4c_metrics(t2v), "v2t": c4c_metrics(v2t)})
        cases.append({"data": name, "rerank": "none", "ties": "collaborative-experts",
                      "reference": "collaborative-experts model/metric.py",
                      "t2v": ce_metrics(ce.t2v_metrics(S.copy())), "v2t": ce_metrics(ce.v2t_metrics(S.copy()))})

    # re-rankers on the one-caption-per-video set
    ds = sets["single"]
    S = ds["captions"] @ ds["videos"].T
    BT = bank_text @ ds["videos"].T  # training captions x test videos
    BV = bank_video @ ds["captions"].T  # training videos x test texts
    # UCoFiA SK-norm (one level), its compute_metrics
    _, video_bias = sk_t2v(torch.from_numpy(SCALE * BT))
    _, text_bias = sk_v2t(torch.from_numpy(SCALE * BV))
    St = (torch.from_numpy(SCALE * S) + video_bias.unsqueeze(0)).numpy()
    Sv = (torch.from_numpy(SCALE * S) + text_bias.unsqueeze(1)).numpy()
    cases.append({"data": "single", "rerank": "sk-norm", "ties": "clip4clip", "reference": "UCoFiA sinkhorn_knopp",
                  "t2v": c4c_metrics(uc_metrics.compute_metrics(St)), "v2t": c4c_metrics(uc_metrics.compute_metrics(Sv.T))})
    # QB-Norm dynamic inverted softmax, its metric.py (t2v: caption bank; v2t: video bank)
    args = {"beta": 20.0, "k": 1}
    qt = qb.qb_norm(BT.copy(), S.copy(), args)
    qv = qb.qb_norm(BV.copy(), S.T.copy(), args)  # rows = query videos, columns = texts
    cases.append({"data": "single", "rerank": "qb-norm", "ties": "collaborative-experts",
                  "reference": "qb-norm dynamic_inverted_softmax.qb_norm + metric.py (rounded to 0.1)", "rounded": True,
                  "t2v": ce_metrics(qb_metric.t2v_metrics(qt)), "v2t": ce_metrics(qb_metric.v2t_metrics(qv.T))})
    # CAMoE dual softmax: capture the re-ranked matrix where forward() takes its log_softmax
    seen = []

    def record(x, dim=None):
        seen.append(x.detach().clone())
        return torch.nn.functional.log_softmax(x, dim=dim)

    dsl_mod.F = types.SimpleNamespace(softmax=torch.nn.functional.softmax, log_softmax=record)
    loss = dsl_mod.dual_softmax_loss()
    loss(torch.from_numpy(SCALE * S), temp=1)
    loss(torch.from_numpy(SCALE * S.T), temp=1)
    cases.append({"data": "single", "rerank": "dsl", "ties": "clip4clip",
                  "reference": "CAMoE DSL.py dual_softmax_loss (temp=1) + CLIP4Clip compute_metrics",
                  "t2v": c4c_metrics(c4c.compute_metrics(seen[0].numpy())),
                  "v2t": c4c_metrics(c4c.compute_metrics(seen[1].numpy()))})

    def arr(x):
        return np.asarray(x).tolist()

    out = {
        "about": "outputs of the reference metric / re-ranking code on seeded tied data; regenerate with "
                 "scripts/golden/retrieval_conventions.py",
        "references": {"clip4clip": "ArrowLuo/CLIP4Clip@508ffa3", "collaborative-experts": "albanie/collaborative-experts",
                       "qb-norm": "ioanacroi/qb-norm@76d4d90", "ucofia": "Ziyang412/UCoFiA@6098be2",
                       "camoe": "starmemda/CAMoE@390e5ab"},
        "scale": SCALE,
        "data": {k: {"videos": arr(d["videos"]), "captions": arr(d["captions"]),
                     "caption_to_video": arr(d["caption_to_video"])} for k, d in sets.items()},
        "bank_text": arr(bank_text),
        "bank_video": arr(bank_video),
        "cases": cases,
    }
    a.output.parent.mkdir(parents=True, exist_ok=True)
    a.output.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {a.output}: {len(cases)} cases")


if __name__ == "__main__":
    main()
