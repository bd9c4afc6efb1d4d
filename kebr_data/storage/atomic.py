"""Atomic file commits: write `<name>.tmp-<uuid>`, fsync, rename into place, fsync the folder.

A reader therefore sees either the old complete file or the new complete file, never a torn one,
and a crash leaves at most a stray `.tmp-*` file that the next run sweeps.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
import uuid
from pathlib import Path
from typing import Any, BinaryIO, Callable, TextIO

from ..errors import UnsafeFolder

TMP_INFIX = ".tmp-"


def tmp_path_for(path: Path) -> Path:
    """A unique temporary sibling of `path` that `sweep_tmp` recognises."""
    return path.with_name(f"{path.name}{TMP_INFIX}{uuid.uuid4().hex}")


def fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def real_dir(root: Path, folder: Path, create: bool = True) -> Path:
    """Create `folder` and every folder between `root` and it (with `create=False`, only check those
    that exist); each must be a real directory inside `root`, checked with no-follow opens one component
    at a time from `root`: a symlink planted there (to anywhere), a file, or a path leading out of `root`
    refuses with UnsafeFolder and nothing is written through it. `root` itself is the user's choice
    (`--out` may be a symlink) and is created as given. Returns `folder`.

    Every folder the toolkit writes into under an output folder (stage tables, markers, logs, report,
    export, `_limit`) or a kebr-train run folder goes through here."""
    try:
        parts = Path(os.path.abspath(folder)).relative_to(os.path.abspath(root)).parts
    except ValueError:
        raise UnsafeFolder(f"{folder} is not inside {root}") from None
    if create:
        root.mkdir(parents=True, exist_ok=True)
    elif not root.is_dir():
        return folder
    fd = os.open(root, _DIR_FLAGS)
    try:
        here = root
        for part in parts:
            here = here / part
            if create:
                try:
                    os.mkdir(part, 0o777, dir_fd=fd)
                except FileExistsError:
                    pass
            try:
                child = os.open(part, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
            except FileNotFoundError:
                if create:
                    raise
                break
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                what = "a symlink" if os.path.islink(here) else "not a folder"
                raise UnsafeFolder(f"{here} is {what}, not a folder this toolkit writes into; remove it (rm, "
                                   "which does not touch a link's target) and rerun") from None
            os.close(fd)
            fd = child
    finally:
        os.close(fd)
    return folder


def make_parent(path: Path, within: Path | None) -> None:
    """The folder of `path`, created: through `real_dir` when `path` lies in the output or run folder
    `within`, else as given (a file the user named)."""
    if within is None:
        path.parent.mkdir(parents=True, exist_ok=True)
    else:
        real_dir(within, path.parent)


def fsync_file(path: Path) -> None:
    """Make the bytes written to `path` durable."""
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def atomic_commit(path: Path, fill: Callable[[Path], None], within: Path | None = None) -> tuple[int, str]:
    """Commit the file that `fill(tmp)` writes at a temporary sibling path (for writers that want a path, such
    as h5py): fsync it, rename it onto `path`, fsync the folder; `within` as in `make_parent`. Nothing is left
    behind when `fill` raises. Returns (size, sha256). The one place the toolkit commits a file."""
    make_parent(path, within)
    tmp = tmp_path_for(path)
    try:
        fill(tmp)
        fsync_file(tmp)
        size, digest = file_digest(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return size, digest


def atomic_write(path: Path, write: Callable[[BinaryIO], None], within: Path | None = None) -> tuple[int, str]:
    """Commit the bytes produced by `write(fileobj)` to `path` (its folders checked by `real_dir` when
    `within` names the output folder holding it); return (size, sha256)."""
    def fill(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            write(fh)

    return atomic_commit(path, fill, within)


def atomic_write_bytes(path: Path, data: bytes, within: Path | None = None) -> tuple[int, str]:
    """Commit `data` to `path` atomically (see `atomic_write` for `within`)."""
    return atomic_write(path, lambda fh: fh.write(data), within)


def atomic_write_json(path: Path, obj: Any, within: Path | None = None) -> None:
    """Commit `obj` as pretty, key-sorted JSON (see `atomic_write` for `within`)."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode(), within)


def open_new_text(path: Path, within: Path | None = None) -> TextIO:
    """Open `path` for writing from scratch (a log), never through a symlink planted there: the old
    entry is unlinked (a symlink is removed, not followed) and the file created with O_EXCL; its folders
    are checked by `real_dir` when `within` names the output folder holding it."""
    make_parent(path, within)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    return os.fdopen(fd, "w", encoding="utf-8")


def open_append_text(path: Path, within: Path | None = None) -> TextIO:
    """Open `path` for appending (a log kept across resumes, such as a run's metrics.jsonl), never through
    a symlink planted there: a symlink, FIFO or device at `path` is replaced by a new empty file (as
    `open_new_text` does), a regular file is appended to; its folders are checked by `real_dir` when
    `within` names the output or run folder holding it."""
    make_parent(path, within)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENXIO):  # ENXIO: a FIFO nobody reads
            raise
        return open_new_text(path, within)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return open_new_text(path, within)
    os.set_blocking(fd, True)
    return os.fdopen(fd, "a", encoding="utf-8")


class NotRegularFile(ValueError):
    """A control file or table of an output folder is a symlink, FIFO, device or folder: never read it."""


#: the largest marker, plan marker or run record read (a plan marker lists at most 1000 rejected entries)
CONTROL_FILE_MAX_BYTES = 64 << 20


def open_regular(path: Path) -> int:
    """A read-only descriptor of the regular file `path`, opened without following a symlink planted
    there and without blocking on a FIFO (checked with fstat on the open descriptor). Raises
    FileNotFoundError when absent, NotRegularFile for anything but a regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotRegularFile(f"{path} is a symlink, not a file this toolkit wrote") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise NotRegularFile(f"{path} is not a regular file")
    return fd


def read_control_file(path: Path, max_bytes: int = CONTROL_FILE_MAX_BYTES) -> bytes:
    """The bytes of a marker or other control file (see `open_regular`), at most `max_bytes`."""
    with os.fdopen(open_regular(path), "rb") as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise NotRegularFile(f"{path} is larger than the {max_bytes} bytes a control file may have")
    return data


def read_owned_text(path: Path) -> str | None:
    """The text of a file the toolkit writes and rewrites at a fixed path (a run's metrics.jsonl), read
    as a regular file only (see `open_regular`): None when it is absent, or when a symlink, FIFO or folder
    was planted there (never followed; the next write replaces it)."""
    try:
        with os.fdopen(open_regular(path), "r", encoding="utf-8") as fh:
            return fh.read()
    except (FileNotFoundError, NotRegularFile):
        return None


def file_digest(path: Path) -> tuple[int, str]:
    """Return (size in bytes, sha256 hex) of a regular file (see `open_regular`), reading 1 MiB blocks."""
    h = hashlib.sha256()
    size = 0
    with os.fdopen(open_regular(path), "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
            size += len(block)
    return size, h.hexdigest()


def sweep_tmp(root: Path) -> list[Path]:
    """Delete stray `*.tmp-*` files under `root` left by an interrupted commit; return them."""
    removed = []
    if not root.exists():
        return removed
    for p in root.rglob(f"*{TMP_INFIX}*"):
        if p.is_file() or p.is_symlink():
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed
