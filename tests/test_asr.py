"""The ASR stage with real engines: faster-whisper tiny.en on the demo's known sentences, language
filtering, silence, given transcripts, offline model resolution, and openai-whisper's loading and
decoding path on a checkpoint built here."""

import csv
import re
import shutil
import subprocess
import time

import jiwer
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from helpers import ROOT, demo_clip, run_cli

from kebr_data import config
from kebr_data.asr_engines.models import TINY_EN_SHA256, bundled_tiny_en, ctranslate2_model, torch_checkpoint
from kebr_data.errors import PrerequisiteError
from kebr_data.media.flac import encode_flac
from kebr_data.schema import AUDIO, PLAN
from kebr_data.stages.asr import AsrStage
from kebr_data.stages.base import ShardContext
from kebr_data.storage.atomic import file_digest

FIXTURES = ROOT / "tests" / "fixtures"


def words(text):
    return re.sub(r"[^a-z' ]", " ", text.lower()).split()


def wer(ref, hyp):
    """Word error rate (jiwer's) over lower-cased words without punctuation."""
    return jiwer.wer(" ".join(words(ref)), " ".join(words(hyp)) or "<empty>")


def test_wer_helper_on_hand_computed_cases():
    assert wer("a b c d", "a b c d") == 0.0
    assert wer("a b c d", "a x c") == 0.5  # one substitution, one deletion
    assert wer("I love it.", "i LOVE it") == 0.0


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, demo_all):
    """A copy of the demo extracted with pipelines/demo.toml (index, audio, asr, acoustic): mask writes there."""
    return shutil.copytree(demo_all[0], tmp_path_factory.mktemp("asr") / "f")


def test_faster_whisper_transcribes_the_demo_within_10_percent_wer(demo_run):
    with open(ROOT / "demo/sentences.tsv", newline="") as fh:
        truth = {r["clip_id"]: r["sentence"] for r in csv.DictReader(fh, delimiter="\t")}
    rows = {r["clip_id"]: r for r in pq.read_table(demo_run / "asr").to_pylist()}
    errors = [wer(truth[c], rows[c]["text"]) for c in truth]
    assert sum(errors) / len(errors) <= 0.10, {c: rows[c]["text"] for c in truth}
    r = rows["id00001/kEbRdEmOa01/00001"]
    assert (r["status"], r["engine"], r["model"], r["language"]) == ("ok", "faster-whisper", "model", "en")
    assert r["language_prob"] is None  # tiny.en is English-only: it cannot identify a language
    assert -1.0 < r["avg_logprob"] < 0.0
    assert [w["word"] for w in r["words"]][:3] == ["I", "love", "this"]
    assert all(0 <= w["start"] <= w["end"] <= 6 for w in r["words"])
    assert rows["id00003/kEbRdEmOe05/00001"]["error"] == "upstream_skipped"


def test_mask_reads_the_asr_transcripts(demo_run):
    proc = run_cli("mask", "--out", str(demo_run), check=True)
    rows = {r["clip_id"]: r for r in pq.read_table(demo_run / "mask").to_pylist()}
    assert rows["id00001/kEbRdEmOa01/00001"]["mask_word"] == "love"
    assert rows["id00001/kEbRdEmOa01/00002"]["mask_word"] == "terrible"
    assert "sentiment word in 83.3% of 6 masked clips" in proc.stderr  # all but the neutral sentence


def stage_rows(tmp_path, clips, **overrides):
    sets = [f"asr.{k}={v!r}" if isinstance(v, str) else f"asr.{k}={str(v).lower() if isinstance(v, bool) else v}"
            for k, v in overrides.items()]
    cfg = config.load(overrides=sets)
    plan, audio = [], []
    for i, (y, sr, extra) in enumerate(clips):
        plan.append({"clip_id": f"c{i}", "status": "ok", "source": "folder", **extra})
        audio.append({"clip_id": f"c{i}", "status": "ok", "sample_rate": sr, "num_samples": len(y),
                      "duration_s": len(y) / sr,
                      "flac": encode_flac((np.clip(y, -1, 1) * 32767).astype(np.int16), sr)})
    stage = AsrStage(cfg["asr"])
    assert stage.check() == []
    inputs = {"plan": pa.Table.from_pylist(plan, schema=PLAN), "audio": pa.Table.from_pylist(audio, schema=AUDIO)}
    return stage.run_shard(ShardContext(0, inputs, tmp_path)).to_pylist()


def test_non_english_speech_is_skipped_with_its_language(tmp_path):
    clips = [(*sf.read(FIXTURES / f"speech_{lang}.flac", dtype="float32"), {}) for lang in ("de", "fr")]
    rows = stage_rows(tmp_path, clips)
    for r in rows:
        assert (r["status"], r["error"], r["language"]) == ("skipped", "language", "und"), r
        assert "likely not English" in r["message"] and r["text"]  # what was heard stays in the row


def test_silence_is_skipped_before_decoding(tmp_path):
    rows = stage_rows(tmp_path, [(np.zeros(32000, np.float32), 16000, {}),
                                 (1e-4 * np.random.default_rng(0).standard_normal(32000).astype(np.float32), 16000,
                                  {})])
    assert [(r["status"], r["error"]) for r in rows] == [("skipped", "silence"), ("skipped", "silence")]


def test_confidence_gate(tmp_path):
    y, sr = sf.read(FIXTURES / "speech_de.flac", dtype="float32")
    (row,) = stage_rows(tmp_path, [(y, sr, {})], languages=[], min_avg_logprob=-0.5)
    assert (row["status"], row["error"]) == ("skipped", "low_confidence")


