"""The multimodal cosine constraint (KEBR paper §3.4, Eq. 9-13) and the released code's variants.

`paper` (default): for sample i, c_m = cos(text, modality m) for m in {a, v} (Eq. 9),
θ_m = arccos(c_m), y = cos((θ_a + θ_v) / 2) · exp(θ_a - θ_v) (Eq. 12),
f_i = s · |cos(π (y + g))| (Eq. 11), plus s when a cosine is negative (Fig. 3);
L_mcc = mean_i f_i (Eq. 10).

`released-pretrain` / `released-finetune`: the formulas of the released KEBR code,
with m = (a + b) / 2 of the two cosines, for reproducing its numbers.

The cosines are computed in one of two spaces (`mcc.space`): `pooled` (default) compares the
masked mean of the fused text with the masked mean of each modality's value projection;
`flatten` reproduces the released code: the fused text against the **raw** audio and visual inputs
(their own widths per frame, not their projections), each flattened, L2-normalised, the shorter
tiled by an integer factor and zero-padded to the longer.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

FORMS = ("paper", "released-pretrain", "released-finetune")
SPACES = ("pooled", "flatten")


def eq11(c_a: torch.Tensor, c_v: torch.Tensor, s: float = 1.0, g: float = 0.2) -> torch.Tensor:
    """Eq. 11-12 alone: s · |cos(π (y + g))|, y = cos((θ_a + θ_v) / 2) · exp(θ_a - θ_v)."""
    theta_a = torch.arccos(c_a.clamp(-1.0 + 1e-7, 1.0 - 1e-7))
    theta_v = torch.arccos(c_v.clamp(-1.0 + 1e-7, 1.0 - 1e-7))
    y = torch.cos((theta_a + theta_v) / 2) * torch.exp(theta_a - theta_v)  # Eq. 12
    return s * torch.abs(torch.cos(math.pi * (y + g)))  # Eq. 11


def mcc_paper(c_a: torch.Tensor, c_v: torch.Tensor, s: float = 1.0, g: float = 0.2,
              negative: str = "constant") -> torch.Tensor:
    """Per-sample f_i of Eq. 11 with a penalty when a cosine is negative: `constant` adds s (Fig. 3;
    no gradient: it only raises the loss), `mean` replaces f by s(1 - m) with m = (c_a + c_v) / 2 (the
    released pre-training form), `abs` by s(1 + |c_a| + |c_v|) (the released fine-tuning form); both
    push the cosines up."""
    f = eq11(c_a, c_v, s, g)
    neg = (c_a < 0) | (c_v < 0)
    if negative == "constant":
        return f + s * neg.to(f.dtype)
    if negative == "mean":
        return torch.where(neg, s * (1 - (c_a + c_v) / 2), f)
    if negative == "abs":
        return torch.where(neg, s * (1 + c_a.abs() + c_v.abs()), f)
    raise ValueError(f"unknown mcc_negative {negative!r}; choose constant, mean or abs")


def mcc_released_pretrain(c_a: torch.Tensor, c_v: torch.Tensor, s: float = 1.0) -> torch.Tensor:
    """Released pre-training code: l = s(1 - m) if m < 0 else s|cos(π(m + 1/4))|, m = (a + b) / 2."""
    m = (c_a + c_v) / 2
    return torch.where(m < 0, s * (1 - m), s * torch.abs(torch.cos(math.pi * (m + 0.25))))


def mcc_released_finetune(c_a: torch.Tensor, c_v: torch.Tensor) -> torch.Tensor:
    """Released fine-tuning code: |cos(π(m + 0.4) exp(0.5|a - b|))| if a, b >= 0 else 1 + |a| + |b|."""
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


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over dim 1 of the positions where `mask` is true (zero for an all-false row)."""
    m = mask.to(x.dtype).unsqueeze(-1)
    return (x * m).sum(1) / m.sum(1).clamp(min=1.0)


def flatten_cosine(a: torch.Tensor, a_mask: torch.Tensor, b: torch.Tensor, b_mask: torch.Tensor) -> torch.Tensor:
    """Per-sample cosine of two sequences as the released code computes it: each sample's valid
    positions flattened and L2-normalised, the shorter tiled by an integer factor, zero-padded."""
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
