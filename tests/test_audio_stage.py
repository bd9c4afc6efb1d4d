"""The audio stage against real media and real ffmpeg, including bad inputs."""

import os
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from kebr_data import config
from kebr_data.media.flac import decode_flac
from kebr_data.schema import PLAN
from kebr_data.stages.audio import AudioStage
from kebr_data.stages.base import ShardContext

from helpers import demo_clip, make_video, write_wav


def run_stage(tmp_path, paths, **overrides):
    cfg = config.load(overrides=[f"audio.{k}={v!r}" if isinstance(v, str) else f"audio.{k}={v}"
                                 for k, v in overrides.items()])
    rows = [{"clip_id": f"c{i:03d}", "status": "ok", "error": None, "message": None, "speaker_id": None,
             "video_path": str(p) if p and Path(p).suffix in (".mp4", ".mkv", ".m4v") else None,
             "audio_path": str(p) if p and Path(p).suffix not in (".mp4", ".mkv", ".m4v") else None,
             "split": None, "label": None, "given_text": None, "source": "folder"} for i, p in enumerate(paths)]
    stage = AudioStage(cfg["audio"])
    assert stage.check() == []
    ctx = ShardContext(0, {"plan": pa.Table.from_pylist(rows, schema=PLAN)}, tmp_path / "tmp")
    return stage.run_shard(ctx).to_pylist()


def ffmpeg_decode(ffmpeg, path, sr=22050):
    out = subprocess.run([ffmpeg, "-loglevel", "error", "-i", str(path), "-ac", "1", "-ar", str(sr), "-f", "s16le",
                          "-"], capture_output=True, check=True).stdout
    return np.frombuffer(out, "<i2")


def test_demo_clip_decodes_losslessly(tmp_path, ffmpeg):
    clip = demo_clip(0)
    (r,) = run_stage(tmp_path, [clip])
    assert r["status"] == "ok" and r["sample_rate"] == 22050
    samples, sr = decode_flac(r["flac"], dtype="int16")
    assert sr == 22050 and samples.size == r["num_samples"]
    assert np.array_equal(samples, ffmpeg_decode(ffmpeg, clip))
    assert r["duration_s"] == pytest.approx(samples.size / 22050)
    assert 2.0 < r["duration_s"] < 6.0


@pytest.mark.parametrize("rate", [8000, 48000])
def test_sources_at_other_rates_are_resampled(tmp_path, rate):
    wav = write_wav(tmp_path / f"tone{rate}.wav", 1.0, sr=rate)
    (r,) = run_stage(tmp_path, [wav], sample_rate=16000)
    assert r["status"] == "ok" and r["sample_rate"] == 16000
    assert abs(r["num_samples"] - 16000) <= 32
    x, _ = decode_flac(r["flac"])
    assert 0.2 < np.abs(x).max() < 0.35  # the 0.3-amplitude tone survives resampling


def test_silence_is_ok_here_and_left_to_asr(tmp_path):
    (r,) = run_stage(tmp_path, [write_wav(tmp_path / "silent.wav", 1.0, amp=0.0)])
    assert r["status"] == "ok"
    x, _ = decode_flac(r["flac"])
    assert not x.any()


def test_bad_inputs_become_rows(tmp_path, ffmpeg):
    empty = tmp_path / "empty.mp4"
    empty.touch()
    good = demo_clip(1).read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(good[: len(good) // 2])
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(os.urandom(4096))
    silent_video = make_video(ffmpeg, tmp_path / "video_only.mp4", audio=False)
    loop = tmp_path / "loop.wav"
    loop.symlink_to(loop)
    rows = run_stage(tmp_path, [empty, truncated, garbage, silent_video, tmp_path / "missing.wav", loop, tmp_path])
    got = [(r["status"], r["error"]) for r in rows]
    assert got == [("failed", "empty_file"), ("failed", "decode_error"), ("failed", "decode_error"),
                   ("skipped", "no_audio_track"), ("failed", "missing_file"), ("failed", "symlink_loop"),
                   ("failed", "not_a_file")]
    assert "moov atom not found" in rows[1]["message"]
    assert all(r["flac"] is None for r in rows)


@pytest.mark.parametrize("name", ["with space.wav", "quote's \"x\".wav", "semi;colon.wav", "ünïcødé 日本.wav",
                                  "-leading-dash.wav", "concat:x.wav", "$(touch pwned).wav"])
def test_odd_file_names(tmp_path, name):
    wav = write_wav(tmp_path / name, 0.5)
    (r,) = run_stage(tmp_path, [wav])
    assert r["status"] == "ok", r["message"]
    assert not (tmp_path / "pwned").exists()


def test_too_long_is_skipped_without_decoding_it_all(tmp_path):
    (r,) = run_stage(tmp_path, [write_wav(tmp_path / "long.wav", 5.0)], max_duration_s=2.0)
    assert (r["status"], r["error"]) == ("skipped", "too_long")


def test_timeout_kills_a_stuck_ffmpeg(tmp_path):
    stuck = tmp_path / "ffmpeg"
    stuck.write_text("#!/bin/sh\nexec sleep 30\n")
    stuck.chmod(0o755)
    wav = write_wav(tmp_path / "a.wav", 0.5)
    (r,) = run_stage(tmp_path, [wav], ffmpeg=str(stuck), timeout_s=0.5)
    assert (r["status"], r["error"]) == ("failed", "timeout")
    assert "0.5 s" in r["message"]


def test_missing_ffmpeg_is_a_prerequisite_message(tmp_path):
    stage = AudioStage(config.load(overrides=["audio.ffmpeg='/nonexistent/ffmpeg'"])["audio"])
    (problem,) = stage.check()
    assert "/nonexistent/ffmpeg" in problem and "does not exist" in problem


def test_flac_is_deterministic(tmp_path):
    a = run_stage(tmp_path, [demo_clip(2)])[0]["flac"]
    b = run_stage(tmp_path, [demo_clip(2)])[0]["flac"]
    assert a == b


def test_temp_folder_is_not_created_for_pipes(tmp_path):
    run_stage(tmp_path, [demo_clip(0)])
    assert not (tmp_path / "tmp").exists()