def test_given_transcripts_from_plan_and_sidecar(tmp_path):
    media = tmp_path / "a.mp4"
    media.write_bytes(b"x")
    (tmp_path / "a.txt").write_text("  I love\nthis  ")
    plan = [{"clip_id": "p", "status": "ok", "source": "mmsa", "given_text": "it was great"},
            {"clip_id": "s", "status": "ok", "source": "folder", "video_path": str(media)},
            {"clip_id": "n", "status": "ok", "source": "folder", "video_path": str(tmp_path / "b.mp4")}]
    stage = AsrStage(config.load(overrides=["asr.engine='given'"])["asr"])
    assert stage.upstream == ("plan",)
    rows = stage.run_shard(ShardContext(0, {"plan": pa.Table.from_pylist(plan, schema=PLAN)}, tmp_path)).to_pylist()
    assert [(r["status"], r["text"], r["model"]) for r in rows[:2]] == [("ok", "it was great", "plan"),
                                                                        ("ok", "I love this", "sidecar")]
    assert (rows[2]["status"], rows[2]["error"]) == ("failed", "no_transcript")


def test_bundled_model_is_the_pinned_tiny_en():
    path = bundled_tiny_en()
    assert file_digest(path / "model.bin")[1] == TINY_EN_SHA256


@pytest.mark.parametrize("engine,model", [("faster-whisper", "large-v3"), ("faster-whisper", "/nowhere/model"),
                                          ("openai-whisper", "tiny.en")])
def test_unresolvable_model_fails_at_once(engine, model):
    t0 = time.monotonic()
    with pytest.raises(PrerequisiteError, match="never downloaded at run time"):
        {"faster-whisper": ctranslate2_model, "openai-whisper": torch_checkpoint}[engine](model)
    assert time.monotonic() - t0 < 5


def test_unresolvable_model_stops_extract_before_any_work(tmp_path, demo_src):
    proc = run_cli("extract", "--src", str(demo_src), "--out", str(tmp_path / "f"), "--stages", "index,audio,asr",
                   "--set", "asr.model='large-v3'", timeout=60)
    assert proc.returncode == 2 and "set asr.model to that folder" in proc.stderr
    assert not (tmp_path / "f").exists()


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """An openai-whisper checkpoint built here from the bundled tiny.en's CTranslate2 weights."""
    pytest.importorskip("torch")
    whisper = pytest.importorskip("whisper")
    from ct2_to_whisper import convert

    path = convert(bundled_tiny_en(), tmp_path_factory.mktemp("whisper") / "tiny.en.pt")
    assert not whisper.load_model(str(path)).is_multilingual
    return path


def test_openai_whisper_loads_and_decodes_a_local_checkpoint(tmp_path, tiny_checkpoint, ffmpeg):
    raw = subprocess.run([ffmpeg, "-loglevel", "error", "-i", str(demo_clip(0)), "-ac", "1", "-ar",
                                        "16000", "-f", "s16le", "-"], capture_output=True, check=True).stdout
    y = np.frombuffer(raw, "<i2").astype(np.float32) / 32768
    (row,) = stage_rows(tmp_path, [(y, 16000, {})], engine="openai-whisper", model=str(tiny_checkpoint))
    assert (row["status"], row["engine"], row["model"], row["language"]) == ("ok", "openai-whisper", "tiny.en.pt",
                                                                             "en")
    assert wer("I love this wonderful movie, it made me so happy.", row["text"]) <= 0.1
    assert -1.0 < row["avg_logprob"] < 0.0 and [w["word"] for w in row["words"]][:2] == ["I", "love"]


def test_packed_asr_on_the_demo_gives_the_same_mask_labels(demo_run, tmp_path):
    from kebr_data.masking import load_lexicon, mask_transcript

    inputs = {name: pq.read_table(demo_run / name) for name in ("plan", "audio")}
    packed = AsrStage(config.load(overrides=["asr.pack_s=30.0"])["asr"]).run_shard(
        ShardContext(0, inputs, tmp_path)).to_pylist()
    alone = {r["clip_id"]: r for r in pq.read_table(demo_run / "asr").to_pylist()}
    lexicon = load_lexicon("vader")
    assert len(packed) == len(alone) and sum(r["status"] == "ok" for r in packed) >= 5
    for r in packed:
        a = alone[r["clip_id"]]
        assert (r["status"], r["error"], r["language"]) == (a["status"], a["error"], a["language"])
        if r["text"]:
            assert mask_transcript(r["text"], lexicon, r["clip_id"]).label == \
                mask_transcript(a["text"], lexicon, r["clip_id"]).label


def test_openai_whisper_packs_clips_with_the_words_of_each(tmp_path, tiny_checkpoint):
    y, sr = sf.read(FIXTURES / "speech_en.flac", dtype="float32")
    clips = [(y, sr, {}), (np.zeros(16000, np.float32), sr, {}), (y, sr, {})]
    sets = dict(engine="openai-whisper", model=str(tiny_checkpoint))
    packed = stage_rows(tmp_path, clips, pack_s=30.0, **sets)
    assert [(r["status"], r["error"]) for r in packed] == [("ok", None), ("skipped", "silence"), ("ok", None)]
    assert words(packed[0]["text"]) == words(packed[2]["text"])  # the same clip twice (a comma may differ)
    assert wer("It was a complete disaster and I hated every minute of it.", packed[2]["text"]) <= 0.1
    logps = [np.log(w["prob"]) for w in packed[2]["words"]]
    assert packed[2]["avg_logprob"] == pytest.approx(sum(logps) / len(logps))  # packed, not redone clip by clip
    assert all(0 <= w["start"] <= w["end"] <= len(y) / sr + 1e-6 for w in packed[2]["words"])
