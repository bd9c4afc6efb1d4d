"""PNG plots of a run's metrics.jsonl: the loss terms, and c_a and c_v over steps (supplement Fig. 5)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from kebr_data.storage.atomic import atomic_write, read_owned_text, real_dir

MARKERS_UP_TO = 50  # points per series drawn with markers
COSINES = (("audio", "c_a", "c_a (text, audio)"), ("visual", "c_v", "c_v (text, visual)"))


def series_figure(plt, series: list[tuple[str, list, list]], title: str, ylabel: str):
    """One line per (label, steps, values); points get markers while they are few, since a run of one
    step is otherwise an invisible zero-length line."""
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7, 4))
    for label, x, y in series:
        ax.plot(x, y, "-", marker="o" if len(x) <= MARKERS_UP_TO else None, markersize=4, label=label)
    ax.set(xlabel="step", ylabel=ylabel, title=title)
    steps = [x for _, xs, _ in series for x in xs]
    if steps and max(steps) - min(steps) < 2:  # too narrow for whole-step ticks
        ax.set_xlim(min(steps) - 1, max(steps) + 1)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend()
    fig.tight_layout()
    return fig


def plot_run(run_dir: Path, modalities: Iterable[str] = ("audio", "visual")) -> list[Path]:
    """Write run_dir/plots/losses.png and cosines.png (c_a, c_v of the `modalities` the run had: the
    cosine with an absent modality is a constant of no meaning), renamed into place (a symlink planted
    there is replaced); return their paths (none when metrics.jsonl is not a regular file)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    text = read_owned_text(run_dir / "metrics.jsonl")
    if text is None:
        return []
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    train = [r for r in rows if r.get("split") == "train"]
    valid = [r for r in rows if r.get("split") == "valid" and "loss" in r]
    out_dir = real_dir(run_dir, run_dir / "plots")
    steps = [r["step"] for r in train]
    losses = [(f"train {k}", steps, [r[k] for r in train]) for k in ("loss", "l1", "mcc")]
    if valid:
        losses.append(("valid loss", [r["step"] for r in valid], [r["loss"] for r in valid]))
    wanted = set(modalities)
    cosines = [(label, steps, [r[key] for r in train]) for modality, key, label in COSINES if modality in wanted]
    paths = []
    for name, title, ylabel, series in (("losses", "loss terms", "loss", losses),
                                        ("cosines", "MCC cosines", "cosine", cosines)):
        if series:
            fig = series_figure(plt, series, title, ylabel)
            paths.append(out_dir / f"{name}.png")
            atomic_write(paths[-1], lambda fh: fig.savefig(fh, format="png", dpi=100), run_dir)
            plt.close(fig)
    return paths
