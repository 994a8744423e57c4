#!/usr/bin/env python
"""Regenerate tests/golden/preset_numbers/: for each paper preset with an evaluation, small seeded features and
the number the reference's OWN evaluation code computes from them, so tests/test_preset_numbers.py can run the
preset through `vtpipe run PRESET --stage evaluate` on the same features and compare.

    python scripts/golden/preset_numbers.py --refs DIR [--out tests/golden/preset_numbers]

DIR holds git checkouts (or bare mirrors with a `repo` git dir, as the search tool's fetch leaves them) named
<owner>+<name>: ArrowLuo+CLIP4Clip, KoDohwan+VT-TWINS, antoine77340+MIL-NCE_HowTo100M. Files are read at
HEAD with `git show`. The evaluation scripts import their models, data loaders and CUDA set-up, so they are not
imported: the statements that turn embeddings into numbers are taken from the file with `ast` (by the names
they assign, or the `if args.gpu == 0:` block that scores) and executed on the seeded arrays, with the
reference's own metric module (metrics.py, executed whole: it imports only numpy / torch). Every number in
preset_numbers.json names the file, the line(s) executed and the commit.

TVTSv2 zero-shot (it needs TVTS's text tower) is added to the same folder by tvtsv2_zeroshot.py; entries of
numbers.json this script does not make are kept. Not done: DRL TI/WTI and UCoFiA, which need their
checkpoints' heads (their scoring is checked in test_token_similarity_eval.py and test_ucofia.py).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import tempfile
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[2]


class Ref:
    """One reference repository (checkout or bare mirror), read at HEAD."""

    def __init__(self, refs: Path, name: str):
        root = refs / name
        gd = next((p for p in (root / "repo", root / ".git", root) if (p / "objects").is_dir()), None)
        if gd is None:
            raise SystemExit(f"{root}: not a git checkout or mirror")
        self.name, self.git = name, ["git", f"--git-dir={gd}"]
        self.commit = self._run("rev-parse", "HEAD").strip()

    def _run(self, *args: str) -> str:
        return subprocess.run([*self.git, *args], check=True, capture_output=True, text=True).stdout

    def read(self, path: str) -> str:
        return self._run("show", f"HEAD:{path}")

    def module(self, path: str) -> types.ModuleType:
        """A small self-contained file (metrics.py: numpy / torch imports only), executed whole."""
        mod = types.ModuleType(path)
        exec(compile(self.read(path), f"{self.name}/{path}", "exec"), mod.__dict__)
        return mod

    def defs(self, path: str, *names: str) -> list[int]:
        """First and last line of the named top-level functions of `path`."""
        nodes = [n for n in ast.parse(self.read(path)).body if isinstance(n, ast.FunctionDef) and n.name in names]
        if len(nodes) != len(names):
            raise SystemExit(f"{path}: expected functions {names}")
        return [min(n.lineno for n in nodes), max(n.end_lineno for n in nodes)]

    def where(self, path: str, lines: list[int]) -> str:
        span = f"{min(lines)}-{max(lines)}" if len(set(lines)) > 1 else str(lines[0])
        return f"{self.name.replace('+', '/')}@{self.commit[:7]} {path}:{span}"


def _function(tree: ast.Module, name: str) -> ast.FunctionDef:
    node = next((n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == name), None)
    if node is None:
        raise SystemExit(f"no function {name}()")
    return node


def run_assignments(ref: Ref, path: str, func: str, targets: tuple[str, ...], ns: dict) -> list[int]:
    """Execute, in file order, the assignments in `func` whose target is one of `targets` (each name once per
    occurrence). Returns the line numbers run."""
    src = ref.read(path)
    fn = _function(ast.parse(src), func)
    nodes = sorted((n for n in ast.walk(fn) if isinstance(n, ast.Assign) and len(n.targets) == 1
                    and isinstance(n.targets[0], ast.Name) and n.targets[0].id in targets), key=lambda n: n.lineno)
    if not nodes:
        raise SystemExit(f"{path}: {func}() assigns none of {targets}")
    exec(compile(ast.Module(body=nodes, type_ignores=[]), f"{ref.name}/{path}", "exec"), ns)
    return [n.lineno for n in nodes]


def run_if_block(ref: Ref, path: str, func: str, contains: str, ns: dict) -> list[int]:
    """Execute the first `if` statement in `func` whose source contains `contains` (the whole statement, else
    branch included), in a scratch working folder (the scripts append to result.txt)."""
    src = ref.read(path)
    fn = _function(ast.parse(src), func)
    node = next((n for n in ast.walk(fn) if isinstance(n, ast.If) and contains in ast.get_source_segment(src, n)),
                None)
    if node is None:
        raise SystemExit(f"{path}: no `if` in {func}() containing {contains!r}")
    here = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        try:
            exec(compile(ast.Module(body=[node], type_ignores=[]), f"{ref.name}/{path}", "exec"), ns)
        finally:
            os.chdir(here)
    return [node.lineno, node.end_lineno]


def run_tail(ref: Ref, path: str, func: str, start: str, ns: dict) -> list[int]:
    """Execute the top-level statements of `func` from the first one whose source contains `start` to its end."""
    src = ref.read(path)
    fn = _function(ast.parse(src), func)
    k = next((i for i, n in enumerate(fn.body) if start in ast.get_source_segment(src, n)), None)
    if k is None:
        raise SystemExit(f"{path}: no statement of {func}() contains {start!r}")
    exec(compile(ast.Module(body=fn.body[k:], type_ignores=[]), f"{ref.name}/{path}", "exec"), ns)
    return [fn.body[k].lineno, fn.body[-1].end_lineno]


def _quiet(*_a, **_k):
    pass


# ---- data ------------------------------------------------------------------------------------------------
def unit16(rng, n: int) -> np.ndarray:
    """Unit vectors of 16 entries +-0.25: normalisation and dot products are exact, similarities tie often."""
    return rng.choice([-0.25, 0.25], size=(n, 16))


def flips(rng, x: np.ndarray, max_flips: int) -> np.ndarray:
    out = x.copy()
    for row in out:
        k = rng.integers(0, max_flips + 1)
        idx = rng.choice(row.size, size=k, replace=False)
        row[idx] *= -1
    return out


def raw_windows(rng, n: int, windows: int, d: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Un-normalised window embeddings (multiples of 1/8, norms from ~0.3 to ~3) and captions near each video's
    mean: ranking by raw dot product differs from ranking by cosine."""
    scale = rng.choice([0.25, 1.0, 3.0], size=(n, 1, 1))
    base = rng.integers(-4, 5, size=(n, 1, d)) / 8.0
    win = (base + rng.integers(-2, 3, size=(n, windows, d)) / 8.0) * scale
    caps = base[:, 0] + rng.integers(-3, 4, size=(n, d)) / 8.0
    return win.astype(np.float32), caps.astype(np.float32)


