"""Pipeline config: defaults, type checks, unknown keys, overrides, path resolution."""

import pytest

from pipeline.config import DEFAULTS, load_pipeline, parse_overrides, resolve
from stages.contract.errors import ConfigError


def test_defaults_resolve():
    cfg = resolve({})
    assert cfg["compress"]["fps"] == 3.0 and cfg["stages"] == DEFAULTS["stages"]


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match="'extract.shardz'"):
        resolve({"extract": {"shardz": 3}})
    with pytest.raises(ConfigError, match="'modle'"):
        resolve({"modle": {}})


@pytest.mark.parametrize("over, msg", [
    ({"extract": {"shards": "two"}}, "must be an integer"),
    ({"compress": {"fps": "3"}}, "must be a number"),
    ({"model": {"allow_random": "yes"}}, "true or false"),
    ({"evaluate": {"ties": "random"}}, "must be one of"),
    ({"stages": ["compress", "train"]}, "unknown stage"),
])
def test_wrong_types_are_errors(over, msg):
    with pytest.raises(ConfigError, match=msg):
        resolve(over)


def test_overrides_and_ordering():
    over = parse_overrides(["extract.shards=4", "model.name=clip-vit-b-32", "evaluate.tasks=[v2t]"])
    cfg = resolve({"stages": ["evaluate", "compress"]}, overrides=over)
    assert cfg["extract"]["shards"] == 4 and cfg["model"]["name"] == "clip-vit-b-32"
    assert cfg["evaluate"]["tasks"] == ["v2t"]
    assert cfg["stages"] == ["compress", "evaluate"]
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["extract.shards"])


def test_paths_relative_to_yaml(tmp_path):
    (tmp_path / "p").mkdir()
    y = tmp_path / "p" / "x.yaml"
    y.write_text("input: {videos: ../vids}\ndataset: {captions: caps.csv}\nmodel: {weights: w.pt}\n")
    cfg = load_pipeline(y)
    assert cfg["input"]["videos"] == str((tmp_path / "vids").resolve())
    assert cfg["dataset"]["captions"] == str((tmp_path / "p" / "caps.csv").resolve())
    assert cfg["model"]["weights"] == str((tmp_path / "p" / "w.pt").resolve())
    y.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_pipeline(y)
