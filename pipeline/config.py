"""Pipeline configuration: defaults, YAML presets, command-line overrides, validation.

A pipeline YAML names what to run on what; everything it leaves out comes from DEFAULTS below. Unknown keys
and wrong types are errors that name the key, so a typo never silently falls back to a default.
Relative paths in a pipeline YAML are resolved against the YAML file's folder.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from stages.contract.errors import ConfigError

STAGE_ORDER = ["compress", "extract", "concat", "index", "evaluate"]

# The schema is the defaults: every allowed key, with a value of the allowed type (None = any/optional).
DEFAULTS: dict[str, Any] = {
    "name": "run",
    "stages": list(STAGE_ORDER),
    "preset": None,  # a paper preset in configs/presets (`vtpipe presets`): its config lies under this one's
    "input": {
        "videos": None,  # folder (searched recursively) or CSV of video paths
        "extensions": [".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v"],
    },
    "dataset": {
        "preset": None,  # a file in configs/datasets (msrvtt-1ka, msvd, ucf101, ...): its values fill the keys below
        "root": None,  # folder the preset's relative file names are under
        "name": None,
        "kind": "retrieval",  # retrieval (captions <-> videos) | action (class labels and splits)
        "format": "msrvtt-jsfusion",  # caption file format (stages.datasets.CAPTION_FORMATS)
        "captions": None,  # test captions (queries)
        "options": {},  # extra reader options for the caption format (split lists, modes)
        "train_captions": None,  # query bank for re-ranking (SK-norm / QB-Norm): the training captions
        "train_format": "msrvtt-json",
        "train_split": None,  # optional split file restricting train_captions (and train_videos) to its video ids
        "train_videos": None,  # folder / CSV of training videos: the v2t bank for sk-norm / qb-norm (extract task bank-videos)
        "splits_dir": None,  # action datasets: the folder of split files
        "splits": [1, 2, 3],
        "layout": "class_dirs",  # action datasets: video ids <Class>/<stem> (class_dirs) or <stem> (flat)
        "prompt_template": "a video of a person {}.",  # zero-shot class prompts
        "videos": None,  # description of the video file names (documentation only)
    },
    "model": {
        "name": "shapes-tiny",
        "weights": None,  # path, or {file name: path}
        "allow_random": False,  # random weights when none are given (plumbing checks only)
        "allow_torchscript": False,  # load TorchScript archives (OpenAI CLIP .pt): they run code when loaded
        "allow_globals": [],  # non-tensor types a pickled checkpoint may hold, e.g. [argparse.Namespace] (classes only)
        "sampling": None,  # override the model's default frame-sampling policy
        "protocol": None,  # one of the model's protocols (`vtpipe models` lists them); None: its default
        "max_words": None,  # caption length in tokens, start/end included (CLIP-family text path); None: the model YAML's
    },
    "compress": {
        "fps": 3.0,
        "size": 224,
        "crop": "none",  # none | center | square (VT-TWINS)
        "workers": 2,  # ffmpeg processes at a time inside a task
        "videos_per_task": 64,
        "crf": 23,
        "preset": "superfast",  # x264 preset; CLIP4Clip's script used ffmpeg's default, medium (~1.5x slower)
        "legacy_scale": False,  # CLIP4Clip's portrait-squashing scale expression (buggy; for reproduction only)
        "aspect": "stored",  # anamorphic sources: stored (pixels scaled uniformly, SAR kept, as CLIP4Clip's script) | display (square pixels)
    },
    "extract": {
        "shards": 1,
        "batch_size": 64,
        "device": "auto",  # auto | cpu | cuda
        "amp": "auto",  # precision on CUDA: auto (what the model's reference ran) | fp32 | fp16 | bf16 (autocast)
        "decode_workers": 1,
        "decode_device": "cpu",  # cpu | gpu (decord's NVDEC build; falls back to the CPU with a warning)
        "dtype": "float32",  # store dtype: float32 | float16
        "text_batch_size": 256,
        "segments": False,  # one item per caption segment (start_s/end_s columns), id = caption id (CrossTask,
                            # YouCook2 clips): the sampling policy gets segment_start_s / segment_end_s
        "fast_resize": False,  # resize inside the decoder (bilinear) even where the model's resize is bicubic
        "aspect": "auto",  # anamorphic video: auto (the protocol's: stored pixels, as every reference) | stored | display
        "threads": 0,  # CPU threads for the model; 0 = min(4, cores). Fixed so every executor gives the same bits
    },
    "concat": {
        "layout": "flat",  # flat | locvtp (also export the LocVTP group-per-video file)
        "locvtp_ids": "stem",  # LocVTP file's group names: stem (v_x, as its grounding code looks up) | path
    },
    "index": {
        "index": "auto",  # auto (candidates trialled on a sample, within max_memory) or a FAISS factory string
        "metric": "ip",  # ip: inner product on L2-normalised vectors (cosine) | l2
        "max_memory": "4G",
        "level": "video",  # video: one vector per video | unit: one per frame/clip
        "target_recall": 0.95,  # recall@k vs exact search that nprobe/efSearch are tuned for
        "k": 10,
        "tune_queries": None,  # a caption store of the same model to tune with (default: gallery rows)
        "build_budget": None,  # seconds the auto choice lets a candidate's predicted build take (None: no limit)
    },
    "evaluate": {
        "tasks": ["t2v", "v2t"],
        "rerank": "none",  # none | sk-norm | dsl | qb-norm
        # tie convention (stages.retrieval.conventions): optimistic | pessimistic | average |
        # clip4clip (CLIP4Clip metrics.py) | collaborative-experts (CE / QB-Norm metric.py)
        "ties": "optimistic",
        "median": "auto",  # auto (the convention's) | numpy (mean of the two middle ranks) | torch (lower middle)
        "missing": "drop",  # captions whose video has no features: drop (warned) | miss (rank = gallery size)
        "ks": [1, 5, 10, 50],
        "candidates": "exact",  # exact (every gallery item) | faiss (t2v top-k from the index stage's index)
        "candidates_k": 100,
        # multi-caption v2t: captions (best caption's rank among all captions) | videos (groups scored by their best
        # caption); the clip4clip / collaborative-experts conventions fix it to their reference's (videos / captions)
        "v2t_gallery": "captions",
        "similarity": "auto",  # auto (the model's: dp, or DRL's ti / wti token-wise) | dp | dot (un-normalised) | ti | wti | ucofia (UCoFiA three levels, SK-norm per level)
        "sk_norm": {"scale": 100.0, "n_iters": 4, "kernel": "float32", "max_error": 1e-6},
        "dsl": {"temperature": 1.0, "scale": 100.0},
        "qb_norm": {"beta": 20.0, "k": 1},
        "linear_probe": {"C": 100.0},
    },
    "executor": {
        "kind": "local",  # local | dask | slurm | pbs
        "workers": 1,
        "scheduler": None,  # tcp://host:8786 to join a running dask scheduler
        "retries": 2,
    },
    # Batch-cluster settings, used by the slurm/pbs executors (dask-jobqueue) and by `vtpipe slurm`.
    # GPU stages (extract) get `gpu` jobs, the others `cpu` jobs.
    "cluster": {
        "queue": None,  # partition (SLURM) / queue (PBS)
        "account": None,
        "walltime": "04:00:00",
        "jobs": 4,  # most jobs per worker pool (dask-jobqueue scales between 0 and this)
        "max_array": 1000,  # most array tasks per stage (`vtpipe slurm`)
        "lifetime": None,  # workers leave after this (e.g. "3h50m"), before the walltime kills them mid-task
        # shell lines run before vtpipe in every job (module load, source .venv/bin/activate);
        # null: activate the environment this vtpipe runs from (pipeline/cluster_defaults.py)
        "env_setup": None,
        "extra_directives": [],  # extra "#SBATCH ..." / "#PBS ..." lines, without the prefix
        # Small defaults that fit most nodes; raise them for big models / many decode workers.
        "cpu": {"cores": 1, "memory": "4GB", "queue": None},
        # gpus: "auto" = 1 where sinfo lists GPUs on the partition, else 0 (no GPU directive); or an integer
        "gpu": {"cores": 2, "memory": "8GB", "gpus": "auto", "queue": None, "gpu_directive": "--gres=gpu:{gpus}"},
    },
}

CHOICES: dict[str, tuple[str, ...]] = {
    "compress.crop": ("none", "center", "square"),
    "compress.aspect": ("stored", "display"),
    "extract.device": ("auto", "cpu", "cuda"),
    "extract.amp": ("auto", "fp32", "fp16", "bf16", "none"),
    "extract.aspect": ("auto", "stored", "display"),
    "extract.dtype": ("float32", "float16"),
    "extract.decode_device": ("cpu", "gpu"),
    "concat.layout": ("flat", "locvtp"),
    "concat.locvtp_ids": ("stem", "path"),
    "index.metric": ("ip", "l2"),
    "index.level": ("video", "unit"),
    "evaluate.rerank": ("none", "sk-norm", "dsl", "qb-norm"),
    "evaluate.ties": ("optimistic", "pessimistic", "average", "clip4clip", "collaborative-experts"),
    "evaluate.median": ("auto", "numpy", "torch"),
    "evaluate.missing": ("drop", "miss"),
    "evaluate.v2t_gallery": ("captions", "videos"),
    "evaluate.candidates": ("exact", "faiss"),
    "evaluate.similarity": ("auto", "dp", "dot", "ti", "wti", "ucofia"),
    "evaluate.sk_norm.kernel": ("float32", "exact"),
    "dataset.kind": ("retrieval", "action"),
    "dataset.layout": ("class_dirs", "flat"),
    "executor.kind": ("local", "dask", "slurm", "pbs"),
}

# keys whose values may be of several types (path string or mapping, etc.)
FREE_KEYS = {"dataset.options", "dataset.preset", "dataset.root", "dataset.splits_dir", "dataset.videos", "model.weights", "model.sampling", "model.protocol", "input.videos", "dataset.captions", "dataset.train_captions",
             "dataset.train_split", "dataset.train_videos", "dataset.name", "executor.scheduler", "cluster.queue", "cluster.account",
             "cluster.lifetime", "cluster.cpu.queue", "cluster.gpu.queue", "cluster.gpu.gpus", "index.tune_queries"}
PATH_KEYS = ["input.videos", "dataset.captions", "dataset.train_captions", "dataset.train_split", "dataset.train_videos",
             "index.tune_queries",
             "dataset.root", "dataset.splits_dir"]
PRESET_FILE_KEYS = ["captions", "train_captions", "train_split", "train_videos", "splits_dir"]


def deep_merge(base: dict, over: dict, where: str = "") -> dict:
    """Merge `over` into a copy of `base`, checking keys and types against `base` (the schema)."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        dotted = f"{where}{key}"
        if key not in base:
            raise ConfigError(f"unknown config key {dotted!r}; allowed here: {sorted(base)}")
        default = base[key]
        if isinstance(default, dict) and dotted not in FREE_KEYS:
            if not isinstance(value, dict):
                raise ConfigError(f"config key {dotted!r} must be a mapping, got {value!r}")
            out[key] = deep_merge(default, value, dotted + ".")
        else:
            out[key] = _check_type(dotted, default, value)
    return out


