"""`kebr-data report`: an HTML page with PNG plots describing an output folder.

Plots: the dataset's labels (the plan's `label`, and CH-SIMS' per-modality T/A/V labels beside it),
mask label histogram, clip durations, words per transcript, OpenFace face ratio, ASR confidence,
failure reasons per stage, and throughput per stage (clips per second of worker time, on a log axis:
mask's 40 clips/s and visual's 0.3 share it); a label-quality table per shard and in total, with
masked-word and language probability histograms. Each plot appears only when its stage has outputs
(the labels when the plan has any). The summary table and the stage-specific lines
above the plots are `kebr-data status`'s.
"""

from __future__ import annotations

import html
import io
import math
from pathlib import Path

from .pipeline.summaries import StageSummary, folder_summaries, plan_line
from .stages import registry
from .storage.atomic import atomic_write_bytes, real_dir
from .storage.store import PLAN, Store


def _column(store: Store, stage: str, column: str) -> list:
    """The values of `column` over the ok rows of the committed shards of `stage` (tables without a
    marker are never read)."""
    values = []
    for shard in store.committed_shards(stage):
        t = store.read(stage, shard, ["status", column])
        values += [v for s, v in zip(t.column("status").to_pylist(), t.column(column).to_pylist(), strict=True)
                   if v is not None and s == "ok"]
    return values


def integer_bins(values: list[int], max_bins: int = 40) -> list[float]:
    """Bin edges for counts (words per transcript): each bin holds whole numbers only, centred on them when
    one number wide, and at most `max_bins` bins (then `width` numbers each)."""
    lo, hi = min(values), max(values)
    width = max(1, math.ceil((hi - lo + 1) / max_bins))
    return [lo - 0.5 + width * i for i in range(math.ceil((hi - lo + 1) / width) + 1)]


def _save(plt, fig, path: Path) -> Path:  # noqa: ANN001 (pyplot and a matplotlib Figure)
    """Write a PNG under a temp name and rename it (a symlink planted at `path` is replaced, not
    followed), then close the figure."""
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def hist_figure(plt, values: list, title: str, xlabel: str, bins: int | list = 30, integer_x: bool = False):
    """A histogram of clips; its y axis counts clips, so its ticks are whole numbers."""
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.hist(values, bins=bins, color="#4c72b0")
    ax.set(title=title, xlabel=xlabel, ylabel="clips")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    if integer_x:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig


def bars_figure(plt, labels: list[str], values: list[float], title: str, xlabel: str, counts: bool = False):
    """Horizontal bars; with `counts` (clips) the value axis has whole-number ticks."""
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6, 0.4 * max(3, len(labels)) + 1))
    ax.barh(labels, values, color="#dd8452")
    ax.set(title=title, xlabel=xlabel)
    if counts:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig


#: the plan's label columns and their panel titles (per-modality labels: CH-SIMS, CH-SIMS v2)
LABEL_COLUMNS = {"label": "multimodal (M)", "label_t": "text (T)", "label_a": "audio (A)", "label_v": "visual (V)"}


def plan_labels(store: Store) -> dict[str, list[float]]:
    """The plan's labelled values per label column (`LABEL_COLUMNS`), columns with no value left out."""
    values: dict[str, list[float]] = {c: [] for c in LABEL_COLUMNS}
    for shard in range(store.plan.num_shards):
        t = store.read(PLAN, shard, list(LABEL_COLUMNS))
        for column in LABEL_COLUMNS:
            values[column] += [v for v in t.column(column).to_pylist() if v is not None]
    return {c: v for c, v in values.items() if v}


def labels_figure(plt, labels: dict[str, list[float]]):  # noqa: ANN001 (pyplot)
    """Histograms of the dataset's labels, one panel per label column on shared bins (SIMS: M, T, A, V)."""
    import numpy as np
    from matplotlib.ticker import MaxNLocator

    edges = np.histogram_bin_edges(np.concatenate([np.asarray(v, dtype=float) for v in labels.values()]), bins=30)
    fig, axes = plt.subplots(len(labels), 1, figsize=(6, 1.2 + 1.9 * len(labels)), sharex=True, squeeze=False)
    for ax, (column, values) in zip(axes[:, 0], labels.items(), strict=True):
        ax.hist(values, bins=edges, color="#8172b3")
        ax.set(ylabel="clips", title=f"{LABEL_COLUMNS[column]}: {len(values)} clips" if len(labels) > 1 else None)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes[-1, 0].set_xlabel("label")
    fig.suptitle("Dataset labels")
    return fig


