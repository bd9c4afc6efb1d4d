"""The suite's own speed-ups keep what they replace: `run_cli` forked from a pre-imported interpreter
(cli_zygote.py) behaves as `python -m kebr_data` in a fresh process, and the longest files run first."""

import os
import subprocess
import sys
from pathlib import Path

import conftest
import pytest
from helpers import ROOT, run_cli

import cli_zygote


def fresh(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`python -m kebr_data ARGS` started the ordinary way."""
    return subprocess.run([sys.executable, "-m", "kebr_data", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "250"}, cwd=cwd)


def test_a_forked_run_prints_and_exits_as_a_fresh_interpreter(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative --out is the run's working directory's
    for args in (["--help"], ["extract", "--help"], ["extract", "--out", "nowhere"], ["status", "--out", "."]):
        forked, started = run_cli(*args), fresh(*args, cwd=tmp_path)
        assert (forked.returncode, forked.stdout, forked.stderr) == \
            (started.returncode, started.stdout, started.stderr), args
    assert "Usage: python -m kebr_data" in run_cli("--help").stdout
    assert any(z.serves({**os.environ, "COLUMNS": "250"}) for z in cli_zygote._zygotes)  # it was forked


def test_each_forked_run_is_a_process_of_its_own(tmp_path):
    """Its own pid and exit status, the caller's environment of the moment, and a timeout that kills it."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.wav").write_bytes(b"")
    done = run_cli("extract", "--src", str(src), "--out", str(tmp_path / "o"), "--stages", "index", check=True)
    assert "1 clips" in done.stderr or "1 clip" in done.stderr, done.stderr
    refused = run_cli("extract", "--src", str(src), "--out", str(tmp_path / "o"), "--stages", "index,lipread")
    assert refused.returncode == 2 and "lipread" in refused.stderr
    with pytest.raises(subprocess.TimeoutExpired):
        run_cli("extract", "--src", str(src), "--out", str(tmp_path / "p"), "--stages", "index", timeout=0.001)
    one_off = run_cli("extract", "--out", str(tmp_path / "o"), "--stages", "index", env={"COLUMNS": "40"})
    assert one_off.returncode == 0, one_off.stderr  # another environment: a plain subprocess


def test_the_longest_files_exist_and_are_collected_first():
    tests = ROOT / "tests"
    assert all((tests / name).is_file() for name in conftest.LONGEST_FIRST)
    assert "--no-loadscope-reorder" in (ROOT / "pyproject.toml").read_text()  # else xdist reorders by test count

    class Item:
        def __init__(self, name: str) -> None:
            self.path = tests / name

    items = [Item(n) for n in ("test_a.py", "test_crash.py", "test_a.py", "test_untrusted.py", "test_b.py")]
    conftest.pytest_collection_modifyitems(items)
    assert [i.path.name for i in items] == ["test_untrusted.py", "test_crash.py", "test_a.py", "test_a.py",
                                            "test_b.py"]
