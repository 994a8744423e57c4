#!/usr/bin/env python
"""Add the DRL presets (drl-ti-msrvtt, drl-wti-msrvtt) to tests/golden/preset_numbers/: recorded caption token
features and frame features, a seeded checkpoint's heads, and the R@K / MdR / MnR that DRL's own code computes
(foolwood/DRL 475f96c).

    python scripts/golden/drl_numbers.py /path/to/DRL [--out tests/golden/preset_numbers]

From the checkout: tvr/models/module_cross.py (imported: its Transformer is DRL's seqTransf), the methods
agg_video_feat, wti_interaction and get_similarity_logits of tvr/models/modeling.py (taken from the file with
`ast` and bound to a stand-in object holding the heads: the module imports CLIP and the whole training set-up),
main.py's _run_on_single_gpu and the tail of eval_epoch that scores the matrix (`ast` as well), and
tvr/utils/metrics.py (imported). The heads are DRL's as its __init__ builds them for the run script's arguments
(seqTransf with cross_config.num_hidden_layers = 4 blocks, wti_arch 2 heads), loaded from the state dict that
tests/backbone_checkpoints.py writes for vtpipe's tiny DRL (the test rebuilds it from the seed). The recorded
features are what get_text_feat / get_video_feat's CLIP part would give: token features for all 32 positions
(padding positions carry values too, as CLIP's hidden states do; the mask hides them) and frame features with
zero-frame padding where a video is shorter than 12 frames.
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "tests"))
import backbone_checkpoints as bc  # noqa: E402

WEIGHT_SEED = 31
N_VIDEOS, MAX_FRAMES, MAX_WORDS = 14, 12, 32


def methods(path: Path, cls: str, names: tuple[str, ...], ns: dict) -> dict:
    """Named methods of class `cls` in `path`, executed from their source in `ns` (with their line spans)."""
    tree = ast.parse(path.read_text())
    node = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls)
    out = {}
    for f in node.body:
        if isinstance(f, ast.FunctionDef) and f.name in names:
            exec(compile(ast.Module(body=[f], type_ignores=[]), str(path), "exec"), ns)
            out[f.name] = (ns[f.name], [f.lineno, f.end_lineno])
    assert set(out) == set(names), names
    return out


def heads(interaction: str, sd: dict, width: int, layers: int):
    """The stand-in `self`: DRL's heads as DrlModel.__init__ builds them, loaded from the checkpoint."""
    from tvr.models.module_cross import Transformer as TransformerClip

    me = types.SimpleNamespace(training=False, interaction=interaction, agg_module="seqTransf",
                               config=types.SimpleNamespace(interaction=interaction, cdcr=0))
    me.frame_position_embeddings = nn.Embedding(*sd["frame_position_embeddings.weight"].shape)
    me.transformerClip = TransformerClip(width=width, layers=layers, heads=width // 64)
    mods = {"frame_position_embeddings": me.frame_position_embeddings, "transformerClip": me.transformerClip}
    if interaction == "wti":  # wti_arch 2 (scripts/msrvtt.sh)
        for name in ("text_weight_fc", "video_weight_fc"):
            m = nn.Sequential(nn.Linear(width, width), nn.ReLU(inplace=True), nn.Linear(width, 1))
            setattr(me, name, m)
            mods[name] = m
    for prefix, m in mods.items():
        m.load_state_dict({k[len(prefix) + 1:]: v for k, v in sd.items() if k.startswith(prefix + ".")}, strict=True)
        m.eval()
    return me


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("reference", type=Path, help="DRL checkout (the folder holding tvr/ and main.py)")
    ap.add_argument("--out", type=Path, default=REPO / "tests/golden/preset_numbers")
    a = ap.parse_args()
    ref = a.reference.resolve()
    sys.path.insert(0, str(ref))
    import tvr.utils.metrics as metrics
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    commit = subprocess.run(["git", "-C", str(ref), "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()[:7]
    where = lambda path, span: f"foolwood/DRL@{commit} {path}:{span[0]}-{span[1]}"  # noqa: E731
    torch.set_num_threads(2)
    width, layers = bc.TINY_C4C_ARCH["text_cfg"]["width"], 4
    numbers = json.loads((a.out / "numbers.json").read_text())
    rng = np.random.default_rng(2028)
    for interaction in ("ti", "wti"):
        sd = bc.clip4clip_state_dict(bc.TINY_C4C_ARCH, seed=WEIGHT_SEED, seq_transf=True, wti=interaction == "wti")
        me = heads(interaction, sd, width, layers)
        ns = {"torch": torch, "nn": nn, "pack_padded_sequence": pack_padded_sequence,
              "pad_packed_sequence": pad_packed_sequence, "allgather": None}
        got = methods(ref / "tvr/models/modeling.py", "DRL" if "class DRL" in (ref / "tvr/models/modeling.py").read_text()
                      else next(n.name for n in ast.parse((ref / "tvr/models/modeling.py").read_text()).body
                                if isinstance(n, ast.ClassDef) and any(isinstance(f, ast.FunctionDef)
                                                                       and f.name == "wti_interaction" for f in n.body)),
                      ("agg_video_feat", "wti_interaction", "get_similarity_logits"), ns)
        for name, (fn, _) in got.items():
            setattr(me, name, types.MethodType(fn, me))
        # recorded CLIP outputs: 32 token features a caption (values at padding too), 12 frames a video
        n_frames = rng.integers(5, MAX_FRAMES + 1, size=N_VIDEOS)
        n_words = rng.integers(6, MAX_WORDS + 1, size=N_VIDEOS)
        base = rng.standard_normal((N_VIDEOS, width))
        frames = base[:, None, :] + 4.0 * rng.standard_normal((N_VIDEOS, MAX_FRAMES, width))
        vmask = (np.arange(MAX_FRAMES)[None, :] < n_frames[:, None]).astype(np.int64)
        frames = frames * vmask[:, :, None]  # DRL pads with zero frames; CLIP of a zero frame is not zero, but the
        frames[vmask == 0] = 0.3 * rng.standard_normal((int((vmask == 0).sum()), width))  # mask hides it anyway
        tokens = 0.4 * base[:, None, :] + 4.0 * rng.standard_normal((N_VIDEOS, MAX_WORDS, width))
        tmask = (np.arange(MAX_WORDS)[None, :] < n_words[:, None]).astype(np.int64)
        frames, tokens = frames.astype(np.float32), tokens.astype(np.float32)
        with torch.no_grad():
            v_feat = me.agg_video_feat(torch.from_numpy(frames), torch.from_numpy(vmask), "seqTransf")
        run_ns = {"torch": torch, "np": np, "logger": types.SimpleNamespace(info=lambda *x: None)}
        main_py = ref / "main.py"
        run_fn = next(n for n in ast.parse(main_py.read_text()).body
                      if isinstance(n, ast.FunctionDef) and n.name == "_run_on_single_gpu")
        exec(compile(ast.Module(body=[run_fn], type_ignores=[]), str(main_py), "exec"), run_ns)
        sim = run_ns["_run_on_single_gpu"](me, torch.from_numpy(tmask), torch.from_numpy(vmask),
                                           torch.from_numpy(tokens), v_feat, mini_batch=5)
        sim = np.concatenate(tuple(sim), axis=0)
        tail_ns = {"np": np, "sim_matrix": sim, "multi_sentence_": False, "cut_off_points_": [],
                   "logger": types.SimpleNamespace(info=lambda *x: None), "compute_metrics": metrics.compute_metrics,
                   "tensor_text_to_video_metrics": metrics.tensor_text_to_video_metrics,
                   "tensor_video_to_text_sim": metrics.tensor_video_to_text_sim}
        src = main_py.read_text()
        ev = next(n for n in ast.parse(src).body if isinstance(n, ast.FunctionDef) and n.name == "eval_epoch")
        block = next(n for n in ast.walk(ev) if isinstance(n, ast.If) and "cut_off_points2len_" in ast.get_source_segment(src, n))
        exec(compile(ast.Module(body=[block], type_ignores=[]), str(main_py), "exec"), tail_ns)
        tv, vt = tail_ns["tv_metrics"], tail_ns["vt_metrics"]
        preset = f"drl-{interaction}-msrvtt"
        np.savez_compressed(a.out / f"{preset}.npz", frames=frames, video_mask=vmask.astype(bool), tokens=tokens,
                            token_mask=tmask.astype(bool))
        numbers[preset] = {
            "computed_by": [where("tvr/models/modeling.py", got["agg_video_feat"][1]) + " (agg_video_feat)",
                            where("tvr/models/modeling.py", got["wti_interaction"][1]) + " (wti_interaction)",
                            where("main.py", [run_fn.lineno, run_fn.end_lineno]) + " (_run_on_single_gpu)",
                            where("main.py", [block.lineno, block.end_lineno]) + " (eval_epoch scoring)",
                            f"foolwood/DRL@{commit} tvr/utils/metrics.py, tvr/models/module_cross.py (imported)"],
            "t2v": {k: float(tv[k]) for k in ("R1", "R5", "R10", "MR", "MeanR")},
            "v2t": {k: float(vt[k]) for k in ("R1", "R5", "R10", "MR", "MeanR")},
            "model": {"arch_cfg": bc.TINY_C4C_ARCH, "weight_seed": WEIGHT_SEED, "seq_layers": layers},
            "units": "percent; MR/MeanR 1-based ranks",
        }
        print(preset, numbers[preset]["t2v"], numbers[preset]["v2t"])
    (a.out / "numbers.json").write_text(json.dumps(numbers, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
