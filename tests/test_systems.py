"""The four papers' systems as configs of one trainer: every `pipelines/systems/*.toml` fine-tunes and
evaluates on a small labelled synthetic folder; the fusion choice reaches the model; unimodal heads
learn their own labels; two-step freezes the encoder in step two; impossible combinations are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from shard_factory import make_shards

from kebr_data.errors import ConfigError
from kebr_model import fusions
from kebr_model.config import TrainConfig
from kebr_model.train import Trainer

pytest.importorskip("transformers")
SYSTEMS = sorted((Path(__file__).resolve().parents[1] / "pipelines" / "systems").glob("*.toml"))
TINY = ["layers=1", "batch_size=4", "checkpoint_every=0", "dropout=0.0", "lr_other=1e-3", "lr_encoder=1e-4",
        "max_text_tokens=16", "max_audio_frames=8", "max_visual_frames=8", "patience=0"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_shards(tmp_path_factory.mktemp("sys") / "f", n=12, shard_size=12, labelled=True, sims=True)


def config(path: Path, *extra: str) -> TrainConfig:
    epochs = ["epochs=2"] if "twostep" in path.name else ["epochs=1"]
    return TrainConfig.load([path], [*TINY, *epochs, *extra])


def test_there_is_a_config_for_every_system():
    names = {p.stem for p in SYSTEMS}
    assert {"kebr", "skesl", "mmml"} <= names
    assert {f"boosting_{f}_{s}" for f in ("sf", "tfn", "mult") for s in ("single", "joint", "twostep")} <= names


@pytest.mark.slow
@pytest.mark.parametrize("path", SYSTEMS, ids=[p.stem for p in SYSTEMS])
def test_each_system_trains_and_evaluates(folder, tmp_path, path):
    cfg = config(path)
    trainer = Trainer(cfg, folder, tmp_path / "run")
    expected = {"kebr": "tcmf", "skesl": "tcmf", "mmml": "mmml"}.get(path.stem) or path.stem.split("_")[1]
    assert trainer.cfg.fusion == expected and type(trainer.model.fusion).__name__.lower() == expected
    state = trainer.fit()
    assert state["finished"] and state["step"] > 0
    test = trainer.evaluate("test")
    assert test["samples"] > 0 and all(torch.isfinite(torch.tensor(float(test[k]))) for k in ("loss", "task", "MAE"))


def test_skesl_has_one_query_map_per_non_verbal_modality(folder, tmp_path):
    t = Trainer(config(Path("pipelines/systems/skesl.toml")), folder, tmp_path / "run")
    assert isinstance(t.model.fusion, fusions.Fusion) and t.model.fusion.per_modality_query
    names = [n for n, _ in t.model.named_parameters()]
    assert any(".extra_queries.visual." in n for n in names) and any(".query.weight" in n for n in names)


def test_unimodal_heads_use_their_own_labels_where_the_plan_has_them(folder, tmp_path):
    t = Trainer(config(Path("pipelines/systems/boosting_sf_joint.toml")), folder, tmp_path / "run")
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


def test_two_step_freezes_the_encoder_and_unimodal_heads_in_step_two(folder, tmp_path):
    t = Trainer(config(Path("pipelines/systems/boosting_tfn_twostep.toml"), "freeze_encoder=false"),
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


def test_eval_reports_metrics_per_head(folder, tmp_path):
    import numpy as np

    from kebr_model.metrics import dataset_metrics

    t = Trainer(config(Path("pipelines/systems/boosting_sf_joint.toml")), folder, tmp_path / "run")
    rows: list = []
    result = t.evaluate("train", rows)
    assert {"MAE_text", "MAE_audio", "MAE_visual"} <= set(result) and "MAE" in result
    audio_labels = [y for batch in t.batches("train", 0, shuffle=False) for y in batch["label_audio"].tolist()]
    by_hand = dataset_metrics(t.metric_set, np.array([r["prediction_audio"] for r in rows]), np.array(audio_labels))
    assert result["MAE_audio"] == pytest.approx(by_hand["MAE"], rel=1e-6)