def throughput_figure(plt, summaries: list[StageSummary]):  # noqa: ANN001 (pyplot)
    """Clips per second of worker time per stage, on a log axis (stages differ by 100× and more); None when
    no stage has a time."""
    speed = [(s.stage, s.rows / s.wall_s) for s in summaries if s.wall_s > 0 and s.rows > 0]
    if not speed:
        return None
    fig = bars_figure(plt, [k for k, _ in speed], [v for _, v in speed], "Throughput per stage",
                      "clips per second of worker time (log scale)")
    fig.axes[0].set_xscale("log")
    return fig


def build_report(root: Path) -> Path:
    """Write ROOT/report/index.html and its PNGs; return the page's path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    store = Store(root)
    marker, summaries = store.plan, folder_summaries(store)
    dest = real_dir(root, root / "report")
    figures: list[tuple[str, Path]] = []
    present = set(store.stages())
    labels = plan_labels(store)
    if labels:
        figures.append(("Dataset labels", _save(plt, labels_figure(plt, labels), dest / "labels.png")))
    plots = [(name, *plot) for name, cls in registry().items() if name in present for plot in cls.report_plots]
    for stage, column, title, xlabel, bins in plots:
        values = _column(store, stage, column)
        if values:
            fig = hist_figure(plt, values, title, xlabel, bins)
            figures.append((title, _save(plt, fig, dest / f"{stage}_{column}.png")))
    words = (_column(store, "mask", "words") if "mask" in present else []) or \
        ([t.split() for t in _column(store, "asr", "text")] if "asr" in present else [])
    if words:
        counts = [len(w) for w in words]
        fig = hist_figure(plt, counts, "Words per transcript", "words", integer_bins(counts), integer_x=True)
        figures.append(("Words per transcript", _save(plt, fig, dest / "words.png")))
    reasons = [(f"{s.stage}: {k}", v) for s in summaries for k, v in s.errors.most_common(8)]
    if reasons:
        fig = bars_figure(plt, [r for r, _ in reasons], [v for _, v in reasons], "Failure and skip reasons", "clips",
                          counts=True)
        figures.append(("Failure and skip reasons", _save(plt, fig, dest / "reasons.png")))
    fig = throughput_figure(plt, summaries)
    if fig is not None:
        figures.append(("Throughput per stage", _save(plt, fig, dest / "throughput.png")))
    quality_table, quality_figures = label_quality_section(plt, store, dest)
    figures += quality_figures
    rows = "".join(
        f"<tr><td>{html.escape(s.stage)}</td><td>{s.shards_done}/{s.shards_total}</td><td>{s.rows}</td>"
        f"<td>{s.ok}</td><td>{s.failed}</td><td>{s.skipped}</td><td class=l>{html.escape(s.top_reasons())}</td></tr>"
        for s in summaries)
    stats = "".join(f"<p>{html.escape(f'{s.stage}: {s.stats_line()}')}</p>" for s in summaries if s.stats_line())
    # each PNG carries its title; the alt text repeats it for screen readers, no caption repeats it on screen
    images = "".join(f"<figure><img src='{p.name}' alt='{html.escape(t)}'></figure>" for t, p in figures)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>kebr-data report: {html.escape(str(root))}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 10px;text-align:right}}td.l{{text-align:left}}
figure{{display:inline-block;margin:8px}}</style>
</head><body><h1>kebr-data report</h1>
<p>{html.escape(plan_line(store, marker))}</p>
<table><tr><th>stage</th><th>shards</th><th>clips</th><th>ok</th><th>failed</th><th>skipped</th><th>top reasons</th>
</tr>{rows}</table>
{stats}
{quality_table}{images}</body></html>"""
    atomic_write_bytes(dest / "index.html", page.encode("utf-8"))
    return dest / "index.html"


def label_quality_section(plt, store: Store, dest: Path) -> tuple[str, list[tuple[str, Path]]]:
    """The label-quality table (per shard and total) as HTML, and bar plots of its two probability histograms."""
    from .label_quality import HEADERS, PROB_BINS, quality_rows

    rows = quality_rows(store)
    if not rows:
        return "", []
    head = "".join(f"<th>{html.escape(h)}</th>" for h in HEADERS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row.cells()) + "</tr>" for row in rows)
    figures = []
    total = rows[-1]
    for name, hist, title in (("word_prob", total.word_prob_hist, "ASR probability of the masked sentiment word"),
                              ("language_prob", total.language_prob_hist, "Language-identification probability")):
        if any(hist.values()):
            fig, ax = plt.subplots(figsize=(6, 3.4))
            ax.bar([float(k) + 0.05 for k in PROB_BINS], [hist[k] for k in PROB_BINS], width=0.09, color="#55a868")
            ax.set(title=title, xlabel="probability", ylabel="clips", xlim=(0, 1))
            figures.append((title, _save(plt, fig, dest / f"{name}.png")))
    return f"<h2>Label quality</h2><table><tr>{head}</tr>{body}</table>", figures
