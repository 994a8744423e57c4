"""Regenerate tests/golden/ucofia.npz from UCoFiA's own code (Ziyang412/UCoFiA, commit 6098be2, eval_t2v).

    python scripts/golden/ucofia_reference.py /path/to/UCoFiA [--deps DIR]

Builds eval_t2v/modules/modeling_ucofia.UCoFiA (loose type, sim_header seqTransf, max_words 32, max_frames 12,
as scripts/eval_msrvtt.sh) on a small CLIP (tests/backbone_checkpoints.TINY_C4C_ARCH; every key name of the
release), loads seeded weights written in the release's layout by vtpipe's writer, and records:

* the key table of the reference model's state_dict (names and shapes);
* end to end: get_visual_output on two seeded videos (the second padded: 3 zero frames, mask 0), one video
  per call after torch.manual_seed(SELECTION_SEED) so the selector's noise is reproducible;
  get_sequence_output on 3 captions and get_train_sequence_output on 6 bank captions (token ids from
  vtpipe's tokenizer, recorded); the three level scores from get_similarity_logits, the per-level biases
  from sinkhorn_knopp over the bank's scores, and the SK-normed average the eval reports;
* at scale, on seeded features (10 captions, 8 videos with padding, a 40-caption bank): the same levels,
  biases and average.

eval_t2v's modules import boto3 / requests (file download helpers): stand-ins are used where missing. The CLIP tower is cast back to
float32 after loading (the reference converts it to fp16 for CUDA), so the goldens are float32 values.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))
import backbone_checkpoints as bc  # noqa: E402
from stages.backbones.clip import ClipTokenizer  # noqa: E402

WEIGHT_SEED, INPUT_SEED, SELECTION_SEED, FEATURE_SEED = 11, 5, 0, 23
MAX_WORDS, MAX_FRAMES = 32, 12
CAPTIONS = ["a man is slicing a tomato", "two dogs run on the beach", "a woman plays the guitar on stage"]
BANK = ["a cat sleeps", "people dance at a party", "a car drives fast", "someone cooks pasta", "kids play football",
        "a bird sings in a tree"]


def _stubs() -> None:
    boto3 = types.ModuleType("boto3")
    botocore = types.ModuleType("botocore")
    exc = types.ModuleType("botocore.exceptions")
    exc.ClientError = Exception
    botocore.exceptions = exc
    sys.modules.update({"boto3": boto3, "botocore": botocore, "botocore.exceptions": exc})
    try:
        import requests  # noqa: F401
    except ImportError:
        sys.modules["requests"] = types.ModuleType("requests")


def build_reference(ref: Path):
    sys.path.insert(0, str(ref / "eval_t2v"))
    _stubs()
    import modules.modeling_ucofia as mu
    from modules.module_cross import CrossConfig

    arch = bc.TINY_C4C_ARCH
    clip_sd = bc.clip_state_dict(arch, 0)
    cross = CrossConfig.from_json_file(str(ref / "eval_t2v" / "modules" / "cross-base" / "cross_config.json"))
    cross.hidden_size = arch["embed_dim"]  # frame_position_embeddings width = the tiny CLIP's
    task = types.SimpleNamespace(max_words=MAX_WORDS, max_frames=MAX_FRAMES, loose_type=True, linear_patch="2d",
                                 sim_header="seqTransf", cross_num_hidden_layers=4, local_rank=0)
    torch.manual_seed(0)
    model = mu.UCoFiA(cross, clip_sd, task)
    return model, mu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("reference", help="UCoFiA checkout (the folder holding eval_t2v/)")
    ap.add_argument("--deps", help="extra folder on sys.path")
    ap.add_argument("--out", default=str(REPO / "tests" / "golden" / "ucofia.npz"))
    args = ap.parse_args()
    if args.deps:
        sys.path.insert(0, args.deps)
    torch.set_num_threads(2)
    model, mu = build_reference(Path(args.reference).resolve())
    ref_table = {k: list(v.shape) for k, v in model.state_dict().items()}
    sd = bc.ucofia_state_dict(bc.TINY_C4C_ARCH, WEIGHT_SEED, MAX_WORDS, MAX_FRAMES)
    with tempfile.TemporaryDirectory() as tmp:
        path = bc.write_raw_state_dict(Path(tmp) / "pytorch_model.bin.4", sd)
        state = torch.load(path, map_location="cpu")
    model.load_state_dict(state, strict=True)
    model = model.float().eval()
    img = bc.TINY_C4C_ARCH["vision_cfg"]["image_size"]
    g = torch.Generator().manual_seed(INPUT_SEED)
    videos = torch.randn(2, MAX_FRAMES, 3, img, img, generator=g)
    vmask = torch.ones(2, MAX_FRAMES, dtype=torch.long)
    vmask[1, -3:] = 0
    videos[1, -3:] = 0.0  # CLIP4Clip's loader pads with zeros after normalisation
    tok = ClipTokenizer(MAX_WORDS)
    ids, bank_ids = tok(CAPTIONS), tok(BANK)
    with torch.no_grad():
        frames, pixels = [], []
        for i in range(2):
            torch.manual_seed(SELECTION_SEED)
            f, p = model.get_visual_output(videos[i][None, None, :, None], vmask[i][None])
            frames.append(f)
            pixels.append(p)
        frames, pixels = torch.cat(frames), torch.cat(pixels)
        seq, words = model.get_sequence_output(ids, torch.zeros_like(ids), (ids > 0).long())
        bseq, bwords = model.get_train_sequence_output(bank_ids, torch.zeros_like(bank_ids), (bank_ids > 0).long())

        def levels(s, w, f, p, m):
            return torch.stack(model.get_similarity_logits(s, w, f, p, torch.ones(len(s), MAX_WORDS), m,
                                                           loose_type=True)[:3])

        def sk_average(test_lv, bank_lv):
            biases = torch.stack([mu.sinkhorn_knopp(b)[1] for b in bank_lv])
            return biases, (test_lv + biases[:, None, :]).sum(0) / 3

        e2e = levels(seq, words, frames, pixels, vmask)
        e2e_bank = levels(bseq, bwords, frames, pixels, vmask)
        e2e_bias, e2e_final = sk_average(e2e, e2e_bank)
        # at scale, on seeded features
        gf = torch.Generator().manual_seed(FEATURE_SEED)
        d = bc.TINY_C4C_ARCH["embed_dim"]
        n, v, nb = 10, 8, 40
        f_sent, f_words = torch.randn(n, 1, d, generator=gf), torch.randn(n, MAX_WORDS, d, generator=gf)
        b_sent, b_words = torch.randn(nb, 1, d, generator=gf), torch.randn(nb, MAX_WORDS, d, generator=gf)
        f_frames = torch.randn(v, MAX_FRAMES, d, generator=gf)
        f_pixels = torch.randn(v, 4 * MAX_FRAMES, d, generator=gf) * 0.3
        f_mask = torch.ones(v, MAX_FRAMES, dtype=torch.long)
        f_mask[1, 7:] = 0
        f_mask[4, 2:] = 0
        feat = levels(f_sent, f_words, f_frames, f_pixels, f_mask)
        feat_bank = levels(b_sent, b_words, f_frames, f_pixels, f_mask)
        feat_bias, feat_final = sk_average(feat, feat_bank)
    np.savez_compressed(
        args.out,
        token_ids=ids.numpy(), bank_token_ids=bank_ids.numpy(), video_frames=frames.numpy(),
        video_pixels=pixels.numpy(), text_sentence=seq[:, 0].numpy(), text_words=words.numpy(),
        bank_sentence=bseq[:, 0].numpy(), bank_words=bwords.numpy(),
        e2e_levels=e2e.numpy(), e2e_biases=e2e_bias.numpy(), e2e_scores=e2e_final.numpy(),
        feat_sentence=f_sent[:, 0].numpy(), feat_words=f_words.numpy(), feat_bank_sentence=b_sent[:, 0].numpy(),
        feat_bank_words=b_words.numpy(), feat_frames=f_frames.numpy(), feat_pixels=f_pixels.numpy(),
        feat_mask=f_mask.numpy().astype(bool), feat_levels=feat.numpy(), feat_biases=feat_bias.numpy(),
        feat_scores=feat_final.numpy(),
        recipe=np.array(json.dumps({
            "reference": "Ziyang412/UCoFiA@6098be2 eval_t2v/modules/modeling_ucofia.py + main_ucofia.py",
            "weight_seed": WEIGHT_SEED, "input_seed": INPUT_SEED, "selection_seed": SELECTION_SEED,
            "feature_seed": FEATURE_SEED, "max_words": MAX_WORDS, "max_frames": MAX_FRAMES, "captions": CAPTIONS,
            "bank": BANK, "padded_frames_video1": 3, "arch_cfg": bc.TINY_C4C_ARCH, "key_table": ref_table,
        })),
    )
    print("levels e2e", e2e.shape, "feat", feat.shape, "->", args.out)


if __name__ == "__main__":
    main()