# ---- presets ---------------------------------------------------------------------------------------------
def clip4clip_numbers(ref: Ref, rng, presets: tuple) -> dict:
    """MSR-VTT, DiDeMo / ActivityNet paragraphs (one query per video) and MSVD (several captions a video),
    scored by main_task_retrieval.py's eval_epoch tail."""
    metrics = ref.module("metrics.py")
    out = {}
    for preset, per_video in presets:
        n = 14
        videos = unit16(rng, n)
        counts = np.ones(n, int) if per_video is None else rng.integers(per_video[0], per_video[1], size=n)
        cap_video = np.repeat(np.arange(n), counts)  # video-major, as CLIP4Clip's MSVD loader orders captions
        caps = flips(rng, videos[cap_video], 7)
        # _run_on_single_gpu -> get_similarity_logits (meanP): logit_scale * text . video of unit vectors; the
        # scale (a positive constant) changes no order, so the plain dot product is fed
        sim = (caps @ videos.T).astype(np.float32)
        multi = per_video is not None
        ns = {"np": np, "sim_matrix": sim, "multi_sentence_": multi,
              "cut_off_points_": (np.cumsum(counts) - 1).tolist() if multi else [],
              "logger": types.SimpleNamespace(info=_quiet, warning=_quiet),
              "compute_metrics": metrics.compute_metrics,
              "tensor_text_to_video_metrics": metrics.tensor_text_to_video_metrics,
              "tensor_video_to_text_sim": metrics.tensor_video_to_text_sim}
        lines = run_if_block(ref, "main_task_retrieval.py", "eval_epoch", "cut_off_points2len_", ns)
        tv, vt = ns["tv_metrics"], ns["vt_metrics"]
        out[preset] = {
            "data": {"videos": videos.astype(np.float32), "captions": caps.astype(np.float32), "cap_video": cap_video},
            "reference": {
                "computed_by": [ref.where("main_task_retrieval.py", lines), ref.where("metrics.py", ref.defs("metrics.py", "compute_metrics", "tensor_text_to_video_metrics", "tensor_video_to_text_sim"))],
                "t2v": {k: float(tv[k]) for k in ("R1", "R5", "R10", "MR", "MeanR")},
                "v2t": {k: float(vt[k]) for k in ("R1", "R5", "R10", "MR", "MeanR")},
                "units": "percent; MR/MeanR 1-based ranks",
            }}
    return out


