"""bench/asr_turbo_shape.py: decoder lengths forced exactly, and the per-clip arithmetic of its table."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from helpers import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import asr_turbo_shape as shape  # noqa: E402


def test_the_decoder_decodes_exactly_the_forced_number_of_tokens():
    """tiny.en on the speech fixture would stop on its own (end of text) or at half of max_length: both forced."""
    import numpy as np
    import soundfile as sf
    from faster_whisper import WhisperModel
    from faster_whisper.tokenizer import Tokenizer
    from faster_whisper.transcribe import get_ctranslate2_storage

    from kebr_data.asr_engines.models import ctranslate2_model

    model = WhisperModel(str(ctranslate2_model("tiny.en")), device="cpu", compute_type="int8", cpu_threads=1)
    tok = Tokenizer(model.hf_tokenizer, False, task="transcribe", language="en")
    speech, _ = sf.read(ROOT / "tests/fixtures/speech_en.flac", dtype="float32")
    mel = model.feature_extractor(np.resize(speech, 480000))[None, :, :3000]
    got = shape.measure(model, get_ctranslate2_storage(np.ascontiguousarray(mel)), [*tok.sot_sequence,
                        tok.no_timestamps], tok.eot, [12, 69])
    assert set(got) == {"encode", "decode 12", "align 12", "decode 69", "align 69"}
    assert all(v > 0 for v in got.values())


def test_a_rows_per_clip_figures_follow_from_the_passes():
    assert [shape.clips_a_window(c) for c in shape.CLIP_LENGTHS] == [6, 3]
    assert shape.token_counts() == [12, 23, 69, 72, 90]
    best = {"encode": 10.0, **{f"decode {n}": n / 10 for n in shape.token_counts()},
            **{f"align {n}": 0.0 for n in shape.token_counts()}}
    _, long = shape.rows("m", best)
    cells = [c.strip(" *×") for c in long.strip("|").split("|")]
    assert cells[:3] == ["m", "7.8 s (23 tokens)", "3"]
    one, packed = 10.0 + 2.3, (10.0 + 6.9) / 3
    assert float(cells[5]) == pytest.approx(one, abs=1e-3) and float(cells[6]) == pytest.approx(packed, abs=1e-3)
    assert float(cells[7]) == pytest.approx(one / packed, abs=0.01)
    assert float(cells[9]) == pytest.approx(one / 19.0, abs=1e-3)  # a 30-s window of speech: 10 + 9.0


def test_the_turbo_shaped_model_is_kept_in_the_user_s_cache_not_the_shared_temporary_folder(tmp_path, monkeypatch):
    """The model is built into and loaded from its folder: a predictable path in /tmp could be planted by another
    user (a link to one of ours, or a model of theirs), so the default is the toolkit's per-user cache."""
    monkeypatch.setenv("KEBR_CACHE_DIR", str(tmp_path / "cache"))
    assert shape.default_cache() == tmp_path / "cache" / "bench-turbo-shape"
    monkeypatch.delenv("KEBR_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert shape.default_cache() == tmp_path / "xdg" / "kebr" / "bench-turbo-shape"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", "/home/someone")
    assert shape.default_cache() == Path("/home/someone/.cache/kebr/bench-turbo-shape")
    assert shape.parser().parse_args([]).cache == Path("/home/someone/.cache/kebr/bench-turbo-shape")
