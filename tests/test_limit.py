"""`extract --limit N` (a smoke test on the plan's first N clips in OUT/_limit/, OUT unchanged) and
`status --json`."""

import json

import pyarrow.parquet as pq
from helpers import ROOT, run_cli, shard_files

import kebr_data

CONFIG = str(ROOT / "pipelines/demo_mmsa.toml")


def extract(out, *extra):
    return run_cli("extract", "--src", str(ROOT / "demo/mmsa"), "--out", str(out), "--config", CONFIG,
                   "--stages", "index,audio", *extra, check=True)


def test_limit_runs_the_first_clips_in_a_folder_of_their_own(tmp_path):
    out = tmp_path / "features"
    first = extract(out, "--limit", "3")
    assert "--limit 3: the first 3 of 8 clips" in first.stderr and f"{out}/_limit: 3 clips" in first.stderr
    plan_ids = pq.read_table(out / "plan").column("clip_id").to_pylist()
    assert len(plan_ids) == 8  # the whole plan, frozen as always
    assert not (out / "audio").exists() and not (out / "_done/audio").exists()  # OUT's stages untouched
    limited = kebr_data.open(out / "_limit")
    assert limited.column("clip_id").to_pylist() == plan_ids[:3] and limited.column("audio.status").to_pylist() == \
        ["ok"] * 3
    assert json.loads((out / "run.json").read_text())["history"][-1]["command"].endswith("--limit 3")

    again = extract(out, "--limit", "3")  # the same clips: nothing to redo
    assert "up to date" in again.stderr
    extract(out, "--limit", "5")
    assert kebr_data.open(out / "_limit").column("clip_id").to_pylist() == plan_ids[:5]
    before = shard_files(out / "_limit")

    extract(out)  # the real run: the whole plan in OUT, the smoke folder left as it was
    full = kebr_data.open(out)
    assert full.column("clip_id").to_pylist() == plan_ids
    assert [s["stage"] for s in json.loads(run_cli("status", "--out", str(out), "--json", check=True).stdout)
            ["stages"]] == ["audio"]
    assert shard_files(out / "_limit") == before
    # same clip, same audio bytes, limited or not
    flac = ["audio.flac"]
    assert "audio.flac" not in full.column_names  # a payload: read when asked for
    assert kebr_data.open(out, columns=flac).column("audio.flac").to_pylist()[:5] == \
        kebr_data.open(out / "_limit", columns=flac).column("audio.flac").to_pylist()


def test_status_of_a_folder_with_only_a_limit_run_points_at_limit(tmp_path):
    """Issue #27 point 13: after `extract --limit 2`, `status --out OUT` showed an empty table and nothing else."""
    out = tmp_path / "features"
    extract(out, "--limit", "2")
    shown = run_cli("status", "--out", str(out), check=True).stdout  # piped: never wrapped, however long the path
    assert f"results are in {out}/_limit/" in shown and f"`kebr-data status --out {out}/_limit`" in shown
    assert "smoke-test" not in run_cli("status", "--out", str(out / "_limit"), check=True).stdout


def test_limit_must_be_positive(tmp_path):
    proc = run_cli("extract", "--src", str(ROOT / "demo/mmsa"), "--out", str(tmp_path / "f"), "--limit", "0")
    assert proc.returncode == 2 and "--limit" in proc.stderr and not (tmp_path / "f").exists()


def test_status_json_matches_the_markers(tmp_path):
    out = tmp_path / "features"
    extract(out)
    status = json.loads(run_cli("status", "--out", str(out), "--json", check=True).stdout)
    assert status["folder"] == str(out)
    assert status["plan"] == {"clips": 8, "shards": 2, "src": str((ROOT / "demo/mmsa").resolve()), "rejected": 0}
    (audio,) = status["stages"]
    assert (audio["stage"], audio["shards_done"], audio["shards_total"], audio["clips"]) == ("audio", 2, 2, 8)
    assert audio["ok"] + audio["failed"] + audio["skipped"] == 8
    assert audio["ok"] == kebr_data.open(out).column("audio.status").to_pylist().count("ok")
