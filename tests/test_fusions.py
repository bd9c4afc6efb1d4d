"""The fusion zoo: shapes, hand-computed values, padding never attended, missing modalities,
FLOP/parameter counts, and each fusion overfitting a 32-sample synthetic set."""

from __future__ import annotations

import math

import pytest
import torch

from kebr_model.fusions import FUSIONS, count_flops, count_params, make_fusion
from kebr_model.fusions.attention import MaskedAttention
from kebr_model.fusions.base import masked_mean
from kebr_model.heads import mlp, weighted_loss


W3 = {"text": 8, "audio": 6, "visual": 5}
CONFIGS = [
    ("tcmf", {"layers": 2}),
    ("tcmf", {"layers": 2, "per_modality_query": True}),
    ("tcmf", {"layers": 3, "shared": True, "per_modality_query": True}),
    ("sf", {}),
    ("tfn", {"project": 3}),
    ("mult", {"d": 8, "heads": 2, "layers": 1}),
    ("mmml", {"d": 8, "heads": 2, "layers": 2}),
    ("mmml", {"d": 8, "heads": 2, "layers": 2, "variant": "direct_concat"}),
    ("mmml", {"d": 8, "heads": 2, "layers": 2, "variant": "concat_variation"}),
    ("mmml", {"d": 8, "heads": 2, "layers": 2, "variant": "transformer_variation"}),
]
IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in o.items())}" for n, o in CONFIGS]


def inputs(b: int = 4, seed: int = 0, lengths: dict[str, int] | None = None):
    """Random sequences with per-sample lengths (sample i has fewer real frames than i-1)."""
    g = torch.Generator().manual_seed(seed)
    lengths = lengths or {"text": 7, "audio": 9, "visual": 5}
    h, mask = {}, {}
    for m, w in W3.items():
        t = lengths[m]
        h[m] = torch.randn(b, t, w, generator=g)
        real = torch.tensor([max(1, t - 2 * i) for i in range(b)])
        mask[m] = torch.arange(t)[None, :] < real[:, None]
    return h, mask


def built(name: str, opts: dict) -> torch.nn.Module:
    torch.manual_seed(0)
    return make_fusion(name, W3, **opts).eval()


# --- registry and shapes --------------------------------------------------------------------------

def test_registry_names_and_errors():
    assert set(FUSIONS) == {"tcmf", "sf", "tfn", "mult", "mmml", "audio_transformer", "audio_cnn"}
    with pytest.raises(ValueError, match="unknown fusion 'nope'"):
        make_fusion("nope", W3)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['layers'\]; it takes none"):
        make_fusion("sf", W3, layers=3)
    with pytest.raises(ValueError, match="it takes layers, shared, dropout, uniform, .*per_modality_query"):
        make_fusion("tcmf", W3, per_modality_queries=True)
    with pytest.raises(ValueError, match="unknown mmml variant"):
        make_fusion("mmml", W3, variant="x")
    with pytest.raises(ValueError, match="text-centred"):
        make_fusion("tcmf", {"audio": 3, "visual": 4})
    with pytest.raises(ValueError, match="widths must name"):
        make_fusion("sf", {"txt": 3})


@pytest.mark.parametrize("name,opts", CONFIGS, ids=IDS)
def test_shapes(name, opts):
    f = built(name, opts)
    h, mask = inputs()
    out = f(h, mask)
    assert out.pooled.shape == (4, f.out_dim)
    assert torch.isfinite(out.pooled).all()
    assert (out.sequence is not None) == f.has_sequence
    if f.has_sequence:
        assert out.sequence.shape[:2] == (4, 7) and out.sequence_mask.shape == (4, 7)
    for m in f.modalities:
        assert out.per_modality[m].shape == (4, W3[m])
        assert torch.equal(out.per_modality[m], masked_mean(h[m], mask[m]))


