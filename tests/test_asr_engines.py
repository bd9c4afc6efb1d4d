"""The ASR engine interface: an engine written in this test module and added with one registry
line is checked, hashed, resourced and run by the asr stage, whose language gate applies to it
like to the built-in engines; an unknown engine name is refused with a suggestion."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from test_asr import stage_rows

from kebr_data import config
from kebr_data.errors import ConfigError
from kebr_data.asr_engines import ENGINES, AsrEngine, ClipAudio, Transcript, Word
from kebr_data.schema import ASR
from kebr_data.stages.asr import AsrStage


class Toy(AsrEngine):
    """Hears one word per second of audio; says the speaker's language is the plan row's `speaker_id`
    (probability 0.8)."""

    name = "toy"
    sample_rate = 8000
    local_model = True
    identifies_language = True

    def check(self, cfg: dict[str, Any]) -> list[str]:
        return [] if cfg["model"] != "missing" else ["the toy model is missing"]

    def model_identity(self, cfg: dict[str, Any]) -> str:
        return f"toy:{cfg['model']}"

    def transcribe(self, clip: ClipAudio, cfg: dict[str, Any]) -> Transcript:
        seconds = int(round(len(clip.samples) / clip.sample_rate))
        words = [Word(f"w{i}", float(i), i + 1.0, 0.5) for i in range(seconds)]
        return Transcript(" ".join(w.word for w in words), clip.plan.get("speaker_id") or "en", 0.8, -0.1, words,
                          model=f"toy-{clip.sample_rate}")


@pytest.fixture()
def toy(monkeypatch):
    monkeypatch.setitem(ENGINES, "toy", Toy())  # the one registry line


def test_a_registered_engine_is_checked_hashed_and_resourced_by_the_stage(toy):
    cfg = config.load(overrides=["asr.engine='toy'", "asr.model='a'", "asr.device='cuda'"])["asr"]
    stage = AsrStage(cfg)
    assert stage.check() == [] and stage.upstream == ("plan", "audio")
    assert (stage.resources.cpus, stage.resources.gpus) == (1.0, 1.0)  # a local model on cuda takes a GPU
    assert AsrStage({**cfg, "model": "missing"}).check() == ["the toy model is missing"]
    assert AsrStage({**cfg, "model": "b"}).config_hash() != stage.config_hash()  # the identity is hashed
    assert AsrStage({**cfg, "device": "cpu"}).config_hash() == stage.config_hash()  # device is runtime-only


def test_a_registered_engine_runs_through_the_stage_and_its_language_gate(toy, tmp_path):
    second = np.sin(np.arange(16000) / 16000 * 2 * np.pi * 220).astype(np.float32) * 0.3
    rows = stage_rows(tmp_path, [(np.tile(second, 3), 16000, {}), (np.tile(second, 2), 16000, {"speaker_id": "de"}),
                                 (np.zeros(16000, np.float32), 16000, {})], engine="toy")
    assert (rows[0]["status"], rows[0]["text"], rows[0]["engine"], rows[0]["model"]) == ("ok", "w0 w1 w2", "toy",
                                                                                       "toy-8000")  # resampled
    assert [w["prob"] for w in rows[0]["words"]] == [0.5, 0.5, 0.5] and rows[0]["language_prob"] == pytest.approx(0.8)
    assert (rows[1]["status"], rows[1]["error"], rows[1]["message"]) == ("skipped", "language",
                                                                         "detected de (p=0.80); kept: en")
    assert (rows[2]["status"], rows[2]["error"]) == ("skipped", "silence")  # decided before the engine runs
    (uncertain,) = stage_rows(tmp_path, [(second, 16000, {})], engine="toy", min_language_prob=0.9)
    assert (uncertain["status"], uncertain["error"]) == ("skipped", "language")
    assert "p=0.80 < asr.min_language_prob 0.9" in uncertain["message"]
    stats = AsrStage(config.load()["asr"]).shard_stats(pa.Table.from_pylist(rows, schema=ASR))
    assert stats["languages"] == {"en": 1, "de": 1} and stats["language_prob_hist"]["0.8"] == 2


def test_an_unknown_engine_is_refused_with_a_suggestion():
    with pytest.raises(ConfigError) as err:
        config.load(overrides=["asr.engine='faster-whisperr'"])
    problem = str(err.value)
    assert problem.startswith("config key asr.engine must be one of faster-whisper, openai-whisper, google, given, "
                              "got 'faster-whisperr'") and problem.endswith("(did you mean faster-whisper?)")
    (problem,) = AsrStage({**config.load()["asr"], "engine": "faster-whisperr"}).check()
    assert problem.endswith("(did you mean faster-whisper?)")
