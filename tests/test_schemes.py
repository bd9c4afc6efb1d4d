"""The weighted multi-task loss at hand-computed values, the heads' depth, and the three training schemes
as the trainer runs them (kebr_model.schemes through kebr_model.training.train.Trainer, tiny BERT, synthetic
shards): each phase's loss weights, joint trains every head and single only the main one, a clip without
a modality does not train its head. Two-step's step two freezing the encoder and the unimodal heads is
tests/test_systems.py::test_two_step_freezes_the_encoder_and_unimodal_heads_in_step_two; the refusals
(joint or two-step without unimodal heads, two-step without a step two) are its
test_impossible_combinations_are_refused_up_front."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kebr_model import schemes
from kebr_model.config import TrainConfig
from kebr_model.heads import mlp, task_labels, weighted_loss


def t(*v):
    return torch.tensor(v, dtype=torch.float32)


# --- loss and heads ------------------------------------------------------------------------------

def test_weighted_loss_by_hand():
    preds = {"main": t(1.0, 2.0), "text": t(1.0, 1.0), "audio": t(0.0, 4.0)}
    label = t(0.0, 0.0)
    # L1: main (1 + 2) / 2 = 1.5; text vs the duplicated main label (1 + 1) / 2 = 1; audio (0 + 4) / 2 = 2
    total, parts = weighted_loss(preds, label, {"main": 1.0, "text": 0.5, "audio": 0.25})
    assert parts["main"].item() == 1.5 and parts["text"].item() == 1.0 and parts["audio"].item() == 2.0
    assert total.item() == pytest.approx(1.5 + 0.5 * 1.0 + 0.25 * 2.0)
    # per-modality labels replace the duplicated main label: text target [1, 3] -> (0 + 2) / 2 = 1 ... [1, 1] -> 0
    total, parts = weighted_loss(preds, label, {"main": 1.0, "text": 0.5}, labels={"text": t(1.0, 1.0)})
    assert parts["text"].item() == 0.0 and total.item() == 1.5
    # MSE: main (1 + 4) / 2 = 2.5
    assert weighted_loss(preds, label, {"main": 1.0}, loss="mse")[0].item() == 2.5
    # α = 0 and tasks without a prediction add nothing
    total, parts = weighted_loss(preds, label, {"main": 1.0, "text": 0.0, "visual": 1.0})
    assert set(parts) == {"main"} and total.item() == 1.5


def test_weighted_loss_valid_mask_and_errors():
    preds = {"main": t(1.0, 2.0), "audio": t(0.0, 4.0)}
    keep_first = {"audio": torch.tensor([True, False])}
    _, parts = weighted_loss(preds, t(0.0, 0.0), {"main": 1.0, "audio": 1.0}, valid=keep_first)
    assert parts["audio"].item() == 0.0
    _, parts = weighted_loss(preds, t(0.0, 0.0), {"audio": 1.0}, valid={"audio": torch.tensor([False, False])})
    assert parts["audio"].item() == 0.0
    with pytest.raises(ValueError, match="unknown loss"):
        weighted_loss(preds, t(0.0, 0.0), {"main": 1.0}, loss="huber")
    with pytest.raises(ValueError, match="unknown task"):
        weighted_loss(preds, t(0.0, 0.0), {"fused": 1.0})


def test_task_labels_duplicate_the_main_label():
    y, yt = t(1.0), t(2.0)
    out = task_labels(["main", "text", "audio"], y, {"text": yt, "main": t(9.0)})
    assert out["main"] is y and out["text"] is yt and out["audio"] is y


def test_mlp_depth():
    assert sum(isinstance(m, nn.Linear) for m in mlp(4, 8, 3)) == 3  # MMML's three FC layers
    assert sum(isinstance(m, nn.Linear) for m in mlp(4, 8, 1)) == 1
    with pytest.raises(ValueError, match="at least one layer"):
        mlp(4, 8, 0)


def scheme(name: str, *overrides: str) -> schemes.Scheme:
    return TrainConfig.load([], ["task=finetune", "use_mcc=false", "alpha_text=0.3", "alpha_audio=0.5", "epochs=4",
                                 f"scheme={name}", *overrides]).make_scheme()


def test_phases_and_their_weights():
    a = {"main": 0.7, "text": 0.3, "audio": 0.5}
    two = scheme("two-step", "step_one_epochs=2")
    assert [two.phase(epoch) for epoch in range(4)] == ["one", "one", "two", "two"]
    assert two.weights("one", a) == {"main": 0.0, "text": 0.3, "audio": 0.5}
    assert two.weights("two", a) == {"main": 1.0}  # α_main weighs joint only
    assert (two.trains_mcc("one"), two.freezes("one"), two.selects("one")) == (False, False, False)
    assert (two.trains_mcc("two"), two.freezes("two"), two.selects("two")) == (True, True, True)
    joint, single = scheme("joint"), scheme("single")
    assert joint.phase(7) == "joint" and single.phase(0) == "single"
    assert joint.weights("joint", a) == a and single.weights("single", a) == {"main": 1.0}
    assert not any(s.freezes(s.phase(0)) for s in (joint, single))
    with pytest.raises(ValueError, match="unknown scheme"):
        schemes.get("twostep")


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    from shard_factory import make_shards

    return make_shards(tmp_path_factory.mktemp("schemes") / "f", n=10, shard_size=10, labelled=True, widths=(6, 10))


def trainer(shards, tiny_bert, tmp_path, name: str, *overrides: str):
    from kebr_model.training.train import Trainer

    cfg = TrainConfig.load([], ["task=finetune", f"encoder={tiny_bert}", "use_mcc=false", "layers=1", "batch_size=4",
                                "train_split=train", "lr_other=1e-2", "lr_encoder=1e-3", "checkpoint_every=0",
                                "alpha_text=0.5", "alpha_audio=0.5", "alpha_visual=0.5", f"scheme={name}", *overrides])
    return Trainer(cfg, shards, tmp_path / name)


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_joint_trains_every_head_and_single_only_the_main_one(shards, tiny_bert, tmp_path):
    joint = trainer(shards, tiny_bert, tmp_path, "joint")
    batch = next(iter(joint.batches("train", 0, shuffle=False)))
    enc0, heads0, main0 = snapshot(joint.model.encoder), snapshot(joint.model.modal_heads), \
        snapshot(joint.model.finetune_head)
    record = joint.step(batch)
    assert {"task_text", "task_audio", "task_visual"} <= set(record)
    assert not same(enc0, snapshot(joint.model.encoder)) and not same(main0, snapshot(joint.model.finetune_head))
    trained = snapshot(joint.model.modal_heads)
    assert not any(torch.equal(heads0[k], v) for k, v in trained.items() if k.endswith("weight"))
    single = trainer(shards, tiny_bert, tmp_path, "single")
    heads0, enc0 = snapshot(single.model.modal_heads), snapshot(single.model.encoder)
    record = single.step(batch)
    assert not any(k.startswith("task_") for k in record)
    assert same(heads0, snapshot(single.model.modal_heads)) and not same(enc0, snapshot(single.model.encoder))
    assert all(p.grad is None for p in single.model.modal_heads.parameters())


def test_a_clip_without_a_modality_does_not_train_its_head(shards, tiny_bert, tmp_path):
    t = trainer(shards, tiny_bert, tmp_path, "joint", "alpha_text=0", "alpha_audio=0", "alpha_visual=1")
    batch = next(iter(t.batches("train", 0, shuffle=False)))
    batch["visual_mask"] = torch.zeros_like(batch["visual_mask"])  # no clip has visual frames
    heads0 = snapshot(t.model.modal_heads["visual"])
    t.step(batch)
    assert same(heads0, snapshot(t.model.modal_heads["visual"]))
