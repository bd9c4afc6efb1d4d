"""The trainer's structure after issue #26, checked on the source: one masked_mean, one TCMF module, each
fusion's, scheme's and head kind's options in its own settings dataclass (none in the run's global
TrainSettings), and the model side reading typed settings (no `getattr(cfg, key, default)`)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from kebr_model import fusions, heads, schemes
from kebr_model.config import TrainSettings, components

ROOT = Path(__file__).resolve().parents[1]
#: kebr_model's CLI is being reworked on its own branch (issue #26's reader half): it is checked there
ELSEWHERE = {"cli.py"}


def sources(package: str) -> dict[Path, str]:
    return {p: p.read_text() for p in (ROOT / package).rglob("*.py")}


def test_one_masked_mean_in_the_project():
    found = [p.relative_to(ROOT) for package in ("kebr_model", "kebr_data") for p, text in sources(package).items()
             if re.search(r"^def masked_mean\(", text, re.M)]
    assert found == [Path("kebr_model/fusions/base.py")]


def test_one_tcmf_module():
    assert not (ROOT / "kebr_model/tcmf.py").exists()
    assert fusions.get("tcmf").__module__ == "kebr_model.fusions.tcmf"
    assert not any("zoo" in text for text in sources("kebr_model").values())


def test_component_options_live_in_their_own_settings():
    own = {f.name for f in dataclasses.fields(TrainSettings)}
    for key, settings in components().items():
        assert not own & {f.name for f in dataclasses.fields(settings)}, key
    assert {"fusion:tcmf", "fusion:mult", "scheme:two-step", "head:mlp"} <= set(components())
    assert {f.name for f in dataclasses.fields(fusions.get("mult").Settings)} == {"mult_d", "mult_layers"}
    assert schemes.names() == ("single", "joint", "two-step") and heads.names() == ("mlp",)


def test_the_model_side_reads_typed_settings():
    untyped = [f"{p.relative_to(ROOT)}:{text[:m.start()].count(chr(10)) + 1}"
               for p, text in sources("kebr_model").items() if p.name not in ELSEWHERE
               for m in re.finditer(r"getattr\(cfg\b", text)]
    assert untyped == []
