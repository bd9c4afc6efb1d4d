"""Heads, the weighted multi-task loss at hand-computed values, and the three training schemes with
small GRU encoders standing in for the pre-trained ones (two-step: step 2 leaves them untouched)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kebr_model.fusions import make_fusion
from kebr_model.fusions.base import FusionOutput
from kebr_model.heads import Heads, mlp, task_labels, weighted_loss
from kebr_model.schemes import (MultimodalModel, phase, phase_weights, run_scheme, scheme_alphas, train_step_one,
                                train_step_two)

IN = {"text": 5, "audio": 4, "visual": 3}


D = {"text": 8, "audio": 6, "visual": 6}


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


def test_heads_shapes_and_mlp_depth():
    assert sum(isinstance(m, nn.Linear) for m in mlp(4, 8, 3)) == 3  # MMML's three FC layers
    assert sum(isinstance(m, nn.Linear) for m in mlp(4, 8, 1)) == 1
    heads = Heads(10, {"text": 8, "audio": 6}, ["text", "audio"], hidden=16)
    out = FusionOutput(torch.randn(3, 10), None, {"text": torch.randn(3, 8)})
    preds = heads(out)
    assert set(preds) == {"main", "text"} and all(p.shape == (3,) for p in preds.values())
    with pytest.raises(ValueError, match="no width"):
        Heads(10, {"text": 8}, ["visual"])


def test_scheme_alphas():
    a = {"main": 1.0, "text": 0.3}
    assert scheme_alphas("single", a) == {"main": 1.0}
    assert scheme_alphas("joint", a) == a
    assert scheme_alphas("two-step", a) == {"main": 1.0}
    with pytest.raises(ValueError, match="unknown scheme"):
        scheme_alphas("twostep", a)


def test_phases_and_their_weights_the_trainer_shares():
    assert [phase("two-step", epoch, 2) for epoch in range(4)] == ["one", "one", "two", "two"]
    assert phase("joint", 7, 1) == "joint" and phase("single", 0, 1) == "single"
    a = {"main": 0.7, "text": 0.3, "audio": 0.5}
    assert phase_weights("single", a) == phase_weights("two", a) == {"main": 1.0}  # α_main weighs joint only
    assert phase_weights("joint", a) == a
    assert phase_weights("one", a) == {"main": 0.0, "text": 0.3, "audio": 0.5}
    with pytest.raises(ValueError, match="unknown phase"):
        phase_weights("three", a)


# --- schemes with GRU stand-in encoders ----------------------------------------------------------

class GRUEncoder(nn.Module):
    """Stand-in for a pre-trained encoder: a 2-layer GRU with dropout (so eval mode matters)."""

    def __init__(self, d_in: int, d: int) -> None:
        super().__init__()
        self.gru = nn.GRU(d_in, d, num_layers=2, dropout=0.5, batch_first=True)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.gru(x)[0]


def model(fusion: str = "sf", **opts) -> MultimodalModel:
    torch.manual_seed(0)
    f = make_fusion(fusion, D, **opts)
    return MultimodalModel({m: GRUEncoder(IN[m], D[m]) for m in IN}, f, Heads(f.out_dim, D, list(D), hidden=16))


def batches(n: int = 2, b: int = 8):
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(n):
        x = {m: torch.randn(b, 5, w, generator=g) for m, w in IN.items()}
        mask = {m: torch.ones(b, 5, dtype=torch.bool) for m in IN}
        mask["audio"][:, 3:] = False
        y = torch.tanh(x["text"][:, :, 0].mean(1) + x["audio"][:, :3, 0].mean(1))
        out.append({"inputs": x, "mask": mask, "label": y, "labels": {"text": torch.tanh(x["text"][:, :, 0].mean(1))}})
    return out


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("fusion,opts", [("sf", {}), ("mult", {"d": 8, "heads": 2, "layers": 1})])
def test_two_step_freezes_encoders_in_step_two(fusion, opts):
    m = model(fusion, **opts)
    data = batches()
    enc0 = snapshot(m.encoders)
    step1 = train_step_one(m, data, 20, lr_encoder=1e-2, lr_rest=1e-2)
    assert set(step1) == {"text", "audio", "visual"} and step1["text"][-1] < step1["text"][0]
    assert not same(enc0, snapshot(m.encoders))  # step 1 fine-tunes each encoder
    enc1, heads1, fusion1 = snapshot(m.encoders), snapshot(m.heads.modality), snapshot(m.fusion)
    main1 = snapshot(m.heads.main)
    losses = train_step_two(m, data, 10, {"main": 1.0}, lr_rest=1e-2)
    assert len(losses) == 10
    assert same(enc1, snapshot(m.encoders))          # bit-identical encoders
    assert same(heads1, snapshot(m.heads.modality))  # unimodal heads do not train in step 2
    assert all(p.grad is None for p in m.encoders.parameters())  # no gradient reaches them (none left from step 1)
    assert all(not p.requires_grad for p in m.encoders.parameters())
    assert not same(main1, snapshot(m.heads.main))
    if fusion == "mult":
        assert not same(fusion1, snapshot(m.fusion)) and all(p.grad is not None for p in m.fusion.parameters())
    # frozen encoders stay in eval mode (dropout off) when the model is put back in training mode
    m.train()
    assert m.training and m.fusion.training and not any(e.training for e in m.encoders.values())
    b = data[0]
    assert torch.equal(m.encoders["text"](b["inputs"]["text"], b["mask"]["text"]),
                       m.encoders["text"](b["inputs"]["text"], b["mask"]["text"]))


def test_run_scheme_two_step_reports_both_steps():
    m = model()
    out = run_scheme(m, "two-step", batches(), 5, {"main": 1.0, "text": 1.0}, step_one_steps=3)
    assert set(out) == {"step1-text", "step1-audio", "step1-visual", "main"}
    assert [len(out[k]) for k in sorted(out)] == [5, 3, 3, 3]


def test_joint_trains_every_head_and_single_only_the_main_one():
    m = model()
    enc0, heads0 = snapshot(m.encoders), snapshot(m.heads.modality)
    run_scheme(m, "joint", batches(), 3, {"main": 1.0, "text": 0.5, "audio": 0.5, "visual": 0.5}, lr_encoder=1e-3)
    assert not same(enc0, snapshot(m.encoders)) and not any(
        torch.equal(heads0[k], v) for k, v in snapshot(m.heads.modality).items() if k.endswith("weight"))
    m = model()
    heads0 = snapshot(m.heads.modality)
    enc0 = snapshot(m.encoders)
    run_scheme(m, "single", batches(), 3, {"main": 1.0, "text": 0.5}, lr_encoder=1e-3)
    assert same(heads0, snapshot(m.heads.modality)) and not same(enc0, snapshot(m.encoders))
    assert all(p.grad is None for p in m.heads.modality.parameters())


def test_two_step_needs_modality_heads():
    torch.manual_seed(0)
    f = make_fusion("sf", D)
    m = MultimodalModel({k: GRUEncoder(IN[k], D[k]) for k in IN}, f, Heads(f.out_dim, D))
    with pytest.raises(ValueError, match="needs a head per modality"):
        run_scheme(m, "two-step", batches(), 2)


def eval_loss(m: MultimodalModel, data: list, alphas: dict) -> float:
    m.eval()
    with torch.no_grad():
        return sum(weighted_loss(m(b["inputs"], b["mask"]), b["label"], alphas, b.get("labels"))[0].item()
                   for b in data) / len(data)


def test_joint_loss_falls():
    m = model("tfn", project=3)
    alphas = {"main": 1.0, "text": 0.5, "audio": 0.5, "visual": 0.5}
    before = eval_loss(m, batches(), alphas)
    run_scheme(m, "joint", batches(), 150, alphas, lr_encoder=3e-3, lr_rest=3e-3)
    assert eval_loss(m, batches(), alphas) < 0.5 * before


def test_a_clip_without_a_modality_does_not_train_its_head():
    m = model()
    data = batches(1)
    data[0]["mask"]["visual"][:] = False  # no clip has visual frames
    heads0 = snapshot(m.heads.modality["visual"])
    run_scheme(m, "joint", data, 2, {"main": 1.0, "visual": 1.0}, lr_encoder=1e-3)
    assert same(heads0, snapshot(m.heads.modality["visual"]))
