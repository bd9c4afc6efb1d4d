"""The four papers' systems as configs of one trainer: all twelve `pipelines/systems/*.toml` fine-tune,
evaluate and appear in one `kebr-train sweep` table on a small labelled synthetic folder; the fusion
choice reaches the model; unimodal heads learn their own labels; two-step freezes the encoder in step
two; impossible combinations are refused. A tiny random BERT stands in for MiniLM (conftest.py)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from shard_factory import make_shards

from kebr_data.errors import ConfigError
from kebr_model import checkpoint, fusions
from kebr_model.cli import main
from kebr_model.config import TrainConfig
from kebr_model.train import Trainer

pytest.importorskip("transformers")
ROOT = Path(__file__).resolve().parents[1]
# listed, not globbed, so the table's rows are fixed; the first test checks the list against the folder
SYSTEMS = ["kebr", "skesl",
           *(f"boosting_{f}_{s}" for f in ("sf", "tfn", "mult") for s in ("single", "joint", "twostep")), "mmml"]
TINY = {"layers": 1, "batch_size": 16, "checkpoint_every": 0, "dropout": 0.0, "lr_other": 1e-3, "lr_encoder": 1e-4,
        "max_text_tokens": 16, "max_audio_frames": 8, "max_visual_frames": 8, "patience": 0}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_shards(tmp_path_factory.mktemp("sys") / "f", n=15, shard_size=15, labelled=True, sims=True)


@pytest.fixture(scope="module")
def encoder(tiny_bert) -> Path:
    return Path(tiny_bert)


def config(path: Path, encoder: Path, *extra: str) -> TrainConfig:
    epochs = ["epochs=2"] if "twostep" in path.name else ["epochs=1"]
    options = [*(f"{k}={v}" for k, v in TINY.items()), f"encoder={json.dumps(str(encoder))}", *epochs, *extra]
    return TrainConfig.load([ROOT / path], options)


def test_there_is_a_config_for_every_system_and_every_config_is_tested():
    """A new file in pipelines/systems/ fails here until it joins SYSTEMS (and so the sweep test below)."""
    assert {p.stem for p in (ROOT / "pipelines" / "systems").glob("*.toml")} == set(SYSTEMS)


def test_all_twelve_systems_in_one_sweep_table_through_the_cli(folder, encoder, tmp_path, monkeypatch):
    """`kebr-train sweep` with `config` as the grid key over the twelve system files (1 seed, the
    configs' own epochs: 2 for two-step, else 1): one table row each, named by file stem, finished
    with finite metrics; each run's saved config has its system's fusion and scheme; the fusion
    reaches the model (sf, tfn, mult: three parameter counts); eval --tsne reads a zoo fusion's run."""
    monkeypatch.chdir(ROOT)  # config paths relative to the repository root, as the README's commands
    files = ", ".join(json.dumps(f"pipelines/systems/{s}.toml") for s in SYSTEMS)
    train = "\n".join(f"{k} = {json.dumps(v)}" for k, v in TINY.items())
    grid = tmp_path / "grid.toml"
    grid.write_text(f'[sweep]\nseeds = [1]\n[train]\nencoder = {json.dumps(str(encoder))}\n{train}\n'
                    f'[grid]\nconfig = [{files}]\n')
    out = tmp_path / "sweep"
    ran = CliRunner().invoke(main, ["sweep", "--config", str(grid), "--shards", str(folder), "--out", str(out)])
    assert ran.exit_code == 0, ran.output[-3000:]
    rows = list(csv.DictReader((out / "sweep.csv").open()))
    assert [r["point"] for r in rows] == [f"config={s}" for s in SYSTEMS]
    assert [r["config"] for r in rows] == [f"pipelines/systems/{s}.toml" for s in SYSTEMS]
    for row in rows:
        assert row["seeds"] == "1" and int(row["params"]) > 0 and int(row["flops_per_clip"]) > 0, row
        for metric in ("MAE", "Corr", "Acc2", "loss", "best_valid"):
            assert math.isfinite(float(row[f"{metric}_mean"])), (row["point"], metric)
    md = (out / "sweep.md").read_text()
    assert md.count("\n| config=") == 12 and "| config=boosting_mult_twostep | boosting_mult_twostep | 1/1 |" in md
    for name in SYSTEMS:
        run = out / f"config={name}" / "seed-1"
        result = json.loads((run / "sweep_result.json").read_text())
        saved = checkpoint.read_state(checkpoint.latest(run))
        fusion = {"kebr": "tcmf", "skesl": "tcmf", "mmml": "mmml"}.get(name) or name.split("_")[1]
        scheme = {"kebr": "single", "skesl": "single", "mmml": "joint"}.get(name) or name.split("_")[-1].replace(
            "twostep", "two-step")
        assert saved["config"]["fusion"] == fusion and saved["config"]["scheme"] == scheme, name
        assert saved["finished"] and result["step"] == saved["step"] > 0, name
        assert saved["epoch"] == (2 if scheme == "two-step" else 1), name
    params = {r["point"]: int(r["params"]) for r in rows}
    assert len({params[f"config=boosting_{f}_single"] for f in ("sf", "tfn", "mult")}) == 3
    assert params["config=kebr"] < params["config=skesl"]  # + W_Q^a, W_Q^v
    assert params["config=boosting_sf_single"] < params["config=boosting_sf_joint"]  # + three unimodal heads
    sf = out / "config=boosting_sf_single/seed-1"
    tsne = CliRunner().invoke(main, ["eval", "--shards", str(folder), "--run", str(sf), "--split", "train",
                                     "--tsne", str(tmp_path / "sf.png")])
    assert tsne.exit_code == 0, tsne.output
    assert Image.open(tmp_path / "sf.png").format == "PNG"


def test_skesl_has_one_query_map_per_non_verbal_modality(folder, encoder, tmp_path):
    t = Trainer(config(Path("pipelines/systems/skesl.toml"), encoder), folder, tmp_path / "run")
    assert isinstance(t.model.fusion, fusions.Fusion) and t.model.fusion.per_modality_query
    names = [n for n, _ in t.model.named_parameters()]
    assert any(".extra_queries.visual." in n for n in names) and any(".query.weight" in n for n in names)


def test_unimodal_heads_use_their_own_labels_where_the_plan_has_them(folder, encoder, tmp_path):
    t = Trainer(config(Path("pipelines/systems/boosting_sf_joint.toml"), encoder), folder, tmp_path / "run")
    batch = next(iter(t.batches("train", 0, shuffle=False)))
    assert not torch.equal(batch["label_audio"], batch["label"])  # the CH-SIMS-like folder has label_a
    with torch.no_grad():
        out = t.model(batch, "finetune")
        terms = t.loss(out, batch)
    assert set(out.modal) == {"text", "audio", "visual"}
    by_hand = float((out.modal["audio"] - batch["label_audio"]).abs().mean())
    assert float(terms["task_audio"]) == pytest.approx(by_hand, rel=1e-6)
    total = float(terms["task"]) + sum(float(terms[f"task_{m}"]) for m in ("text", "audio", "visual"))
    assert float(terms["loss"]) == pytest.approx(total, rel=1e-5)  # alpha = 1 each, no MCC


def test_two_step_freezes_the_encoder_and_unimodal_heads_in_step_two(folder, encoder, tmp_path):
    t = Trainer(config(Path("pipelines/systems/boosting_tfn_twostep.toml"), encoder, "freeze_encoder=false"),
                folder, tmp_path / "run")
    batches = list(t.batches("train", 0, shuffle=False))
    t.step(batches[0])  # step one: the encoder and the unimodal heads learn, the fusion gets no loss
    assert t.phase() == "one"
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in t.model.encoder.parameters())
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in t.model.finetune_head.parameters())
    t.state["epoch"] = 1
    assert t.phase() == "two"
    frozen = {n: p.detach().clone() for n, p in t.model.named_parameters()
              if n.startswith(("encoder.", "modal_heads."))}
    head = {n: p.detach().clone() for n, p in t.model.finetune_head.named_parameters()}
    for batch in batches:
        t.step(batch)
    now = dict(t.model.named_parameters())
    assert all(torch.equal(now[n], v) for n, v in frozen.items())
    assert all(now[n].grad is None for n in frozen)
    assert not t.model.encoder.training
    assert any(not torch.equal(p, head[n]) for n, p in t.model.finetune_head.named_parameters())


