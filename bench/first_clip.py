"""The acoustic stage's first clip on a cold numba cache: before and after the one-time warm-up.

librosa compiles its numba kernels when first imported. Before, every worker process did that on
its first clip (into a cold cache); now the engine compiles them once in the parent into a cache
every worker and later run reads (`kebr_data.stages.acoustic.numba_cache_dir`).

Two measurements, each variant in a fresh process and with a fresh, empty NUMBA_CACHE_DIR (what a
new virtual environment or machine starts with), variants interleaved and repeated:

1. one worker's first and second clip (a demo clip, decoded by the audio stage's ffmpeg call):
   `before` = the worker compiles; `after` = the parent's warm-up compiles, then the worker loads.
2. the whole acoustic stage of the demo (`kebr-data extract --stages index,audio,acoustic`, 2 workers)
   with the code of `--before REV` (default: the commit before the warm-up) and of this checkout:
   the marker's wall time and the run's clips/s, which the stall used to distort.

    python bench/first_clip.py [--repeats 3] [--before REV]

Rewrites the `first-clip` section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "demo" / "voxceleb"
CLIPS = [DEMO / "mp4/id00001/kEbRdEmOa01/00001.mp4", DEMO / "mp4/id00001/kEbRdEmOa01/00002.mp4"]
BEFORE_REV = "443a8b9"  # the last commit whose workers compiled librosa's kernels themselves

# a worker: time to the first clip's features (imports + kernels + compute), then the second clip
WORKER = """
import json, sys, time, warnings
t0, c0 = time.perf_counter(), time.process_time()
from pathlib import Path
from kebr_data.media.ffmpeg import decode_audio, find_ffmpeg
from kebr_data.stages.acoustic import extractor
ys = [decode_audio(find_ffmpeg(), Path(p), 22050, 60, 600)[0].astype("float32") / 32768 for p in sys.argv[1:]]
warnings.simplefilter("ignore", UserWarning)
extractor().compute(ys[0])
t1, c1 = time.perf_counter(), time.process_time()
extractor().compute(ys[1])
print(json.dumps({"first": t1 - t0, "first_cpu": c1 - c0, "second": time.perf_counter() - t1}))
"""

# the parent's warm-up, as the engine calls it
WARM_UP = """
import json, time
t0, c0 = time.perf_counter(), time.process_time()
from kebr_data.stages.acoustic import AcousticStage
AcousticStage({"recipe": "released"}).warm_up(lambda line: None)
print(json.dumps({"warm_up": time.perf_counter() - t0, "warm_up_cpu": time.process_time() - c0}))
"""


def _env(code_root: Path, cache: Path) -> dict[str, str]:
    """The environment of a measured process: `code_root`'s kebr_data (the processes run outside the
    checkout, so `python -m` cannot pick up another one) and an empty numba cache."""
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "KEBR_CACHE_DIR")}
    return {**env, "PYTHONPATH": str(code_root), "NUMBA_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1"}


def _python(code: str, args: list[str], env: dict[str, str], cwd: Path) -> dict[str, float]:
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=cwd,
                          check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def worker_trial(variant: str, tmp: Path) -> dict[str, float]:
    """One worker's first two clips on a fresh cache; `after` runs the parent's warm-up first."""
    cache = Path(tempfile.mkdtemp(dir=tmp))
    result = _python(WARM_UP, [], _env(ROOT, cache), tmp) if variant == "after" else {}
    return {**result, **_python(WORKER, [str(c) for c in CLIPS], _env(ROOT, cache), tmp)}


def stage_trial(code_root: Path, tmp: Path) -> dict[str, float]:
    """The demo's acoustic stage with 2 workers on a fresh cache: marker wall time, run clips/s, total wall."""
    cache = Path(tempfile.mkdtemp(dir=tmp))
    out = Path(tempfile.mkdtemp(dir=tmp)) / "features"
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "kebr_data", "extract", "--src", str(DEMO), "--out", str(out),
                           "--stages", "index,audio,acoustic", "--workers", "2", "--max-failed", "1"],
                          capture_output=True, text=True, env=_env(code_root, cache), cwd=tmp, check=True)
    wall = time.perf_counter() - t0
    marker = json.loads((out / "acoustic/_done/shard-00000.json").read_text())
    rate = re.search(r"^│ acoustic .*?([\d.]+) clips/s", proc.stderr, re.M)  # its row of the summary table
    return {"marker_wall": marker["wall_s"], "clips_per_s": float(rate.group(1)) if rate else float("nan"),
            "wall": wall}


def checkout(rev: str, dest: Path) -> Path:
    """The package as it was at `rev` (git archive), to run the `before` pipeline."""
    data = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "kebr_data"], capture_output=True,
                          check=True).stdout
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(dest, filter="data")
    return dest


def _med(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def _row(label: str, before: list[dict[str, float]], after: list[dict[str, float]], key: str,
         higher_is_better: bool = False) -> str:
    """A table row: medians before and after, and how many times better after is."""
    b, a = _med(before, key), _med(after, key)
    return f"| {label} | {b:.1f} | {a:.1f} | {(a / b if higher_is_better else b / a):.1f}× |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--before", default=BEFORE_REV, help="git revision measured as `before` in the stage runs")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        old = checkout(args.before, tmp / "before")
        workers: dict[str, list] = {"before": [], "after": []}
        stages: dict[str, list] = {"before": [], "after": []}
        for i in range(args.repeats):
            order = ["before", "after"] if i % 2 == 0 else ["after", "before"]
            for v in order:
                workers[v].append(worker_trial(v, tmp))
                print(v, "worker", workers[v][-1], flush=True)
            for v in order:
                stages[v].append(stage_trial(old if v == "before" else ROOT, tmp))
                print(v, "stage", stages[v][-1], flush=True)
    b, a = workers["before"], workers["after"]
    sb, sa = stages["before"], stages["after"]
    body = f"""Every variant in fresh processes with a fresh, empty `NUMBA_CACHE_DIR` (a new virtual environment
or machine); medians of {args.repeats} interleaved repeats on the shared 2-core machine. The first clip's
time includes the worker's imports (librosa, scipy, numpy), which remain when the kernels are cached.

| one worker, demo clip | before (the worker compiles) | after (parent warm-up, then the worker) | ratio |
|---|---:|---:|---:|
| one-time warm-up in the parent, wall s | - | {_med(a, 'warm_up'):.1f} | - |
| one-time warm-up in the parent, CPU s | - | {_med(a, 'warm_up_cpu'):.1f} | - |
{_row('first clip, wall s', b, a, 'first')}
{_row('first clip, CPU s', b, a, 'first_cpu')}
| second clip, wall s | {_med(b, 'second'):.3f} | {_med(a, 'second'):.3f} | - |

| demo acoustic stage, 8 clips, 2 workers | before (`{args.before}`) | after | ratio |
|---|---:|---:|---:|
{_row('marker wall time of the shard, s', sb, sa, 'marker_wall')}
{_row('run summary, clips/s', sb, sa, 'clips_per_s', higher_is_better=True)}
| whole command (index, audio, acoustic), wall s | {_med(sb, 'wall'):.1f} | {_med(sa, 'wall'):.1f} | - |

After: the compilation happens once per machine (per cache folder), before the workers start, with the
progress line `acoustic: compiling librosa kernels (once, into ...)`; the markers' wall times and the
throughput figures no longer contain it. Later runs and every further worker load the cached kernels.
"""
    write_section("first-clip", "Acoustic stage: the first clip on a cold numba cache", body)


if __name__ == "__main__":
    main()
