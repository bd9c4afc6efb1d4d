"""The `*_released.toml` presets against an independent transcription of the public KEBR code
(aoqzhu/KEBR at 171de2d), written here in plain torch from reading it: models.py (cosines and
alignment 21-62, CrossModalAttention 66-91, the encoder layer 103-110, the heads 149-151 and 240-242,
PredictModel.forward 244-265) and main.py (the fine-tuning and validation terms 122-125, 158-161).
Random weights and inputs; the two must agree to 1e-6, dropout included (same seed, same draws)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from kebr_model.config import TrainConfig
from kebr_model.data import DataConfig, ShardBatches, collate
from kebr_model.mcc import mcc_released_finetune, mcc_released_valid, released_cosines
from kebr_model.heads import head
from kebr_model.model import KEBR
from kebr_model.fusions.tcmf import TCMF

REPO = Path(__file__).resolve().parents[1]
PRESETS = ("train_mosi_released.toml", "train_mosei_released.toml")
PRETRAIN = "train_pretrain_released.toml"


# --- the transcription (not the project's code: written from the release's lines) --------------------

def rel_cos(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """models.py:21-40: per row, dot / (norm * norm), no epsilon."""
    return torch.stack([torch.dot(x[i], y[i]) / (torch.norm(x[i]) * torch.norm(y[i])) for i in range(x.shape[0])])


def rel_align(t: torch.Tensor, a: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """models.py:42-62, its line 54 included: the third input becomes the (tiled) second one."""
    wide = max(t.shape[1], a.shape[1], v.shape[1])
    if wide // t.shape[1] - 1 > 0:
        t = t.repeat(1, wide // t.shape[1])
    if wide // a.shape[1] - 1 > 0:
        a = a.repeat(1, wide // a.shape[1])
    if wide // v.shape[1] - 1 > 0:
        v = a.repeat(1, wide // v.shape[1])
    wide = max(t.shape[1], a.shape[1], v.shape[1])
    return tuple(F.pad(x, (0, wide - x.shape[1])) for x in (t, a, v))


def rel_sims(text_seq: torch.Tensor, audio: torch.Tensor, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """models.py:250-261: flatten, normalise, align, then cos(audio, text) and cos(video, text)."""
    t, a, v = (F.normalize(torch.flatten(x, 1), dim=1) for x in (text_seq, audio, video))
    t, a, v = rel_align(t, a, v)
    return rel_cos(a, t), rel_cos(v, t)


def ln(x: torch.Tensor, mod: torch.nn.LayerNorm) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], mod.weight, mod.bias, mod.eps)


def rel_cma(text: torch.Tensor, other: torch.Tensor, p) -> torch.Tensor:
    """models.py:81-91 (CrossModalAttention.forward) with the weights of the project's module `p`."""
    q = F.linear(ln(text, p.text_norm), p.text_query.weight, p.text_query.bias)
    k = F.linear(ln(other, p.norm), p.key.weight, p.key.bias)
    v = F.linear(ln(other, p.norm), p.value.weight, p.value.bias)
    attention = F.softmax(torch.bmm(q, k.permute(0, 2, 1)) * q.shape[-1] ** -0.5, dim=-1)
    return F.linear(torch.bmm(attention, v), p.out.weight, p.out.bias)


def rel_layer(text: torch.Tensor, audio: torch.Tensor, video: torch.Tensor, layer, p_drop: float) -> torch.Tensor:
    """models.py:103-110: raw-text residual, fc(LN(.)), dropout, + residual."""
    out = rel_cma(text, audio, layer.modal["audio"]) + rel_cma(text, video, layer.modal["visual"]) + text
    residual = out
    fc = layer.ffn[0]
    out = F.linear(ln(out, layer.norm_ffn), fc.weight, fc.bias)
    out = F.dropout(out, p_drop, training=layer.training)
    return out + residual


