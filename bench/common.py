"""Helpers shared by the benchmarks: RESULTS.md sections, peak-RSS polling, running kebr-data."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = "# Benchmark results\n\nEach section is written by the script named in it; rerun the script to refresh it.\n"


def write_section(key: str, title: str, body: str, script: str = "") -> None:
    """Print `body` and replace (or append) the section `key` of RESULTS.md with it (written by `script`,
    default from the key)."""
    print(body)
    text = RESULTS.read_text() if RESULTS.exists() else HEADER
    block = (f"<!-- {key} -->\n## {title}\n\n_`bench/{script or key.replace('-', '_') + '.py'}`, "
             f"{time.strftime('%Y-%m-%d')}_\n\n{body.strip()}\n<!-- /{key} -->\n")
    pattern = re.compile(rf"<!-- {re.escape(key)} -->.*?<!-- /{re.escape(key)} -->\n", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + block
    RESULTS.write_text(text)


class PeakRss:
    """Poll a process tree; keep the peak RSS of the main process, its workers and ffmpeg children."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self.peak = {"main": 0, "worker": 0, "ffmpeg": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                procs = [(self.root, "main")] + [(c, None) for c in self.root.children(recursive=True)]
                for p, role in procs:
                    role = role or ("ffmpeg" if "ffmpeg" in p.name() else "worker")
                    self.peak[role] = max(self.peak[role], p.memory_info().rss)
            except psutil.Error:
                pass
            time.sleep(0.02)

    def stop(self) -> dict[str, int]:
        self._stop.set()
        self._thread.join()
        return self.peak


def run_kebr(args: list[str], poll: bool = True) -> tuple[float, dict[str, int]]:
    """Run `kebr-data ARGS`; return (wall seconds, peak RSS by role). Without `poll` nothing else
    runs beside it (for scaling measurements on a 2-core machine)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "kebr_data", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    rss = PeakRss(proc.pid) if poll else None
    _, err = proc.communicate()
    wall = time.perf_counter() - t0
    peak = rss.stop() if rss else {}
    if proc.returncode != 0:
        raise SystemExit(err.decode())
    return wall, peak
