"""Packed ASR windows (`asr.pack_s`): clips joined into one Whisper window, words handed back to their clips
by their times; silent and bad clips alone; the same transcripts and gates as clip by clip."""

import numpy as np
import pytest
import soundfile as sf
from test_asr import FIXTURES, stage_rows

from kebr_data import config
from kebr_data.asr_engines import ClipAudio, Packing, Transcript, engines
from kebr_data.asr_engines.packing import Heard, Said, plan_windows, split, transcribe_packed
from kebr_data.errors import ClipError
from kebr_data.stages.asr import AsrStage


@pytest.fixture(scope="module")
def speech():
    return {lang: sf.read(FIXTURES / f"speech_{lang}.flac", dtype="float32")[0] for lang in ("en", "de", "fr", "es")}


def test_windows_are_filled_in_order_and_a_long_clip_is_alone():
    assert plan_windows([4, 4, 4, 4, 4, 4, 4], 30, 1) == [[0, 1, 2, 3, 4, 5], [6]]
    assert plan_windows([8, 40, 8, 8, 8], 30, 1) == [[0], [1], [2, 3, 4]]


def test_words_go_to_the_clip_nearest_their_middle_with_times_relative_to_it():
    spans = [(0.0, 3.0), (4.0, 6.0), (7.0, 9.0)]  # clip 1 (4-6 s) is followed by a clip that says nothing
    words = [Heard(" I", 0.2, 0.4, 0.9), Heard(" love", 2.6, 3.3, 0.8),  # ends in the gap: middle in clip 0
             Heard(" it.", 3.0, 3.6, 0.5),  # drawn into the gap: middle 3.3 nearer clip 0
             Heard(" So", 3.6, 4.2, 0.7),  # middle 3.9 lies in the gap nearer clip 1
             Heard(" sad.", 5.5, 6.4, 0.6)]
    a, b, c = split([Said(words[:3]), Said(words[3:])], spans, "en", [None] * 3, False, "m", trust=-5.0)
    assert (a.text, b.text, c.text) == ("I love it.", "So sad.", "")
    assert [(w.word, w.start, w.end) for w in b.words] == [("So", 0.0, 0.2), ("sad.", 1.5, 2.0)]  # clamped to 0-2
    assert b.avg_logprob == pytest.approx((np.log(0.7) + np.log(0.6)) / 2)
    assert (c.words, c.avg_logprob) == ([], None)
    assert split([Said(words[2:4])], spans, "en", [None] * 3, False, "m", -5.0) is None  # a segment across a gap
    assert split([Said(words)], spans[:1] + [(3.1, 9.0)], "en", [None] * 2, False, "m", trust=-0.5) is None


def test_a_doubtful_clip_sends_its_window_back_clip_by_clip(tmp_path, speech):
    """German, French and Spanish to an English-only model: packed (pack_min_logprob = -5), tiny.en loops the
    French clip's hallucination on into the Spanish one ("and it had a house again, ..."); the low confidence
    makes the window redo its clips one by one, so every row is the unpacked one."""
    clips = [(speech[lang], 16000, {}) for lang in ("en", "de", "fr", "es")]
    assert stage_rows(tmp_path, clips, pack_s=30.0) == stage_rows(tmp_path, clips)


def test_a_window_that_fails_is_redone_clip_by_clip_so_only_the_bad_clip_fails():
    clips = [ClipAudio({"n": i}, np.zeros(16000, np.float32), 16000) for i in range(3)]

    def decode(windows, lang):
        raise ClipError("decode_failed", "the window")

    def alone(clip):
        if clip.plan["n"] == 1:
            raise ClipError("decode_failed", "clip 1")
        return Transcript("ok", "en", None, -0.1)

    out = transcribe_packed(clips, Packing(30, 1, -0.7), lambda c: ("en", None), decode, alone, False, "m")
    assert [r.text if isinstance(r, Transcript) else r.message for r in out] == ["ok", "clip 1", "ok"]