def s3d_retrieval_numbers(ref: Ref, preset: str, path: str, func: str, windows: int, rng, fraction: bool) -> dict:
    """MIL-NCE / VT-TWINS retrieval: video = mean of its windows' embeddings (the script's view + mean), then
    the metric on the raw (un-normalised) dot products, as the script calls it."""
    metrics = ref.module("metrics.py")
    n = 16
    win, caps = raw_windows(rng, n, windows)
    flat = torch.from_numpy(win.reshape(n * windows, -1))
    ns = {"np": np, "torch": torch, "args": types.SimpleNamespace(num_windows_test=windows),
          "video_embd": flat, "text_embd": torch.from_numpy(caps)}
    pool_lines = run_assignments(ref, path, func, ("video_embd",), ns)
    pooled = np.asarray(ns["video_embd"])
    text_name = "all_txt_embd" if "all_txt_embd" in ref.read(path) else "all_text_embd"
    ns.update({"all_video_embd": pooled, text_name: caps, "retrieval": getattr(metrics, "retrieval", None),
               "compute_metrics": getattr(metrics, "compute_metrics", None)})
    score_lines = run_assignments(ref, path, "main" if "retrieval(" in ref.read(path) else func,
                                  ("t2v", "v2t", "metrics"), ns)
    t2v = ns["t2v"] if "t2v" in ns else ns["metrics"]
    mul = 100.0 if fraction else 1.0
    cos = lambda a, b: (a / np.linalg.norm(a, axis=1, keepdims=True)) @ (b / np.linalg.norm(b, axis=1, keepdims=True)).T  # noqa: E731
    cos_t2v = metrics_of(cos(caps, pooled))
    raw = {"R1": float(t2v["R1"]) * mul, "R5": float(t2v["R5"]) * mul, "R10": float(t2v["R10"]) * mul,
           "MR": float(t2v["MR"])}
    assert cos_t2v != raw, "the data must tell raw dot products from cosine"
    return {preset: {
        "data": {"windows": win, "pooled": pooled.astype(np.float32), "captions": caps, "cap_video": np.arange(n)},
        "reference": {"computed_by": [ref.where(path, pool_lines), ref.where(path, score_lines),
                                      ref.where("metrics.py", ref.defs("metrics.py", "retrieval" if fraction is False else "compute_metrics"))],
                      "t2v": raw, "units": "percent (MIL-NCE's metrics.py returns fractions: x100 here)" if fraction
                      else "percent", "cosine_would_give": cos_t2v}}}


def metrics_of(sim: np.ndarray) -> dict:
    """What the same sort-and-find gives on another matrix (to show the data separates raw from cosine)."""
    sx = np.sort(-sim, axis=1)
    ind = np.where(sx - np.diag(-sim)[:, None] == 0)[1]
    return {"R1": float(np.sum(ind == 0)) * 100 / len(ind), "R5": float(np.sum(ind < 5)) * 100 / len(ind),
            "R10": float(np.sum(ind < 10)) * 100 / len(ind), "MR": float(np.median(ind) + 1)}


