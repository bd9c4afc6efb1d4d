"""tests/cli_server.py, which forks the recipes' and the README's commands from one pre-imported interpreter:
each command is a process of its own with its exit status, and the CPU it uses is counted where `time`
and resource.getrusage look (the server waits for its handlers instead of leaving them to the kernel)."""

import os
import subprocess
from pathlib import Path

import cli_server
from helpers import ROOT


def waited_children_cpu(pid: int) -> int:
    """The clock ticks of user + system CPU of the process's children it has waited for (/proc's cutime, cstime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[13]) + int(fields[14])


def test_commands_exit_with_their_status_and_their_cpu_is_counted(tmp_path):
    sock, env = tmp_path / "cli.sock", {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "250"}
    with cli_server.running(sock, env, ROOT) as server:
        done = subprocess.run([*cli_server.command(sock, "kebr_model.cli"), "defaults"], capture_output=True,
                              text=True, env=env, timeout=120)
        assert done.returncode == 0 and "[train]" in done.stdout, done.stderr
        refused = subprocess.run([*cli_server.command(sock, "kebr_data"), "extract", "--out", str(tmp_path / "no")],
                                 capture_output=True, text=True, env=env, timeout=120)
        assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
        assert waited_children_cpu(server.pid) > 0  # ~16 ticks; the kernel reaping them (SIG_IGN) counted none


def test_the_server_has_imported_what_the_commands_load_on_first_use(tmp_path):
    """PRELOAD is imported before the first fork (seen from outside: scikit-learn's and matplotlib's compiled
    modules are mapped in the server), so each command does not import it again."""
    sock, env = tmp_path / "cli.sock", {**os.environ, "PYTHONPATH": str(ROOT)}
    with cli_server.running(sock, env, ROOT) as server:
        mapped = Path(f"/proc/{server.pid}/maps").read_text()
    assert "/sklearn/" in mapped and "/matplotlib/" in mapped
