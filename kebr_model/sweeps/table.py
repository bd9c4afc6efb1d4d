"""A sweep's table: mean ± std over seeds of each point's metrics, with its costs, as Markdown and CSV."""

from __future__ import annotations

import csv
import io
import json
import statistics
from typing import Any

from ..data import ShardReader
from ..evaluation.analyse import mcc_blocked
from .grid import CONFIG, Point, Sweep, _stems, _text

# reported first, in this order (MMSA's), then any other metric alphabetically
ORDER = ("Has0_acc_2", "Has0_F1_score", "Non0_acc_2", "Non0_F1_score", "Mult_acc_7", "Mult_acc_5", "MAE", "Corr",
         "loss", "l1", "mcc")


def metrics_of(result: dict) -> dict[str, float]:
    """The numeric test metrics of a run result (clip counts left out), plus the last epoch's mean
    training loss and best_valid (the selected validation loss)."""
    out = {k: float(v) for k, v in (result.get("test") or {}).items()
           if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "samples"}
    for key in ("train_loss", "best_valid"):
        if isinstance(result.get(key), (int, float)) and not isinstance(result.get(key), bool):
            out[key] = float(result[key])
    return out


def aggregate(results: list[dict]) -> dict[str, tuple[float, float | None, int]]:
    """metric -> (mean, sample standard deviation (n - 1; None for one seed), number of seeds)."""
    values: dict[str, list[float]] = {}
    for result in results:
        for key, value in metrics_of(result).items():
            values.setdefault(key, []).append(value)
    return {k: (statistics.mean(v), statistics.stdev(v) if len(v) > 1 else None, len(v)) for k, v in values.items()}


def metric_order(keys: set[str]) -> list[str]:
    last = [k for k in ("train_loss", "best_valid") if k in keys]
    return [k for k in ORDER if k in keys] + sorted(keys - set(ORDER) - set(last)) + last


def _human(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n:.0f}"


def table_rows(sweep: Sweep, points: list[Point], results: dict[str, list[dict]],
               costs: dict[str, dict]) -> tuple[list[str], list[dict[str, Any]]]:
    """(metric columns, one row per point: name, grid values, seeds, costs, metric -> (mean, std, n))."""
    stats = {p.name: aggregate(results.get(p.name, [])) for p in points}
    metrics = metric_order({k for s in stats.values() for k in s})
    rows = [{"point": p, "seeds": len(results.get(p.name, [])), "cost": costs.get(p.name, {}),
             "stats": stats[p.name]} for p in points]
    return metrics, rows


def markdown(sweep: Sweep, metrics: list[str], rows: list[dict[str, Any]], notes: list[str] | tuple[str, ...] = ()) -> str:
    """The table of `table_rows`, then the `notes` (footnotes such as `mcc_notes`), one per line."""
    keys = list(sweep.grid)
    head = ["point", *keys, "seeds", "params", "trainable", "FLOPs/clip", *metrics]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---|" * len(keys) + "---:|" * (len(head) - 1 - len(keys))]
    for row in rows:
        cost = row["cost"]
        shown = {k: _stems(v) if k == CONFIG else v for k, v in row["point"].values.items()}
        cells = [row["point"].name, *(_text(shown[k]) for k in keys),
                 f"{row['seeds']}/{len(sweep.seeds)}",
                 *(_human(cost[c]) if c in cost else "-" for c in ("params", "trainable_params", "flops_per_clip"))]
        for m in metrics:
            mean, std, _ = row["stats"].get(m, (None, None, 0))
            cells.append("-" if mean is None else f"{mean:.4f}" + (f" ± {std:.4f}" if std is not None else ""))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join([*lines, *([""] if notes else []), *notes])


def mcc_notes(sweep: Sweep, points: list[Point], reader: ShardReader) -> list[str]:
    """A footnote per reason MCC cannot act in some points (`mcc_blocked`): their rows would differ in the
    mcc_* settings only in name, which the table must not leave unexplained."""
    blocked: dict[str, list[str]] = {}
    for point in points:
        cfg = sweep.config(point)
        if why := mcc_blocked(cfg, reader.frame_modalities(cfg.used), reader.root):
            blocked.setdefault(why, []).append(point.name)
    return [f"note: {why} (point(s): {', '.join(names)})" for why, names in blocked.items()]


def csv_text(sweep: Sweep, metrics: list[str], rows: list[dict[str, Any]]) -> str:
    keys = list(sweep.grid)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["point", *keys, "seeds", "params", "trainable_params", "flops_per_clip",
                     *(f"{m}_{s}" for m in metrics for s in ("mean", "std"))])
    for row in rows:
        cost = row["cost"]
        cells = [row["point"].name, *(json.dumps(row["point"].values[k]) if isinstance(row["point"].values[k], list)
                                      else row["point"].values[k] for k in keys), row["seeds"],
                 *(cost.get(c, "") for c in ("params", "trainable_params", "flops_per_clip"))]
        for m in metrics:
            mean, std, _ = row["stats"].get(m, (None, None, 0))
            cells += ["" if mean is None else repr(mean), "" if std is None else repr(std)]
        writer.writerow(cells)
    return buf.getvalue()
