"""`single`: the main task only (α = {main: 1}); encoders, fusion and main head train together."""

from __future__ import annotations

from .base import Scheme


class Single(Scheme):
    name = "single"