def linear_probe_numbers(ref: Ref, preset: str, path: str, dataset: str, rng) -> dict:
    """The `if args.gpu == 0:` block of eval_hmdb.py / eval_ucf.py: LabelEncoder, LinearSVC(C=100) per split on
    1024-d windows, summed decision functions, accuracy per split."""
    import sklearn
    from sklearn import preprocessing
    from sklearn.svm import LinearSVC

    classes = ["brush_hair", "cartwheel", "catch", "chew"] if dataset == "hmdb51" else \
        ["ApplyEyeMakeup", "Archery", "BabyCrawling", "YoYo"]
    per_class, windows, d = 7, 2, 1024
    centers = rng.integers(-3, 4, size=(len(classes), d)).astype(np.float32)
    vids, labels, feats = [], [], []
    for c, name in enumerate(classes):
        for k in range(per_class):
            # some videos look like the next class: the probe misses them on purpose (accuracy below 100)
            look = (c + 1) % len(classes) if k == per_class - 1 else c
            f = centers[look] + rng.integers(-6, 7, size=(windows, d)).astype(np.float32)
            feats.append(f / 4.0)
            labels.append(name)
            vids.append(f"v_{name}_g{k + 1:02d}_c01" if dataset == "ucf101" else f"{name}_video_{k}")
    feats = np.stack(feats)
    n = len(vids)
    splits = np.zeros((3, n), np.int64)
    for s in range(3):
        for c in range(len(classes)):
            idx = np.arange(c * per_class, (c + 1) * per_class)
            test = rng.choice(idx, size=3, replace=False)
            splits[s, idx] = 1
            splits[s, test] = 2
            if dataset == "hmdb51":  # tag 0: not used in this split
                splits[s, rng.choice(np.setdiff1d(idx, test), size=1)] = 0
    lines = []
    runs = []
    for seed in (0, 1, 2):  # LinearSVC's random_state is unset there: the result must not depend on it
        np.random.seed(seed)
        accs: list[float] = []
        ns = {"np": np, "preprocessing": preprocessing, "LinearSVC": LinearSVC,
              "args": types.SimpleNamespace(gpu=0, num_windows_test=windows), "all_video_embd": feats,
              "labels": np.array(labels), "split1": splits[0], "split2": splits[1], "split3": splits[2]}
        # each split's accuracy is read where the script prints it ("Top 1 accuracy split ...": `acc`, a fraction)
        ns["print"] = lambda *a, **k: accs.append(100.0 * float(ns["acc"])) if str(a[0]).startswith("Top 1") else None
        if "args.gpu == 0" in ref.read(path):  # VT-TWINS: main's scoring block
            lines = run_if_block(ref, path, "main", "LinearSVC", ns)
        else:  # MIL-NCE: the tail of evaluate(), from the LabelEncoder on
            lines = run_tail(ref, path, "evaluate", "LabelEncoder", ns)
        runs.append(accs)
    assert runs[0] == runs[1] == runs[2], runs
    acc = runs[0]
    return {preset: {
        "data": {"features": feats, "video_ids": np.array(vids), "labels": np.array(labels),
                 "classes": np.array(classes), "splits": splits},
        "reference": {"computed_by": [ref.where(path, lines)], "per_split": acc, "mean": float(np.mean(acc)),
                      "sklearn": sklearn.__version__, "svc_defaults": {k: str(v) for k, v in LinearSVC().get_params().items()
                                                                          if k in ("dual", "max_iter", "loss", "tol")},
                      "units": "percent top-1"}}}