def test_out_dims_by_hand():
    assert make_fusion("sf", W3).out_dim == 8 + 6 + 5
    assert make_fusion("tfn", W3, project=None).out_dim == 9 * 7 * 6
    assert make_fusion("tfn", W3, project={"text": 3, "audio": 2, "visual": 4}).out_dim == 4 * 3 * 5
    assert make_fusion("tfn", W3).out_dim == 17 ** 3  # default projection: 16 each
    assert make_fusion("tcmf", W3).out_dim == 8
    assert make_fusion("mult", W3, d=8).out_dim == 3 * 2 * 8  # three streams of two adapted copies
    assert make_fusion("mult", {"text": 8, "audio": 6}, d=8).out_dim == 2 * 1 * 8
    assert make_fusion("mmml", W3, d=8).out_dim == 16
    assert make_fusion("mmml", W3, d=8, variant="direct_concat").out_dim == 8 + 6
    assert make_fusion("mmml", W3, d=8, variant="transformer_variation").out_dim == 32
    assert [f.has_sequence for f in (make_fusion("sf", W3), make_fusion("tfn", W3), make_fusion("tcmf", W3),
                                     make_fusion("mult", W3), make_fusion("mmml", W3),
                                     make_fusion("mmml", W3, variant="direct_concat"))] == [
        False, False, True, True, True, False]


def test_mult_has_six_cross_and_three_self_blocks():
    f = make_fusion("mult", W3, d=8, layers=1)
    assert sorted(f.cross) == ["audio_to_text", "audio_to_visual", "text_to_audio", "text_to_visual",
                               "visual_to_audio", "visual_to_text"]
    assert sorted(f.self_attn) == ["audio", "text", "visual"]


def test_mmml_defaults_to_five_layers_over_text_and_audio():
    f = make_fusion("mmml", W3)
    assert f.modalities == ("text", "audio") and len(f.layers["text"]) == 5 and len(f.layers["audio"]) == 5


# --- hand-computed values ------------------------------------------------------------------------

def one(v):
    return torch.tensor([[v]], dtype=torch.float64)  # (B=1, T=1, d=len(v))


def test_tfn_outer_product_by_hand():
    f = make_fusion("tfn", {"text": 1, "audio": 1, "visual": 1}, project=None).double()
    assert count_params(f) == 0  # the paper's TFN adds no parameter
    t = torch.tensor([[[2.0], [4.0], [100.0]]], dtype=torch.float64)  # mean of the real frames: 3
    mask = {"text": torch.tensor([[True, True, False]]), "audio": torch.ones(1, 1, dtype=torch.bool),
            "visual": torch.ones(1, 1, dtype=torch.bool)}
    out = f({"text": t, "audio": one([5.0]), "visual": one([7.0])}, mask).pooled
    # [3,1] ⊗ [5,1] ⊗ [7,1], text the slowest index
    assert out.tolist() == [[105.0, 15.0, 21.0, 3.0, 35.0, 5.0, 7.0, 1.0]]


def test_tfn_two_wide_and_missing_modality_by_hand():
    f = make_fusion("tfn", {"text": 2, "audio": 1, "visual": 1}, project=None).double()
    ones = torch.ones(1, 1, dtype=torch.bool)
    out = f({"text": torch.tensor([[[1.0, 2.0]]], dtype=torch.float64), "audio": one([3.0])},
            {"text": ones, "audio": ones}).pooled
    # visual missing: z_v = [0, 1] -> [1,2,1] ⊗ [3,1] ⊗ [0,1]
    assert out.tolist() == [[0, 3, 0, 1, 0, 6, 0, 2, 0, 3, 0, 1]]
    assert out.shape[1] == (2 + 1) * (1 + 1) * (1 + 1)
    # a sample with the modality present but no real frame is the same as the modality absent
    out2 = f({"text": torch.tensor([[[1.0, 2.0]]], dtype=torch.float64), "audio": one([3.0]), "visual": one([9.0])},
             {"text": ones, "audio": ones, "visual": torch.zeros(1, 1, dtype=torch.bool)}).pooled
    assert torch.equal(out, out2)