def test_packed_rows_match_clip_by_clip_with_a_silent_clip_between(tmp_path, speech):
    clips = [(speech["en"], 16000, {}), (np.zeros(48000, np.float32), 16000, {}), (speech["en"], 16000, {}),
             (speech["de"], 16000, {})]
    alone = stage_rows(tmp_path, clips)
    packed = stage_rows(tmp_path, clips, pack_s=30.0)
    assert [(r["status"], r["error"]) for r in packed] == [(r["status"], r["error"]) for r in alone]
    assert packed[1]["error"] == "silence" and packed[3]["error"] == "language"  # German: 'und' for tiny.en
    for p, a, (y, sr, _) in zip(packed, alone, clips, strict=True):
        assert p["text"] == a["text"] and p["language"] == a["language"]
        assert all(0 <= w["start"] <= w["end"] <= len(y) / sr for w in p["words"] or [])
        assert [w["word"] for w in p["words"] or []] == [w["word"] for w in a["words"] or []]


def test_a_clips_transcript_does_not_depend_on_its_neighbour(speech):
    engine = engines()["faster-whisper"]
    stage = AsrStage(config.load(overrides=[])["asr"])
    clip = ClipAudio({}, speech["en"], 16000)
    packing = Packing(30, 1, -5.0)  # trust every window: the property holds without the redo
    texts = {name: engine.transcribe_pack([ClipAudio({}, speech[name], 16000), clip], stage.engine_settings, packing)
             for name in ("de", "fr")}
    assert texts["de"][1].text == texts["fr"][1].text == engine.transcribe(clip, stage.engine_settings).text
    assert "disaster" in texts["de"][1].text and "disaster" not in texts["de"][0].text


def test_packing_enters_the_config_hash_only_when_on():
    def stage(*sets):
        return AsrStage(config.load(overrides=list(sets))["asr"])

    off = stage()
    assert "pack_s" not in off.hashed_settings()  # unpacked outputs of earlier versions stay current
    assert off.config_hash() == stage("asr.pack_gap_s=2.0").config_hash()
    assert len({off.config_hash(), stage("asr.pack_s=30.0").config_hash(),
                stage("asr.pack_s=30.0", "asr.pack_gap_s=2.0").config_hash()}) == 3


def test_the_gpu_benchmark_refuses_on_a_cpu_in_one_line():
    import subprocess
    import sys

    import ctranslate2
    from helpers import ROOT

    if ctranslate2.get_cuda_device_count():
        pytest.skip("a CUDA GPU is visible: the benchmark would run")
    proc = subprocess.run([sys.executable, str(ROOT / "bench/gpu.py")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == ["bench/gpu.py needs a CUDA GPU (none visible): run it on a GPU machine"]


def test_batched_windows_decode_the_same_words_as_one_by_one(speech):
    """The GPU path (faster-whisper's BatchedInferencePipeline over packed windows, `asr.batch_size`) runs on a
    CPU too: each window's words come back to it, times in the window."""
    from kebr_data.asr_engines.faster_whisper import decode_windows, load
    from kebr_data.asr_engines.models import ctranslate2_model

    settings = AsrStage(config.load(overrides=[])["asr"]).engine_settings
    model = load(str(ctranslate2_model("")), "cpu", settings.compute_type)
    later = np.concatenate([np.zeros(32000, np.float32), speech["en"]])  # the words 2 s into their window
    windows = [speech["en"], later]
    one, batched = (decode_windows(model, windows, "en", settings, n) for n in (1, 2))

    def words(window):
        return [w.text.strip(" ,.").lower() for seg in window for w in seg.words]

    assert [words(w) for w in batched] == [words(w) for w in one]
    assert words(batched[1]) == words(batched[0]) and len(words(batched[0])) > 10
    assert all(1.0 <= w.start <= w.end <= later.size / 16000 for seg in batched[1] for w in seg.words)
