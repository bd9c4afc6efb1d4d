"""The pipeline engine: decide which (stage, shard) units to run, run them on an executor, and
report. Idempotent: rerunning the same command resumes where a crash stopped it.

All decisions are taken from one `Store` snapshot of the output folder, so each marker is read
once per run for them.
"""

from __future__ import annotations

import collections
import contextlib
import difflib
import os
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from ..config import Config
from ..display import command_console, one_line, printable
from ..errors import PlanError, PrerequisiteError, RunAborted, StaleOutputError, redact
from ..executors import Executor, TaskFailed, executor_class, make_executor
from ..progress import StageBar, make_progress
from ..stages import conflicts as stage_conflicts, make_stage, stage_class
from ..stages.base import Stage
from ..storage.atomic import real_dir
from ..storage.layout import OutputDir
from ..storage.lock import OutputLock
from ..storage.markers import Marker, PlanMarker
from ..storage.store import PLAN, Store, no_plan_error
from . import pins, plan, run_record
from .overlap import Overlapped
from .shard_task import ShardTask, run_shard_task
from .summaries import StageSummary, summarise


@dataclass
class RunOptions:
    """One invocation of the engine."""

    out: Path
    stages: list[str]
    config: Config
    src: Path | None = None
    force: bool = False
    replan: bool = False
    #: recompute shards made with other options instead of refusing (the cheap `mask` stage)
    replace_on_change: bool = False
    #: stages whose failed rows are redone in done shards (`kebr-data retry-failed`) before the others run
    retry_stages: tuple[str, ...] = ()
    command: str = ""
    #: `section.key`s this command changed relative to the folder's saved configuration
    changed: tuple[str, ...] = ()
    #: what run.json saves as the folder's configuration (default: `config`); values resolved for this
    #: run only, such as mask.text_source = auto, are saved unresolved
    saved_config: Config | None = None
    #: run the stages on the plan's first `limit` clips only, in OUT/_limit/ (a smoke test; OUT is not changed)
    limit: int | None = None


@dataclass
class RunReport:
    plan: PlanMarker
    stages: list[StageSummary]
    #: the folder the stages ran in (OUT, or OUT/_limit for --limit)
    root: Path | None = None


def check_prerequisites(stages: list[str], cfg: Config) -> None:
    """Stop before any work with one message listing every missing prerequisite."""
    problems = [f"plugins: {c}" for c in stage_conflicts]
    problems += [f"executor: {p}" for p in executor_class(cfg["run"]["executor"]).check()]
    for name in stages:
        if name != "index":
            problems += [f"{name}: {p}" for p in make_stage(name, cfg).check()]
    if problems:
        raise PrerequisiteError("cannot start, prerequisites are missing:\n  - " + "\n  - ".join(problems))


def missing_source(src: Path) -> str:
    """The message for a --src path that does not exist, with the nearest sibling name when one is close."""
    parent = src.parent if src.parent.is_dir() else None
    near = difflib.get_close_matches(src.name, [p.name for p in parent.iterdir()], n=1) if parent else []
    return f"source {src} does not exist" + (f" (did you mean {parent / near[0]}?)" if near else "")


def _first_missing(path: Path) -> Path | None:
    """The topmost folder of `path` that mkdir(parents=True) would create, or None if it exists."""
    missing_top = None
    for p in (path, *path.parents):
        if p.exists():
            break
        missing_top = p
    return missing_top


