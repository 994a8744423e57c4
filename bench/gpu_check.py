"""One prepared device check: every CUDA path of vtpipe, measured against the CPU, in one command.

    .venv/bin/python bench/gpu_check.py --out gpu_check.json        # on a CUDA machine: about 5 minutes
    .venv/bin/python bench/gpu_check.py --dry-run --out /tmp/x.json  # anywhere: the same code, tiny, CPU only

Steps (each one's failure is recorded with its reason and the others still run; the JSON is rewritten after
every step, so a run cut short keeps what it measured; a step that would start after --budget-s is skipped):
  extract   the embedded sample (24 clips) and generated 640x360 30 fps clips through the extraction engine
            with clip-vit-b-32 (random weights): on CUDA in fp32 and under each autocast dtype (bf16, fp16),
            and on the CPU. Per run: max abs difference of unit and pooled features to the CPU run, lowest
            pooled cosine, frames/s, and the ratio to the bare model forward on the same device and dtype
            (the ratio bench/extract.py reports on the CPU).
  decode    GPU decoding: whether decord was built with CUDA, what read_video(ctx="gpu") does (NVDEC, or the
            CPU fallback and its warning), frames/s and pixel difference to CPU decoding.
  families  every registered model (hence every family) once, random weights, on a short generated clip and
            one caption: CUDA fp32 and CUDA bf16 against the CPU (models not started within 0.7 x --budget-s
            are listed as skipped).
  faiss     the automatic index of the index stage for 1M x 512 synthetic clustered vectors (bench/index.py's
            generator), built on the GPU and on the CPU: factory, recall@10, queries/s, build seconds (with
            a CPU-only faiss the GPU build is reported missing and the CPU build is not repeated here).
The autocast dtype of a loaded model is switched between runs (model.amp_dtype, read by every forward).

--dry-run (what CI runs, tests/test_gpu_check.py): every import, the plan, and each step's code at tiny sizes
with the CPU standing in for CUDA (the comparisons then read zero), so the script cannot rot unseen.
Exit status: 0 when every step ran, 1 when a step failed (its error is in the JSON and the table).
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "bench")]

import torch  # noqa: E402

from stages.backbones.registry import FAMILIES, list_models, load_model  # noqa: E402
from stages.features.engine import run_engine  # noqa: E402
from stages.video.decode import read_video  # noqa: E402

from gpu_check_report import Report, summary  # noqa: E402 (bench/, beside this file)

SIZES = {
    "real": {"clips": 8, "clip_seconds": 20.0, "batch": 64, "amps": ["none", "bf16", "fp16"],
             "family_seconds": 2.0, "faiss_n": 1_000_000, "faiss_d": 512, "faiss_clusters": 5000,
             "decode_seconds": 20.0, "models": "all"},
    "dry": {"clips": 1, "clip_seconds": 1.0, "batch": 4, "amps": ["none"], "family_seconds": 1.0,
            "faiss_n": 5000, "faiss_d": 32, "faiss_clusters": 20, "decode_seconds": 1.0, "models": "shapes-tiny"},
}
EXTRACT_MODEL = "clip-vit-b-32"
CAPTION = ["a red square moving left"]


def _load_file_module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


# ---- environment ------------------------------------------------------------------------------------------------
def environment() -> dict:
    import decord
    import faiss

    from stages import __version__
    from stages.ann.gpu import num_gpus

    cuda = torch.cuda.is_available()
    return {
        "vtpipe": __version__, "python": platform.python_version(), "torch": torch.__version__,
        "torch_cuda": torch.version.cuda, "cuda_available": cuda,
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "gpu_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if cuda else None,
        "bf16_supported": bool(cuda and torch.cuda.is_bf16_supported()),
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        "faiss": faiss.__version__, "faiss_gpus": num_gpus(), "decord": decord.__version__,
        "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
    }


# ---- inputs -----------------------------------------------------------------------------------------------------
def make_inputs(tmp: Path, sizes: dict, dry: bool) -> dict:
    """The sample's clips (all 24, or 1 in a dry run) and generated 640x360 30 fps clips."""
    from pipeline.demo import sample_generator
    from video_factory import make_testsrc_video

    gen = sample_generator()
    specs = gen.test_specs(gen.DEFAULT_SEED)[: 1 if dry else None]
    sample = [(s.video_id, str(p)) for s, p in zip(specs, gen.write_videos(specs, tmp / "sample"))]
    clips = []
    for i in range(sizes["clips"]):
        p = make_testsrc_video(tmp / f"clip{i}.mp4", sizes["clip_seconds"], width=640, height=360, fps=30)
        clips.append((f"clip{i}", str(p)))
    short = make_testsrc_video(tmp / "short.mp4", sizes["family_seconds"], width=320, height=240, fps=30)
    return {"videos": sample + clips, "sample": len(sample), "clips": len(clips), "short": str(short), "tmp": tmp}


