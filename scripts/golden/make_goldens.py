"""Regenerate tests/golden/geometry.{npz,json}: what each reference reader feeds its model, from video files.

Usage (reference checkouts fetched by the developer, never committed; see /work/shared/specs/fidelity.md for
the commits):

    python scripts/golden/make_goldens.py --clip4clip REF/CLIP4Clip --drl REF/DRL --locvtp REF/LocVTP \
        --tvts REF/TVTS [--videos-only]

Needs, besides vtpipe's own dependencies: opencv-python-headless (CLIP4Clip's and TVTSv2's cv2 readers),
av (PyAV: LocVTP reads with torchvision.io.read_video, which is PyAV) and scikit-image (imported by TVTSv2's
video_transforms). The tests need none of them, nor the references.

1. The videos: generated here with ffmpeg (imageio-ffmpeg's binary), once, into tests/golden/videos/ (they are
   committed: the tests read the same bytes). testsrc2 content (sharp edges, text, colour bars).
2. For each video and protocol, the reference's own reader and transform run (imported from the checkout
   where its module imports; where it cannot be imported, its statements are taken from the file with `ast`
   and executed with the same libraries: see SOURCES for file:line of each). Written: the frame indices the
   reader took, the padding mask, the preprocessed input of the middle real frame (and the padding frames'
   maximum absolute value), quantised to uint8 grey levels (x * std + mean) * 255, rounded.

Interpretation of library versions: torchvision's Resize on tensors had no antialias before 0.17 (LocVTP's
code is from 2022): the "locvtp" golden passes antialias=False to the reference's Resize(112), and
"locvtp-tv017" the modern default (antialias=True). Pillow's resampling has not changed in the versions the
references used (Pillow >= 7).
"""

from __future__ import annotations

import argparse
import ast
import functools
import hashlib
import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "tests" / "golden"
VIDEOS = OUT / "videos"

# name -> (testsrc2 size, rate, duration, extra -vf filters, extra output args); every one 'shorter than a
# clip', VFR, 29.97, portrait, 16:9, MSR-VTT's 320x240 and an anamorphic one
VIDEO_SPECS = {
    "msrvtt_320x240": ("320x240", "30", 13.0, "", []),
    "wide_640x360": ("640x360", "25", 4.0, "", []),
    "portrait_360x640": ("360x640", "25", 3.0, "", []),
    "ntsc_352x288_2997": ("352x288", "30000/1001", 5.0, "", []),
    "vfr_320x240": ("320x240", "30", 5.0, "select='lt(n\\,45)+not(mod(n\\,3))'", ["-fps_mode", "vfr"]),
    "short_176x144": ("176x144", "30", 0.3, "", []),
    "anamorphic_176x144": ("176x144", "25", 3.0, "setsar=128/117:max=1000", []),  # SAR exactly 128:117
}

SOURCES = {
    "clip4clip": "dataloaders/rawvideo_util.py:16-23 (Resize(224, BICUBIC) on PIL, CenterCrop, ToTensor, CLIP "
                 "Normalize), :25-73 (cv2 reader, 1 fps); dataloaders/dataloader_msrvtt_retrieval.py:84-129 "
                 "(max_frames 12, slice_framepos 2 linspace, zero padding) -- imported and run",
    "drl": "tvr/dataloaders/dataloader_retrieval.py:55-62 (transform), :156-211 _get_rawvideo_dec (decord, "
           "1 fps stride, linspace to 12, zero padding) -- imported and run",
    "tvtsv2-extract": "v2/downstream/feature_extraction_TVTSv2_B_32.py:54-76 (decord num_threads=1, "
                      "linspace(0, n-1, 12).astype(int), Resize((224, 224)) on PIL, ToTensor, ImageNet Normalize) "
                      "-- statements taken with ast from run() and executed (the script imports sacred/transformers)",
    "tvtsv2-zeroshot": "v2/base/base_dataset.py:102-131 (__getitem__: test split, 'uniform' sampling, zero "
                       "padding after the transform), :270-313 (sample_frames, read_frames_cv2); "
                       "v2/video_transforms/videoaug.py:18-24 (test transform: Resize(268) nearest on PIL, "
                       "CenterCrop 224, ClipToTensor, ImageNet Normalize) -- imported and run",
    "locvtp": "clip/data/datasets/howto.py:521-525 (BatchTensorNorm), :546-555 (get_transforms: Resize(112), "
              "CenterCrop(112), Normalize 0.5) -- definitions taken with ast and executed, Resize with "
              "antialias=False (torchvision < 0.17); frames decoded with PyAV as torchvision.io.read_video does",
    "locvtp-tv017": "as locvtp, Resize with torchvision >= 0.17's default antialias=True",
}

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMNET_MEAN = (0.485, 0.456, 0.406)
IMNET_STD = (0.229, 0.224, 0.225)
STATS = {"clip4clip": (CLIP_MEAN, CLIP_STD), "drl": (CLIP_MEAN, CLIP_STD), "tvtsv2-extract": (IMNET_MEAN, IMNET_STD),
         "tvtsv2-zeroshot": (IMNET_MEAN, IMNET_STD), "locvtp": ((0.5,) * 3, (0.5,) * 3),
         "locvtp-tv017": ((0.5,) * 3, (0.5,) * 3)}


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def make_videos(force: bool = False) -> None:
    VIDEOS.mkdir(parents=True, exist_ok=True)
    for name, (size, rate, dur, vf, extra) in VIDEO_SPECS.items():
        dst = VIDEOS / f"{name}.mp4"
        if dst.exists() and not force:
            continue
        cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
               "-i", f"testsrc2=size={size}:rate={rate}:duration={dur}"]
        if vf:
            cmd += ["-vf", vf]
        cmd += [*extra, "-c:v", "libx264", "-preset", "veryfast", "-crf", "28", "-pix_fmt", "yuv420p", "-threads", "1",
                "-map_metadata", "-1", "-fflags", "+bitexact", "-flags:v", "+bitexact", str(dst)]
        subprocess.run(cmd, check=True)
        print("wrote", dst, dst.stat().st_size, "bytes")


