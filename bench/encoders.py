"""Encoder and baseline stages (ssl_audio, opensmile, melspec, faces, video_encoder): the stage's
`run_shard` (everything the toolkit adds: FLAC or video decoding, resampling, chunking, batching,
tracks, Arrow rows) against the bare library call in a plain loop on the same clips.

Each measurement runs in a fresh child process pinned to one core with one thread, warms up on one
clip (untimed: model loading is not counted), then times every clip; CPU and wall seconds and the
child's peak RSS (VmHWM: one worker's peak, model included) are kept. Contenders are interleaved
(toolkit, bare, then bare, toolkit, ...) over `--repeats`; medians are reported with the ratio's
range over the repeats' pairs. One more child per stage runs both contenders alternating on the same
inputs: the overhead without the spread between separate processes (the figure checked against 1.05).

- ssl_audio: a random-initialised model of HuBERT-base's shape (12 layers, 768 wide, group-norm
  front end: what facebook/hubert-base-ls960 computes, without its weights). Batching: batch_size 1
  against 8 on a layer-normalised model of the same size (hubert-large's front end, attention
  masks): the only kind the stage pads into batches.
- opensmile, melspec: the stages' defaults; bare = `Smile.process_signal` / librosa.
- every audio bare loop starts, like the stage, from the audio stage's FLAC bytes (decoded with soundfile,
  as the faces loop decodes its videos): the comparison is on the same input.
- faces: bare = VideoCapture reading every frame, detectMultiScale on the frames shown at k / 10 s,
  warpAffine + imencode of the largest box (no tracks, no smoothing).
- video_encoder: a random VideoMAE-base (VideoMAEConfig() defaults: 224 px, 16 frames, 86 M
  parameters); bare = JPEG decode, resize/normalise and VideoMAEModel on 16-frame windows.
- long input: one 30-minute clip through opensmile and melspec (the test suite covers ssl_audio and
  melspec cheaply; opensmile takes a minute there), peak RSS of the worker.
- GPU projection: forward FLOPs counted here (torch.utils.flop_counter) for a 7.8-s clip, divided by
  an assumed achieved throughput (ASSUMED_TFLOPS); no GPU on this machine.

    python bench/encoders.py [--clips 6] [--repeats 3] [--stages ...] [--long-minutes 30] [--long-only]
    python bench/encoders.py --replay LOG   # the comparison section again from a saved log of its output

Rewrites the `encoders` and `encoders-long` sections of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import atexit
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))
DEMO = ROOT / "demo" / "voxceleb"
SR = 22050  # the audio stage's default rate
STAGES = ("ssl_audio", "opensmile", "melspec", "faces", "video_encoder")
AUDIO = ("ssl_audio", "opensmile", "melspec")
VOXCELEB2_MEAN_S = 7.8
#: assumed achieved fp16 throughput of one data-centre GPU on these encoders (not measured: no GPU here):
#: A100 dense fp16 tensor peak 312 TFLOP/s (NVIDIA's A100 datasheet) at ~30% utilisation, typical of
#: batched transformer inference; an H100 (989 TFLOP/s dense peak) at the same utilisation is ~3x faster
ASSUMED_TFLOPS = 100.0
SAME_PROCESS = "same process"


# --- inputs ------------------------------------------------------------------------------------


def corpus(n: int):
    """n synthetic voiced clips of 3-8 s at 22,050 Hz, as decoded from FLAC (deterministic)."""
    import numpy as np

    from kebr_data.media.flac import decode_flac, encode_flac

    rng = np.random.default_rng(0)
    clips = []
    for _ in range(n):
        t = np.arange(int(rng.uniform(3, 8) * SR)) / SR
        f0 = 120 + 40 * np.sin(2 * np.pi * rng.uniform(0.3, 1.0) * t)
        y = sum(np.sin(k * 2 * np.pi * np.cumsum(f0) / SR) / k for k in range(1, 6))
        y = (0.2 * y + 0.01 * rng.standard_normal(len(t))).astype(np.float32)
        clips.append(decode_flac(encode_flac((y * 32767).astype(np.int16), SR))[0])
    return clips


def long_clip(minutes: float):
    """One clip of `minutes` (a 3-s voiced pattern repeated), as FLAC-decoded samples."""
    import numpy as np

    base = corpus(1)[0][:SR * 3]
    return np.tile(base, int(math.ceil(minutes * 60 / 3)))[:int(minutes * 60 * SR)]


def audio_tables(clips) -> dict:
    """The plan and audio tables (FLAC rows) a stage reading the audio stage receives, built before timing."""
    import numpy as np
    import pyarrow as pa

    from kebr_data.media.flac import encode_flac
    from kebr_data.schema import AUDIO, PLAN

    plan = pa.Table.from_pylist([{"clip_id": f"c{i}", "status": "ok", "source": "folder"} for i in range(len(clips))],
                                schema=PLAN)
    audio = pa.Table.from_pylist([{"clip_id": f"c{i}", "status": "ok", "sample_rate": SR, "num_samples": len(y),
                                   "duration_s": len(y) / SR, "flac": encode_flac((y * 32767).astype(np.int16), SR)}
                                  for i, y in enumerate(clips)], schema=AUDIO)
    return {"plan": plan, "audio": audio}


def audio_context(inputs: dict, tmp: Path):
    from kebr_data.stages.base import ShardContext

    return ShardContext(0, inputs["tables"], tmp)


def videos() -> list[Path]:
    return sorted(p for p in DEMO.rglob("*.mp4") if "id00003" not in str(p))


def faces_table(paths: list[Path], tmp: Path):
    import pyarrow as pa

    from kebr_data import config
    from kebr_data.schema import PLAN
    from kebr_data.stages.base import ShardContext
    from kebr_data.stages.faces import FacesStage

    plan = pa.Table.from_pylist([{"clip_id": f"c{i}", "status": "ok", "video_path": str(v)}
                                 for i, v in enumerate(paths)], schema=PLAN)
    audio = pa.table({"clip_id": plan.column("clip_id"), "status": ["ok"] * len(paths),
                      "error": pa.nulls(len(paths), pa.string())})
    return FacesStage(config.load()["faces"]).run_shard(ShardContext(0, {"plan": plan, "audio": audio}, tmp))


def save_models(work: Path) -> dict[str, str]:
    """Random-initialised models of the real checkpoints' shapes, saved once for the children."""
    import torch
    import transformers

    out = {}
    for name, cfg, mask in (("hubert-base-shape", transformers.HubertConfig(), False),
                            ("hubert-base-layernorm", transformers.HubertConfig(feat_extract_norm="layer",
                                                                                do_stable_layer_norm=True), True)):
        torch.manual_seed(0)
        transformers.HubertModel(cfg).eval().save_pretrained(work / name)
        transformers.Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, do_normalize=mask,
                                              return_attention_mask=mask).save_pretrained(work / name)
        out[name] = str(work / name)
    torch.manual_seed(0)
    transformers.VideoMAEModel(transformers.VideoMAEConfig()).save_pretrained(work / "videomae-base-random")
    out["videomae"] = str(work / "videomae-base-random")
    return out


