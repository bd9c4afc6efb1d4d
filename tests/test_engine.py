"""End to end over the bundled demo through the real CLI: sharding, resume, staleness, lock, exit codes."""

import json
import shutil
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from helpers import ROOT, run_cli, shard_files

from kebr_data.storage.layout import OutputDir

DEMO_CFG = str(ROOT / "pipelines" / "demo.toml")


def extract(src, out, *extra, check=True):
    args = ["extract", "--out", str(out), "--config", DEMO_CFG, *extra]
    if src is not None:
        args[1:1] = ["--src", str(src)]
    return run_cli(*args, check=check)



@pytest.fixture(scope="module")
def demo_run(demo_all):
    """`extract(demo_src, out)`: the suite's one run of the demo with its own stages (conftest.demo_all)."""
    return demo_all


def test_demo_two_shards_with_expected_statuses(demo_run):
    out, stderr = demo_run
    assert sorted(p.name for p in (out / "audio").glob("*.parquet")) == ["shard-00000.parquet", "shard-00001.parquet"]
    plan = pq.read_table(out / "plan").to_pylist()
    audio = [r for s in (0, 1) for r in pq.read_table(out / f"audio/shard-{s:05d}.parquet").to_pylist()]
    assert [r["clip_id"] for r in audio] == [r["clip_id"] for r in plan] == sorted(r["clip_id"] for r in plan)
    by_id = {r["clip_id"]: r for r in audio}
    assert len(by_id) == 8
    assert (by_id["id00003/kEbRdEmOe05/00001"]["status"], by_id["id00003/kEbRdEmOe05/00001"]["error"]) == \
        ("skipped", "no_audio_track")
    assert (by_id["id00003/kEbRdEmOe05/00002"]["status"], by_id["id00003/kEbRdEmOe05/00002"]["error"]) == \
        ("failed", "decode_error")
    assert sum(r["status"] == "ok" for r in audio) == 6
    assert plan[0]["speaker_id"] == "id00001" and plan[0]["source"] == "voxceleb"
    assert "2 shards" in stderr and "failed/decode_error 1" in stderr


def test_markers_record_counts_hashes_and_versions(demo_run):
    out, _ = demo_run
    m = json.loads((out / "_done/audio/shard-00001.json").read_text())
    assert (m["rows"], m["ok"], m["failed"], m["skipped"]) == (4, 2, 1, 1)
    assert m["errors"] == {"failed/decode_error": 1, "skipped/no_audio_track": 1}
    assert m["output_bytes"] == (out / "audio/shard-00001.parquet").stat().st_size
    assert "ffmpeg" in m["versions"] and m["config_hash"]
    plan = json.loads((out / "_done/plan.json").read_text())
    assert m["upstream"] == {"plan": plan["shards"]["00001"]["sha256"]}
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["audio"]["sample_rate"] == 22050 and run["config"]["index"]["shard_size"] == 4
    assert "id00003/kEbRdEmOe05/00002" in (out / "_logs/audio/shard-00001.log").read_text()


def test_status_command(demo_run):
    out, _ = demo_run
    proc = run_cli("status", "--out", str(out), check=True)
    assert "8 clips in 2 shard(s)" in proc.stdout
    assert "2/2" in proc.stdout and "skipped/no_audio_track" in proc.stdout


def test_rerun_is_a_no_op_and_resume_recomputes_only_missing(tmp_path, demo_run):
    out = tmp_path / "f"
    shutil.copytree(demo_run[0], out)
    before = shard_files(out)
    m0 = (out / "_done/audio/shard-00000.json").read_text()
    proc = extract(None, out)  # no --src: the frozen plan is reused
    assert "up to date" in proc.stderr
    assert (out / "_done/audio/shard-00000.json").read_text() == m0
    (out / "_done/audio/shard-00001.json").unlink()
    (out / "audio/shard-00001.parquet.tmp-deadbeef").write_bytes(b"torn write")
    proc = extract(None, out)
    assert "swept 1 leftover" in proc.stderr and "1 shards" in proc.stderr
    assert (out / "_done/audio/shard-00000.json").read_text() == m0
    assert shard_files(out) == before
    assert not list(out.rglob("*.tmp-*"))


def test_truncated_table_with_marker_is_recomputed(tmp_path, demo_run):
    out = tmp_path / "f"
    shutil.copytree(demo_run[0], out)
    before = shard_files(out)
    p = out / "audio/shard-00000.parquet"
    p.write_bytes(p.read_bytes()[:100])
    extract(None, out)
    assert shard_files(out) == before


