"""Adding a fusion, a training scheme or a head kind is one class (its own settings dataclass, whose keys
become `[train]` keys with their ranges checked where declared) plus one `register` line: each toy one
below, registered from this test module, trains through `kebr-train finetune` (click's CliRunner, in
process) on a small synthetic folder with a tiny BERT; an installed package's entry point registers one
too (a `kebr-train` subprocess). docs/extending/{fusion,scheme,head}.md point here."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from shard_factory import make_shards

from kebr_data.config import setting
from kebr_data.errors import ConfigError
from kebr_model import fusions, heads, schemes
from kebr_model.training import checkpoint
from kebr_model.cli import main
from kebr_model.config import sections
from kebr_model.fusions import Fusion, FusionOutput, masked_mean

pytest.importorskip("transformers")

TINY = ["batch_size=4", "max_steps=2", "checkpoint_every=0", "max_text_tokens=16", "max_audio_frames=8",
        "max_visual_frames=8", "lr_other=1e-2", "use_mcc=false", "valid_split=", "test_split="]


@dataclass
class ToyFusionSettings:
    toy_gain: float = setting(1.0, "toy_mean: scale of the concatenated clip vectors", min=0.0)


class ToyMean(Fusion):
    """The modalities' clip vectors concatenated, times a learned scale and the `toy_gain` setting."""

    name = "toy_mean"
    Settings = ToyFusionSettings

    def __init__(self, widths: dict[str, int], gain: float = 1.0) -> None:
        super().__init__(widths)
        self.gain = gain
        self.scale = nn.Parameter(torch.ones(()))
        self.out_dim = sum(self.widths.values())

    @classmethod
    def from_settings(cls, widths: dict[str, int], settings: ToyFusionSettings, dropout: float) -> "ToyMean":
        return cls(widths, settings.toy_gain)

    def forward(self, h: dict[str, torch.Tensor], mask: dict[str, torch.Tensor]) -> FusionOutput:
        xs, ms = self.inputs(h, mask)
        pooled = torch.cat([masked_mean(xs[m], ms[m]) for m in self.modalities], dim=-1) * self.scale * self.gain
        return FusionOutput(pooled, None, self.per_modality(h, mask))


@dataclass
class HalfSettings:
    half_weight: float = setting(0.5, "main_half: the main task's loss weight", min=0.0, max=1.0)


class MainHalf(schemes.Scheme):
    """The main task alone, its loss weighted by `half_weight`."""

    name = "main_half"
    Settings = HalfSettings

    def weights(self, phase: str, alphas: dict[str, float]) -> dict[str, float]:
        return {"main": self.settings.half_weight}


@dataclass
class LinearSettings:
    linear_bias: bool = setting(True, "linear heads: with a bias")


class LinearHead(heads.HeadKind):
    """Every head one Linear d_in -> 1."""

    name = "linear"
    Settings = LinearSettings

    def build(self, role: str, d_in: int) -> nn.Module:
        return nn.Linear(d_in, 1, bias=self.settings.linear_bias)


@pytest.fixture
def registered(monkeypatch):
    """The three toys registered for one test (the registries are restored afterwards)."""
    for registry in (fusions.REGISTRY, schemes.REGISTRY, heads.REGISTRY):
        monkeypatch.setattr(registry, "classes", dict(registry.all()))
    fusions.register(ToyMean)
    schemes.register(MainHalf)
    heads.register(LinearHead)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_shards(tmp_path_factory.mktemp("registries") / "f", n=10, shard_size=10, labelled=True, widths=(6, 10))


def finetune(folder: Path, out: Path, tiny_bert: str, *overrides: str):
    args = ["finetune", "--shards", str(folder), "--out", str(out)]
    for option in [f"encoder={tiny_bert}", *TINY, *overrides]:
        args += ["--set", option]
    return CliRunner().invoke(main, args)


def weights(run: Path) -> dict[str, torch.Tensor]:
    return checkpoint.load_weights(checkpoint.latest(run))


def test_a_registered_fusion_trains_through_the_cli_with_its_own_setting(registered, folder, tiny_bert, tmp_path):
    ran = finetune(folder, tmp_path / "run", tiny_bert, "fusion=toy_mean", "toy_gain=2")
    assert ran.exit_code == 0, ran.output[-2000:]
    saved = checkpoint.read_state(checkpoint.latest(tmp_path / "run"))["config"]
    assert (saved["fusion"], saved["toy_gain"]) == ("toy_mean", 2.0)
    assert float(weights(tmp_path / "run")["fusion.scale"]) != 1.0  # the fusion's parameter trained
    bad = finetune(folder, tmp_path / "bad", tiny_bert, "fusion=toy_mean", "toy_gain=-1")
    assert bad.exit_code == 2 and "toy_gain must be at least 0" in bad.output and "Traceback" not in bad.output


def test_a_registered_scheme_trains_through_the_cli(registered, folder, tiny_bert, tmp_path):
    ran = finetune(folder, tmp_path / "run", tiny_bert, "scheme=main_half", "half_weight=0.25")
    assert ran.exit_code == 0, ran.output[-2000:]
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if r["split"] == "train"]
    assert len(steps) == 2 and all(r["loss"] == pytest.approx(0.25 * r["task"], rel=1e-6) for r in steps)


def test_a_registered_head_kind_trains_through_the_cli(registered, folder, tiny_bert, tmp_path):
    ran = finetune(folder, tmp_path / "run", tiny_bert, "head=linear", "linear_bias=false")
    assert ran.exit_code == 0, ran.output[-2000:]
    found = weights(tmp_path / "run")
    assert found["finetune_head.weight"].shape == (1, 32) and "finetune_head.bias" not in found


def test_names_and_keys_are_not_taken_twice(registered):
    class Again(ToyMean):
        pass

    with pytest.raises(ConfigError, match="defined twice"):
        fusions.register(Again)

    class Clash(ToyMean):
        name = "toy_clash"
        Settings = LinearSettings  # a head kind's key: every component's keys are [train] keys

    fusions.register(Clash)
    with pytest.raises(ConfigError, match="linear_bias is already"):
        sections()


def test_an_installed_fusion_plugin_is_registered_and_a_broken_one_reported(tmp_path):
    """Real `kebr_model.fusions` entry points (a dist-info folder on PYTHONPATH, read by importlib.metadata in a
    `kebr-train defaults` subprocess): the toy fusion's key is listed; a plugin that cannot load is named once."""
    import os
    import subprocess
    import sys

    site = tmp_path / "site"
    site.mkdir()
    (site / "kebr_toy_fusion.py").write_text("\n".join([
        "from dataclasses import dataclass", "from kebr_data.config import setting", "from kebr_model.fusions.sf import SF",
        "@dataclass", "class Settings:", "    toy_gain: float = setting(1.0, 'toy_mean: scale', min=0.0)",
        "class ToyMean(SF):", "    name = 'toy_mean'", "    Settings = Settings", ""]))
    (site / "kebr_broken_fusion.py").write_text("raise ImportError('needs libfoo')\n")
    info = site / "kebr_toy-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: kebr-toy\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[kebr_model.fusions]\ntoy_mean = kebr_toy_fusion:ToyMean\n"
                                           "broken = kebr_broken_fusion:Nothing\n")
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(site), str(Path(__file__).parents[1])])}
    done = subprocess.run([sys.executable, "-m", "kebr_model.cli", "defaults"], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "toy_gain = 1.0  # toy_mean: scale" in done.stdout
    assert done.stderr.count("cannot be loaded") == 1 and "needs libfoo" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
