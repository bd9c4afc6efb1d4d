"""Where everything lives in an output folder (DESIGN §2): an operator can read a run with `ls`.

    features/
      run.json                      resolved config and versions of the last run
      _lock                         held by the running process
      _tmp/                         per-shard temp folders, removed at commit
      plan/_plan.json               the frozen plan's marker (source, shard size, hashes)
      plan/shard-00042.parquet      clips of shard 42, sorted by clip_id
      <stage>/shard-00042.parquet   one table per (stage, shard), rows in plan order
      <stage>/_done/shard-00042.json    done marker: the commit point
      <stage>/_logs/shard-00042.log     what the worker did
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from .atomic import sweep_tmp

#: version of the plan's layout: 2 = absolute media paths plus media size and mtime per clip
PLAN_FORMAT = 2

SHARD_RE = re.compile(r"^shard-(\d{5})\.(parquet|json|log)$")


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
    def plan_marker(self) -> Path:
        return self.root / "plan" / "_plan.json"

    def table(self, stage: str, shard: int) -> Path:
        return self.root / stage / shard_name(shard, "parquet")

    def marker(self, stage: str, shard: int) -> Path:
        return self.root / stage / "_done" / shard_name(shard, "json")

    def log(self, stage: str, shard: int) -> Path:
        return self.root / stage / "_logs" / shard_name(shard, "log")

    def tmp_dir(self, stage: str, shard: int) -> Path:
        return self.root / "_tmp" / f"{stage}-{shard_name(shard, 'd')}"

    def marker_shards(self, stage: str) -> list[int]:
        """Shard numbers that have a done marker for `stage`."""
        done = self.root / stage / "_done"
        if not done.is_dir():
            return []
        return sorted(int(m.group(1)) for p in done.iterdir() if (m := SHARD_RE.match(p.name)))

    def drop_shards_from(self, first: int) -> None:
        """Delete every stage's tables, markers and logs of shards numbered `first` or above."""
        for stage_dir in (p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("_")):
            for folder in (stage_dir, stage_dir / "_done", stage_dir / "_logs"):
                if folder.is_dir():
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
