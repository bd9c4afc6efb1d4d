"""`kebr-data` and `kebr-train` commands started by shell scripts (the dataset recipes) forked from one
interpreter that has imported both CLIs, torch and transformers once: each command is still a process
of its own (its exit status, stdin/stdout/stderr, environment, working directory, `sys.argv`, the
`__main__` its spawned workers see), but not a fresh interpreter paying ~5 CPU-s of imports.

`python tests/cli_server.py SOCKET` serves; `python tests/cli_server.py --client SOCKET MODULE ARGS...` is
what a shim on PATH runs: it hands the server its three standard file descriptors, argv, environment and
working directory over the Unix socket and exits with the command's status. The server forks a handler per
connection; the handler forks the command and waits for it, so the status is the process's own (a signal
included), not what Python would report from inside.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

#: module -> the file `python -m MODULE` runs as __main__
MAINS = {"kebr_data": "kebr_data/__main__.py", "kebr_model.cli": "kebr_model/cli.py"}


def _command(request: dict) -> None:
    """In the forked command: become `python -m MODULE ARGS` and run its CLI (exits through SystemExit)."""
    import importlib.util

    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    module = request["module"]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path[0] = request["cwd"]
    sys.argv = [os.path.join(root, MAINS[module]), *request["args"]]
    main = sys.modules["__main__"]
    main.__spec__ = importlib.util.find_spec("kebr_data.__main__" if module == "kebr_data" else module)
    main.__file__, main.__package__ = sys.argv[0], main.__spec__.parent
    if module == "kebr_data":
        from kebr_data.cli import main as cli
    else:
        from kebr_model.cli import main as cli
    cli()
    sys.exit(0)


def _handle(conn: socket.socket) -> None:
    """One connection: receive the request and the client's fds 0-2, run the command in a child, report its status."""
    data, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
    request = json.loads(data)
    pid = os.fork()
    if pid == 0:
        conn.close()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        code = 1
        try:
            _command(request)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if not isinstance(exc.code, (int, type(None))):
                print(exc.code, file=sys.stderr)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)
    for fd in fds:
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    conn.sendall(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}).encode())


def _reap(*_: object) -> None:
    """SIGCHLD: wait for every finished handler."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


#: what the commands import on first use (a BERT encoder's model code, which pulls in torch._dynamo; the metrics'
#: scikit-learn; the plots' matplotlib): ~2.7 of `kebr-train eval`'s 3.0 CPU-s on a small run, paid once here
PRELOAD = ("transformers.models.bert.modeling_bert", "sklearn.metrics", "matplotlib.pyplot")


def preload() -> None:
    """Import PRELOAD as the commands do (matplotlib on its Agg backend first, as kebr_model's plots set it)."""
    import importlib

    import matplotlib

    matplotlib.use("Agg")
    for name in PRELOAD:
        importlib.import_module(name)


def serve(path: str) -> None:
    """Import what every command starts from, then fork a handler per connection until SIGTERM."""
    import torch  # noqa: F401
    import transformers  # noqa: F401

    import kebr_data.cli  # noqa: F401
    import kebr_model.cli  # noqa: F401

    preload()
    # handlers are reaped here, not by the kernel (SIG_IGN): their CPU then counts in the server's children's,
    # and so in the test process's (`time`, resource.getrusage) once it waits for the server
    signal.signal(signal.SIGCHLD, _reap)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path + ".tmp")
    server.listen(8)
    os.rename(path + ".tmp", path)  # the client waits for this name: it appears once the server accepts
    while True:
        conn, _ = server.accept()
        if os.fork() == 0:
            server.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            _handle(conn)
            os._exit(0)
        conn.close()


def client(path: str, module: str, args: list[str]) -> int:
    """Run `python -m MODULE ARGS` through the server at `path`; its exit status."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(path)
    request = {"module": module, "args": args, "env": dict(os.environ), "cwd": os.getcwd()}
    socket.send_fds(conn, [json.dumps(request).encode()], [0, 1, 2])
    reply = b""
    while chunk := conn.recv(4096):
        reply += chunk
    code = json.loads(reply)["returncode"] if reply else 1
    return 128 - code if code < 0 else code


def command(sock: Path, module: str) -> list[str]:
    """The argument list that runs `python -m MODULE` through the server at `sock` (append the CLI's args)."""
    return [sys.executable, __file__, "--client", str(sock), module]


@contextlib.contextmanager
def running(sock: Path, env: dict[str, str], cwd: Path) -> Iterator[subprocess.Popen]:
    """A server at `sock` with environment `env` while the block runs (its commands get their caller's env);
    the block gets the server's process."""
    sock.unlink(missing_ok=True)  # a former server's name: the new one is waited for by its name
    server = subprocess.Popen([sys.executable, __file__, str(sock)], env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not sock.exists():
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the CLI server did not start")
            time.sleep(0.05)
        yield server
    finally:
        server.terminate()
        server.wait(timeout=30)
        sock.unlink(missing_ok=True)


if __name__ == "__main__":
    if sys.argv[1] == "--client":
        sys.exit(client(sys.argv[2], sys.argv[3], sys.argv[4:]))
    serve(sys.argv[1])
