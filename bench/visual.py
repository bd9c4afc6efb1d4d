"""Visual stage costs: CSV parse time per 1,000 frames (here), and the toolkit's overhead over bare
`FeatureExtraction` on the same clips (wherever OpenFace is installed).

    python bench/visual.py [--openface /path/to/FeatureExtraction] [--clips 20]

The parse is compared with pandas.read_csv + column selection (how MMSA-FET's OpenFace extractor
reads the same files) and with the csv module. Rewrites the `visual` section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import run_kebr, write_section  # noqa: E402

from kebr_data.features.openface import FEATURES, parse_openface_csv  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT.parent / "shared" / "fixtures" / "openface" / "default.csv"


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


def overhead_table(openface: str, n: int) -> list[str]:
    """Bare FeatureExtraction per clip vs the visual stage (pre-check, subprocess, parse, commit)."""
    clips = sorted(p for p in (ROOT / "demo/voxceleb/mp4").rglob("*.mp4") if "00002.mp4" not in p.name
                   or "id00003" not in str(p))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = tmp / "src"
        src.mkdir()
        for i in range(n):
            shutil.copy(clips[i % len(clips)], src / f"c{i:03d}.mp4")
        t0 = time.perf_counter()
        for p in sorted(src.iterdir()):
            subprocess.run([openface, "-f", str(p), "-out_dir", str(tmp / "bare"), "-2Dfp", "-3Dfp", "-pdmparams",
                            "-pose", "-aus", "-gaze"], capture_output=True, check=True)
        bare = time.perf_counter() - t0
        wall, _ = run_kebr(["extract", "--src", str(src), "--out", str(tmp / "out"), "--layout", "folder",
                            "--stages", "index,visual", "--workers", "1", "--set", f"visual.openface_bin='{openface}'"])
    return ["", f"Overhead over bare FeatureExtraction, {n} demo clips, 1 worker:", "",
            "| run | wall s | vs bare |", "|---|---:|---:|",
            f"| bare FeatureExtraction loop | {bare:.1f} | 1.00× |",
            f"| kebr visual stage (pre-check + run + parse + commit) | {wall:.1f} | {wall / bare:.2f}× |"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--openface", default=os.environ.get("KEBR_OPENFACE_BIN") or shutil.which("FeatureExtraction"))
    ap.add_argument("--clips", type=int, default=20)
    args = ap.parse_args()
    text = FIXTURE.read_bytes()
    header, body = text.split(b"\n", 1)
    data = header + b"\n" + body * 4  # 1,152 frames
    lines = parse_table(data)
    if args.openface:
        lines += overhead_table(args.openface, args.clips)
    else:
        lines += ["", "Overhead over bare FeatureExtraction: not measured here (OpenFace is not installed on this "
                      "machine); run this script inside the docker image, or with --openface PATH."]
    out = "\n".join(lines)
    print(out)
    write_section("visual", "Visual stage: OpenFace CSV parsing and run overhead", out)


if __name__ == "__main__":
    main()