# --- the contenders (each returns a callable over a list of inputs) --------------------------------


def ssl_toolkit(models: dict, batch_size: int = 1, model: str = "hubert-base-shape"):
    from kebr_data import config
    from kebr_data.stages.ssl_audio import SslAudioStage

    cfg = config.load(overrides=[f"ssl_audio.model='{models[model]}'", f"ssl_audio.batch_size={batch_size}"])
    stage = SslAudioStage(cfg["ssl_audio"])
    return lambda inputs, tmp: stage.run_shard(audio_context(inputs, tmp)).num_rows


def decoded(inputs: dict):
    """The audio table's FLAC rows decoded with soundfile (float32, as the stages read them), one at a time."""
    import io

    import soundfile

    for data in inputs["tables"]["audio"].column("flac").to_pylist():
        yield soundfile.read(io.BytesIO(data), dtype="float32")[0]


def ssl_bare(models: dict):
    import librosa
    import torch
    import transformers

    fe = transformers.AutoFeatureExtractor.from_pretrained(models["hubert-base-shape"], local_files_only=True)
    net = transformers.AutoModel.from_pretrained(models["hubert-base-shape"], local_files_only=True).eval()

    def run(inputs, tmp):
        for y in decoded(inputs):
            y16 = librosa.resample(y, orig_sr=SR, target_sr=16000, res_type="soxr_hq")
            with torch.inference_mode():
                net(**fe(y16, sampling_rate=16000, return_tensors="pt")).last_hidden_state.numpy()
        return len(inputs["clips"])
    return run


