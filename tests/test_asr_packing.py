"""Packed ASR windows (`asr.pack_s`): clips joined into one Whisper window, words handed back to their clips
by their times; silent and bad clips alone; the same transcripts and gates as clip by clip."""

import subprocess

import numpy as np
import pytest
import soundfile as sf
from helpers import demo_clip
from test_asr import FIXTURES, stage_rows, wer, words

from kebr_data import config
from kebr_data.asr_engines import ClipAudio, Packing, Transcript, engines
from kebr_data.asr_engines.packing import Heard, Said, plan_windows, split, token_bound, transcribe_packed
from kebr_data.errors import ClipError
from kebr_data.stages.asr import AsrStage


@pytest.fixture(scope="module")
def speech(ffmpeg):
    """Speech at 16 kHz: the espeak-ng fixtures (en, de, fr) and two English demo sentences (demo0, demo1)."""
    out = {lang: sf.read(FIXTURES / f"speech_{lang}.flac", dtype="float32")[0] for lang in ("en", "de", "fr")}
    for i in (0, 1):
        raw = subprocess.run([ffmpeg, "-loglevel", "error", "-i", str(demo_clip(i)), "-ac", "1", "-ar", "16000",
                              "-f", "s16le", "-"], capture_output=True, check=True).stdout
        out[f"demo{i}"] = np.frombuffer(raw, "<i2").astype(np.float32) / 32768
    return out


def test_windows_are_filled_in_order_and_a_long_clip_is_alone():
    assert plan_windows([4, 4, 4, 4, 4, 4, 4], 30, 1) == [[0, 1, 2, 3, 4, 5], [6]]
    assert plan_windows([8, 40, 8, 8, 8], 30, 1) == [[0], [1], [2, 3, 4]]


def test_words_go_to_the_clip_nearest_their_middle_with_times_relative_to_it():
    spans = [(0.0, 3.0), (4.0, 6.0), (7.0, 9.0)]  # clip 1 (4-6 s) is followed by a clip that says nothing
    words = [Heard(" I", 0.2, 0.4, 0.9), Heard(" love", 2.6, 3.3, 0.8),  # ends in the gap: middle in clip 0
             Heard(" it.", 3.0, 3.6, 0.5),  # drawn into the gap: middle 3.3 nearer clip 0
             Heard(" So", 3.6, 4.2, 0.7),  # middle 3.9 lies in the gap nearer clip 1
             Heard(" sad.", 5.5, 6.4, 0.6)]
    (a, b, c), bad = split([Said(words[:3]), Said(words[3:])], spans, "en", [None] * 3, False, "m", trust=-5.0)
    assert bad is None
    assert (a.text, b.text, c.text) == ("I love it.", "So sad.", "")
    assert [(w.word, w.start, w.end) for w in b.words] == [("So", 0.0, 0.2), ("sad.", 1.5, 2.0)]  # clamped to 0-2
    assert b.avg_logprob == pytest.approx((np.log(0.7) + np.log(0.6)) / 2)
    assert (c.words, c.avg_logprob) == ([], None)
    assert split([Said(words[2:4])], spans, "en", [None] * 3, False, "m", -5.0)[1] == 0  # a segment across a gap
    assert split([Said([w]) for w in words], spans[:1] + [(3.1, 9.0)], "en", [None] * 2, False, "m",
                 trust=-0.4)[1] == 1  # "So sad.": mean log-probability -0.43


def test_a_doubtful_clip_is_redone_alone_and_the_clips_after_it_repacked(tmp_path, speech):
    """French and German to an English-only model after English: packed, tiny.en's doubtful decoding of a
    foreign clip can run on into the next clip (a hallucination loop was seen carried from French into
    Spanish). The English clip before it stands; the French clip is redone alone, the German one after it goes
    back to the queue, where it is alone (no window of one clip): both rows are the unpacked ones (language 'und',
    skipped)."""
    clips = [(speech[lang], 16000, {}) for lang in ("en", "fr", "de")]
    packed, alone = stage_rows(tmp_path, clips, pack_s=30.0), stage_rows(tmp_path, clips)
    assert packed[1:] == alone[1:] and [r["error"] for r in packed] == [None, "language", "language"]
    assert words(packed[0]["text"]) == words(alone[0]["text"]) and packed[0]["avg_logprob"] != alone[0]["avg_logprob"]


