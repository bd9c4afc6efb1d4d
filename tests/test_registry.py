"""The store and the registry: a stage registered from a test module alone is run, summarised,
validated, exported and reported; readers see only committed, current data; each marker is read
once per run for the engine's decisions."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner
from helpers import run_cli
from shard_factory import make_shards

from kebr_data import config, stages
from kebr_data.cli import main
from kebr_data.config import setting
from kebr_data.pipeline.engine import Engine, RunOptions
from kebr_data.schema import COMMON, frame_field
from kebr_data.stages.base import ClipInput, ClipStage, ShardContext
from kebr_data.storage.store import Store


@dataclass
class ToySettings:
    """A toy stage."""

    width: int = setting(3, "frame width", min=1)


class ToyStage(ClipStage):
    """Two frames per clip of `width` values each: the clip's index in its shard."""

    name = "toy"
    version = "1"
    upstream = ("plan",)
    schema = pa.schema(COMMON + [frame_field("features", 3)])
    Settings = ToySettings
    extract_default = False
    report_plots = ()

    def process(self, clip: ClipInput, ctx: ShardContext) -> dict[str, Any]:
        return {"features": np.full((2, 3), len(clip.clip_id), np.float32)}


@pytest.fixture()
def toy_folder(tmp_path, monkeypatch):
    stages.registry()
    monkeypatch.setitem(stages._registry, "toy", ToyStage)
    root = make_shards(tmp_path / "f", n=6, shard_size=4, labelled=True)
    return root


def cli(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_a_toy_stage_runs_through_every_command(toy_folder):
    assert config.defaults()["toy"] == {"width": 3}
    done = cli("extract", "--out", str(toy_folder), "--stages", "toy", "--workers", "1")
    assert done.exit_code == 0, done.output
    assert "toy" in cli("status", "--out", str(toy_folder)).output
    status = json.loads(cli("status", "--out", str(toy_folder), "--json").output)
    assert {"stage": "toy", "ok": 6} .items() <= {k: v for s in status["stages"] if s["stage"] == "toy"
                                                 for k, v in s.items()}.items()
    checked = cli("validate", "--out", str(toy_folder))
    assert checked.exit_code == 0 and "0 problem(s)" in checked.output
    assert cli("export", "--out", str(toy_folder), "--format", "hdf5").exit_code == 0
    with h5py.File(toy_folder / "export/hdf5/shard-00000.h5") as f:
        assert f["toy/values"].shape == (8, 3) and list(f["toy/offsets"][()]) == [0, 2, 4, 6, 8]
    assert cli("export", "--out", str(toy_folder), "--format", "parquet").exit_code == 0
    assert cli("report", "--out", str(toy_folder)).exit_code == 0
    assert "toy" in (toy_folder / "report/index.html").read_text()


def test_each_marker_is_read_once_per_run_for_decisions(toy_folder):
    assert cli("extract", "--out", str(toy_folder), "--stages", "toy", "--workers", "1").exit_code == 0
    cfg = config.apply(config.load(), {"mask.text_source": "given"})
    engine = Engine(RunOptions(out=toy_folder, stages=["mask", "toy"], config=cfg, replace_on_change=True))
    engine._refuse_stale(["mask", "toy"], 2)
    for name in ("mask", "toy"):
        stage = stages.make_stage(name, cfg)
        for shard in range(2):
            engine._needs_run(name, shard, stage.config_hash(), engine._upstream_hashes(stage, shard))
    assert engine.store.reads and max(engine.store.reads.values()) == 1


def test_the_trainer_refuses_a_mask_made_from_an_older_asr(tmp_path):
    from kebr_model.data import open_reader
    from kebr_data.errors import StaleOutputError
    from kebr_data.storage.commit import commit_table

    root = make_shards(tmp_path / "f", n=4, shard_size=4)
    store = Store(root)
    m = store.marker("mask", 0)
    commit_table(store.out, "mask", 0, store.read("mask", 0), config_hash=m.config_hash, stage_version="1",
                 versions={}, upstream={**m.upstream, "asr": "an-older-asr-table"})
    with pytest.raises(StaleOutputError, match=r"mask: .*made from another asr table.*kebr-data mask --out"):
        open_reader(root).check("pretrain")
    assert open_reader(root).check("pretrain", allow_stale=True)


def test_export_on_a_corrupt_marker_is_one_line_exit_2(tmp_path):
    root = make_shards(tmp_path / "f", n=4, shard_size=4)
    Store(root).out.marker("acoustic", 0).write_text('{"stage": "acoustic", "rows": "many"')
    proc = run_cli("export", "--out", str(root), "--format", "hdf5")
    assert proc.returncode == 2 and "corrupt marker" in proc.stderr and "Traceback" not in proc.stderr


def test_validate_reports_a_stage_made_with_mixed_settings(tmp_path):
    from kebr_data.storage.commit import commit_table

    root = make_shards(tmp_path / "f", n=8, shard_size=4)
    store = Store(root)
    m = store.marker("mask", 1)
    commit_table(store.out, "mask", 1, store.read("mask", 1), config_hash="other-settings", stage_version="1",
                 versions={}, upstream=m.upstream)
    proc = run_cli("validate", "--out", str(root))
    assert proc.returncode == 1 and "different settings" in proc.stderr


def test_a_worker_refuses_an_upstream_table_changed_after_its_commit(tmp_path, demo_src):
    out = tmp_path / "f"
    run_cli("extract", "--src", str(demo_src), "--out", str(out), "--stages", "index,audio", "--set",
            "index.shard_size=4", "--max-failed", "1", check=True)
    table = out / "audio/shard-00000.parquet"
    data = bytearray(table.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other bytes
    table.write_bytes(bytes(data))
    proc = run_cli("extract", "--out", str(out), "--stages", "acoustic")
    assert proc.returncode == 3 and "changed after it was committed" in proc.stderr
    assert not (out / "_done/acoustic/shard-00000.json").exists()


def test_legacy_layout_is_read_and_migrated(tmp_path):
    import shutil

    root = make_shards(tmp_path / "f", n=4, shard_size=4)
    (root / "plan").mkdir(exist_ok=True)
    shutil.move(root / "_done/plan.json", root / "plan/_plan.json")
    (root / "mask/_done").mkdir()
    shutil.move(root / "_done/mask/shard-00000.json", root / "mask/_done/shard-00000.json")
    store = Store(root)
    assert store.plan.num_shards == 1 and store.marker("mask", 0) is not None
    root.joinpath("_done/mask").rmdir()
    assert sorted(store.out.stage_names()) == ["acoustic", "mask", "visual"]
    assert store.out.migrate_legacy() == 2
    assert (root / "_done/mask/shard-00000.json").exists() and not (root / "mask/_done").exists()
