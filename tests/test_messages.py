"""What `kebr-data` prints: fixes that name options which exist, counts that add up, one bounded line per
failed shard, user text escaped, numbers that differ when they are compared, languages that were heard."""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil

import pyarrow as pa
import pytest
from helpers import run_cli, write_wav

from kebr_data import config
from kebr_data.cli import main
from kebr_data.display import beside, one_line, printable
from kebr_data.errors import StaleOutputError
from kebr_data.pipeline.engine import failure_line
from kebr_data.schema import ASR
from kebr_data.stages.asr import AsrStage
from kebr_data.storage.store import PLAN, Store, fix_command, force_command


def parse(command: str) -> None:
    """Parse a `kebr-data ...` command line with the real CLI (click.NoSuchOption for an option it lacks)."""
    args = shlex.split(command)
    assert args[0] == "kebr-data"
    main.commands[args[1]].make_context(args[1], args[2:])


def given_text_folder(root, texts: dict[str, str | None]):
    """Half-second tones with given transcripts; None: a FIFO, which the asr stage fails on (a failed row)."""
    root.mkdir(parents=True)
    for name, text in texts.items():
        write_wav(root / f"{name}.wav", 0.5)
        if text is None:
            os.mkfifo(root / f"{name}.txt")
        else:
            (root / f"{name}.txt").write_text(text)
    return root


def test_fix_commands_name_options_that_exist(tmp_path):
    """`kebr-data mask --force` and `--allow-stale` were named in messages; neither exists."""
    for stage in (PLAN, "audio", "mask"):
        parse(fix_command(tmp_path, stage))
        parse(force_command(tmp_path, stage))
    from kebr_model.config import TrainSettings

    root = tmp_path / "out"
    src = given_text_folder(tmp_path / "data", {"a": "a fine day"})
    run_cli("extract", "--src", str(src), "--out", str(root), "--stages", "index,asr", "--set",
            "asr.engine='given'", check=True)
    (root / "_done/asr/shard-00000.json").unlink()
    with pytest.raises(StaleOutputError) as exc:
        Store(root).require_current(["asr"])
    assert "--allow-stale" not in str(exc.value) and "`kebr-train --set allow_stale=true`" in str(exc.value)
    assert "allow_stale" in {f.name for f in dataclasses.fields(TrainSettings)}
    with pytest.raises(StaleOutputError) as exc:
        Store(root).read_aligned("asr", 0, ["clip_id"], ["another clip"])
    assert str(exc.value).endswith(f"fix: kebr-data extract --out {root} --stages asr --force")
    parse(str(exc.value).split("fix: ")[1])


def test_validate_names_a_command_that_recomputes_mixed_mask_shards(tmp_path):
    from shard_factory import make_shards

    from kebr_data.storage.commit import commit_table
    from kebr_data.validate import validate

    root = make_shards(tmp_path / "f", n=8, shard_size=4)
    store = Store(root)
    m = store.marker("mask", 1)
    commit_table(store.out, "mask", 1, store.read("mask", 1), config_hash="other-settings", stage_version="1",
                 versions={}, upstream=m.upstream)
    (problem,) = [p.what for p in validate(root)[1] if p.shard == -1]
    assert problem.endswith(f"kebr-data extract --out {root} --stages mask --force")
    parse(problem.split(": ")[-1])


def test_retry_failed_counts_the_clips_it_redoes(tmp_path):
    """One failed row of two: the bar reads 1/1 clips (it read 2/1)."""
    src = given_text_folder(tmp_path / "data", {"a": "a fine day", "b": None})
    out = tmp_path / "out"
    sets = ("--set", "asr.engine='given'", "--max-failed", "1")
    run_cli("extract", "--src", str(src), "--out", str(out), "--stages", "index,asr", *sets, check=True)
    os.unlink(src / "b.txt")
    (src / "b.txt").write_text("a bad day")
    proc = run_cli("retry-failed", "--out", str(out), "--stages", "asr", *sets, check=True)
    assert "1/1 clips" in proc.stderr and "2/1" not in proc.stderr, proc.stderr


def test_a_shard_failure_is_one_bounded_line_naming_its_log(tmp_path):
    """A copy that fails file by file raises one shutil.Error listing every file (tens of KB, one line)."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(200):
        os.mkfifo(src / f"file-{i:03d}.conf")  # each copy fails: a named pipe is not copied
    with pytest.raises(shutil.Error) as exc:
        shutil.copytree(src, tmp_path / "dest")
    assert len(str(exc.value)) > 20_000
    line = failure_line("opensmile", 3, exc.value, tmp_path / "_logs/opensmile/shard-00003.log")
    assert len(line) < 400 and "\n" not in line
    assert line.startswith("opensmile shard 00003: Error: [(") and line.endswith("shard-00003.log)")
    assert one_line("\n\nfirst line\nsecond line") == "first line"


def test_user_text_is_escaped_on_the_terminal(tmp_path):
    """A file name with U+202E (right-to-left override) and a manifest cell that is not UTF-8."""
    data = tmp_path / "data"
    data.mkdir()
    write_wav(data / "good.wav", 0.5)
    write_wav(data / "evil\u202egnp.wav", 0.5)
    (tmp_path / "m.csv").write_bytes(b"clip_id,audio_path,given_text\n" b"good,data/good.wav,caf\xe9 au lait\n"
                                     b"b\xe9d,data/good.wav,fine\n" b"ok,data/good.wav,fine\n")
    proc = run_cli("extract", "--src", str(data), "--out", str(tmp_path / "o1"), "--stages", "index", check=True)
    assert "\u202e" not in proc.stderr + proc.stdout and "evil\\u202egnp.wav" in proc.stderr
    proc = run_cli("extract", "--src", str(tmp_path / "m.csv"), "--out", str(tmp_path / "o2"), "--stages", "index",
                   check=True)
    assert "m.csv row 1: given_text is not valid UTF-8 (caf\\xe9 au lait)" in proc.stderr, proc.stderr
    assert "m.csv row 2: clip_id is not valid UTF-8 (b\\xe9d)" in proc.stderr
    assert "b'" not in proc.stderr
    assert printable("a\nb\x85c\u2028d\u200be") == "a\\nb\\x85c\\u2028d\\u200be"


def test_compared_values_print_with_enough_digits():
    assert (beside(0.9899, 0.99), beside(0.98999, 0.99), beside(0.8, 0.9), beside(-1.2345, -1.2)) == \
        ("0.9899", "0.98999", "0.80", "-1.23")


def test_no_speech_clips_are_not_among_the_languages_heard():
    rows = [{"clip_id": "a", "status": "ok", "text": "hello there", "language": "en", "language_prob": 0.9},
            {"clip_id": "b", "status": "skipped", "error": "no_speech", "text": "", "language": "en",
             "language_prob": 0.4},
            {"clip_id": "c", "status": "skipped", "error": "language", "text": "hallo", "language": "de",
             "language_prob": 0.95}]
    stage = AsrStage(config.load()["asr"])
    stats = stage.shard_stats(pa.Table.from_pylist(rows, schema=ASR))
    assert stats["languages"] == {"en": 1, "de": 1} and sum(stats["language_prob_hist"].values()) == 2
    assert stage.format_stats(stats).startswith("languages heard: en 1, de 1")
