"""The trainer's refusals: one line naming the fix, exit 2 (the exit code comes from kebr_data's
`KebrError`, as on the data side)."""

from __future__ import annotations

from kebr_data.errors import KebrError


class TrainSetupError(KebrError):
    """The run cannot start (or would train on nothing); the message says what to do."""