# ---- extract ----------------------------------------------------------------------------------------------------
def _engine_run(model, videos, batch: int, workers: int) -> tuple[dict, dict]:
    feats: dict = {}
    t = time.perf_counter()
    stats = run_engine(model, videos, model.info.sampling, lambda vid, f, ts, m, pooled: feats.__setitem__(
        vid, (f.copy(), pooled.copy())), lambda vid, reason, detail: feats.__setitem__(vid, reason),
        batch_size=batch, decode_workers=workers)
    stats["wall_seconds"] = time.perf_counter() - t
    return feats, stats


def _bare_forward_fps(model, units: int, batch: int, sync: bool) -> float:
    """Frames/s of model.encode_units alone (host tensor in, float32 host tensor out), as bench/extract.py."""
    pre = model.preprocess()
    x = torch.from_numpy(pre(np.zeros((batch, 240, 320, 3), np.uint8)))
    model.encode_units(x)  # warm-up: allocation, kernel selection
    if sync:
        torch.cuda.synchronize()
    t, done = time.perf_counter(), 0
    while done < units:
        n = min(batch, units - done)
        model.encode_units(x[:n])
        done += n
    if sync:
        torch.cuda.synchronize()
    return done / (time.perf_counter() - t)


def compare(ref: dict, got: dict) -> dict:
    """Max abs difference of unit and pooled features over shared videos, and the lowest pooled cosine."""
    unit_d = pooled_d = 0.0
    cos_min, scale = 1.0, 0.0
    failed = sorted(k for k, v in {**ref, **got}.items() if isinstance(v, str))
    for vid, r in ref.items():
        g = got.get(vid)
        if isinstance(r, str) or g is None or isinstance(g, str):
            continue
        unit_d = max(unit_d, float(np.abs(r[0] - g[0]).max()))
        pooled_d = max(pooled_d, float(np.abs(r[1] - g[1]).max()))
        scale = max(scale, float(np.abs(r[0]).max()))
        den = max(float(np.linalg.norm(r[1]) * np.linalg.norm(g[1])), 1e-12)
        cos_min = min(cos_min, float(np.dot(r[1], g[1]) / den))
    return {"max_abs_diff_units": unit_d, "max_abs_diff_pooled": pooled_d, "cpu_feature_max_abs": scale,
            "min_cosine_pooled": cos_min, "failed_videos": failed}


def extract_step(inputs: dict, sizes: dict, gpu: str) -> dict:
    videos, batch = inputs["videos"], sizes["batch"]
    workers = max(1, min(8, (os.cpu_count() or 2) - 2))
    out: dict = {"model": EXTRACT_MODEL, "videos": len(videos), "sample_videos": inputs["sample"],
                 "generated_640x360": inputs["clips"], "batch": batch, "decode_workers": workers, "runs": {}}
    cpu_model = load_model(EXTRACT_MODEL, device="cpu", allow_random=True)
    ref, stats = _engine_run(cpu_model, videos, batch, workers)
    units = int(stats["units"])
    cpu_fps = units / stats["wall_seconds"]
    bare = _bare_forward_fps(cpu_model, min(units, 4 * batch if gpu != "cpu" else batch), batch, sync=False)
    out["units"] = units
    out["runs"]["cpu fp32 (reference)"] = {"frames_per_s": round(cpu_fps, 1), "bare_forward_frames_per_s": round(bare, 1),
                               "ratio_to_bare": round(cpu_fps / bare, 3)}
    del cpu_model
    model = load_model(EXTRACT_MODEL, device=gpu, allow_random=True)
    for amp in sizes["amps"]:
        model.amp_dtype = None if amp == "none" else amp  # read by every forward (VideoTextModel.autocast)
        got, stats = _engine_run(model, videos, batch, workers)
        fps = int(stats["units"]) / stats["wall_seconds"]
        bare = _bare_forward_fps(model, units, batch, sync=gpu.startswith("cuda"))
        out["runs"][f"{gpu} {'fp32' if amp == 'none' else amp}"] = {
            "frames_per_s": round(fps, 1), "bare_forward_frames_per_s": round(bare, 1),
            "ratio_to_bare": round(fps / bare, 3), **compare(ref, got)}
    return out


