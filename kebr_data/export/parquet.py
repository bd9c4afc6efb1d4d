"""`--format parquet`: one merged table per shard: the plan's columns, then `<stage>.<column>` for
every stage (columns a stage leaves out of exports, such as the audio stage's FLAC bytes, dropped)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from ..storage.parquet import write_table
from .base import ShardFormat, ShardTables


def merged_table(tables: ShardTables) -> pa.Table:
    """Plan columns, then each stage's columns prefixed with the stage name (rows are aligned)."""
    out = tables.plan
    for stage, table in tables.stages.items():
        for field in table.schema:
            if field.name != "clip_id":
                out = out.append_column(f"{stage}.{field.name}", table.column(field.name))
    return out


class ParquetFormat(ShardFormat):
    suffix = "parquet"

    def describe(self) -> str:
        return "a merged table per shard"

    def write_shard(self, path: Path, tables: ShardTables) -> tuple[int, str]:
        return write_table(path, merged_table(tables), path.parent)
