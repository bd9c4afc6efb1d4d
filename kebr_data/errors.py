"""Exceptions that reach the user: each carries a message that says what to do next."""

from __future__ import annotations


class KebrError(Exception):
    """An error the user can act on; the CLI prints its message without a traceback."""

    exit_code = 2


class ConfigError(KebrError):
    """A configuration file or `--set` override is invalid."""


class PlanError(KebrError):
    """The source cannot be indexed, or the frozen plan does not match this run."""


class StaleOutputError(KebrError):
    """Existing outputs were made with another configuration."""


class LockedError(KebrError):
    """Another run holds the output folder's lock."""


class PrerequisiteError(KebrError):
    """A selected stage lacks a binary, model or Python extra."""


class RunAborted(KebrError):
    """Shards could not be finished (a worker died or the toolkit hit a bug); done work is kept."""

    exit_code = 3


class ClipError(Exception):
    """One clip cannot be processed; becomes a `failed` (or `skipped`) row, never a crash.

    `error` is a short machine-readable class (e.g. `no_audio_track`), `message` the detail.
    """

    status = "failed"

    def __init__(self, error: str, message: str = "") -> None:
        super().__init__(f"{error}: {message}" if message else error)
        self.error = error
        self.message = message


class ClipSkipped(ClipError):
    """The clip is valid but has nothing for this stage (e.g. no audio track, silence)."""

    status = "skipped"


class EnvironmentFailure(KebrError):
    """The machine, not the clip, failed (disk full, I/O error, missing binary, rejected credentials)."""

    exit_code = 3
