"""Install-time facts that need no wheel build: where presets and data are found, loud failures when they
are not, the one version, the files the build ships, and every flag a message names is one the CLI takes."""

from __future__ import annotations

import ast
import configparser
import importlib.util
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

import pipeline
import stages
from pipeline.cli import main
from stages.contract import assets
from stages.backbones.registry import list_models, model_config
from stages.contract.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def _setup_module():
    spec = importlib.util.spec_from_file_location("vtpipe_setup", REPO / "setup.py")
    mod = importlib.util.module_from_spec(spec)
    import setuptools

    real_setup = setuptools.setup
    setuptools.setup = lambda **kw: None  # import ASSETS without running a build
    try:
        spec.loader.exec_module(mod)
    finally:
        setuptools.setup = real_setup
    return mod


# ---- where presets and data are found -------------------------------------------------------------------------
def test_checkout_reads_top_level_folders(monkeypatch):
    monkeypatch.delenv("VTPIPE_CONFIGS", raising=False)
    assert assets.checkout_root() == REPO
    assert assets.presets_dir("models") == REPO / "configs" / "models"
    assert assets.data_path("models/shapes-tiny.pt") == REPO / "data" / "models" / "shapes-tiny.pt"
    assert {m.name for m in list_models()} == {p.stem for p in (REPO / "configs" / "models").glob("*.yaml")}


def test_installed_package_copy_is_used_without_checkout(monkeypatch, tmp_path):
    """A wheel's layout: stages/_assets/{configs,data}; the checkout is not there."""
    packaged = tmp_path / "_assets"
    shutil.copytree(REPO / "configs", packaged / "configs")
    (packaged / "data" / "models").mkdir(parents=True)
    shutil.copy(REPO / "data/models/shapes-tiny.pt", packaged / "data/models/shapes-tiny.pt")
    monkeypatch.delenv("VTPIPE_CONFIGS", raising=False)
    monkeypatch.setattr(assets, "checkout_root", lambda: None)
    monkeypatch.setattr(assets, "packaged_root", lambda: packaged)
    assert assets.presets_dir("models") == packaged / "configs" / "models"
    assert assets.data_path("models/shapes-tiny.pt") == packaged / "data/models/shapes-tiny.pt"
    assert model_config("clip-vit-b-32").embed_dim == 512


def test_no_presets_anywhere_fails_naming_every_place(monkeypatch, tmp_path):
    monkeypatch.delenv("VTPIPE_CONFIGS", raising=False)
    monkeypatch.setattr(assets, "checkout_root", lambda: None)
    monkeypatch.setattr(assets, "packaged_root", lambda: None)
    with pytest.raises(ConfigError) as e:
        list_models()
    msg = str(e.value)
    assert "no models presets" in msg
    assert "checkout: " in msg and "installed package: " in msg
    assert str(Path(stages.__file__).parent / "_assets" / "configs" / "models") in msg
    with pytest.raises(ConfigError, match="shipped file data/sample/make_sample.py not found"):
        assets.require_data("sample/make_sample.py")


def test_vtpipe_models_with_empty_configs_exits_2_naming_the_folder(tmp_path):
    (tmp_path / "models").mkdir()
    res = CliRunner().invoke(main, ["models"], env={"VTPIPE_CONFIGS": str(tmp_path)})
    assert res.exit_code == 2, res.output
    assert f"$VTPIPE_CONFIGS: {tmp_path / 'models'}" in res.output
    assert "no models presets" in res.output


def test_vtpipe_configs_overrides(monkeypatch, tmp_path):
    (tmp_path / "models").mkdir()
    shutil.copy(REPO / "configs/models/shapes-tiny.yaml", tmp_path / "models")
    monkeypatch.setenv("VTPIPE_CONFIGS", str(tmp_path))
    assert [m.name for m in list_models()] == ["shapes-tiny"]
    with pytest.raises(ConfigError, match=r"unknown model 'clip-vit-b-32'; registered models: shapes-tiny"):
        model_config("clip-vit-b-32")


def test_unknown_dataset_preset_with_no_presets_names_where(monkeypatch, tmp_path):
    from pipeline import config as config_mod

    monkeypatch.setenv("VTPIPE_CONFIGS", str(tmp_path))
    with pytest.raises(ConfigError, match="no datasets presets"):
        config_mod.resolve({"dataset": {"preset": "msrvtt-1ka", "root": str(tmp_path)}})


# ---- what the build ships ---------------------------------------------------------------------------------------
def test_build_ships_every_preset_and_the_sample_files():
    shipped = {str(p) for p in _setup_module().asset_files(REPO)}
    presets = {str(p.relative_to(REPO)) for p in (REPO / "configs").rglob("*.yaml")}
    assert presets <= shipped, f"presets the wheel would lack: {sorted(presets - shipped)}"
    for rel in ("data/models/shapes-tiny.pt", "data/models/shapes-tiny.json", "data/sample/make_sample.py",
                "data/sample/msrvtt_test.csv", "data/sample/train.csv", "data/sample/train_data.json"):
        assert rel in shipped
    assert not any("videos" in s for s in shipped)  # generated clips never ship
    # that the sdist carries them too is checked for real by test_wheel.py (it builds the wheel from the sdist)


