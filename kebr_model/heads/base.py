"""The interface every head kind shares: how the model's heads are built.

The model has three roles of head, each mapping a (B, d_in) vector to (B, 1): `pretrain` (on the fused
text at the [MASK] position), `finetune` (on the fusion's pooled vector: the main task) and `modal` (one
per non-verbal or text modality with α_m > 0, on that modality's clip vector). A head kind declares its
name (the `head` key's value), its settings dataclass (its `[train]` keys, declared with
`kebr_data.config.setting`) and `build`, the constructor the model calls for each role.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from torch import nn

from kebr_data.settings import NoSettings

ROLES = ("pretrain", "finetune", "modal")


class HeadKind(ABC):
    """Base class of a head kind, given its settings object."""

    name: str = ""
    Settings: type = NoSettings

    def __init__(self, settings: Any) -> None:
        self.settings = settings

    @abstractmethod
    def build(self, role: str, d_in: int) -> nn.Module:
        """The head of `role` (one of ROLES) on inputs of width `d_in`: (B, d_in) -> (B, 1)."""
