"""Parquet tables: one per (stage, shard), committed atomically, written deterministically.

Identical rows give byte-identical files (no timestamps in metadata), which is what lets a
resumed run be compared with an uninterrupted one.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .atomic import atomic_write

COMPRESSION = "zstd"
#: rows per row group: small enough that the writer never buffers a whole shard of audio or
#: frame features a second time, large enough for efficient column reads
ROW_GROUP_SIZE = 64


def write_table(path: Path, table: pa.Table, within: Path | None = None) -> tuple[int, str]:
    """Commit `table` to `path` (its folders checked inside the output folder `within`, see
    `atomic.real_dir`); return (size, sha256) of the file written."""
    return atomic_write(path, lambda fh: pq.write_table(table, fh, compression=COMPRESSION,
                                                        row_group_size=ROW_GROUP_SIZE), within)


def read_table(path: Path, columns: list[str] | None = None) -> pa.Table:
    """Read a committed table (optionally a subset of columns)."""
    return pq.read_table(path, columns=columns)