def crosstask_numbers(ref: Ref, rng) -> dict:
    """eval_crosstask.py: test()'s F.normalize of video and text embeddings and the mean over its one window,
    then main's `if args.gpu == 0:` block (per-task V @ T^T, metrics.ctr, mean over tasks)."""
    metrics = ref.module("metrics.py")
    tasks = {"23521": ["pour water", "pour juice", "stir mixture", "pour mixture"],
             "59684": ["cut shelf", "sand shelf", "paint shelf"],
             "10001": ["crack egg", "whisk egg", "pour egg", "flip omelette", "serve"]}
    # +-0.25 unit vectors (videos scaled by 0.5 or 2): F.normalize gives them back exactly and every dot product
    # is a multiple of 1/16, so a segment's own step text ties exactly with the other segments of that step.
    # (On general float32 embeddings the script's np.dot can put a duplicate of the own text one rounding step
    # above the diagonal and count the segment wrong; vtpipe merges identical texts and does not.)
    step_emb = {(t, s): unit16(rng, 1)[0].astype(np.float32) for t, steps in tasks.items()
                for s in range(1, len(steps) + 1)}
    rows = []  # task, video, step, start, end
    for t, steps in tasks.items():
        for v in range(3):
            start = 0.0
            for s in sorted(rng.choice(np.arange(1, len(steps) + 1), size=rng.integers(2, len(steps) + 1),
                                       replace=False)):
                rows.append((t, f"vid{t[-2:]}{v}", int(s), start, start + 4.0))
                start += 6.0
    text = np.stack([step_emb[(t, s)] for t, _, s, _, _ in rows])
    video = flips(rng, text.astype(np.float64), 10).astype(np.float32) * \
        rng.choice([0.5, 2.0], size=(len(rows), 1)).astype(np.float32)
    ns = {"F": F, "args": types.SimpleNamespace(num_windows_test=1),
          "video_embd": torch.from_numpy(video), "text_embd": torch.from_numpy(text)}
    norm_lines = run_assignments(ref, "src/eval_crosstask.py", "test", ("video_embd", "text_embd"), ns)
    ns2 = {"np": np, "ctr": metrics.ctr, "print": _quiet, "open": lambda *a, **k: open(os.devnull, "w"),
           "args": types.SimpleNamespace(gpu=0), "all_video_embd": ns["video_embd"].numpy(),
           "all_text_embd": ns["text_embd"].numpy(), "task_id": np.array([int(r[0]) for r in rows])}
    lines = run_if_block(ref, "src/eval_crosstask.py", "main", "ctr(", ns2)
    return {"vt-twins-crosstask": {
        "data": {"video": video, "text": text, "task": np.array([r[0] for r in rows]),
                 "video_id": np.array([r[1] for r in rows]), "step": np.array([r[2] for r in rows]),
                 "start": np.array([r[3] for r in rows]), "end": np.array([r[4] for r in rows]),
                 "task_names": np.array(list(tasks)), "task_steps": np.array([",".join(s) for s in tasks.values()])},
        "reference": {"computed_by": [ref.where("src/eval_crosstask.py", norm_lines),
                                      ref.where("src/eval_crosstask.py", lines), ref.where("metrics.py", ref.defs("metrics.py", "ctr"))],
                      "ctr": float(np.mean(ns2["recall_list"])), "per_task": {str(t): float(r) for t, r in zip(dict.fromkeys(int(r[0]) for r in rows), ns2["recall_list"])},
                      "units": "percent"}}}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--refs", type=Path, required=True, help="folder of <owner>+<name> checkouts or mirrors")
    ap.add_argument("--out", type=Path, default=REPO / "tests/golden/preset_numbers")
    a = ap.parse_args(argv)
    c4c = Ref(a.refs, "ArrowLuo+CLIP4Clip")
    vtt = Ref(a.refs, "KoDohwan+VT-TWINS")
    mil = Ref(a.refs, "antoine77340+MIL-NCE_HowTo100M")
    rng = np.random.default_rng(2026)
    cases: dict = {}
    cases.update(clip4clip_numbers(c4c, rng, (("clip4clip-msrvtt", None), ("clip4clip-msvd", (1, 5)))))
    cases.update(s3d_retrieval_numbers(mil, "milnce-msrvtt", "eval_msrvtt.py", "evaluate", 10, rng, True))
    cases.update(s3d_retrieval_numbers(mil, "milnce-youcook2", "eval_youcook.py", "evaluate", 10, rng, True))
    cases.update(s3d_retrieval_numbers(vtt, "vt-twins-msrvtt", "src/eval_msrvtt.py", "test", 8, rng, False))
    cases.update(s3d_retrieval_numbers(vtt, "vt-twins-youcook2", "src/eval_youcook.py", "test", 10, rng, False))
    cases.update(linear_probe_numbers(mil, "milnce-linear-probe-hmdb51", "eval_hmdb.py", "hmdb51", rng))
    cases.update(linear_probe_numbers(vtt, "vt-twins-linear-probe-hmdb51", "src/eval_hmdb.py", "hmdb51", rng))
    cases.update(linear_probe_numbers(vtt, "vt-twins-linear-probe-ucf101", "src/eval_ucf.py", "ucf101", rng))
    cases.update(crosstask_numbers(vtt, rng))
    cases.update(clip4clip_numbers(c4c, rng, (("clip4clip-didemo", None), ("clip4clip-activitynet", None))))
    a.out.mkdir(parents=True, exist_ok=True)
    numbers = a.out / "numbers.json"  # entries of other scripts (tvtsv2_zeroshot.py) are kept
    summary = json.loads(numbers.read_text()) if numbers.is_file() else {}
    for preset, case in cases.items():
        np.savez_compressed(a.out / f"{preset}.npz", **case["data"])
        summary[preset] = case["reference"]
    numbers.write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    for preset, r in ((k, summary[k]) for k in cases):
        print(preset, {k: v for k, v in r.items() if k in ("t2v", "v2t", "mean", "ctr")})


if __name__ == "__main__":
    main()
