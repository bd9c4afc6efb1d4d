"""The multimodal cosine constraint (KEBR paper §3.4, Eq. 9-13) and the released code's variants.

`paper` (default): for sample i, c_m = cos(text, modality m) for m in {a, v} (Eq. 9),
θ_m = arccos(c_m), y = cos((θ_a + θ_v) / 2) · exp(θ_a - θ_v) (Eq. 12),
f_i = s · |cos(π (y + g))| (Eq. 11), plus s when a cosine is negative (Fig. 3);
L_mcc = mean_i f_i (Eq. 10).

`released-pretrain` / `released-finetune`: the per-sample formulas of the released KEBR code
(aoqzhu/KEBR, pretrain.py:83-85, main.py:122-125), with m = (a + b) / 2 of the two cosines.

The cosines are computed in one of three spaces (`mcc.space`): `pooled` (default) compares the
masked mean of the fused text with the masked mean of each modality's value projection;
`flatten` compares the fused text with the **raw** audio and visual inputs pairwise, over valid
positions only: each flattened, L2-normalised, the shorter tiled by an integer factor and
zero-padded to the longer; `released` is the release's own computation (models.py:21-62, 158-169,
250-260), see `released_cosines`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

FORMS = ("paper", "released-pretrain", "released-finetune")
SPACES = ("pooled", "flatten", "released")


def eq11(c_a: torch.Tensor, c_v: torch.Tensor, s: float = 1.0, g: float = 0.2) -> torch.Tensor:
    """Eq. 11-12 alone: s · |cos(π (y + g))|, y = cos((θ_a + θ_v) / 2) · exp(θ_a - θ_v)."""
    theta_a = torch.arccos(c_a.clamp(-1.0 + 1e-7, 1.0 - 1e-7))
    theta_v = torch.arccos(c_v.clamp(-1.0 + 1e-7, 1.0 - 1e-7))
    y = torch.cos((theta_a + theta_v) / 2) * torch.exp(theta_a - theta_v)  # Eq. 12
    return s * torch.abs(torch.cos(math.pi * (y + g)))  # Eq. 11


def mcc_paper(c_a: torch.Tensor, c_v: torch.Tensor, s: float = 1.0, g: float = 0.2,
              negative: str = "constant") -> torch.Tensor:
    """Per-sample f_i of Eq. 11 with a penalty when either cosine is negative: `constant` adds s (Fig. 3;
    no gradient: it only raises the loss), `mean` replaces f by s(1 - m) with m = (c_a + c_v) / 2 (the
    released pre-training penalty, which the release applies only when m < 0, pretrain.py:84), `abs` by
    s(1 + |c_a| + |c_v|) (the released fine-tuning penalty, main.py:123-124); both push the cosines up."""
    f = eq11(c_a, c_v, s, g)
    neg = (c_a < 0) | (c_v < 0)
    if negative == "constant":
        return f + s * neg.to(f.dtype)
    if negative == "mean":
        return torch.where(neg, s * (1 - (c_a + c_v) / 2), f)
    if negative == "abs":
        return torch.where(neg, s * (1 + c_a.abs() + c_v.abs()), f)
    raise ValueError(f"unknown mcc_negative {negative!r}; choose constant, mean or abs")


def mcc_released_pretrain(c_a: torch.Tensor, c_v: torch.Tensor, s: float = 1.0, angle: float = 0.25) -> torch.Tensor:
    """Released pre-training code (pretrain.py:83-85): l = s(1 - m) if m < 0 else s|cos(π(m + angle))|,
    m = (a + b) / 2, angle 1/4. With angle 0.4 and s = 1 it is the release's validation term (main.py:158-159)."""
    m = (c_a + c_v) / 2
    return torch.where(m < 0, s * (1 - m), s * torch.abs(torch.cos(math.pi * (m + angle))))


#: the angle of the release's fine-tuning script (main.py:96), used by its validation loss
RELEASED_VALID_ANGLE = 0.4


def mcc_released_valid(c_a: torch.Tensor, c_v: torch.Tensor) -> torch.Tensor:
    """The MCC term of the release's validation loss (main.py:158-159), on which it selects its model
    (main.py:244): 1 - m if m < 0 else |cos(π(m + 0.4))|, m = (a + b) / 2; not its training term."""
    return mcc_released_pretrain(c_a, c_v, 1.0, RELEASED_VALID_ANGLE)


