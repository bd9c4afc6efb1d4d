"""Stages and ASR engines receive typed settings objects, never dicts, and that changed no config hash: the
hashes of every stage under the shipped pipelines/*.toml data configs (and the ASR engines and mask sources
they do not select) are the ones recorded from the code before, so no existing output folder turns stale."""

from __future__ import annotations

import ast
import dataclasses

import pytest
from helpers import ROOT

from kebr_data import config, stages

#: recorded with the dict-based stages (main at d55d48e); mask's text_source resolved to asr as a run does. The MMSA-layout
#: configs (mosi, mosei, sims, sims2) have read their given transcripts since: their asr hash is the recorded
#: `asr.engine=given` one
#: every stage's hash under the demo config; each shipped data config has these but where it says otherwise
DEFAULTS = {"acoustic": "118f54489b209a5f", "asr": "0e848364e8c73a0f", "audio": "6d87b4230f26e9fb",
            "faces": "1a82c03e92c3e43a", "mask": "3ed007ef46593e4b", "melspec": "4a68762b29250073",
            "opensmile": "ba2fbda72274753e", "ssl_audio": "d42c7514e3ca2194", "video_encoder": "8b64984bafe1f026",
            "visual": "67aa9a881881343e"}
GIVEN_ASR = {"asr": "5e7a91c536169087"}
VOXCELEB_AUDIO = {"audio": "d1071611721189b1"}
RECORDED = {
    "asr.engine=given": GIVEN_ASR,
    "asr.engine=google": {'asr': '37f438c90e412cf5'},
    "demo.toml": DEFAULTS,
    "demo_mmsa.toml": DEFAULTS,
    "mask.text_source=given": {'mask': '7599e2a0fbf2117f'},
    "mosei.toml": {**DEFAULTS, **GIVEN_ASR},
    "mosi.toml": {**DEFAULTS, **GIVEN_ASR},
    "sims.toml": {**DEFAULTS, **GIVEN_ASR},
    "sims2.toml": {**DEFAULTS, **GIVEN_ASR},
    "voxceleb1.toml": {**DEFAULTS, **VOXCELEB_AUDIO},
    "voxceleb2.toml": {**DEFAULTS, **VOXCELEB_AUDIO},
}


def hashes(files: list, overrides: list[str], names) -> dict[str, str]:
    cfg = config.load(files, overrides=overrides)
    return {name: stages.make_stage(name, cfg).config_hash() for name in names}


@pytest.mark.parametrize("case", sorted(RECORDED))
def test_config_hashes_are_unchanged(case):
    want = RECORDED[case]
    if case.endswith(".toml"):
        got = hashes([ROOT / "pipelines" / case], ["mask.text_source='asr'"], want)
    else:
        key, _, value = case.partition("=")
        got = hashes([], [f"{key}='{value}'"], want)
    assert got == want


def test_every_data_pipeline_is_recorded():
    shipped = {p.name for p in (ROOT / "pipelines").glob("*.toml") if not p.name.startswith(("train_", "sweep_"))}
    assert shipped == {k for k in RECORDED if k.endswith(".toml")}


def test_runtime_keys_stay_out_of_the_hash():
    base = hashes([], [], ["asr", "visual", "audio"])
    assert hashes([], ["asr.device='cuda'", "asr.batch_size=2", "asr.google_endpoint='localhost:1'",
                       "visual.batch_clips=3", "audio.timeout_s=5"], base) == base


def test_each_stage_receives_its_settings_object():
    cfg = config.load(overrides=["mask.text_source='given'"])
    for name, cls in stages.registry().items():
        stage = stages.make_stage(name, cfg)
        assert isinstance(stage.settings, cls.Settings), name
        assert dataclasses.asdict(stage.settings) == cfg[name], name
    asr = stages.make_stage("asr", cfg)
    assert type(asr.engine_settings).__name__ == "FasterWhisperSettings" and asr.engine_settings.beam_size == 5


@pytest.mark.parametrize("package", ["stages", "asr_engines"])
def test_no_stage_or_engine_reads_a_config_dict(package):
    """No `cfg[...]`, `.cfg` or `cfg: dict` left: the settings object is the only way in."""
    def reads_a_dict(node: ast.AST) -> bool:
        return (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == "cfg"
                or isinstance(node, ast.Attribute) and node.attr == "cfg"
                or isinstance(node, ast.arg) and node.arg == "cfg")

    found = [f"{path.name}:{node.lineno}" for path in sorted((ROOT / "kebr_data" / package).glob("*.py"))
             for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))) if reads_a_dict(node)]
    assert not found
