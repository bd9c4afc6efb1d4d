"""The trainer's one reader of a `--shards` folder (kebr_model/data/): built once per run, each marker read
once and the plan's labels walked once; any object with the `ShardReader` interface trains (how a backend
is added, docs/extending/reader.md); a sweep loads each point's config once; MCC that cannot act is said
so at the start of training, in `analyse` and in the sweep table (issue #27 point 6)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from shard_factory import make_shards

from kebr_data.storage import store as store_mod
from kebr_model.config import TrainConfig

pytest.importorskip("transformers")


def tiny(encoder: str, **kw) -> TrainConfig:
    base = dict(layers=1, batch_size=4, epochs=1, checkpoint_every=0, lr_other=1e-3, dropout=0.0,
                freeze_encoder=True, encoder=encoder)
    return TrainConfig.load(**{**base, **kw})


def test_a_run_builds_one_store_reads_each_marker_once_and_walks_the_plan_once(tmp_path, tiny_bert, monkeypatch):
    """Two epochs of fine-tuning with validation and a test: one `Store`, every marker read once, and each plan
    shard read once for the preflight (inventory and metric set together) plus once per pass over the data."""
    from kebr_model.training.run import train_run

    shards = make_shards(tmp_path / "f", n=12, shard_size=6, labelled=True)
    built: list[store_mod.Store] = []
    plan_reads: dict[int, int] = {}
    init, read = store_mod.Store.__init__, store_mod.Store.read

    def counting_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        built.append(self)

    def counting_read(self, stage, shard, columns=None):
        if stage == store_mod.PLAN:
            plan_reads[shard] = plan_reads.get(shard, 0) + 1
        return read(self, stage, shard, columns)

    monkeypatch.setattr(store_mod.Store, "__init__", counting_init)
    monkeypatch.setattr(store_mod.Store, "read", counting_read)
    cfg = tiny(tiny_bert, task="finetune", epochs=2, train_split="train", valid_split="valid", test_split="test")
    result = train_run(cfg, shards, tmp_path / "run", None, "never", progress=False)
    assert result["step"] > 0 and result["test"]["samples"] > 0
    assert len(built) == 1
    assert built[0].reads and set(built[0].reads.values()) == {1}  # every marker (and the plan marker) once
    passes = 2 + 2 + 1  # train and valid in each of 2 epochs, then test
    assert plan_reads == {0: 1 + passes, 1: 1 + passes}


class MemoryReader:
    """A toy backend: the rows of another reader, copied into memory when it is built. It implements
    `ShardReader` and nothing else, so the trainer can only go through the interface."""

    def __init__(self, source, stages: list[str]) -> None:
        self.root = source.root
        self._source = source
        self._rows = {k: source.shard_rows(k, stages) for k in source.shard_ids()}

    def shard_ids(self):
        return sorted(self._rows)

    def inventory(self, task, label="label"):
        return None

    def plan_labels(self):
        return None

    def check(self, task, allow_stale=False, modalities=None, digests=None):
        return []

    def widths(self, modalities):
        return self._source.widths(modalities)

    def frame_modalities(self, modalities=None):
        return set(modalities or ("audio", "visual"))

    def identity(self, stages, widths):
        return {"plan": "memory", "stages": {}, "widths": dict(widths)}

    def source(self):
        return {"path": str(self.root)}

    def shard_rows(self, shard, stages, digests=None):
        return self._rows[shard]


def test_any_shard_reader_trains_and_a_copy_in_memory_trains_as_the_folder(tmp_path, tiny_bert):
    """A backend is the `ShardReader` interface and one line in `open_reader`: a reader given to the trainer is
    used as is, and one serving the same rows gives the same losses at every step."""
    from kebr_model.data import ShardReader, open_reader
    from kebr_model.data.hdf5 import Hdf5Reader
    from kebr_model.data.parquet import ParquetReader
    from kebr_model.training.train import Trainer

    shards = make_shards(tmp_path / "f", n=8, shard_size=4)
    folder = open_reader(shards)
    memory = MemoryReader(folder, ["acoustic", "visual"])
    assert isinstance(folder, ParquetReader) and isinstance(memory, ShardReader) and open_reader(memory) is memory
    assert all(isinstance(r, ShardReader) for r in (folder, Hdf5Reader(tmp_path)))
    losses = []
    for i, data in enumerate((folder, memory)):
        trainer = Trainer(tiny(tiny_bert, task="pretrain", seed=3), data, tmp_path / f"run{i}")
        trainer.fit()
        rows = [json.loads(line) for line in (tmp_path / f"run{i}/metrics.jsonl").read_text().splitlines()]
        losses.append([r["loss"] for r in rows if r["split"] == "train"])
    assert losses[0] and losses[0] == losses[1]


def test_mcc_without_visual_frames_is_said_once_at_training_start_and_analyse_says_why_values_are_null(
        tmp_path, tiny_bert):
    from kebr_model.cli import main

    shards = make_shards(tmp_path / "f", n=10, shard_size=10, labelled=True, visual=False)
    run = tmp_path / "run"
    res = CliRunner().invoke(main, ["finetune", "--shards", str(shards), "--out", str(run), "--set", "layers=1",
                                    "--set", "batch_size=4", "--set", "epochs=1", "--set", f"encoder={tiny_bert!r}"])
    assert res.exit_code == 0, res.output
    warnings = [line for line in res.stderr.splitlines() if "MCC cannot act" in line]
    assert len(warnings) == 1 and "holds no visual frames" in warnings[0] and "change nothing" in warnings[0]
    res = CliRunner().invoke(main, ["analyse", "--shards", str(shards), "--run", str(run), "--split", "test"])
    assert res.exit_code == 0, res.output
    test = json.loads((run / "analysis.json").read_text())["splits"]["test"]
    assert all(test[k] is None for k in ("c_a", "c_v", "eq11", "mcc"))
    assert set(test["reasons"]) == {"c_a", "c_v", "eq11", "mcc"}
    assert "no clip of this split has visual frames" in test["reasons"]["c_a"]
    assert "note: split 'test': c_a, c_v, eq11, mcc null: no clip of this split has visual frames" in res.stderr
    # a model that reads no visual frames says so instead
    res = CliRunner().invoke(main, ["finetune", "--shards", str(shards), "--out", str(tmp_path / "ta"), "--set",
                                    "layers=1", "--set", "batch_size=4", "--set", "max_steps=1", "--set",
                                    "modalities.use='ta'", "--set", f"encoder={tiny_bert!r}"])
    assert res.exit_code == 0, res.output
    assert "MCC cannot act: the model reads no visual frames (modalities.use = 'ta')" in res.stderr


def test_a_sweep_loads_each_points_config_once_and_its_table_says_when_mcc_cannot_act(tmp_path, monkeypatch):
    from kebr_model.training import run
    from kebr_model.sweeps import COST, load_sweep, run_sweep

    shards = make_shards(tmp_path / "f", n=4, shard_size=4, labelled=True, visual=False)
    grid = tmp_path / "grid.toml"
    grid.write_text('[sweep]\nseeds = [1, 2]\n[train]\nlayers = 1\n[grid]\nmcc_g = [0.1, 0.2]\n')
    loads = []
    load = TrainConfig.load.__func__
    monkeypatch.setattr(TrainConfig, "load", classmethod(lambda cls, *a, **kw: loads.append(a) or load(cls, *a, **kw)))

    def trains(cfg, shards, run_dir, init, resume, before_fit=None, progress=True):
        return {"step": 1, "best_valid": cfg.mcc_g, "test": {"MAE": 1.0, "samples": 1}}

    monkeypatch.setattr(run, "train_run", trains)
    sweep = load_sweep(grid)
    out = tmp_path / "out"
    for point in sweep.points():  # counted before: no model is built here
        (out / point.name).mkdir(parents=True)
        (out / point.name / COST).write_text(json.dumps({"params": 1, "trainable_params": 1, "flops_per_clip": 1}))
    table = run_sweep(sweep, shards, out, echo=lambda line: None)
    assert len(loads) == len(sweep.points()) == 2  # not once per check, seed and cost (11 here before)
    assert "note: MCC cannot act:" in table and "(point(s): mcc_g=0.1, mcc_g=0.2)" in table
    assert table == (out / "sweep.md").read_text().rstrip("\n")


def test_mcc_blocked_names_what_is_missing_escaped_and_nothing_when_mcc_can_act_or_is_off():
    from kebr_model.evaluation.analyse import mcc_blocked

    cfg = TrainConfig.load(use_mcc=True)
    folder = Path("runs/a\u202eb")
    assert mcc_blocked(cfg, {"audio", "visual"}, folder) is None
    why = mcc_blocked(cfg, {"audio"}, folder)
    assert why.startswith("MCC cannot act: runs/a\\u202eb holds no visual frames (no ok row in its visual/ table)")
    assert "\u202e" not in why
    assert mcc_blocked(TrainConfig.load(use_mcc=False), {"audio"}, folder) is None
    assert "reads no visual frames (modalities.use = 'ta')" in mcc_blocked(
        TrainConfig.load(use_mcc=True, modalities={"use": "ta"}), {"audio", "visual"}, folder)