def test_tfn_projection_is_linear_then_product():
    f = make_fusion("tfn", {"text": 2, "audio": 1, "visual": 1}, project=1).double()
    with torch.no_grad():
        f.project["text"].weight[:] = torch.tensor([[1.0, -1.0]])
        f.project["text"].bias[:] = 0.5
        for m in ("audio", "visual"):
            f.project[m].weight.fill_(2.0)
            f.project[m].bias.fill_(0.0)
    ones = torch.ones(1, 1, dtype=torch.bool)
    out = f({"text": torch.tensor([[[3.0, 1.0]]], dtype=torch.float64), "audio": one([1.0]), "visual": one([-1.0])},
            {"text": ones, "audio": ones, "visual": ones}).pooled
    # z_t = [3 - 1 + 0.5, 1] = [2.5, 1], z_a = [2, 1], z_v = [-2, 1]
    assert out.tolist() == [[-10.0, 5.0, -5.0, 2.5, -4.0, 2.0, -2.0, 1.0]]


def test_sf_concatenates_masked_means_by_hand():
    f = make_fusion("sf", {"text": 1, "audio": 2})
    h = {"text": torch.tensor([[[1.0], [3.0], [50.0]]]), "audio": torch.tensor([[[1.0, 2.0], [3.0, 6.0]]])}
    mask = {"text": torch.tensor([[True, True, False]]), "audio": torch.tensor([[True, True]])}
    assert f(h, mask).pooled.tolist() == [[2.0, 2.0, 4.0]]
    assert f({"text": h["text"]}, {"text": mask["text"]}).pooled.tolist() == [[2.0, 0.0, 0.0]]  # audio missing


def test_masked_attention_by_hand():
    att = MaskedAttention(2, heads=1).double()
    with torch.no_grad():
        for lin in (att.q, att.k, att.v, att.out):
            lin.weight.copy_(torch.eye(2))
            lin.bias.zero_()
    x = torch.tensor([[[1.0, 0.0]]], dtype=torch.float64)
    kv = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [9.0, 9.0]]], dtype=torch.float64)
    y = att(x, kv, torch.tensor([[True, True, False]]))
    # scores [1, 0] / √2 -> weights e^{0.70711}/(e^{0.70711}+1) = 0.669762, 0.330238
    assert y[0, 0].tolist() == pytest.approx([0.669762, 0.330238], abs=1e-6)
    assert torch.equal(att(x, kv, torch.zeros(1, 3, dtype=torch.bool)), torch.zeros(1, 1, 2, dtype=torch.float64))


# --- TCMF: one construction path, SKESL's per-modality queries -----------------------------------

def test_tcmf_fusion_output_is_its_fused_sequence():
    f = built("tcmf", {"layers": 2})
    h, mask = inputs()
    x_k, values = f.fuse(h["text"], {m: h[m] for m in ("audio", "visual")},
                         {m: mask[m] for m in ("audio", "visual")})
    out = f(h, mask)
    assert torch.equal(out.sequence, x_k) and torch.equal(out.extras["visual_values"], values["visual"])
    assert torch.equal(out.pooled, masked_mean(x_k, mask["text"]))


def test_per_modality_query_equals_single_query_when_the_maps_agree():
    single = built("tcmf", {"layers": 2})
    per = built("tcmf", {"layers": 2, "per_modality_query": True})
    state = per.state_dict()
    state.update(single.state_dict())
    for i in range(2):  # W_Q^v := W_Q^a = W_Q
        state[f"layers.{i}.extra_queries.visual.weight"] = single.state_dict()[f"layers.{i}.query.weight"]
        state[f"layers.{i}.extra_queries.visual.bias"] = single.state_dict()[f"layers.{i}.query.bias"]
    per.load_state_dict(state)
    h, mask = inputs()
    assert torch.allclose(per(h, mask).pooled, single(h, mask).pooled, atol=1e-6)
    with torch.no_grad():
        per.layers[0].extra_queries["visual"].weight.mul_(3.0)
    assert not torch.allclose(per(h, mask).pooled, single(h, mask).pooled, atol=1e-4)
    assert count_params(per) - count_params(single) == 2 * (8 * 8 + 8)


