"""A Ray cluster with token authentication, as `ray start --head` makes one since Ray 2.60 (issue #27 point
17): a head and a second raylet on 127.0.0.1, the driver joining with `--address`. Without the token mode
the run is refused in one line naming the address and the auth setting; with it, the outputs are the
local run's, byte for byte."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import DEMO, ROOT, extract_demo, shard_files

pytestmark = pytest.mark.slow
ray = pytest.importorskip("ray", reason="the Ray executor's extra (pip install 'kebr[ray]') is not installed")

STAGES = "index,audio"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def ray_start(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    """`ray start ... --block` in its own process group (torn down by its id, never by `ray stop`, which
    would stop every Ray of the machine), each of its ports picked free."""
    ports = {flag: str(free_port()) for flag in ("--node-manager-port", "--object-manager-port",
                                                 "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
                                                 "--runtime-env-agent-port", "--metrics-export-port")}
    cli = [sys.executable, "-c", "from ray.scripts.scripts import main; main()"]
    return subprocess.Popen([*cli, "start", "--block", "--node-ip-address=127.0.0.1", "--disable-usage-stats",
                             *[x for kv in ports.items() for x in kv], *args],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def stop(nodes: list[subprocess.Popen]) -> None:
    """End each `ray start --block` and everything it started (its process group): SIGTERM to all, then
    SIGKILL to what is left after a few seconds, so nothing of the cluster outlives the test."""
    for node in nodes:
        if node.poll() is None:
            os.killpg(node.pid, signal.SIGTERM)
    deadline = time.monotonic() + 3
    for node in nodes:
        try:
            node.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(node.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        node.wait()


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[str, dict[str, str]]]:
    """A token-authenticated head (no CPUs: every task must run on the second node) and a second raylet with
    two CPUs, both on 127.0.0.1; yields the address and the environment that holds the token."""
    temp = Path(tempfile.mkdtemp(prefix="kr", dir="/tmp"))  # short: Ray's socket paths live under it
    token = temp / "auth_token"
    token.write_text(secrets.token_hex(32))
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    port = free_port()
    address = f"127.0.0.1:{port}"
    nodes = [ray_start(["--head", f"--port={port}", "--num-cpus=0", "--include-dashboard=false",
                        f"--ray-client-server-port={free_port()}", f"--temp-dir={temp / 'ray'}"], env)]
    try:
        deadline = time.monotonic() + 60
        while not listening(port):
            assert nodes[0].poll() is None and time.monotonic() < deadline, "the Ray head did not start"
            time.sleep(0.2)
        nodes.append(ray_start([f"--address={address}", "--num-cpus=2"], env))
        yield address, env
    finally:
        stop(nodes[::-1])
        shutil.rmtree(temp, ignore_errors=True)


def test_a_driver_without_token_auth_is_refused_naming_the_address_and_the_setting(cluster, tmp_path):
    address, env = cluster
    plain = {k: v for k, v in env.items() if not k.startswith("RAY_AUTH")}
    proc = subprocess.run([sys.executable, "-m", "kebr_data", "extract", "--src", str(DEMO),
                           "--out", str(tmp_path / "f"), "--stages", "index,audio", "--executor", "ray",
                           "--address", address, "--ray-auth-mode", "disabled"], capture_output=True, text=True,
                          timeout=180, cwd=ROOT,
                          env={**plain, "COLUMNS": "250", "RAY_gcs_server_port_wait_time_s": "2"})
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert f"cannot join the Ray cluster at {address}" in last and "RAY_AUTH_MODE=disabled" in last, last
    assert "--ray-auth-mode token" in last and "check the path" not in proc.stderr


def test_a_two_node_token_cluster_writes_the_local_run_s_bytes(cluster, tmp_path, audio_done):
    address, env = cluster
    local, remote = audio_done, tmp_path / "ray"  # the local executor's run of STAGES (conftest.py)
    token_env = {"RAY_AUTH_MODE": "", "RAY_AUTH_TOKEN_PATH": ""}  # the options below set them, not the shell
    extract_demo(remote, STAGES, "--executor", "ray", "--address", address, "--ray-auth-mode", "token",
                 "--ray-token-path", env["RAY_AUTH_TOKEN_PATH"], check=True, timeout=300, env=token_env)
    assert shard_files(remote) == shard_files(local) and shard_files(local)
