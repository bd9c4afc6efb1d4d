"""Issue 24, point 4: every folder the toolkit writes into under an output folder (stage tables, markers,
logs, export, report, `_limit`) or a kebr-train run folder is a real folder inside it; a symlink planted
there (or a file) refuses the command, exit 2, one line, and nothing is written through it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pytest
from helpers import run_cli, write_wav
from shard_factory import make_shards

from kebr_data.errors import UnsafeFolder
from kebr_data.storage.atomic import open_append_text, open_new_text, real_dir
from kebr_data.storage.layout import OutputDir
from kebr_data.storage.parquet import write_table


def victim_folder(tmp_path: Path) -> Path:
    """A folder outside the output folder whose files must never change."""
    victim = tmp_path / "victim"
    victim.mkdir()
    for name in ("shard-00000.log", "shard-00000.parquet", "shard-00000.json", "shard-00000.h5", "index.html"):
        (victim / name).write_text("precious")
    return victim


def untouched(victim: Path) -> bool:
    return sorted(p.name for p in victim.iterdir()) == sorted(
        ["shard-00000.log", "shard-00000.parquet", "shard-00000.json", "shard-00000.h5", "index.html"]) and \
        all(p.read_text() == "precious" for p in victim.iterdir())


def refused(proc, needle: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and needle in proc.stderr and "is a symlink" in proc.stderr


def test_real_dir_creates_real_folders_and_refuses_links_files_and_escapes(tmp_path):
    root = tmp_path / "out"
    assert real_dir(root, root / "_done" / "mask") == root / "_done" / "mask"
    assert (root / "_done" / "mask").is_dir() and not (root / "_done").is_symlink()
    victim = victim_folder(tmp_path)
    (root / "_logs").symlink_to(victim)
    with pytest.raises(UnsafeFolder, match="_logs is a symlink"):
        real_dir(root, root / "_logs" / "mask")
    with pytest.raises(UnsafeFolder, match="_logs is a symlink"):  # a check without creating anything
        real_dir(root, root / "_logs" / "mask", create=False)
    (root / "report").write_text("a file")
    with pytest.raises(UnsafeFolder, match="not a folder"):
        real_dir(root, root / "report")
    with pytest.raises(UnsafeFolder, match="not inside"):
        real_dir(root, root / ".." / "elsewhere")
    assert real_dir(root, root / "absent" / "deeper", create=False) and not (root / "absent").exists()
    # the writers go through it: a table, a log
    with pytest.raises(UnsafeFolder):
        write_table(root / "_logs" / "shard-00000.parquet", pa.table({"a": [1]}), root)
    with pytest.raises(UnsafeFolder):
        open_new_text(root / "_logs" / "mask" / "shard-00000.log", root)
    assert untouched(victim)
    linked = tmp_path / "linked-out"  # --out itself may be a symlink: the user's choice
    linked.symlink_to(root)
    assert real_dir(linked, linked / "plan").is_dir() and (root / "plan").is_dir()


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """An output folder with a plan that has given text, and no mask stage yet."""
    root = make_shards(tmp_path_factory.mktemp("base") / "f", n=4, shard_size=4, labelled=True)
    shutil.rmtree(root / "mask")
    shutil.rmtree(root / "_done" / "mask")
    return root


@pytest.mark.parametrize("planted", ["_logs/mask", "mask", "_done/mask", "_done"])
def test_mask_refuses_a_symlinked_folder_and_writes_nothing_through_it(base, tmp_path, planted):
    out = tmp_path / "f"
    shutil.copytree(base, out)
    victim = victim_folder(tmp_path)
    if planted == "_done":
        shutil.rmtree(out / "_done")
        shutil.copytree(base / "_done", victim / "_done-copy")  # a plan marker must stay readable for the run
        (out / "_done").symlink_to(victim / "_done-copy")
        refused(run_cli("mask", "--out", str(out)), "_done")
        assert not (victim / "_done-copy" / "mask").exists()
        return
    (out / planted).parent.mkdir(parents=True, exist_ok=True)
    (out / planted).symlink_to(victim)
    refused(run_cli("mask", "--out", str(out)), planted)
    assert untouched(victim)


def test_export_refuses_symlinked_export_folders(base, tmp_path):
    out = tmp_path / "f"
    shutil.copytree(base, out)
    victim = victim_folder(tmp_path)
    (out / "export").mkdir()
    (out / "export" / "hdf5").symlink_to(victim)
    refused(run_cli("export", "--out", str(out), "--format", "hdf5"), "export/hdf5")
    (out / "export" / "hdf5").unlink()
    (out / "export" / "hdf5").mkdir()
    (out / "export" / "hdf5" / "_done").symlink_to(victim)
    refused(run_cli("export", "--out", str(out), "--format", "hdf5"), "_done")
    assert untouched(victim) and not list((out / "export" / "hdf5").glob("shard-*"))


def test_report_and_limit_folders_are_refused_when_symlinked(tmp_path):
    src = tmp_path / "data"
    src.mkdir()
    for name in ("a", "b"):
        write_wav(src / f"{name}.wav", 0.5)
    out = tmp_path / "out"
    run_cli("extract", "--src", str(src), "--out", str(out), "--stages", "index", check=True)
    victim = victim_folder(tmp_path)
    (out / "_limit").symlink_to(victim)
    refused(run_cli("extract", "--out", str(out), "--stages", "audio", "--limit", "1"), "_limit")
    (out / "report").symlink_to(victim)
    refused(run_cli("report", "--out", str(out)), "report")
    assert untouched(victim)


def test_check_folders_names_the_planted_stage_folder(tmp_path):
    out = OutputDir(tmp_path / "out")
    (out.root / "_logs").mkdir(parents=True)
    (out.root / "_logs" / "asr").symlink_to(tmp_path)
    out.check_folders(["mask"])  # other stages' folders are not its business, and nothing is created
    assert not (out.root / "mask").exists()
    with pytest.raises(UnsafeFolder, match="asr"):
        out.check_folders(["asr"])


def test_drop_shards_never_follows_a_symlinked_stage_folder(tmp_path):
    out = make_shards(tmp_path / "f", n=4, shard_size=2)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "shard-00001.parquet").write_text("precious")
    (out / "linked").symlink_to(victim)
    OutputDir(out).drop_shards_from(1)
    assert (victim / "shard-00001.parquet").read_text() == "precious"
    assert not (out / "acoustic" / "shard-00001.parquet").exists()


def test_kebr_train_refuses_symlinked_run_folders(tmp_path, tiny_bert):
    pytest.importorskip("transformers")
    from click.testing import CliRunner

    from kebr_model.cli import main

    shards = make_shards(tmp_path / "pre", n=4, shard_size=4)
    victim = victim_folder(tmp_path)
    args = ["--set", "layers=1", "--set", "batch_size=4", "--set", f"encoder='{tiny_bert}'", "--set", "max_steps=1"]
    for planted, extra in (("checkpoints", []), ("plots", []), ("seed-1", ["--seeds", "1"])):
        out = tmp_path / f"run-{planted}"
        out.mkdir()
        (out / planted).symlink_to(victim)
        result = CliRunner().invoke(main, ["pretrain", "--shards", str(shards), "--out", str(out), *args, *extra])
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output and f"{planted} is a symlink" in result.output
    assert untouched(victim)


def test_a_sweep_refuses_a_symlinked_run_folder(tmp_path):
    pytest.importorskip("torch")
    from click.testing import CliRunner

    from kebr_model.cli import main
    from kebr_model.sweeps import point_name

    shards = make_shards(tmp_path / "mosi", n=4, shard_size=4, labelled=True)
    grid = tmp_path / "grid.toml"
    grid.write_text('[sweep]\nseeds = [1]\n[grid]\nencoder = ["/no/such/encoder"]\n')
    out, victim = tmp_path / "sweep", victim_folder(tmp_path)
    (out / point_name({"encoder": "/no/such/encoder"})).mkdir(parents=True)
    (out / point_name({"encoder": "/no/such/encoder"}) / "seed-1").symlink_to(victim)
    result = CliRunner().invoke(main, ["sweep", "--config", str(grid), "--shards", str(shards), "--out", str(out)])
    assert result.exit_code == 2 and "seed-1 is a symlink" in result.output, result.output
    assert untouched(victim)


def test_a_checkpoint_commit_refuses_checkpoints_planted_after_the_run_started(tmp_path):
    """checkpoints/ replaced by a symlink mid-run: the commit refuses it and writes nothing through it."""
    torch = pytest.importorskip("torch")
    from kebr_model.training import checkpoint

    run, victim = tmp_path / "run", victim_folder(tmp_path)
    run.mkdir()
    (run / "checkpoints").symlink_to(victim)
    with pytest.raises(UnsafeFolder, match="checkpoints is a symlink"):
        checkpoint.save(run, "step-00000001", torch.nn.Linear(2, 2), None, None, {"step": 1})
    assert untouched(victim)


def plant(links: list[Path], victim: Path) -> None:
    """Each of `links` made a symlink to a file of `victim` (what an attacker with write access plants)."""
    for link in links:
        link.unlink(missing_ok=True)
        link.symlink_to(victim / "shard-00000.json")


def replaced(links: list[Path]) -> bool:
    return all(p.is_file() and not p.is_symlink() for p in links)


def test_kebr_train_replaces_files_planted_as_symlinks_at_its_own_paths(tmp_path, tiny_bert):
    """metrics.jsonl (appended on resume), test_metrics.json, verified_tables.json, plots, summary.md,
    predictions and analysis.json were opened through a symlink planted at their path: now replaced."""
    pytest.importorskip("transformers")
    from click.testing import CliRunner

    from kebr_model.cli import main

    def cli(*args: object) -> None:
        result = CliRunner().invoke(main, [str(a) for a in args])
        assert result.exit_code == 0, result.output

    shards = make_shards(tmp_path / "mosi", n=10, shard_size=5, labelled=True)
    victim, out = victim_folder(tmp_path), tmp_path / "run"
    run = out / "seed-1"
    (run / "plots").mkdir(parents=True)
    args = ["finetune", "--shards", shards, "--out", out, "--seeds", "1", "--set", "layers=1", "--set",
            "batch_size=4", "--set", f"encoder='{tiny_bert}'"]
    first = [out / "summary.md", run / "test_metrics.json", run / "verified_tables.json", run / "plots/losses.png"]
    plant(first, victim)
    cli(*args, "--set", "max_steps=1")
    assert untouched(victim) and replaced(first)
    plant([run / "metrics.jsonl"], victim)  # then resumed: its rows are appended
    cli(*args, "--set", "max_steps=2")
    assert untouched(victim) and replaced([run / "metrics.jsonl"])
    assert [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [2, 2]
    written = [run / "predictions-test.parquet", run / "analysis.json"]
    plant(written, victim)
    cli("eval", "--shards", shards, "--run", run)
    cli("analyse", "--shards", shards, "--run", run)
    assert untouched(victim) and replaced(written)


def test_a_sweep_replaces_its_tables_and_logs_planted_as_symlinks(tmp_path):
    pytest.importorskip("torch")
    from click.testing import CliRunner

    from kebr_model.cli import main
    from kebr_model.sweeps import point_name

    shards = make_shards(tmp_path / "mosi", n=4, shard_size=4, labelled=True)
    grid = tmp_path / "grid.toml"
    grid.write_text('[sweep]\nseeds = [1]\n[grid]\nencoder = ["/no/such/encoder"]\n')
    out, victim = tmp_path / "sweep", victim_folder(tmp_path)
    seed = out / point_name({"encoder": "/no/such/encoder"}) / "seed-1"
    seed.mkdir(parents=True)
    links = [out / "sweep.md", out / "sweep.csv", seed / "train.log"]
    plant([*links, seed / "sweep_result.json"], victim)
    result = CliRunner().invoke(main, ["sweep", "--config", str(grid), "--shards", str(shards), "--out", str(out)])
    assert result.exit_code == 2 and "1 of 1 runs failed" in result.output, result.output  # the tables are written
    assert untouched(victim) and replaced(links)
    assert (seed / "train.log").read_text().startswith("error: ")  # the failed run logged there
    assert (seed / "sweep_result.json").is_symlink() and "finished before" not in result.output  # not read


def test_open_append_text_appends_to_its_file_and_replaces_anything_else(tmp_path):
    import os

    victim, run = victim_folder(tmp_path), tmp_path / "run"
    run.mkdir()
    log = run / "metrics.jsonl"
    for planted in ("symlink", "fifo", "file"):
        log.unlink(missing_ok=True)
        if planted == "symlink":
            log.symlink_to(victim / "shard-00000.log")
        elif planted == "fifo":
            os.mkfifo(log)  # nobody reads it: an open for writing would block
        else:
            log.write_text("kept\n")
        with open_append_text(log, run) as fh:
            fh.write("row\n")
        assert log.is_file() and not log.is_symlink()
        assert log.read_text() == ("kept\nrow\n" if planted == "file" else "row\n"), planted
    assert untouched(victim)