class Engine:
    """Runs the selected stages over the frozen plan of one output folder."""

    def __init__(self, opts: RunOptions, console: Console | None = None) -> None:
        self.opts = opts
        self.cfg = opts.config
        self.out = OutputDir(opts.out)
        self.store = Store(opts.out)
        self.console = console or command_console()

    def run(self) -> RunReport:
        self._check_source()
        check_prerequisites(self.opts.stages, self.cfg)
        created = _first_missing(self.out.root)
        was_empty = created is None and self.out.root.is_dir() and not any(self.out.root.iterdir())
        self.out.root.mkdir(parents=True, exist_ok=True)
        with OutputLock(self.out.lock_file, self.opts.command):
            try:
                self.out.check_folders([s for s in self.opts.stages if s != "index"])
                self.out.migrate_legacy()
                swept = self.out.sweep()
                if swept:
                    self.console.print(f"swept {len(swept)} leftover temp file(s) of an interrupted run")
                marker = self._plan()
            except BaseException:
                if created or was_empty:
                    self._undo_start(created)
                raise
            work = [s for s in self.opts.stages if s != "index"]
            if self.opts.limit is not None:
                run_record.record(self.out, self.opts.saved_config or self.cfg, self.opts.command, self.opts.stages,
                                  self.opts.src, self.opts.changed)
                return self._run_limited(marker)
            self._refuse_stale(work, marker.num_shards)
            tools = pins.check_tools(self.out, [make_stage(name, self.cfg) for name in work], self.opts.force)
            run_record.record(self.out, self.opts.saved_config or self.cfg, self.opts.command, self.opts.stages, self.opts.src,
                              self.opts.changed, tools)
            with make_progress(self.console) as progress:
                if self._overlapped():
                    overlapped = Overlapped(self, work, marker, progress)
                    summaries = overlapped.run()
                    if overlapped.broken or overlapped.died:
                        raise aborted(self.out, overlapped.broken, overlapped.died)
                else:
                    summaries = [self._run_stage(name, marker, progress) for name in work]
            return RunReport(marker, summaries, self.out.root)

    def _overlapped(self) -> bool:
        """Whether this run overlaps its stages: run.overlap, when the executor takes a growing TaskFeed (one
        that does not runs stage by stage, and says so)."""
        name = self.cfg["run"]["executor"]
        if self.cfg["run"]["overlap"] and not executor_class(name).takes_feed:
            self.console.print(f"run.overlap: the {escape(name)} executor runs stage by stage", highlight=False)
            return False
        return bool(self.cfg["run"]["overlap"])

    def _run_limited(self, marker: PlanMarker) -> RunReport:
        """`--limit N`: the selected stages on the plan's first N clips, in OUT/_limit/, an output folder of
        its own (rebuilt from the plan each time; its shards are reused while the clips stay the same)."""
        sub = OutputDir(real_dir(self.out.root, self.out.limit_dir))
        tables, rows = [], 0
        for shard in range(marker.num_shards):
            if rows >= self.opts.limit:
                break
            tables.append(self.store.read(PLAN, shard))
            rows += tables[-1].num_rows
        subplan = plan.build_subplan(sub, marker, tables, self.opts.limit)
        self.console.print(f"--limit {self.opts.limit}: the first {subplan.clips} of {marker.clips} clips, in "
                           f"{escape(str(sub.root))}/ (the plan and stage tables of {escape(str(self.out.root))} "
                           "are not changed)", highlight=False)
        opts = replace(self.opts, out=sub.root, src=None, replan=False, limit=None, replace_on_change=True)
        return Engine(opts, self.console).run()

    def _check_source(self) -> None:
        """Before anything is written or checked: a plan exists, or can be made from an existing --src."""
        if self.out.root.exists() and not self.out.root.is_dir():
            raise PlanError(f"--out {self.out.root} is a file, not a folder")
        marker = self.store.plan_or_none()
        self.store.forget_plan()  # the run reads its snapshot under the lock
        if marker is not None and not self.opts.replan:
            plan.check_plan(marker, self.opts.src, self.cfg["index"])
            return
        src = self.opts.src or (Path(marker.src) if marker else None)
        if src is None:
            raise no_plan_error(self.out.root)
        if marker is None and "index" not in self.opts.stages:
            raise PlanError(f"{self.out.root} has no plan yet: include the index stage (--stages index,...)")
        if not src.exists():
            raise PlanError(missing_source(src))

    def _undo_start(self, created: Path | None) -> None:
        """A start that failed before the plan was committed leaves nothing in a folder it created
        (or found empty): not its lock file, nor partial plan shards."""
        self.store.forget_plan()
        if self.store.plan_or_none() is not None:
            return
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
            return
        for p in list(self.out.root.iterdir()):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)

    def _plan(self) -> PlanMarker:
        marker = self.store.plan_or_none()
        if marker is None or self.opts.replan:
            src = self.opts.src or (Path(marker.src) if marker else None)
            if src is None:
                raise PlanError(f"{self.out.root} has no plan yet: give --src to index a dataset")
            if "index" not in self.opts.stages and marker is None:
                raise PlanError(f"{self.out.root} has no plan yet: include the index stage (--stages index,...)")
            with self.console.status(f"indexing {escape(str(src))} ..."):
                marker = plan.build_plan(self.out, src, self.cfg["index"])
            self.store.forget_plan()
            self.console.print(f"plan: {marker.clips} clips in {marker.num_shards} shard(s) of up to "
                               f"{marker.shard_size} ({marker.layout} layout, {marker.rejected} rejected)")
            for ex in marker.rejected_examples[:5]:
                self.console.print(f"  rejected {printable(ex['entry'])}: {printable(ex['reason'])}", markup=False,
                                   highlight=False)
        else:
            plan.check_plan(marker, self.opts.src, self.cfg["index"])
        return marker

    def _refuse_stale(self, stages: list[str], num_shards: int) -> None:
        """Before any work: refuse outputs made with another config unless --force (or replaceable)."""
        lines = []
        for name in stages:
            current = make_stage(name, self.cfg).config_hash()
            stale = [shard for shard in range(num_shards)
                     if (m := self.store.marker(name, shard)) is not None and m.config_hash != current]
            if stale and not (self.opts.force or self.opts.replace_on_change):
                lines.append(f"{name}: {len(stale)} shard(s) were made with another {name} config "
                             f"(e.g. shard {stale[0]:05d})")
            elif stale:
                self.console.print(f"{name}: options changed, replacing {len(stale)} shard(s) of {name}/")
        if lines:
            fix = ("Rerun with --force to recompute them, or write to a new --out folder." if not self.opts.retry_stages
                   else "retry-failed redoes failed rows with the options the shards were made with: give the same "
                        f"--config/--set as then (see {self.out.run_json}), or recompute them with `kebr-data extract "
                        f"--out {self.out.root} --stages {','.join(stages)} --force`.")
            raise StaleOutputError(
                f"{self.out.root} holds outputs made with other settings:\n  " + "\n  ".join(lines) + "\n" + fix)

    def _upstream_hashes(self, stage: Stage, shard: int, only: list[str] | None = None) -> dict[str, str]:
        """The committed hashes of the stage's upstream tables for `shard` (`only` these when given); a missing
        one is refused with the fix."""
        hashes = {}
        for up in stage.upstream if only is None else only:
            current = self.store.committed_hash(up, shard)
            if current is None:
                raise PlanError(f"{stage.name} needs {up} for shard {shard:05d}, which is not done: "
                                f"include {up} in --stages")
            hashes[up] = current
        return hashes

    def _needs_run(self, stage: str, shard: int, config_hash: str, upstream: dict[str, str],
                   tools: dict[str, str] | None = None) -> str | None:
        """Why (stage, shard) must be computed, or None when its committed output is current. `tools` are the
        pinned tools' hashes: a shard made with another build (a --force run interrupted) is recomputed."""
        m: Marker | None = self.store.marker(stage, shard)
        if m is None:
            corrupt = self.store.corrupt(stage, shard)
            return f"corrupt marker ({corrupt})" if corrupt else "not done"
        if self.opts.force:
            return "--force"
        if m.config_hash != config_hash:
            return "options changed"
        changed = [k for k, v in (tools or {}).items() if m.versions.get(k, v) != v]
        if changed:
            return f"made with another build ({', '.join(changed)})"
        if m.upstream != upstream:
            return "upstream changed"
        return self.store.problem(stage, shard)

    def decide(self, stage: Stage, shard: int, marker: PlanMarker) -> tuple[ShardTask, int] | None:
        """The task (stage, shard) needs and the clips it computes (the shard's, or its failed rows only for
        retry-failed), or None when its committed output is current. Decided from the store's markers, so the
        upstream stages of this shard must be committed first."""
        cls = stage_class(stage.name)
        upstream = self._upstream_hashes(stage, shard)
        if self._needs_run(stage.name, shard, stage.config_hash(), upstream, stage.tool_hashes()) is not None:
            return ShardTask(str(self.out.root), cls, shard, self.cfg[stage.name], upstream), marker.shard_rows(shard)
        if stage.name in self.opts.retry_stages:
            m = self.store.marker(stage.name, shard)
            if m is not None and m.failed:
                return ShardTask(str(self.out.root), cls, shard, self.cfg[stage.name], upstream, retry_failed=True), m.failed
        return None

    def executor(self) -> Executor:
        """The run's executor, as run.executor and its options say."""
        workers = self.cfg["run"]["workers"] or _cpu_count()
        return make_executor(self.cfg["run"]["executor"], workers, self.cfg.get(self.cfg["run"]["executor"]))

    def _run_stage(self, name: str, marker: PlanMarker, progress: object) -> StageSummary:
        stage = make_stage(name, self.cfg)
        tasks: list[ShardTask] = []
        #: clips each task computes: the shard's, or its failed rows only (retry-failed)
        todo: dict[int, int] = {}
        for shard in range(marker.num_shards):
            unit = self.decide(stage, shard, marker)
            if unit is not None:
                tasks.append(unit[0])
                todo[shard] = unit[1]
        clips = sum(todo.values())
        if tasks:
            stage.warm_up(lambda line: progress.console.print(f"{name}: {line}", highlight=False))
        bar = StageBar(progress, name, clips, len(tasks))
        seen: collections.Counter = collections.Counter()
        broken, died = [], []
        t0 = time.monotonic()

        def on_progress(task: ShardTask, n: int) -> None:
            seen[task.shard] += n
            bar.clips(n)

        # closed at once if this loop raises (Ctrl-C): the executor then stops its workers at a clip boundary
        with contextlib.closing(self.executor().run(run_shard_task, tasks, on_progress, stage.resources.cpus,
                                                    stage.resources.gpus)) as outcomes:
            for task, result in outcomes:
                self.store.forget(name, task.shard)
                if isinstance(result, TaskFailed):
                    (died if result.worker_died else broken).append((task, result.error))
                    continue
                bar.shard_done(todo[task.shard], seen[task.shard])
        summary = summarise(self.store, name)
        summary.shards_run = len(tasks) - len(broken) - len(died)
        summary.clips_run = clips
        summary.elapsed_s = time.monotonic() - t0
        if broken or died:
            raise aborted(self.out, broken, died)
        return summary