# ---- one version -----------------------------------------------------------------------------------------------
def test_version_from_one_place():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    assert cfg["metadata"]["version"].strip() == "attr: stages.__version__"
    assert pipeline.__version__ == stages.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+(\S*)", stages.__version__)
    res = CliRunner().invoke(main, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"vtpipe {stages.__version__}"


# ---- every flag a message names is one the CLI accepts ------------------------------------------------------------
# Flags of other programs that vtpipe writes into job scripts and worker command lines (sbatch, dask-worker).
FOREIGN_FLAGS = {
    "pipeline/jobqueue.py": {"--resources", "--gres", "--lifetime", "--lifetime-stagger", "--ntasks", "--job-name",
                             "--array", "--time", "--cpus-per-task", "--mem", "--dependency", "--partition",
                             "--account", "--parsable"},
    "pipeline/config.py": {"--gres"},
    "pipeline/cluster_defaults.py": {"--gres"},  # sbatch's, in the summary of what a job asks for
}
FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)(?:[ =](\S+))?")


def _cli_options() -> dict:
    """--flag -> the click Options that carry it (over every command)."""
    import click

    out: dict = {"--help": None}
    for cmd in [main, *main.commands.values()]:
        for p in cmd.params:
            if isinstance(p, click.Option):
                for o in p.opts + p.secondary_opts:
                    if o.startswith("--"):
                        out.setdefault(o, []).append(p)
    return out


def _source_strings(path: Path):
    """(line, text) of every string literal; f-strings joined with '{}' where a value is substituted."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.JoinedStr):
            text = "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
            yield node.lineno, text
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.lineno, node.value


def flag_mentions(root: Path):
    for path in sorted([*(root / "pipeline").rglob("*.py"), *(root / "stages").rglob("*.py")]):
        rel = str(path.relative_to(root))
        for line, text in _source_strings(path):
            for m in FLAG.finditer(text):
                if m.group(1) not in FOREIGN_FLAGS.get(rel, set()):
                    yield rel, line, m.group(1), m.group(2)


def _problem(options: dict, flag: str, value: str | None) -> str | None:
    if flag not in options:
        return "not an option of any vtpipe command"
    if value and re.fullmatch(r"[\w{}.-]+=\S+", value.strip("`'\")(,;")):
        params = options[flag] or []
        if not any(p.metavar and "=" in p.metavar for p in params):
            return f"given as {value!r}, but {flag} takes no NAME=VALUE"
    return None


def test_every_flag_in_a_message_is_accepted_by_the_cli():
    options = _cli_options()
    bad = [f"{rel}:{line}: {flag} {why}" for rel, line, flag, value in flag_mentions(REPO)
           if (why := _problem(options, flag, value))]
    assert not bad, "\n".join(bad)
    assert sum(1 for _ in flag_mentions(REPO)) > 50  # the walk does see the messages


def test_flag_check_catches_wrong_forms():
    options = _cli_options()
    assert _problem(options, "--weights", "{}=PATH)") is not None  # the old missing-checkpoint hint
    assert _problem(options, "--no-such-flag", None) is not None
    assert _problem(options, "--file", "{}=PATH;") is None
    assert _problem(options, "--set", "dataset.root=/data") is None
    assert _problem(options, "--weights", "PATH") is None


# ---- pipeline presets by name (a wheel user has no configs/ folder to point at) -----------------------------------
def test_run_takes_a_shipped_pipeline_preset_by_name(tmp_path, monkeypatch):
    from pipeline.cli.common import PipelineFile

    monkeypatch.chdir(tmp_path)
    assert PipelineFile().convert("sample", None, None) == str(REPO / "configs" / "pipelines" / "sample.yaml")
    (tmp_path / "sample").write_text("name: mine\n")  # a file of that name wins over the preset
    assert PipelineFile().convert("sample", None, None) == "sample"
    res = CliRunner().invoke(main, ["run", "no-such-preset"])
    assert res.exit_code == 2
    assert "neither a file, a shipped pipeline nor a paper preset; pipelines: crosstask-vt-twins, msrvtt-1ka, sample" in res.output
    assert "clip4clip-msrvtt" in res.output  # the paper presets are offered too
    assert PipelineFile().convert("clip4clip-msrvtt", None, None) == "paper-preset:clip4clip-msrvtt"
    res = CliRunner().invoke(main, ["slurm", "missing.yaml"])
    assert res.exit_code == 2 and "pipeline file 'missing.yaml' does not exist" in res.output