# --- the reference readers -----------------------------------------------------------------------------------
def _np_shims() -> None:
    """The references use numpy aliases removed in numpy 1.24 (np.float, np.long): put them back."""
    if not hasattr(np, "float"):
        np.float = float  # type: ignore[attr-defined]
    if not hasattr(np, "long"):
        np.long = np.int64  # type: ignore[attr-defined]


def _match_rows(out: np.ndarray, candidates: list[np.ndarray]) -> list[int]:
    """For each output frame, the position of the identical candidate frame (-1 for a padding frame)."""
    idx = []
    for fr in out:
        hit = [j for j, c in enumerate(candidates) if c.shape == fr.shape and np.array_equal(c, fr)]
        idx.append(hit[0] if hit else -1)
    return idx


def run_clip4clip(ref: Path, video: Path) -> dict:
    sys.path.insert(0, str(ref))
    try:
        from dataloaders import dataloader_msrvtt_retrieval as dl
        from dataloaders import rawvideo_util as rv
    finally:
        sys.path.pop(0)
    _np_shims()
    reads: list[int] = []
    real_cap = rv.cv2.VideoCapture

    class Recording:  # the reference's cv2.VideoCapture, remembering the position of each successful read
        def __init__(self, path):
            self.cap, self.pos = real_cap(path), 0

        def get(self, prop):
            return self.cap.get(prop)

        def set(self, prop, value):
            if prop == rv.cv2.CAP_PROP_POS_FRAMES:
                self.pos = int(value)
            return self.cap.set(prop, value)

        def read(self):
            ret, frame = self.cap.read()
            if ret:
                reads.append(self.pos)
            return ret, frame

        def release(self):
            self.cap.release()

    rv.cv2.VideoCapture = Recording
    try:
        loader = object.__new__(dl.MSRVTT_DataLoader)
        loader.features_path, loader.max_frames, loader.slice_framepos, loader.frame_order = str(video.parent), 12, 2, 0
        loader.rawVideoExtractor = rv.RawVideoExtractor(framerate=1, size=224)
        video_arr, mask = loader._get_rawvideo([video.stem])
        every = loader.rawVideoExtractor.get_video_data(str(video))["video"].numpy()  # each read frame, transformed
    finally:
        rv.cv2.VideoCapture = real_cap
    out = video_arr[0, :, 0].astype(np.float32)  # [12, 3, 224, 224]
    m = mask[0].astype(bool)
    pos = _match_rows(out[m], [e.astype(np.float32) for e in every])
    positions = reads[: len(every)]
    return {"input": out, "mask": m, "indices": [positions[j] for j in pos] + [-1] * int((~m).sum())}


