"""faces and video_encoder speed: the stage (`run_shard`, everything the toolkit adds) against the bare
library loop doing the same library work, per core, interleaved and repeated.

- faces: toolkit = FacesStage.run_shard (sampling at 10 fps, Haar detection, IoU tracks, smoothing,
  JPEG crops, Arrow rows); bare = cv2.VideoCapture reading every frame, detectMultiScale on the frames
  shown at k / 10 s, warpAffine + imencode of the largest box (no tracks, no smoothing).
- video_encoder: toolkit = VideoEncoderStage.run_shard over the faces table; bare = JPEG decode,
  resize/normalise and VideoMAEModel on windows of 16 frames, spatial mean. The model is a randomly
  initialised VideoMAE-base (VideoMAEConfig() defaults: 224 px, 16 frames, 86 M parameters): the
  same computation as MCG-NJU/videomae-base without its download.

Each measurement runs in a fresh child process pinned to one core with one thread (one warm-up clip
untimed, so model loading is not counted); CPU and wall seconds and the child's peak RSS are kept.

    python bench/encoders_video.py [--copies 1] [--repeats 3] [--encoder-clips 2]

Rewrites the `encoders-video` section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
DEMO = ROOT / "demo" / "voxceleb"


def pin() -> None:
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"


def clips(copies: int) -> list[Path]:
    good = sorted(p for p in DEMO.rglob("*.mp4") if "id00003" not in str(p))
    return good * copies


# --- the contenders (run in a child process) -------------------------------------------------------


def faces_toolkit(videos: list[Path], tmp: Path) -> int:
    import pyarrow as pa

    from kebr_data import config
    from kebr_data.schema import PLAN
    from kebr_data.stages.base import ShardContext
    from kebr_data.stages.faces import FacesStage

    plan = pa.Table.from_pylist([{"clip_id": f"c{i}", "status": "ok", "video_path": str(v)}
                                 for i, v in enumerate(videos)], schema=PLAN)
    audio = pa.table({"clip_id": plan.column("clip_id"), "status": ["ok"] * len(videos),
                      "error": pa.nulls(len(videos), pa.string())})
    stage = FacesStage(config.load()["faces"])
    table = stage.run_shard(ShardContext(0, {"plan": plan, "audio": audio}, tmp))
    return table.num_rows


def faces_bare(videos: list[Path], tmp: Path) -> int:
    import math

    import cv2
    import numpy as np

    detector = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    for video in videos:
        cap = cv2.VideoCapture(str(video))
        src_fps = cap.get(cv2.CAP_PROP_FPS)
        i, k, crops = 0, 0, []
        while cap.grab():
            if int(math.floor(k * src_fps / 10 + 1e-6)) == i:
                frame = cap.retrieve()[1]
                while int(math.floor(k * src_fps / 10 + 1e-6)) == i:
                    k += 1
                boxes = detector.detectMultiScale(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), scaleFactor=1.1,
                                                  minNeighbors=5, minSize=(19, 19))
                if len(boxes):
                    x, y, w, h = max(boxes, key=lambda b: b[2] * b[3])
                    side = 1.25 * max(w, h)
                    s = 128 / side
                    m = np.array([[s, 0, 64 - s * (x + w / 2)], [0, s, 64 - s * (y + h / 2)]])
                    crop = cv2.warpAffine(frame, m, (128, 128), borderMode=cv2.BORDER_REPLICATE)
                    crops.append(cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
            i += 1
        cap.release()
    return len(videos)


def encoder_toolkit(faces_file: Path, model: Path, tmp: Path, n: int) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from kebr_data import config
    from kebr_data.stages.base import ShardContext
    from kebr_data.stages.video_encoder import VideoEncoderStage

    faces = pq.read_table(faces_file).slice(0, n)
    plan = pa.table({"clip_id": faces.column("clip_id")})
    cfg = config.load(overrides=[f"video_encoder.model='{model}'"])["video_encoder"]
    return VideoEncoderStage(cfg).run_shard(ShardContext(0, {"plan": plan, "faces": faces}, tmp)).num_rows


def encoder_bare(faces_file: Path, model: Path, tmp: Path, n: int) -> int:
    import cv2
    import numpy as np
    import pyarrow.parquet as pq
    import torch

    torch.set_num_threads(1)
    net = _bare_model(model)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    for crops in pq.read_table(faces_file, columns=["crops"]).column("crops").to_pylist()[:n]:
        rgb = np.stack([cv2.cvtColor(cv2.imdecode(np.frombuffer(c, np.uint8), 1), cv2.COLOR_BGR2RGB) for c in crops])
        x = torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 255
        x = (torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear") - mean) / std
        x = torch.cat([x] + [x[-1:]] * (-len(x) % 16)).reshape(-1, 16, 3, 224, 224)
        with torch.inference_mode():
            for w in range(0, len(x), 4):
                net(pixel_values=x[w:w + 4]).last_hidden_state.reshape(-1, 8, 196, 768).mean(dim=2)
    return n


_MODELS: dict[str, object] = {}


def _bare_model(model: Path):
    from transformers import VideoMAEModel

    if str(model) not in _MODELS:
        _MODELS[str(model)] = VideoMAEModel.from_pretrained(str(model), local_files_only=True).eval()
    return _MODELS[str(model)]


def peak_rss() -> int:
    """This process's peak RSS in bytes (VmHWM: unlike ru_maxrss, not inherited from the parent over fork/exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def child(args: argparse.Namespace) -> None:
    """One timed measurement: warm up on one clip (untimed), then time the contender."""
    pin()
    if args.stage == "video_encoder":
        import torch

        torch.set_num_threads(1)
    import cv2

    cv2.setNumThreads(1)
    tmp = Path(tempfile.mkdtemp(prefix="kebr-bench-"))
    videos = [Path(p) for p in json.loads(args.videos)]
    if args.stage == "faces":
        fn = faces_toolkit if args.contender == "toolkit" else faces_bare
        fn(videos[:1], tmp)
        t0, w0 = time.process_time(), time.perf_counter()
        n = fn(videos, tmp)
    else:
        fn = encoder_toolkit if args.contender == "toolkit" else encoder_bare
        fn(Path(args.faces), Path(args.model), tmp, 1)
        t0, w0 = time.process_time(), time.perf_counter()
        n = fn(Path(args.faces), Path(args.model), tmp, args.encoder_clips)
    cpu, wall = time.process_time() - t0, time.perf_counter() - w0
    rss = peak_rss()
    print(json.dumps({"clips": n, "cpu": cpu, "wall": wall, "rss": rss}))


