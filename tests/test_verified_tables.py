"""Issue 24, point 10: a stage table edited in place (same size, 4 values changed) reaches neither the trainer
nor `kebr-data export`: each table's sha256 is checked against its marker once per run, remembered by
stat in the run folder, and each epoch's read stat-checks the tables again."""

from __future__ import annotations

import io
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import run_cli
from shard_factory import make_shards

from kebr_data.errors import StaleOutputError
from kebr_data.storage.parquet import COMPRESSION, ROW_GROUP_SIZE
from kebr_data.storage.verified import Digests


def tamper(path) -> None:
    """Negate 4 values of the `features` column and rewrite the table in place with the same size."""
    table = pq.read_table(path)
    column = table.column("features").combine_chunks()
    for start in range(0, 400, 4):  # 4 values whose new signs compress to the same size
        values = column.values.values.to_numpy().copy()
        values[start:start + 4] = -values[start:start + 4]
        inner = pa.FixedSizeListArray.from_arrays(pa.array(values), column.type.value_type.list_size)
        changed = table.set_column(table.schema.get_field_index("features"), table.schema.field("features"),
                                   pa.ListArray.from_arrays(column.offsets, inner))
        buf = io.BytesIO()
        pq.write_table(changed, buf, compression=COMPRESSION, row_group_size=ROW_GROUP_SIZE)
        if len(buf.getvalue()) == path.stat().st_size:  # the size check alone cannot see it
            with open(path, "r+b") as fh:
                fh.write(buf.getvalue())
            return
    raise AssertionError(f"no same-size edit of {path} found")


@pytest.fixture()
def shards(tmp_path):
    return make_shards(tmp_path / "f", n=8, shard_size=4, labelled=True)


def test_kebr_train_refuses_a_tampered_table(shards, tmp_path, tiny_bert):
    pytest.importorskip("transformers")
    from click.testing import CliRunner

    from kebr_model.cli import main

    tamper(shards / "acoustic/shard-00001.parquet")
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["pretrain", "--shards", str(shards), "--out", str(out), "--set", "layers=1",
                                       "--set", f"encoder='{tiny_bert}'", "--set", "max_steps=1"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "shard 00001: table differs from its marker (sha256)" in result.output
    assert f"kebr-data extract --out {shards} --stages acoustic" in result.output
    assert not (out / "checkpoints").exists()


def test_export_refuses_a_tampered_table(shards):
    tamper(shards / "acoustic/shard-00000.parquet")
    proc = run_cli("export", "--out", str(shards), "--format", "parquet")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "table differs from its marker (sha256)" in proc.stderr
    assert not list((shards / "export/parquet").glob("shard-*"))


def test_verdicts_are_kept_by_stat_in_the_run_folder_and_an_epoch_rechecks(shards, tmp_path):
    pytest.importorskip("transformers")
    from kebr_model.data import DataConfig, ShardBatches, open_reader
    from kebr_model.training.train import load_encoder

    run = tmp_path / "run"
    first = Digests(run / "verified_tables.json", run)
    open_reader(shards).check("pretrain", digests=first)
    assert first.hashed == 8  # plan, mask, acoustic, visual x 2 shards: each hashed once
    again = Digests(run / "verified_tables.json", run)  # a resume or the next seed: stats only
    open_reader(shards).check("pretrain", digests=again)
    assert again.hashed == 0
    tok = load_encoder("")[0]
    assert list(ShardBatches(shards, "pretrain", tok, DataConfig(batch_size=4), digests=again))
    assert again.hashed == 0  # an epoch does not re-hash
    table = shards / "acoustic/shard-00000.parquet"
    tamper(table)
    st = table.stat()
    os.utime(table, ns=(st.st_atime_ns, st.st_mtime_ns))  # even with its old mtime (ctime and content differ)
    with pytest.raises(StaleOutputError, match="acoustic shard 00000 .* changed during training"):
        list(ShardBatches(shards, "pretrain", tok, DataConfig(batch_size=4), digests=again))
    assert again.hashed == 1
    with pytest.raises(StaleOutputError, match="table differs from its marker"):
        open_reader(shards).check("pretrain", digests=Digests(run / "verified_tables.json", run))


def test_a_damaged_or_planted_verdict_file_only_costs_a_rehash(shards, tmp_path):
    from kebr_data.storage.store import Store

    cache = tmp_path / "verified_tables.json"
    cache.write_text("{not json")
    digests = Digests(cache, tmp_path)
    Store(shards, digests).require_current(["plan", "mask"], verify=True)
    assert digests.hashed == 4
    digests.save()
    target = tmp_path / "target.json"
    target.write_text(cache.read_text())
    cache.unlink()
    cache.symlink_to(target)  # never followed: read as absent
    assert Digests(cache, tmp_path).known == {}
    assert len(Digests(target).known) == 4