@pytest.mark.parametrize("overrides,match", [
    (["task=pretrain", "fusion=sf", "use_mcc=false"], "pre-training"),
    (["task=finetune", "fusion=tfn", "use_mcc=true"], "no fused sequence"),
    (["task=finetune", "fusion=mult", "use_mcc=true", "mcc_space=pooled"], "flatten"),
    (["task=finetune", "fusion=sf", "use_mcc=false", "scheme=joint"], "alpha_"),
    (["task=finetune", "fusion=sf", "use_mcc=false", "scheme=two-step", "alpha_text=1", "epochs=1"], "step_one"),
])
def test_impossible_combinations_are_refused_up_front(overrides, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig.load([], overrides)


def test_eval_reports_metrics_per_head(folder, encoder, tmp_path):
    import numpy as np

    from kebr_model.metrics import dataset_metrics

    t = Trainer(config(Path("pipelines/systems/boosting_sf_joint.toml"), encoder), folder, tmp_path / "run")
    rows: list = []
    result = t.evaluate("train", rows)
    assert {"MAE_text", "MAE_audio", "MAE_visual"} <= set(result) and "MAE" in result
    audio_labels = [y for batch in t.batches("train", 0, shuffle=False) for y in batch["label_audio"].tolist()]
    by_hand = dataset_metrics(t.metric_set, np.array([r["prediction_audio"] for r in rows]), np.array(audio_labels))
    assert result["MAE_audio"] == pytest.approx(by_hand["MAE"], rel=1e-6)
