"""What a worker does for one (stage, shard): check and read its inputs, run the stage, commit.

The inputs are checked against the hashes the engine decided on (the sha256 of the bytes
actually read, not only their size), so a table changed after its commit is never consumed.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from ..errors import StaleOutputError, environment_problem, redact
from ..stages.base import ShardContext, Stage
from ..storage.atomic import NotRegularFile, file_digest, open_new_text
from ..storage.commit import commit_table
from ..storage.markers import Marker
from ..storage.store import PLAN, Store, TableSource, force_command


@dataclass(frozen=True)
class ShardTask:
    """A picklable description of one unit of work (the stage class travels by reference, so stages
    registered at run time work in spawned workers too). The stage's settings travel as its resolved
    `[section]` values, plain JSON-like data (a section composed from registered engines has no class a
    worker could import), and are typed again by the stage in the worker."""

    out_root: str
    stage_cls: type[Stage]
    shard: int
    settings: dict[str, Any]
    upstream_hashes: dict[str, str]
    #: redo only the rows whose status is `failed` in the committed table, keep the others
    retry_failed: bool = False

    @property
    def stage(self) -> str:
        return self.stage_cls.name


class _RedactingFormatter(logging.Formatter):
    """Log lines (tracebacks included) without the Google credentials' path."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class _NoFollowFileHandler(logging.FileHandler):
    """A log file opened from scratch without following a symlink planted at its path or at one of its
    folders inside the output folder `within`."""

    def __init__(self, path: Path, within: Path) -> None:
        self.within = within
        super().__init__(path, mode="w", encoding="utf-8")

    def _open(self):  # noqa: ANN202 (logging's signature)
        return open_new_text(Path(self.baseFilename), self.within)


def _shard_logger(path: Path, name: str, within: Path) -> tuple[logging.Logger, logging.Handler]:
    logger = logging.getLogger(f"kebr_data.shard.{name}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    handler = _NoFollowFileHandler(path, within)
    handler.setFormatter(_RedactingFormatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    return logger, handler


def _check_inputs(store: Store, task: ShardTask) -> None:
    """Refuse inputs whose bytes are not the ones their markers (and the engine's decision) describe."""
    for up, want in task.upstream_hashes.items():
        path = store.out.table(up, task.shard)
        try:
            _, digest = file_digest(path)
        except FileNotFoundError:
            digest = "missing"
        except NotRegularFile:
            digest = "not-a-file"
        if digest != want:
            raise StaleOutputError(
                f"{up} shard {task.shard:05d} changed after it was committed (sha256 {digest[:12]} instead of "
                f"{want[:12]}); {task.stage} will not read it. Recompute it: {force_command(store.root, up)}")


def _retry_failed(stage: Stage, store: Store, task: ShardTask, inputs: dict[str, TableSource], tmp_dir: Path,
                  log: logging.Logger, progress: Callable[[int], None]) -> pa.Table:
    """The committed table with its failed rows recomputed (the others are kept as they are)."""
    old = store.read(task.stage, task.shard)
    failed = [i for i, s in enumerate(old.column("status").to_pylist()) if s == "failed"]
    log.info("retrying %d failed row(s)", len(failed))
    subset = {name: TableSource(src.read().take(failed)) for name, src in inputs.items()}
    redone = stage.run_shard(ShardContext(task.shard, subset, tmp_dir, log, progress))
    position = {row: len(old) + k for k, row in enumerate(failed)}
    # the stage's own schema, not the one read back (Parquet names list children `element`, Arrow
    # `item`): the merged table must be written byte for byte as a clean run writes it
    merged = pa.concat_tables([old.cast(redone.schema), redone])
    return merged.take([position.get(i, i) for i in range(len(old))])


def run_shard_task(task: ShardTask, progress: Callable[[int], None] = lambda n: None) -> Marker:
    """Run and commit one (stage, shard); return its marker. Bad clips become rows; a toolkit bug raises."""
    store = Store(task.out_root)
    stage = task.stage_cls(task.settings)
    log, handler = _shard_logger(store.out.log(task.stage, task.shard), f"{task.stage}.{task.shard}",
                                 store.out.root)
    tmp_dir = store.out.tmp_dir(task.stage, task.shard)
    t0 = time.monotonic()
    try:
        log.info("start %s shard %05d on %s pid %d (config %s)", task.stage, task.shard, socket.gethostname(),
                 os.getpid(), stage.config_hash())
        _check_inputs(store, task)
        columns = stage.input_columns()
        inputs = {up: store.source(up, task.shard, columns.get(up)) for up in (PLAN, *stage.upstream) if up != PLAN}
        inputs[PLAN] = store.source(PLAN, task.shard)
        if task.retry_failed:
            table = _retry_failed(stage, store, task, inputs, tmp_dir, log, progress)
        else:
            table = stage.run_shard(ShardContext(task.shard, inputs, tmp_dir, log, progress))
        if table.column("clip_id").to_pylist() != store.plan_ids(task.shard):
            raise RuntimeError(f"stage {task.stage} returned rows that do not match plan shard {task.shard}")
        progress(0)  # the last stop point: a run interrupted after the shard's last clip commits nothing of it
        marker = commit_table(store.out, task.stage, task.shard, table, config_hash=stage.config_hash(),
                              stage_version=stage.version, versions={**stage.versions(), **stage.tool_hashes()},
                              upstream=task.upstream_hashes, wall_s=time.monotonic() - t0,
                              stats=stage.shard_stats(table))
        log.info("done: %d rows (%d ok, %d failed, %d skipped) in %.2f s", marker.rows, marker.ok, marker.failed,
                 marker.skipped, marker.wall_s)
        return marker
    except StaleOutputError as exc:
        log.error("shard not run: %s", exc)
        raise
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
