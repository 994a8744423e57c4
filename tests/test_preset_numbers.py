"""Each paper preset with an evaluation, run through the pipeline's evaluate stage on recorded features, gives the
number the reference's own evaluation code computes from the same features.

tests/golden/preset_numbers/<preset>.npz holds small seeded features; numbers.json holds what the reference's
evaluation statements gave on them (scripts/golden/preset_numbers.py runs them from the reference checkouts and
records file:line and commit). Here the features are written as the run layout's stores
(RUN/features/<model>.h5 and .text.h5; the dataset's split / annotation files under dataset.root) and
`vtpipe run PRESET --stage evaluate -o RUN --set dataset.root=ROOT` scores them: the same command a user runs.

TVTSv2 zero-shot needs the text tower: the reference ran TVTS's ViT-B/32 model at reduced depth with seeded
weights (scripts/golden/tvtsv2_zeroshot.py), and the test gives vtpipe the same model YAML and checkpoint.
DRL TI / WTI need the checkpoint's seqTransf and weight heads: the reference ran DRL's own methods with the
heads of a seeded tiny checkpoint (scripts/golden/drl_numbers.py), and the test gives vtpipe that checkpoint.
UCoFiA: the features of tests/golden/ucofia.npz, whose SK-normed three-level scores UCoFiA's code computed
(scripts/golden/ucofia_reference.py), scored by its eval_epoch tail (scripts/golden/ucofia_numbers.py).
locvtp-export has no evaluation: its export is read with LocVTP's
loop over keys (test_locvtp_export_preset_reads_with_the_reference_loop).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, run_cli
from pipeline.presets import load_preset
from stages.features.store import VideoStoreWriter, write_text_store

GOLD = REPO / "tests/golden/preset_numbers"
NUMBERS = json.loads((GOLD / "numbers.json").read_text())


def _video_store(path: Path, model: str, ids, units, pooled) -> None:
    w = VideoStoreWriter(path, units[0].shape[-1], {"model": model})
    for vid, u, p in zip(ids, units, pooled):
        w.add(str(vid), np.asarray(u, np.float32), np.arange(len(u), dtype=float), None, np.asarray(p, np.float32))
    w.close()


def _retrieval(g, model: str, feats: Path, root: Path) -> None:
    n = int(g["cap_video"].max()) + 1
    vids = [f"video{i}" for i in range(n)]
    if "windows" in g:  # S3D windows: the store's units; pooled = their mean, as the reference's view + mean
        _video_store(feats / f"{model}.h5", model, vids, g["windows"], g["pooled"])
    else:
        _video_store(feats / f"{model}.h5", model, vids, g["videos"][:, None, :], g["videos"])
    caps = g["captions"]
    write_text_store(feats / f"{model}.text.h5", [f"c{i}" for i in range(len(caps))], [vids[i] for i in g["cap_video"]],
                     ["x"] * len(caps), caps, {"model": model})


def _action(g, dataset: str, model: str, feats: Path, root: Path) -> None:
    classes, labels, ids = list(g["classes"]), list(g["labels"]), list(g["video_ids"])
    full = [f"{c}/{v}" for c, v in zip(labels, ids)]
    _video_store(feats / f"{model}.h5", model, full, g["features"], g["features"].mean(1))
    if dataset == "hmdb51":
        d = root / "testTrainMulti_7030_splits"
        d.mkdir(parents=True)
        for k in range(3):
            for c in classes:
                (d / f"{c}_test_split{k + 1}.txt").write_text("".join(
                    f"{v}.avi {g['splits'][k][i]} \n" for i, v in enumerate(ids) if labels[i] == c))
    else:
        d = root / "ucfTrainTestlist"
        d.mkdir(parents=True)
        (d / "classInd.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(classes)))
        for k in range(3):
            s = g["splits"][k]
            assert set(s.tolist()) <= {1, 2}  # UCF101 lists every video in train or test
            (d / f"trainlist0{k + 1}.txt").write_text("".join(
                f"{f}.avi {classes.index(labels[i]) + 1}\n" for i, f in enumerate(full) if s[i] == 1))
            (d / f"testlist0{k + 1}.txt").write_text("".join(f"{f}.avi\n" for i, f in enumerate(full) if s[i] == 2))


def _crosstask(g, model: str, feats: Path, root: Path) -> None:
    """A CrossTask release (tasks_primary.txt, annotations/) and VT-TWINS's crosstask.csv listing its pairs."""
    from stages.datasets.captions import read_captions

    rel = root / "crosstask_release"
    (rel / "annotations").mkdir(parents=True)
    steps = {t: s.split(",") for t, s in zip(g["task_names"], g["task_steps"])}
    (rel / "tasks_primary.txt").write_text("".join(
        f"{t}\nTask {t}\nhttp://example.org/{t}\n{len(s)}\n{','.join(s)}\n\n" for t, s in steps.items()))
    rows = list(zip(g["task"], g["video_id"], g["step"], g["start"], g["end"]))
    for t, v in dict.fromkeys((t, v) for t, v, *_ in rows):
        (rel / "annotations" / f"{t}_{v}.csv").write_text("".join(
            f"{s},{a},{b}\n" for tt, vv, s, a, b in rows if (tt, vv) == (t, v)))
    (root / "crosstask.csv").write_text("end,start,task_id,text,video_id\n" + "".join(
        f"{b},{a},{t},{steps[t][s - 1]},{v}\n" for t, v, s, a, b in rows))
    segs = read_captions("crosstask", rel / "tasks_primary.txt")
    # the golden's rows are in annotation order per (task, video): match them to vtpipe's segment ids
    key = {(str(t), str(v), float(a)): i for i, (t, v, _, a, _) in enumerate(rows)}
    order = [key[(str(t), str(v), float(a))] for t, v, a in zip(segs["task"], segs["video_id"], segs["start_s"])]
    ids = segs["caption_id"].tolist()
    _video_store(feats / f"{model}.h5", model, ids, g["video"][order][:, None, :], g["video"][order])
    write_text_store(feats / f"{model}.text.h5", ids, ids, segs["caption"].tolist(), g["text"][order], {"model": model})


