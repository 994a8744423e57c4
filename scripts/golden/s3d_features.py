"""Feature golden of VT-TWINS from a video file: the reference model on the reference loader's clips.

    PATH=<dir with a 4.x ffmpeg>:$PATH python scripts/golden/s3d_features.py VTTWINS_CHECKOUT [--out tests/golden]

Run where the reference imports resolve (a scratch environment). With seeded random S3D-G weights in
VT-TWINS' layout that keep the input's signal (tests/golden_videos.py s3d_signal_weights), the
reference's s3dg.S3D (VT-TWINS 1103645, eval mode, float32, CPU) embeds the clips that
loader/msrvtt_loader.py cuts from tests/golden_videos.py's 16:9 video (2 windows at 20 fps, 32 frames;
`video / 255.0` as src/eval_msrvtt.py:56 does), and the 512-d clip embeddings go to
tests/golden/s3d_features.json. tests/test_s3d_clip_goldens.py runs vtpipe's vt-twins-msrvtt path from the
same video file with the same weights and compares.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
SEED = 11
VIDEO = "ntsc_426x240"
NUM_CLIPS = 2


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("vttwins", type=Path)
    ap.add_argument("--out", type=Path, default=ROOT / "tests/golden")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT / "tests"))
    sys.path.insert(0, str(ROOT))
    import torch
    from golden_videos import make_videos, s3d_signal_weights

    sys.path.insert(0, str(args.vttwins))
    from s3dg import S3D

    tmp = Path(tempfile.mkdtemp(prefix="s3d_features_"))
    path = make_videos(tmp, names=[VIDEO])[VIDEO]
    sd = s3d_signal_weights(SEED, space_to_depth=False)
    torch.save(sd["text_module.word_embd.weight"], tmp / "word2vec.pth")
    np.save(tmp / "dict.npy", np.array(["a", "b"]))
    model = S3D(512, space_to_depth=False, word2vec_path=str(tmp / "word2vec.pth"), token_to_word_path=str(tmp / "dict.npy"))
    model.load_state_dict(sd)
    model.eval()

    spec = importlib.util.spec_from_file_location("vt_msrvtt", args.vttwins / "loader/msrvtt_loader.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ld = mod.MSRVTT_DataLoader.__new__(mod.MSRVTT_DataLoader)
    ld.size, ld.num_frames, ld.fps, ld.num_clip = 224, 32, 20, NUM_CLIPS
    ld.num_sec, ld.crop_only, ld.center_crop = 32 / 20.0, False, True
    import av

    with av.open(str(path)) as c:
        duration = float(f"{c.duration / 1e6:.6f}")  # ffprobe's format duration, as _get_duration reads it
    video = ld._get_video(str(path), 0, duration, NUM_CLIPS).float() / 255.0
    with torch.no_grad():
        emb = model(video, None, mode="video").numpy().astype(np.float64)
    doc = {"about": "VT-TWINS s3dg.S3D (1103645) embeddings of loader/msrvtt_loader.py clips, random weights "
                    "from tests/golden_videos.py s3d_signal_weights; written by scripts/golden/s3d_features.py",
           "seed": SEED, "space_to_depth": False, "video": VIDEO, "fps": 20, "num_frames": 32, "num_clips": NUM_CLIPS,
           "end": duration, "weights_sum": float(sum(float(v.double().sum()) for v in sd.values())),
           "torch": torch.__version__, "clip_embeddings": emb.tolist()}
    (args.out / "s3d_features.json").write_text(json.dumps(doc) + "\n")
    print("clip embeddings", emb.shape, "norms", np.linalg.norm(emb, axis=1))


if __name__ == "__main__":
    main(sys.argv[1:])
