"""`kebr-data status` and the end-of-run summary: what the markers of an output folder say."""

from __future__ import annotations

from pathlib import Path

from rich.console import Group
from rich.table import Table
from rich.text import Text

from .engine import StageSummary, require_plan, summarise
from .stages import PIPELINE_ORDER, STAGES
from .storage.layout import OutputDir


def folder_summaries(root: Path) -> tuple[dict, list[StageSummary]]:
    """The plan marker and a summary of every stage that has outputs in `root`."""
    out = OutputDir(root)
    marker = require_plan(root)
    present = [s for s in PIPELINE_ORDER if s in STAGES and (root / s).is_dir()]
    return marker, [summarise(out, s, marker["num_shards"]) for s in present]


def plan_line(root: Path, marker: dict) -> str:
    """One line describing an output folder's plan (status and report titles)."""
    return (f"{root}: {marker['clips']} clips in {marker['num_shards']} shard(s) from {marker['src']} "
            f"({marker['layout']}; {marker['rejected']} rejected at indexing)")


def top_reasons(s: StageSummary, n: int = 3) -> str:
    """The stage's commonest failure and skip reasons, e.g. `failed/decode_error 1, skipped/no_audio_track 1`."""
    return ", ".join(f"{k} {v}" for k, v in s.errors.most_common(n)) or "-"


def stats_lines(summaries: list[StageSummary]) -> list[str]:
    """One line of stage-specific stats per stage that has them (e.g. the mask stage's sentiment-word share)."""
    lines = []
    for s in summaries:
        text = STAGES[s.stage].format_stats(s.stats) if s.stage in STAGES and s.stats else ""
        if text:
            lines.append(f"{s.stage}: {text}")
    return lines


def summary_view(summaries: list[StageSummary], title: str, with_run: bool = False) -> Group:
    """The summary table followed by one line of stage-specific stats per stage that has them."""
    return Group(summary_table(summaries, title, with_run), *(Text(line) for line in stats_lines(summaries)))


def summary_table(summaries: list[StageSummary], title: str, with_run: bool = False) -> Table:
    """A rich table, one row per stage."""
    t = Table(title=title, title_justify="left")
    for col in ("stage", "shards", "clips", "ok", "failed", "skipped", "top reasons"):
        t.add_column(col, justify="left" if col in ("stage", "top reasons") else "right")
    if with_run:
        t.add_column("this run", justify="right")
    for s in summaries:
        cells = [s.stage, f"{s.shards_done}/{s.shards_total}", str(s.rows), str(s.ok), str(s.failed),
                 str(s.skipped), top_reasons(s)]
        if with_run:
            rate = s.clips_run / s.elapsed_s if s.elapsed_s > 0 and s.clips_run else 0.0
            cells.append(f"{s.shards_run} shards, {rate:.1f} clips/s" if s.shards_run else "up to date")
        t.add_row(*cells)
    return t
