"""`kebr-data` runs forked from a pre-imported interpreter: each run is still a real process of its own
(its own exit code, environment, working directory, signal handlers and worker processes), but the
~1 CPU-s interpreter start and import of `kebr_data.cli` is paid once per test process, not per run.

`run(args, env, timeout)` sends a request to a zygote process (started on first use with the test
process's environment) over a Unix socket pair, with the two pipe ends the run writes its stdout and
stderr to; the zygote forks, the child becomes `python -m kebr_data ARGS` (argv, environment, cwd,
sys.path[0], the `__main__` that multiprocessing's spawn workers see) and calls the CLI's main; the
zygote reports its pid, then its exit status. Run as a script, this module is the zygote.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

MAIN_PY = str(Path(__file__).resolve().parents[1] / "kebr_data" / "__main__.py")
_PER_TEST = ("PYTEST_CURRENT_TEST",)  # pytest changes it for every test; the run gets the caller's value


def _child(request: dict, out: int, err: int) -> None:
    """In the forked child: become `python -m kebr_data ARGS` and run the CLI (exits through SystemExit)."""
    import importlib.util

    os.dup2(out, 1)
    os.dup2(err, 2)
    os.close(out)
    os.close(err)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.path[0] = request["cwd"]  # what `python -m` puts first
    sys.argv = [MAIN_PY, *request["args"]]
    main = sys.modules["__main__"]
    main.__spec__ = importlib.util.find_spec("kebr_data.__main__")
    main.__file__, main.__package__ = MAIN_PY, "kebr_data"
    from kebr_data.cli import main as cli

    cli()
    sys.exit(0)


def _serve(fd: int) -> None:
    """The zygote: import the CLI once, then fork one child per request until the test process closes the socket."""
    import kebr_data.cli  # noqa: F401  (what every child starts from)

    sock = socket.socket(fileno=fd)
    while True:
        data, fds, _, _ = socket.recv_fds(sock, 1 << 20, 2)
        if not data:
            return
        pid = os.fork()
        if pid == 0:
            sock.close()
            _child(json.loads(data), *fds)
        for f in fds:
            os.close(f)
        sock.send(json.dumps({"pid": pid}).encode())
        _, status = os.waitpid(pid, 0)
        sock.send(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}).encode())


class _Zygote:
    """The client side: one zygote per test process, for the environment it was started with."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.proc = subprocess.Popen([sys.executable, __file__, str(theirs.fileno())], pass_fds=[theirs.fileno()],
                                     env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        theirs.close()
        self.lock = threading.Lock()
        atexit.register(self.close)

    def serves(self, env: dict[str, str]) -> bool:
        strip = lambda e: {k: v for k, v in e.items() if k not in _PER_TEST}  # noqa: E731
        return self.proc.poll() is None and strip(env) == strip(self.env)

    def run(self, args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
        with self.lock:
            out_r, out_w = os.pipe()
            err_r, err_w = os.pipe()
            request = {"args": args, "env": env, "cwd": os.getcwd()}
            socket.send_fds(self.sock, [json.dumps(request).encode()], [out_w, err_w])
            os.close(out_w)
            os.close(err_w)
            texts: dict[int, str] = {}

            def drain(fd: int) -> None:
                with open(fd, encoding="utf-8", errors="replace") as f:
                    texts[fd] = f.read()

            readers = [threading.Thread(target=drain, args=(fd,), daemon=True) for fd in (out_r, err_r)]
            for t in readers:
                t.start()
            pid = json.loads(self.sock.recv(1 << 16))["pid"]
            deadline = time.monotonic() + timeout
            self.sock.settimeout(timeout)
            try:
                returncode = json.loads(self.sock.recv(1 << 16))["returncode"]
            except socket.timeout:
                os.kill(pid, signal.SIGKILL)
                self.sock.settimeout(None)
                self.sock.recv(1 << 16)
                raise subprocess.TimeoutExpired(["kebr-data", *args], timeout) from None
            finally:
                self.sock.settimeout(None)
            for t in readers:  # as subprocess.run: until the run and whatever it started close their ends
                t.join(max(0.0, deadline - time.monotonic()))
                if t.is_alive():
                    raise subprocess.TimeoutExpired(["kebr-data", *args], timeout)
            return subprocess.CompletedProcess([sys.executable, "-m", "kebr_data", *args], returncode,
                                               texts[out_r], texts[err_r])

    def close(self) -> None:
        self.sock.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


_zygotes: list[_Zygote] = []  # most recently started last
_MAX_ZYGOTES = 2


def run(args: list[str], env: dict[str, str], timeout: float, start: bool = True) -> subprocess.CompletedProcess:
    """`python -m kebr_data ARGS` with environment `env`, forked from a zygote started with that environment
    (beyond per-test variables); with `start=False` a real subprocess where no zygote serves `env` yet (a
    caller's one-off environment would cost a zygote's start for one run)."""
    _zygotes[:] = [z for z in _zygotes if z.proc.poll() is None]
    zygote = next((z for z in _zygotes if z.serves(env)), None)
    if zygote is None and start:
        if len(_zygotes) == _MAX_ZYGOTES:
            _zygotes.pop(0).close()
        zygote = _Zygote(env)
        _zygotes.append(zygote)
    if zygote is None:
        return subprocess.run([sys.executable, "-m", "kebr_data", *args], capture_output=True, text=True,
                              timeout=timeout, env=env)
    return zygote.run(args, env, timeout)


if __name__ == "__main__":
    _serve(int(sys.argv[1]))