# ---- every registered model ------------------------------------------------------------------------------------
def _side_files(m, tmp: Path) -> dict | None:
    """Files a text tower needs even with random weights: the word list (`dict`) of s3d-howto100m / vt-twins,
    written in the release's .npy layout (tests/backbone_checkpoints.py)."""
    if "dict" not in m.files:
        return None
    from backbone_checkpoints import write_word_dict

    words = sorted({w for c in CAPTION for w in c.split()} | {"the", "man", "dog"})
    return {"dict": str(write_word_dict(tmp / f"{m.name}-dict.npy", words))}


def _text_diff(model, ref_text) -> float | str:
    try:
        return float(np.abs(model.encode_text(CAPTION).pooled - ref_text).max())
    except Exception as e:  # noqa: BLE001 - the video figures of this model still count
        return f"{type(e).__name__}: {e}"[:300]


def families_step(inputs: dict, sizes: dict, gpu: str, deadline: float) -> dict:
    infos = list_models()
    chosen = infos if sizes["models"] == "all" else [m for m in infos if m.name == sizes["models"]]
    plan = {m.name: {"family": m.family, "loader": FAMILIES[m.family], "unit": m.unit, "sampling": m.sampling}
            for m in infos}
    for m in infos:  # the plan: every family's loader imports, every sampling policy selects units of the clip
        mod, fn = FAMILIES[m.family].split(":")
        getattr(importlib.import_module(mod), fn)
        plan[m.name]["units_of_short_clip"] = read_video(inputs["short"], m.sampling, short_side=64).selection.num_units
    results = {}
    video = [("short", inputs["short"])]
    for m in chosen:
        row: dict = {"family": m.family}
        if time.perf_counter() > deadline:
            results[m.name] = {**row, "skipped": "time budget spent"}
            continue
        try:
            files = _side_files(m, inputs["tmp"])
            cpu = load_model(m.name, weights=files, device="cpu", allow_random=True)
            ref, _ = _engine_run(cpu, video, 16, 0)
            try:
                ref_text = cpu.encode_text(CAPTION).pooled
            except Exception as e:  # noqa: BLE001
                ref_text, row["text_error"] = None, f"{type(e).__name__}: {e}"[:300]
            del cpu
            model = load_model(m.name, weights=files, device=gpu, allow_random=True)
            for amp in ("none", "bf16"):
                model.amp_dtype = None if amp == "none" else amp
                t = time.perf_counter()
                got, _ = _engine_run(model, video, 16, 0)
                row[f"{gpu} {'fp32' if amp == 'none' else amp}"] = {
                    **compare(ref, got), "seconds": round(time.perf_counter() - t, 3),
                    "max_abs_diff_text": _text_diff(model, ref_text) if ref_text is not None else None}
            del model
            if gpu.startswith("cuda"):
                torch.cuda.empty_cache()
        except Exception as e:  # noqa: BLE001 - recorded per model; the other models still run
            row["error"] = f"{type(e).__name__}: {e}"[:1000]
        results[m.name] = row
    return {"plan": plan, "results": results}


# ---- GPU decoding -----------------------------------------------------------------------------------------------
def decode_step(tmp: Path, sizes: dict) -> dict:
    import decord

    from stages.video.decode import open_reader
    from video_factory import make_testsrc_video

    path = str(make_testsrc_video(tmp / "decode.mp4", sizes["decode_seconds"], width=640, height=360, fps=30))
    out: dict = {"decord": decord.__version__}
    try:
        decord.VideoReader(path, ctx=decord.gpu(0))
        out["decord_cuda_build"] = True
    except Exception as e:  # noqa: BLE001 - decord's own words for "built without CUDA" or "no device"
        out["decord_cuda_build"] = False
        out["decord_gpu_error"] = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    logging.getLogger("stages.video.decode").addHandler(handler)
    try:
        _, device = open_reader(path, -1, -1, 0, "gpu")
    finally:
        logging.getLogger("stages.video.decode").removeHandler(handler)
    out["read_video_gpu_device"] = device
    out["fallback_warning"] = buf.getvalue().strip() or None
    timings = {}
    frames = {}
    for ctx in ("cpu", "gpu"):
        t = time.perf_counter()
        dec = read_video(path, {"policy": "fps", "fps": 3}, short_side=224, ctx=ctx)
        timings[ctx] = time.perf_counter() - t
        frames[ctx] = dec.frames
        out[f"{ctx}_decoded_on"] = dec.device
    n = len(frames["cpu"])
    out.update(frames=n, cpu_frames_per_s=round(n / timings["cpu"], 1), gpu_frames_per_s=round(n / timings["gpu"], 1),
               max_abs_pixel_diff=int(np.abs(frames["cpu"].astype(np.int16) - frames["gpu"].astype(np.int16)).max())
               if frames["cpu"].shape == frames["gpu"].shape else f"shapes {frames['cpu'].shape} vs {frames['gpu'].shape}")
    return out


