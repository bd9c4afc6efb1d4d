import re
from pathlib import Path

import pytest

from kebr_data import config
from kebr_data.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_have_the_documented_values():
    cfg = config.defaults()
    assert cfg["audio"]["sample_rate"] == 22050
    assert cfg["index"]["shard_size"] == 1000
    assert cfg["run"]["max_failed"] == 0.05


def test_overrides_are_parsed_as_toml_values():
    cfg = config.load(overrides=["audio.sample_rate=16000", "run.max_failed=1", "audio.ffmpeg=/usr/bin/ffmpeg"])
    assert cfg["audio"]["sample_rate"] == 16000
    assert cfg["run"]["max_failed"] == 1.0 and isinstance(cfg["run"]["max_failed"], float)
    assert cfg["audio"]["ffmpeg"] == "/usr/bin/ffmpeg"


def test_unknown_key_suggests_the_right_one():
    with pytest.raises(ConfigError, match="did you mean audio.sample_rate"):
        config.load(overrides=["audio.sampel_rate=1"])


@pytest.mark.parametrize("override", ["audio.sample_rate=fast", "audio.sample_rate=1.5", "index.shard_size=true"])
def test_wrong_type_is_refused(override):
    with pytest.raises(ConfigError, match="expects int"):
        config.load(overrides=[override])


def test_set_needs_key_and_value():
    with pytest.raises(ConfigError, match="section.key=value"):
        config.load(overrides=["audio.sample_rate"])


def test_file_then_override_order(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("[audio]\nsample_rate = 8000\ntimeout_s = 5\n")
    cfg = config.load([f], ["audio.sample_rate=11025"])
    assert cfg["audio"]["sample_rate"] == 11025 and cfg["audio"]["timeout_s"] == 5.0


def test_bad_toml_file_names_the_file(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text("[audio\n")
    with pytest.raises(ConfigError, match="bad.toml is not valid TOML"):
        config.load([f])


@pytest.mark.parametrize("name", ["demo", "voxceleb1", "voxceleb2", "mosi", "mosei"])
def test_shipped_pipelines_load(name):
    cfg = config.load([ROOT / "pipelines" / f"{name}.toml"])
    assert cfg["index"]["shard_size"] >= 1


def test_content_hash_is_order_independent():
    assert config.content_hash({"a": 1, "b": [1, 2]}) == config.content_hash({"b": [1, 2], "a": 1})
    assert config.content_hash({"a": 1}) != config.content_hash({"a": 2})


@pytest.mark.parametrize("override,fix", [
    ('run.stages=["audio","os"]', "run.stages must be one of index, audio, asr"),
    ("run.executor='rey'", "run.executor must be one of local, ray, got 'rey' (did you mean ray?)"),
    ("asr.engine='given '", "asr.engine must be one of faster-whisper, openai-whisper, google, given, got 'given '"),
    ("mask.scale_from=[4,-4]", "mask.scale_from must be [low, high] with low < high, got [4.0, -4.0]"),
    ("ssl_audio.layer='final'", "ssl_audio.layer must be last, all or a hidden-state index such as '-1', got 'final'"),
    ("ssl_audio.chunk_overlap_s=20", "ssl_audio.chunk_overlap_s (20) must be less than half of ssl_audio.max_chunk_s"),
])
def test_values_a_type_cannot_check_are_checked_when_set(override, fix):
    with pytest.raises(ConfigError, match=re.escape(fix)):
        config.load(overrides=[override])


def test_a_bad_setting_of_a_stage_not_run_is_refused_before_it_is_saved(tmp_path):
    """`extract --stages audio --set run.stages=[...,"os"]` used to exit 0 and save the value the next run failed on."""
    from helpers import run_cli
    from shard_factory import make_shards

    out = make_shards(tmp_path / "f", n=2, shard_size=2)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    proc = run_cli("extract", "--out", str(out), "--stages", "index", "--set", 'run.stages=["audio","os"]')
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "run.stages must be one of" in proc.stderr and "got 'os'" in proc.stderr
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
