"""The toolkit's one lock: an output folder's `_lock` (two runs on one folder would race on the same
shards) and the numba kernel cache's compile lock.

An advisory `flock`: the kernel drops it when the holder dies, even by SIGKILL, so a crash never
leaves anything locked. The file records who holds it, for the error message.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from ..errors import KebrError, LockedError


class OutputLock:
    """Context manager holding an exclusive lock on `path`: refused at once (LockedError naming the holder)
    when another process holds it, or, with `on_wait`, waited for (`on_wait` called once first)."""

    def __init__(self, path: Path, command: str = "", on_wait: Callable[[], None] | None = None) -> None:
        self.path = path
        self.command = command
        self.on_wait = on_wait
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock (see the class); a `path` planted as a symlink is refused (KebrError), never followed."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:  # no-follow: a `_lock` planted as a symlink must not get its target truncated
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            raise KebrError(f"{self.path} is a symlink, not the lock file this toolkit writes; remove it "
                            "(rm, which does not touch its target) and rerun") from None
        try:
            self._flock(fd)
        except BaseException:
            os.close(fd)
            raise
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "command": self.command}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd

    def _flock(self, fd: int) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if self.on_wait is None:
                raise LockedError(
                    f"{self.path.parent} is in use by another run ({_read_holder(fd)}). Wait for it to finish, "
                    "or use another --out folder. A crashed run releases the lock by itself."
                ) from None
            self.on_wait()
            fcntl.flock(fd, fcntl.LOCK_EX)

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "OutputLock":
        self.acquire()
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return "holder unknown"
    if not info:
        return "holder unknown"
    return f"pid {info.get('pid')} on {info.get('host')} since {info.get('since')}: {info.get('command', '')}".strip()