def test_changed_config_is_refused_until_force(tmp_path, demo_run):
    out = tmp_path / "f"
    shutil.copytree(demo_run[0], out)
    audio = ("--stages", "index,audio", "--workers", "1")  # what is checked; asr, acoustic, a 2nd worker: only time
    proc = extract(None, out, *audio, "--set", "audio.sample_rate=16000", check=False)
    assert proc.returncode == 2
    assert "--force" in proc.stderr and "2 shard(s) were made with another audio config" in proc.stderr
    # runtime-only keys do not make outputs stale
    extract(None, out, *audio, "--set", "audio.timeout_s=30")
    extract(None, out, *audio, "--set", "audio.sample_rate=16000", "--force")
    rows = pq.read_table(out / "audio/shard-00000.parquet").to_pylist()
    assert {r["sample_rate"] for r in rows} == {16000}


def test_other_source_needs_replan(tmp_path, demo_run, demo_src):
    out = tmp_path / "f"
    shutil.copytree(demo_run[0], out)
    src = tmp_path / "src"
    shutil.copytree(demo_src, src)
    shutil.rmtree(src / "mp4/id00003")
    proc = extract(src, out, "--stages", "index,audio", check=False)
    assert proc.returncode == 2 and "--replan" in proc.stderr
    proc = extract(src, out, "--stages", "index,audio", "--replan", "--workers", "1")
    plan = json.loads((out / "_done/plan.json").read_text())
    assert plan["clips"] == 6 and plan["num_shards"] == 2
    audio = pq.read_table(out / "audio").to_pylist()
    assert len(audio) == 6 and all(r["status"] == "ok" for r in audio)
    assert proc.returncode == 0


def test_max_failed_sets_the_exit_code(tmp_path, demo_src):
    proc = extract(demo_src, tmp_path / "f", "--stages", "index,audio", "--max-failed", "0.05", "--workers", "1",
                   check=False)
    assert proc.returncode == 1
    assert "12.5% of clips failed, above --max-failed 5.0%" in proc.stderr


def test_second_run_on_the_same_folder_is_refused(tmp_path, demo_src):
    out = tmp_path / "f"
    out.mkdir()
    code = ("import sys, time; from pathlib import Path; from kebr_data.storage.lock import OutputLock; "
            "l = OutputLock(Path(sys.argv[1]), 'kebr-data extract (other)'); l.acquire(); print('held', flush=True); "
            "time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(out / "_lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        proc = extract(demo_src, out, check=False)
        assert proc.returncode == 2 and "in use by another run" in proc.stderr and "(other)" in proc.stderr
        assert not (out / "plan").exists()
    finally:
        holder.kill()
        holder.wait()


def test_new_folder_without_src(tmp_path):
    proc = extract(None, tmp_path / "f", check=False)
    assert proc.returncode == 2 and "first run `kebr-data extract --src DATASET" in proc.stderr


def test_missing_prerequisite_stops_before_any_work(tmp_path, demo_src):
    proc = extract(demo_src, tmp_path / "f", "--set", "audio.ffmpeg='/no/such/ffmpeg'", check=False)
    assert proc.returncode == 2
    assert "prerequisites are missing" in proc.stderr and "/no/such/ffmpeg" in proc.stderr
    assert not (tmp_path / "f").exists()


def test_corrupt_upstream_is_a_toolkit_error_not_a_clip_error(tmp_path, demo_run):
    out = tmp_path / "f"
    shutil.copytree(demo_run[0], out)
    (out / "_done/audio/shard-00000.json").unlink()
    p = out / "plan/shard-00000.parquet"
    p.write_bytes(b"PAR1 not really")
    proc = extract(None, out, check=False)
    assert proc.returncode == 3
    assert "did not finish" in proc.stderr and "shard-00000.log" in proc.stderr
    assert OutputDir(out).marker_shards("audio") == [1]


def test_unknown_stage_and_help(tmp_path):
    proc = run_cli("extract", "--out", str(tmp_path), "--stages", "index,lipread", check=False)
    assert proc.returncode == 2 and "unknown stage(s) lipread" in proc.stderr
    assert "--max-failed" in run_cli("extract", "--help", check=True).stdout
    assert "status" in run_cli("--help", check=True).stdout


def test_workers_one_and_two_give_identical_outputs(tmp_path, demo_src, demo_run):
    extract(demo_src, tmp_path / "w1", "--workers", "1")
    assert shard_files(tmp_path / "w1") == shard_files(demo_run[0])
