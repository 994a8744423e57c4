"""discover_videos: ids from relative paths, symlink loops, odd names, CSV inputs, unsafe ids."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stages.contract.errors import VtpipeError
from stages.video import discover_videos
from stages.video.discover import id_problem


def touch(p: Path) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"x")
    return p


def test_folder_ids_are_relative_paths(tmp_path):
    touch(tmp_path / "a" / "clip.mp4")
    touch(tmp_path / "b" / "clip.mp4")  # same basename, other folder: no collision
    touch(tmp_path / "top.MKV")  # extensions match case-insensitively
    touch(tmp_path / "my vidéo 日本.webm")
    touch(tmp_path / "notes.txt")
    touch(tmp_path / ".hidden.mp4")
    touch(tmp_path / "a" / ".x.mp4.abc.tmp")
    vids = discover_videos(tmp_path)
    assert [v.id for v in vids] == ["a/clip", "b/clip", "my vidéo 日本", "top"]
    assert vids[0].path == tmp_path / "a" / "clip.mp4"
    assert vids.skipped == []


def test_symlink_loop_is_survived(tmp_path):
    touch(tmp_path / "d" / "v.mp4")
    os.symlink(tmp_path, tmp_path / "d" / "loop")  # d/loop -> root -> d -> ...
    os.symlink(tmp_path / "d" / "self", tmp_path / "d" / "self")  # a link to itself
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling.mp4")
    assert [v.id for v in discover_videos(tmp_path)] == ["d/v"]


def test_symlinked_folder_is_followed_once(tmp_path):
    real = tmp_path / "store"
    touch(real / "v.mp4")
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(real, root / "linked")
    assert [v.id for v in discover_videos(root)] == ["linked/v"]


def test_same_id_two_files_raises(tmp_path):
    touch(tmp_path / "a.mp4")
    touch(tmp_path / "a.avi")
    with pytest.raises(VtpipeError, match="'a'"):
        discover_videos(tmp_path)


def test_bad_file_names_raise_or_skip(tmp_path):
    touch(tmp_path / "good.mp4")
    touch(tmp_path / "two\nlines.mp4")
    touch(tmp_path / "back\\slash.mp4")
    with pytest.raises(VtpipeError, match="newline") as e:
        discover_videos(tmp_path)
    assert "backslash" in str(e.value) and "on_bad_id='skip'" in str(e.value)
    vids = discover_videos(tmp_path, on_bad_id="skip")
    assert [v.id for v in vids] == ["good"]
    assert sorted(s.reason for s in vids.skipped) == ["contains a backslash", "contains a newline"]


@pytest.mark.parametrize(
    "vid,bad",
    [
        ("a/b", False),
        ("v 1 é", False),
        ("a:b", False),
        ("../x", True),
        ("a/../../x", True),
        ("/etc/passwd", True),
        ("C:/x", True),
        ("a\x00b", True),
        ("a\nb", True),
        ("", True),
        ("./a", True),
        ("a//b", True),
    ],
)
def test_id_problem(vid, bad):
    assert (id_problem(vid) is not None) == bad


def test_csv_with_path_column(tmp_path):
    touch(tmp_path / "vids" / "x.mp4")
    touch(tmp_path / "vids" / "sub" / "y.mkv")
    csv = tmp_path / "list.csv"
    csv.write_text("path,caption\nvids/x.mp4,a\n./vids/sub/y.mkv,b\nvids/x.mp4,c\n", encoding="utf-8")
    vids = discover_videos(csv, path_column="path")
    assert [(v.id, v.path) for v in vids] == [
        ("vids/x", tmp_path / "vids" / "x.mp4"),
        ("vids/sub/y", tmp_path / "vids" / "sub" / "y.mkv"),
    ]


def test_csv_with_id_column(tmp_path):
    touch(tmp_path / "videos" / "video7020.mp4")
    touch(tmp_path / "videos" / "video9.webm")
    csv = tmp_path / "msrvtt.csv"
    csv.write_text("video_id,sentence\nvideo7020,a man\nvideo9.webm,b\nvideo7020,again\nvideo404,gone\n")
    vids = discover_videos(csv, videos_root=tmp_path / "videos")
    assert [v.id for v in vids] == ["video7020", "video9", "video404"]
    assert vids[1].path.name == "video9.webm"
    assert not vids[2].path.exists()  # listed but missing: compress/read report it as 'missing'


def test_csv_bad_ids(tmp_path):
    csv = tmp_path / "l.csv"
    csv.write_text("video_id\nok\n../../etc/passwd\n/abs\n")
    with pytest.raises(VtpipeError, match=r"2 unsafe video id\(s\).*\.\./\.\./etc/passwd"):
        discover_videos(csv)
    assert [v.id for v in discover_videos(csv, on_bad_id="skip")] == ["ok"]


def test_csv_errors(tmp_path):
    csv = tmp_path / "l.csv"
    csv.write_text("name\nx\n")
    with pytest.raises(VtpipeError, match="id_column or path_column"):
        discover_videos(csv)
    with pytest.raises(VtpipeError, match="no column 'file'"):
        discover_videos(csv, path_column="file")
    with pytest.raises(VtpipeError, match="does not exist"):
        discover_videos(tmp_path / "nope")
