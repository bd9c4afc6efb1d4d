"""Operator commands: `kebr-data retry-failed` and `kebr-data validate`."""

import os
import shutil

import pyarrow.parquet as pq
import pytest
from helpers import ROOT, run_cli, shard_files

from kebr_data.media.ffmpeg import find_ffmpeg

DEMO_CFG = str(ROOT / "pipelines" / "demo.toml")
ARGS = ["--config", DEMO_CFG, "--stages", "index,audio,acoustic"]



@pytest.fixture(scope="module")
def reference(demo_acoustic):
    """The demo extracted with ARGS, once per suite (conftest.demo_acoustic): tests copy it to change it."""
    return demo_acoustic


def test_retry_failed_redoes_only_failed_rows_and_refreshes_downstream(tmp_path, demo_src, reference):
    # hangs on one clip while the outage lasts, real ffmpeg otherwise (the same ffmpeg before and after: a
    # folder refuses another build, kebr_data/pipeline/pins.py); `exec sleep`: the timeout's kill ends the hang
    # itself (a sleep forked by the shell would keep the output pipes open, the run waiting its 30 s out)
    outage = tmp_path / "outage"
    outage.touch()
    flaky = tmp_path / "ffmpeg"
    flaky.write_text(f'#!/bin/sh\ncase "$*" in *kEbRdEmOa01/00002*) [ -e "{outage}" ] && exec sleep 30;; esac\n'
                     f'exec "{find_ffmpeg()}" "$@"\n')
    flaky.chmod(0o755)
    out = tmp_path / "f"
    run_cli("extract", "--src", str(demo_src), "--out", str(out), *ARGS, "--set", f"audio.ffmpeg='{flaky}'",
            "--set", "audio.timeout_s=1", "--max-failed", "1", "--workers", "1", check=True)
    rows = {r["clip_id"]: r for r in pq.read_table(out / "audio").to_pylist()}
    assert rows["id00001/kEbRdEmOa01/00002"]["error"] == "timeout"
    before = shard_files(out)
    # the folder remembers its settings: the retry names what changed (the outage is over, a longer timeout)
    outage.unlink()
    proc = run_cli("retry-failed", "--out", str(out), "--stages", "audio", "--set", "audio.timeout_s=120",
                   "--max-failed", "0.05")
    assert proc.returncode == 1  # the truncated demo MP4 still fails: above 5%
    log = (out / "_logs/audio/shard-00000.log").read_text()
    assert "retrying 1 failed row(s)" in log
    after = shard_files(out)
    assert after == shard_files(reference)  # now identical to a run that never failed
    assert after["audio/shard-00001.parquet"] == before["audio/shard-00001.parquet"]  # shard 1: same bytes
    assert after["acoustic/shard-00000.parquet"] != before["acoustic/shard-00000.parquet"]  # refreshed


def test_validate_finds_tampering(tmp_path, reference):
    out = tmp_path / "f"
    shutil.copytree(reference, out)
    ok = run_cli("validate", "--out", str(out))
    assert ok.returncode == 0 and "0 problem(s)" in ok.stderr
    table = out / "acoustic/shard-00001.parquet"
    table.write_bytes(table.read_bytes()[:-10])
    (out / "_done/audio/shard-00000.json").write_text("{broken")
    os.remove(out / "_done/acoustic/shard-00000.json")
    bad = run_cli("validate", "--out", str(out))
    assert bad.returncode == 1
    assert "audio shard 00000: corrupt marker" in bad.stderr
    assert "acoustic shard 00000: not done" in bad.stderr
    assert "acoustic shard 00001: table differs from its marker" in bad.stderr


def test_validate_detects_stale_downstream(tmp_path, reference):
    out = tmp_path / "f"
    shutil.copytree(reference, out)
    run_cli("extract", "--out", str(out), "--config", DEMO_CFG, "--stages", "audio", "--force",
            "--set", "audio.sample_rate=16000", check=False)
    proc = run_cli("validate", "--out", str(out))
    assert proc.returncode == 1 and "stale: made from another audio table" in proc.stderr


def test_report_writes_a_page_with_its_plots(tmp_path, reference):
    out = tmp_path / "f"
    shutil.copytree(reference, out)
    proc = run_cli("report", "--out", str(out), check=True)
    page = (out / "report/index.html").read_text()
    assert "wrote" in proc.stderr and "<table>" in page and "acoustic" in page
    images = [p.name for p in (out / "report").glob("*.png")]
    assert {"audio_duration_s.png", "reasons.png", "throughput.png"} <= set(images)
    for name in images:
        assert f"src='{name}'" in page and (out / "report" / name).read_bytes()[:4] == b"\x89PNG"
