"""Exceptions that reach the user: each carries a message that says what to do next."""

from __future__ import annotations

import errno
import os


class KebrError(Exception):
    """An error the user can act on; the CLI prints its message without a traceback."""

    exit_code = 2


class ConfigError(KebrError):
    """A configuration file or `--set` override is invalid."""


class PlanError(KebrError):
    """The source cannot be indexed, or the frozen plan does not match this run."""


class PlanMismatch(PlanError):
    """The output folder's frozen plan was made from another source, layout or shard size (or by an older
    toolkit): the folder belongs to another run."""


class StaleOutputError(KebrError):
    """Existing outputs were made with another configuration."""


class LockedError(KebrError):
    """Another run holds the output folder's lock."""


class UnsafeFolder(KebrError):
    """A folder the toolkit writes into inside an output or run folder is a symlink, or not a folder."""


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
    """The machine, not the clip, failed (disk full, I/O error, missing binary, rejected credentials).

    Raised inside a clip's processing it aborts the shard (exit 3, resumable): committing it as the
    clip's `failed` row would make a plain rerun say "up to date" about work that never happened.
    """

    exit_code = 3


#: errno values that describe the machine, not the clip being processed
ENVIRONMENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS})
_GOOGLE_CREDENTIAL_ERRORS = frozenset({"Unauthenticated", "PermissionDenied"})


def environment_problem(exc: BaseException) -> str | None:
    """Why `exc` (or an exception it was raised from or while handling) is the environment's fault, or
    None for a clip's own problem. The one place that draws this line: full, read-only or failing
    disks, and credentials Google rejects. A stage that wraps such an error in a ClipError is still
    caught, through the exception's `__cause__`/`__context__` chain."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        module, name = type(e).__module__, type(e).__name__
        if isinstance(e, EnvironmentFailure):
            return str(e)
        if isinstance(e, OSError) and e.errno in ENVIRONMENT_ERRNOS:
            return f"{e.strerror}" + (f": {e.filename}" if e.filename else "")
        if module.startswith("google.auth") or (module == "google.api_core.exceptions"
                                                and name in _GOOGLE_CREDENTIAL_ERRORS):
            return f"Google rejected the credentials ({name}): check GOOGLE_APPLICATION_CREDENTIALS"
        e = e.__cause__ or e.__context__
    return None


#: free bytes below which a folder's file system counts as full when a child process failed in it
MIN_FREE_BYTES = 64 << 10


def full_disk(folder: str | os.PathLike[str]) -> str | None:
    """Why `folder`'s file system is the likely cause of a child process's failure (no space or no
    inodes left), or None. For tools such as OpenFace that report a full disk only as an exit code."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return None
    if st.f_bavail * st.f_frsize < MIN_FREE_BYTES or (st.f_files and st.f_favail == 0):
        return f"{os.strerror(errno.ENOSPC)}: {folder} has {st.f_bavail * st.f_frsize} bytes free"
    return None


def redact(text: str) -> str:
    """`text` without the value of GOOGLE_APPLICATION_CREDENTIALS (the key file's path), for logs and messages."""
    secret = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    return text.replace(secret, "$GOOGLE_APPLICATION_CREDENTIALS") if secret else text