def _zeroshot(g, dataset: str, want: dict, feats: Path, root: Path, tmp: Path) -> dict:
    """TVTSv2 zero-shot: the recorded clip features of split 1's test videos, the split files, and the model
    YAML `tvtsv2-b32` replaced by the reduced-depth one the reference ran, with the same seeded checkpoint.
    Returns the environment and --set arguments for the run."""
    import backbone_checkpoints as bc
    from stages.recognition.action import prompt_classnames

    classes, labels = [str(c) for c in g["classes"]], g["labels"]
    # the prompts vtpipe makes are the ones the reference was given
    assert prompt_classnames(classes, "a person {}") == [want["prompt_templates"][0].format(str(w)) for w in g["words"]]
    stems = [f"v_{classes[y]}_g{k + 8:02d}_c01" if dataset == "ucf101" else f"{classes[y]}_clip_{k}"
             for k, y in enumerate(labels)]
    ids = [f"{classes[y]}/{s}" for y, s in zip(labels, stems)]
    _video_store(feats / "tvtsv2-b32.h5", "tvtsv2-b32", ids, g["video"][:, None, :], g["video"])
    if dataset == "ucf101":
        d = root / "ucfTrainTestlist"
        d.mkdir(parents=True)
        (d / "classInd.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(classes)))
        (d / "trainlist01.txt").write_text("".join(f"{c}/v_{c}_g01_c01.avi {i + 1}\n" for i, c in enumerate(classes)))
        (d / "testlist01.txt").write_text("".join(f"{v}.avi\n" for v in ids))
    else:
        d = root / "testTrainMulti_7030_splits"
        d.mkdir(parents=True)
        for i, c in enumerate(classes):
            (d / f"{c}_test_split1.txt").write_text(f"{c}_train_0.avi 1 \n" + "".join(
                f"{s}.avi 2 \n" for s, y in zip(stems, labels) if y == i))
    configs = bc.make_configs_dir(tmp)
    arch = want["model"]["arch_cfg"]
    bc.tiny_model_config(configs, "tvtsv2-b32", "tvtsv2-b32", params={"arch": None, "arch_cfg": arch})
    ckpt = bc.write_tvtsv2_checkpoint(tmp / "ckpt.pth", bc.tvtsv2_seeded_state_dict(arch, want["model"]["weight_seed"]))
    return {"env": {"VTPIPE_CONFIGS": str(configs)}, "sets": ["--set", f"model.weights={ckpt}"]}


def _drl(g, model: str, want: dict, feats: Path, tmp: Path) -> dict:
    """DRL TI / WTI: the store holds each video's real frames (raw CLIP features) and the pooled vector extract
    writes (meanP over the seqTransf-aggregated frames), the text store every caption's 32 token features with
    its mask; the model YAML is replaced by the tiny DRL of the same name with the reference's checkpoint."""
    import backbone_checkpoints as bc
    from stages.backbones.registry import load_model

    arch = want["model"]["arch_cfg"]
    configs = bc.make_configs_dir(tmp)
    bc.tiny_model_config(configs, model, model, embed_dim=arch["embed_dim"], params={"arch": None, "arch_cfg": arch})
    sd = bc.clip4clip_state_dict(arch, seed=want["model"]["weight_seed"], seq_transf=True, wti=model == "drl-wti")
    ckpt = bc.write_raw_state_dict(tmp / "pytorch_model.bin.4", sd)
    import os

    old = os.environ.get("VTPIPE_CONFIGS")
    os.environ["VTPIPE_CONFIGS"] = str(configs)
    try:
        net = load_model(model, weights=str(ckpt))
        real = [g["frames"][i][g["video_mask"][i]] for i in range(len(g["frames"]))]
        pooled = [net.pool(f) for f in real]
    finally:
        os.environ.pop("VTPIPE_CONFIGS") if old is None else os.environ.__setitem__("VTPIPE_CONFIGS", old)
    vids = [f"video{i}" for i in range(len(real))]
    _video_store(feats / f"{model}.h5", model, vids, real, pooled)
    write_text_store(feats / f"{model}.text.h5", [f"c{i}" for i in range(len(vids))], vids, ["x"] * len(vids),
                     g["tokens"][:, 0], {"model": model}, tokens=g["tokens"], token_mask=g["token_mask"])
    return {"env": {"VTPIPE_CONFIGS": str(configs)}, "sets": ["--set", f"model.weights={ckpt}"]}


def _ucofia(model: str, feats: Path, tmp: Path) -> dict:
    """UCoFiA: tests/golden/ucofia.npz's seeded features (the ones UCoFiA's code scored): each video's 12 frame
    rows and 48 selected patch rows with their mask, captions 0-7 (sentence + 32 word features) as the queries
    of videos 0-7, the 40-caption bank as the SK-norm query bank; the tiny UCoFiA checkpoint of its recipe."""
    import os

    import backbone_checkpoints as bc
    from stages.backbones.registry import load_model

    data = np.load(REPO / "tests/golden/ucofia.npz")
    g, recipe = {k: data[k] for k in data.files}, json.loads(str(data["recipe"]))
    arch = recipe["arch_cfg"]
    configs = bc.make_configs_dir(tmp)
    bc.tiny_model_config(configs, model, model, embed_dim=arch["embed_dim"], params={"arch": None, "arch_cfg": arch})
    ckpt = bc.write_raw_state_dict(tmp / "pytorch_model.bin.4", bc.ucofia_state_dict(
        arch, recipe["weight_seed"], recipe["max_words"], recipe["max_frames"]))
    old = os.environ.get("VTPIPE_CONFIGS")
    os.environ["VTPIPE_CONFIGS"] = str(configs)
    try:
        net = load_model(model, weights=str(ckpt))
        w = VideoStoreWriter(feats / f"{model}.h5", arch["embed_dim"], {"model": model})
        for i in range(len(g["feat_frames"])):
            rows = np.concatenate([g["feat_frames"][i], g["feat_pixels"][i]]).astype(np.float32)
            mask = np.concatenate([g["feat_mask"][i], np.repeat(g["feat_mask"][i], 4)]).astype(bool)
            w.add(f"video{i}", rows, np.arange(len(rows), dtype=float), mask, net.pool(rows, mask))
        w.close()
    finally:
        os.environ.pop("VTPIPE_CONFIGS") if old is None else os.environ.__setitem__("VTPIPE_CONFIGS", old)
    n = NUMBERS["ucofia-msrvtt"]["queries"]
    for path, sent, words, vids in ((feats / f"{model}.text.h5", g["feat_sentence"][:n], g["feat_words"][:n],
                                     [f"video{i}" for i in range(n)]),
                                    (feats / f"{model}.bank.text.h5", g["feat_bank_sentence"], g["feat_bank_words"],
                                     ["train"] * len(g["feat_bank_sentence"]))):
        write_text_store(path, [f"c{i}" for i in range(len(sent))], vids, ["x"] * len(sent), sent, {"model": model},
                         tokens=words, token_mask=np.ones(words.shape[:2], bool))
    return {"env": {"VTPIPE_CONFIGS": str(configs)}, "sets": ["--set", f"model.weights={ckpt}"]}


PRESETS = sorted(NUMBERS)


@pytest.mark.parametrize("name", PRESETS)
def test_preset_gives_the_reference_number(name, tmp_path):
    preset = load_preset(name)
    want = NUMBERS[name]
    assert "evaluate" in preset.config.get("stages", ["evaluate"])
    model = preset.config["model"]["name"]
    g = dict(np.load(GOLD / f"{name}.npz")) if (GOLD / f"{name}.npz").is_file() else {}
    run, root = tmp_path / "run", tmp_path / "data"
    feats = run / "features"
    feats.mkdir(parents=True)
    root.mkdir()
    tasks = preset.config["evaluate"]["tasks"]
    extra: dict = {"env": None, "sets": []}
    if tasks == ["zeroshot"]:
        extra = _zeroshot(g, preset.config["dataset"]["preset"], want, feats, root, tmp_path)
    elif tasks == ["crosstask"]:
        _crosstask(g, model, feats, root)
    elif tasks == ["linear-probe"]:
        _action(g, preset.config["dataset"]["preset"], model, feats, root)
    elif name == "ucofia-msrvtt":
        extra = _ucofia(model, feats, tmp_path)
    elif "tokens" in g:
        extra = _drl(g, model, want, feats, tmp_path)
    else:
        _retrieval(g, model, feats, root)
    run_cli("run", name, "--stage", "evaluate", "-o", str(run), "--set", f"dataset.root={root}", *extra["sets"],
            env=extra["env"])
    _check(run / "eval" / model, tasks, g, want)
    if extra["env"] is None:  # `vtpipe evaluate --set preset=NAME` on the same store: the same numbers (the
        # command's option defaults must not replace the preset's conventions)
        ev = tmp_path / "ev"
        run_cli("evaluate", *[a for t in tasks for a in ("--task", t)], "--features", str(feats / f"{model}.h5"),
                "-o", str(ev), "--set", f"preset={name}", "--set", f"dataset.root={root}")
        _check(ev, tasks, g, want)


def _check(out: Path, tasks: list, g: dict, want: dict) -> None:
    if tasks == ["zeroshot"]:
        m = json.loads((out / "zeroshot/metrics.json").read_text())
        assert m["per_split"][0]["videos"] == len(g["labels"]) and m["videos_missing"] == []
        assert (m["top1"], m["top5"]) == pytest.approx((want["top1"], want["top5"]), abs=1e-9), want["computed_by"]
    elif tasks == ["crosstask"]:
        m = json.loads((out / "crosstask/metrics.json").read_text())
        assert m["segments_missing"] == 0 and m["n_segments"] == len(g["task"])
        assert m["ctr"] == pytest.approx(want["ctr"], abs=1e-9)
        assert m["per_task"] == pytest.approx(want["per_task"], abs=1e-9)  # {task id: %}
    elif tasks == ["linear-probe"]:
        m = json.loads((out / "linear-probe/metrics.json").read_text())
        assert m["top1_per_split"] == pytest.approx(want["per_split"], abs=1e-9)
        assert m["top1"] == pytest.approx(want["mean"], abs=1e-9)
    else:
        for d in tasks:
            m = json.loads((out / d / "metrics.json").read_text())
            ref = want[d]
            got = {"R1": m["R@1"], "R5": m["R@5"], "R10": m["R@10"], "MR": m["MdR"]}
            if "MeanR" in ref:
                got["MeanR"] = m["MnR"]
            assert got == pytest.approx({k: ref[k] for k in got}, rel=1e-6, abs=1e-9), (d, want["computed_by"])
        if "cosine_would_give" in want:  # the data tells the reference's raw dot product from cosine
            assert want["cosine_would_give"] != {k: want["t2v"][k] for k in want["cosine_would_give"]}


def test_locvtp_export_preset_reads_with_the_reference_loop(tmp_path):
    """`vtpipe run locvtp-export` on an ActivityNet-style nested folder (train/v_a.mp4, val/v_b.mp4, a broken
    video): the export's top-level keys are exactly the videos, keyed by file stem, and LocVTP's concatHDF5.py
    loop (`for vid in fin.keys(): fin[vid]['c3d_features'][:]`, facts in tests/golden/paper_presets.json)
    reads every one; the failed video is listed beside the export. The model YAML `locvtp` is replaced by a
    tiny one of the same name (random weights in the release format), so the preset runs unchanged."""
    import h5py
    import pandas as pd

    import backbone_checkpoints as bc
    from video_factory import make_counter_video

    facts = json.loads((REPO / "tests/golden/paper_presets.json").read_text())["locvtp-export"]
    assert facts["reads_top_level_keys"] and facts["dataset"] == "c3d_features"
    configs = bc.make_configs_dir(tmp_path)
    bc.tiny_model_config(configs, "locvtp", "locvtp", params=dict(bc.TINY_DISTILBERT))
    ckpt = bc.write_locvtp_checkpoint(tmp_path / "model_10e.pth",
                                      bc.random_state_dict(bc.locvtp_shapes(bc.TINY_DISTILBERT), seed=5))
    vocab = bc.write_vocab(tmp_path / "vocab.txt")
    videos = tmp_path / "anet"
    make_counter_video(videos / "train" / "v_a.mp4", n_frames=20, fps=10)  # 2 clips of 16 (the last padded)
    make_counter_video(videos / "val" / "v_b.mp4", n_frames=16, fps=10)
    (videos / "val" / "v_broken.mp4").write_bytes(b"not a video")
    run = tmp_path / "run"
    run_cli("run", "locvtp-export", "-o", str(run), "--set", f"input.videos={videos}",
            "--set", f"model.weights={{checkpoint: {ckpt}, vocab: {vocab}}}", "--set", "extract.decode_workers=0",
            env={"VTPIPE_CONFIGS": str(configs)})
    export = run / "features/locvtp.locvtp.h5"
    read = {}
    with h5py.File(export, "r") as fin:  # the reference's loop over the top-level keys
        for vid in fin.keys():
            read[vid] = fin[vid][facts["dataset"]][:].shape
    assert read == {"v_a": (2, 1, 256), "v_b": (1, 1, 256)}
    failed = pd.read_csv(run / "features/locvtp.locvtp.failed.csv", dtype=str)
    assert failed["id"].tolist() == ["val/v_broken"] and failed["key"].tolist() == ["v_broken"]
