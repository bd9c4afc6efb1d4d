"""What a worker does for one (stage, shard): read inputs, run the stage, commit table then marker.

The commit order (table renamed into place, then the marker) is what makes a crash at any
moment safe: without its marker a shard is simply recomputed.
"""

from __future__ import annotations

import collections
import logging
import os
import shutil
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from . import __version__
from .errors import environment_problem, redact
from .plan import PLAN_STAGE
from .stages import make_stage
from .stages.base import ShardContext, TableSource
from .storage.atomic import open_new_text
from .storage.layout import OutputDir
from .storage.markers import Marker
from .storage.parquet import read_table, write_table


@dataclass(frozen=True)
class ShardTask:
    """A picklable description of one unit of work."""

    out_root: str
    stage: str
    shard: int
    config: dict[str, dict[str, Any]]
    upstream_hashes: dict[str, str]
    #: redo only the rows whose status is `failed` in the committed table, keep the others
    retry_failed: bool = False


@dataclass(frozen=True)
class ShardOutcome:
    """What a finished task reports back (the same numbers are in its marker)."""

    stage: str
    shard: int
    rows: int
    ok: int
    failed: int
    skipped: int
    wall_s: float


class _RedactingFormatter(logging.Formatter):
    """Log lines (tracebacks included) without the Google credentials' path."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class _NoFollowFileHandler(logging.FileHandler):
    """A log file opened from scratch without following a symlink planted at its path."""

    def _open(self):  # noqa: ANN202 (logging's signature)
        return open_new_text(Path(self.baseFilename))


def _shard_logger(path: Path, name: str) -> tuple[logging.Logger, logging.Handler]:
    path.parent.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger(f"kebr_data.shard.{name}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    handler = _NoFollowFileHandler(path, mode="w", encoding="utf-8")
    handler.setFormatter(_RedactingFormatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    return logger, handler


def histogram(table: pa.Table) -> dict[str, int]:
    """`status/error` -> count over the rows that are not ok."""
    counts = collections.Counter(
        f"{s}/{e}" for s, e in zip(table.column("status").to_pylist(), table.column("error").to_pylist(), strict=True)
        if s != "ok")
    return dict(sorted(counts.items()))


def _retry_failed(stage: Any, out: OutputDir, task: ShardTask, inputs: dict[str, TableSource], tmp_dir: Path,
                  log: logging.Logger, progress: Callable[[int], None]) -> pa.Table:
    """The committed table with its failed rows recomputed (the others are kept as they are)."""
    old = read_table(out.table(task.stage, task.shard))
    failed = [i for i, s in enumerate(old.column("status").to_pylist()) if s == "failed"]
    log.info("retrying %d failed row(s)", len(failed))
    subset = {name: TableSource(src.read().take(failed)) for name, src in inputs.items()}
    redone = stage.run_shard(ShardContext(task.shard, subset, tmp_dir, log, progress))
    position = {row: len(old) + k for k, row in enumerate(failed)}
    # the stage's own schema, not the one read back (Parquet names list children `element`, Arrow
    # `item`): the merged table must be written byte for byte as a clean run writes it
    merged = pa.concat_tables([old.cast(redone.schema), redone])
    return merged.take([position.get(i, i) for i in range(len(old))])


def run_shard_task(task: ShardTask, progress: Callable[[int], None] = lambda n: None) -> ShardOutcome:
    """Run and commit one (stage, shard). Bad clips become rows; a toolkit bug raises."""
    out = OutputDir(Path(task.out_root))
    stage = make_stage(task.stage, task.config)
    log, handler = _shard_logger(out.log(task.stage, task.shard), f"{task.stage}.{task.shard}")
    tmp_dir = out.tmp_dir(task.stage, task.shard)
    t0 = time.monotonic()
    try:
        log.info("start %s shard %05d on %s pid %d (config %s)", task.stage, task.shard, socket.gethostname(),
                 os.getpid(), stage.config_hash())
        columns = stage.input_columns()
        inputs = {up: TableSource(path=out.table(up, task.shard), columns=columns.get(up))
                  for up in (PLAN_STAGE, *stage.upstream)}
        if task.retry_failed:
            table = _retry_failed(stage, out, task, inputs, tmp_dir, log, progress)
        else:
            table = stage.run_shard(ShardContext(task.shard, inputs, tmp_dir, log, progress))
        plan_ids = read_table(out.table(PLAN_STAGE, task.shard), columns=["clip_id"]).column("clip_id").to_pylist()
        if table.column("clip_id").to_pylist() != plan_ids:
            raise RuntimeError(f"stage {task.stage} returned rows that do not match plan shard {task.shard}")
        size, digest = write_table(out.table(task.stage, task.shard), table)
        statuses = collections.Counter(table.column("status").to_pylist())
        wall = time.monotonic() - t0
        Marker(stage=task.stage, shard=task.shard, rows=table.num_rows, ok=statuses["ok"],
               failed=statuses["failed"], skipped=statuses["skipped"], errors=histogram(table),
               wall_s=round(wall, 3), config_hash=stage.config_hash(), stage_version=stage.version,
               versions={"kebr-toolkit": __version__, "python": sys.version.split()[0], "pyarrow": pa.__version__,
                         **stage.versions()},
               upstream=task.upstream_hashes, output_bytes=size, output_sha256=digest,
               finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"), host=socket.gethostname(),
               pid=os.getpid(), stats=stage.shard_stats(table)).write(out.marker(task.stage, task.shard))
        log.info("done: %d rows (%d ok, %d failed, %d skipped) in %.2f s", table.num_rows, statuses["ok"],
                 statuses["failed"], statuses["skipped"], wall)
        return ShardOutcome(task.stage, task.shard, table.num_rows, statuses["ok"], statuses["failed"],
                            statuses["skipped"], wall)
    except KeyboardInterrupt:
        log.warning("shard interrupted (Ctrl-C); nothing committed, a rerun redoes it")
        raise
    except BaseException as exc:
        if environment_problem(exc) is not None or isinstance(exc, OSError):
            log.error("shard stopped by the machine, not by a clip (%s: %s); nothing committed: fix it and rerun "
                      "the same command to resume", type(exc).__name__, exc)
        else:
            log.exception("shard aborted by an error in the toolkit (not a bad clip); please report it")
        raise
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        log.removeHandler(handler)
        handler.close()
