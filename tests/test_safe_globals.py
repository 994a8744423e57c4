"""Checkpoints whose pickle holds non-tensor objects: refused with the types named, loaded with an allow-list."""

from __future__ import annotations

import argparse
import dataclasses
import pickle

import pytest
import torch

import backbone_checkpoints as bc
from stages.backbones.checkpoints import load_torch_file
from stages.backbones.registry import load_model
from stages.backbones.safe_globals import resolve_global
from stages.contract.errors import VtpipeError

torch.set_num_threads(min(2, torch.get_num_threads()))


@dataclasses.dataclass
class TrainerConfig:  # a second, non-argparse type a trainer might pickle
    lr: float = 0.1


@pytest.fixture()
def tiny_with_args(tmp_path, monkeypatch):
    root = bc.make_configs_dir(tmp_path)
    monkeypatch.setenv("VTPIPE_CONFIGS", str(root))
    bc.tiny_model_config(root, "tvtsv2-b32", "tvtsv2-tiny", embed_dim=32,
                         preprocess={"size": 64, "resize": "exact", "crop": "none", "interpolation": "bilinear"},
                         params={"arch": None, "arch_cfg": bc.TINY_TVTS_ARCH})
    sd = bc.random_state_dict(bc.tvtsv2_shapes(**bc.TINY_TVTS), seed=3)
    path = tmp_path / "trained.pth"
    # the way a trainer saves: weights plus its argparse Namespace of hyper-parameters
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in sd.items()},
                "args": argparse.Namespace(lr=1e-4, batch_size=32, name="run1")}, path)
    return sd, path


def test_refused_with_type_named(tiny_with_args):
    _, path = tiny_with_args
    with pytest.raises(VtpipeError) as err:
        load_model("tvtsv2-tiny", weights=str(path))
    msg = str(err.value)
    assert "argparse.Namespace" in msg and "--allow-global argparse.Namespace" in msg
    assert "weights_only" in msg and str(path) in msg


def test_allow_list_loads_it(tiny_with_args):
    sd, path = tiny_with_args
    model = load_model("tvtsv2-tiny", weights=str(path), allow_globals=["argparse.Namespace"])
    got = model.net.state_dict()
    assert all(torch.equal(got[k], v) for k, v in sd.items() if k in got)
    # the allow-list holds for that call only
    with pytest.raises(VtpipeError, match="argparse.Namespace"):
        load_model("tvtsv2-tiny", weights=str(path))


def test_all_types_named_and_only_listed_ones_allowed(tmp_path):
    path = tmp_path / "two.pth"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "args": argparse.Namespace(a=1), "cfg": TrainerConfig()}, path)
    with pytest.raises(VtpipeError) as err:
        load_torch_file(path)
    assert "argparse.Namespace" in str(err.value) and "test_safe_globals.TrainerConfig" in str(err.value)
    from stages.backbones.safe_globals import ALLOWED_GLOBALS

    token = ALLOWED_GLOBALS.set(("argparse.Namespace",))
    try:
        with pytest.raises(VtpipeError) as err:
            load_torch_file(path)
        assert "TrainerConfig" in str(err.value) and "--allow-global argparse.Namespace" not in str(err.value)
    finally:
        ALLOWED_GLOBALS.reset(token)


@pytest.mark.parametrize("name, why", [
    ("os.system", "can run code"), ("subprocess.Popen", "can run code"), ("builtins.eval", "not a class"),
    ("argparse", "dotted name"), ("nonexistent_mod_xyz.Thing", "cannot find"), ("posixpath.join", "not a class"),
])
def test_dangerous_or_bad_names_refused(name, why):
    with pytest.raises(VtpipeError, match=why):
        resolve_global(name)


def test_a_malicious_pickle_never_runs(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "x": Evil()}, path, pickle_module=pickle)
    with pytest.raises(VtpipeError, match="io.open") as err:
        load_torch_file(path)
    assert "cannot allow io.open" in str(err.value) and "--allow-global" not in str(err.value)
    assert not marker.exists()


def test_cli_flag(tiny_with_args, tmp_path):
    from click.testing import CliRunner

    from pipeline.cli import main

    res = CliRunner().invoke(main, ["extract", "--help"])
    assert "--allow-global" in res.output
