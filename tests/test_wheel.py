"""A user's install: sdist -> wheel -> a fresh virtual environment holding only that wheel, run from a folder
outside the checkout. `vtpipe models` must list every model and `vtpipe demo` must run the sample pipeline end
to end with the shipped shapes-tiny weights (R@1 = 100 on the sample, as in data/models/shapes-tiny.json).

The fresh environment gets vtpipe's dependencies (torch is gigabytes) from the test interpreter's own
site-packages through a .pth file: a .pth line only extends sys.path, so the .pth files in those folders (the
editable install's import hook among them) are not run, and the checkout stays invisible (no PYTHONPATH,
cwd elsewhere). The test asserts that `stages` and `pipeline` are imported from the wheel.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import pytest

import stages

REPO = Path(__file__).resolve().parents[1]
# Not carried into the build copy: environments, outputs, caches, generated clips, earlier builds.
SKIP_TOP = {".git", ".venv", "venv", "outputs", "build", "dist", ".pytest_cache", ".ruff_cache", ".devwheels",
            ".devsite"}
SKIP_ANY = {"__pycache__"}

pytestmark = pytest.mark.slow


def _copy_source(dst: Path) -> Path:
    def ignore(folder: str, names: list[str]) -> set[str]:
        rel = Path(folder).resolve().relative_to(REPO)
        out = {n for n in names if n in SKIP_ANY or n.endswith(".egg-info")}
        if rel == Path("."):
            out |= {n for n in names if n in SKIP_TOP}
        if rel == Path("data/sample"):
            out.add("videos")
        if rel == Path("stages"):
            out.add("_assets")
        return out

    shutil.copytree(REPO, dst, ignore=ignore, symlinks=True)
    return dst


def _run(cmd: list[str], cwd: Path, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


def _dependency_dirs() -> list[str]:
    """The test interpreter's site-packages folders (where torch, faiss, ... are installed)."""
    dirs = [*site.getsitepackages(), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    if site.ENABLE_USER_SITE:
        dirs.append(site.getusersitepackages())
    return list(dict.fromkeys(d for d in dirs if Path(d).is_dir()))


def test_wheel_from_sdist_runs_outside_the_checkout(tmp_path):
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    src = _copy_source(tmp_path / "src")
    dist = tmp_path / "dist"
    # The sdist, through setuptools' PEP 517 hook (what `python -m build --sdist` calls) ...
    _run([sys.executable, "-c", f"from setuptools import build_meta; build_meta.build_sdist({str(dist)!r})"], cwd=src)
    (sdist,) = dist.glob("vtpipe-*.tar.gz")
    # ... and the wheel built from it, as pip does for `pip install vtpipe-X.tar.gz` (no network: no isolation).
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist),
          str(sdist)], cwd=tmp_path)
    (wheel,) = dist.glob("vtpipe-*.whl")
    timings["build"] = time.perf_counter() - t0
    names = set(zipfile.ZipFile(wheel).namelist())
    for p in (REPO / "configs").rglob("*.yaml"):
        assert f"stages/_assets/{p.relative_to(REPO)}" in names
    assert "stages/_assets/data/models/shapes-tiny.pt" in names
    assert "stages/_assets/data/sample/make_sample.py" in names

    t0 = time.perf_counter()
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path)
    py = venv / "bin" / "python"
    purelib = _run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                   cwd=tmp_path).stdout.strip()
    (Path(purelib) / "vtpipe_test_dependencies.pth").write_text("\n".join(_dependency_dirs()) + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", "--no-index", str(wheel)],
         cwd=tmp_path)
    timings["install"] = time.perf_counter() - t0

    user = tmp_path / "elsewhere"
    user.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VTPIPE_CONFIGS", "VIRTUAL_ENV")}
    env.update(VTPIPE_QUIET="1", PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}")
    where = _run([str(py), "-c", "import stages, pipeline; print(stages.__file__); print(pipeline.__file__)"],
                 cwd=user, env=env).stdout.split()
    assert all(Path(p).is_relative_to(venv) for p in where), where
    vtpipe = str(venv / "bin" / "vtpipe")

    version = _run([vtpipe, "--version"], cwd=user, env=env).stdout.strip()
    assert version == f"vtpipe {stages.__version__}"

    listed = _run([vtpipe, "models"], cwd=user, env=env).stdout
    names_listed = {line.split()[0] for line in listed.splitlines() if line and not line.startswith(" ")}
    assert names_listed == {p.stem for p in (REPO / "configs" / "models").glob("*.yaml")}, listed

    # a shipped pipeline preset by name: found inside the wheel, then stopped by its unset input
    preset = subprocess.run([vtpipe, "run", "msrvtt-1ka", "-o", "preset-run"], cwd=user, env=env,
                            capture_output=True, text=True, timeout=300)
    assert preset.returncode == 2 and "input.videos is not set" in preset.stderr, preset.stderr

    t0 = time.perf_counter()
    demo = _run([vtpipe, "demo", "--output", "run"], cwd=user, env=env, timeout=900).stdout
    timings["demo"] = time.perf_counter() - t0
    lines = [ln for ln in demo.splitlines() if ln.startswith("| ")]
    head = next(ln for ln in lines if ln.startswith("| model |"))
    row = next(ln for ln in lines if ln.startswith("| shapes-tiny |"))
    cells = dict(zip([c.strip() for c in head.split("|")], [c.strip() for c in row.split("|")]))
    assert (cells["t2v R@1"], cells["v2t R@1"]) == ("100.0", "100.0"), demo
    assert len(list((user / "run" / "sample-videos").glob("*.mp4"))) == 24
    assert (user / "run" / "eval" / "summary.md").is_file()
    print(f"wheel test timings (s): {', '.join(f'{k} {v:.1f}' for k, v in timings.items())}")
