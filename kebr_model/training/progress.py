"""The training progress bar (stderr): step / expected steps, loss, steps per second and ETA."""

from __future__ import annotations

import time
from types import TracebackType

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from kebr_data.display import command_console


class StepProgress:
    """A rich bar over optimiser steps; a no-op when disabled (tests, DDP ranks other than 0)."""

    def __init__(self, total: int | None, start: int = 0, enabled: bool = True) -> None:
        self.enabled, self.start, self.t0 = enabled, start, time.monotonic()
        self._progress: Progress | None = None
        if enabled:
            self._progress = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[rate]} steps/s"),
                                      TextColumn("ETA"), TimeRemainingColumn(),
                                      console=command_console(), transient=False)
            self._task = self._progress.add_task("train", total=total, completed=start, loss="-", rate="-")

    def __enter__(self) -> "StepProgress":
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(self, step: int, loss: float) -> None:
        """Show step `step` done with training loss `loss`."""
        if self._progress is None:
            return
        elapsed = time.monotonic() - self.t0
        rate = (step - self.start) / elapsed if elapsed > 0 else 0.0
        total = self._progress.tasks[0].total
        if total is not None and step > total:  # the estimate was short: grow it rather than overflow
            self._progress.update(self._task, total=step)
        self._progress.update(self._task, completed=step, loss=f"{loss:.4f}", rate=f"{rate:.2f}")