# --- padding and missing modalities --------------------------------------------------------------

@pytest.mark.parametrize("name,opts", CONFIGS, ids=IDS)
def test_padding_is_never_attended(name, opts):
    f = built(name, opts)
    h, mask = inputs()
    before = f(h, mask)
    g = torch.Generator().manual_seed(7)
    h2 = {m: torch.where(mask[m][..., None], x, 1e3 * torch.randn(x.shape, generator=g)) for m, x in h.items()}
    after = f(h2, mask)
    assert not torch.equal(h2["audio"], h["audio"])
    assert torch.allclose(before.pooled, after.pooled, atol=1e-5)
    if f.has_sequence:
        real = before.sequence_mask
        assert torch.allclose(before.sequence[real], after.sequence[real], atol=1e-5)


@pytest.mark.parametrize("name,opts", CONFIGS, ids=IDS)
def test_missing_modality_equals_no_real_frame(name, opts):
    f = built(name, opts)
    h, mask = inputs()
    drop = "visual" if name != "mmml" else "audio"
    absent = f({m: x for m, x in h.items() if m != drop}, {m: x for m, x in mask.items() if m != drop})
    empty = f(h, {**mask, drop: torch.zeros_like(mask[drop])})
    full = f(h, mask)
    assert torch.isfinite(absent.pooled).all()
    assert torch.allclose(absent.pooled, empty.pooled, atol=1e-6)
    if f.out_dim and name != "sf" and opts.get("variant") != "direct_concat":
        assert not torch.allclose(absent.pooled, full.pooled, atol=1e-4)  # the modality did matter


def test_missing_modality_slot_is_zero():
    h, mask = inputs()
    no_v = ({m: h[m] for m in ("text", "audio")}, {m: mask[m] for m in ("text", "audio")})
    assert torch.equal(make_fusion("sf", W3)(*no_v).pooled[:, 14:], torch.zeros(4, 5))
    mult = built("mult", {"d": 8, "heads": 2, "layers": 1})
    assert torch.equal(mult(*no_v).pooled[:, 32:], torch.zeros(4, 16))  # the visual stream
    mmml = built("mmml", {"d": 8, "heads": 2, "layers": 1})
    assert torch.equal(mmml({"text": h["text"]}, {"text": mask["text"]}).pooled[:, 8:], torch.zeros(4, 8))


# --- counts ----------------------------------------------------------------------------------------

def test_count_flops_and_params_by_hand():
    lin = torch.nn.Linear(4, 3)
    assert count_params(lin) == 4 * 3 + 3
    assert count_flops(lin, torch.randn(2, 4)) == 2 * 2 * 4 * 3  # 2 per multiply-add
    att = MaskedAttention(8, heads=2).eval()  # torch's fused CPU attention kernel is counted too
    q, kv, keys = torch.randn(1, 4, 8), torch.randn(1, 5, 8), torch.ones(1, 5, dtype=torch.bool)
    assert count_flops(att, (q, kv, keys)) == 2 * (4 * 8 * 8 * 2 + 5 * 8 * 8 * 2) + 2 * (2 * 4 * 5 * 4 * 2)
    h, mask = inputs()
    assert count_flops(make_fusion("sf", W3), (h, mask)) == 0 and count_params(make_fusion("sf", W3)) == 0
    tfn = make_fusion("tfn", W3, project=3)
    assert count_params(tfn) == (8 + 6 + 5) * 3 + 3 * 3
    assert count_flops(tfn, (h, mask)) == 2 * 4 * (8 + 6 + 5) * 3  # the three projections of 4 clip vectors
    frozen = make_fusion("mult", W3, d=8)
    frozen.project.requires_grad_(False)
    assert count_params(frozen, trainable_only=True) == count_params(frozen) - 3 * 8 - (8 + 6 + 5) * 8


# --- each fusion overfits 32 samples -------------------------------------------------------------

