"""The visual frame budget: what `visual.max_frames` and `visual.max_fps` cost before OpenFace, and what
they leave it to track.

    python bench/visual_budget.py [--clips 12] [--repeats 5]

Measured here, per clip: the ffmpeg CPU (user + system of the child) and wall of the cut
(`kebr_data.media.openface.budget_input`, what the stage runs before OpenFace) against today's link,
and the frames OpenFace would read (decoded from each cut). The cut's frames are checked equal, pixel
for pixel, to the clip's first frames. OpenFace is not installed on this machine, so its CPU per clip
with the budget is an estimate, **proportional to the frames it tracks**, from the real-binary
measurement of bench/visual.py (2.52 CPU-s per 183-frame clip for the stage); model loading (0.22
CPU-s per batch of 16 clips) is part of that and does not shrink, so the estimate is slightly low.
Corpus: bench/pipeline.py's (demo clips joined into ~7.3-s clips, 192 x 192 at 25 fps), the same as
bench/visual.py's. Interleaved repeats, medians. Rewrites the `visual-budget` section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from common import write_section  # noqa: E402
from pipeline import VOXCELEB2_CLIPS, VOXCELEB2_MEAN_S, make_corpus  # noqa: E402

from kebr_data.media.openface import budget_input  # noqa: E402
from kebr_data.media.video import probe_video  # noqa: E402

#: bench/visual.py with OpenFace 2.2 (CLNF, one BLAS thread, batches of 16): the stage's CPU per clip and the
#: clips' frames (bench/RESULTS.md, visual)
STAGE_CPU_S, STAGE_FRAMES = 2.52, 183
VOXCELEB2_FPS = 25
NODE_CORES = 64
#: (label, visual.max_fps, visual.max_frames)
VARIANTS = [("today: every frame (a link)", 0.0, 0), ("max_frames = 55 (FFV1 cut)", 0.0, 55),
            ("max_fps = 10 (libx264 re-encode)", 10.0, 0), ("max_fps = 10 and max_frames = 55", 10.0, 55)]


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def decoded(path: Path, limit: int | None = None) -> list[np.ndarray]:
    """The frames OpenCV decodes from `path` (what OpenFace reads), the first `limit` of them when given."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    frames = []
    while limit is None or len(frames) < limit:
        ok, image = cap.read()
        if not ok:
            break
        frames.append(image)
    cap.release()
    return frames


def one_pass(clips: list[Path], work: Path, max_fps: float, max_frames: int) -> tuple[float, float, list[Path]]:
    """(ffmpeg CPU s, wall s) over the clips for one variant, and what OpenFace would read (the frame rates
    come from the stage's pre-check, which runs either way: not timed)."""
    work.mkdir(parents=True)
    rates = [probe_video(clip).fps for clip in clips]
    c0, t0, inputs = children_cpu(), time.perf_counter(), []
    for k, (clip, fps) in enumerate(zip(clips, rates, strict=True)):
        cut = budget_input(clip, work / f"{k:05d}", fps, max_fps, max_frames)
        inputs.append(cut if cut is not None else clip)
    return children_cpu() - c0, time.perf_counter() - t0, inputs


def measure(n: int, repeats: int) -> list[str]:
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_corpus(tmp / "src", n)
        clips = sorted((tmp / "src").rglob("*.mp4"))
        runs: dict[int, list[tuple[float, float]]] = {i: [] for i in range(len(VARIANTS))}
        frames: dict[int, float] = {}
        for r in range(repeats):
            order = list(range(len(VARIANTS)))[r % len(VARIANTS):] + list(range(len(VARIANTS)))[:r % len(VARIANTS)]
            for i in order:
                _, max_fps, max_frames = VARIANTS[i]
                cpu, wall, inputs = one_pass(clips, tmp / f"v{i}-r{r}", max_fps, max_frames)
                runs[i].append((cpu / n, wall / n))
                if r == 0:
                    frames[i] = statistics.mean(len(decoded(p)) for p in inputs)
                    if max_frames and not max_fps:  # the cut holds the clip's first frames, pixel for pixel
                        for clip, cut in zip(clips, inputs, strict=True):
                            if not all(np.array_equal(a, b) for a, b in
                                       zip(decoded(cut), decoded(clip, max_frames), strict=True)):
                                raise SystemExit(f"the cut of {clip.name} differs from its first frames")
    per_frame = STAGE_CPU_S / STAGE_FRAMES
    base = frames[0] * per_frame
    lines = [f"{n} clips of {frames[0]:.0f} frames (192 x 192, 25 fps), median of {repeats} interleaved repeats. "
             "ffmpeg columns: measured. OpenFace column: **estimate, proportional to the frames tracked**, "
             f"{per_frame * 1000:.1f} CPU-ms per frame from bench/visual.py's real-binary run (not installed here). "
             "The cut's 55 frames were checked equal, pixel for pixel, to each clip's first 55. "
             f"{os.cpu_count()} cores shared with other work (load average {load:.1f} at the start, "
             f"{os.getloadavg()[0]:.1f} at the end): compare CPU times, wall times carry the contention.", "",
             "| setting | frames OpenFace tracks | ffmpeg CPU-s per clip (measured) | ffmpeg wall s per clip "
             "(measured) | OpenFace CPU-s per clip (frames-proportional) | visual CPU vs today |",
             "|---|---:|---:|---:|---:|---:|"]
    for i, (label, _, _) in enumerate(VARIANTS):
        cpu = statistics.median(c for c, _ in runs[i])
        wall = statistics.median(w for _, w in runs[i])
        openface = frames[i] * per_frame
        lines.append(f"| {label} | {frames[i]:.0f} | {cpu:.3f} | {wall:.3f} | {openface:.2f} | "
                     f"{(openface + cpu) / base:.2f}× |")
    cut_cpu = statistics.median(c for c, _ in runs[1])
    vox_frames = VOXCELEB2_MEAN_S * VOXCELEB2_FPS
    today_h = VOXCELEB2_CLIPS * vox_frames * per_frame / 3600
    budget_h = VOXCELEB2_CLIPS * (min(55, vox_frames) * per_frame + cut_cpu) / 3600
    lines += ["", f"VoxCeleb2 ({VOXCELEB2_CLIPS:,} clips of {VOXCELEB2_MEAN_S} s, {vox_frames:.0f} frames at "
                  f"{VOXCELEB2_FPS} fps), frames-proportional: the visual stage {today_h:,.0f} core-h "
                  f"({today_h / NODE_CORES:.1f} h on {NODE_CORES} cores) today, {budget_h:,.0f} core-h "
                  f"({budget_h / NODE_CORES:.1f} h) with `visual.max_frames = 55`, the cut included "
                  f"({today_h / budget_h:.1f}× less)."]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    out = "\n".join(measure(args.clips, args.repeats))
    write_section("visual-budget", "Visual stage: the frame budget (visual.max_frames, visual.max_fps)", out)


if __name__ == "__main__":
    main()
