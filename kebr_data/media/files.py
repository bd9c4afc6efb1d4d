"""Checks on an input file before a subprocess is pointed at it, and the one reader of side files.

`plan_media` is the one way a stage gets a clip's media file from its plan row: readable, and still
the file the index saw (same size and mtime), so a file replaced after indexing is never decoded as
if it were the planned clip.

Side files are the small files read beside a clip's media: sidecar transcripts (`<media>.txt`)
and OpenFace CSVs (`visual.backend = "openface-csv"`). `read_side_file` reads only regular files
(a FIFO would block a worker forever, `/dev/zero` never ends), at most `SIDE_FILE_MAX_BYTES`, and
never through a symlink that leaves the tree it belongs to (the media file's folder, or
`visual.csv_dir`): a link to `/etc/passwd` must not become a transcript. Links inside the tree are
followed. It returns what it read, so the row can say so.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

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


def _when(mtime_ns: int | None) -> str:
    return "?" if mtime_ns is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(mtime_ns / 1e9))


def plan_media(plan: Mapping[str, Any], kind: str) -> Path:
    """The plan row's `{kind}_path` (kind `audio` or `video`), checked by `check_readable` and against
    the size and mtime the index recorded: a mismatch is ClipError `source_changed` naming `--replan`."""
    path = Path(plan[f"{kind}_path"])
    check_readable(path)
    size, mtime_ns = plan.get(f"{kind}_size"), plan.get(f"{kind}_mtime_ns")
    if size is None and mtime_ns is None:  # not fingerprinted (imported features, hand-made plans)
        return path
    st = os.stat(path)
    if (st.st_size, st.st_mtime_ns) != (size, mtime_ns):
        raise ClipError("source_changed", f"{path} changed after indexing ({size} bytes modified {_when(mtime_ns)} "
                                          f"then, {st.st_size} bytes modified {_when(st.st_mtime_ns)} now): rerun "
                                          "extract with --replan to re-index it (only shards whose clips changed "
                                          "are recomputed)")
    return path


#: the largest side file read (an OpenFace CSV of a 10-minute 30 fps clip is about 45 MiB)
SIDE_FILE_MAX_BYTES = 256 << 20


def read_side_file(path: Path, root: Path | None, max_bytes: int = SIDE_FILE_MAX_BYTES) -> tuple[bytes, str]:
    """The bytes of the regular file `path` and a line saying what was read (path, size, target).

    Raises FileNotFoundError when it does not exist, and ClipError for a file that is not regular
    (`not_a_file`), too large (`too_large`), resolves outside `root` (`outside_source`) or cannot be
    read (`unreadable`). The resolved file is opened with O_NOFOLLOW and O_NONBLOCK, and checked with
    fstat on the open descriptor, so a file swapped after the checks is not read either.
    """
    real = Path(os.path.realpath(path))
    if root is not None:
        top = Path(os.path.realpath(root))
        if real != top and top not in real.parents:
            raise ClipError("outside_source", f"{path} is a symlink to {real}, outside {top}; side files are "
                                              "only read inside their dataset's tree")
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise ClipError("unreadable", f"{path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ClipError("not_a_file", f"{path} is not a regular file")
        if st.st_size > max_bytes:
            raise ClipError("too_large", f"{path} has {st.st_size} bytes, more than the {max_bytes} read "
                                         "from a side file")
        chunks, size = [], 0
        while size <= max_bytes and (chunk := os.read(fd, min(1 << 20, max_bytes + 1 - size))):
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise ClipError("unreadable", f"{path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    if size > max_bytes:
        raise ClipError("too_large", f"{path} grew beyond {max_bytes} bytes while being read")
    target = f" -> {real}" if real != Path(os.path.abspath(path)) else ""
    return b"".join(chunks), f"read {path}{target} ({size} bytes)"
