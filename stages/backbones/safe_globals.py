"""An explicit allow-list of Python objects a pickled checkpoint may hold besides tensors.

``torch.load(weights_only=True)`` refuses any pickled global it does not know (a trainer's
``argparse.Namespace`` of hyper-parameters, a config dataclass, ...). vtpipe never falls back to a full
unpickle; instead it names the objects' types and lets the user allow them one by one, by dotted name
(``--allow-global argparse.Namespace``, config ``model.allow_globals``). Only classes may be allowed (plus
numpy's array/scalar reconstructors, which numpy arrays inside checkpoints need); functions such as
``builtins.eval`` or ``os.system`` and anything from modules that reach the operating system are refused.
"""

from __future__ import annotations

import contextvars
import importlib
import os
import re
from typing import Any, Iterable, Sequence

import torch

from stages.contract.errors import VtpipeError

# Dotted names the current load may unpickle (set by registry.load_model from allow_globals).
ALLOWED_GLOBALS: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("allowed_globals", default=())

# Callables that numpy arrays and scalars are pickled through: they build arrays, nothing else.
_NUMPY_RECONSTRUCTORS = {
    "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar",
}
# Modules whose objects can run programs, touch files or import code: never allowed, not even classes.
_DENIED_MODULES = ("os", "posix", "nt", "subprocess", "sys", "shutil", "importlib", "runpy", "pickle", "socket",
                   "ctypes", "code", "pty", "multiprocessing", "torch._C", "torch.ops", "pathlib")

_UNSUPPORTED = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def resolve_global(name: str) -> Any:
    """The object a dotted name ("argparse.Namespace") stands for, if it may be allowed; else VtpipeError."""
    if not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+", name or ""):
        raise VtpipeError(f"--allow-global {name!r}: give a dotted name module.Name, e.g. argparse.Namespace")
    module_name, _, attr = name.rpartition(".")
    if any(name == d or module_name == d or module_name.startswith(d + ".") for d in _DENIED_MODULES):
        raise VtpipeError(f"--allow-global {name!r}: objects from {module_name!r} can run code or reach the system; "
                          "vtpipe will not unpickle them (re-save the checkpoint's tensors alone)")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise VtpipeError(f"--allow-global {name!r}: cannot find it in this Python ({exc}); if the checkpoint's "
                          "trainer defined it, re-save the state dict alone") from exc
    if not isinstance(obj, type) and name not in _NUMPY_RECONSTRUCTORS:
        raise VtpipeError(f"--allow-global {name!r} is a {type(obj).__name__}, not a class: unpickling calls it, so "
                          "vtpipe allows classes only (and numpy's array reconstructors)")
    return obj


def resolve_globals(names: Iterable[str]) -> list[Any]:
    return [resolve_global(n) for n in names]


def unsafe_globals_in(path: str | os.PathLike) -> list[str]:
    """Dotted names of the non-tensor globals a torch.save zip checkpoint refers to ([] if unknown)."""
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(os.fspath(path)))
    except Exception:  # legacy (non-zip) files, damaged archives: the unpickling error names one type
        return []


def refusal_message(path: str | os.PathLike, exc: BaseException, what: str, allowed: Sequence[str]) -> str | None:
    """A VtpipeError message for an UnpicklingError caused by non-tensor objects; None for other errors."""
    found = _UNSUPPORTED.findall(str(exc))
    if not found:
        return None
    names = [n for n in dict.fromkeys(unsafe_globals_in(path) + found) if n not in allowed]
    refused = []
    for n in names:
        try:
            resolve_global(n)
        except VtpipeError as err:
            refused.append(f"{n} ({str(err).split(': ', 1)[1].split(';')[0].split(' (')[0]})")
    head = (f"{what} {os.fspath(path)!r} holds pickled Python object(s) besides tensors, of type "
            f"{', '.join(names)}; torch.load(weights_only=True) will not build them")
    resave = "re-save the state dict alone (torch.save(ckpt['state_dict'], path)) where you trust the file"
    if refused:
        return (f"{head}. vtpipe cannot allow {'; '.join(refused)}: {resave}. vtpipe never unpickles a whole "
                "file blindly")
    flags = " ".join(f"--allow-global {n}" for n in names)
    return (f"{head}. If you trust the file, allow exactly these types: {flags} (config model.allow_globals: "
            f"[{', '.join(names)}]); or {resave}. vtpipe never unpickles a whole file blindly")
