"""sweep.png: one metric against the swept option."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kebr_data.storage.atomic import atomic_write

from .grid import CONFIG, Sweep, _stems, _text


def plot_sweep(sweep: Sweep, metrics: list[str], rows: list[dict[str, Any]], path: Path) -> str | None:
    """sweep.png: the plot metric (mean, std as error bars) against the plot key, one line per
    combination of the other grid keys. Returns the metric plotted, None when there is nothing to plot."""
    metric = sweep.plot_metric or ("Corr" if "Corr" in metrics else (metrics[0] if metrics else None))
    if metric is None or not sweep.grid:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x_key = sweep.plot_x or next(iter(sweep.grid))
    xs = sweep.grid[x_key]
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in xs)
    position = {json.dumps(v): (v if numeric else i) for i, v in enumerate(xs)}
    lines: dict[str, list[tuple[float, float, float]]] = {}
    for row in rows:
        values = row["point"].values
        mean, std, _ = row["stats"].get(metric, (None, None, 0))
        if mean is None:
            continue
        label = ",".join(f"{k}={_text(_stems(v) if k == CONFIG else v)}" for k, v in values.items()
                         if k != x_key) or metric
        lines.setdefault(label, []).append((position[json.dumps(values[x_key])], mean, std or 0.0))
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, pts in lines.items():
        pts.sort()
        ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], marker="o", capsize=3,
                    label=label)
    if not numeric:
        ax.set_xticks(range(len(xs)), [_text(_stems(v) if x_key == CONFIG else v) for v in xs])
    ax.set(xlabel=x_key, ylabel=f"{metric} (mean ± std over seeds)", title=f"{metric} vs {x_key}")
    if len(lines) > 1:
        ax.legend(fontsize="small")
    fig.tight_layout()
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=100))
    plt.close(fig)
    return metric