# ---- FAISS -----------------------------------------------------------------------------------------------------
def faiss_step(sizes: dict, dry: bool) -> dict:
    from stages.ann.build import build
    from stages.ann.gpu import num_gpus
    from stages.ann.vectors import ArrayVectors
    bench_index = _load_file_module("vtpipe_bench_index", REPO / "bench" / "index.py")
    t = time.perf_counter()
    x, _ = bench_index.clustered(sizes["faiss_n"], sizes["faiss_d"], sizes["faiss_clusters"], 0, 0)
    out: dict = {"n": len(x), "d": x.shape[1], "data_seconds": round(time.perf_counter() - t, 1), "builds": {}}
    keep = ("factory", "device", "gpu_fallback", "gpus", "recall_at_1", "recall_at_10", "queries_per_s",
            "exact_queries_per_s", "speedup_vs_exact", "search_params", "train_seconds", "add_seconds",
            "tune_seconds", "build_seconds")
    if not dry and num_gpus() == 0:  # a CPU-only faiss: the 1M CPU build alone would say nothing about GPUs
        out["builds"]["gpu"] = {"error": "FAISS sees no GPU (a CPU-only faiss build, or CUDA not visible to it)"}
        out["builds"]["cpu"] = {"skipped": "no GPU build to compare with (bench/index.py measures the CPU build)"}
        return out
    for device in ("cpu",) if dry else ("gpu", "cpu"):
        t = time.perf_counter()
        try:
            _, infos = build(ArrayVectors(x), "auto", "ip", "4G", device=device)
            out["builds"][device] = {k: infos.get(k) for k in keep}
        except Exception as e:  # noqa: BLE001 - e.g. a CPU-only faiss: record it, build the other one
            out["builds"][device] = {"error": f"{type(e).__name__}: {e}"[:1000]}
        out["builds"][device]["wall_seconds"] = round(time.perf_counter() - t, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="gpu_check.json", help="the JSON file of every figure")
    ap.add_argument("--dry-run", action="store_true", help="imports, plan, tiny CPU run of every step (no GPU)")
    ap.add_argument("--budget-s", type=float, default=420.0, help="start no step after this many seconds")
    ap.add_argument("--steps", default="extract,families,decode,faiss", help="comma-separated subset")
    args = ap.parse_args(argv)
    mode = "dry" if args.dry_run else "real"
    if mode == "real" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device visible (torch.cuda.is_available() is False); use --dry-run", file=sys.stderr)
        return 2
    sizes, gpu = SIZES[mode], "cpu" if args.dry_run else "cuda"
    torch.set_grad_enabled(False)
    report = Report(Path(args.out), args.budget_s, mode)
    report.data["sizes"] = sizes
    report.run("environment", environment)
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    with tempfile.TemporaryDirectory(prefix="vtpipe-gpu-check-") as d:
        tmp = Path(d)
        try:
            inputs = make_inputs(tmp, sizes, args.dry_run)
        except Exception as e:  # noqa: BLE001 - e.g. no ffmpeg: the FAISS step needs no videos
            report.data["errors"]["inputs"] = f"{type(e).__name__}: {e}"[:2000]
            inputs = None
        # families: models not started by then are listed as skipped, leaving time for the FAISS builds
        deadline = report.t0 + 0.7 * args.budget_s
        for name, fn, fargs in (("extract", extract_step, (inputs, sizes, gpu)),
                                ("decode", decode_step, (tmp, sizes)),
                                ("families", families_step, (inputs, sizes, gpu, deadline)),
                                ("faiss", faiss_step, (sizes, args.dry_run))):
            if name not in steps:
                continue
            if inputs is None and name != "faiss":
                report.data["skipped"][name] = "no input videos (see errors.inputs)"
                continue
            report.run(name, fn, *fargs)
    report.save()
    print(summary(report.data))
    print(f"[gpu_check] {mode} run: {report.elapsed():.0f}s; figures in {args.out}")
    return 1 if report.data["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
