"""Where everything lives in an output folder: an operator can read a run with `ls`.

    features/
      run.json                      the folder's configuration and the history of commands run on it
      _lock                         held by the running process
      _tmp/                         per-shard temp folders, removed at commit
      _done/plan.json               the frozen plan's marker (source, shard size, hashes)
      _done/<stage>/shard-00042.json    done marker of (stage, shard 42): the commit point
      _logs/<stage>/shard-00042.log     what the worker did
      plan/shard-00042.parquet      clips of shard 42, sorted by clip_id
      <stage>/shard-00042.parquet   one table per (stage, shard), rows in plan order
      _limit/                       `extract --limit N`: an output folder of the plan's first N clips

Table folders hold only Parquet files, so any Parquet reader (pyarrow, polars, duckdb, HF
`datasets`) takes a stage by its folder. Folders written before version 0.2 kept markers and logs
inside the table folders (`<stage>/_done/`, `<stage>/_logs/`, `plan/_plan.json`): readers still
find them there, and the next command that writes to the folder moves them (`migrate_legacy`).
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from .atomic import real_dir, sweep_tmp

#: version of the plan's layout: 2 = absolute media paths plus media size and mtime per clip
PLAN_FORMAT = 2

SHARD_RE = re.compile(r"^shard-(\d{5})\.(parquet|json|log)$")
DONE, LOGS = "_done", "_logs"


def shard_name(shard: int, suffix: str) -> str:
    """`shard-00042.<suffix>`: five digits everywhere."""
    return f"shard-{shard:05d}.{suffix}"


@dataclass(frozen=True)
class OutputDir:
    """Paths inside one output folder."""

    root: Path

    @property
    def run_json(self) -> Path:
        return self.root / "run.json"

    @property
    def lock_file(self) -> Path:
        return self.root / "_lock"

    @property
    def limit_dir(self) -> Path:
        return self.root / "_limit"

    @property
    def plan_marker(self) -> Path:
        return self.root / DONE / "plan.json"

    @property
    def legacy_plan_marker(self) -> Path:
        return self.root / "plan" / "_plan.json"

    def table(self, stage: str, shard: int) -> Path:
        return self.root / stage / shard_name(shard, "parquet")

    def marker(self, stage: str, shard: int) -> Path:
        return self.root / DONE / stage / shard_name(shard, "json")

    def legacy_marker(self, stage: str, shard: int) -> Path:
        return self.root / stage / DONE / shard_name(shard, "json")

    def log(self, stage: str, shard: int) -> Path:
        return self.root / LOGS / stage / shard_name(shard, "log")

    def tmp_dir(self, stage: str, shard: int) -> Path:
        return self.root / "_tmp" / f"{stage}-{shard_name(shard, 'd')}"

    def check_folders(self, stages: list[str]) -> None:
        """Check the table, marker and log folders of `stages` and the plan's that exist, before a run
        writes into them: each must be a real folder inside the output folder (`atomic.real_dir`, which
        every writer also goes through), so a planted symlink refuses the command before any work."""
        for stage in dict.fromkeys(["plan", *stages]):
            for folder in (self.root / stage, self.root / DONE / stage, self.root / LOGS / stage):
                real_dir(self.root, folder, create=False)

    def _real_subfolders(self, folder: Path) -> list[Path]:
        """The folders directly in `folder` that are real folders, never symlinks (not followed)."""
        return [p for p in folder.iterdir() if p.is_dir() and not p.is_symlink()] if folder.is_dir() else []

    def stage_names(self) -> list[str]:
        """Stages with any done marker, in either layout (alphabetical; callers order them)."""
        names = set()
        done = self.root / DONE
        if done.is_dir():
            names.update(p.name for p in done.iterdir() if p.is_dir())
        if self.root.is_dir():
            names.update(p.name for p in self.root.iterdir()
                         if p.is_dir() and not p.name.startswith("_") and (p / DONE).is_dir())
        return sorted(names)

    def marker_shards(self, stage: str) -> list[int]:
        """Shard numbers that have a done marker for `stage` (either layout)."""
        found = set()
        for folder in (self.root / DONE / stage, self.root / stage / DONE):
            if folder.is_dir():
                found.update(int(m.group(1)) for p in folder.iterdir() if (m := SHARD_RE.match(p.name)))
        return sorted(found)

    def migrate_legacy(self) -> int:
        """Move markers and logs of the old layout out of the table folders; return how many moved.

        Each file moves by one rename, so a crash leaves every marker findable in one of the two places.
        """
        moved = 0
        if self.legacy_plan_marker.is_file() and not self.plan_marker.exists():
            real_dir(self.root, self.plan_marker.parent)
            os.replace(self.legacy_plan_marker, self.plan_marker)
            moved += 1
        for stage_dir in (p for p in self._real_subfolders(self.root) if not p.name.startswith("_")):
            for kind in (DONE, LOGS):
                old = stage_dir / kind
                if not old.is_dir() or old.is_symlink():
                    continue
                new = real_dir(self.root, self.root / kind / stage_dir.name)
                for p in old.iterdir():
                    if SHARD_RE.match(p.name) and not (new / p.name).exists():
                        os.replace(p, new / p.name)
                        moved += 1
                shutil.rmtree(old, ignore_errors=True)
        return moved

    def drop_shards_from(self, first: int) -> None:
        """Delete every stage's tables, markers and logs of shards numbered `first` or above (in real
        folders only: a symlinked one is not followed)."""
        folders = [p for p in self._real_subfolders(self.root) if not p.name.startswith("_")]
        for kind in (DONE, LOGS):
            if not (self.root / kind).is_symlink():
                folders += self._real_subfolders(self.root / kind)
        for folder in folders:
            for p in folder.iterdir():
                m = SHARD_RE.match(p.name)
                if m and int(m.group(1)) >= first:
                    p.unlink()

    def sweep(self) -> list[Path]:
        """Remove what an interrupted run left: `.tmp-*` files and per-shard temp folders."""
        removed = sweep_tmp(self.root)
        tmp_root = self.root / "_tmp"
        if tmp_root.is_symlink():  # planted: temp files must never be written through it
            tmp_root.unlink()
            removed.append(tmp_root)
        elif tmp_root.exists():
            removed.extend(sorted(tmp_root.iterdir()))
            shutil.rmtree(tmp_root, ignore_errors=True)
        return removed
