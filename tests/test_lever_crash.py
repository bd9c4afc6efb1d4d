"""Crash safety of two of the VoxCeleb2-in-a-day levers in real runs: SIGKILL a worker in the middle of a shard,
rerun, and compare with an uninterrupted run, byte for byte: packed ASR windows (`asr.pack_s`, whose shard is
decoded window by window before anything is written) and the visual frame budget (`visual.max_frames`, whose cut
videos live in the shard's temporary folder)."""

import pyarrow.parquet as pq
import pytest
from helpers import DEMO, ROOT, kill_before_commit, run_cli, shard_files

FAKE_OPENFACE = ROOT / "tests" / "fake_openface" / "FeatureExtraction"
COMMON = ["--layout", "folder", "--set", "index.shard_size=2", "--workers", "1", "--max-failed", "0.2"]
LEVERS = {
    "asr": ["--stages", "index,audio,asr", "--set", "asr.pack_s=30"],
    "visual": ["--stages", "index,visual", "--set", f"visual.openface_bin={FAKE_OPENFACE}",
               "--set", "visual.max_frames=20"],
}


@pytest.fixture()
def fake_openface(monkeypatch):
    monkeypatch.setenv("KEBR_FAKE_OPENFACE_CSV", str(ROOT / "tests/fixtures/openface/astronaut_gap.csv"))
    monkeypatch.setenv("KEBR_FAKE_OPENFACE_PER_FRAME", "1")  # each row carries a checksum of the frame it read


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["asr", "visual"])
def test_sigkill_mid_shard_of_a_lever_then_rerun_is_identical(tmp_path, fake_openface, stage):
    corpus = DEMO / "mp4"  # 8 clips in 4 shards: 6 speaking, a decode error, a clip without an audio track
    args = [*COMMON, *LEVERS[stage]]
    reference = tmp_path / "reference"
    run_cli("extract", "--src", str(corpus), "--out", str(reference), *args, check=True)
    out, _, _ = kill_before_commit(corpus, tmp_path, args, stage, timeout=300, clips_done=0 if stage == "asr" else 2)
    proc = run_cli("extract", "--src", str(corpus), "--out", str(out), *args)
    assert proc.returncode == 0, proc.stderr
    assert shard_files(out) == shard_files(reference)
    plan_ids = pq.read_table(out / "plan").column("clip_id").to_pylist()
    assert pq.read_table(out / stage).column("clip_id").to_pylist() == plan_ids and len(plan_ids) == 8
    assert not list(out.rglob("*.tmp-*")) and not list(out.glob("_tmp/*"))  # no shard's temporary folder left
    assert not list(out.rglob("*.mkv"))  # nor a cut video of the frame budget
