"""`vtpipe info FILE_OR_RUN`: where a store, an index folder, a metrics file or a whole run came from.

Everything is read from the artifacts themselves (HDF5 attributes, index_infos.json, metrics.json, manifests),
so it works on a store mailed to a colleague as well as on a run directory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stages.contract.errors import VtpipeError
from stages.features.provenance import store_provenance

INDEX_KEYS = ("model", "vtpipe_version", "checkpoint_sha256", "random_weights", "sampling", "preprocess", "precision",
              "features", "features_fingerprint", "input_fingerprint", "level", "factory", "vectors", "dim",
              "recall_at_10")


def _is_hdf5(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(8) == b"\x89HDF\r\n\x1a\n"
    except OSError:
        return False


def describe(path: str | Path) -> list[dict[str, Any]]:
    """One entry per artifact under `path` (a store, an index folder, a metrics.json or a run directory)."""
    p = Path(path)
    if p.is_file():
        if p.name == "index_infos.json":
            return [_index(p.parent)]
        if p.suffix == ".json":
            return [_metrics(p, p.parent)]
        if _is_hdf5(p):
            return [{"artifact": "store", "path": str(p), **store_provenance(p)}]
        raise VtpipeError(f"{p} is neither an HDF5 store nor a vtpipe JSON file")
    if not p.is_dir():
        raise VtpipeError(f"{p} does not exist")
    if (p / "index_infos.json").is_file():
        return [_index(p)]
    out: list[dict[str, Any]] = []
    versions = _stage_versions(p)
    if versions:
        out.append({"artifact": "run", "path": str(p), "stage_versions": versions})
    for f in sorted(x for x in p.rglob("*.h5") if not x.name.startswith(".")):
        if _is_hdf5(f):
            out.append({"artifact": "store", "path": str(f.relative_to(p)), **store_provenance(f)})
    for infos in sorted(p.rglob("index_infos.json")):
        out.append({**_index(infos.parent), "path": str(infos.parent.relative_to(p))})
    for m in sorted(p.rglob("metrics.json")):
        out.append({**_metrics(m, p), "path": str(m.relative_to(p))})
    if not out:
        raise VtpipeError(f"{p} holds no vtpipe artifacts (stores, index folders, metrics, manifests)")
    return out


def _stage_versions(run: Path) -> dict[str, list]:
    """{stage: sorted distinct [stage_version, vtpipe_version]} over the run's manifests."""
    seen: dict[str, set] = {}
    for mp in run.rglob("_manifests/*.json"):
        try:
            m = json.loads(mp.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(m, dict):
            seen.setdefault(str(m.get("stage", "?")), set()).add(
                (m.get("stage_version"), m.get("vtpipe_version")))
    return {k: [{"stage_version": a, "vtpipe_version": b} for a, b in sorted(v, key=str)] for k, v in sorted(seen.items())}


def _index(folder: Path) -> dict[str, Any]:
    try:
        infos = json.loads((folder / "index_infos.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise VtpipeError(f"{folder}/index_infos.json is not readable: {e}") from e
    return {"artifact": "index", "path": str(folder), **{k: infos[k] for k in INDEX_KEYS if k in infos}}


def _metrics(path: Path, base: Path) -> dict[str, Any]:
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise VtpipeError(f"{path} is not readable JSON: {e}") from e
    if not isinstance(m, dict):
        raise VtpipeError(f"{path} is not a vtpipe metrics file")
    keep = ("task", "model", "vtpipe_version", "stores", "R@1", "top1", "ctr", "random_weights")
    return {"artifact": "metrics", "path": str(path), **{k: m[k] for k in keep if k in m}}


def _value(v: Any) -> str:
    if isinstance(v, dict):
        return ", ".join(f"{k}={_value(x)}" for k, x in v.items()) or "{}"
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    return str(v)


def format_info(entries: list[dict[str, Any]]) -> str:
    lines = []
    for e in entries:
        head = {k: e[k] for k in ("artifact", "path")}
        lines.append(f"{head['artifact']} {head['path']}")
        for k, v in e.items():
            if k in head:
                continue
            if k == "stores" and isinstance(v, dict):
                for name, s in v.items():
                    lines.append(f"  store {name}: {s.get('path')} fingerprint {s.get('fingerprint')} "
                                 f"checkpoint_sha256 {_value(s.get('checkpoint_sha256'))}")
                continue
            lines.append(f"  {k}: {_value(v)}")
    return "\n".join(lines)
