"""Export formats and executors carry their own options (issue #26): a toy one of each, registered from
this module (one class + one line), gets its flag on the command line and its checked options object."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from shard_factory import make_shards

from kebr_data.cli import main
from kebr_data.executors import EXECUTORS, Executor
from kebr_data.export import FORMATS
from kebr_data.export.base import ShardFormat, ShardTables
from kebr_data.plugin_options import option
from kebr_data.storage.atomic import atomic_write_bytes


@dataclass
class GreetingOptions:
    """The toy format's options."""

    greeting: str = option("hello", "first word of each line")
    repeat: int = option(1, "lines per clip", min=1)


class GreetingFormat(ShardFormat):
    """A text file per shard: `<greeting> <clip_id>` per clip, `repeat` times."""

    suffix = "txt"
    Options = GreetingOptions

    def describe(self) -> str:
        return "greetings"

    def write_shard(self, path: Path, tables: ShardTables) -> tuple[int, str]:
        ids = tables.plan.column("clip_id").to_pylist()
        lines = [f"{self.options.greeting} {cid}" for cid in ids for _ in range(self.options.repeat)]
        return atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())


@dataclass
class InlineOptions:
    """The toy executor's options."""

    tag: str = option("", "a word recorded with every task run", flag="inline-tag")


class InlineExecutor(Executor):
    """Runs every task in this process, one after the other, recording its tag per task."""

    Options = InlineOptions
    ran: list[tuple[str, Any]] = []

    def run(self, fn, tasks, on_progress, cpus=1.0, gpus=0.0):
        for task in tasks:
            InlineExecutor.ran.append((self.options.tag, task.stage))
            yield task, fn(task, lambda n, task=task: on_progress(task, n))


def cli(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False, prog_name="kebr-data")


@pytest.fixture()
def folder(tmp_path, monkeypatch):
    monkeypatch.setitem(FORMATS, "greeting", GreetingFormat)
    monkeypatch.setitem(EXECUTORS, "inline", InlineExecutor)
    return make_shards(tmp_path / "f", n=5, shard_size=3, labelled=True)


def test_a_toy_export_format_gets_its_option_as_a_flag(folder):
    assert "--greeting" in cli("export", "--help").output
    done = cli("export", "--out", str(folder), "--format", "greeting", "--greeting", "hi", "--repeat", "2")
    assert done.exit_code == 0, done.output
    assert (folder / "export/greeting/shard-00001.txt").read_text() == "hi clip0003\n" * 2 + "hi clip0004\n" * 2
    refused = cli("export", "--out", str(folder), "--format", "greeting", "--vision-len", "5")
    assert refused.exit_code == 2 and "--vision-len is not an option of export format greeting" in refused.output
    bad = cli("export", "--out", str(folder), "--format", "greeting", "--repeat", "0")
    assert bad.exit_code == 2 and "--repeat" in bad.output


def test_the_export_api_checks_a_format_s_options(folder):
    from kebr_data.errors import ConfigError
    from kebr_data.export import export

    dest, _ = export(folder, "greeting", folder / "g", greeting="hey")
    assert (dest / "shard-00000.txt").read_text().startswith("hey clip0000\n")
    with pytest.raises(ConfigError, match="has no option 'greting' \\(did you mean greeting\\?\\)"):
        export(folder, "greeting", greting="hey")


def test_a_toy_executor_gets_its_option_as_a_flag_and_runs_an_extract(folder):
    InlineExecutor.ran.clear()
    done = cli("extract", "--out", str(folder), "--stages", "mask", "--force", "--executor", "inline",
               "--inline-tag", "from-flag")
    assert done.exit_code == 0, done.output
    assert InlineExecutor.ran == [("from-flag", "mask")] * 2  # two shards, both run by the toy executor
    InlineExecutor.ran.clear()
    done = cli("extract", "--out", str(folder), "--stages", "mask", "--force", "--set", "inline.tag=from-config")
    assert done.exit_code == 0, done.output  # the folder remembers --executor inline
    assert InlineExecutor.ran == [("from-config", "mask")] * 2


def test_a_folder_saved_before_an_executor_s_options_existed_reports_no_change(folder):
    import json

    assert cli("extract", "--out", str(folder), "--stages", "mask", "--force").exit_code == 0
    record = json.loads((folder / "run.json").read_text())
    del record["config"]["ray"]  # as a folder written before `[ray]` existed
    (folder / "run.json").write_text(json.dumps(record))
    done = cli("extract", "--out", str(folder), "--stages", "mask")
    assert done.exit_code == 0 and "settings changed" not in done.output, done.output


def test_a_folder_saved_with_run_ray_address_keeps_its_address_as_ray_address(folder):
    import json

    assert cli("extract", "--out", str(folder), "--stages", "mask", "--force").exit_code == 0
    record = json.loads((folder / "run.json").read_text())
    del record["config"]["ray"]
    record["config"]["run"]["ray_address"] = "10.0.0.5:6379"  # as saved before the Ray options were `[ray]`
    (folder / "run.json").write_text(json.dumps(record))
    assert cli("extract", "--out", str(folder), "--stages", "mask").exit_code == 0
    assert json.loads((folder / "run.json").read_text())["config"]["ray"]["address"] == "10.0.0.5:6379"


@dataclass
class ClashingFormatOptions:
    """A format option whose flag is `kebr-data export`'s own --to."""

    to: str = option("", "where the greetings go")


class ClashingFormat(GreetingFormat):
    Options = ClashingFormatOptions


@dataclass
class ClashingExecutorOptions:
    """An executor option taking the Ray executor's --address flag, for a number."""

    address: int = option(0, "a port number")


class ClashingExecutor(InlineExecutor):
    Options = ClashingExecutorOptions


def test_a_format_s_flag_that_is_the_command_s_own_is_refused_in_one_line(folder, monkeypatch):
    monkeypatch.setitem(FORMATS, "clash", ClashingFormat)
    for args in (["--format", "greeting"], ["--help"]):
        refused = cli("export", "--out", str(folder), *args)
        assert refused.exit_code == 2, refused.output
        assert refused.output.strip() == ("error: export format clash's option --to clashes with kebr-data "
                                          "export's own --to: give it another flag (option(..., flag=...))")
    assert not (folder / "export").exists()


@dataclass
class TwiceOptions:
    """Two options of one executor under one flag, of the same type: only one could be set from it."""

    tag: str = option("", "a tag")
    label: str = option("", "a label", flag="tag")


class TwiceExecutor(InlineExecutor):
    Options = TwiceOptions


@pytest.mark.parametrize(("executor", "refusal"), [
    (ClashingExecutor, "executor clash's option address takes the flag --address, already an option of executor ray "
                       "accepting other values"),
    (TwiceExecutor, "executor clash's options tag and label both take the flag --tag"),
], ids=["another-executor-s", "its-own-twice"])
def test_an_executor_flag_that_another_option_takes_is_refused(folder, monkeypatch, executor, refusal):
    """A flag that another executor takes for other values, or that one executor gives two of its options."""
    monkeypatch.setitem(EXECUTORS, "clash", executor)
    before = {p: p.stat().st_mtime_ns for p in folder.rglob("*")}
    refused = cli("extract", "--out", str(folder), "--stages", "mask", "--force", "--executor", "inline")
    assert refused.exit_code == 2, refused.output
    assert refused.output.strip() == f"error: {refusal}: give one of them another flag (option(..., flag=...))"
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*")} == before  # nothing run, nothing written
