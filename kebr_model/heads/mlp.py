"""`mlp`, the default head kind: KEBR's Eq. 15 head d -> 256 -> 1 with ReLU, its depth and dropout
configurable (MMML's three fully connected layers: head_layers = 3; the release's dropout between the
ReLU and the last Linear: head_dropout_at = hidden)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

from kebr_data.config import setting

from .base import HeadKind

HEAD_DROPOUT_AT = ("input", "hidden")


def mlp(d_in: int, hidden: int = 256, layers: int = 2) -> nn.Module:
    """`layers` linear maps d_in -> hidden -> ... -> 1 with ReLU between (2: KEBR's Eq. 15 head;
    3: MMML's three fully connected layers; 1: a linear read-out)."""
    if layers < 1:
        raise ValueError(f"a head needs at least one layer, got {layers}")
    mods: list[nn.Module] = []
    d = d_in
    for _ in range(layers - 1):
        mods += [nn.Linear(d, hidden), nn.ReLU()]
        d = hidden
    mods.append(nn.Linear(d, 1))
    return nn.Sequential(*mods)


def head(d: int, hidden: int = 256, dropout: float = 0.0, layers: int = 2, dropout_at: str = "input") -> nn.Module:
    """MLP d -> 256 -> 1 with ReLU (Eq. 15; `layers` = 3: MMML's three fully connected layers) with
    dropout on its input (`dropout_at = input`) or between the last ReLU and the last Linear (`hidden`:
    the release, fc2(dropout(relu(fc1(x)))) at models.py:150, 241, with 0.5). The parameters keep their
    names either way (dropout and ReLU hold none), so checkpoints load across the two."""
    if dropout_at not in HEAD_DROPOUT_AT:
        raise ValueError(f"unknown head dropout position {dropout_at!r}; choose one of {', '.join(HEAD_DROPOUT_AT)}")
    mods = list(mlp(d, hidden, layers))
    if dropout_at == "input" or layers < 2:
        return nn.Sequential(nn.Dropout(dropout), *mods)
    mods[-2] = nn.Sequential(mods[-2], nn.Dropout(dropout))
    return nn.Sequential(nn.Identity(), *mods)


@dataclass
class MLPSettings:
    """The `mlp` head kind's options (`[train]` keys)."""

    head_dropout: float = setting(0.0, "dropout in the regression heads (the release: 0.5, models.py:232)",
                                  min=0.0, max=1.0)
    head_dropout_at: Literal["input", "hidden"] = setting(
        "input", "where head_dropout sits: input (on the head's input) | hidden (between the ReLU and the last "
                 "Linear, the release, models.py:150, 241)")
    head_layers: int = setting(2, "fine-tuning head layers (2: KEBR's d->256->1; 3: MMML's three FC layers)", min=1)
    modal_head_layers: int = setting(2, "unimodal head layers (2: d->256->1; 1: MMML's 'additional "
                                        "fully-connected layer')", min=1)


class MLPHead(HeadKind):
    name = "mlp"
    Settings = MLPSettings

    def build(self, role: str, d_in: int) -> nn.Module:
        s = self.settings
        if role == "modal":  # no dropout: the unimodal heads read clip vectors straight from the encoders
            return head(d_in, layers=s.modal_head_layers)
        layers = s.head_layers if role == "finetune" else 2
        return head(d_in, dropout=s.head_dropout, layers=layers, dropout_at=s.head_dropout_at)