def _check_type(dotted: str, default: Any, value: Any) -> Any:
    if dotted in FREE_KEYS or default is None or value is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"config key {dotted!r} must be true or false, got {value!r}")
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key {dotted!r} must be a number, got {value!r}")
        value = float(value)
    elif isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key {dotted!r} must be an integer, got {value!r}")
    elif isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"config key {dotted!r} must be a string, got {value!r}")
        if dotted in CHOICES and value not in CHOICES[dotted]:
            raise ConfigError(f"config key {dotted!r} must be one of {list(CHOICES[dotted])}, got {value!r}")
    elif isinstance(default, list):
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(f"config key {dotted!r} must be a list, got {value!r}")
    return value


def parse_overrides(pairs: Iterable[str]) -> dict:
    """["extract.shards=4", "model.name=clip-vit-b-32"] -> nested dict (values parsed as YAML scalars)."""
    out: dict = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set takes key=value, got {pair!r} (e.g. --set extract.shards=4)")
        key, raw = pair.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"--set: bad key {key!r}")
        value = yaml.safe_load(raw) if raw.strip() else None
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of config keys")
    return data


def resolve(user: dict, base_dir: Path | None = None, overrides: dict | None = None) -> dict:
    """Defaults <- paper preset <- user YAML <- overrides; then validate and make paths absolute."""
    paper = (overrides or {}).get("preset") or user.get("preset")
    paper_files: set[str] = set()  # reader options the paper preset names files with (under dataset.root)
    if paper:
        from pipeline.presets import layer_under, load_preset

        if not isinstance(paper, str):
            raise ConfigError(f"config key 'preset' names a paper preset (`vtpipe presets`), got {paper!r}")
        pconf = load_preset(paper).config
        given = set(user.get("dataset", {}).get("options", {})) | set((overrides or {}).get("dataset", {}).get("options", {}))
        paper_files = set(pconf.get("dataset", {}).get("options", {})) - given
        user = {**layer_under(pconf, user), "preset": paper}
    cfg = deep_merge(DEFAULTS, user)
    if overrides:
        cfg = deep_merge(cfg, overrides)
    preset = cfg["dataset"]["preset"]
    if preset:
        cfg = apply_dataset_preset(cfg, preset, user, overrides or {}, base_dir)
        root = cfg["dataset"]["root"]
        for k in paper_files:
            v = cfg["dataset"]["options"].get(k)
            if isinstance(v, str) and root and "." in Path(v).name and not Path(v).is_absolute():
                cfg["dataset"]["options"][k] = str(Path(root) / v)
    unknown = [s for s in cfg["stages"] if s not in STAGE_ORDER]
    if unknown:
        raise ConfigError(f"unknown stage(s) {unknown} in 'stages'; known: {STAGE_ORDER}")
    cfg["stages"] = [s for s in STAGE_ORDER if s in cfg["stages"]]
    if base_dir is not None:
        for dotted in PATH_KEYS:
            sec, key = dotted.split(".")
            v = cfg[sec][key]
            if isinstance(v, str) and v and not Path(v).is_absolute():
                cfg[sec][key] = str((base_dir / v).resolve())
        w = cfg["model"]["weights"]
        if isinstance(w, str) and not Path(w).is_absolute():
            cfg["model"]["weights"] = str((base_dir / w).resolve())
        elif isinstance(w, dict):
            cfg["model"]["weights"] = {
                k: (str((base_dir / p).resolve()) if isinstance(p, str) and not Path(p).is_absolute() else p)
                for k, p in w.items()
            }
    return cfg


