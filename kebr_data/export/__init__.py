"""`kebr-data export`: the committed stage tables in other tools' formats.

Adding a format is one module with an `ExportFormat` subclass (its options, if any, an `Options` dataclass)
plus one line in `FORMATS` (docs/extending/export-format.md).
Only committed, current, plan-aligned tables whose sha256 matches their markers are exported (the store
refuses the others, naming the command that fixes them).
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..plugin_options import build
from ..storage.atomic import real_dir
from ..storage.lock import OutputLock
from ..storage.store import PLAN, Store
from .base import ExportFormat, FolderFormat, exported_stages, load_shard, mark_done, shard_file, up_to_date
from .hdf5 import Hdf5Format, read_hdf5
from .mmsa import MmsaFormat
from .parquet import ParquetFormat, merged_table

FORMATS: dict[str, type[ExportFormat]] = {"hdf5": Hdf5Format, "parquet": ParquetFormat, "mmsa": MmsaFormat}


def export(root: str | os.PathLike[str], fmt: str, dest: str | os.PathLike[str] | None = None,
           **options: Any) -> tuple[Path, str]:
    """Export every shard of `root` to `dest` (default ROOT/export/FORMAT; either a str or a path) with the
    format's `options` (checked against its `Options`: name, type, range); return the folder and a note."""
    root, dest = Path(root), None if dest is None else Path(dest)
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    store = Store(root)
    writer = FORMATS[fmt](build(FORMATS[fmt].Options, options, fmt, "export format"))
    with OutputLock(store.out.lock_file, f"kebr-data export --format {fmt}"):
        stages = exported_stages(store)
        store.require_current([PLAN, *stages], verify=True)  # sha256: a table edited in place is refused
        writer.check(store, stages)
        shards = range(store.plan.num_shards)
        content, tables = None, []
        if isinstance(writer, FolderFormat):  # built, or refused, before a folder is made
            tables = [load_shard(store, shard, stages) for shard in shards]
            content, note = writer.build(tables)
        if dest is None:  # inside the output folder: `export/` and `export/FORMAT` must be real folders there
            dest = real_dir(root, root / "export" / fmt)
        real_dir(dest, dest / "_done")
        if isinstance(writer, FolderFormat):
            writer.write(dest, content)
            mark_done(dest, fmt, {f"{t.shard:05d}": t.hashes for t in tables}, fmt, **asdict(writer.options))
            return dest, note
        written = 0
        for shard in shards:
            target = shard_file(dest, shard, writer.suffix)
            name = target.stem
            hashes = {stage: store.committed_hash(stage, shard) for stage in (PLAN, *stages)}
            if up_to_date(dest, name, hashes, target):
                continue
            tables = load_shard(store, shard, stages)
            output = writer.write_shard(target, tables)
            mark_done(dest, name, tables.hashes, fmt, output)
            written += 1
        return dest, f"{written} file(s) written, {store.plan.num_shards - written} already up to date"


__all__ = ["FORMATS", "ExportFormat", "export", "read_hdf5", "merged_table"]
