"""The one detector of a `--shards` folder's backend: `open_reader` gives its `ShardReader`."""

from __future__ import annotations

from pathlib import Path

from .hdf5 import Hdf5Reader
from .parquet import ParquetReader
from .reader import ShardReader


def is_hdf5_export(root: Path) -> bool:
    """True when `root` is a `kebr-data export --format hdf5` folder rather than an output folder."""
    return not (root / "plan").is_dir() and any(root.glob("shard-*.h5"))


def open_reader(shards: Path | str | ShardReader) -> ShardReader:
    """The reader of `shards` (a reader given is returned as is, so a caller that opened one passes it on)."""
    if isinstance(shards, ShardReader):
        return shards
    root = Path(shards)
    if is_hdf5_export(root):
        return Hdf5Reader(root)
    return ParquetReader(root)
