"""`kebr-data mask` end to end through the CLI, on given transcripts and on asr-stage tables."""

import csv
import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from helpers import run_cli

from kebr_data.cli import main
from kebr_data.label_quality import hist_text, prob_hist
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


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    """The index stage's output of a 7-clip MOSI-layout folder with given text, run once for the module."""
    src = tmp_path_factory.mktemp("mask") / "MOSI"
    (src / "Raw/vid").mkdir(parents=True)
    with open(src / "label.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["video_id", "clip_id", "text", "label", "annotation", "mode"])
        for k, text in TEXTS.items():
            (src / f"Raw/vid/{k}.mp4").write_bytes(b"")
            w.writerow(["vid", k, text, "0.5", "Neutral", "train"])
    out = src.parent / "features"
    run_cli("extract", "--src", str(src), "--out", str(out), "--stages", "index", "--set", "index.shard_size=4",
            check=True)
    return out


@pytest.fixture()
def planned(indexed, tmp_path):
    """A test's own copy of `indexed`: the mask runs below write into it."""
    return shutil.copytree(indexed, tmp_path / "features")


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


def test_remembered_settings_are_named_and_negation_turns_off(planned):
    """Issue #27 point 12: `--negation` is remembered in run.json, so a plain rerun kept it on while --help
    said "default off". The run names the settings it takes from the folder, and --no-negation ends it."""
    run_cli("mask", "--out", str(planned), "--negation", "--max-neutral-fraction", "0.5", check=True)
    plain = run_cli("mask", "--out", str(planned), check=True)
    line = (f"settings from {planned}/run.json: negation=on (pass --no-negation to turn it off), "
            "max_neutral_fraction=0.5 (pass --max-neutral-fraction to change it)")
    assert line in plain.stderr.splitlines() and rows(planned)["6"]["label"] == pytest.approx(-1.4985)
    off = run_cli("mask", "--out", str(planned), "--no-negation", "--max-neutral-fraction", "1", check=True)
    assert "settings from" not in off.stderr and rows(planned)["6"]["label"] == pytest.approx(2.025)
    assert "until --no-negation" in " ".join(CliRunner().invoke(main, ["mask", "--help"]).output.split())


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


def test_a_fraction_out_of_range_is_refused_by_the_config_s_range_check(planned):
    """MaskSettings declares max_neutral_fraction's range (min/max): the config refuses 1.5 when it is set,
    before the stage is built (the stage has no range check of its own), in one line, writing nothing."""
    before = {p: p.stat().st_mtime_ns for p in planned.rglob("*")}
    proc = run_cli("mask", "--out", str(planned), "--max-neutral-fraction", "1.5")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines() == ["error: config key mask.max_neutral_fraction must lie in [0, 1], got "
                                                "1.5"]
    assert {p: p.stat().st_mtime_ns for p in planned.rglob("*")} == before


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


# what an ASR heard for each clip of `planned`: text and (word, prob) pairs; clip 4 was silent
HEARD = {
    "1": ("I love this wonderful movie", [("I", .9), ("love", .3), ("this", .9), ("wonderful", .95), ("movie", .9)]),
    "2": ("The meeting starts at noon", [(w, .2) for w in "The meeting starts at noon".split()]),
    "3": ("what a horrible day", [("what", .9), ("a", .9), ("horrible", .95), ("day", .9)]),  # ref: terrible
    "4": (None, []),
    "5": ("we sat at the table", [(w, .9) for w in "we sat at the table".split()]),
    "6": ("I am not happy,", [("I", .9), ("am", .9), ("not", .9), ("happy,", .6)]),
    "7": ("we walked to the station", []),  # no word timings
}


def write_asr(out_dir, engine="faster-whisper"):
    out = OutputDir(out_dir)
    plan = json.loads(out.plan_marker.read_text())
    for shard in range(plan["num_shards"]):
        ids = pq.read_table(out.table("plan", shard)).column("clip_id").to_pylist()
        recs = []
        for c in ids:
            text, words = HEARD[c.split("$_$")[1]]
            recs.append({"clip_id": c, "status": "ok" if text else "skipped", "error": None if text else "silence",
                         "message": None, "text": text, "language": "en", "language_prob": 0.95,
                         "avg_logprob": -0.2, "engine": engine, "model": "m",
                         "words": [{"word": w, "start": 0.0, "end": 0.0, "prob": p} for w, p in words]})
        table = pa.Table.from_pylist(recs, schema=with_metadata(ASR, "asr"))
        size, sha = write_table(out.table("asr", shard), table)
        ok = sum(r["status"] == "ok" for r in recs)
        Marker("asr", shard, len(ids), ok, 0, len(ids) - ok, {}, 0.1, "h", "1", {}, {"plan": "x"}, size, sha,
               "now", stats={"language_prob_hist": {"0.9": ok}}).write(out.marker("asr", shard))


def test_masked_word_probability_gates_low_confidence_sentiment_words(planned):
    write_asr(planned)
    run_cli("mask", "--out", str(planned), "--set", "mask.min_word_prob=0.5", check=True)
    r = rows(planned)
    assert (r["1"]["status"], r["1"]["error"]) == ("skipped", "low_word_prob")
    assert r["1"]["mask_word"] == "love" and r["1"]["mask_word_prob"] == pytest.approx(0.3)
    assert "'love' was heard with p=0.30 < mask.min_word_prob 0.5" in r["1"]["message"]
    assert r["2"]["status"] == "ok" and not r["2"]["has_sentiment_word"]  # neutral words are not gated
    assert (r["6"]["status"], r["6"]["mask_word_prob"]) == ("ok", pytest.approx(0.6))
    assert (r["7"]["status"], r["7"]["mask_word_prob"]) == ("ok", None)
    # reference agreement: 3 was heard as "horrible" (-2.5 -> -1.875), its reference says terrible (-1.575)
    assert (r["3"]["label"], r["3"]["ref_label"]) == (pytest.approx(-1.875), pytest.approx(-1.575))
    m0 = json.loads((planned / "_done/mask/shard-00000.json").read_text())["stats"]
    assert m0["word_prob_hist"]["0.3"] == 1 and m0["word_prob_hist"]["0.9"] == 1 and sum(
        m0["word_prob_hist"].values()) == 2  # the sentiment words of 1 (skipped by the gate) and 3
    assert (m0["low_word_prob"], m0["ref_total"], m0["ref_agree"]) == (1, 2, 1)  # 2 agrees, 3 does not
    status = run_cli("status", "--out", str(planned), check=True).stdout
    assert "label quality" in status and "1/2 (50%)" in status and "4/5 (80%)" in status  # shard 0 and total
    assert "1 sentiment words heard with low confidence" in " ".join(status.split())  # rich may wrap it
    quality = json.loads(run_cli("status", "--out", str(planned), "--json", check=True).stdout)["label_quality"]
    assert [q["shard"] for q in quality] == ["00000", "00001", "total"]
    assert (quality[-1]["ref_agree"], quality[-1]["ref_total"], quality[-1]["low_word_prob"]) == (4, 5, 1)

    run_cli("mask", "--out", str(planned), "--set", "mask.min_word_prob=0.5", "--set", "mask.low_word_prob='flag'",
            check=True)
    r = rows(planned)
    assert r["1"]["status"] == "ok" and r["1"]["message"].startswith("low_word_prob: the sentiment word 'love'")
    m0 = json.loads((planned / "_done/mask/shard-00000.json").read_text())["stats"]
    assert (m0["low_word_prob"], m0["ref_total"], m0["ref_agree"]) == (1, 3, 2)


def test_given_transcripts_are_exempt_from_the_word_gate(planned):
    write_asr(planned, engine="given")
    run_cli("mask", "--out", str(planned), "--set", "mask.min_word_prob=0.99", check=True)
    r = rows(planned)
    assert r["1"]["status"] == "ok" and r["1"]["mask_word_prob"] is None and r["1"]["ref_label"] is None
    run_cli("mask", "--out", str(planned), "--text-source", "given", "--set", "mask.min_word_prob=0.99", check=True)
    assert rows(planned)["1"]["status"] == "ok"


def test_report_shows_label_quality(planned):
    write_asr(planned)
    run_cli("mask", "--out", str(planned), check=True)
    run_cli("report", "--out", str(planned), check=True)
    page = (planned / "report/index.html").read_text()
    assert "<h2>Label quality</h2>" in page and "<td>total</td>" in page and "5/6 (83%)" in page
    assert (planned / "report/word_prob.png").stat().st_size > 1000
    assert (planned / "report/language_prob.png").stat().st_size > 1000


def test_bad_word_gate_options_are_config_errors(planned):
    proc = run_cli("mask", "--out", str(planned), "--set", "mask.low_word_prob='drop'")
    assert proc.returncode == 2 and "mask.low_word_prob expects skip | flag, got 'drop'" in proc.stderr
    proc = run_cli("mask", "--out", str(planned), "--set", "mask.min_word_prob=1.5")
    assert proc.returncode == 2 and "mask.min_word_prob must lie in [0, 1], got 1.5" in proc.stderr


def test_probability_histogram_and_its_three_way_summary():
    hist = prob_hist([0.0, 0.05, 0.1, 0.49, 0.5, 0.899, 0.9, 1.0, None])
    assert hist == {"0.0": 2, "0.1": 1, "0.2": 0, "0.3": 0, "0.4": 1, "0.5": 1, "0.6": 0, "0.7": 0, "0.8": 1,
                    "0.9": 2}
    assert hist_text(hist) == "4 / 2 / 2" and hist_text(prob_hist([])) == "-"
