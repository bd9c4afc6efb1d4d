"""What the markers of an output folder add up to, per stage: for `status`, `report` and the end
of a run."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any

from ..stages import registry
from ..storage.markers import PlanMarker
from ..storage.store import Store


@dataclass
class StageSummary:
    """Totals of one stage over all its committed shards, plus what this run did."""

    stage: str
    shards_total: int
    shards_done: int = 0
    rows: int = 0
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    errors: collections.Counter = field(default_factory=collections.Counter)
    stats: dict[str, Any] = field(default_factory=dict)
    #: worker seconds spent on the committed shards (their markers' wall times)
    wall_s: float = 0.0
    shards_run: int = 0
    clips_run: int = 0
    elapsed_s: float = 0.0

    @property
    def failed_fraction(self) -> float:
        return self.failed / self.rows if self.rows else 0.0

    def top_reasons(self, n: int = 3) -> str:
        return ", ".join(f"{k} {v}" for k, v in self.errors.most_common(n)) or "-"

    def stats_line(self) -> str:
        """The stage's own one-line description of its summed stats ('' when it has none)."""
        cls = registry().get(self.stage)
        return cls.format_stats(self.stats) if cls is not None and self.stats else ""


def add_stats(total: dict[str, Any], part: dict[str, Any]) -> None:
    """Add a shard's stats into `total` (numbers add up; nested dicts are added key by key)."""
    for key, value in part.items():
        if isinstance(value, dict):
            add_stats(total.setdefault(key, {}), value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            total[key] = total.get(key, 0) + value


def summarise(store: Store, stage: str) -> StageSummary:
    """Aggregate the committed markers of `stage`."""
    s = StageSummary(stage, store.plan.num_shards)
    for shard in range(store.plan.num_shards):
        m = store.marker(stage, shard)
        if m is None:
            continue
        s.shards_done += 1
        s.rows += m.rows
        s.ok += m.ok
        s.failed += m.failed
        s.skipped += m.skipped
        s.errors.update(m.errors)
        s.wall_s += m.wall_s
        add_stats(s.stats, m.stats)
    return s


def folder_summaries(store: Store) -> list[StageSummary]:
    """A summary of every registered stage that has outputs in the folder, in pipeline order."""
    present = set(store.stages())
    return [summarise(store, name) for name in registry() if name in present]


def plan_line(store: Store, marker: PlanMarker | None = None) -> str:
    """One line describing an output folder's plan (status and report titles)."""
    marker = marker or store.plan
    return (f"{store.root}: {marker.clips} clips in {marker.num_shards} shard(s) from {marker.src} "
            f"({marker.layout}; {marker.rejected} rejected at indexing)")
