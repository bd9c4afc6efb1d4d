"""Progress bars: one per stage, over clips, with the shard count beside it."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class StageBar:
    """The bar of one stage: advanced per clip, and per shard as shards commit."""

    def __init__(self, progress: Progress, name: str, clips: int, shards: int) -> None:
        self._progress = progress
        self._shards_total = shards
        self._shards_done = 0
        self._clips_total = clips
        self._task = progress.add_task(name, total=clips, shards=self._shard_text())

    def _shard_text(self) -> str:
        return f"shards {self._shards_done}/{self._shards_total}"

    def extend(self, clips: int, shards: int) -> None:
        """More work for this bar: an overlapped run learns a stage's shards as their inputs commit."""
        self._shards_total += shards
        self._clips_total += clips
        self._progress.update(self._task, total=self._clips_total, shards=self._shard_text())

    def clips(self, n: int) -> None:
        self._progress.advance(self._task, n)

    def shard_done(self, clips: int, clips_seen: int) -> None:
        """Mark a shard committed that computed `clips` clips (a retry: its failed rows only); tops up the
        clip count if progress messages were lost."""
        self._shards_done += 1
        if clips > clips_seen:
            self._progress.advance(self._task, clips - clips_seen)
        self._progress.update(self._task, shards=self._shard_text())


def make_progress(console: Console) -> Progress:
    """The run's progress display (plain lines when not on a terminal)."""
    return Progress(TextColumn("[bold]{task.description:<9}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("clips · {task.fields[shards]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=console, transient=False)
