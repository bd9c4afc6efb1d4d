"""A corpus of bad inputs, generated here, through the whole pipeline (index, audio, asr, acoustic,
visual with the OpenFace stand-in): every clip ends as a row with a clear status and message, and
the run finishes."""

import os
import shutil
import subprocess

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from helpers import OPENFACE_FIXTURES, ROOT, demo_clip, make_video, run_cli, write_wav

from kebr_data import config
from kebr_data.schema import PLAN
from kebr_data.stages.asr import AsrStage
from kebr_data.stages.base import ShardContext

FAKE = ROOT / "tests" / "fake_openface" / "FeatureExtraction"
FIXTURE_CSV = OPENFACE_FIXTURES / "astronaut_gap.csv"


def two_faces(ffmpeg, dest):
    """Two copies of the demo's face side by side."""
    subprocess.run([ffmpeg, "-loglevel", "error", "-i", str(demo_clip(0)), "-filter_complex",
                    "[0:v][0:v]hstack=inputs=2[v]", "-map", "[v]", "-map", "0:a", "-c:v", "libx264", "-c:a", "aac",
                    str(dest)], check=True)


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory, ffmpeg):
    src = tmp_path_factory.mktemp("bad") / "src"
    src.mkdir()
    good = demo_clip(0).read_bytes()
    (src / "zero.mp4").touch()
    (src / "truncated.mp4").write_bytes(good[: len(good) // 3])
    write_wav(src / "audio_only.wav", 2.0)
    make_video(ffmpeg, src / "video_only.mp4", seconds=1.0, audio=False)
    write_wav(src / "silent.wav", 2.0, amp=0.0)
    subprocess.run([ffmpeg, "-loglevel", "error", "-i", str(demo_clip(1)), "-t", "0.2", "-c:v", "libx264", "-c:a",
                    "aac", str(src / "short.mp4")], check=True)
    # 30 minutes at 8 kHz: a fifth of the encoding of the source's default 44.1 kHz (16 -> 3 CPU-s), as long
    subprocess.run([ffmpeg, "-loglevel", "error", "-f", "lavfi", "-i",
                    "sine=frequency=300:duration=1800:sample_rate=8000", "-ac", "1", "-c:a", "aac", "-b:a", "8k",
                    str(src / "thirty_minutes.m4a")], check=True)
    y, sr = sf.read(ROOT / "tests/fixtures/speech_de.flac")
    sf.write(src / "german.wav", y, sr)
    make_video(ffmpeg, src / "no_face.mp4", seconds=1.0, audio=True)
    two_faces(ffmpeg, src / "two_faces.mp4")
    shutil.copy(demo_clip(2), src / "odd 'name'; \"ü\".mp4")
    os.mkfifo(src / "fifo.mp4")
    (src / "loop.mp4").symlink_to(src / "loop.mp4")
    out = src.parent / "out"
    proc = run_cli("extract", "--src", str(src), "--out", str(out), "--layout", "folder", "--stages",
                   "index,audio,asr,acoustic,visual", "--max-failed", "1", "--set", f"visual.openface_bin='{FAKE}'",
                   "--set", "audio.max_duration_s=600", env={"KEBR_FAKE_OPENFACE_CSV": str(FIXTURE_CSV),
                                                                  "KEBR_FAKE_OPENFACE_MODE": "noface",
                                                                  "KEBR_FAKE_OPENFACE_ONLY": "no_face"},
                   timeout=900)
    return out, proc


def rows(out, stage):
    return {r["clip_id"]: (r["status"], r["error"], r["message"]) for r in pq.read_table(out / stage).to_pylist()}


def test_the_run_finishes(corpus_run):
    out, proc = corpus_run
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert run_cli("validate", "--out", str(out)).returncode == 0


@pytest.mark.parametrize("clip,stage,status,error", [
    ("zero", "audio", "failed", "empty_file"),
    ("truncated", "audio", "failed", "decode_error"),
    ("video_only", "audio", "skipped", "no_audio_track"),
    ("audio_only", "visual", "skipped", "no_video"),
    ("silent", "asr", "skipped", "silence"),
    ("short", "acoustic", "ok", None),
    ("thirty_minutes", "audio", "skipped", "too_long"),
    ("german", "asr", "skipped", "language"),
    ("no_face", "visual", "skipped", "no_face"),
    ("two_faces", "visual", "ok", None),
    ("odd 'name'; \"ü\"", "acoustic", "ok", None),
    ("odd 'name'; \"ü\"", "asr", "ok", None),
    ("fifo", "audio", "failed", "not_a_file"),
    ("loop", "audio", "failed", "symlink_loop"),
])
def test_each_bad_input_is_a_clear_row(corpus_run, clip, stage, status, error):
    out, _ = corpus_run
    got_status, got_error, message = rows(out, stage)[clip]
    assert (got_status, got_error) == (status, error), message
    if status != "ok":
        assert message  # says what happened


def test_downstream_of_a_bad_clip_is_skipped_with_the_reason(corpus_run):
    out, _ = corpus_run
    assert rows(out, "acoustic")["zero"] == ("skipped", "upstream_failed", "audio: empty_file")
    assert rows(out, "asr")["video_only"] == ("skipped", "upstream_skipped", "audio: no_audio_track")


def test_non_utf8_transcript_is_a_failed_row(tmp_path):
    media = tmp_path / "a.mp4"
    media.write_bytes(b"x")
    (tmp_path / "a.txt").write_bytes(b"caf\xe9 \xff\xfe")
    plan = [{"clip_id": "a", "status": "ok", "source": "folder", "video_path": str(media)}]
    stage = AsrStage(config.load(overrides=["asr.engine='given'"])["asr"])
    (row,) = stage.run_shard(ShardContext(0, {"plan": pa.Table.from_pylist(plan, schema=PLAN)}, tmp_path)).to_pylist()
    assert (row["status"], row["error"]) == ("failed", "bad_transcript") and "utf-8" in row["message"]


def test_media_replaced_after_indexing_is_a_source_changed_row_naming_replan(tmp_path):
    """A file whose size or mtime differs from the plan's is not decoded as if it were the planned clip."""
    from kebr_data.pipeline.plan import build_plan
    from kebr_data.stages.audio import AudioStage
    from kebr_data.storage.layout import OutputDir

    src = tmp_path / "src"
    src.mkdir()
    for name in ("a", "b", "c"):
        write_wav(src / f"{name}.wav", 0.5)
    cfg = config.load()
    build_plan(OutputDir(tmp_path / "out"), src, cfg["index"])
    write_wav(src / "b.wav", 0.7)  # replaced: another size
    stamp = os.stat(src / "c.wav")
    os.utime(src / "c.wav", ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 10**9))  # touched: same size, new mtime
    plan = pq.read_table(tmp_path / "out" / "plan" / "shard-00000.parquet")
    table = AudioStage(cfg["audio"]).run_shard(ShardContext(0, {"plan": plan}, tmp_path / "tmp"))
    rows = {r["clip_id"]: r for r in table.to_pylist()}
    assert rows["a"]["status"] == "ok"
    for cid in ("b", "c"):
        assert (rows[cid]["status"], rows[cid]["error"]) == ("failed", "source_changed"), rows[cid]
        assert "--replan" in rows[cid]["message"] and str(src / f"{cid}.wav") in rows[cid]["message"]