def rel_head(x: torch.Tensor, mod, p_drop: float) -> torch.Tensor:
    """models.py:240-242: fc2(dropout(relu(fc1(x))))."""
    fc1, fc2 = [m for m in mod.modules() if isinstance(m, torch.nn.Linear)]
    return F.linear(F.dropout(F.relu(F.linear(x, fc1.weight, fc1.bias)), p_drop, training=mod.training),
                    fc2.weight, fc2.bias)


def rel_predict(model: KEBR, batch: dict, p_drop: float) -> tuple[torch.Tensor, ...]:
    """PredictModel.forward (models.py:244-265) with the project model's weights: 4 passes of one layer."""
    out = model.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    layer = model.fusion.layers[0]
    for _ in range(4):
        out = rel_layer(out, batch["audio"], batch["visual"], layer, p_drop)
    sim_a, sim_v = rel_sims(out, batch["audio"], batch["visual"])
    return rel_head(torch.mean(out, dim=1), model.finetune_head, p_drop).squeeze(-1), sim_a, sim_v


def rel_pretrain(model: KEBR, batch: dict, p_drop: float) -> tuple[torch.Tensor, ...]:
    """PretrainModel.forward (models.py:153-171): the head (fitter, 149-151) on the [MASK] position."""
    out = model.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    layer = model.fusion.layers[0]
    for _ in range(4):
        out = rel_layer(out, batch["audio"], batch["visual"], layer, p_drop)
    x = out[torch.tensor(range(out.shape[0])), batch["mask_pos"], :]
    sim_a, sim_v = rel_sims(out, batch["audio"], batch["visual"])
    return rel_head(x, model.pretrain_head, p_drop).squeeze(-1), sim_a, sim_v


