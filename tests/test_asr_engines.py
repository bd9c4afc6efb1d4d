"""The ASR engine interface: an engine written in this test module, with an option of its own, and added
with one registry line is checked, hashed, resourced and run by the asr stage, whose language gate
applies to it like to the built-in engines; through an entry point it runs in `kebr-data extract` with
its option set on the command line; an unknown engine name is refused with a suggestion."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import ROOT, run_cli, write_wav
from test_asr import stage_rows
from test_plugins import plugin_site

from kebr_data import config
from kebr_data.asr_engines import ENGINES, ClipAudio, LocalModelEngine, LocalModelSettings, Transcript, Word
from kebr_data.errors import ConfigError
from kebr_data.schema import ASR
from kebr_data.settings import setting
from kebr_data.stages.asr import AsrStage


@dataclass
class ToySettings(LocalModelSettings):
    """The toy engine: asr.model and asr.device, and an option of its own."""

    toy_word: str = setting("w", "the word the toy engine hears, numbered, once per second of audio")


class Toy(LocalModelEngine):
    """Hears `asr.toy_word` once per second of audio; says the speaker's language is the plan row's
    `speaker_id` (probability 0.8)."""

    name = "toy"
    Settings = ToySettings
    sample_rate = 8000
    identifies_language = True

    def check(self, settings: ToySettings) -> list[str]:
        return [] if settings.model != "missing" else ["the toy model is missing"]

    def model_identity(self, settings: ToySettings) -> str:
        return f"toy:{settings.model}"

    def transcribe(self, clip: ClipAudio, settings: ToySettings) -> Transcript:
        seconds = int(round(len(clip.samples) / clip.sample_rate))
        words = [Word(f"{settings.toy_word}{i}", float(i), i + 1.0, 0.5) for i in range(seconds)]
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
    assert AsrStage({**cfg, "toy_word": "x"}).config_hash() != stage.config_hash()  # its option is hashed
    faster = config.load()["asr"]
    assert "toy_word" in faster and AsrStage(faster).config_hash() == AsrStage(  # but only when it runs
        {k: v for k, v in faster.items() if k != "toy_word"}).config_hash()


def test_an_engine_option_declared_differently_by_two_engines_is_refused(toy, monkeypatch):
    @dataclass
    class Clash:
        toy_word: int = setting(1, "a clash")

    class Other(Toy):
        name = "other"
        Settings = Clash

    monkeypatch.setitem(ENGINES, "other", Other())
    with pytest.raises(ConfigError, match="asr.toy_word is declared differently by engine toy and engine other: rename the plugin"):
        config.load()


def test_a_plugin_engine_runs_through_extract_with_its_option(tmp_path):
    """One file (this module) and one entry-point line: `kebr-data extract` runs it in its workers, and
    `--set asr.toy_word=...` reaches it."""
    site = plugin_site(tmp_path / "site", "kebr-toy-asr", "kebr_toy_asr_unused", "", "toy = test_asr_engines:Toy")
    (site / "kebr-toy-asr-0.1.dist-info" / "entry_points.txt").write_text(
        "[kebr_data.asr_engines]\ntoy = test_asr_engines:Toy\n")
    src = tmp_path / "src"
    src.mkdir()
    write_wav(src / "a.wav", 2.0)
    write_wav(src / "b.wav", 1.0)
    paths = [str(site), str(ROOT / "tests"), str(ROOT), os.environ.get("PYTHONPATH", "")]
    env = {"PYTHONPATH": os.pathsep.join(paths)}
    out = tmp_path / "out"
    ran = run_cli("extract", "--src", str(src), "--out", str(out), "--stages", "index,audio,asr", "--workers", "1",
                  "--set", "asr.engine=toy", "--set", "asr.toy_word=bonjour", env=env)
    assert ran.returncode == 0, ran.stderr
    rows = sorted(pq.read_table(out / "asr").to_pylist(), key=lambda r: r["clip_id"])
    assert [(r["status"], r["engine"], r["text"]) for r in rows] == [("ok", "toy", "bonjour0 bonjour1"),
                                                                     ("ok", "toy", "bonjour0")]


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
