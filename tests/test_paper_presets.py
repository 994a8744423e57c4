"""Paper presets (configs/presets) against the settings of the reference code they name.

tests/golden/paper_presets.json holds what each reference's own files say (run-script arguments, argparse
defaults, the evaluation scripts' assignments and literals), read by scripts/golden/paper_presets.py from the
reference repositories at the commits recorded in it. Each test resolves a preset the way `vtpipe run` does
and compares the settings vtpipe will use (model YAML params, the sampling policy extract will build, the
dataset and evaluate keys) with those facts: the mapping from the reference's argument names to vtpipe's is
the only thing written here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import REPO, run_cli
from pipeline import config as config_mod
from pipeline.presets import layer_under, list_presets, load_preset
from stages.backbones.registry import model_config
from stages.contract.errors import ConfigError

GOLDEN = json.loads((REPO / "tests/golden/paper_presets.json").read_text())
PRESETS = {p.name: p for p in list_presets()}


def resolved(name: str, **user) -> dict:
    return config_mod.resolve({"preset": name, **user})


def model_of(cfg: dict):
    m = cfg["model"]
    try:
        return model_config(m["name"], m.get("protocol"))
    except TypeError:  # a registry without protocols
        return model_config(m["name"])


def sampling_of(cfg: dict) -> dict:
    from stages.extract import sampling_spec

    return sampling_spec(cfg)


def test_every_preset_has_reference_facts_and_every_fact_a_preset():
    assert PRESETS, "no paper presets found"
    assert sorted(set(PRESETS) - set(GOLDEN)) == []  # a preset with nothing to check it against
    missing = sorted(set(GOLDEN) - set(PRESETS))
    # facts recorded for tables vtpipe cannot express yet (see the README's preset table)
    assert missing == sorted(NOT_YET), missing
    for p in PRESETS.values():
        commit = GOLDEN[p.name]["source"].split("@")[1].split()[0]
        assert commit in p.reference, (p.name, "the preset must cite the commit its facts were read at")


NOT_YET: set[str] = set()  # facts recorded for tables no preset expresses yet


def test_ucofia_preset(tmp_path):
    g, cfg = GOLDEN["ucofia-msrvtt"], resolved("ucofia-msrvtt", dataset={"root": str(tmp_path)})
    info, s = model_of(cfg), sampling_of(cfg)
    assert info.family == "ucofia" and g["sim_header"] == "seqTransf"  # the family is UCoFiA's seqTransf model
    assert info.params["max_words"] == g["max_words"]
    assert (s["policy"], s["max_frames"], s["framerate"], s["slice_framepos"]) == (
        "clip4clip", g["max_frames"], g["feature_framerate"], g["slice_framepos"])
    assert Path(cfg["dataset"]["train_split"]).name == g["train_csv"]  # the SK-norm bank's captions
    ev = cfg["evaluate"]
    assert (ev["similarity"], ev["rerank"], ev["ties"]) == ("ucofia", "sk-norm", "clip4clip")


@pytest.mark.parametrize("name", [n for n in ("vt-twins-linear-probe-hmdb51", "vt-twins-linear-probe-ucf101",
                                              "milnce-linear-probe-hmdb51") if n in PRESETS])
def test_linear_probe_presets(name):
    g, cfg = GOLDEN[name], resolved(name)
    info, s = model_of(cfg), sampling_of(cfg)
    assert info.params["output"] == "mixed_5c" and info.embed_dim == g["feature_dim"]
    assert (s["policy"], s["num_clips"], s["clip_len"]) == ("milnce-ucf", g["num_windows_test"], g["num_frames"])
    assert info.preprocess["crop"] == "square" and info.preprocess["size"] == g["video_size"]
    assert cfg["evaluate"]["linear_probe"]["C"] in g["svm_C"]
    assert cfg["dataset"]["splits"] == g["splits"] and cfg["evaluate"]["tasks"] == ["linear-probe"]
    assert "compress" not in cfg["stages"]


@pytest.mark.parametrize("name", [n for n in ("clip4clip-msrvtt", "clip4clip-msvd", "clip4clip-didemo",
                                              "clip4clip-activitynet") if n in PRESETS])
def test_clip4clip_presets(name):
    g, cfg = GOLDEN[name], resolved(name)
    info, s = model_of(cfg), sampling_of(cfg)
    # the caption length extract uses: model.max_words (stages/backbones/text_length.py) or the YAML's
    assert (cfg["model"].get("max_words") or info.params["max_words"]) == g["max_words"]
    assert (s["policy"], s["max_frames"], s["framerate"], s["slice_framepos"]) == (
        "clip4clip", g["max_frames"], g["feature_framerate"], g["slice_framepos"])
    assert info.params["sim_header"] == g["sim_header"]
    assert cfg["evaluate"]["ties"] == "clip4clip"  # compute_metrics' sort-and-find


PARAGRAPH_DATA = {"clip4clip-didemo": "didemo", "clip4clip-activitynet": "activitynet"}


@pytest.mark.parametrize("name", [n for n in ("clip4clip-msrvtt", "clip4clip-msvd", "clip4clip-didemo",
                                              "clip4clip-activitynet") if n in PRESETS])
def test_clip4clip_paragraph_queries(name):
    """DiDeMo / ActivityNet: CLIP4Clip's loader joins a video's sentence list with one space (one query per
    video); MSR-VTT / MSVD join nothing but a caption's own words. The preset's dataset format must read the
    test data the same way."""
    from stages.datasets.captions import read_captions

    joins = GOLDEN[name]["space_joins"]["joined"]
    paragraph = any("sentences" in j or "'text'" in j for j in joins)
    assert paragraph == (name in PARAGRAPH_DATA), joins
    if not paragraph:
        return
    root = REPO / "tests/data" / PARAGRAPH_DATA[name]
    cfg = resolved(name, dataset={"root": str(root)})
    ds = cfg["dataset"]
    got = read_captions(ds["format"], ds["captions"], **ds["options"])
    raw = json.loads(Path(ds["captions"]).read_text())
    if name == "clip4clip-didemo":  # a list of {video, description}: descriptions in file order per video
        want: dict = {}
        for item in raw:
            want.setdefault(Path(item["video"]).stem, []).append(item["description"])
    else:  # {v_id: {sentences: [...]}}
        want = {vid: v["sentences"] for vid, v in raw.items()}
    assert got["video_id"].is_unique  # one query per video
    for vid, cap in zip(got["video_id"], got["caption"]):
        assert cap == " ".join(want[vid]), vid
    assert set(got["video_id"]) <= set(want) and len(got) >= 2  # the split list (options.split) may keep fewer


@pytest.mark.parametrize("name", [n for n in ("drl-ti-msrvtt", "drl-wti-msrvtt") if n in PRESETS])
def test_drl_presets(name):
    g, cfg = GOLDEN[name], resolved(name)
    info, s = model_of(cfg), sampling_of(cfg)
    assert info.params["max_words"] == g["max_words"]
    assert (s["policy"], s["max_frames"], s["framerate"]) == ("drl", g["max_frames"], g["video_framerate"])
    assert (info.params["interaction"], info.params["sim_header"]) == (g["interaction"], g["agg_module"])
    assert cfg["evaluate"]["ties"] == "clip4clip"  # tvr/utils/metrics.py is CLIP4Clip's compute_metrics


@pytest.mark.parametrize("name", [n for n in ("vt-twins-youcook2", "vt-twins-msrvtt", "milnce-youcook2",
                                              "milnce-msrvtt") if n in PRESETS])
def test_s3d_retrieval_presets(name):
    g, cfg = GOLDEN[name], resolved(name)
    s = sampling_of(cfg)
    assert (s["policy"], s["fps"], s["num_clips"], s["clip_len"]) == (
        "milnce-retrieval", g["fps"], g["num_windows_test"], g["num_frames"])
    assert model_of(cfg).preprocess["size"] == g["video_size"]
    assert "compress" not in cfg["stages"]  # the loaders cut the original files
    assert cfg["evaluate"]["ties"] == "clip4clip"  # metrics.retrieval: the same sort-and-find


def test_vt_twins_crosstask_preset(tmp_path):
    g, cfg = GOLDEN["vt-twins-crosstask"], resolved("vt-twins-crosstask", dataset={"root": str(tmp_path)})
    s = sampling_of(cfg)
    assert (s["fps"], s["num_clips"], s["clip_len"]) == (g["fps"], g["num_windows_test"], g["num_frames"])
    assert cfg["extract"]["segments"] and cfg["evaluate"]["tasks"] == ["crosstask"]
    assert cfg["dataset"]["options"]["videos_csv"] == str(tmp_path / "crosstask.csv")
    # the reader keeps exactly the (task, video) pairs of a file laid out as VT-TWINS's crosstask.csv
    from stages.datasets.crosstask import read_crosstask_segments

    data = REPO / "tests/data/crosstask_release"
    vt = tmp_path / "crosstask.csv"
    vt.write_text(",".join(g["columns"]) + "\n9.0,3.0,23521,pour juice,-2kbFZa83AA\n"
                  "66.0,60.0,59684,paint shelf,vMkMX5rQTN0\n5.0,0.0,59684,cut shelf,vMkMX5rQTN0\n")
    seg = read_crosstask_segments(data / "tasks_primary.txt", videos_csv=vt)
    assert sorted(set(zip(seg["task"], seg["video_id"]))) == [("23521", "-2kbFZa83AA"), ("59684", "vMkMX5rQTN0")]


@pytest.mark.parametrize("name", [n for n in ("tvtsv2-zeroshot-ucf101", "tvtsv2-zeroshot-hmdb51") if n in PRESETS])
def test_tvtsv2_zeroshot_presets(name):
    g, cfg = GOLDEN[name], resolved(name)
    assert [cfg["dataset"]["prompt_template"]] == g["prompt_templates"]
    assert cfg["dataset"]["splits"] == [g["split"]]
    assert cfg["evaluate"]["tasks"] == ["zeroshot"]
    s, info = sampling_of(cfg), model_of(cfg)
    assert s["policy"] == "tvtsv2-eval" and s["num_frames"] == g["num_frames"]
    assert info.preprocess["size"] == g["input_res"]


def test_locvtp_export_preset():
    g, cfg = GOLDEN["locvtp-export"], resolved("locvtp-export")
    assert g["reads_top_level_keys"] and g["dataset"] == "c3d_features"
    assert cfg["concat"]["layout"] == "locvtp" and cfg["concat"]["locvtp_ids"] == "stem"
    assert cfg["model"]["name"] == "locvtp" and "compress" not in cfg["stages"]


def test_user_keys_win_over_the_preset():
    cfg = config_mod.resolve({"preset": "clip4clip-msrvtt", "evaluate": {"ties": "pessimistic"},
                              "dataset": {"root": "/data/msrvtt"}})
    assert cfg["evaluate"]["ties"] == "pessimistic"  # set by the user
    assert cfg["evaluate"]["tasks"] == ["t2v", "v2t"] and cfg["dataset"]["preset"] == "msrvtt-1ka"  # the paper's
    assert cfg["preset"] == "clip4clip-msrvtt"
    over = config_mod.resolve({}, overrides={"preset": "clip4clip-msrvtt"})  # --set preset=...
    assert over["model"]["name"] == "clip4clip-meanp"
    assert layer_under({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}}) == {"a": {"b": 1, "c": 3}}


def test_preset_errors(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match=r"unknown paper preset 'nope'.*vtpipe presets"):
        config_mod.resolve({"preset": "nope"})
    with pytest.raises(ConfigError, match="names a paper preset"):
        config_mod.resolve({"preset": {"model": "x"}})
    bad = tmp_path / "presets"
    bad.mkdir()
    (bad / "x.yaml").write_text("name: y\npaper: p\nreference: r\nconfig: {}\n")
    import pipeline.presets as presets_mod

    monkeypatch.setattr(presets_mod, "presets_dir", lambda: bad)
    with pytest.raises(ConfigError, match="differs from the file name"):
        load_preset("x")
    (bad / "x.yaml").write_text("name: x\npaper: p\nconfig: {}\nextra: 1\n")
    with pytest.raises(ConfigError, match=r"missing \['reference'\].*unknown keys \['extra'\]"):
        load_preset("x")


def test_vtpipe_run_takes_a_paper_preset_by_name(tmp_path):
    """`vtpipe run NAME` with a paper preset: the run's config.yaml holds the preset's settings."""
    res = run_cli("run", "tvtsv2-zeroshot-ucf101", "-o", str(tmp_path / "run"), "--stage", "evaluate",
                  "--set", f"dataset.root={tmp_path}", check=False)
    written = (tmp_path / "run" / "config.yaml")
    assert written.is_file(), res.stderr
    import yaml

    cfg = yaml.safe_load(written.read_text())
    assert cfg["preset"] == "tvtsv2-zeroshot-ucf101" and cfg["dataset"]["prompt_template"] == "a person {}"
    assert cfg["model"]["protocol"] == "zeroshot" and cfg["dataset"]["splits"] == [1]


def test_vtpipe_presets_lists_every_preset_with_its_reference():
    out = run_cli("presets").stdout
    for p in PRESETS.values():
        assert p.name in out and p.reference in out
    shown = run_cli("presets", "--show", "tvtsv2-zeroshot-ucf101").stdout
    assert "a person {}" in shown and "TencentARC/TVTS@290a63e" in shown
    bad = run_cli("presets", "--show", "nope", check=False)
    assert bad.returncode == 2 and "unknown paper preset" in bad.stderr


def test_goldens_were_read_from_the_references():
    """The facts name their source files and commits (scripts/golden/paper_presets.py writes them)."""
    for name, g in GOLDEN.items():
        assert "@" in g["source"] and Path(g["source"].split()[1]).suffix in (".py", ".md", ".sh", ".csv"), name