def test_packed_rows_match_clip_by_clip_with_a_silent_clip_between(tmp_path, speech):
    clips = [(speech["demo0"], 16000, {}), (np.zeros(48000, np.float32), 16000, {}), (speech["en"], 16000, {}),
             (speech["demo1"], 16000, {})]
    alone = stage_rows(tmp_path, clips)
    packed = stage_rows(tmp_path, clips, pack_s=30.0)
    assert [(r["status"], r["error"], r["language"]) for r in packed] == \
        [("ok", None, "en"), ("skipped", "silence", None), ("ok", None, "en"), ("ok", None, "en")]
    for p, a, (y, sr, _) in zip(packed, alone, clips, strict=True):
        assert [w["word"] for w in p["words"] or []] == (p["text"] or "").split()
        assert all(0 <= w["start"] <= w["end"] <= len(y) / sr + 1e-6 for w in p["words"] or [])  # float32
    assert [words(p["text"]) for p in packed[:3:2]] == [words(a["text"]) for a in alone[:3:2]]
    refs = ["I love this wonderful movie, it made me so happy.", "It was a complete disaster and I hated every minute "
            "of it.", "This is a terrible and awful day, I feel sad."]  # demo1: "terrible end of all day" alone

    def mean_wer(rows):
        return sum(wer(ref, r["text"]) for ref, r in zip(refs, rows[0:1] + rows[2:], strict=True)) / 3

    assert mean_wer(packed) <= mean_wer(alone) + 0.05
    # a clip's confidence is its mean word log-probability (Whisper gives one average per window)
    assert all(-0.7 < p["avg_logprob"] < 0 and p["avg_logprob"] != a["avg_logprob"]
               for p, a in zip(packed, alone, strict=True) if p["status"] == "ok")


def test_a_clips_transcript_does_not_depend_on_its_neighbour(speech):
    """Trusting every window (pack_min_logprob = -5), a clip after German speech reads as it does alone."""
    engine = engines()["faster-whisper"]
    stage = AsrStage(config.load(overrides=[])["asr"])
    clip = ClipAudio({}, speech["en"], 16000)
    de, after = engine.transcribe_pack([ClipAudio({}, speech["de"], 16000), clip], stage.engine_settings,
                                       Packing(30, 1, -5.0))
    assert after.text == engine.transcribe(clip, stage.engine_settings).text
    assert "disaster" in after.text and "disaster" not in de.text


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


def test_a_packing_stage_sends_clips_in_bounded_batches_and_a_bad_clip_fails_alone(monkeypatch, tmp_path):
    """Through an engine without its own packing (the interface's default: one by one), with the engine called
    after every decodable clip (`pack_windows` = 0 bounds what a shard holds): the rows are the unpacked ones,
    in plan order, and a clip the engine fails on is the only failed row."""
    from test_asr_engines import Toy

    class Picky(Toy):
        name = "picky"
        calls: list[int] = []

        def transcribe_pack(self, clips, settings, packing):
            self.calls.append(len(clips))
            return super().transcribe_pack(clips, settings, packing)

        def transcribe(self, clip, settings):
            if len(clip.samples) == 4 * 8000:
                raise ClipError("decode_failed", "the 4-s clip")
            return super().transcribe(clip, settings)

    monkeypatch.setitem(engines(), "picky", Picky())
    tone = np.sin(np.arange(16000) / 16000 * 2 * np.pi * 220).astype(np.float32) * 0.3
    clips = [(np.tile(tone, n), 16000, {}) for n in (3, 4, 2)] + [(np.zeros(16000, np.float32), 16000, {})]
    alone = stage_rows(tmp_path, clips, engine="picky")
    monkeypatch.setattr(AsrStage, "pack_windows", 0)
    packed = stage_rows(tmp_path, clips, engine="picky", pack_s=30.0)
    assert packed == alone and Picky.calls == [1, 1, 1]
    assert [(r["status"], r["error"]) for r in packed] == [("ok", None), ("failed", "decode_failed"), ("ok", None),
                                                           ("skipped", "silence")]


class Script:
    """A scripted engine for `transcribe_packed`: clip k is 3 s of the constant (k + 1) / 100, heard as one word
    "wk" (probability 0.1 for the clips in `doubtful`, none for those in `mute`); it records the windows decoded
    (their clips) and the clips done alone (with the detected language and token bound they were given)."""

    def __init__(self, n, doubtful=(), mute=()):
        self.clips = [ClipAudio({}, np.full(48000, (k + 1) / 100, np.float32), 16000) for k in range(n)]
        self.doubtful, self.mute = set(doubtful), set(mute)
        self.windows, self.alone = [], []

    def decode(self, windows, language):
        out = []
        for y in windows:
            starts = np.flatnonzero(np.diff(np.concatenate([[0.0], y])) > 0)  # each clip's first sample
            ids = [round(float(y[s]) * 100) - 1 for s in starts]
            self.windows.append(ids)
            out.append([Said([Heard(f" w{k}", s / 16000 + 1, s / 16000 + 2, 0.1 if k in self.doubtful else 0.9)])
                        for k, s in zip(ids, starts, strict=True) if k not in self.mute])
        return out

    def transcribe(self, clip, detected, bound):
        k = round(float(clip.samples[0]) * 100) - 1
        self.alone.append((k, detected, bound))
        return Transcript(f"alone {k}", detected[0], detected[1], -2.0 if k in self.doubtful else -0.1)

    def run(self, batch=1, languages=None):
        langs = languages or ["en"] * len(self.clips)
        return transcribe_packed(self.clips, Packing(30, 1, -0.5),
                                 lambda c: (langs[round(float(c.samples[0]) * 100) - 1], 0.9), self.decode,
                                 self.transcribe, True, "m", batch=batch)


