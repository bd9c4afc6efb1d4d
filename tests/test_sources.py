import csv
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kebr_data import sources
from kebr_data.errors import PlanError


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_voxceleb2_pairs_video_and_audio_and_reads_split(tmp_path):
    root = tmp_path / "vox2"
    touch(root / "dev/mp4/id00012/abcDEF-_123/00001.mp4")
    touch(root / "dev/aac/id00012/abcDEF-_123/00001.m4a")
    touch(root / "dev/aac/id00012/abcDEF-_123/00002.m4a")
    touch(root / "test/mp4/id00099/zzz/00007.mp4")
    touch(root / "dev/mp4/id00012/readme.txt")
    layout, res = sources.scan(root)
    assert layout == "voxceleb"
    by_id = {c.clip_id: c for c in res.clips}
    assert list(by_id) == ["id00012/abcDEF-_123/00001", "id00012/abcDEF-_123/00002", "id00099/zzz/00007"]
    c = by_id["id00012/abcDEF-_123/00001"]
    assert c.video_path.endswith("00001.mp4") and c.audio_path.endswith("00001.m4a")
    assert (c.speaker_id, c.split, c.source) == ("id00012", "dev", "voxceleb")
    assert by_id["id00012/abcDEF-_123/00002"].video_path is None
    assert by_id["id00099/zzz/00007"].split == "test"


def test_voxceleb1_wav_folder_given_directly(tmp_path):
    touch(tmp_path / "wav/id10001/1zcIwhmdeo4/00001.wav")
    layout, res = sources.scan(tmp_path / "wav")
    assert layout == "voxceleb"
    assert [c.clip_id for c in res.clips] == ["id10001/1zcIwhmdeo4/00001"]
    assert res.clips[0].audio_path.endswith(".wav") and res.clips[0].split is None


def test_voxceleb_misplaced_file_is_rejected_with_reason(tmp_path):
    touch(tmp_path / "mp4/id00001/yt/00001.mp4")
    touch(tmp_path / "mp4/id00001/loose.mp4")
    _, res = sources.scan(tmp_path)
    assert len(res.clips) == 1
    assert any("loose.mp4" in e and "idNNNNN" in r for e, r in res.rejected)


def write_label_csv(root: Path, rows: list[dict]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "label.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, ["video_id", "clip_id", "text", "label", "label_T", "label_A", "label_V",
                                "annotation", "mode"])
        w.writeheader()
        for r in rows:
            w.writerow({"label_T": "", "label_A": "", "label_V": "", "annotation": "Positive", **r})


def test_mmsa_label_csv(tmp_path):
    root = tmp_path / "MOSI"
    touch(root / "Raw/03bSnISJMiM/1.mp4")
    write_label_csv(root, [
        {"video_id": "03bSnISJMiM", "clip_id": "1", "text": "anyhow it was really good", "label": "2.4", "mode": "train"},
        {"video_id": "03bSnISJMiM", "clip_id": "11", "text": "i didn't like it", "label": "-1.8", "mode": "test"},
    ])
    layout, res = sources.scan(root)
    assert layout == "mmsa"
    a, b = res.clips
    assert a.clip_id == "03bSnISJMiM$_$1" and a.label == pytest.approx(2.4) and a.split == "train"
    assert a.given_text == "anyhow it was really good" and a.speaker_id == "03bSnISJMiM"
    assert b.clip_id == "03bSnISJMiM$_$11" and b.split == "test"
    assert not Path(b.video_path).exists()  # kept: the audio stage reports the missing file


def test_mmsa_missing_columns_fail_loudly(tmp_path):
    (tmp_path / "Raw").mkdir()
    (tmp_path / "label.csv").write_text("video_id,clip_id\nx,1\n")
    with pytest.raises(PlanError, match="lacks column"):
        sources.scan(tmp_path)


def test_folder_layout_uses_relative_stem_and_rejects_bad_names(tmp_path):
    touch(tmp_path / "talks/a b;c'd.mp4")
    touch(tmp_path / "talks/a b;c'd.wav")
    touch(tmp_path / "日本/クリップ.mkv")
    touch(tmp_path / "bad\nname.mp4")
    touch(tmp_path / "notes.txt")
    layout, res = sources.scan(tmp_path)
    assert layout == "folder"
    assert [c.clip_id for c in res.clips] == ["talks/a b;c'd", "日本/クリップ"]
    assert res.clips[0].audio_path.endswith(".wav") and res.clips[0].video_path.endswith(".mp4")
    assert [r.split(" (")[0] for _, r in res.rejected] == ["clip id contains a control character"]


def test_folder_duplicate_video_is_rejected(tmp_path):
    touch(tmp_path / "x.mp4")
    touch(tmp_path / "x.mkv")
    _, res = sources.scan(tmp_path, "folder")
    assert len(res.clips) == 1 and "duplicate video" in res.rejected[0][1]


def test_manifest_csv_resolves_relative_paths_and_validates_ids(tmp_path):
    touch(tmp_path / "media/a.mp4")
    (tmp_path / "m.csv").write_text(
        "clip_id,video_path,label,text,split\n"
        "a,media/a.mp4,1.5,hello there,train\n"
        "../escape,media/a.mp4,,,\n"
        "a,media/a.mp4,,,\n"
        "c,,,,\n")
    layout, res = sources.scan(tmp_path / "m.csv")
    assert layout == "manifest"
    assert [c.clip_id for c in res.clips] == ["a"]
    assert res.clips[0].video_path == str(tmp_path / "media/a.mp4")
    assert res.clips[0].label == 1.5 and res.clips[0].given_text == "hello there"
    reasons = [r for _, r in res.rejected]
    assert any("'..'" in r for r in reasons) and any("duplicate" in r for r in reasons)
    assert any("neither video_path nor audio_path" in r for r in reasons)


def test_manifest_parquet(tmp_path):
    pq.write_table(pa.table({"clip_id": ["z", "y"], "audio_path": ["/data/z.wav", "/data/y.wav"]}),
                   tmp_path / "m.parquet")
    _, res = sources.scan(tmp_path / "m.parquet")
    assert [c.clip_id for c in res.clips] == ["y", "z"]


def test_manifest_without_required_columns(tmp_path):
    (tmp_path / "m.csv").write_text("id,path\n1,x.mp4\n")
    with pytest.raises(PlanError, match="needs columns clip_id"):
        sources.scan(tmp_path / "m.csv")


def test_forced_layout_must_match(tmp_path):
    touch(tmp_path / "x.mp4")
    with pytest.raises(PlanError, match="does not look like the mmsa layout"):
        sources.scan(tmp_path, "mmsa")
    with pytest.raises(PlanError, match="unknown layout"):
        sources.scan(tmp_path, "youtube")


def test_missing_source():
    with pytest.raises(PlanError, match="does not exist"):
        sources.scan(Path("/nonexistent/kebr"))


def test_symlink_loop_file_is_kept_for_a_clear_row(tmp_path):
    (tmp_path / "loop.mp4").symlink_to(tmp_path / "loop.mp4")
    _, res = sources.scan(tmp_path, "folder")
    assert [c.clip_id for c in res.clips] == ["loop"]
