"""One of each primitive (issue #26): files are committed by one atomic helper, locks taken by one lock, the
plan's columns declared once, and a stage's HDF5 attributes declared by the stage, not guessed."""

from __future__ import annotations

import dataclasses
import re

import h5py
import pyarrow as pa
import pyarrow.parquet as pq
from helpers import ROOT
from shard_factory import make_shards

from kebr_data.schema import ACOUSTIC, COMMON, PLAN, Clip
from kebr_data.storage.commit import commit_rows
from kebr_data.storage.layout import OutputDir
from kebr_data.storage.store import Store

SOURCES = [p for package in ("kebr_data", "kebr_model", "bench") for p in sorted((ROOT / package).rglob("*.py"))]


def callers(pattern: str) -> set[str]:
    """The project's source files that call `pattern`."""
    return {str(p.relative_to(ROOT)) for p in SOURCES if re.search(pattern, p.read_text(encoding="utf-8"))}


def test_files_are_committed_by_one_helper_and_locks_taken_by_one_lock():
    assert callers(r"os\.fsync\(") == {"kebr_data/storage/atomic.py"}
    assert callers(r"fcntl\.flock\(") == {"kebr_data/storage/lock.py"}


def test_the_plan_schema_is_the_clip_fields():
    assert [f.name for f in PLAN] == [f.name for f in COMMON] + [f.name for f in dataclasses.fields(Clip)][1:]
    assert PLAN.field("source").type == pa.string() and PLAN.field("label").type == pa.float32()
    assert PLAN.field("video_size").type == pa.int64() and PLAN.field("clip_id").nullable is False


def test_hdf5_attributes_are_the_columns_a_stage_declares(tmp_path):
    from kebr_data.export import export

    root = make_shards(tmp_path / "f", n=5, shard_size=5, labelled=True)
    rows = pq.read_table(root / "acoustic/shard-00000.parquet").to_pylist()
    for i, row in enumerate(rows):  # five recipes in one shard: more than the old guess's four
        row["recipe"] = f"r{i}"
    commit_rows(OutputDir(root), "acoustic", 0, rows, ACOUSTIC, "test", Store(root).committed_hash("plan", 0))
    dest, _ = export(root, "hdf5")
    with h5py.File(dest / "shard-00000.h5", "r") as f:
        assert f["acoustic"].attrs["recipe"] == "r0,r1,r2,r3,r4"
        assert dict(f["visual"].attrs) == {"dim": 709, "backend": "openface"}
        assert set(f["acoustic"].attrs) == {"dim", "recipe"}