def measure(stage: str, contender: str, base: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", "--stage", stage, "--contender", contender, *base],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--copies", type=int, default=1, help="times the 6 good demo clips (with audio) are listed")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--encoder-clips", type=int, default=2, help="clips through VideoMAE-base per measurement")
    parser.add_argument("--replay", type=Path, help="rewrite the section from a saved log of this script's output "
                                                     "(with --repeats and --encoder-clips as measured)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--contender", help=argparse.SUPPRESS)
    parser.add_argument("--videos", help=argparse.SUPPRESS)
    parser.add_argument("--faces", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    if args.replay:
        results = replay(args.replay)
        crops = _faces_table(clips(1), Path(tempfile.mkdtemp(prefix="kebr-bench-"))).column("num_frames").to_pylist()
        return report(results, args.repeats, args.encoder_clips, crops)

    import torch
    from transformers import VideoMAEConfig, VideoMAEModel

    videos = clips(args.copies)
    work = Path(tempfile.mkdtemp(prefix="kebr-bench-video-"))
    torch.manual_seed(0)
    VideoMAEModel(VideoMAEConfig()).save_pretrained(work / "videomae-base-random")
    sys.path.insert(0, str(ROOT))
    import pyarrow.parquet as pq

    faces_file = work / "faces.parquet"
    faces_table = _faces_table(clips(1), work)
    pq.write_table(faces_table, faces_file)
    crops = faces_table.column("num_frames").to_pylist()
    base = ["--videos", json.dumps([str(v) for v in videos]), "--faces", str(faces_file), "--model",
            str(work / "videomae-base-random"), "--encoder-clips", str(args.encoder_clips)]
    results: dict[tuple[str, str], list[dict]] = {}
    for r in range(args.repeats):
        for stage in ("faces", "video_encoder"):
            order = ("toolkit", "bare") if r % 2 == 0 else ("bare", "toolkit")  # interleaved, alternating
            for contender in order:
                m = measure(stage, contender, base)
                results.setdefault((stage, contender), []).append(m)
                print(stage, contender, r, m, flush=True)
    report(results, args.repeats, args.encoder_clips, crops)


def report(results: dict[tuple[str, str], list[dict]], repeats: int, encoder_clips: int, crops: list[int]) -> None:
    """Print the table and rewrite the RESULTS.md section from the measurements."""
    from common import write_section

    rows = []
    for stage in ("faces", "video_encoder"):
        cells = {}
        for contender in ("toolkit", "bare"):
            ms = results[(stage, contender)]
            cpu = statistics.median(m["cpu"] / m["clips"] for m in ms)
            wall = statistics.median(m["wall"] / m["clips"] for m in ms)
            cells[contender] = (cpu, wall, max(m["rss"] for m in ms), ms[0]["clips"])
        (tc, tw, tr, n), (bc, bw, br, _) = cells["toolkit"], cells["bare"]
        pairs = list(zip(results[(stage, "toolkit")], results[(stage, "bare")]))
        cpu_r = [t["cpu"] / b["cpu"] for t, b in pairs]
        wall_r = [t["wall"] / b["wall"] for t, b in pairs]
        rows.append(f"| {stage} | {n} | {1 / tc:.3f} | {1 / bc:.3f} | {tc / bc:.3f} ({min(cpu_r):.2f}-{max(cpu_r):.2f}) | "
                    f"{1 / tw:.3f} | {1 / bw:.3f} | {tw / bw:.3f} ({min(wall_r):.2f}-{max(wall_r):.2f}) | "
                    f"{tr / 2**20:.0f} | {br / 2**20:.0f} |")
    table = ("| stage | clips | toolkit clips/CPU-s | bare clips/CPU-s | CPU ratio (per repeat) | toolkit clips/wall-s | "
             "bare clips/wall-s | wall ratio (per repeat) | toolkit peak RSS MiB | bare peak RSS MiB |\n"
             "|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows))
    body = f"""Demo clips (192×192, 25 fps; {min(crops)}-{max(crops)} crops per clip, {sum(crops) / len(crops):.1f} on average, at
10 fps), one core, one thread per process, median over {repeats} interleaved repeats (order alternating),
one untimed warm-up clip per process. Ratio = toolkit seconds per clip / bare seconds per clip (1.00 =
no overhead; the range is over the repeats' pairs). video_encoder: a random VideoMAE-base (86 M
parameters, 224 px, 16-frame windows, 4 windows per forward), {encoder_clips} clip(s) per measurement.
Peak RSS is the measuring process's (VmHWM; model included; the toolkit's includes importing
kebr_data and pyarrow).

{table}

Machine: {os.cpu_count()} cores shared with other jobs (tests ran beside the first repeats), so wall
times and their ratios are much noisier than CPU times; the CPU ratio is the overhead figure.
"""
    print(table)
    write_section("encoders-video", "Face tracks and video encoder: stage vs bare library loop", body,
                  script="encoders_video.py")


def replay(log: Path) -> dict[tuple[str, str], list[dict]]:
    """Measurements back from this script's printed lines (`stage contender repeat {...}`)."""
    import ast

    results: dict[tuple[str, str], list[dict]] = {}
    for line in log.read_text().splitlines():
        parts = line.split(" ", 3)
        if len(parts) == 4 and parts[0] in ("faces", "video_encoder") and parts[3].startswith("{"):
            results.setdefault((parts[0], parts[1]), []).append(ast.literal_eval(parts[3]))
    return results


def _faces_table(videos: list[Path], work: Path):
    import pyarrow as pa

    from kebr_data import config
    from kebr_data.schema import PLAN
    from kebr_data.stages.base import ShardContext
    from kebr_data.stages.faces import FacesStage

    plan = pa.Table.from_pylist([{"clip_id": f"c{i}", "status": "ok", "video_path": str(v)}
                                 for i, v in enumerate(videos)], schema=PLAN)
    audio = pa.table({"clip_id": plan.column("clip_id"), "status": ["ok"] * len(videos),
                      "error": pa.nulls(len(videos), pa.string())})
    return FacesStage(config.load()["faces"]).run_shard(ShardContext(0, {"plan": plan, "audio": audio}, work))


if __name__ == "__main__":
    main()
