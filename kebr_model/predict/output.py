"""What `predict` leaves: OUT/predictions.parquet and OUT/predictions.csv (one row per clip, renamed into
place), a summary table on the terminal (user text escaped) or, with `--json`, one JSON object."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import pyarrow as pa
from rich.markup import escape
from rich.table import Table

from kebr_data.display import one_line, printable
from kebr_data.storage.atomic import atomic_write

PARQUET = "predictions.parquet"
CSV = "predictions.csv"
#: rows shown in the terminal table (the files hold them all)
SHOWN = 20
_STRINGS = ("clip_id", "source_path", "status", "reason", "transcript", "run", "checkpoint", "checkpoint_sha256")


def _type(column: str) -> pa.DataType:
    if column in _STRINGS:
        return pa.string()
    return pa.int8() if column.startswith("class_") else pa.float32()


def table(rows: list[dict[str, Any]]) -> pa.Table:
    """The rows as an Arrow table: text columns, float32 predictions and cosines, int8 classes (null where a
    clip was not scored)."""
    columns = list(dict.fromkeys(k for row in rows for k in row)) or list(_STRINGS)
    schema = pa.schema([(c, _type(c)) for c in columns])
    return pa.Table.from_pylist([{c: row.get(c) for c in columns} for row in rows], schema=schema)


def write(out: Path, rows: list[dict[str, Any]]) -> dict[str, Path]:
    """OUT/predictions.parquet and .csv, each written to a temp file and renamed into place."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    data = table(rows)
    atomic_write(out / PARQUET, lambda fh: pq.write_table(data, fh), out)
    atomic_write(out / CSV, lambda fh: pacsv.write_csv(data, fh), out)
    return {"parquet": out / PARQUET, "csv": out / CSV}


def counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    """Clips per status."""
    return dict(collections.Counter(r["status"] for r in rows))


def _short(reason: str) -> str:
    """A reason without its stage's message (the files hold it): `audio: decode_error`."""
    head, _, rest = reason.partition(" (")
    return head + ("; scored without it" if rest.endswith("; scored without it") else "")


def summary(rows: list[dict[str, Any]], files: dict[str, Path]) -> Table:
    """The terminal table: the first SHOWN clips (id, status, prediction, its finest class, reason), escaped
    and on one line each; its title counts the statuses, its caption names the files (which hold it all)."""
    class_columns = [c for c in dict.fromkeys(k for r in rows for k in r) if c.startswith("class_")][-1:]  # finest
    counted = ", ".join(f"{n} {s}" for s, n in sorted(counts(rows).items()))
    more = f"; {len(rows) - SHOWN} more" if len(rows) > SHOWN else ""
    view = Table(title=f"{len(rows)} clip(s): {counted}{more}", caption=escape(f"{files['parquet']}, {files['csv']}"))
    view.add_column("clip", overflow="ellipsis")
    view.add_column("status", no_wrap=True, min_width=7)
    for name in ("prediction", *class_columns):
        view.add_column(name, justify="right", no_wrap=True, min_width=len(name))
    view.add_column("reason", overflow="ellipsis")
    for row in rows[:SHOWN]:
        prediction = "" if row.get("prediction") is None else f"{row['prediction']:.3f}"
        view.add_row(escape(one_line(printable(str(row["clip_id"])), 40)), row["status"], prediction,
                     *("" if row.get(c) is None else str(row[c]) for c in class_columns),
                     escape(one_line(_short(row.get("reason") or ""), 80)))
    return view


def as_json(rows: list[dict[str, Any]], files: dict[str, Path]) -> dict[str, Any]:
    """The machine-readable result: the files, the status counts and every row."""
    return {"files": {k: str(v) for k, v in files.items()}, "counts": counts(rows), "rows": rows}
