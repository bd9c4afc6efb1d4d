"""Visual stage costs: CSV parse time per 1,000 frames (here), and the stage against the bare
per-clip `FeatureExtraction` loop on the same clips (wherever OpenFace is installed).

    python bench/visual.py [--openface /path/to/FeatureExtraction] [--clips 10] [--repeats 3]

The parse is compared with pandas.read_csv + column selection (how MMSA-FET's OpenFace extractor
reads the same files) and with the csv module. The run comparison uses ~8-s clips (VoxCeleb2's
mean is 7.8 s), one BLAS thread on both sides (what the local executor gives its workers), the
model the stage picks (CE-CLM, else CLNF) on both sides, and interleaved repeats; CPU is user +
system of the process tree. The stage is timed around `run_shard` (one worker's work on one
shard), and its features are checked equal to the bare CSVs. Rewrites the `visual` section of
bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_section  # noqa: E402

from kebr_data.executors.local import THREAD_VARS  # noqa: E402
from kebr_data.features.openface import FEATURES, parse_openface_csv  # noqa: E402
from kebr_data.media.openface import FLAGS, choose_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "openface" / "default.csv"
ONE_THREAD = {**os.environ, **{k: "1" for k in THREAD_VARS}, "PYTHONPATH": str(ROOT)}
#: the stage on one shard in a child process: CPU of the child and its OpenFace children around run_shard
STAGE_RUN = """
import json, resource, sys, time
from pathlib import Path
import numpy as np, pyarrow as pa
from kebr_data import config
from kebr_data.schema import PLAN
from kebr_data.stages.base import ShardContext
from kebr_data.stages.visual import VisualStage
openface, out, clips = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
stage = VisualStage(config.load(overrides=[f"visual.openface_bin={openface!r}"])["visual"])
plan = pa.Table.from_pylist([{"clip_id": Path(c).stem, "status": "ok", "video_path": c, "source": "folder"}
                             for c in clips], schema=PLAN)
def cpu():
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime
c0, t0 = cpu(), time.perf_counter()
rows = stage.run_shard(ShardContext(0, {"plan": plan}, out / "tmp")).to_pylist()
wall, used = time.perf_counter() - t0, cpu() - c0
for r in rows:
    np.save(out / f"{r['clip_id']}.npy", np.array(r["features"], dtype=np.float32))
print(json.dumps({"cpu": used, "wall": wall, "ok": sum(r["status"] == "ok" for r in rows)}))
"""


def best_of(fn, repeat: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def parse_csv_module(data: bytes) -> np.ndarray:
    rows = list(csv.reader(io.StringIO(data.decode())))
    header = [h.strip() for h in rows[0]]
    idx = [header.index(c) for c in FEATURES]
    return np.array([[float(r[i]) for i in idx] for r in rows[1:]], dtype=np.float32)


def parse_pandas(data: bytes) -> np.ndarray:
    import pandas as pd

    df = pd.read_csv(io.BytesIO(data), skipinitialspace=True)
    return df[list(FEATURES)].to_numpy(dtype=np.float32)


def parse_table(data: bytes) -> list[str]:
    frames = data.count(b"\n") - 1
    rows = [("kebr `parse_openface_csv` (pyarrow, vectorised)", best_of(lambda: parse_openface_csv(data)))]
    try:
        import pandas  # noqa: F401
        rows.append(("pandas.read_csv + column selection (MMSA-FET's way)", best_of(lambda: parse_pandas(data))))
    except ImportError:
        pass
    rows.append(("csv module, row by row", best_of(lambda: parse_csv_module(data), 2)))
    base = rows[0][1]
    lines = [f"A real OpenFace 2.2 CSV ({frames} frames × 714 columns, {len(data) / 2**20:.1f} MiB), repeated to "
             f"{frames} frames; best of 5.", "", "| parser | ms per 1,000 frames | vs kebr |", "|---|---:|---:|"]
    lines += [f"| {name} | {t / frames * 1000 * 1000:.1f} | {t / base:.1f}× |" for name, t in rows]
    return lines


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def bare_loop(openface: str, clips: list[Path], out: Path) -> tuple[float, float]:
    """(CPU s, wall s) of FeatureExtraction run once per clip, as its users run it."""
    model = choose_model(openface, [])
    c0, t0 = children_cpu(), time.perf_counter()
    for clip in clips:
        subprocess.run([openface, "-f", str(clip), "-out_dir", str(out), *FLAGS, *model.args], capture_output=True,
                       check=True, env=ONE_THREAD)
    return children_cpu() - c0, time.perf_counter() - t0


def stage_run(openface: str, clips: list[Path], out: Path) -> tuple[float, float]:
    """(CPU s, wall s) of the visual stage's run_shard on the clips (default batch size)."""
    proc = subprocess.run([sys.executable, "-c", STAGE_RUN, openface, str(out), *map(str, clips)],
                          capture_output=True, text=True, check=True, env=ONE_THREAD)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if result["ok"] != len(clips):
        raise SystemExit(f"the stage failed on {len(clips) - result['ok']} clip(s)")
    return result["cpu"], result["wall"]


