"""`kebr-train sweep`: every point-seed not finished yet, then the table, the CSV and the plot."""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable
from pathlib import Path

from kebr_data.storage.atomic import atomic_write_bytes, real_dir
from kebr_data.storage.lock import OutputLock

from ..data import open_reader
from ..jsonout import read_owned_json

from .cost import COST, point_cost
from .grid import Point, Sweep, SweepError, run_args
from .plot import plot_sweep
from .point import run_point
from .table import csv_text, markdown, mcc_notes, table_rows


def run_sweep(sweep: Sweep, shards: Path, out: Path, echo: Callable[[str], None] = print,
              dry_run: bool = False) -> str:
    """Run every point-seed not finished yet (in file order), then write out/sweep.md, sweep.csv,
    sweep.png. Returns the Markdown table; raises SweepError naming failed runs (after the table
    of those that finished is written)."""
    points = sweep.points()
    out = Path(out)
    if dry_run:  # each run as the kebr-train command line it amounts to
        return "\n".join(shlex.join(run_args(sweep, p, s, shards, out / p.name / f"seed-{s}"))
                         for p in points for s in sweep.seeds)
    with OutputLock(out / "_lock", "kebr-train sweep"):  # two sweeps in one folder would run the same points
        return _run_all(sweep, points, shards, out, echo)


def _run_all(sweep: Sweep, points: list[Point], shards: Path, out: Path, echo: Callable[[str], None]) -> str:
    total = len(points) * len(sweep.seeds)
    results: dict[str, list[dict]] = {}
    costs: dict[str, dict] = {}
    failed = []
    i = 0
    for point in points:
        point_dir = out / point.name
        if point_dir.resolve().parent != out.resolve():
            raise SweepError(f"grid point name {point.name!r} leaves {out}")  # cannot happen with point_name
        for seed in sweep.seeds:
            i += 1
            t0 = time.monotonic()
            counted = read_owned_json(point_dir / COST) is not None  # counted on the first run built
            cost = None if counted else point_dir / COST
            run_dir = real_dir(out, point_dir / f"seed-{seed}")  # real folders in --out, never a planted symlink
            result, what = run_point(sweep, point, seed, shards, run_dir, cost)
            echo(f"[{i}/{total}] {point.name} seed {seed}: {what} ({time.monotonic() - t0:.1f} s)")
            if result is None:
                failed.append(f"{point.name} seed {seed}")
            else:
                results.setdefault(point.name, []).append(result)
        if point.name in results:
            costs[point.name] = point_cost(sweep, point, shards, point_dir)
    metrics, rows = table_rows(sweep, points, results, costs)
    table = markdown(sweep, metrics, rows, mcc_notes(sweep, points, open_reader(shards)))
    atomic_write_bytes(out / "sweep.md", (table + "\n").encode(), out)  # renamed into place: never through a symlink
    atomic_write_bytes(out / "sweep.csv", csv_text(sweep, metrics, rows).encode(), out)
    plotted = plot_sweep(sweep, metrics, rows, out / "sweep.png")
    echo(f"wrote {out / 'sweep.md'}, {out / 'sweep.csv'}" + (f", {out / 'sweep.png'} ({plotted})" if plotted else ""))
    if failed:
        raise SweepError(f"{len(failed)} of {total} runs failed ({'; '.join(failed)}); the table holds the others; "
                         "rerun the same command to retry them (finished runs are kept)")
    return table