def mcc_released_finetune(c_a: torch.Tensor, c_v: torch.Tensor) -> torch.Tensor:
    """Released fine-tuning code (main.py:122-125): |cos(π(m + 0.4) exp(0.5|a - b|))| if a, b >= 0,
    else 1 + |a| + |b|."""
    m = (c_a + c_v) / 2
    ok = (c_a >= 0) & (c_v >= 0)
    return torch.where(ok, torch.abs(torch.cos(math.pi * (m + 0.4) * torch.exp(0.5 * torch.abs(c_a - c_v)))),
                       1 + torch.abs(c_a) + torch.abs(c_v))


def per_sample(form: str, c_a: torch.Tensor, c_v: torch.Tensor, s: float = 1.0, g: float = 0.2,
               negative: str = "constant") -> torch.Tensor:
    if form == "paper":
        return mcc_paper(c_a, c_v, s, g, negative)
    if form == "released-pretrain":
        return mcc_released_pretrain(c_a, c_v, s)
    if form == "released-finetune":
        return mcc_released_finetune(c_a, c_v)
    raise ValueError(f"unknown mcc.form {form!r}; choose one of {', '.join(FORMS)}")


def loss_weight(form: str) -> float:
    """How the released code adds its term to L1 (0.5 in pre-training, 1 elsewhere)."""
    return 0.5 if form == "released-pretrain" else 1.0


def flatten_cosine(a: torch.Tensor, a_mask: torch.Tensor, b: torch.Tensor, b_mask: torch.Tensor) -> torch.Tensor:
    """Per-sample cosine of two sequences, pairwise over valid positions: each sample's valid positions
    flattened and L2-normalised, the shorter tiled by an integer factor, zero-padded to the longer.
    Not the release's computation (that is `released_cosines`: three-way, unmasked)."""
    out = []
    for i in range(a.shape[0]):
        x = F.normalize(a[i][a_mask[i]].reshape(-1), dim=0)
        y = F.normalize(b[i][b_mask[i]].reshape(-1), dim=0)
        if x.numel() == 0 or y.numel() == 0:
            out.append(x.new_zeros(()))
            continue
        short, long_ = (x, y) if x.numel() <= y.numel() else (y, x)
        short = short.repeat(long_.numel() // short.numel())
        short = F.pad(short, (0, long_.numel() - short.numel()))
        out.append(F.cosine_similarity(short, long_, dim=0))
    return torch.stack(out)


def released_cosines(text: torch.Tensor, frames: dict[str, torch.Tensor], present: dict[str, torch.Tensor],
                     audio_for_visual: bool = False) -> dict[str, torch.Tensor]:
    """c_m per sample as the release computes it (models.py:158-169, 250-260 with 21-62): the fused text
    and every raw input, padding included (no masks), each flattened per sample and L2-normalised;
    all three tiled by (widest width // own width) when that is >= 2 and zero-padded to the widest;
    c_m = <m, text> / (|m| |text|) with no epsilon, so an all-zero input gives NaN as in the release.

    `audio_for_visual` reproduces the release's bug at models.py:54: when the visual input needs tiling,
    the (already tiled) audio, tiled again by the visual's factor, replaces it. A sample whose `present[m]`
    is false (no frame of m at all, which the release never sees) gets 0 instead of NaN."""
    flat = {"text": F.normalize(text.flatten(1), dim=1)}
    flat |= {m: F.normalize(x.flatten(1), dim=1) for m, x in frames.items()}
    widest = max(x.shape[1] for x in flat.values())
    factor = {k: widest // x.shape[1] for k, x in flat.items()}
    tiled = {k: x.repeat(1, factor[k]) if factor[k] > 1 else x for k, x in flat.items()}
    if audio_for_visual and "audio" in tiled and factor.get("visual", 1) > 1:
        tiled["visual"] = tiled["audio"].repeat(1, factor["visual"])
    widest = max(x.shape[1] for x in tiled.values())
    t = F.pad(tiled["text"], (0, widest - tiled["text"].shape[1]))
    out = {}
    for m in frames:
        x = F.pad(tiled[m], (0, widest - tiled[m].shape[1]))
        ok = present[m]
        denom = torch.where(ok, x.norm(dim=1) * t.norm(dim=1), torch.ones_like(ok, dtype=x.dtype))
        out[m] = torch.where(ok, (x * t).sum(1) / denom, torch.zeros_like(denom))
    return out
