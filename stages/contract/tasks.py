"""The stage contract: Task, Result, manifests, fingerprints and atomic writes.

Every stage module offers ``plan(cfg, run) -> list[Task]`` and ``run_task(task) -> Result``.
A task is complete iff its manifest exists and records the task's current fingerprint. run_task writes its
outputs under temporary names, renames them into place, and writes the manifest last, so a task killed at
any moment is either complete or redone from scratch on the next run.

Fingerprints travel with the run: paths under the run directory (Task.root) are hashed relative to it, and
manifests store their outputs relative to the stage folder, so a copied, moved or untarred run is complete.
Each stage registers a version and its neutral parameters (register_stage): see StageSpec.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from stages.contract.errors import FingerprintMismatch
from stages.contract.faults import fault_point

MANIFEST_DIR = "_manifests"
_UMASK = os.umask(0)
os.umask(_UMASK)
FAILED_DIR = "_failed"  # <stage_dir>/_failed/<task-id>.json: the last error of a task that is not done


@dataclass
class Task:
    """One unit of work. `params` holds everything run_task needs (plain JSON-able data), so a task can be
    shipped to another process or machine as it is."""

    stage: str
    id: str  # unique within the stage, stable across runs: "shard-00003", "eval-t2v"
    stage_dir: str  # the stage's output folder; the manifest lives in <stage_dir>/_manifests/<id>.json
    params: dict[str, Any]
    fingerprint: str = ""
    resources: dict[str, float] = field(default_factory=dict)  # {"GPU": 1} for model work
    runtime: dict[str, Any] = field(default_factory=dict)  # how to run (workers, overwrite): not fingerprinted
    # the run directory: paths under it enter the fingerprint relative to it, so a moved run stays complete
    root: str = ""

    def __post_init__(self) -> None:
        if not self.fingerprint:
            self.fingerprint = task_fingerprint(self.stage, self.id, self.params, self.root)

    @property
    def manifest_path(self) -> Path:
        return Path(self.stage_dir) / MANIFEST_DIR / f"{self.id}.json"

    @property
    def failed_path(self) -> Path:
        return Path(self.stage_dir) / FAILED_DIR / f"{self.id}.json"

    @property
    def key(self) -> str:
        return f"{self.stage}/{self.id}"


@dataclass
class Result:
    """What run_task reports; written into the manifest."""

    task_id: str
    outputs: dict[str, str] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    failures: list[dict[str, str]] = field(default_factory=list)  # [{"id", "stage", "reason", "detail"}]
    info: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    skipped: bool = False  # True when the task was already complete


def fingerprint(obj: Any) -> str:
    """A stable hash of JSON-able data."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


# ---- fingerprint versions -------------------------------------------------------------------------------
@dataclass(frozen=True)
class StageSpec:
    """How a stage's task fingerprints are made.

    version: bumped by a change of the stage's code that changes its output; an old result then reads as
        stale, and the message names the version that made it.
    neutral: {param: value} for parameters added after a stage's first version, whose value here keeps the
        old behaviour: a param equal to its neutral value is left out of the hash, so adding a parameter
        does not make finished runs stale.
    ignore: params that say where an input is, not what it is, when its content identity is a param too
        (e.g. the checkpoint path beside its sha256).
    """

    version: int = 1
    neutral: dict[str, Any] = field(default_factory=dict)
    ignore: frozenset[str] = frozenset()


_SPECS: dict[str, StageSpec] = {}
RUN_MARK = "$RUN"


def register_stage(stage: str, version: int, neutral: dict[str, Any] | None = None,
                   ignore: tuple[str, ...] | frozenset[str] = ()) -> StageSpec:
    spec = StageSpec(int(version), dict(neutral or {}), frozenset(ignore))
    _SPECS[stage] = spec
    return spec


def stage_spec(stage: str) -> StageSpec:
    return _SPECS.get(stage, StageSpec())