def model_load_cpu(openface: str, tmp: Path) -> float:
    """CPU s of one FeatureExtraction invocation on a 5-frame clip: model loading, nearly all of it."""
    from kebr_data.media.openface import write_probe_clip

    clip = write_probe_clip(tmp / "probe.avi")
    cpu, _ = bare_loop(openface, [clip], tmp / "probe")
    return cpu


def overhead_table(openface: str, n: int, repeats: int) -> list[str]:
    """The stage against the bare per-clip loop: CPU and wall, interleaved repeats, equal features."""
    from pipeline import make_corpus

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_corpus(tmp / "src", n)
        clips = sorted((tmp / "src").rglob("*.mp4"))
        frames = seconds = 0.0
        import cv2

        for clip in clips:
            cap = cv2.VideoCapture(str(clip))
            frames += cap.get(cv2.CAP_PROP_FRAME_COUNT)
            seconds += cap.get(cv2.CAP_PROP_FRAME_COUNT) / cap.get(cv2.CAP_PROP_FPS)
            cap.release()
        load = model_load_cpu(openface, tmp)
        runs: dict[str, list[tuple[float, float]]] = {"bare": [], "stage": []}
        for r in range(repeats):
            order = ("bare", "stage") if r % 2 == 0 else ("stage", "bare")
            for kind in order:
                out = tmp / f"{kind}{r}"
                out.mkdir()
                runs[kind].append((bare_loop if kind == "bare" else stage_run)(openface, clips, out))
        for clip in clips:
            want = parse_openface_csv((tmp / "bare0" / f"{clip.stem}.csv").read_bytes()).features
            if not np.array_equal(np.load(tmp / "stage0" / f"{clip.stem}.npy"), want):
                raise SystemExit(f"the stage's features of {clip.name} differ from the bare run")
    med = {f"{k}_{m}": statistics.median(x[i] for x in v) / n for k, v in runs.items()
           for i, m in enumerate(("cpu", "wall"))}
    model = choose_model(openface, [])
    lines = ["", f"The stage against bare FeatureExtraction: {n} clips of {seconds / n:.1f} s mean "
                 f"({frames / n:.0f} frames), model {model.name}, one BLAS thread, median of {repeats} interleaved "
                 f"repeats; features identical (all {n} clips, 709 columns).", "",
             "| run | CPU s per clip | wall s per clip | CPU vs bare | wall vs bare |", "|---|---:|---:|---:|---:|",
             f"| bare FeatureExtraction, one invocation per clip | {med['bare_cpu']:.2f} | {med['bare_wall']:.2f} | "
             f"1.00× | 1.00× |",
             f"| kebr visual stage (checks, batches of 16 clips, parse) | {med['stage_cpu']:.2f} | "
             f"{med['stage_wall']:.2f} | {med['stage_cpu'] / med['bare_cpu']:.2f}× | "
             f"{med['stage_wall'] / med['bare_wall']:.2f}× |", "",
             f"OpenFace's cost here: {load:.2f} CPU-s for an invocation on a 5-frame faceless clip (model "
             f"loading), {frames / n / (med['bare_cpu'] - load):.0f} frames per CPU-second beyond that on these "
             f"clips (the first face detection of each clip included). Target: stage CPU per clip ≤ 0.90× the "
             f"bare loop."]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--openface", default=os.environ.get("KEBR_OPENFACE_BIN") or shutil.which("FeatureExtraction"))
    ap.add_argument("--clips", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    text = FIXTURE.read_bytes()
    header, body = text.split(b"\n", 1)
    data = header + b"\n" + body * 4  # 1,152 frames
    lines = parse_table(data)
    if args.openface:
        lines += overhead_table(args.openface, args.clips, args.repeats)
    else:
        lines += ["", "The stage against bare FeatureExtraction: not measured here (OpenFace is not installed on this "
                      "machine); run this script inside the docker image, or with --openface PATH."]
    out = "\n".join(lines)
    write_section("visual", "Visual stage: OpenFace CSV parsing, and the stage against bare OpenFace", out)


if __name__ == "__main__":
    main()
