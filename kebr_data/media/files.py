"""Checks on an input file before a subprocess is pointed at it."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from ..errors import ClipError


def check_readable(path: Path) -> None:
    """Raise ClipError for a missing, unreadable, looping or empty file."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ClipError("missing_file", f"{path} does not exist (or is a broken symlink)") from None
    except OSError as exc:
        kind = "symlink_loop" if exc.errno == errno.ELOOP else "unreadable"
        raise ClipError(kind, f"{path}: {exc.strerror}") from None
    if not os.path.isfile(path):
        raise ClipError("not_a_file", f"{path} is not a regular file")
    if st.st_size == 0:
        raise ClipError("empty_file", f"{path} is empty (0 bytes)")
    try:
        with open(path, "rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise ClipError("unreadable", f"{path}: {exc.strerror}") from None


SIDE_FILE_MAX_BYTES = 16 << 20


def read_side_file(path: Path, root: Path | None, max_bytes: int = SIDE_FILE_MAX_BYTES) -> tuple[bytes, str]:
    data = Path(path).read_bytes()
    return data, f"{path} ({len(data)} bytes)"
