"""Tables already hashed: each table's sha256 remembered with the size, mtime, ctime and inode it had
when hashed, optionally in a JSON file (a kebr-train run folder's), so a run hashes each table once
and a later epoch, seed or resume only stats it; a table whose stat changed is hashed again."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .atomic import atomic_write_json, file_digest, read_control_file


def _stamp(path: Path) -> list[int]:
    """What changes when a file is rewritten, edited in place, replaced or touched (`os.lstat`)."""
    st = os.lstat(path)
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


class Digests:
    """sha256 of tables by path, re-hashed only when their stat changed since (see the module docstring)."""

    def __init__(self, file: Path | None = None, within: Path | None = None) -> None:
        self.file, self.within = file, within
        self.known: dict[str, dict] = {}
        self.hashed = 0  #: tables hashed by this object (tests and the bench count them)
        self._dirty = False
        if file is not None:
            try:
                data = json.loads(read_control_file(file))
                self.known = {k: v for k, v in data.items() if isinstance(v, dict)} if isinstance(data, dict) else {}
            except (FileNotFoundError, ValueError, UnicodeDecodeError):  # absent, damaged or planted: start afresh
                self.known = {}

    def digest(self, path: Path) -> tuple[int, str]:
        """(size, sha256) of the regular file `path` (no symlink followed; FileNotFoundError when absent,
        NotRegularFile for anything else), hashed only when its stat differs from the one remembered."""
        key = os.path.abspath(path)
        stamp = _stamp(path)
        seen = self.known.get(key)
        if seen is not None and seen.get("stat") == stamp and isinstance(seen.get("sha256"), str):
            return stamp[0], seen["sha256"]
        size, sha = file_digest(path)
        self.hashed += 1
        self.known[key] = {"stat": stamp, "sha256": sha}
        self._dirty = True
        return size, sha

    def save(self) -> None:
        """Write the remembered digests to `file` (when one was given and something was hashed)."""
        if self.file is not None and self._dirty:
            atomic_write_json(self.file, self.known, self.within)
            self._dirty = False