def relative_to_run(obj: Any, root: str) -> Any:
    """obj with every string path under `root` (absolute) rewritten as "$RUN/<relative path>"."""
    if not root:
        return obj
    root = root.rstrip(os.sep) or os.sep
    prefix = root + os.sep

    def walk(x: Any) -> Any:
        if isinstance(x, str):
            if x == root:
                return RUN_MARK
            if x.startswith(prefix):
                return RUN_MARK + "/" + x[len(prefix):]
            return x
        if isinstance(x, dict):
            return {k: walk(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [walk(v) for v in x]
        return x

    return walk(obj)


def _hashed_params(stage: str, params: dict[str, Any], root: str) -> dict[str, Any]:
    spec = stage_spec(stage)
    kept = {k: v for k, v in params.items()
            if k not in spec.ignore and not (k in spec.neutral and v == spec.neutral[k])}
    return relative_to_run(kept, str(root))


def task_fingerprint(stage: str, task_id: str, params: dict[str, Any], root: str = "") -> str:
    """What identifies a task's output: the stage's version and its params, minus the neutral and ignored
    ones, with paths inside the run relative to it."""
    return fingerprint({"stage": stage, "id": task_id, "version": stage_spec(stage).version,
                        "params": _hashed_params(stage, params, root)})


def fingerprint_parts(task: Task) -> dict[str, str]:
    """{param: hash} of the hashed params, kept in the manifest so a stale message can say what changed."""
    return {k: fingerprint(v) for k, v in _hashed_params(task.stage, task.params, task.root).items()}


def file_signature(path: str | os.PathLike) -> dict[str, Any]:
    """Content identity of an input file for fingerprints: size + a hash of fixed blocks (stages.features.identity).
    The same after a copy that does not keep modification times."""
    from stages.features.identity import video_identity

    return {"identity": video_identity(path)}


def _resolve_outputs(m: dict[str, Any], stage_dir: str | os.PathLike) -> dict[str, Any]:
    """Manifest outputs are stored relative to the stage folder: give them back as paths from here."""
    outs = m.get("outputs")
    if isinstance(outs, dict):
        m["outputs"] = {k: (os.path.normpath(os.path.join(stage_dir, v)) if isinstance(v, str) and v
                            and not os.path.isabs(v) else v) for k, v in outs.items()}
    return m


def _relative_outputs(outputs: dict[str, str], task: Task) -> dict[str, str]:
    base = os.path.abspath(task.stage_dir)
    root = os.path.abspath(task.root) if task.root else base
    out = {}
    for k, v in outputs.items():
        if isinstance(v, str) and v:
            a = os.path.abspath(v)
            if a == base or a.startswith(base + os.sep) or a.startswith(root + os.sep):
                v = os.path.relpath(a, base)
        out[k] = v
    return out


def read_manifest(task: Task) -> dict[str, Any] | None:
    try:
        with open(task.manifest_path, encoding="utf-8") as f:
            m = json.load(f)
    except (FileNotFoundError, ValueError):  # ValueError: not JSON, not UTF-8
        return None
    return _resolve_outputs(m, task.stage_dir) if isinstance(m, dict) else None


def stale_reason(task: Task, m: dict[str, Any]) -> str:
    """Why a finished result no longer counts for `task` (its manifest `m` has another fingerprint)."""
    now = stage_spec(task.stage).version
    old = m.get("stage_version")
    made = f" (vtpipe {m['vtpipe_version']})" if m.get("vtpipe_version") else ""
    if old is None:
        return (f"it was made by an earlier vtpipe{made} whose fingerprints had no stage versions; this vtpipe's "
                f"{task.stage} stage is version {now}")
    if old != now:
        return (f"it was made by {task.stage} stage version {old}{made}; this vtpipe's {task.stage} stage is "
                f"version {now}, whose output differs")
    old_parts = m.get("fingerprint_parts")
    if isinstance(old_parts, dict):
        now_parts = fingerprint_parts(task)
        changed = sorted(k for k in set(old_parts) | set(now_parts) if old_parts.get(k) != now_parts.get(k))
        if changed:
            return f"it was made with other {', '.join(changed)} (a different config or inputs)"
    return "it was made with a different config or inputs"


def is_complete(task: Task, overwrite: bool = False) -> bool:
    """True when the task's manifest exists with the same fingerprint.

    A manifest with a different fingerprint means the config or inputs changed since that result was made:
    FingerprintMismatch is raised so old and new results are never mixed, unless overwrite=True (then the
    stale manifest is removed and the task counts as not done).
    """
    m = read_manifest(task)
    if m is None:
        return False
    if m.get("fingerprint") == task.fingerprint:
        return True
    if overwrite:
        task.manifest_path.unlink(missing_ok=True)
        return False
    raise FingerprintMismatch(
        f"{task.key}: a finished result exists at {task.stage_dir} but {stale_reason(task, m)} "
        f"(fingerprint {m.get('fingerprint')} != {task.fingerprint}). Use a new --output directory, or pass "
        f"--overwrite to redo it."
    )


def write_manifest(task: Task, result: Result) -> Path:
    """Write the task's manifest atomically. Call this last, after every output is in place."""
    from stages import __version__

    body = {
        "stage": task.stage,
        "task_id": task.id,
        "fingerprint": task.fingerprint,
        "stage_version": stage_spec(task.stage).version,
        "fingerprint_parts": fingerprint_parts(task) if task.fingerprint == task_fingerprint(
            task.stage, task.id, task.params, task.root) else {},
        "vtpipe_version": __version__,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(result.seconds, 3),
        "outputs": _relative_outputs(result.outputs, task),
        "counts": result.counts,
        "failures": result.failures,
        "info": result.info,
    }
    write_json_atomic(task.manifest_path, body)
    task.failed_path.unlink(missing_ok=True)
    return task.manifest_path


def record_task_error(task: Task, error: BaseException) -> None:
    """Remember why a task failed (for `vtpipe status`); cleared when the task completes.

    Best effort: when the marker cannot be written (the disk that made the task fail is full, a read-only
    folder), the task's own error is what the caller reports, not this secondary one."""
    prev = {}
    try:
        prev = json.loads(task.failed_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, AttributeError):
        prev = {}
    if not isinstance(prev, dict):
        prev = {}
    try:
        attempts = int(prev.get("attempts", 0)) + 1
    except (TypeError, ValueError):
        attempts = 1
    try:
        write_json_atomic(task.failed_path, {
            "stage": task.stage, "task_id": task.id, "error": f"{type(error).__name__}: {error}",
            "attempts": attempts, "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        })
    except OSError as e:
        logging.getLogger("vtpipe").warning("could not record the failure of %s in %s: %s", task.key,
                                            task.failed_path, e)


def load_manifests(stage_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Every readable manifest of a stage folder (used by status and by downstream plans)."""
    out = []
    for p in sorted(Path(stage_dir, MANIFEST_DIR).glob("*.json")):
        try:
            m = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(m, dict):
            out.append(_resolve_outputs(m, stage_dir))
    return out


# ---- atomic writes -------------------------------------------------------------------------------------
@contextlib.contextmanager
def atomic_path(final: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `final`; on success fsync and rename it into place, on error delete it.

    Readers never see a partial file under the final name. The temporary name starts with '.' and ends with
    '.tmp' so it is never mistaken for an output.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=f"{suffix}.tmp", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs get the usual permissions
        _fsync_file(tmp_path)
        fault_point("atomic_before_rename")
        os.replace(tmp_path, final)
        fault_point("atomic_after_rename")
        _fsync_dir(final.parent)
    except OSError as e:
        tmp_path.unlink(missing_ok=True)
        if e.errno is not None and e.filename is None:  # e.g. ENOSPC from write(): say which file
            raise OSError(e.errno, e.strerror, str(final)) from e
        raise
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str), encoding="utf-8")


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _fsync_file(path: Path) -> None:
    try:
        with open(path, "rb") as f:
            os.fsync(f.fileno())
    except OSError:
        pass


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def clean_stale_temporaries(folder: str | os.PathLike) -> int:
    """Remove '.*.tmp' leftovers of killed writers under a folder (recursive). Returns how many.

    Only safe while no other writer works in the folder: the runner calls it under the run lock."""
    n = 0
    for p in Path(folder).rglob(".*.tmp"):
        with contextlib.suppress(OSError):
            p.unlink()
            n += 1
    return n


def result_to_dict(result: Result) -> dict[str, Any]:
    return asdict(result)