def audio_stage_toolkit(name: str):
    from kebr_data import config
    from kebr_data.stages import make_stage

    stage = make_stage(name, config.load())
    return lambda inputs, tmp: stage.run_shard(audio_context(inputs, tmp)).num_rows


def opensmile_bare(models: dict):
    import numpy as np
    import opensmile

    from kebr_data.stages.opensmile import derive_config

    root = derive_config(Path(tempfile.mkdtemp(prefix="kebr-bench-")) / "smile-config", 0.06, 0.02)
    smile = opensmile.Smile(str(root / "egemaps/v02/eGeMAPSv02.conf"), "lld")

    def run(inputs, tmp):
        for y in decoded(inputs):
            smile.process_signal(y, SR).to_numpy(np.float32)
        return len(inputs["clips"])
    return run


def melspec_bare(models: dict):
    import librosa
    import numpy as np

    def run(inputs, tmp):
        for y in decoded(inputs):
            s = librosa.feature.melspectrogram(y=y, sr=SR, n_fft=1323, hop_length=441, n_mels=128)
            librosa.power_to_db(s).T.astype(np.float32)
        return len(inputs["clips"])
    return run


def faces_toolkit(models: dict):
    return lambda paths, tmp: faces_table(paths, tmp).num_rows


def faces_bare(models: dict):
    import cv2
    import numpy as np

    from kebr_data.stages.faces import CASCADE

    detector = cv2.CascadeClassifier(cv2.data.haarcascades + CASCADE)

    def run(paths, tmp):
        for video in paths:
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
                        s = 128 / (1.25 * max(w, h))
                        m = np.array([[s, 0, 64 - s * (x + w / 2)], [0, s, 64 - s * (y + h / 2)]])
                        crop = cv2.warpAffine(frame, m, (128, 128), borderMode=cv2.BORDER_REPLICATE)
                        crops.append(cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
                i += 1
            cap.release()
        return len(paths)
    return run


def encoder_toolkit(models: dict):
    import pyarrow as pa

    from kebr_data import config
    from kebr_data.stages.base import ShardContext
    from kebr_data.stages.video_encoder import VideoEncoderStage

    stage = VideoEncoderStage(config.load(overrides=[f"video_encoder.model='{models['videomae']}'"])["video_encoder"])

    def run(faces, tmp):
        return stage.run_shard(ShardContext(0, {"plan": pa.table({"clip_id": faces.column("clip_id")}),
                                                "faces": faces}, tmp)).num_rows
    return run


def encoder_bare(models: dict):
    import cv2
    import numpy as np
    import torch
    from transformers import VideoMAEModel

    net = VideoMAEModel.from_pretrained(models["videomae"], local_files_only=True).eval()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    def run(faces, tmp):
        for crops in faces.column("crops").to_pylist():
            rgb = np.stack([cv2.cvtColor(cv2.imdecode(np.frombuffer(c, np.uint8), 1), cv2.COLOR_BGR2RGB)
                            for c in crops])
            x = torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 255
            x = (torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear") - mean) / std
            x = torch.cat([x] + [x[-1:]] * (-len(x) % 16)).reshape(-1, 16, 3, 224, 224)
            with torch.inference_mode():
                for w in range(0, len(x), 4):
                    net(pixel_values=x[w:w + 4]).last_hidden_state.reshape(-1, 8, 196, 768).mean(dim=2)
        return faces.num_rows
    return run


CONTENDERS = {
    ("ssl_audio", "toolkit"): lambda m: ssl_toolkit(m),
    ("ssl_audio", "bare"): ssl_bare,
    ("ssl_audio", "layernorm batch 1"): lambda m: ssl_toolkit(m, 1, "hubert-base-layernorm"),
    ("ssl_audio", "layernorm batch 8"): lambda m: ssl_toolkit(m, 8, "hubert-base-layernorm"),
    ("opensmile", "toolkit"): lambda m: audio_stage_toolkit("opensmile"),
    ("opensmile", "bare"): opensmile_bare,
    ("melspec", "toolkit"): lambda m: audio_stage_toolkit("melspec"),
    ("melspec", "bare"): melspec_bare,
    ("faces", "toolkit"): faces_toolkit,
    ("faces", "bare"): faces_bare,
    ("video_encoder", "toolkit"): encoder_toolkit,
    ("video_encoder", "bare"): encoder_bare,
}


# --- one measurement in a child process --------------------------------------------------------


def peak_rss() -> int:
    """This process's peak RSS in bytes (VmHWM: unlike ru_maxrss, not inherited over fork/exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def child(args: argparse.Namespace) -> None:
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    if args.stage in ("ssl_audio", "video_encoder"):  # imported only where the stage needs it (RSS)
        import torch

        torch.set_num_threads(1)
    if args.stage in ("faces", "video_encoder"):
        import cv2

        cv2.setNumThreads(1)
    work = Path(args.work)
    models = json.loads((work / "models.json").read_text())
    tmp = Path(tempfile.mkdtemp(prefix="kebr-bench-"))
    atexit.register(shutil.rmtree, tmp, True)
    if args.stage in AUDIO:
        clips = [long_clip(args.long_minutes)] if args.long_minutes else corpus(args.clips)
        items = {"clips": clips, "tables": audio_tables(clips)}
        short = corpus(1)
        first = {"clips": short, "tables": audio_tables(short)}
        media_s = sum(len(y) for y in clips) / SR
    elif args.stage == "faces":
        items = videos()
        first = items[:1]
        cap = [cv2.VideoCapture(str(v)) for v in items]
        media_s = sum(c.get(cv2.CAP_PROP_FRAME_COUNT) / c.get(cv2.CAP_PROP_FPS) for c in cap)
    else:
        import pyarrow.parquet as pq

        items = pq.read_table(work / "faces.parquet").slice(0, args.video_clips)
        first = items.slice(0, 1)
        media_s = sum(items.column("num_frames").to_pylist()) / 10
    if args.contender == SAME_PROCESS:
        return same_process(args.stage, models, items, first, tmp, media_s)
    run = CONTENDERS[(args.stage, args.contender)](models)
    run(first, tmp)  # warm-up: model load, filter banks, config copy
    sampler = RssSampler()
    c0, w0 = time.process_time(), time.perf_counter()
    n = run(items, tmp)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    print(json.dumps({"clips": n, "media_s": media_s, "cpu": cpu, "wall": wall, "rss": peak_rss(),
                      "grown": sampler.stop()}))


def same_process(stage: str, models: dict, items, first, tmp: Path, media_s: float) -> None:
    """Toolkit and bare alternating in one process on the same inputs: the overhead without the process-to-process
    spread of separate children (memory layout, page faults of large activations). At least 4 rounds each, more
    for fast stages (about 2 CPU-s per contender in all, at most 100 rounds)."""
    runs = {c: CONTENDERS[(stage, c)](models) for c in ("toolkit", "bare")}
    for run in runs.values():
        run(first, tmp)
    c0 = time.process_time()
    runs["bare"](items, tmp)
    rounds = min(100, max(4, math.ceil(2.0 / max(time.process_time() - c0, 1e-3))))
    cpu: dict[str, list[float]] = {"toolkit": [], "bare": []}
    for r in range(rounds):
        for c in (("toolkit", "bare") if r % 2 == 0 else ("bare", "toolkit")):
            c0 = time.process_time()
            n = runs[c](items, tmp)
            cpu[c].append(time.process_time() - c0)
    print(json.dumps({"clips": n, "media_s": media_s, "cpu_toolkit": cpu["toolkit"], "cpu_bare": cpu["bare"]}))


class RssSampler:
    """Samples this process's RSS every 5 ms from a thread; `stop` returns the peak minus the RSS at the start
    (the timed call's own working memory, without the harness's copies of its inputs)."""

    def __init__(self) -> None:
        import threading

        import psutil

        self.proc = psutil.Process()
        self.base = self.peak = self.proc.memory_info().rss
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.done.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.005)

    def stop(self) -> int:
        self.done.set()
        self.thread.join()
        return max(self.peak, self.proc.memory_info().rss) - self.base


def measure(work: Path, stage: str, contender: str, args: argparse.Namespace, long_minutes: float = 0) -> dict:
    cmd = [sys.executable, __file__, "--child", "--work", str(work), "--stage", stage, "--contender", contender,
           "--clips", str(args.clips), "--video-clips", str(args.video_clips), "--long-minutes", str(long_minutes)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    m = json.loads(proc.stdout.strip().splitlines()[-1])
    print(stage, f"{contender} (long)" if long_minutes else contender, m, flush=True)
    return m


def replay(log: Path) -> dict[tuple[str, str], list[dict]]:
    """The comparison and batching measurements back from this script's printed lines
    (`stage contender {...}`); the long-clip lines are left out."""
    import ast

    results: dict[tuple[str, str], list[dict]] = {}
    for line in log.read_text().splitlines():
        stage, _, rest = line.partition(" ")
        if stage in STAGES and "{" in rest and "(long)" not in rest:
            contender, m = rest[:rest.index("{")].strip(), ast.literal_eval(rest[rest.index("{"):])
            if m["clips"] > 1 or m["media_s"] < 600:  # logs from before the (long) tag
                results.setdefault((stage, contender), []).append(m)
    return results


# --- FLOPs for the GPU projection ------------------------------------------------------------------


def forward_flops(models: dict) -> dict[str, float]:
    """Forward FLOPs (matrix products and convolutions) per 7.8-s clip: HuBERT-base on 7.8 s at 16 kHz;
    VideoMAE-base on 78 crops at 10 fps = 5 windows of 16 frames (the last padded)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import AutoModel, VideoMAEModel

    torch.set_num_threads(os.cpu_count() or 1)
    out = {}
    net = AutoModel.from_pretrained(models["hubert-base-shape"], local_files_only=True).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as fc:  # inference_mode breaks weight norm here
        net(torch.zeros(1, int(VOXCELEB2_MEAN_S * 16000)))
    out["ssl_audio"] = fc.get_total_flops()
    video = VideoMAEModel.from_pretrained(models["videomae"], local_files_only=True).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as fc:  # inference_mode breaks weight norm here
        video(pixel_values=torch.zeros(1, 16, 3, 224, 224))
    out["video_encoder"] = fc.get_total_flops() * math.ceil(VOXCELEB2_MEAN_S * 10 / 16)
    return out


# --- the report --------------------------------------------------------------------------------


def summary(ms: list[dict]) -> dict[str, float]:
    return {"cpu": statistics.median(m["cpu"] / m["clips"] for m in ms),
            "wall": statistics.median(m["wall"] / m["clips"] for m in ms),
            "media": ms[0]["media_s"] / ms[0]["clips"], "rss": max(m["rss"] for m in ms), "clips": ms[0]["clips"]}


def report(results: dict, flops: dict[str, float], args: argparse.Namespace) -> str:
    rows = []
    for stage in [s for s in STAGES if (s, "toolkit") in results]:
        t, b = summary(results[(stage, "toolkit")]), summary(results[(stage, "bare")])
        pairs = list(zip(results[(stage, "toolkit")], results[(stage, "bare")]))
        cpu_r = [x["cpu"] / y["cpu"] for x, y in pairs]
        wall_r = [x["wall"] / y["wall"] for x, y in pairs]
        same = "-"
        if (stage, SAME_PROCESS) in results:
            m = results[(stage, SAME_PROCESS)][0]
            r = [x / y for x, y in zip(m["cpu_toolkit"], m["cpu_bare"])]
            same = (f"**{statistics.median(m['cpu_toolkit']) / statistics.median(m['cpu_bare']):.3f}** "
                    f"({min(r):.2f}-{max(r):.2f})")
        rows.append(f"| {stage} | {t['clips']} | {t['media']:.1f} | {1 / t['cpu']:.3f} | {t['media'] / t['cpu']:.2f} | "
                    f"{b['media'] / b['cpu']:.2f} | {t['cpu'] / b['cpu']:.3f} ({min(cpu_r):.2f}-{max(cpu_r):.2f}) | "
                    f"{same} | {t['wall'] / b['wall']:.3f} ({min(wall_r):.2f}-{max(wall_r):.2f}) | "
                    f"{t['rss'] / 2**20:.0f} | {b['rss'] / 2**20:.0f} |")
    lines = [f"One core, one thread per child process, one untimed warm-up clip per process, median of {args.repeats} "
             "interleaved repeats (order alternating). Audio: synthetic voiced clips of 3-8 s at 22,050 Hz in FLAC; "
             "video: the 6 demo clips with a face (192×192, 25 fps); video_encoder on the first "
             f"{args.video_clips} clips' faces rows. Media s/CPU-s = seconds of audio or video per CPU-second (per "
             "core). Ratio = toolkit CPU (or wall) seconds per clip / bare (1.00 = no overhead; the range is over the "
             "repeats' pairs). Same-process ratio: one more child runs both, alternating on the same inputs (at least "
             "4 rounds each, more for fast stages: about 2 CPU-s per contender; medians, range over the rounds): the overhead without the spread between separate processes, "
             "the figure checked against the target. Peak RSS: the measuring child's VmHWM (one worker: model, "
             "imports and all).", "",
             "| stage | clips | s per clip | toolkit clips/CPU-s | toolkit media-s/CPU-s | bare media-s/CPU-s | "
             "CPU ratio, separate processes (range) | CPU ratio, same process (range) | wall ratio (range) | "
             "toolkit peak RSS MiB | bare peak RSS MiB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|", *rows]
    if ("ssl_audio", "layernorm batch 1") in results:
        one, eight = summary(results[("ssl_audio", "layernorm batch 1")]), summary(results[("ssl_audio",
                                                                                            "layernorm batch 8")])
        lines += ["", "Batching (ssl_audio, HuBERT-base size with hubert-large's layer-normalised front end, the kind "
                  "the stage pads into batches; group-normalised models batch equal lengths only, so `batch_size` "
                  "changes nothing for hubert-base on clips of different lengths):", "",
                  "| batch_size | CPU-s per clip | wall-s per clip | peak RSS MiB |", "|---:|---:|---:|---:|",
                  f"| 1 | {one['cpu']:.2f} | {one['wall']:.2f} | {one['rss'] / 2**20:.0f} |",
                  f"| 8 | {eight['cpu']:.2f} | {eight['wall']:.2f} | {eight['rss'] / 2**20:.0f} |", "",
                  f"Gain of batch 8 over 1 on one CPU core: {one['cpu'] / eight['cpu']:.2f}× (CPU)"
                  + (": padding clips of 3-8 s to the batch's longest costs more than batching saves on a CPU core, "
                     "so keep `ssl_audio.batch_size = 1` there" if one["cpu"] < eight["cpu"] else "")
                  + ". On a GPU, batching is what fills the device; the stage's length sorting keeps padding small."]
    if flops:
        lines += ["", f"GPU projection (**not measured**: no GPU here). Forward FLOPs per {VOXCELEB2_MEAN_S}-s clip "
                  f"counted with torch.utils.flop_counter, divided by an assumed {ASSUMED_TFLOPS:.0f} TFLOP/s achieved "
                  "in fp16 (an A100's 312 TFLOP/s dense peak at ~30%); decoding, resampling and JPEG work stay on the "
                  "CPU and are the toolkit column's non-model share:", "",
                  "| stage | model | GFLOPs per clip | GPU ms per clip (projected) | CPU-s per clip measured here |",
                  "|---|---|---:|---:|---:|"]
        names = {"ssl_audio": "HuBERT-base (12 × 768)", "video_encoder": "VideoMAE-base (5 windows of 16 × 224²)"}
        for stage, f in flops.items():
            if (stage, "toolkit") in results:
                t = summary(results[(stage, "toolkit")])
                cpu = f"{t['cpu'] * VOXCELEB2_MEAN_S / t['media']:.1f}"
            else:
                cpu = "-"
            lines.append(f"| {stage} | {names[stage]} | {f / 1e9:.0f} | {f / (ASSUMED_TFLOPS * 1e12) * 1e3:.1f} | "
                         f"{cpu} |")
    lines += ["", f"Machine: {os.cpu_count()} cores shared with other jobs, so wall ratios are noisier than CPU ratios; "
              "the same-process CPU ratio is the overhead figure (target ≤ 1.05). Both sides of an audio row start from the same FLAC "
              "bytes (the bare loop decodes them with soundfile), as the faces row's both sides decode the same videos."]
    return "\n".join(lines)


def long_report(long: dict[str, dict], minutes: float) -> str:
    lines = [f"One {minutes:g}-minute clip (22,050 Hz FLAC, a 3-s voiced pattern repeated) through the stage's run_shard, "
             "one core, after a warm-up clip. The audio stage skips such a clip as `too_long` unless "
             "`audio.max_duration_s` (600) is raised. Growth = the worker's peak RSS during the call minus its RSS "
             "before (the stage's working memory: decoded samples, features, library buffers); peak = the process's "
             "VmHWM, which also holds the benchmark's own copies of the clip (samples, int16, FLAC bytes).", "",
             "| stage | status | CPU s | audio-s/CPU-s | RSS growth MiB | process peak RSS MiB |",
             "|---|---|---:|---:|---:|---:|"]
    for stage, m in long.items():
        lines.append(f"| {stage} | ok ({m['clips']} row) | {m['cpu']:.1f} | "
                     f"{m['media_s'] / m['cpu']:.1f} | {m['grown'] / 2**20:.0f} | {m['rss'] / 2**20:.0f} |")
    lines += ["", "ssl_audio's 30-minute case is in the test suite (tests/test_ssl_audio.py, a tiny model): 30-s chunks, "
              "so the model never sees the whole clip."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=int, default=6, help="synthetic audio clips per measurement")
    ap.add_argument("--video-clips", type=int, default=2, help="clips through VideoMAE-base per measurement")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-repeats", type=int, default=2, help="repeats of the ssl_audio batching comparison")
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--long-minutes", type=float, default=30.0, help="0 skips the long-clip rows")
    ap.add_argument("--long-only", action="store_true", help="only the long-clip rows (their own section)")
    ap.add_argument("--replay", type=Path, help="rewrite the comparison section from a saved log of this script's "
                                                 "output (FLOPs recounted; with the --repeats it ran with)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    ap.add_argument("--stage", help=argparse.SUPPRESS)
    ap.add_argument("--contender", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    from common import write_section

    stages = args.stages.split(",")
    work = Path(tempfile.mkdtemp(prefix="kebr-bench-encoders-"))  # the saved models: about 1.1 GB
    atexit.register(shutil.rmtree, work, True)
    models = save_models(work)
    (work / "models.json").write_text(json.dumps(models))
    if {"faces", "video_encoder"} & set(stages) and not (args.long_only or args.replay):
        import pyarrow.parquet as pq

        pq.write_table(faces_table(videos(), work), work / "faces.parquet")
    if not args.long_only:
        if args.replay:
            results = replay(args.replay)
        else:
            results = {}
            for r in range(args.repeats):
                for stage in stages:
                    for contender in (("toolkit", "bare") if r % 2 == 0 else ("bare", "toolkit")):
                        results.setdefault((stage, contender), []).append(measure(work, stage, contender, args))
            for stage in stages:
                results[(stage, SAME_PROCESS)] = [measure(work, stage, SAME_PROCESS, args)]
            if "ssl_audio" in stages:
                for r in range(args.batch_repeats):
                    for b in ((1, 8) if r % 2 == 0 else (8, 1)):
                        name = f"layernorm batch {b}"
                        results.setdefault(("ssl_audio", name), []).append(measure(work, "ssl_audio", name, args))
        text = report(results, forward_flops(models), args)
        write_section("encoders", "Encoder and baseline stages vs the bare library calls, and a GPU projection", text)
    if args.long_minutes and not args.replay:
        long = {s: measure(work, s, "toolkit", args, args.long_minutes) for s in ("opensmile", "melspec") if s in stages}
        text = long_report(long, args.long_minutes)
        write_section("encoders-long", "Encoder and baseline stages: a 30-minute clip", text, script="encoders.py")

if __name__ == "__main__":
    main()
