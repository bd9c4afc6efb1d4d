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


def _serve(fd: int, preload: list[str]) -> None:
    """The zygote: import the CLI (and the `preload` modules) once, then fork one child per request until the
    test process closes the socket."""
    import importlib

    import kebr_data.cli  # noqa: F401  (what every child starts from)

    for name in preload:
        importlib.import_module(name)

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
    """The client side: one zygote per test process, for the environment it was started with and the modules
    it imported beyond the CLI."""

    def __init__(self, env: dict[str, str], preload: tuple[str, ...]) -> None:
        self.env, self.preload = env, preload
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.proc = subprocess.Popen([sys.executable, __file__, str(theirs.fileno()), *preload],
                                     pass_fds=[theirs.fileno()], env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL)
        theirs.close()
        self.lock = threading.Lock()
        atexit.register(self.close)

    def serves(self, env: dict[str, str], preload: tuple[str, ...] = ()) -> bool:
        """Free (no started run left to wait for: a test that failed before waiting), alive, and made for `env`."""
        strip = lambda e: {k: v for k, v in e.items() if k not in _PER_TEST}  # noqa: E731
        return (not self.lock.locked() and self.proc.poll() is None and strip(env) == strip(self.env)
                and set(preload) <= set(self.preload))

    def run(self, args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
        forked = Forked(self, args, env)
        try:
            out, err = forked.communicate(timeout)
        except subprocess.TimeoutExpired:
            forked.kill()
            forked.wait()
            raise
        return subprocess.CompletedProcess([sys.executable, "-m", "kebr_data", *args], forked.returncode, out, err)

    def close(self) -> None:
        self.sock.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Forked:
    """One run forked by a zygote, with the part of subprocess.Popen's interface the tests use (pid, poll, wait,
    kill, communicate, returncode); its stdout and stderr are read by two threads. The zygote serves no other
    run until this one has exited and been waited for."""

    def __init__(self, zygote: _Zygote, args: list[str], env: dict[str, str]) -> None:
        self.zygote, self.args, self.returncode = zygote, ["kebr-data", *args], None
        zygote.lock.acquire()
        try:
            self._out, out_w = os.pipe()
            self._err, err_w = os.pipe()
            request = {"args": args, "env": env, "cwd": os.getcwd()}
            socket.send_fds(zygote.sock, [json.dumps(request).encode()], [out_w, err_w])
            os.close(out_w)
            os.close(err_w)
            self._texts: dict[int, str] = {}
            self._readers = [threading.Thread(target=self._drain, args=(fd,), daemon=True)
                             for fd in (self._out, self._err)]
            for t in self._readers:
                t.start()
            self.pid: int = json.loads(zygote.sock.recv(1 << 16))["pid"]
        except BaseException:
            zygote.lock.release()
            raise

    def _drain(self, fd: int) -> None:
        with open(fd, encoding="utf-8", errors="replace") as f:
            self._texts[fd] = f.read()

    def _exit_status(self, timeout: float | None) -> int | None:
        """The zygote's report of the run's exit status, waiting at most `timeout` s (None: as long as it takes)."""
        if self.returncode is None:
            self.zygote.sock.settimeout(timeout)
            try:
                self.returncode = json.loads(self.zygote.sock.recv(1 << 16))["returncode"]
            except (TimeoutError, BlockingIOError):
                return None
            finally:
                self.zygote.sock.settimeout(None)
            self.zygote.lock.release()
        return self.returncode

    def poll(self) -> int | None:
        return self._exit_status(0)

    def wait(self, timeout: float | None = None) -> int:
        if self._exit_status(timeout) is None:
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode

    def kill(self) -> None:
        if self.returncode is None:
            os.kill(self.pid, signal.SIGKILL)

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        """Wait for the run, then (as subprocess.run) for whatever it started to close its output."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self.wait(timeout)
        for t in self._readers:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                raise subprocess.TimeoutExpired(self.args, timeout)
        return self._texts[self._out], self._texts[self._err]


_zygotes: list[_Zygote] = []  # most recently started last
_MAX_ZYGOTES = 2
#: what a model stage's check (kebr_data/features/model_size.py: the model built on the meta device) imports
MODELS = ("torch", "transformers.modeling_utils")


def _zygote(env: dict[str, str], preload: tuple[str, ...], start: bool) -> _Zygote | None:
    """A running zygote that serves `env` and has imported `preload`; started if there is none and `start`."""
    _zygotes[:] = [z for z in _zygotes if z.proc.poll() is None]
    zygote = next((z for z in reversed(_zygotes) if z.serves(env, preload)), None)
    if zygote is None and start:
        idle = [z for z in _zygotes if not z.lock.locked()]
        if len(_zygotes) >= _MAX_ZYGOTES and idle:
            _zygotes.remove(idle[0])
            idle[0].close()
        zygote = _Zygote(env, preload)
        _zygotes.append(zygote)
    return zygote


def run(args: list[str], env: dict[str, str], timeout: float, start: bool = True,
        preload: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """`python -m kebr_data ARGS` with environment `env`, forked from a zygote started with that environment
    (beyond per-test variables) that imported `preload` too (MODELS: the runs whose main process builds a
    model, ~4 CPU-s of torch and transformers imports each; a zygote that has them serves every other run
    as well); with `start=False` a real subprocess where no zygote serves `env` yet (a caller's one-off
    environment would cost a zygote's start for one run)."""
    zygote = _zygote(env, preload, start)
    if zygote is None:
        return subprocess.run([sys.executable, "-m", "kebr_data", *args], capture_output=True, text=True,
                              timeout=timeout, env=env)
    return zygote.run(args, env, timeout)


def start(args: list[str], env: dict[str, str], preload: tuple[str, ...] = ()) -> Forked:
    """`python -m kebr_data ARGS` forked as `run` does, returned while it runs (to be signalled, polled, waited
    for): what subprocess.Popen would give, without the interpreter's start and imports."""
    return Forked(_zygote(env, preload, True), args, env)


if __name__ == "__main__":
    _serve(int(sys.argv[1]), sys.argv[2:])
