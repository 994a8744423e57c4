"""Annotation readers on tiny fixture files in each dataset's real format (tests/data/), plus their errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from stages.datasets import CAPTION_FORMATS, read_action_split, read_captions, read_crosstask_segments
from stages.datasets.common import parse_hms, read_id_list, strip_video_ext
from stages.datasets.crosstask import read_crosstask_tasks
from stages.contract.errors import VtpipeError

DATA = Path(__file__).parent / "data"


def rows(df: pd.DataFrame, cols=("caption_id", "video_id", "caption")) -> list[tuple]:
    return [tuple(r) for r in df[list(cols)].itertuples(index=False)]


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------


def test_parse_hms_and_extensions():
    assert parse_hms("01.02.27.034", "x") == pytest.approx(3747.034)
    assert parse_hms("00:00:43.8", "x") == pytest.approx(43.8)
    assert parse_hms("00.00.05", "x") == 5.0
    with pytest.raises(VtpipeError, match="hh.mm.ss"):
        parse_hms("43.8s", "x")
    assert strip_video_ext("a/b.MP4") == "a/b"
    assert strip_video_ext("x@N02_1_a.mov") == "x@N02_1_a"
    assert strip_video_ext("-4wsuPCjDBc_5_15") == "-4wsuPCjDBc_5_15"


def test_read_id_list_variants(tmp_path):
    (tmp_path / "a.txt").write_text("v1.mp4\n\nv2 extra\n")
    assert read_id_list(tmp_path / "a.txt") == ["v1", "v2"]
    (tmp_path / "b.json").write_text('["v_1", "v_2"]')
    assert read_id_list(tmp_path / "b.json") == ["v_1", "v_2"]
    (tmp_path / "c.csv").write_text("key,video_id\n1,video3\n")
    assert read_id_list(tmp_path / "c.csv") == ["video3"]
    (tmp_path / "d.txt").write_text("v1\nv1\n")
    with pytest.raises(VtpipeError, match="duplicate video id"):
        read_id_list(tmp_path / "d.txt")
    (tmp_path / "e.csv").write_text("id\nx\n")
    with pytest.raises(VtpipeError, match="'video_id' column"):
        read_id_list(tmp_path / "e.csv")


def test_unknown_option_and_format_are_clear():
    with pytest.raises(VtpipeError, match="does not take option.*'splitt'.*'split'"):
        read_captions("msvd-txt", DATA / "msvd/AllVideoDescriptions.txt", splitt="x")
    with pytest.raises(VtpipeError, match="unknown caption format 'msvd'"):
        read_captions("msvd", DATA / "msvd/AllVideoDescriptions.txt")


# ------------------------------------------------------------------------------------------------
# MSVD
# ------------------------------------------------------------------------------------------------


def test_msvd_txt_all_and_split_order():
    df = read_captions("msvd-txt", DATA / "msvd/AllVideoDescriptions.txt")
    assert list(df.columns) == ["caption_id", "video_id", "caption"]
    assert rows(df) == [
        ("-4wsuPCjDBc_5_15#0", "-4wsuPCjDBc_5_15", "a squirrel is eating a peanut in it's shell."),
        ("-4wsuPCjDBc_5_15#1", "-4wsuPCjDBc_5_15", "A chipmunk is eating."),
        ("-7KMZQEsJW4_205_208#0", "-7KMZQEsJW4_205_208", "a woman is slicing a tomato."),
        ("-7KMZQEsJW4_205_208#1", "-7KMZQEsJW4_205_208", "someone cuts a tomato"),
        ("-7KMZQEsJW4_205_208#2", "-7KMZQEsJW4_205_208", "a person slices tomatoes"),  # TAB separator
        ("-8y1Q0rA3n8_108_115#0", "-8y1Q0rA3n8_108_115", "a cat plays with a ball."),
    ]
    test = read_captions("msvd-txt", DATA / "msvd/AllVideoDescriptions.txt", split=DATA / "msvd/test_list.txt")
    # the split list's video order, then file order within a video (CLIP4Clip's iteration order)
    assert test["caption_id"].tolist() == ["-7KMZQEsJW4_205_208#0", "-7KMZQEsJW4_205_208#1",
                                           "-7KMZQEsJW4_205_208#2", "-4wsuPCjDBc_5_15#0", "-4wsuPCjDBc_5_15#1"]


def test_msvd_split_with_uncaptioned_video_errors(tmp_path):
    (tmp_path / "test_list.txt").write_text("-4wsuPCjDBc_5_15\nnot_a_video_1_2\n")
    with pytest.raises(VtpipeError, match="1 video id.*no caption.*not_a_video_1_2"):
        read_captions("msvd-txt", DATA / "msvd/AllVideoDescriptions.txt", split=tmp_path / "test_list.txt")


def test_msvd_txt_bad_line_and_encoding(tmp_path):
    p = tmp_path / "caps.txt"
    p.write_text("# header\nvideo_only\n")
    with pytest.raises(VtpipeError, match=r"caps.txt:2: expected '<video_id> <caption>'"):
        read_captions("msvd-txt", p)
    p.write_bytes("vid caf\xe9\n".encode("latin-1"))
    with pytest.raises(VtpipeError, match="not UTF-8"):
        read_captions("msvd-txt", p)


def test_captions_json_tokens_joined():
    df = read_captions("captions-json", DATA / "msvd/raw-captions.json")
    assert rows(df) == [
        ("-4wsuPCjDBc_5_15#0", "-4wsuPCjDBc_5_15", "a squirrel is eating a peanut"),
        ("-4wsuPCjDBc_5_15#1", "-4wsuPCjDBc_5_15", "a chipmunk is eating"),
        ("-7KMZQEsJW4_205_208#0", "-7KMZQEsJW4_205_208", "a woman is slicing a tomato"),
    ]


def test_captions_json_errors(tmp_path):
    p = tmp_path / "c.json"
    p.write_text('{"v1": []}')
    with pytest.raises(VtpipeError, match="video 'v1'.*non-empty list"):
        read_captions("captions-json", p)
    p.write_text('{"v1": [3]}')
    with pytest.raises(VtpipeError, match="caption 0 must be a string"):
        read_captions("captions-json", p)
    p.write_text('{"v1": ["  "]}')
    with pytest.raises(VtpipeError, match=r"empty caption.*v1#0"):
        read_captions("captions-json", p)
    p.write_text("[1, 2]")
    with pytest.raises(VtpipeError, match="expected a JSON object"):
        read_captions("captions-json", p)
    p.write_text("{not json")
    with pytest.raises(VtpipeError, match="not valid JSON"):
        read_captions("captions-json", p)


# ------------------------------------------------------------------------------------------------
# DiDeMo
# ------------------------------------------------------------------------------------------------


def test_didemo_paragraph_like_clip4clip():
    df = read_captions("didemo", DATA / "didemo/test_data.json", split=DATA / "didemo/test_list.txt")
    # split order; descriptions joined in file order; extensions stripped from ids
    assert rows(df) == [
        ("12090392@N02_13482799053_87ef417396", "12090392@N02_13482799053_87ef417396", "camera pans left"),
        ("10015567@N08_3655084291_d8b58466fa", "10015567@N08_3655084291_d8b58466fa",
         "the dog runs in. a man waves"),
    ]
    every = read_captions("didemo", DATA / "didemo/test_data.json")
    assert len(every) == 3


def test_didemo_sentences_times():
    df = read_captions("didemo-sentences", DATA / "didemo/test_data.json")
    assert df["caption_id"].tolist()[:2] == ["10015567@N08_3655084291_d8b58466fa#0",
                                             "10015567@N08_3655084291_d8b58466fa#1"]
    # times [[1,1],[1,2],[1,1],[2,2]]: start = mean(1,1,1,2) * 5 = 6.25; end = (mean(1,2,1,2) + 1) * 5 = 12.5
    assert df.loc[0, "start_s"] == pytest.approx(6.25) and df.loc[0, "end_s"] == pytest.approx(12.5)
    # [[0,0],[0,0],[0,1],[0,0]]: start 0, end (0.25 + 1) * 5 = 6.25
    assert df.loc[1, "start_s"] == 0.0 and df.loc[1, "end_s"] == pytest.approx(6.25)
    # [[3,5],[4,5],[3,5],[4,5]]: start 17.5, end 30
    assert df.loc[2, "start_s"] == pytest.approx(17.5) and df.loc[2, "end_s"] == pytest.approx(30.0)
    assert df["start_s"].dtype == float


def test_didemo_bad_times(tmp_path):
    p = tmp_path / "d.json"
    p.write_text(json.dumps([{"video": "a.mp4", "description": "x", "times": [[1]]}]))
    with pytest.raises(VtpipeError, match=r"item 0 \(video 'a'\): 'times' must be"):
        read_captions("didemo", p)
    p.write_text(json.dumps([{"video": "a.mp4", "times": [[1, 1]]}]))
    with pytest.raises(VtpipeError, match="item 0: missing key 'description'"):
        read_captions("didemo", p)


# ------------------------------------------------------------------------------------------------
# ActivityNet Captions
# ------------------------------------------------------------------------------------------------


def test_activitynet_paragraph_exact_join():
    df = read_captions("activitynet-paragraph", DATA / "activitynet/val_1.json")
    assert df["video_id"].tolist() == ["v_uqiMw7tQ1Cc", "v_bXdq2zI1Ms0"]
    assert df["caption_id"].tolist() == df["video_id"].tolist()
    # " ".join(sentences) exactly as CLIP4Clip (sentences keep their own leading spaces)
    assert df.loc[1, "caption"] == "Three men are standing on a mat.  The man in front begins to do karate.  The other men join in."
    assert df["duration_s"].tolist() == [55.15, 73.1]
    assert "start_s" not in df.columns


def test_activitynet_split_and_prefix():
    df = read_captions("activitynet-paragraph", DATA / "activitynet/val_1.json",
                       split=DATA / "activitynet/val_ids.json", strip_v_prefix=True)
    assert df["video_id"].tolist() == ["bXdq2zI1Ms0", "uqiMw7tQ1Cc"]  # val_ids.json order, "v_" dropped


def test_activitynet_segments():
    df = read_captions("activitynet-segments", DATA / "activitynet/val_1.json")
    assert len(df) == 5
    assert df["caption_id"].tolist()[:3] == ["v_uqiMw7tQ1Cc#0", "v_uqiMw7tQ1Cc#1", "v_bXdq2zI1Ms0#0"]
    assert df[["start_s", "end_s"]].iloc[1].tolist() == [13.79, 54.32]
    assert df["duration_s"].iloc[4] == 73.1


def test_activitynet_errors(tmp_path):
    p = tmp_path / "val_1.json"
    p.write_text(json.dumps({"v_a": {"duration": 10, "timestamps": [[0, 1]], "sentences": ["x", "y"]}}))
    with pytest.raises(VtpipeError, match="video 'v_a'.*one \\[start, end\\] per sentence"):
        read_captions("activitynet-segments", p)
    p.write_text(json.dumps({"v_a": {"duration": 10, "timestamps": [[5, 1]], "sentences": ["x"]}}))
    with pytest.raises(VtpipeError, match=r"ending before they start.*v_a#0 \[5.0, 1.0\]"):
        read_captions("activitynet-segments", p)
    p.write_text(json.dumps({"v_a": {"timestamps": [[0, 1]], "sentences": ["x"]}}))
    with pytest.raises(VtpipeError, match="missing key 'duration'"):
        read_captions("activitynet-paragraph", p)
    p.write_text(json.dumps({"v_a": {"duration": "n/a", "timestamps": [[0, 1]], "sentences": ["x"]}}))
    with pytest.raises(VtpipeError, match="'n/a' is not a number"):
        read_captions("activitynet-paragraph", p)


# ------------------------------------------------------------------------------------------------
# LSMDC
# ------------------------------------------------------------------------------------------------


def test_lsmdc_public_test():
    df = read_captions("lsmdc", DATA / "lsmdc/LSMDC16_challenge_1000_publictect.csv")
    assert df["video_id"].tolist() == ["1001_Flight_00.00.43.800-00.00.47.350",
                                       "1001_Flight_00.01.02.000-00.01.05.500",
                                       "3001_21_JUMP_STREET_01.02.27.034-01.02.30.100"]
    assert df["caption"].tolist()[2] == 'Someone, "run!" shouts SOMEONE.'  # quotes kept: not CSV-quoted
    assert df["caption_id"].tolist()[0] == "1001_Flight_00.00.43.800-00.00.47.350#0"
    assert df.loc[2, "aligned_start_s"] == pytest.approx(3747.034)
    assert df.loc[0, "extracted_end_s"] == pytest.approx(47.989)
    assert "start_s" not in df.columns  # the clip is already cut: no in-video segment


def test_lsmdc_movie_dirs_and_repeats(tmp_path):
    df = read_captions("lsmdc", DATA / "lsmdc/LSMDC16_challenge_1000_publictect.csv", movie_dirs=True)
    assert df["video_id"].tolist()[2] == "3001_21_JUMP_STREET/3001_21_JUMP_STREET_01.02.27.034-01.02.30.100"
    line = (DATA / "lsmdc/LSMDC16_challenge_1000_publictect.csv").read_text().splitlines()[0]
    p = tmp_path / "LSMDC16_annos_training.csv"
    p.write_text(line + "\n" + line.replace("lighter", "match") + "\n")
    df = read_captions("lsmdc", p)
    assert df["caption_id"].tolist() == ["1001_Flight_00.00.43.800-00.00.47.350#0",
                                         "1001_Flight_00.00.43.800-00.00.47.350#1"]


def test_lsmdc_errors(tmp_path):
    with pytest.raises(VtpipeError, match="blind-test file"):
        read_captions("lsmdc", DATA / "lsmdc/LSMDC16_annos_blindtest.csv")
    p = tmp_path / "x.csv"
    p.write_text("a,b,c,d,e,f\n")
    with pytest.raises(VtpipeError, match=r"x.csv:1: expected 6 TAB-separated fields.*got 1"):
        read_captions("lsmdc", p)
    p.write_text("clip_1\t1.2\t00.00.01.000\t00.00.01.000\t00.00.01.000\tsentence\n")
    with pytest.raises(VtpipeError, match=r"x.csv:1: time stamp '1.2' is not hh.mm.ss.mmm"):
        read_captions("lsmdc", p)


# ------------------------------------------------------------------------------------------------
# YouCook2, VATEX, MSR-VTT full
# ------------------------------------------------------------------------------------------------


def test_youcook2_segments_validation_default():
    df = read_captions("youcook2-segments", DATA / "youcook2/youcookii_annotations_trainval.json")
    assert df["caption_id"].tolist() == ["xHr8X2Wpmno#0", "xHr8X2Wpmno#1", "xHr8X2Wpmno#2", "V53XmPeyjIU#0"]
    assert df[["start_s", "end_s"]].iloc[1].tolist() == [41.0, 60.0]
    assert df["caption"].iloc[3] == "crack eggs into a bowl"
    allv = read_captions("youcook2-segments", DATA / "youcook2/youcookii_annotations_trainval.json", subset=None)
    assert len(allv) == 6


def test_youcook2_paragraph_and_layout():
    df = read_captions("youcook2-paragraph", DATA / "youcook2/youcookii_annotations_trainval.json",
                       subset="training", layout="subset-recipe")
    assert rows(df) == [("training/113/GLd3aX16zBg", "training/113/GLd3aX16zBg",
                         "spread margarine on two slices of white bread place a slice of cheese on the bread")]
    assert df["duration_s"].tolist() == [241.62]


def test_youcook2_errors(tmp_path):
    with pytest.raises(VtpipeError, match="no video has subset 'testing'.*'training', 'validation'"):
        read_captions("youcook2-segments", DATA / "youcook2/youcookii_annotations_trainval.json", subset="testing")
    with pytest.raises(VtpipeError, match="layout 'nested' is not one of"):
        read_captions("youcook2-segments", DATA / "youcook2/youcookii_annotations_trainval.json", layout="nested")
    p = tmp_path / "yc.json"
    p.write_text(json.dumps({"database": {"a": {"subset": "validation", "duration": 5, "annotations": []}}}))
    with pytest.raises(VtpipeError, match="video 'a'.*'annotations' must be a non-empty list"):
        read_captions("youcook2-segments", p)
    p.write_text(json.dumps({"videos": {}}))
    with pytest.raises(VtpipeError, match="'database' object"):
        read_captions("youcook2-segments", p)


def test_vatex():
    df = read_captions("vatex", DATA / "vatex/vatex_validation_v1.0.json")
    assert rows(df) == [
        ("Ptf_2VRj-V0_000122_000132#0", "Ptf_2VRj-V0_000122_000132", "A man is playing a guitar."),
        ("Ptf_2VRj-V0_000122_000132#1", "Ptf_2VRj-V0_000122_000132", "Someone strums a guitar on stage."),
        ("0lh_UWF9ZP4_000062_000072#0", "0lh_UWF9ZP4_000062_000072", "Two kids play with a dog in the yard."),
    ]
    assert len(read_captions("vatex", DATA / "vatex/vatex_validation_v1.0.json", split=DATA / "vatex/test_list.txt")) == 2


def test_vatex_missing_encap(tmp_path):
    p = tmp_path / "v.json"
    p.write_text(json.dumps([{"videoID": "a_000001_000011"}]))
    with pytest.raises(VtpipeError, match="'enCap' must be a non-empty list"):
        read_captions("vatex", p)


def test_msrvtt_full_with_text_split():
    df = read_captions("msrvtt-json", DATA / "msrvtt/MSRVTT_data.json", split_csv=DATA / "msrvtt/test_list_full.txt")
    assert rows(df) == [("video7010#0", "video7010", "a man is talking"),
                        ("video9999#0", "video9999", "a cartoon cat runs"),
                        ("video7010#1", "video7010", "a man speaks")]


# ------------------------------------------------------------------------------------------------
# UCF101 / HMDB51 splits
# ------------------------------------------------------------------------------------------------


def test_ucf101_split():
    train, test, names = read_action_split("ucf101", DATA / "ucfTrainTestlist", 1)
    assert names == ["ApplyEyeMakeup", "HandstandPushups", "YoYo"]
    assert [tuple(r) for r in train.itertuples(index=False)] == [
        ("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01", 0),
        ("HandstandPushups/v_HandStandPushups_g08_c01", 1),  # folder and file spell it differently (real quirk)
        ("YoYo/v_YoYo_g09_c02", 2),
        ("YoYo/v_YoYo_g10_c01", 2),
    ]
    assert [tuple(r) for r in test.itertuples(index=False)] == [("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01", 0),
                                                                ("YoYo/v_YoYo_g01_c03", 2)]
    flat, _, _ = read_action_split("UCF101", DATA / "ucfTrainTestlist", "1", layout="flat", prefix="UCF-101")
    assert flat["video_id"].tolist()[0] == "UCF-101/v_ApplyEyeMakeup_g08_c01"


def test_ucf101_errors(tmp_path):
    with pytest.raises(VtpipeError, match="split 4 does not exist"):
        read_action_split("ucf101", DATA / "ucfTrainTestlist", 4)
    with pytest.raises(VtpipeError, match="trainlist02.txt does not exist"):
        read_action_split("ucf101", DATA / "ucfTrainTestlist", 2)
    (tmp_path / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 YoYo\n")
    (tmp_path / "trainlist01.txt").write_text("YoYo/v_YoYo_g09_c02.avi 1\n")
    (tmp_path / "testlist01.txt").write_text("YoYo/v_YoYo_g01_c03.avi\n")
    with pytest.raises(VtpipeError, match=r"trainlist01.txt:1: class index 1 \(ApplyEyeMakeup\) does not match"):
        read_action_split("ucf101", tmp_path, 1)
    (tmp_path / "trainlist01.txt").write_text("Juggling/v_Juggling_g09_c02.avi 1\n")
    with pytest.raises(VtpipeError, match="class folder 'Juggling' is not in classInd.txt"):
        read_action_split("ucf101", tmp_path, 1)
    (tmp_path / "classInd.txt").write_text("1 ApplyEyeMakeup\n3 YoYo\n")
    with pytest.raises(VtpipeError, match="must run 1..2 without gaps"):
        read_action_split("ucf101", tmp_path, 1)
    with pytest.raises(VtpipeError, match="unknown action dataset 'kinetics'"):
        read_action_split("kinetics", tmp_path, 1)


def test_hmdb51_split():
    train, test, names = read_action_split("hmdb51", DATA / "testTrainMulti_7030_splits", 1)
    assert names == ["brush_hair", "cartwheel"]
    assert [tuple(r) for r in train.itertuples(index=False)] == [
        ("brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0", 0),
        ("cartwheel/Acrobacias_de_un_fenomeno_cartwheel_f_cm_np1_ba_bad_8", 1),
    ]
    assert [tuple(r) for r in test.itertuples(index=False)] == [
        ("brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_1", 0),
        ("cartwheel/20060723sfjffbartsinger_cartwheel_f_cm_np1_ba_med_0", 1),
    ]  # tag 0 (Brushing_Hair_with_Beth...) is in neither
    train2, test2, _ = read_action_split("hmdb51", DATA / "testTrainMulti_7030_splits", 2, layout="flat")
    assert train2["video_id"].tolist() == ["April_09_brush_hair_u_nm_np1_ba_goo_1",
                                           "20060723sfjffbartsinger_cartwheel_f_cm_np1_ba_med_0"]


def test_hmdb51_errors(tmp_path):
    with pytest.raises(VtpipeError, match="no '<class>_test_split3.txt' files"):
        read_action_split("hmdb51", DATA / "testTrainMulti_7030_splits", 3)
    (tmp_path / "run_test_split1.txt").write_text("a.avi 3\n")
    with pytest.raises(VtpipeError, match=r"run_test_split1.txt:1: expected '<video>.avi <0\|1\|2>'"):
        read_action_split("hmdb51", tmp_path, 1)
    (tmp_path / "run_test_split1.txt").write_text("a.avi 1\na.avi 2\n")
    with pytest.raises(VtpipeError, match="listed twice: \\['run/a'\\]"):
        read_action_split("hmdb51", tmp_path, 1)


# ------------------------------------------------------------------------------------------------
# CrossTask
# ------------------------------------------------------------------------------------------------


def test_crosstask_tasks():
    tasks = read_crosstask_tasks(DATA / "crosstask_release/tasks_primary.txt")
    assert list(tasks) == ["23521", "59684"]
    assert tasks["23521"].name == "Make Jello Shots"
    assert tasks["59684"].steps == ("cut shelf", "assemble shelf", "sand shelf", "paint shelf", "attach shelf")


def test_crosstask_segments():
    seg = read_crosstask_segments(DATA / "crosstask_release/tasks_primary.txt")
    assert [tuple(r) for r in seg.itertuples(index=False)] == [
        ("23521_-2kbFZa83AA#0", "23521", "-2kbFZa83AA", 2, "pour juice", 3.0, 9.0),
        ("23521_-2kbFZa83AA#1", "23521", "-2kbFZa83AA", 2, "pour juice", 12.0, 14.0),
        ("23521_Xw_rd7z8eY4#0", "23521", "Xw_rd7z8eY4", 1, "pour water", 15.0, 21.0),  # '_' inside the video id
        ("23521_Xw_rd7z8eY4#1", "23521", "Xw_rd7z8eY4", 5, "stir mixture", 25.5, 30.0),
        ("23521_Xw_rd7z8eY4#2", "23521", "Xw_rd7z8eY4", 6, "pour mixture into cup", 31.0, 40.2),
        ("59684_vMkMX5rQTN0#0", "59684", "vMkMX5rQTN0", 1, "cut shelf", 0.0, 5.0),
        ("59684_vMkMX5rQTN0#1", "59684", "vMkMX5rQTN0", 4, "paint shelf", 60.0, 66.0),
    ]
    val = read_crosstask_segments(DATA / "crosstask_release/tasks_primary.txt",
                                  videos_csv=DATA / "crosstask_release/videos_val.csv")
    assert sorted(set(val["video_id"])) == ["Xw_rd7z8eY4", "vMkMX5rQTN0"]
    caps = read_captions("crosstask", DATA / "crosstask_release/tasks_primary.txt")
    assert list(caps.columns) == ["caption_id", "video_id", "caption", "start_s", "end_s", "task", "step"]
    assert caps["caption"].tolist()[2] == "pour water"


def test_crosstask_errors(tmp_path):
    t = tmp_path / "tasks_primary.txt"
    t.write_text("1\nTask\nurl\n3\na,b\n\n")
    with pytest.raises(VtpipeError, match="task 1 declares 3 steps but its step line has 2"):
        read_crosstask_tasks(t)
    t.write_text("1\nTask\nurl\n2\n\n")
    with pytest.raises(VtpipeError, match="a task block has 5 lines"):
        read_crosstask_tasks(t)
    t.write_text("1\nTask\nurl\n2\na,b\n")  # no trailing blank line: fine
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations/1_vid.csv").write_text("3,0.0,1.0\n")
    with pytest.raises(VtpipeError, match=r"1_vid.csv:1: step 3 is outside 1..2 for task 1"):
        read_crosstask_segments(t)
    (tmp_path / "annotations/1_vid.csv").write_text("1,5.0,1.0\n")
    with pytest.raises(VtpipeError, match="ends \\(1.0\\) before it starts \\(5.0\\)"):
        read_crosstask_segments(t)
    (tmp_path / "annotations/1_vid.csv").write_text("1,0.0\n")
    with pytest.raises(VtpipeError, match="expected 'step,start,end'"):
        read_crosstask_segments(t)
    with pytest.raises(VtpipeError, match="annotations folder .* does not exist"):
        read_crosstask_segments(t, annotations_dir=tmp_path / "nope")


# ------------------------------------------------------------------------------------------------
# every registered format on its fixture goes through read_captions' checks
# ------------------------------------------------------------------------------------------------

FIXTURES = {
    "msvd-txt": "msvd/AllVideoDescriptions.txt",
    "captions-json": "msvd/raw-captions.json",
    "didemo": "didemo/test_data.json",
    "didemo-sentences": "didemo/test_data.json",
    "activitynet-paragraph": "activitynet/val_1.json",
    "activitynet-segments": "activitynet/val_1.json",
    "lsmdc": "lsmdc/LSMDC16_challenge_1000_publictect.csv",
    "youcook2-segments": "youcook2/youcookii_annotations_trainval.json",
    "youcook2-paragraph": "youcook2/youcookii_annotations_trainval.json",
    "vatex": "vatex/vatex_validation_v1.0.json",
    "msrvtt-json": "msrvtt/MSRVTT_data.json",
    "crosstask": "crosstask_release/tasks_primary.txt",
}


@pytest.mark.parametrize("fmt", sorted(FIXTURES))
def test_every_format_standard_columns(fmt):
    df = read_captions(fmt, DATA / FIXTURES[fmt])
    assert list(df.columns[:3]) == ["caption_id", "video_id", "caption"]
    assert df["caption_id"].is_unique and len(df) > 0
    for c in ("caption_id", "video_id", "caption"):
        assert all(isinstance(x, str) for x in df[c])
    for c in ("start_s", "end_s"):
        if c in df.columns:
            assert df[c].dtype == float and all(math.isfinite(x) for x in df[c])


def test_every_registered_format_has_a_fixture():
    assert set(CAPTION_FORMATS) - set(FIXTURES) == {"msrvtt-jsfusion", "csv"}  # covered by the lead's tests


# ------------------------------------------------------------------------------------------------
# the dataset presets name real formats and options
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", sorted((Path(__file__).parents[1] / "configs/datasets").glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_dataset_presets_match_the_readers(preset):
    import inspect

    import yaml

    from stages.datasets.actions import LAYOUTS

    cfg = yaml.safe_load(preset.read_text())
    assert cfg["name"] == preset.stem
    if cfg.get("kind") == "action":
        assert cfg["layout"] in LAYOUTS and set(cfg["splits"]) <= {1, 2, 3}
        assert prompt_ok(cfg["prompt_template"])
        return
    assert cfg["format"] in CAPTION_FORMATS
    inspect.signature(CAPTION_FORMATS[cfg["format"]]).bind(cfg["captions"], **(cfg.get("options") or {}))


def prompt_ok(template: str) -> bool:
    from stages.recognition.action import prompt_classnames

    return prompt_classnames(["ApplyEyeMakeup"], template) == ["a video of a person apply eye makeup."]


# ---- the generic `csv` caption format --------------------------------------------------------------------------
def test_generic_csv_reader(tmp_path):
    f = tmp_path / "caps.csv"
    # quoted commas, a caption that looks like a number, ids that look like numbers (kept as strings)
    f.write_text('video_id,caption,extra\n007,"a man, a plan",x\nv2,1999,y\n007,second caption,z\n')
    df = read_captions("csv", f)
    assert df.to_dict("list") == {"caption_id": ["0", "1", "2"], "video_id": ["007", "v2", "007"],
                                  "caption": ["a man, a plan", "1999", "second caption"]}
    g = tmp_path / "with_ids.csv"
    g.write_text("caption_id,video_id,caption\nc9,a,first\nc1,b,second\n")
    assert read_captions("csv", g)["caption_id"].tolist() == ["c9", "c1"]  # given ids kept, in file order


def test_generic_csv_reader_errors(tmp_path):
    f = tmp_path / "caps.csv"
    f.write_text("video,text\na,b\n")
    with pytest.raises(VtpipeError, match="video_id"):
        read_captions("csv", f)
    g = tmp_path / "dup.csv"
    g.write_text("caption_id,video_id,caption\nc1,a,x\nc1,b,y\n")
    with pytest.raises(VtpipeError, match="c1"):
        read_captions("csv", g)
