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
    paths = []
    fig, ax = plt.subplots(figsize=(7, 4))
    for key in ("loss", "l1", "mcc"):
        ax.plot(steps, [r[key] for r in train], label=f"train {key}")
    if valid:
        ax.plot([r["step"] for r in valid], [r["loss"] for r in valid], "o-", label="valid loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    ax.set_title("loss terms")
    fig.tight_layout()
    paths.append(out_dir / "losses.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, [r["c_a"] for r in train], label="c_a (text, audio)")
    ax.plot(steps, [r["c_v"] for r in train], label="c_v (text, visual)")
    ax.set_xlabel("step")
    ax.set_ylabel("cosine")
    ax.legend()
    ax.set_title("MCC cosines")
    fig.tight_layout()
    paths.append(out_dir / "cosines.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    return paths
