#!/usr/bin/env python
"""Add the TVTSv2 zero-shot presets to tests/golden/preset_numbers/: seeded recorded video features, the
class prompts, and the top-1 / top-5 that TVTS's own zero-shot script computes (TencentARC/TVTS 290a63e
v2/downstream/zero_recognition_TVTSv2_ViT_B_32.py).

    python scripts/golden/tvtsv2_zeroshot.py /path/to/TVTS --deps DIR [--out tests/golden/preset_numbers]

The reference model is TVTS's downstream/model_TVTSv2_ViT_B_32.py at reduced depth (2 video and 2 text
blocks, every width, head count and patch size of the release), built as scripts/golden/tvtsv2_reference.py
builds its B/16 and H/14 goldens, with seeded random weights written in the release's checkpoint layout
(tests/backbone_checkpoints.py; the test rebuilds the same file from the seed). From the script itself, read
from the checkout and executed: its `prompt_templates` and `accuracy`, the `with torch.no_grad():` block of
run() that builds the zero-shot classifier from the class names (its text tower, dummy images), and run()'s
scoring tail (`top1, top5, n = ...` to the end) over a data loader of the recorded video features (the stand-in
model returns them as the video embeddings). Class names: TVTS reads them from prompt/label2id.json, which
its repository does not ship; the names given here are the split files' class names as words, in class-index
order (the order TVTS's 1-based labels `sample[1] - 1` index). Needs einops (--deps DIR holding it).
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(HERE))
import backbone_checkpoints as bc  # noqa: E402
import tvtsv2_reference as tr  # noqa: E402

SCRIPT = "v2/downstream/zero_recognition_TVTSv2_ViT_B_32.py"
# TVTSv2 ViT-B/32 at reduced depth (tests/test_preset_numbers.py writes the same model YAML and checkpoint)
ARCH = {"embed_dim": 512,
        "vision_cfg": {"image_size": 224, "layers": 2, "width": 768, "head_width": 64, "patch_size": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 2}}
WEIGHT_SEED = 23
DATASETS = {  # class folder names (split files) and the words the prompts use, in class-index order
    "ucf101": ["ApplyEyeMakeup", "Archery", "BabyCrawling", "BalanceBeam", "Basketball", "Biking", "Bowling",
               "Drumming", "Fencing", "YoYo"],
    "hmdb51": ["brush_hair", "cartwheel", "catch", "chew", "clap", "climb", "dive", "draw_sword", "dribble",
               "drink"],
}
WORDS = {"ApplyEyeMakeup": "apply eye makeup", "BabyCrawling": "baby crawling", "BalanceBeam": "balance beam",
         "YoYo": "yo yo", "brush_hair": "brush hair", "draw_sword": "draw sword"}


def reference_b32(cfg: dict):
    return tr.reference_clip_arch(cfg, "B_32")


def _run(src: str, fn_name: str, pick, ns: dict) -> list[int]:
    """Execute the statements of run() chosen by pick(list of top-level statements) -> slice."""
    fn = next(n for n in ast.walk(ast.parse(src)) if isinstance(n, ast.FunctionDef) and n.name == fn_name)
    body = pick(fn.body, src)
    exec(compile(ast.Module(body=body, type_ignores=[]), SCRIPT, "exec"), ns)
    return [body[0].lineno, body[-1].end_lineno]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("reference", type=Path, help="TVTS checkout (the folder holding v2/)")
    ap.add_argument("--deps", help="extra folder on sys.path (one holding einops)")
    ap.add_argument("--out", type=Path, default=REPO / "tests/golden/preset_numbers")
    a = ap.parse_args()
    v2 = a.reference.resolve() / "v2"
    sys.path.insert(0, str(v2))
    if a.deps:
        sys.path.insert(0, a.deps)
    tr._stub_modules()
    torch.set_num_threads(2)
    import subprocess

    commit = subprocess.run(["git", "-C", str(a.reference), "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    src = (a.reference / SCRIPT).read_text()
    tree = ast.parse(src)
    templates = next(ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                     and getattr(n.targets[0], "id", "") == "prompt_templates")
    acc_node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "accuracy")
    # accuracy() calls float() on a 1-element array, which NumPy 2 refuses (older NumPy converted it with a
    # deprecation warning): its namespace gets a float() that converts size-1 arrays as older NumPy did
    ns0: dict = {"torch": torch, "float": lambda x: float(np.asarray(x).reshape(()))}
    exec(compile(ast.Module(body=[acc_node], type_ignores=[]), SCRIPT, "exec"), ns0)

    torch.manual_seed(0)
    model, tokenize = reference_b32(ARCH)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = bc.write_tvtsv2_checkpoint(Path(tmp) / "ckpt.pth", bc.tvtsv2_seeded_state_dict(ARCH, WEIGHT_SEED))
        ckpt = torch.load(path, map_location="cpu")  # as the release's scripts load it
        model.load_state_dict({k.replace("module.", ""): val for k, val in ckpt["state_dict"].items()}, strict=True)
    model = model.float().eval()
    numbers = json.loads((a.out / "numbers.json").read_text())
    rng = np.random.default_rng(2027)
    for dataset, classes in DATASETS.items():
        words = [WORDS.get(c, c.replace("_", " ").lower()) for c in classes]
        ns = {"torch": torch, "tqdm": lambda x: x, "classnames": words, "prompt_templates": templates,
              "tokenizer": tokenize, "model": model, "device": torch.device("cpu")}
        cls_lines = _run(src, "run", lambda body, s: [n for n in body if isinstance(n, ast.With)
                                                      and "zeroshot_weights" in ast.get_source_segment(s, n)][:1], ns)
        weights = ns["zeroshot_weights"]  # [D, C], unit columns
        per_class = 3
        labels = np.repeat(np.arange(len(classes)), per_class)
        w = weights.numpy().T
        spread = float(np.mean([np.linalg.norm(w[i] - w[j]) for i in range(len(w)) for j in range(i)]))
        video = weights.numpy().T[labels] + rng.standard_normal((len(labels), weights.shape[0])) * spread * 0.12
        video = (video * rng.uniform(0.5, 2.0, size=(len(labels), 1))).astype(np.float32)
        batches = [{"video": torch.zeros(1), "text": ["NULL"] * len(idx), "label": torch.as_tensor(labels[idx]),
                    "features": torch.from_numpy(video[idx].copy())} for idx in np.array_split(np.arange(len(labels)), 4)]
        stand_in = lambda data, return_embeds=True: (None, data["features"].clone())  # noqa: E731
        ns.update({"data_loader": batches, "model": stand_in, "accuracy": ns0["accuracy"], "print": lambda *x: None,
                   "np": np})
        score_lines = _run(src, "run", lambda body, s: body[next(i for i, n in enumerate(body)
                                                                  if "top1, top5, n" in ast.get_source_segment(s, n)):],
                           ns)
        preset = f"tvtsv2-zeroshot-{dataset}"
        np.savez_compressed(a.out / f"{preset}.npz", video=video, labels=labels, classes=np.array(classes),
                            words=np.array(words))
        numbers[preset] = {
            "computed_by": [f"TencentARC/TVTS@{commit[:7]} {SCRIPT}:{cls_lines[0]}-{cls_lines[1]}",
                            f"TencentARC/TVTS@{commit[:7]} {SCRIPT}:{score_lines[0]}-{score_lines[1]}",
                            f"TencentARC/TVTS@{commit[:7]} {SCRIPT}:{acc_node.lineno}-{acc_node.end_lineno} (accuracy)",
                            f"TencentARC/TVTS@{commit[:7]} v2/downstream/model_TVTSv2_ViT_B_32.py (2+2 blocks)"],
            "top1": float(ns["top1"]), "top5": float(ns["top5"]), "prompt_templates": templates,
            "model": {"arch_cfg": ARCH, "weight_seed": WEIGHT_SEED},
            "units": "percent; split 1 test list only",
            "numpy": f"{np.__version__} (accuracy()'s float() of a 1-element array shimmed as older NumPy did)",
        }
        print(preset, numbers[preset]["top1"], numbers[preset]["top5"])
    (a.out / "numbers.json").write_text(json.dumps(numbers, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
