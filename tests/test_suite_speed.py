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


def test_a_run_that_checks_a_model_forks_from_a_zygote_with_torch_imported(tmp_path):
    """ssl_audio's check builds the model on the meta device in the run's main process (torch and transformers
    imports, ~4 CPU-s): `models=True` forks it from a zygote that imported them once; its refusal of a config
    describing a huge model is a fresh interpreter's, and a later plain run is served by the same zygote."""
    import json

    from helpers import DEMO, tiny_audio_model

    model = tiny_audio_model("hubert", tmp_path / "huge", True)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 1000000}))
    args = ("extract", "--src", str(DEMO), "--out", str(tmp_path / "f"), "--stages", "index,audio,ssl_audio",
            "--set", f"ssl_audio.model='{model}'")
    forked, started = run_cli(*args, models=True), fresh(*args)
    assert (forked.returncode, forked.stdout, forked.stderr) == (started.returncode, started.stdout, started.stderr)
    assert forked.returncode == 2 and "more than ssl_audio.max_params" in forked.stderr
    env = {**os.environ, "COLUMNS": "250"}
    (zygote,) = [z for z in cli_zygote._zygotes if z.serves(env, cli_zygote.MODELS)]
    assert "libtorch" in Path(f"/proc/{zygote.proc.pid}/maps").read_text()  # torch is loaded in the zygote
    assert zygote.serves(env)  # plain runs fork from it too
    assert run_cli("--help").returncode == 0 and zygote in cli_zygote._zygotes and zygote.proc.poll() is None


def test_a_started_run_is_a_process_to_signal_poll_and_wait_for(tmp_path):
    """start_cli, the kill tests' Popen: a process of its own (a child of the zygote) that a SIGKILL ends with
    -9, polled while it runs, never serving another run meanwhile; communicate gives its output; the zygote
    serves the next run afterwards."""
    import signal

    import psutil
    from helpers import DEMO, start_cli

    proc = start_cli("extract", "--src", str(DEMO), "--out", str(tmp_path / "a"), "--stages", "index,audio")
    (busy,) = [z for z in cli_zygote._zygotes if z.proc.pid == psutil.Process(proc.pid).ppid()]
    assert proc.poll() is None and not busy.serves(busy.env)  # a run left unwaited never blocks the next one
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL and proc.poll() == -signal.SIGKILL
    done = start_cli("extract", "--src", str(DEMO), "--out", str(tmp_path / "b"), "--stages", "index")
    _, err = done.communicate(timeout=120)
    assert done.returncode == 0 and "8 clips" in err and (tmp_path / "b/_done/plan.json").is_file(), err
    assert run_cli("status", "--out", str(tmp_path / "b")).returncode == 0


def test_a_shared_demo_run_is_made_once_and_then_read(tmp_path_factory):
    """conftest.shared_demo_run: a second caller (another file, another xdist worker) gets the folder and the
    stderr of the first call's extraction, not a run of its own."""
    out, err = conftest.shared_demo_run(tmp_path_factory, "index")
    made = (out / "_done/plan.json").stat().st_mtime_ns
    assert conftest.shared_demo_run(tmp_path_factory, "index") == (out, err)
    assert (out / "_done/plan.json").stat().st_mtime_ns == made and "8 clips" in err


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