def run_drl(ref: Path, video: Path) -> dict:
    sys.path.insert(0, str(ref))
    try:
        from tvr.dataloaders import dataloader_retrieval as dl
    finally:
        sys.path.pop(0)
    _np_shims()
    taken: list[int] = []
    real_vr = dl.VideoReader

    def recording_vr(*a, **kw):
        vr = real_vr(*a, **kw)
        get_batch = vr.get_batch

        class Wrapped:
            def __getattr__(self, k):
                return getattr(vr, k)

            def __len__(self):
                return len(vr)

            def get_batch(self, idx):
                taken.extend(int(i) for i in idx)
                return get_batch(idx)

        return Wrapped()

    class Fake(dl.RetrievalDataset):  # only what _get_rawvideo_dec reads; __init__ builds the real transform
        def _get_anns(self, subset="train"):
            return {video.stem: str(video)}, {0: (video.stem, ("x", None, None))}

    dl.VideoReader = recording_vr
    try:
        ds = Fake("test", None, None, tokenizer=None, max_words=32, max_frames=12, video_framerate=1,
                  image_resolution=224, mode="video")
        arr, mask = ds._get_rawvideo_dec(video.stem)
    finally:
        dl.VideoReader = real_vr
    m = mask.astype(bool)
    return {"input": arr.astype(np.float32), "mask": m, "indices": taken + [-1] * int((~m).sum())}


def _statements(path: Path, func: str, targets: set[str]) -> str:
    """Source of the assignments to `targets` inside def `func` of `path` (in order)."""
    tree = ast.parse(path.read_text())
    fn = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == func)
    keep = [st for st in fn.body if isinstance(st, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id in targets for t in st.targets)]
    return "\n".join(ast.get_source_segment(path.read_text(), st) for st in keep)


def run_tvtsv2_extract(ref: Path, video: Path) -> dict:
    import torch
    from decord import VideoReader, cpu
    from PIL import Image
    from torchvision import transforms

    script = ref / "v2" / "downstream" / "feature_extraction_TVTSv2_B_32.py"
    ns = {"transforms": transforms, "VideoReader": VideoReader, "cpu": cpu, "np": np, "Image": Image, "torch": torch,
          "args": types.SimpleNamespace(video_path=str(video))}
    exec(_statements(script, "run", {"transform", "video_path", "vr", "n_frames", "n_frames_sample", "sample_idx",
                                     "sample_frames"}), ns)  # noqa: S102 - the reference's own statements
    frames = np.asarray(ns["sample_frames"])  # the reference statements already called .asnumpy()
    inputs = [ns["transform"](Image.fromarray(frames[i], mode="RGB")) for i in range(ns["n_frames_sample"])]
    out = torch.stack(inputs).numpy()
    return {"input": out, "mask": np.ones(len(out), bool), "indices": [int(i) for i in ns["sample_idx"]]}


def run_tvtsv2_zeroshot(ref: Path, video: Path) -> dict:
    import pandas as pd

    import importlib.util

    # base/__init__.py imports the trainer (tensorboard, humanize, ...): load base_dataset.py on its own; its
    # `video_transforms.videoaug` import needs v2/ on the path
    sys.path.insert(0, str(ref / "v2"))
    try:
        spec = importlib.util.spec_from_file_location("tvts_base_dataset", ref / "v2" / "base" / "base_dataset.py")
        bd = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(bd)
    finally:
        sys.path.pop(0)
    taken: list[int] = []

    class One(bd.TextVideoDataset):
        def _load_metadata(self):
            self.metadata = pd.DataFrame([{"path": str(video)}])

        def _get_video_path(self, sample):
            return sample["path"], sample["path"]

        def _get_caption(self, sample):
            return "x"

    ds = One("golden", {}, {"num_frames": 12, "input_res": 224}, str(video.parent), split="test", reader="cv2")
    reader = ds.video_reader

    def recording(*a, **kw):
        imgs, idxs = reader(*a, **kw)
        taken.extend(int(i) for i in idxs)
        return imgs, idxs

    ds.video_reader = recording
    out = ds[0]["video"].numpy()  # [12, 3, 224, 224], zero rows after the real frames
    m = np.zeros(12, bool)
    m[: len(taken)] = True
    return {"input": out, "mask": m, "indices": taken + [-1] * (12 - len(taken))}


def _locvtp_transform(ref: Path, antialias: bool):
    import torch
    import torchvision.transforms as tv_transforms

    src = (ref / "clip" / "data" / "datasets" / "howto.py").read_text()
    tree = ast.parse(src)
    defs = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))
            and n.name in ("BatchTensorNorm", "get_transforms")]
    names = [n.name for n in defs]
    # the file defines get_transforms twice (the first inside a string): the last definition wins, as in Python
    shim = types.SimpleNamespace(**{k: getattr(tv_transforms, k) for k in dir(tv_transforms) if not k.startswith("_")})
    shim.Resize = functools.partial(tv_transforms.Resize, antialias=antialias)
    shim.functional = tv_transforms.functional
    ns = {"torch": torch, "transforms": shim}
    for n in defs:
        exec(ast.get_source_segment(src, n), ns)  # noqa: S102 - the reference's own definitions
    assert "get_transforms" in names and "BatchTensorNorm" in names
    return ns["get_transforms"]()


