"""`kebr-data status` and the end-of-run summary: what the markers of an output folder say."""

from __future__ import annotations

from rich.console import Group
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from .pipeline.summaries import StageSummary
from .storage.store import Store


def summary_view(summaries: list[StageSummary], title: str, with_run: bool = False) -> Group:
    """The title line (wrapped at the console's width, not the table's: it names a folder), the summary
    table, then one line of stage-specific stats per stage that has them."""
    lines = [Text(f"{s.stage}: {s.stats_line()}") for s in summaries if s.stats_line()]
    return Group(Text(title), summary_table(summaries, with_run), *lines)


def limit_hint(store: Store, summaries: list[StageSummary]) -> str | None:
    """Where the results are when OUT has no committed stage shard but an `extract --limit N` smoke test
    wrote OUT/_limit/ (else None): an empty table alone reads as "nothing ran"."""
    limit = store.out.limit_dir
    if any(s.shards_done for s in summaries) or not limit.is_dir():
        return None
    return (f"no stage has a committed shard in {store.root}; the `extract --limit` smoke-test results are in "
            f"{limit}/: see them with `kebr-data status --out {limit}`")


def summary_table(summaries: list[StageSummary], with_run: bool = False) -> Table:
    """A rich table, one row per stage."""
    t = Table()
    for col in ("stage", "shards", "clips", "ok", "failed", "skipped", "top reasons"):
        t.add_column(col, justify="left" if col in ("stage", "top reasons") else "right")
    if with_run:
        t.add_column("this run", justify="right")
    for s in summaries:
        cells = [s.stage, f"{s.shards_done}/{s.shards_total}", str(s.rows), str(s.ok), str(s.failed),
                 str(s.skipped), escape(s.top_reasons())]
        if with_run:
            rate = s.clips_run / s.elapsed_s if s.elapsed_s > 0 and s.clips_run else 0.0
            cells.append(f"{s.shards_run} shards, {rate:.1f} clips/s" if s.shards_run else "up to date")
        t.add_row(*cells)
    return t


def label_quality_table(store: Store) -> Table | None:
    """Label quality per shard and in total (see kebr_data.label_quality); None before asr or mask ran."""
    from .label_quality import HEADERS, quality_rows

    rows = quality_rows(store)
    if not rows:
        return None
    t = Table(title="label quality", title_justify="left")
    for col in HEADERS:
        t.add_column(col, justify="left" if col == "shard" else "right")
    for row in rows:
        t.add_row(*row.cells(), style="bold" if row.shard == "total" else None)
    return t
