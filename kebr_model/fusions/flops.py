"""Parameter and FLOP counts per model (as SKESL's Table 10 reports), via torch.utils.flop_counter.

FLOPs are those of one forward pass on the given inputs as torch counts them: matrix products
and convolutions (2 per multiply-add); elementwise work, softmax and norms are not counted.
torch has no formula for its fused CPU attention kernel (it would count 0); we add the one it
uses for the other attention kernels (Q K^T and the product with V).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

CPU_ATTENTION = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu


def _cpu_attention_flops(query: Any, key: Any, value: Any, *args: Any, out_val: Any = None, **kwargs: Any) -> int:
    return sdpa_flop_count(query.shape, key.shape, value.shape)


_cpu_attention_flops._get_raw = True  # called with the tensors, not their shapes


def count_params(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (only those with requires_grad when `trainable_only`)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def count_flops(module: nn.Module, inputs: Any) -> int:
    """FLOPs of `module(*inputs)` (a tuple) or `module(inputs)`, forward only, without gradients."""
    args = inputs if isinstance(inputs, tuple) else (inputs,)
    counter = FlopCounterMode(display=False, custom_mapping={CPU_ATTENTION: _cpu_attention_flops})
    with torch.no_grad(), counter:
        module(*args)
    return int(counter.get_total_flops())
