"""Kill a real run with SIGKILL in the middle of a shard, rerun, and compare with an uninterrupted run."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest
from helpers import DEMO, kill_before_commit, run_cli, shard_files

SHARD_SIZE = 8
ARGS = ["--layout", "folder", "--stages", "index,audio", "--set", f"index.shard_size={SHARD_SIZE}", "--max-failed", "1", "--workers", "1"]



@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """48 real clips (the demo's, copied under several folders) plus its two bad ones: 7 shards."""
    src = tmp_path_factory.mktemp("corpus") / "src"
    for k in range(8):
        shutil.copytree(DEMO / "mp4", src / f"copy{k}", ignore=shutil.ignore_patterns("id00003"))
    shutil.copytree(DEMO / "mp4/id00003", src / "bad")
    return src


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "out"
    run_cli("extract", "--src", str(corpus), "--out", str(out), *ARGS, check=True)
    return out


@pytest.mark.parametrize("target", ["worker", "main"])
def test_sigkill_mid_shard_then_rerun_is_identical(corpus, reference, tmp_path, target):
    out, _, worker = kill_before_commit(corpus, tmp_path, ARGS, target=target)
    deadline = time.time() + 10  # a killed run takes its workers with it (no orphan keeps writing)
    while psutil.pid_exists(worker) and psutil.Process(worker).status() != psutil.STATUS_ZOMBIE:
        assert time.time() < deadline, "worker outlived its killed run"
        time.sleep(0.05)
    proc = run_cli("extract", "--src", str(corpus), "--out", str(out), *ARGS)
    assert proc.returncode == 0, proc.stderr
    assert shard_files(out) == shard_files(reference)
    plan_ids = pq.read_table(out / "plan").column("clip_id").to_pylist()
    audio_ids = pq.read_table(out / "audio").column("clip_id").to_pylist()
    assert audio_ids == plan_ids and len(set(audio_ids)) == len(audio_ids) == 50
    assert not list(out.rglob("*.tmp-*")) and not (out / "_tmp").exists()


@pytest.mark.parametrize("target", ["main", "group"])
def test_ctrl_c_stops_at_a_clip_boundary_and_commits_nothing_more(corpus, tmp_path, target):
    """SIGINT to the run (`kill -INT`) or to its process group (Ctrl-C at a terminal) once a shard other than
    the first has 2 clips done: no new shard starts, the running one stops at its next clip and commits
    nothing, exit 130 with one line. Once the worker finished that shard and the next before exiting."""
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "kebr_data", "extract", "--src", str(corpus), "--out", str(out),
                             *ARGS], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline, shard = time.time() + 120, None
    while shard is None and time.time() < deadline and proc.poll() is None:
        for log in sorted((out / "_logs/audio").glob("shard-*.log")) if (out / "_logs/audio").exists() else []:
            text = log.read_text()
            if int(log.stem.split("-")[1]) > 0 and text.count(" ok ") >= 2 and "done:" not in text:
                shard = int(log.stem.split("-")[1])
                (os.kill if target == "main" else os.killpg)(proc.pid, signal.SIGINT)
                break
        time.sleep(0.005)
    assert shard is not None, "the run finished before it could be interrupted"
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err and "interrupted" in err, err
    done = sorted(int(p.stem.split("-")[1]) for p in (out / "_done/audio").glob("shard-*.json"))
    assert done == list(range(shard)), f"interrupted in shard {shard}, committed {done}"
    assert "interrupted" in (out / f"_logs/audio/shard-{shard:05d}.log").read_text()
    assert not list(out.rglob("*.tmp-*")) and not list(out.glob("_tmp/*"))


def test_worker_death_is_reported_with_resume_advice(corpus, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "kebr_data", "extract", "--src", str(corpus), "--out", str(out),
                             *ARGS], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    log = out / "_logs/audio/shard-00001.log"
    while time.time() < deadline and not (log.exists() and re.search(r"pid (\d+)", log.read_text())):
        time.sleep(0.005)
    os.kill(int(re.search(r"pid (\d+)", log.read_text()).group(1)), signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 3
    assert "a worker process died" in err and "rerun the same command to resume" in err


def test_write_failure_then_rerun_is_identical(corpus, reference, tmp_path):
    """The commit of one shard fails (its final path is taken by a folder): the run stops with exit 3,
    the other shards are committed, and once the obstacle is gone a rerun matches a clean run."""
    out = tmp_path / "out"
    (out / "audio" / "shard-00003.parquet").mkdir(parents=True)
    proc = run_cli("extract", "--src", str(corpus), "--out", str(out), *ARGS)
    assert proc.returncode == 3 and "audio shard 00003" in proc.stderr
    assert not (out / "_done/audio/shard-00003.json").exists() and (out / "_done/audio/shard-00004.json").exists()
    (out / "audio" / "shard-00003.parquet").rmdir()
    assert run_cli("extract", "--src", str(corpus), "--out", str(out), *ARGS).returncode == 0
    assert shard_files(out) == shard_files(reference)


def test_truncated_table_without_marker_and_corrupt_marker_are_recomputed(corpus, reference, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    table = out / "audio/shard-00002.parquet"
    table.write_bytes(table.read_bytes()[: len(table.read_bytes()) // 2])
    (out / "_done/audio/shard-00002.json").unlink()
    (out / "_done/audio/shard-00005.json").write_text('{"stage": "audio", "sha')
    proc = run_cli("extract", "--src", str(corpus), "--out", str(out), *ARGS)
    assert proc.returncode == 0 and "2 shards" in proc.stderr
    assert shard_files(out) == shard_files(reference)
    assert run_cli("validate", "--out", str(out)).returncode == 0