def synthetic(n: int = 32, seed: int = 0):
    """Each modality carries part of the label: y = tanh(mean(text)_0 + mean(audio)_0 - mean(visual)_0)."""
    g = torch.Generator().manual_seed(seed)
    h, mask = inputs(n, seed, {"text": 6, "audio": 8, "visual": 5})
    lengths = {m: torch.randint(1, x.shape[1] + 1, (n,), generator=g) for m, x in h.items()}
    mask = {m: torch.arange(h[m].shape[1])[None, :] < lengths[m][:, None] for m in h}
    y = torch.tanh(masked_mean(h["text"], mask["text"])[:, 0] + masked_mean(h["audio"], mask["audio"])[:, 0]
                   - masked_mean(h["visual"], mask["visual"])[:, 0])
    return h, mask, y


OVERFIT = [(n, {**o, "dropout": 0.0} if n in ("tcmf", "mult", "mmml") else o)
           for n, o in CONFIGS]


@pytest.mark.parametrize("name,opts", OVERFIT, ids=[f"{n}-{i}" for i, (n, _) in enumerate(OVERFIT)])
def test_overfits_32_samples(name, opts):
    torch.manual_seed(0)
    h, mask, y = synthetic()
    f = make_fusion(name, W3, **opts)
    head = mlp(f.out_dim, hidden=64)
    params = list(f.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=3e-3)
    losses = []
    for _ in range(300):  # stops once below the threshold
        loss, _ = weighted_loss({"main": head(f(h, mask).pooled).squeeze(-1)}, y, {"main": 1.0}, loss="mse")
        losses.append(loss.item())
        if losses[-1] < 0.01:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[-1] < 0.01 < losses[0], (name, losses[0], losses[-1], len(losses))
    assert not math.isnan(losses[-1])


@pytest.mark.parametrize("name,opts", CONFIGS, ids=IDS)
def test_every_parameter_gets_a_gradient(name, opts):
    """No unused parameter (DDP would need find_unused_parameters, and Adam would carry dead state)."""
    f = built(name, opts).train()
    if not count_params(f):
        return  # sf, mmml direct_concat: nothing to train
    h, mask = inputs()
    f(h, mask).pooled.sum().backward()
    assert [n for n, p in f.named_parameters() if p.grad is None] == []


def test_masked_attention_matches_a_plain_softmax_per_head():
    torch.manual_seed(0)
    att = MaskedAttention(8, heads=2).double().eval()
    x, kv = torch.randn(3, 4, 8, dtype=torch.float64), torch.randn(3, 5, 8, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.bool)
    q = att.q(x).view(3, 4, 2, 4).transpose(1, 2)
    k = att.k(kv).view(3, 5, 2, 4).transpose(1, 2)
    v = att.v(kv).view(3, 5, 2, 4).transpose(1, 2)
    want = []
    for i in range(2):  # the samples with keys; the third has none and must give exactly zero
        s = q[i] @ k[i][:, mask[i]].transpose(-1, -2) / 2.0  # sqrt(d_head = 4)
        want.append(att.out((torch.softmax(s, -1) @ v[i][:, mask[i]]).transpose(0, 1).reshape(4, 8)))
    got = att(x, kv, mask)
    assert torch.allclose(got[:2], torch.stack(want), atol=1e-10)
    assert torch.equal(got[2], att.out.bias.expand(4, 8))  # zero attention, then the output map


@pytest.mark.parametrize("name", ["tcmf", "sf", "tfn", "mult", "mmml"])
def test_built_for_text_and_audio_only(name):
    """A model built without a modality (here visual): it is ignored if given, and never required."""
    torch.manual_seed(0)
    f = make_fusion(name, {"text": 8, "audio": 6}).eval()
    h, mask = inputs()
    two = ({m: h[m] for m in ("text", "audio")}, {m: mask[m] for m in ("text", "audio")})
    out = f(*two)
    assert out.pooled.shape == (4, f.out_dim) and torch.isfinite(out.pooled).all()
    assert torch.equal(f(h, mask).pooled, out.pooled)
    assert set(out.per_modality) == {"text", "audio"}