def aborted(out: OutputDir, broken: list[tuple[ShardTask, BaseException]],
            died: list[tuple[ShardTask, BaseException]]) -> RunAborted:
    """The run's end when shards did not finish: one line per failed shard (and its log), and the shards whose
    worker died (stage by stage and overlapped alike: neither starts new work after a failure)."""
    lines = [failure_line(t.stage, t.shard, e, out.log(t.stage, t.shard)) for t, e in broken]
    for stage in dict.fromkeys(t.stage for t, _ in died):
        lines.append(f"{stage} shard(s) {', '.join(f'{t.shard:05d}' for t, _ in died if t.stage == stage)}: a worker "
                     "process died (killed, or out of memory)")
    return RunAborted(f"{len(broken) + len(died)} shard(s) did not finish; committed shards are kept, rerun the "
                      "same command to resume:\n  " + "\n  ".join(lines))


def failure_line(stage: str, shard: int, exc: BaseException, log: Path) -> str:
    """One line for a shard that raised: its exception's first line, escaped and cut short (a copy that
    failed file by file once made it 20 KB), and the log that holds the rest."""
    return redact(f"{stage} shard {shard:05d}: {type(exc).__name__}: {one_line(str(exc))} (log: {log})")


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


__all__ = ["Engine", "aborted", "RunOptions", "RunReport", "check_prerequisites", "PLAN"]
