"""Parameter and FLOP counts per model (as SKESL's Table 10 reports), via torch.utils.flop_counter.

FLOPs are those of one forward pass on the given inputs as torch counts them: matrix products
and convolutions (2 per multiply-add); elementwise work, softmax and norms are not counted.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (only those with requires_grad when `trainable_only`)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def count_flops(module: nn.Module, inputs: Any) -> int:
    """FLOPs of `module(*inputs)` (a tuple) or `module(inputs)`, forward only, without gradients."""
    args = inputs if isinstance(inputs, tuple) else (inputs,)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        module(*args)
    return int(counter.get_total_flops())
