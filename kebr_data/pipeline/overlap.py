"""Overlapped stages (`run.overlap = true`): every (stage, shard) of a run in one executor feed, a shard's next
stage released as soon as its upstream shards of this run are committed, so a GPU stage works beside the CPU
stages instead of after them (the node's wall tends to max(CPU work, GPU work) rather than their sum).

Each unit is decided exactly as the stage-by-stage run decides it (`Engine.decide`: the same markers, the same
stale and upstream-hash rules), only later: once its shard's upstream units have committed. Each task asks for
its own stage's cpus/gpus (Ray schedules them; the local pool gives every task one worker), and later stages
go first, so shards flow through the pipeline and an interrupted run leaves whole shards done. Once a shard
fails, nothing more is released (tasks already released still run), as stage by stage starts no later stage
after a failed one: a failure of the machine (disk full) is not met by more work.
"""

from __future__ import annotations

import collections
import contextlib
import time
from typing import TYPE_CHECKING, Any

from ..executors import TaskFailed, TaskFeed
from ..progress import StageBar
from ..stages import make_stage
from ..storage.markers import PlanMarker
from .shard_task import ShardTask, run_shard_task
from .summaries import StageSummary, summarise

if TYPE_CHECKING:
    from .engine import Engine


class Overlapped:
    """One overlapped run of `stages` (in pipeline order) over the plan `marker`; `run` returns their summaries,
    and leaves the shards that did not finish in `broken` and `died`."""

    def __init__(self, engine: Engine, stages: list[str], marker: PlanMarker, progress: Any) -> None:
        self.engine, self.marker, self.progress = engine, marker, progress
        self.stages = {name: make_stage(name, engine.cfg) for name in stages}
        self.rank = {name: i for i, name in enumerate(stages)}
        #: the upstream stages of each stage that run in this run too (their shards are waited for)
        self.deps = {name: [u for u in st.upstream if u in self.rank] for name, st in self.stages.items()}
        self.feed = TaskFeed(planned=len(stages) * marker.num_shards)
        self.settled: set[tuple[str, int]] = set()
        self.bars = {name: StageBar(progress, name, 0, 0) for name in stages}
        self.todo: dict[tuple[str, int], int] = {}
        self.seen: collections.Counter = collections.Counter()
        self.started: dict[str, float] = {}
        self.ended: dict[str, float] = {}
        self.warm: set[str] = set()
        self.broken: list[tuple[ShardTask, BaseException]] = []
        self.died: list[tuple[ShardTask, BaseException]] = []

    def run(self) -> list[StageSummary]:
        """Decide every unit whose upstream is not in this run, release the rest as their shards commit."""
        for name, st in self.stages.items():  # a missing upstream outside this run is refused before any work
            for shard in range(self.marker.num_shards):
                self.engine._upstream_hashes(st, shard, only=[u for u in st.upstream if u not in self.rank])
        for name in self.stages:
            if not self.deps[name]:
                for shard in range(self.marker.num_shards):
                    self._decide(name, shard)
        for name in self.stages:  # downstream of work: warmed up now, not while workers wait for its first task
            if any(d in self.warm for d in self.deps[name]):
                self._warm(name)
        # closed at once if this loop raises (Ctrl-C): the executor then stops its workers at a clip boundary
        with contextlib.closing(self.engine.executor().run(run_shard_task, self.feed, self._on_progress)) as outcomes:
            for task, result in outcomes:
                self.engine.store.forget(task.stage, task.shard)
                self.ended[task.stage] = time.monotonic()
                if isinstance(result, TaskFailed):
                    (self.died if result.worker_died else self.broken).append((task, result.error))
                    continue
                key = (task.stage, task.shard)
                self.bars[task.stage].shard_done(self.todo[key], self.seen[key])
                self._settle(task.stage, task.shard)
        return [self._summary(name) for name in self.stages]

    def _on_progress(self, task: ShardTask, n: int) -> None:
        self.seen[(task.stage, task.shard)] += n
        self.bars[task.stage].clips(n)

    def _decide(self, name: str, shard: int) -> None:
        """Release (name, shard) to the executor if its output is not current, else settle it at once; once a
        shard has failed, release nothing more."""
        if self.broken or self.died:
            return
        st = self.stages[name]
        unit = self.engine.decide(st, shard, self.marker)
        if unit is None:
            self._settle(name, shard)
            return
        task, clips = unit
        self._warm(name)
        self.todo[(name, shard)] = clips
        self.bars[name].extend(clips, 1)
        self.started.setdefault(name, time.monotonic())
        self.feed.add(task, st.resources.cpus, st.resources.gpus, priority=-self.rank[name])

    def _warm(self, name: str) -> None:
        """The stage's one-time set-up (Stage.warm_up), once per run."""
        if name not in self.warm:
            self.warm.add(name)
            self.stages[name].warm_up(lambda line: self.progress.console.print(f"{name}: {line}", highlight=False))

    def _settle(self, name: str, shard: int) -> None:
        """(name, shard) is committed and current: decide the units of this shard that waited only for it."""
        self.settled.add((name, shard))
        for down, ups in self.deps.items():
            if name in ups and all((u, shard) in self.settled for u in ups):
                self._decide(down, shard)

    def _summary(self, name: str) -> StageSummary:
        summary = summarise(self.engine.store, name)
        run = [k for k in self.todo if k[0] == name]
        failed = {(t.stage, t.shard) for t, _ in (*self.broken, *self.died)}
        summary.shards_run = len([k for k in run if k not in failed])
        summary.clips_run = sum(self.todo[k] for k in run)
        summary.elapsed_s = self.ended.get(name, 0.0) - self.started.get(name, 0.0) if name in self.started else 0.0
        return summary
