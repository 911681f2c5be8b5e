"""`sfa-cache convert`: Kinetics CSV, Something-Something v2 JSON and class folders -> manifests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from click.testing import CliRunner

from sfa_cache.cli.main import cli
from sfa_cache.data.manifest import infer_classes, read_manifest
from sfa_cache.video.reader import open_video


def _convert(*args: str):
    return CliRunner().invoke(cli, ["convert", *args])


def _rows(manifest: Path) -> list[tuple[Path, str]]:
    m = read_manifest(manifest, infer_classes(manifest))
    return [(e.path, m.classes[e.label]) for e in m.entries]


def test_kinetics_csv_with_downloader_names_and_a_missing_clip(tmp_path: Path, videos) -> None:
    k = tmp_path / "k400"
    (k / "train" / "abseiling").mkdir(parents=True)
    shutil.copy(videos["index24"], k / "train" / "abseiling" / "aaa_000010_000020.mp4")  # downloader layout
    shutil.copy(videos["index24"], k / "train" / "bbb.mp4")  # plain youtube id
    (k / "train" / "notes.txt").write_text("not a video")
    csv_path = tmp_path / "train.csv"
    csv_path.write_text("label,youtube_id,time_start,time_end,split,is_cc\n"
                        "abseiling,aaa,10,20,train,0\n"
                        '"passing American football (in game), hard",bbb,0,10,train,0\n'
                        "abseiling,ccc,5,15,train,0\n")
    out = tmp_path / "manifests" / "k400-train.csv"
    args = ["kinetics", "--csv", str(csv_path), "--videos", str(k), "--out", str(out)]
    strict = _convert(*args, "--strict")
    assert strict.exit_code == 1 and "1 videos are missing" in strict.output + strict.stderr and not out.exists()
    r = _convert(*args)
    assert r.exit_code == 0, r.output + r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["rows"] == 2 and summary["missing"] == 1 and "not found" in r.stderr
    assert Path(summary["missing_report"]).read_text() == "ccc_000005_000015 (or ccc).*\n"
    rows = _rows(out)
    assert [label for _, label in rows] == ["abseiling", "passing American football (in game), hard"]
    assert rows[0][0].resolve() == (k / "train" / "abseiling" / "aaa_000010_000020.mp4").resolve()
    assert not Path(out.read_text().splitlines()[1].split(",")[0]).is_absolute()  # relative to the manifest
    assert open_video(rows[1][0]).num_frames == 24  # the manifest points at real, decodable files


def test_ssv2_json_templates_and_split(tmp_path: Path, videos) -> None:
    (tmp_path / "videos").mkdir()
    for vid in ("1", "2"):
        shutil.copy(videos["index24"], tmp_path / "videos" / f"{vid}.webm")
    labels = {"Holding something next to something": "0", "Pushing something from left to right": "1"}
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    entries = [
        {
            "id": "1",
            "label": "holding a cup next to a pen",
            "template": "Holding [something] next to [something]",
            "placeholders": ["a cup", "a pen"],
        },
        {"id": "2", "template": "Pushing [something] from left to right"},
        {"id": "3", "template": "Pushing [something] from left to right"},
    ]
    (tmp_path / "validation.json").write_text(json.dumps(entries))
    out = tmp_path / "val.csv"
    r = _convert("ssv2", "--labels", str(tmp_path / "labels.json"), "--annotations", str(tmp_path / "validation.json"),
                 "--videos", str(tmp_path / "videos"), "--out", str(out))
    assert r.exit_code == 0, r.output + r.stderr
    assert json.loads(r.stdout)["missing"] == 1
    assert [label for _, label in _rows(out)] == list(labels)
    assert out.read_text().splitlines()[0] == "path,label,split" and out.read_text().splitlines()[1].endswith(",val")
    (tmp_path / "test.json").write_text(json.dumps([{"id": "9"}]))  # the test set has no labels
    bad = _convert("ssv2", "--labels", str(tmp_path / "labels.json"), "--annotations", str(tmp_path / "test.json"),
                   "--videos", str(tmp_path / "videos"), "--out", str(tmp_path / "t.csv"))
    assert bad.exit_code == 1 and "the test set has no labels" in bad.stderr and "Traceback" not in bad.output


def test_folder_per_class(tmp_path: Path, videos) -> None:
    root = tmp_path / "mine"
    (root / "jump" / "day1").mkdir(parents=True)
    (root / "run").mkdir()
    shutil.copy(videos["index24"], root / "jump" / "day1" / "a.MP4")
    shutil.copy(videos["textured"], root / "run" / "b.mkv")
    (root / "run" / "readme.md").write_text("x")
    out = root / "all.csv"
    r = _convert("folders", str(root), "--out", str(out))
    assert r.exit_code == 0, r.output + r.stderr
    assert out.read_text().splitlines() == ["path,label", "jump/day1/a.MP4,jump", "run/b.mkv,run"]
    assert [label for _, label in _rows(out)] == ["jump", "run"]
    empty = tmp_path / "empty"
    (empty / "cls").mkdir(parents=True)
    r = _convert("folders", str(empty), "--out", str(tmp_path / "e.csv"))
    assert r.exit_code == 1 and "no videos in class sub-folders" in r.stderr


def test_kinetics_rejects_a_csv_of_another_kind(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("path,label\na.mp4,x\n")
    r = _convert(
        "kinetics", "--csv", str(tmp_path / "m.csv"), "--videos", str(tmp_path), "--out", str(tmp_path / "o.csv")
    )
    assert r.exit_code == 1 and "not a Kinetics CSV" in r.stderr and "Traceback" not in r.output
