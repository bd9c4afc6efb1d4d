"""The non-finite guard of a training step: which loss term or gradient went NaN or infinite. The
trainer stops on it (`nan_policy = stop`, exit 3, nothing saved after the last good checkpoint) or
skips the batch (`skip_batch`); under DDP every rank gets the same answer, so all stop or skip together."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from kebr_data.errors import KebrError

#: the loss terms of `Trainer.loss` as the user reads them (`task_<m>`: a unimodal head's loss)
TERM_NAMES = {"loss": "the total loss", "task": "the task loss", "l1": "the L1 loss", "mcc": "the MCC term",
              "mcc_audio": "the MCC's audio term", "mcc_visual": "the MCC's visual term"}


class NonFiniteError(KebrError):
    """Training met a non-finite loss or gradient and stopped; the last good checkpoint is kept."""

    exit_code = 3


def nonfinite_terms(terms: dict[str, torch.Tensor], distributed: bool = False) -> list[str]:
    """The keys of `terms` whose value is NaN or infinite here or, when `distributed`, on any rank
    (one all-reduce: every rank returns the same list, so no rank steps while another skips)."""
    flags = torch.stack([~torch.isfinite(v.detach().float()).all() for v in terms.values()]).float()
    if distributed:
        torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
    return [k for k, bad in zip(terms, flags.tolist()) if bad]


def describe_terms(keys: Iterable[str]) -> str:
    """'the MCC term', 'the task loss and the audio head's loss', ...: the parts that went non-finite
    (the total only when every part is finite, i.e. their sum overflowed; L1 only without the task loss)."""
    keys = list(keys)
    parts = [k for k in keys if k not in ("loss", "l1")] or [k for k in keys if k == "l1"] or keys
    names = [TERM_NAMES.get(k) or f"the {k.removeprefix('task_')} head's loss" for k in parts]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def grad_norm(model: nn.Module) -> torch.Tensor:
    """The total L2 norm of the model's gradients (non-finite when any gradient is)."""
    return nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])


def nonfinite_gradient(model: nn.Module) -> str:
    """Names the first parameter whose gradient holds a NaN or infinity, for the stop message."""
    name = next((n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()),
                "an overflow of the total norm")
    return f"the gradient ({name})"
