"""`kebr-data mask` end to end through the CLI, on given transcripts and on asr-stage tables."""

import csv
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import run_cli

from kebr_data.schema import ASR, with_metadata
from kebr_data.storage.layout import OutputDir
from kebr_data.storage.markers import Marker
from kebr_data.storage.parquet import write_table

TEXTS = {
    "1": "I love this wonderful movie",          # love 3.2 -> 2.4
    "2": "The meeting starts at noon",            # neutral
    "3": "what a terrible day",                   # terrible -2.1 -> -1.575
    "4": "",                                      # empty -> skipped
    "5": "we sat at the table",                   # neutral
    "6": "I am not happy",                        # happy 2.7 -> 2.025 (negation off)
    "7": "we walked to the station",               # neutral
}


@pytest.fixture()
def planned(tmp_path):
    src = tmp_path / "MOSI"
    (src / "Raw/vid").mkdir(parents=True)
    with open(src / "label.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["video_id", "clip_id", "text", "label", "annotation", "mode"])
        for k, text in TEXTS.items():
            (src / f"Raw/vid/{k}.mp4").write_bytes(b"")
            w.writerow(["vid", k, text, "0.5", "Neutral", "train"])
    out = tmp_path / "features"
    run_cli("extract", "--src", str(src), "--out", str(out), "--stages", "index", "--set", "index.shard_size=4",
            check=True)
    return out


def rows(out):
    return {r["clip_id"].split("$_$")[1]: r for r in pq.read_table(out / "mask").to_pylist()}


def test_mask_on_given_text(planned):
    proc = run_cli("mask", "--lexicon", "vader", "--out", str(planned), check=True)
    r = rows(planned)
    assert (r["1"]["mask_word"], r["1"]["label"], r["1"]["masked_text"]) == ("love", pytest.approx(2.4),
                                                                           "I [MASK] this wonderful movie")
    assert r["3"]["label"] == pytest.approx(-1.575) and r["3"]["vader_score"] == pytest.approx(-2.1)
    assert r["6"]["label"] == pytest.approx(2.025)
    assert (r["4"]["status"], r["4"]["error"]) == ("skipped", "empty_text")
    assert not r["2"]["has_sentiment_word"] and r["2"]["label"] == 0.0 and r["2"]["lexicon"] == "vader"
    assert not (planned / "audio").exists()  # nothing but mask/ is written
    assert "sentiment word in 50.0% of 6 masked clips" in proc.stderr
    marker = json.loads((planned / "_done/mask/shard-00000.json").read_text())
    assert marker["stats"]["label_hist"]["2"] == 1 and marker["stats"]["label_hist"]["-2"] == 1
    assert marker["stats"]["neutral"] == 1 and marker["stats"]["sentiment"] == 2
    assert "7506 entries" in marker["versions"]["lexicon"]
    status = run_cli("status", "--out", str(planned), check=True).stdout
    assert "mask: sentiment word in 50.0% of 6 masked clips" in status and "-2:1" in status


def test_rerun_with_other_options_replaces_only_mask(planned):
    run_cli("mask", "--out", str(planned), check=True)
    first = (planned / "plan/shard-00000.parquet").read_bytes()
    same = run_cli("mask", "--out", str(planned), check=True)
    assert "up to date" in same.stderr
    proc = run_cli("mask", "--out", str(planned), "--negation", check=True)
    assert "options changed, replacing 2 shard(s) of mask/" in proc.stderr
    assert rows(planned)["6"]["label"] == pytest.approx(-1.4985)
    assert (planned / "plan/shard-00000.parquet").read_bytes() == first


def test_max_neutral_fraction(planned):
    run_cli("mask", "--out", str(planned), "--max-neutral-fraction", "0", check=True)
    r = rows(planned)
    for k in ("2", "5", "7"):
        assert (r[k]["status"], r[k]["error"]) == ("skipped", "neutral_capped")
    assert all(r[k]["status"] == "ok" for k in ("1", "3", "6"))
    # shard 0 holds 1,2,3,4 (2 sentiment, 1 neutral); shard 1 holds 5,6,7 (1 sentiment, 2 neutral):
    # with 0.5, each shard keeps at most as many neutral as sentiment sentences
    run_cli("mask", "--out", str(planned), "--max-neutral-fraction", "0.5", check=True)
    r = rows(planned)
    assert r["2"]["status"] == "ok"
    assert sorted(r[k]["status"] for k in ("5", "7")) == ["ok", "skipped"]
    again = rows(planned)
    assert again == r


def test_bad_fraction_is_a_prerequisite_error(planned):
    proc = run_cli("mask", "--out", str(planned), "--max-neutral-fraction", "1.5")
    assert proc.returncode == 2 and "max_neutral_fraction must lie in [0, 1]" in proc.stderr


def test_asr_text_source(planned):
    out = OutputDir(planned)
    plan = json.loads(out.plan_marker.read_text())
    for shard in range(plan["num_shards"]):
        ids = pq.read_table(out.table("plan", shard)).column("clip_id").to_pylist()
        recs = [{"clip_id": c, "status": "ok", "error": None, "message": None, "text": "this is awful",
                 "language": "en", "language_prob": 1.0, "avg_logprob": -0.2, "engine": "test", "model": "m",
                 "words": []} for c in ids]
        recs[0].update(status="skipped", error="silence", text=None)
        size, sha = write_table(out.table("asr", shard), pa.Table.from_pylist(recs, schema=with_metadata(ASR, "asr")))
        Marker("asr", shard, len(ids), len(ids) - 1, 0, 1, {}, 0.1, "h", "1", {}, {"plan": "x"}, size, sha,
               "now").write(out.marker("asr", shard))
    run_cli("mask", "--out", str(planned), check=True)  # auto: asr outputs exist
    r = rows(planned)
    assert r["2"]["text"] == "this is awful" and r["2"]["mask_word"] == "awful"
    assert (r["1"]["status"], r["1"]["error"], r["1"]["message"]) == ("skipped", "upstream_skipped", "asr: silence")
    m = json.loads((planned / "_done/mask/shard-00000.json").read_text())
    assert m["upstream"]["asr"] == json.loads((planned / "_done/asr/shard-00000.json").read_text())["output_sha256"]
    proc = run_cli("mask", "--out", str(planned), "--text-source", "given", check=True)
    assert "replacing" in proc.stderr and rows(planned)["1"]["mask_word"] == "love"


def test_asr_source_without_asr_outputs(planned):
    proc = run_cli("mask", "--out", str(planned), "--text-source", "asr")
    assert proc.returncode == 2 and "ASR has not run" in proc.stderr and "--stages audio,asr" in proc.stderr


def test_mask_help():
    out = run_cli("mask", "--help", check=True).stdout
    assert "--max-neutral-fraction" in out and "--negation" in out and "--scale-from" in out
