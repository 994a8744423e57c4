"""Strict checkpoint loading shared by the backbone families.

Every released checkpoint is read with ``torch.load(weights_only=True)`` (or, for OpenAI's TorchScript
archives, ``torch.jit.load`` and its ``state_dict()``), unwrapped from its container ("state_dict",
"model", ...), stripped of a DistributedDataParallel ``module.`` prefix when *every* key has it, cleared of
training-only keys by an explicit per-release list, and compared key by key and shape by shape against
what the model expects. Any difference raises VtpipeError naming the keys, so a wrong or truncated file
never loads silently.
"""

from __future__ import annotations

import fnmatch
import contextvars
import os
import warnings
import zipfile
from typing import Any, Iterable, Mapping, Sequence

import torch

from stages.backbones.safe_globals import ALLOWED_GLOBALS, refusal_message, resolve_globals
from stages.backbones.base import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD, Preprocess
from stages.contract.errors import VtpipeError

_MAX_LISTED = 12  # keys named per category in an error message


def load_torch_file(path: str | os.PathLike, what: str = "checkpoint") -> Any:
    """torch.load with weights_only=True on the CPU; a failure becomes a VtpipeError naming the file.

    Non-tensor objects in the pickle load only if their types are in the user's allow-list
    (safe_globals.ALLOWED_GLOBALS, from --allow-global / model.allow_globals); otherwise the error names
    their types and the flag that allows them."""
    allowed = ALLOWED_GLOBALS.get()
    objs = resolve_globals(allowed)
    try:
        with torch.serialization.safe_globals(objs):
            return torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors, truncated zips, wrong format
        msg = refusal_message(path, exc, what, allowed)
        raise VtpipeError(
            msg or f"cannot read {what} {os.fspath(path)!r} with torch.load(weights_only=True): {exc}"
        ) from exc


def is_torchscript_archive(path: str | os.PathLike) -> bool:
    """True for a TorchScript zip archive (it holds compiled code and constants, unlike a state dict)."""
    p = os.fspath(path)
    if not zipfile.is_zipfile(p):
        return False
    with zipfile.ZipFile(p) as zf:
        names = zf.namelist()
    return any(n.endswith("/constants.pkl") or "/code/" in n for n in names)


# TorchScript archives hold compiled code that torch.jit.load runs: only with the user's explicit opt-in
# (registry.load_model(allow_torchscript=True), config model.allow_torchscript, --allow-torchscript).
ALLOW_TORCHSCRIPT: contextvars.ContextVar[bool] = contextvars.ContextVar("allow_torchscript", default=False)


def load_torchscript_state_dict(path: str | os.PathLike, what: str = "TorchScript archive") -> dict[str, torch.Tensor]:
    """The state_dict() of a TorchScript archive (e.g. OpenAI's ViT-B-32.pt), on the CPU."""
    if not ALLOW_TORCHSCRIPT.get():
        raise VtpipeError(
            f"{os.fspath(path)!r} is a TorchScript archive ({what}): loading one runs the code inside it, so "
            "vtpipe does it only when asked: pass --allow-torchscript (config model.allow_torchscript: true), "
            "or convert it once to a plain state dict and load that"
        )
    try:
        module = torch.jit.load(os.fspath(path), map_location="cpu")
    except Exception as exc:
        raise VtpipeError(f"cannot read {what} {os.fspath(path)!r} with torch.jit.load: {exc}") from exc
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def unwrap_state_dict(
    obj: Any, containers: Sequence[str] = ("state_dict", "model"), what: str = "checkpoint"
) -> dict[str, torch.Tensor]:
    """The tensor mapping inside a checkpoint: obj itself if it is one, else obj[c] for the first container
    key c present (searched in order)."""
    if not isinstance(obj, Mapping):
        raise VtpipeError(f"{what}: expected a dict of tensors, got {type(obj).__name__}")
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return dict(obj)
    for c in containers:
        inner = obj.get(c)
        if isinstance(inner, Mapping):
            return unwrap_state_dict(inner, (), what=f"{what}[{c!r}]")
    raise VtpipeError(
        f"{what}: no state dict found; top-level keys are {sorted(map(str, obj))[:_MAX_LISTED]}, "
        f"expected tensors or one of the container keys {list(containers)}"
    )


def strip_prefix(sd: Mapping[str, torch.Tensor], prefix: str = "module.") -> dict[str, torch.Tensor]:
    """Drop `prefix` from every key, but only when every key has it (a DDP-saved file); else unchanged."""
    if sd and all(k.startswith(prefix) for k in sd):
        return {k[len(prefix):]: v for k, v in sd.items()}
    return dict(sd)


def drop_ignored(sd: Mapping[str, torch.Tensor], ignore: Iterable[str] = ()) -> dict[str, torch.Tensor]:
    """Remove keys matching any of `ignore` (exact names or fnmatch patterns such as "pred_model.*")."""
    pats = list(ignore)
    return {k: v for k, v in sd.items() if not any(k == p or fnmatch.fnmatchcase(k, p) for p in pats)}