def apply_dataset_preset(cfg: dict, preset: str, user: dict, overrides: dict, base_dir: Path | None) -> dict:
    """Fill dataset keys from configs/datasets/<preset>.yaml; keys the user set win. The preset's relative
    file names (and reader options that name files) are resolved against dataset.root."""
    from stages.contract.assets import presets_dir

    path = presets_dir("datasets") / f"{preset}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ConfigError(f"unknown dataset preset {preset!r}; known: {known}")
    values = load_yaml(path)
    set_by_user = set(user.get("dataset", {})) | set(overrides.get("dataset", {}))
    root = cfg["dataset"]["root"]
    if root and base_dir is not None and not Path(root).is_absolute():
        root = str((base_dir / root).resolve())
    merged = deep_merge(DEFAULTS["dataset"], {k: v for k, v in values.items() if k not in set_by_user}, "dataset.")
    for key in PRESET_FILE_KEYS:
        v = merged[key]
        if key not in set_by_user and isinstance(v, str) and root and not Path(v).is_absolute():
            merged[key] = str(Path(root) / v)
    opts = dict(merged["options"])
    for k, v in opts.items():
        if isinstance(v, str) and root and ("." in Path(v).name or k.endswith("dir")) and not Path(v).is_absolute():
            opts[k] = str(Path(root) / v)
    merged["options"] = opts
    out = copy.deepcopy(cfg)
    out["dataset"] = {**merged, **{k: cfg["dataset"][k] for k in set_by_user}, "preset": preset, "root": root}
    return out


PAPER_PRESET_PREFIX = "paper-preset:"


def load_pipeline(path: str | Path, overrides: dict | None = None) -> dict:
    """Read a pipeline YAML (relative paths resolved against its folder) and resolve it. `paper-preset:NAME`
    (what `vtpipe run NAME` passes for a paper preset) is the preset alone, relative paths against the
    current folder."""
    if str(path).startswith(PAPER_PRESET_PREFIX):
        name = str(path)[len(PAPER_PRESET_PREFIX):]
        return resolve({"name": name, "preset": name}, base_dir=Path.cwd(), overrides=overrides)
    path = Path(path).resolve()
    return resolve(load_yaml(path), base_dir=path.parent, overrides=overrides)


def dump(cfg: dict) -> str:
    return yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True)