def test_the_clips_after_a_doubtful_one_fill_the_next_window_with_the_following_clips():
    """Seven 3-s clips fill a 30-s window. Clip 1 is doubtful: clip 0 stands, clip 1 is redone alone and clips
    2-6 go back to the queue, packed with clip 7 into one window (not a half-empty window of their own and clip 7
    in another)."""
    s = Script(8, doubtful={1})
    out = s.run()
    assert s.windows == [[0, 1, 2, 3, 4, 5, 6], [2, 3, 4, 5, 6, 7]]
    assert [k for k, _, _ in s.alone] == [1]
    assert [t.text for t in out] == ["w0", "alone 1"] + [f"w{k}" for k in range(2, 8)]


def test_a_run_of_doubtful_clips_that_opens_a_window_is_done_alone_then_packing_resumes():
    """Clip 7 opens the second window and is doubtful (the window's decode is lost): the clips after it are done
    alone while they are doubtful (8), then one more that is not (9), then the rest are packed again."""
    s = Script(13, doubtful={7, 8})
    out = s.run()
    assert s.windows == [list(range(7)), list(range(7, 13)), [10, 11, 12]]
    assert [k for k, _, _ in s.alone] == [7, 8, 9]
    assert [t.text for t in out[7:]] == ["alone 7", "alone 8", "alone 9", "w10", "w11", "w12"]


def test_the_first_doubtful_clip_is_the_one_redone_even_when_a_later_segment_spans_two_clips():
    spans = [(0.0, 3.0), (4.0, 7.0), (8.0, 11.0)]
    low = Said([Heard(" eh", 1.0, 2.0, 0.1)])  # clip 0: mean log-probability -2.3
    across = Said([Heard(" a", 5.0, 6.0, 0.9), Heard(" b", 9.0, 10.0, 0.9)])  # one segment over clips 1 and 2
    assert split([low, across], spans, "en", [None] * 3, False, "m", trust=-0.5)[1] == 0


def test_a_clip_the_window_skips_is_heard_alone_and_a_clip_alone_in_a_window_is_not_packed():
    """A clip with no words in a trusted window is transcribed alone (as unpacked: Whisper can pass over a
    foreign clip in a window); a window that would hold one clip (here the last, and the one German clip) is no
    window. Clips done alone get their detected language and a token bound from their length."""
    s = Script(9, mute={3})
    out = s.run(languages=["en"] * 4 + ["de"] + ["en"] * 4)
    assert s.windows == [[0, 1, 2, 3, 5, 6, 7]]
    assert [(k, d) for k, d, _ in s.alone] == [(3, ("en", 0.9)), (8, ("en", 0.9)), (4, ("de", 0.9))]
    assert {b for _, _, b in s.alone} == {token_bound(3.0)} and token_bound(3.0) == 50
    assert (out[3].text, out[4].language, out[8].text) == ("alone 3", "de", "alone 8")


def test_windows_are_decoded_batch_by_batch_and_a_doubtful_clips_followers_rejoin_the_queue():
    s = Script(20, doubtful={2})
    s.run(batch=2)
    assert s.windows == [list(range(7)), list(range(7, 14)), list(range(3, 7)) + [14, 15, 16], [17, 18, 19]]


def test_a_packed_clip_has_one_ok_log_line(tmp_path, speech, caplog):
    clips = [(speech["demo0"], 16000, {}), (speech["en"], 16000, {})]
    with caplog.at_level("INFO", logger="kebr_data.stage"):
        rows = stage_rows(tmp_path, clips, pack_s=30.0)
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert [m.split(" (")[0] for m in caplog.messages if m.startswith("ok ")] == ["ok c0", "ok c1"]


def test_a_clip_redone_alone_decodes_at_most_its_token_bound(speech):
    """The bound stops a hallucination loop (224 tokens in a 4-s Spanish clip to tiny.en, 62 allowed); speech
    stays under it (3 to 6 tokens a second)."""
    engine = engines()["faster-whisper"]
    settings = AsrStage(config.load(overrides=[])["asr"]).engine_settings
    clip = ClipAudio({}, speech["en"], 16000)
    free = engine.transcribe(clip, settings)
    assert engine.transcribe(clip, settings, None, token_bound(len(speech["en"]) / 16000)).text == free.text
    assert len(engine.transcribe(clip, settings, None, 4).words) < len(free.words) // 2