def _listing(keys: Sequence[str]) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:_MAX_LISTED])
    more = f" ... and {len(keys) - _MAX_LISTED} more" if len(keys) > _MAX_LISTED else ""
    return f"{len(keys)}: {shown}{more}"


def check_state_dict(
    sd: Mapping[str, torch.Tensor],
    expected: Mapping[str, Sequence[int]],
    what: str = "checkpoint",
    hint: str = "",
) -> None:
    """Raise VtpipeError naming missing keys, unexpected keys and shape mismatches; return quietly if none."""
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    mismatched = [
        f"{k} (file {tuple(sd[k].shape)}, model {tuple(expected[k])})"
        for k in expected
        if k in sd and tuple(sd[k].shape) != tuple(expected[k])
    ]
    if not (missing or unexpected or mismatched):
        return
    parts = [f"{what} does not match the model"]
    if missing:
        parts.append(f"missing keys ({_listing(missing)})")
    if unexpected:
        parts.append(f"unexpected keys ({_listing(unexpected)})")
    if mismatched:
        parts.append(f"shape mismatches ({_listing(mismatched)})")
    if hint:
        parts.append(hint)
    raise VtpipeError("; ".join(parts))


def load_strict(
    module: torch.nn.Module,
    sd: Mapping[str, torch.Tensor],
    ignore: Iterable[str] = (),
    what: str = "checkpoint",
    hint: str = "",
    optional: Iterable[str] = (),
) -> None:
    """Check `sd` (after dropping `ignore`) against module.state_dict() and load it strictly.

    `optional` (exact names or fnmatch patterns) lists model keys a file may lack (e.g. BatchNorm's
    ``*.num_batches_tracked``, absent from files saved by old PyTorch); they keep the module's value.
    Values are cast to each parameter's dtype (OpenAI files store most weights in float16)."""
    sd = drop_ignored(sd, ignore)
    own = module.state_dict()
    opt = list(optional)
    expected = {
        k: v.shape for k, v in own.items()
        if k in sd or not any(k == p or fnmatch.fnmatchcase(k, p) for p in opt)
    }
    check_state_dict(sd, expected, what=what, hint=hint)
    cast = {k: v.to(own[k].dtype) if v.is_floating_point() else v.to(own[k].dtype) for k, v in sd.items()}
    result = module.load_state_dict(cast, strict=False)
    if result.unexpected_keys or set(result.missing_keys) - (set(own) - set(expected)):
        raise VtpipeError(f"{what}: load_state_dict reported missing {result.missing_keys} / unexpected "
                          f"{result.unexpected_keys}")


def missing_weights(info_name: str, file_key: str, description: str = "", allow_random: bool = False) -> None:
    """No checkpoint given: warn loudly (allow_random) or raise VtpipeError naming the file to pass."""
    if allow_random:
        warnings.warn(
            f"model {info_name!r}: no {file_key!r} file given; using RANDOM weights (features are meaningless)",
            stacklevel=3,
        )
        return
    desc = f" ({description})" if description else ""
    raise VtpipeError(
        f"model {info_name!r} needs its {file_key!r} file{desc}; pass weights={{'{file_key}': PATH}} "
        f"(CLI: --file {file_key}=PATH; --weights PATH also sets the model's first file), or allow random weights "
        "for testing (--allow-random)"
    )


_NAMED_STATS = {"clip": (CLIP_MEAN, CLIP_STD), "imagenet": (IMAGENET_MEAN, IMAGENET_STD)}


def preprocess_from_config(cfg: Mapping[str, Any]) -> Preprocess:
    """Preprocess from a model YAML's `preprocess` mapping. mean/std may be lists, null, or the names
    "clip" / "imagenet" (as `stats: clip`, or `mean: clip` with std omitted)."""
    cfg = dict(cfg)
    allowed = {"size", "resize", "resize_to", "crop", "interpolation", "mean", "std", "stats", "backend", "antialias"}
    unknown = set(cfg) - allowed
    if unknown:
        raise VtpipeError(f"preprocess: unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    stats = cfg.pop("stats", None)
    if isinstance(cfg.get("mean"), str):
        stats = cfg.pop("mean")
        cfg.pop("std", None)
    if stats is not None:
        if stats not in _NAMED_STATS:
            raise VtpipeError(f"preprocess: unknown stats {stats!r}; known: {sorted(_NAMED_STATS)}")
        cfg["mean"], cfg["std"] = _NAMED_STATS[stats]
    for k in ("mean", "std"):
        if cfg.get(k) is not None:
            cfg[k] = tuple(float(x) for x in cfg[k])
    if ("mean" in cfg) != ("std" in cfg) or ((cfg.get("mean") is None) != (cfg.get("std") is None)):
        raise VtpipeError("preprocess: give both mean and std (or neither)")
    try:
        return Preprocess(**cfg)
    except ValueError as e:
        raise VtpipeError(f"preprocess: {e}") from None