def pyav_frames(video: Path) -> np.ndarray:
    """Every frame in presentation order, RGB uint8, decoded by PyAV as torchvision.io.read_video does."""
    import av

    with av.open(str(video)) as c:
        frames = [f for f in c.decode(video=0)]
    frames.sort(key=lambda f: f.pts)
    return np.stack([f.to_rgb().to_ndarray() for f in frames])


def run_locvtp(ref: Path, video: Path, antialias: bool) -> dict:
    import torch

    frames = pyav_frames(video)
    picks = sorted({0, len(frames) // 2, len(frames) - 1})
    tf = _locvtp_transform(ref, antialias)
    out = tf(torch.from_numpy(frames[picks])).numpy()  # the transform works on a [T, H, W, C] uint8 batch
    return {"input": out, "mask": np.ones(len(picks), bool), "indices": picks, "num_frames": len(frames)}


# --- writing -------------------------------------------------------------------------------------------------
def grey_levels(x: np.ndarray, mean, std) -> np.ndarray:
    """Normalised input [..., 3, H, W] -> uint8 grey levels (x * std + mean) * 255, rounded and clipped."""
    m = np.asarray(mean, np.float64).reshape(3, 1, 1)
    s = np.asarray(std, np.float64).reshape(3, 1, 1)
    return np.clip(np.rint((x.astype(np.float64) * s + m) * 255.0), 0, 255).astype(np.uint8)


def versions() -> dict:
    import decord
    import PIL
    import torch
    import torchvision

    out = {"Pillow": PIL.__version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
           "decord": decord.__version__, "numpy": np.__version__}
    for mod in ("cv2", "av"):
        try:
            out[mod] = __import__(mod).__version__
        except ImportError:
            pass
    return out


def git_head(path: Path) -> str:
    try:
        return subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clip4clip", type=Path)
    ap.add_argument("--drl", type=Path)
    ap.add_argument("--locvtp", type=Path)
    ap.add_argument("--tvts", type=Path)
    ap.add_argument("--videos-only", action="store_true")
    ap.add_argument("--force-videos", action="store_true", help="re-encode the videos (changes their bytes)")
    args = ap.parse_args()
    make_videos(args.force_videos)
    if args.videos_only:
        return
    runners = {
        "clip4clip": (args.clip4clip, run_clip4clip),
        "drl": (args.drl, run_drl),
        "tvtsv2-extract": (args.tvts, run_tvtsv2_extract),
        "tvtsv2-zeroshot": (args.tvts, run_tvtsv2_zeroshot),
        "locvtp": (args.locvtp, functools.partial(run_locvtp, antialias=False)),
        "locvtp-tv017": (args.locvtp, functools.partial(run_locvtp, antialias=True)),
    }
    arrays: dict[str, np.ndarray] = {}
    meta: dict = {"versions": versions(), "sources": SOURCES, "references": {}, "videos": {}, "goldens": {}}
    for proto, (ref, fn) in runners.items():
        if ref is None:
            print("skipping", proto, "(no checkout given)")
            continue
        meta["references"][proto] = {"path_name": ref.name, "commit": git_head(ref)}
        for name in VIDEO_SPECS:
            video = VIDEOS / f"{name}.mp4"
            meta["videos"][name] = hashlib.sha256(video.read_bytes()).hexdigest()
            res = fn(ref, video)
            x, mask = np.asarray(res["input"], np.float32), np.asarray(res["mask"], bool)
            real = np.flatnonzero(mask)
            keep = [int(real[len(real) // 2])] if len(real) else []  # one real frame: the middle one
            key = f"{proto}/{name}"
            arrays[key] = grey_levels(x[keep], *STATS[proto])
            meta["goldens"][key] = {
                "indices": [int(i) for i in res["indices"]],
                "mask": mask.astype(int).tolist(),
                "stored": keep,  # positions (in indices) whose grey levels are in the npz
                "shape": list(x.shape),
                "pad_max_abs": float(np.abs(x[~mask]).max()) if (~mask).any() else None,
                **({"num_frames": res["num_frames"]} if "num_frames" in res else {}),
            }
            print(key, "indices", meta["goldens"][key]["indices"], "shape", x.shape)
    np.savez_compressed(OUT / "geometry.npz", **arrays)
    (OUT / "geometry.json").write_text(json.dumps(meta, indent=1) + "\n")
    print("wrote", OUT / "geometry.npz", (OUT / "geometry.npz").stat().st_size, "bytes")


if __name__ == "__main__":
    main()