def rel_pretrain_term(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """pretrain.py:83-85 (angle 1/4, s = 1)."""
    sims = [(x + y) / 2 for x, y in zip(a, b)]
    return torch.stack([(1 - s) if s < 0 else torch.abs(torch.cos(math.pi * (s + 0.25))) for s in sims])


def rel_finetune_term(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """main.py:122-125, sample by sample (angle 0.4)."""
    return torch.stack([torch.abs(torch.cos(math.pi * ((x + y) / 2 + 0.4) * torch.exp(abs(x - y) * 0.5)))
                        if x >= 0 and y >= 0 else 1 + torch.abs(x) + torch.abs(y) for x, y in zip(a, b)])


def rel_valid_batch(output: torch.Tensor, label: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """main.py:158-161: one batch's t_l + s_l of the validation loss."""
    sims = [(x + y) / 2 for x, y in zip(a, b)]
    sims = [1 - s if s < 0 else torch.abs(torch.cos(math.pi * (s + 0.4))) for s in sims]
    return torch.nn.L1Loss()(output, label) + sum(sims) / len(sims)


# --- helpers ----------------------------------------------------------------------------------------

def preset_model(tiny_bert: str, widths: dict[str, int], preset: str = PRESETS[0]) -> tuple[KEBR, TrainConfig]:
    from kebr_model.training.train import load_encoder

    cfg = TrainConfig.load([REPO / "pipelines" / preset], [f"encoder={tiny_bert}"])
    torch.manual_seed(0)
    _, encoder = load_encoder(cfg.encoder, cfg.encoder_dropout)
    return KEBR(encoder, widths, cfg).double(), cfg


def random_batch(b: int, tokens: int, frames: dict[str, int], widths: dict[str, int], seed: int) -> dict:
    """Fixed-shape random inputs as the release sees them: padded text, zero-padded frames."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, tokens + 1, (b,), generator=g)
    ids = torch.randint(1000, 2000, (b, tokens), generator=g)
    att = (torch.arange(tokens)[None] < lengths[:, None]).long()
    batch = {"input_ids": ids * att, "attention_mask": att, "mask_pos": lengths - 2}
    for m, n in frames.items():
        valid = torch.arange(n)[None] < torch.randint(1, n + 1, (b,), generator=g)[:, None]
        batch[m] = torch.randn(b, n, widths[m], generator=g, dtype=torch.float64) * valid[..., None]
        batch[f"{m}_mask"] = valid
    return batch


# --- the tests --------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [
    # (text tokens, text width, audio frames x width, visual frames x width): each input widest in turn,
    # visual needing tiling (line 54) or not, the release's own shape ratios (39 x d_t, 400 x 33, 55 x 709)
    (5, 8, (7, 3), (2, 4)), (3, 4, (9, 5), (2, 3)), (4, 4, (2, 3), (6, 9)), (39, 16, (400, 33), (55, 709)),
    (6, 7, (5, 5), (5, 5)),
])
def test_released_cosines_equal_the_release(shape):
    tokens, d_t, (la, da), (lv, dv) = shape
    g = torch.Generator().manual_seed(tokens * 100 + la)
    for _ in range(3):
        text = torch.randn(4, tokens, d_t, generator=g, dtype=torch.float64)
        audio = torch.randn(4, la, da, generator=g, dtype=torch.float64)
        visual = torch.randn(4, lv, dv, generator=g, dtype=torch.float64)
        audio[:, la // 2:] = 0  # padding counts in the release: zeros, never masked
        want_a, want_v = rel_sims(text, audio, visual)
        ones = torch.ones(4, dtype=torch.bool)
        got = released_cosines(text, {"audio": audio, "visual": visual}, {"audio": ones, "visual": ones},
                               audio_for_visual=True)
        assert torch.allclose(got["audio"], want_a, atol=1e-6, rtol=0)
        assert torch.allclose(got["visual"], want_v, atol=1e-6, rtol=0)


def test_line54_bug_is_an_option_and_off_by_default():
    """Visual needing tiling: with the bug, c_v is computed from the audio; without it, from the visual."""
    g = torch.Generator().manual_seed(1)
    text, audio, visual = (torch.randn(3, n, d, generator=g, dtype=torch.float64) for n, d in ((5, 8), (7, 3), (2, 4)))
    ones = {"audio": torch.ones(3, dtype=torch.bool), "visual": torch.ones(3, dtype=torch.bool)}
    buggy = released_cosines(text, {"audio": audio, "visual": visual}, ones, audio_for_visual=True)
    fixed = released_cosines(text, {"audio": audio, "visual": visual}, ones)
    assert torch.allclose(buggy["visual"], rel_sims(text, audio, visual)[1], atol=1e-6, rtol=0)
    t = F.normalize(text.flatten(1), dim=1)
    v = F.normalize(visual.flatten(1), dim=1).repeat(1, 40 // 8)
    assert torch.allclose(fixed["visual"], F.cosine_similarity(t, v, dim=1), atol=1e-6, rtol=0)
    assert (fixed["visual"] - buggy["visual"]).abs().max() > 1e-3


def test_all_zero_audio_gives_nan_as_the_release_but_a_missing_modality_gives_zero():
    text, audio, visual = torch.randn(2, 3, 4), torch.zeros(2, 5, 2), torch.randn(2, 2, 3)
    want_a, _ = rel_sims(text, audio, visual)
    got = released_cosines(text, {"audio": audio, "visual": visual},
                           {"audio": torch.tensor([True, False]), "visual": torch.ones(2, dtype=torch.bool)})
    assert torch.isnan(want_a).all() and torch.isnan(got["audio"][0]) and got["audio"][1].item() == 0.0


@pytest.mark.parametrize("preset", [*PRESETS, PRETRAIN])
@pytest.mark.parametrize("training", [False, True])
def test_preset_model_equals_the_release(tiny_bert, preset, training):
    """Prediction, c_a, c_v, the MCC term and the gradients of the preset's model against the release's
    PredictModel (PretrainModel for the pre-training preset), in eval and in train mode (dropout 0.5 in
    the layer and between the head's ReLU and last Linear, drawn in the same order)."""
    widths = {"audio": 3, "visual": 5}
    model, cfg = preset_model(tiny_bert, widths, preset)
    assert cfg.dropout == cfg.head_settings.head_dropout == 0.5
    batch = random_batch(4, 7, {"audio": 6, "visual": 2}, widths, seed=3)
    model.train(training)
    torch.manual_seed(7)
    out = model(batch, cfg.task)
    torch.manual_seed(7)
    pred, sim_a, sim_v = (rel_pretrain if cfg.task == "pretrain" else rel_predict)(model, batch, 0.5)
    term = (rel_pretrain_term if cfg.task == "pretrain" else rel_finetune_term)(sim_a, sim_v)
    for got, want in ((out.prediction, pred), (out.c_a, sim_a), (out.c_v, sim_v), (out.mcc, term)):
        assert torch.allclose(got, want, atol=1e-6, rtol=0)
    grads = []
    for loss in (out.prediction.sum() + out.mcc.mean(), pred.sum() + term.mean()):
        model.zero_grad()
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.fusion.parameters() if p.grad is not None]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6, rtol=0)


def test_released_options_are_off_by_default(tiny_bert):
    """Outside the released presets nothing changes: masked pooling, LN residual, paper attention."""
    cfg = TrainConfig.load([REPO / "pipelines/train_mosi_paper.toml"], [f"encoder={tiny_bert}"])
    tcmf = cfg.fusion_settings  # the tcmf fusion's own settings object
    assert (tcmf.tcmf_attention, tcmf.tcmf_residual, tcmf.finetune_pool, cfg.head_settings.head_dropout_at,
            cfg.mcc_space, cfg.mcc_audio_for_visual, cfg.pad_to_max, cfg.select_on) == (
        "paper", "ln", "masked", "input", "flatten", False, False, "loss")  # flatten: the paper preset's Eq. 9
    for preset in PRESETS:
        rel = TrainConfig.load([REPO / "pipelines" / preset])
        tcmf = rel.fusion_settings
        assert (tcmf.tcmf_attention, tcmf.tcmf_residual, tcmf.ffn, tcmf.finetune_pool,
                rel.head_settings.head_dropout_at, rel.mcc_space, rel.mcc_audio_for_visual, rel.pad_to_max,
                rel.select_on, rel.max_text_tokens, rel.max_audio_frames, rel.max_visual_frames) == (
            "released", "raw", "linear-dropout", "all", "hidden", "released", True, True, "released_valid_loss",
            39, 400, 55)


def test_head_dropout_positions_keep_parameter_names():
    """`hidden` puts dropout between the ReLU and the last Linear; both positions load each other's weights."""
    a, b = head(6, 4, 0.5, dropout_at="input"), head(6, 4, 0.5, dropout_at="hidden")
    assert a.state_dict().keys() == b.state_dict().keys()
    b.load_state_dict(a.state_dict())
    x = torch.randn(5, 6, dtype=torch.float64)
    a.double().train(), b.double().train()
    torch.manual_seed(2)
    got = b(x).squeeze(-1)
    torch.manual_seed(2)
    assert torch.allclose(got, rel_head(x, b, 0.5).squeeze(-1), atol=1e-12)
    torch.manual_seed(2)
    assert not torch.allclose(a(x), b(x))


def test_paper_tcmf_default_is_unchanged_by_the_options():
    """The default layer still masks padding: padded frames' values never reach the output."""
    torch.manual_seed(0)
    tcmf = TCMF({"text": 8, "audio": 3}, layers=2).eval()
    x, a = torch.randn(2, 4, 8), torch.randn(2, 5, 3)
    mask = torch.tensor([[True] * 3 + [False] * 2] * 2)
    a2 = a.clone()
    a2[:, 3:] = 100.0
    assert torch.allclose(tcmf.fuse(x, {"audio": a}, {"audio": mask})[0],
                          tcmf.fuse(x, {"audio": a2}, {"audio": mask})[0])
    released = TCMF({"text": 8, "audio": 3}, layers=2, attention="released", residual="raw",
                    ffn="linear-dropout").eval()
    assert not torch.allclose(released.fuse(x, {"audio": a}, {"audio": mask})[0],
                              released.fuse(x, {"audio": a2}, {"audio": mask})[0])


def test_released_valid_loss_equals_the_release():
    from kebr_model.model import Output
    from kebr_model.training.train import Trainer

    g = torch.Generator().manual_seed(5)
    c_a, c_v = (torch.rand(32, generator=g, dtype=torch.float64) * 2 - 1 for _ in range(2))
    pred, label = torch.randn(32, generator=g, dtype=torch.float64), torch.randn(32, generator=g, dtype=torch.float64)
    out = Output(pred, c_a, c_v, mcc_released_finetune(c_a, c_v), torch.ones(32, dtype=torch.bool))
    got = Trainer.released_valid_loss(out, (pred - label).abs().mean())
    want = rel_valid_batch(pred[:, None], label[:, None], c_a, c_v)
    assert got.item() == pytest.approx(want.item(), abs=1e-6)
    assert torch.allclose(mcc_released_valid(c_a, c_v), torch.stack(
        [1 - (a + b) / 2 if (a + b) / 2 < 0 else torch.abs(torch.cos(math.pi * ((a + b) / 2 + 0.4)))
         for a, b in zip(c_a, c_v)]), atol=1e-12)
    # the criterion the release selects on is not the training term: they differ (up to 2.47)
    assert (mcc_released_valid(c_a, c_v) - rel_finetune_term(c_a, c_v)).abs().max() > 0.5


def test_evaluate_reports_the_release_criterion_summed_over_batches(tmp_path, tiny_bert):
    from shard_factory import make_shards

    from kebr_model.training.train import Trainer

    root = make_shards(tmp_path / "f", n=20, shard_size=10, labelled=True, widths=(3, 5))
    cfg = TrainConfig.load([REPO / "pipelines" / PRESETS[0]],
                           [f"encoder={tiny_bert}", "batch_size=2", "max_audio_frames=30", "max_visual_frames=8"])
    trainer = Trainer(cfg, root, tmp_path / "run")
    result = trainer.evaluate("valid")
    want = 0.0
    trainer.model.eval()
    with torch.no_grad():
        for batch in trainer.batches("valid", 0, shuffle=False):
            assert batch["input_ids"].shape[1] == 39 and batch["audio"].shape[1] == 30 and batch["visual"].shape[1] == 8
            pred, sim_a, sim_v = rel_predict(trainer.model, batch, 0.5)
            want += float(rel_valid_batch(pred[:, None], batch["label"][:, None], sim_a, sim_v))
    assert result["samples"] == 4 and result["released_valid_loss"] == pytest.approx(want, abs=1e-5)


def test_pad_to_max_gives_fixed_shapes():
    samples = [{"clip_id": "a", "input_ids": [1, 2, 3], "mask_pos": -1, "label": 0.0,
                "audio": torch.ones(2, 3).numpy(), "visual": torch.ones(1, 4).numpy()}]
    lengths = DataConfig(max_text_tokens=6, max_audio_frames=5, max_visual_frames=3, pad_to_max=True).padded_lengths()
    b = collate(samples, 0, lengths)
    assert b["input_ids"].shape == (1, 6) and b["audio"].shape == (1, 5, 3) and b["visual"].shape == (1, 3, 4)
    assert b["audio_mask"].sum() == 2 and b["attention_mask"].sum() == 3
    assert collate(samples, 0)["input_ids"].shape == (1, 3)
    assert DataConfig().padded_lengths() is None and ShardBatches  # per-batch padding stays the default


def test_preset_learning_rates_are_the_release_groups(tiny_bert):
    """main.py:85-89: BERT and the cross-modal encoder (its input maps included) at 5e-6, the head at 1e-4."""
    from kebr_model.training.optim import param_groups

    model, cfg = preset_model(tiny_bert, {"audio": 3, "visual": 5})
    groups = {g["name"]: g for g in param_groups(model, cfg)}
    assert {k: g["lr"] for k, g in groups.items()} == {"encoder": 5e-6, "audio": 5e-6, "visual": 5e-6,
                                                        "fusion": 5e-6, "other": 1e-4}
    fusion = {id(p) for k in ("audio", "visual", "fusion") for p in groups[k]["params"]}
    assert fusion == {id(p) for p in model.fusion.parameters()}
    assert {id(p) for p in groups["other"]["params"]} == {
        id(p) for n, p in model.named_parameters() if n.startswith(("finetune_head.", "pretrain_head."))}
    default = {g["name"] for g in param_groups(model, TrainConfig.load([], [f"encoder={tiny_bert}"]))}
    assert default == {"encoder", "audio", "visual", "other"}  # no fusion group unless lr_fusion is set


def test_release_options_outside_plain_tcmf_are_refused_in_one_line(tmp_path, tiny_bert):
    from shard_factory import make_shards
    from test_train_cli import cli, one_line_error

    root = make_shards(tmp_path / "f", n=5, shard_size=5, labelled=True)
    args = ("finetune", "--shards", root, "--out", tmp_path / "run", "--set", f"encoder='{tiny_bert}'")
    one_line_error(cli(*args, "--set", "fusion='mult'", "--set", "mcc_space='flatten'", "--set",
                       "tcmf_attention='released'"), "tcmf_attention", "fusion = 'tcmf'")
    one_line_error(cli(*args, "--set", "per_modality_query=true", "--set", "tcmf_residual='raw'"),
                   "tcmf_residual", "per_modality_query = false")
    assert not (tmp_path / "run").exists()


def test_pad_to_max_and_pool_all_refuse_what_they_cannot_serve():
    from kebr_data.errors import ConfigError

    with pytest.raises(ConfigError, match="pad_to_max"):
        TrainConfig.load([], ["modalities.audio='audio'", "pad_to_max=true"])
    with pytest.raises(ConfigError, match="finetune_pool = 'all' is an option of the plain TCMF"):
        TrainConfig.load([], ["task=finetune", "fusion=mult", "mcc_space=flatten", "finetune_pool=all"])


def test_released_space_works_with_other_fusions(tiny_bert):
    """Any fusion with a fused sequence gets the release's cosines (not zeros, as the pooled space would)."""
    from kebr_model.training.train import load_encoder

    cfg = TrainConfig.load([], [f"encoder={tiny_bert}", "task=finetune", "fusion=mult", "mcc_space=released"])
    _, encoder = load_encoder(cfg.encoder)
    model = KEBR(encoder, {"audio": 3, "visual": 5}, cfg).double().eval()
    out = model(random_batch(3, 6, {"audio": 4, "visual": 2}, {"audio": 3, "visual": 5}, seed=1), "finetune")
    assert torch.isfinite(out.c_a).all() and (out.c_a != 0).all() and (out.c_v != 0).all()


def test_released_attention_in_the_pooled_space(tiny_bert):
    """The pooled MCC space reads the released attention's value maps through its output map (d_t wide)."""
    from kebr_model.training.train import load_encoder

    cfg = TrainConfig.load([], [f"encoder={tiny_bert}", "task=finetune", "tcmf_attention=released", "layers=1"])
    _, encoder = load_encoder(cfg.encoder)
    model = KEBR(encoder, {"audio": 3, "visual": 5}, cfg).double().eval()
    out = model(random_batch(3, 6, {"audio": 4, "visual": 2}, {"audio": 3, "visual": 5}, seed=2), "finetune")
    assert torch.isfinite(out.c_a).all() and (out.c_a.abs() > 0).all() and (out.c_a.abs() <= 1).all()


def test_released_pretraining_is_the_released_fine_tuning_init(tiny_bert):
    """The pre-training preset builds the fine-tuning presets' model, so its run is their --init."""
    pre, cfg = preset_model(tiny_bert, {"audio": 3, "visual": 5}, PRETRAIN)
    assert (cfg.mcc_form, cfg.lr_encoder, cfg.freeze_encoder) == ("released-pretrain", 0.0, False)
    for preset in PRESETS:
        fine, _ = preset_model(tiny_bert, {"audio": 3, "visual": 5}, preset)
        assert {k: v.shape for k, v in pre.state_dict().items()} == {k: v.shape for k, v in fine.state_dict().items()}
