"""PNG plots of a run's metrics.jsonl: the loss terms, and c_a and c_v over steps (supplement Fig. 5)."""

from __future__ import annotations

import json
from pathlib import Path


def plot_run(run_dir: Path) -> list[Path]:
    """Write run_dir/plots/{losses,cosines}.png; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    train = [r for r in rows if r.get("split") == "train"]
    valid = [r for r in rows if r.get("split") == "valid" and "loss" in r]
    out_dir = run_dir / "plots"
    out_dir.mkdir(parents=True, exist_ok=True)
    steps = [r["step"] for r in train]
    losses = [(f"train {k}", steps, [r[k] for r in train], "-") for k in ("loss", "l1", "mcc")]
    if valid:
        losses.append(("valid loss", [r["step"] for r in valid], [r["loss"] for r in valid], "o-"))
    cosines = [("c_a (text, audio)", steps, [r["c_a"] for r in train], "-"),
               ("c_v (text, visual)", steps, [r["c_v"] for r in train], "-")]
    paths = []
    for name, title, ylabel, series in (("losses", "loss terms", "loss", losses),
                                        ("cosines", "MCC cosines", "cosine", cosines)):
        fig, ax = plt.subplots(figsize=(7, 4))
        for label, x, y, style in series:
            ax.plot(x, y, style, label=label)
        ax.set(xlabel="step", ylabel=ylabel, title=title)
        ax.legend()
        fig.tight_layout()
        paths.append(out_dir / f"{name}.png")
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    return paths
