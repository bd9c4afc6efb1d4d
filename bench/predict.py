"""`kebr-train predict --src` against what it replaces: `kebr-data extract` of the same stages plus a
`kebr-train eval` pass over the same clips.

A fine-tuned run is made once (demo/mmsa extracted with pipelines/demo_mmsa.toml, one fine-tuning step
with pipelines/train_demo.toml: the bundled MiniLM, frozen, one TCMF layer, text + acoustic). The clips
are the 8 demo/mmsa videos repeated to `--clips` rows of a manifest (their label.csv text, label, split
test), so both arms run index, audio and acoustic on the same videos and score every clip. Each arm runs
in fresh subprocesses into a fresh folder; the arms alternate, `--repeats` times. Wall time and CPU time
(user + system of the processes and their workers) per arm.

    python bench/predict.py [--clips 100] [--repeats 3] [--workers 2]

Rewrites the `predict` section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MMSA = ROOT / "demo" / "mmsa"


def run(*args: str) -> tuple[float, float]:
    """Run `python -m ARGS`; return (wall seconds, CPU seconds of it and its children)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200"})
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def manifest(path: Path, clips: int) -> Path:
    """`clips` rows cycling over the demo/mmsa videos, with their text and label, all in split test."""
    with open(MMSA / "label.csv", newline="") as fh:
        labelled = list(csv.DictReader(fh))
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["clip_id", "video_path", "given_text", "label", "split"])
        for i in range(clips):
            row = labelled[i % len(labelled)]
            video = MMSA / "Raw" / row["video_id"] / f"{row['clip_id']}.mp4"
            writer.writerow([f"clip{i:04d}", str(video), row["text"], row["label"], "test"])
    return path


def fine_tuned_run(base: Path, workers: int) -> Path:
    features, out = base / "train-features", base / "run"
    run("kebr_data", "extract", "--src", str(MMSA), "--out", str(features), "--config",
        str(ROOT / "pipelines" / "demo_mmsa.toml"), "--workers", str(workers))
    run("kebr_model.cli", "finetune", "--shards", str(features), "--config",
        str(ROOT / "pipelines" / "train_demo.toml"), "--out", str(out), "--set", "max_steps=1")
    return out


def extract_and_eval(src: Path, out: Path, model: Path, workers: int) -> tuple[float, float]:
    wall1, cpu1 = run("kebr_data", "extract", "--src", str(src), "--out", str(out), "--stages", "index,audio,acoustic",
                      "--workers", str(workers), "--set", "index.shard_size=1000")
    wall2, cpu2 = run("kebr_model.cli", "eval", "--shards", str(out), "--run", str(model), "--split", "test",
                      "--predictions", str(out.parent / f"{out.name}-eval.parquet"))
    return wall1 + wall2, cpu1 + cpu2


def predict(src: Path, out: Path, model: Path, workers: int) -> tuple[float, float]:
    return run("kebr_model.cli", "predict", "--run", str(model), "--src", str(src), "--out", str(out),
               "--set", f"run.workers={workers}", "--set", "index.shard_size=1000")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="bench-predict-") as tmp:
        base = Path(tmp)
        model = fine_tuned_run(base, args.workers)
        src = manifest(base / "clips.csv", args.clips)
        arms = {"extract + eval": extract_and_eval, "predict": predict}
        results: dict[str, list[tuple[float, float]]] = {k: [] for k in arms}
        for r in range(args.repeats):
            for name, arm in arms.items():
                results[name].append(arm(src, base / f"{name.split()[0]}-{r}", model, args.workers))
                print(f"repeat {r + 1}, {name}: wall {results[name][-1][0]:.1f} s, CPU {results[name][-1][1]:.1f} s",
                      file=sys.stderr)
    load.append(os.getloadavg()[0])
    lines = ["| arm | wall s (median) | wall s (runs) | CPU s (median) | CPU s (runs) |", "|---|---:|---|---:|---|"]
    for name, runs in results.items():
        walls, cpus = [w for w, _ in runs], [c for _, c in runs]
        lines.append(f"| {name} | {statistics.median(walls):.1f} | {', '.join(f'{w:.1f}' for w in walls)} | "
                     f"{statistics.median(cpus):.1f} | {', '.join(f'{c:.1f}' for c in cpus)} |")
    cpu = {name: statistics.median(c for _, c in runs) for name, runs in results.items()}
    ratio = cpu["predict"] / cpu["extract + eval"]
    body = (f"{args.clips} clips (the 8 demo/mmsa videos repeated, text given), stages index, audio, acoustic, "
            f"{args.workers} workers; a run fine-tuned with pipelines/train_demo.toml (bundled MiniLM, frozen). "
            f"Arms alternate, {args.repeats} repeats, each in fresh processes and folders; CPU = user + system "
            f"of the processes and their workers. Load average {load[0]:.1f} at the start, {load[1]:.1f} at the end, "
            f"on {os.cpu_count()} cores (wall times stretch with it; CPU times do not).\n\n" + "\n".join(lines) +
            f"\n\npredict / (extract + eval), CPU: {ratio:.2f}. predict loads the model once and batches the "
            "clips as eval does; it saves eval's second process start and its re-reading of the tables.")
    write_section("predict", "predict vs extract + eval", body)


if __name__ == "__main__":
    main()
