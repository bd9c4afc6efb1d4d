"""Fault injection: SIGKILL a real run at random moments (the whole run or one worker, in any stage),
or take its ffmpeg away mid-run (an environment failure: the shard must stop uncommitted, never
become failed rows), rerun, and check the outputs are byte-identical to an uninterrupted run with no
clip lost or duplicated.

    python bench/faults.py [--trials 20] [--seed 0]

Corpus: the demo's clips copied 8 times (64 clips, 8 shards) in a manifest that carries their sentences, so
the mask stage runs on given transcripts; stages index, audio, acoustic, then mask. Rewrites the `faults`
section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SENTENCES = {r["clip_id"]: r["sentence"] for r in csv.DictReader(open(ROOT / "demo/sentences.tsv"), delimiter="\t")}


def make_corpus(dest: Path) -> Path:
    rows = []
    for k in range(8):
        for p in sorted((ROOT / "demo/voxceleb/mp4").rglob("*.mp4")):
            rel = p.relative_to(ROOT / "demo/voxceleb/mp4").with_suffix("").as_posix()
            target = dest / "media" / f"copy{k}" / p.name.replace(".mp4", f"-{rel.replace('/', '_')}.mp4")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(p, target)
            rows.append({"clip_id": f"copy{k}/{rel}", "video_path": str(target),
                         "text": SENTENCES.get(rel, "")})
    manifest = dest / "manifest.csv"
    with open(manifest, "w", newline="") as fh:
        w = csv.DictWriter(fh, ["clip_id", "video_path", "text"])
        w.writeheader()
        w.writerows(rows)
    return manifest


def commands(src: Path, out: Path, ffmpeg: Path | None = None) -> list[list[str]]:
    base = [sys.executable, "-m", "kebr_data"]
    binary = ["--set", f"audio.ffmpeg='{ffmpeg}'"] if ffmpeg else []
    return [[*base, "extract", "--src", str(src), "--out", str(out), "--stages", "index,audio,acoustic",
             "--set", "index.shard_size=8", "--max-failed", "1", "--workers", "2", *binary],
            [*base, "mask", "--out", str(out), "--max-failed", "1", "--workers", "2"]]


def run_all(src: Path, out: Path) -> float:
    t0 = time.perf_counter()
    for cmd in commands(src, out):
        subprocess.run(cmd, capture_output=True, check=True)
    return time.perf_counter() - t0


def tables(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("shard-*.parquet"))}


def vanishing_ffmpeg(folder: Path) -> Path:
    """A wrapper around the real ffmpeg that the benchmark deletes mid-run (a binary gone)."""
    from kebr_data.media.ffmpeg import find_ffmpeg

    wrapper = folder / "ffmpeg"
    wrapper.write_text(f'#!/bin/sh\nexec "{find_ffmpeg()}" "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


def interrupted_run(src: Path, out: Path, delay: float, target: str, rng: random.Random) -> str:
    """Run the pipeline, SIGKILL (or delete its ffmpeg) at `delay` s; return which stage was running then."""
    t0 = time.perf_counter()
    ffmpeg = vanishing_ffmpeg(out.parent) if target == "ffmpeg" else None
    for cmd in commands(src, out, ffmpeg):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while proc.poll() is None:
            if time.perf_counter() - t0 >= delay and ffmpeg is not None:
                ffmpeg.unlink()
                proc.wait()
                if proc.returncode not in (0, 3):
                    return f"exit {proc.returncode}"
                return "mask" if "mask" == cmd[3] else _stage_running(out)
            if time.perf_counter() - t0 >= delay:
                victims = [proc.pid]
                if target == "worker":
                    kids = [c.pid for c in psutil.Process(proc.pid).children() if "ffmpeg" not in c.name()]
                    victims = [rng.choice(kids)] if kids else victims
                for pid in victims:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                proc.wait()
                stage = "mask" if "mask" == cmd[3] else _stage_running(out)
                return stage
            time.sleep(0.005)
    return "none (finished first)"


def _stage_running(out: Path) -> str:
    for stage in ("acoustic", "audio"):
        if (out / stage / "_logs").exists():
            return stage
    return "index"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = make_corpus(tmp)
        full = run_all(src, tmp / "reference")
        reference = tables(tmp / "reference")
        plan_ids = pq.read_table(tmp / "reference/plan").column("clip_id").to_pylist()
        results = []
        for trial in range(args.trials):
            out = tmp / f"trial{trial}"
            delay, target = rng.uniform(0.3, full), rng.choice(["run", "worker", "ffmpeg"])
            stage = interrupted_run(src, out, delay, target, rng)
            t0 = time.perf_counter()
            for cmd in commands(src, out):
                subprocess.run(cmd, capture_output=True)
            recovery = time.perf_counter() - t0
            got = tables(out)
            ids = {s: pq.read_table(out / s).column("clip_id").to_pylist() for s in ("audio", "acoustic", "mask")}
            intact = all(v == plan_ids for v in ids.values())
            results.append((trial, f"{delay:.2f}", target, stage, got == reference, intact, recovery))
            shutil.rmtree(out)
    ok = sum(r[4] and r[5] for r in results)
    lines = [f"{args.trials} trials on {len(plan_ids)} clips ({-(-len(plan_ids) // 8)} shards, 2 workers; "
             "stages index, "
             "audio, acoustic, then mask); "
             f"an uninterrupted run takes {full:.1f} s. Each trial SIGKILLs the whole run or one worker, or deletes "
             "the run's ffmpeg (an environment failure: the audio shard must stop uncommitted, not commit "
             "failed rows), at a random moment, reruns the same commands, and compares every table with the "
             "uninterrupted run's.", "",
             f"**{ok}/{len(results)} trials byte-identical, with every clip present exactly once in plan order.**", "",
             "| trial | kill at s | target | stage running | identical | no clip lost/duplicated | rerun s |",
             "|---:|---:|---|---|---|---|---:|"]
    lines += [f"| {t} | {d} | {tg} | {st} | {'yes' if same else 'NO'} | {'yes' if intact else 'NO'} | {rec:.1f} |"
              for t, d, tg, st, same, intact, rec in results]
    text = "\n".join(lines)
    print(text)
    write_section("faults", "Fault injection: SIGKILL at random moments", text)


if __name__ == "__main__":
    main()
