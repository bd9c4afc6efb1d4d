"""`joint` (boosting-msa Eq. 2, MMML's multi-loss): main and unimodal tasks together, L = Σ_k α_k L_k."""

from __future__ import annotations

from .base import Scheme


class Joint(Scheme):
    name = "joint"
    needs_modal_heads = True

    def weights(self, phase: str, alphas: dict[str, float]) -> dict[str, float]:
        return dict(alphas)
