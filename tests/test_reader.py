"""Reading an output folder: each stage folder with pyarrow, duckdb, polars and HF `datasets`, and the
joined per-clip view of `kebr_data.open` (plan.label and mask.label side by side)."""

import shutil
import sys

import duckdb
import polars as pl
import pyarrow.dataset as pds
import pyarrow.parquet as pq
import pytest
from datasets import Dataset, load_dataset
from helpers import ROOT, run_cli

import kebr_data
from kebr_data.errors import ConfigError, StaleOutputError
from kebr_data.storage.layout import OutputDir

STAGES = ("plan", "audio", "acoustic", "mask")


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    """The labelled demo (8 clips, 2 shards) through index, audio, acoustic and mask (given text), on one worker
    (a second pays the acoustic stage's imports and kernel loads again: 10.3 -> 6.6 CPU-s)."""
    out = tmp_path_factory.mktemp("reader") / "features"
    run_cli("extract", "--src", str(ROOT / "demo/mmsa"), "--out", str(out), "--config",
            str(ROOT / "pipelines/demo_mmsa.toml"), "--workers", "1", check=True)
    run_cli("mask", "--out", str(out), check=True)
    return out


def _by_clip(ids, values):
    return dict(zip(ids, values, strict=True))


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_folder_reads_with_every_reader(features, stage, tmp_path):
    folder = features / stage
    assert {p.suffix for p in folder.iterdir()} == {".parquet"}  # control files live beside the folder
    expected = pq.read_table(folder)
    assert expected.num_rows == 8 and sorted(expected.column("clip_id").to_pylist()) == \
        sorted(kebr_data.open(features, stages=[]).column("clip_id").to_pylist())
    ids = sorted(expected.column("clip_id").to_pylist())
    assert sorted(pds.dataset(folder).to_table().column("clip_id").to_pylist()) == ids
    assert sorted(pl.read_parquet(folder)["clip_id"].to_list()) == ids
    assert sorted(r[0] for r in duckdb.sql(f"SELECT clip_id FROM read_parquet('{folder}/*.parquet')").fetchall()) \
        == ids
    hf = load_dataset("parquet", data_dir=str(folder), split="train", cache_dir=str(tmp_path / "hf"))
    assert sorted(hf["clip_id"]) == ids and set(hf.column_names) == set(expected.column_names)


def test_open_joins_one_row_per_clip_with_stage_prefixed_columns(features):
    table = kebr_data.open(features)
    plan, mask = pq.read_table(features / "plan"), pq.read_table(features / "mask")
    assert table.num_rows == 8 and table.column_names[0] == "clip_id"
    assert table.column("clip_id").to_pylist() == plan.column("clip_id").to_pylist()  # plan order
    assert len(set(table.column_names)) == len(table.column_names)
    assert "audio.flac" not in table.column_names  # a payload: read only when named
    assert {"plan.label", "mask.label", "mask.masked_text", "audio.duration_s", "acoustic.features",
            "plan.status", "mask.status"} <= set(table.column_names)
    ids = table.column("clip_id").to_pylist()
    # each column holds its own stage's values, matched by clip_id
    assert _by_clip(ids, table.column("plan.label").to_pylist()) == \
        _by_clip(plan.column("clip_id").to_pylist(), plan.column("label").to_pylist())
    assert _by_clip(ids, table.column("mask.label").to_pylist()) == \
        _by_clip(mask.column("clip_id").to_pylist(), mask.column("label").to_pylist())
    assert table.column("plan.label").to_pylist() != table.column("mask.label").to_pylist()  # two labels


def test_open_as_pandas_datasets_duckdb_and_polars(features):
    cols = ["plan.label", "mask.label", "mask.mask_word"]
    table = kebr_data.open(features, columns=cols)
    assert table.column_names == ["clip_id", *cols]
    frame = kebr_data.open(features, columns=cols, format="pandas")
    assert list(frame.columns) == ["clip_id", *cols] and frame["mask.label"].tolist() == \
        table.column("mask.label").to_pylist()
    hf = kebr_data.open(features, columns=cols, format="datasets")
    assert isinstance(hf, Dataset) and hf.num_rows == 8 and hf["plan.label"] == table.column("plan.label").to_pylist()
    assert pl.from_arrow(table)["mask.label"].to_list() == table.column("mask.label").to_pylist()
    con = duckdb.connect()
    con.register("features", table)
    joined = con.sql('SELECT count(*) FROM features WHERE "plan.label" IS NOT NULL').fetchall()[0][0]
    assert joined == sum(v is not None for v in table.column("plan.label").to_pylist())


def test_open_reads_only_current_shards(features, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(features, out)
    OutputDir(out).marker("acoustic", 1).unlink()  # shard 1 of acoustic never committed
    with pytest.raises(StaleOutputError, match=r"acoustic: 1 of 2 shard\(s\) not usable .*kebr-data extract --out"):
        kebr_data.open(out)
    part = kebr_data.open(out, partial=True)
    assert part.num_rows == 4 and part.column("clip_id").to_pylist() == \
        pq.read_table(out / "plan/shard-00000.parquet").column("clip_id").to_pylist()
    assert kebr_data.open(out, stages=["mask"]).num_rows == 8  # acoustic not asked for
    assert kebr_data.open(out, stages=["acoustic"], partial=True, columns=["acoustic.num_frames"]).num_rows == 4


def test_open_refuses_unknown_names(features, tmp_path):
    with pytest.raises(ConfigError, match="unknown column 'label'"):
        kebr_data.open(features, columns=["label"])
    with pytest.raises(ConfigError, match="unknown stage 'masks'"):
        kebr_data.open(features, stages=["masks"])
    with pytest.raises(ConfigError, match="format must be one of"):
        kebr_data.open(features, format="csv")
    with pytest.raises(kebr_data.errors.PlanError, match="is not a kebr-data output folder"):
        kebr_data.open(tmp_path)


def test_open_as_pandas_without_pandas_names_the_install(features, monkeypatch):
    """After `pip install -e ".[asr]"` alone, pandas is absent: pyarrow's bare ModuleNotFoundError became one line
    naming the package to install (the README's reading example is what a new user tries first)."""
    monkeypatch.setitem(sys.modules, "pandas", None)  # `import pandas` raises ImportError
    with pytest.raises(kebr_data.errors.PrerequisiteError, match="format='pandas' needs the Python package 'pandas': "
                                                                 "pip install pandas"):
        kebr_data.open(features, format="pandas")
