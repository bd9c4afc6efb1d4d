"""Test helpers: paths to the bundled demo, media factories built with the real ffmpeg, a CLI runner."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "demo" / "voxceleb"
OPENFACE_FIXTURES = ROOT / "tests" / "fixtures" / "openface"  # real OpenFace 2.2 output; provenance in its README


def readme_commands(marker: str, path: Path = ROOT / "README.md") -> list[str]:
    """The command lines of a README (or script) block after the comment line starting with `marker`, up to
    the next blank line or code fence, each without its trailing comment."""
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(marker)) + 1
    commands = []
    for line in lines[start:]:
        if not line.strip() or line.startswith("```"):
            break
        if words := shlex.split(line, comments=True):
            commands.append(shlex.join(words))
    return commands


def demo_clip(i: int = 0) -> Path:
    """One of the bundled good demo clips (video + speech)."""
    return sorted(p for p in DEMO.rglob("*.mp4") if "id00003" not in str(p))[i]


def write_wav(path: Path, seconds: float, sr: int = 16000, freq: float = 220.0, amp: float = 0.3) -> Path:
    """A sine tone WAV (amp 0 = digital silence)."""
    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr, subtype="PCM_16")
    return path


def make_video(ffmpeg: str, path: Path, seconds: float = 1.0, audio: bool = True) -> Path:
    """A tiny real MP4 from ffmpeg's test sources (with a tone unless audio=False)."""
    args = [ffmpeg, "-y", "-loglevel", "error", "-f", "lavfi", "-i", f"testsrc=size=64x64:rate=10:duration={seconds}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=16000:duration={seconds}", "-c:a", "aac"]
    args += ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-shortest", str(path)]
    subprocess.run(args, check=True)
    return path


def run_cli(*args: str, check: bool = False, env: dict | None = None, timeout: float = 300,
            models: bool = False) -> subprocess.CompletedProcess:
    """Run `kebr-data ARGS` in a real subprocess (what users do), its console 250 columns wide so that
    messages naming long temporary paths are not wrapped mid-phrase; forked from an interpreter that has
    imported the CLI already (cli_zygote.py), so a run costs its own work, not Python's start. `models=True`:
    a run whose main process checks a model stage's model (ssl_audio, video_encoder) forks from one that has
    imported torch and transformers too."""
    import cli_zygote

    preload = cli_zygote.MODELS if models else ()
    proc = cli_zygote.run(list(args), {**os.environ, "COLUMNS": "250", **(env or {})}, timeout, start=env is None,
                          preload=preload)
    if check and proc.returncode != 0:
        raise AssertionError(f"kebr-data {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def start_cli(*args: str, models: bool = False):  # -> cli_zygote.Forked
    """`kebr-data ARGS` started as run_cli starts it (a process of its own, forked from a pre-imported
    interpreter) and returned while it runs, with the pid, poll, wait, kill and communicate of a Popen."""
    import cli_zygote

    return cli_zygote.start(list(args), {**os.environ, "COLUMNS": "250"}, cli_zygote.MODELS if models else ())


def copy_demo(dest: Path) -> Path:
    shutil.copytree(DEMO, dest)
    return dest


def shard_files(out: Path) -> dict[str, bytes]:
    """Every committed-looking stage table under `out`, by relative path: for byte-for-byte comparisons."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("shard-*.parquet"))}


def extract_demo(out: Path, stages: str, *extra: str, **kwargs) -> subprocess.CompletedProcess:
    """`kebr-data extract` of the bundled demo with pipelines/demo.toml and the given stages."""
    return run_cli("extract", "--src", str(DEMO), "--out", str(out), "--config", str(ROOT / "pipelines/demo.toml"),
                   "--stages", stages, *extra, **kwargs)


def section_overrides(section: str, settings: dict) -> list[str]:
    """`--set`-style overrides of one config section (strings quoted as TOML strings)."""
    return [f"{section}.{k}={v!r}" if isinstance(v, str) else f"{section}.{k}={v}" for k, v in settings.items()]


def audio_shard(tmp_path: Path, arrays: list):  # -> kebr_data.stages.base.ShardContext
    """A shard context of plan and audio rows for clips c0, c1, ... from (samples, rate) pairs (None: a clip
    without an audio track), as a stage reading the audio stage's FLAC receives it."""
    import pyarrow as pa

    from kebr_data.media.flac import encode_flac
    from kebr_data.schema import AUDIO, PLAN
    from kebr_data.stages.base import ShardContext

    plan = [{"clip_id": f"c{i}", "status": "ok", "source": "folder"} for i in range(len(arrays))]
    audio = [({"clip_id": f"c{i}", "status": "skipped", "error": "no_audio_track"} if y is None else
              {"clip_id": f"c{i}", "status": "ok", "sample_rate": sr, "num_samples": len(y), "duration_s": len(y) / sr,
               "flac": encode_flac((y * 32767).astype(np.int16), sr)}) for i, (y, sr) in enumerate(arrays)]
    return ShardContext(0, {"plan": pa.Table.from_pylist(plan, schema=PLAN),
                            "audio": pa.Table.from_pylist(audio, schema=AUDIO)}, tmp_path)


def kill_mid_shard(src: Path, out: Path, args: list[str], stage: str = "audio", target: str = "worker",
                   timeout: float = 120, models: bool = False, clips_done: int = 2) -> tuple[int, int]:
    """Start `kebr-data extract` (start_cli), SIGKILL its worker (`target="main"`: the whole run) once a shard of
    `stage` other than the first has `clips_done` clips logged ok (0: as soon as it started), before its commit.
    Returns (interrupted shard, worker pid)."""
    import re
    import signal
    import time

    proc = start_cli("extract", "--src", str(src), "--out", str(out), *args, models=models)
    deadline = time.time() + timeout
    try:
        while time.time() < deadline and proc.poll() is None:
            logs = out / "_logs" / stage
            for log in sorted(logs.glob("shard-*.log")) if logs.exists() else []:
                text = log.read_text()
                shard = int(log.stem.split("-")[1])
                m = re.search(r"pid (\d+)", text)
                if m and text.count(" ok ") >= clips_done and "done:" not in text and shard > 0:
                    worker = int(m.group(1))
                    os.kill(worker if target == "worker" else proc.pid, signal.SIGKILL)
                    proc.wait(timeout=60)
                    return shard, worker
            time.sleep(0.005)
        raise AssertionError("the run finished before it could be interrupted")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def kill_before_commit(src: Path, folder: Path, args: list[str], stage: str = "audio", attempts: int = 5,
                       **kill) -> tuple[Path, int, int]:
    """`kill_mid_shard` into a fresh `folder/outN` until the kill lands before the shard's commit (a shard may
    commit between the poll and the signal). Returns (output folder, interrupted shard, worker pid)."""
    for attempt in range(attempts):
        out = folder / f"out{attempt}"
        shard, worker = kill_mid_shard(src, out, args, stage, **kill)
        if not (out / f"_done/{stage}/shard-{shard:05d}.json").exists():
            return out, shard, worker
    raise AssertionError(f"could not interrupt a {stage} shard before its commit in {attempts} attempts")

def tiny_text_encoder(folder: Path) -> Path:
    """A random-initialised 2-layer, 32-wide BERT with the bundled MiniLM's real WordPiece tokenizer,
    saved as a local Hugging Face folder: trainer tests that check plumbing rather than what a real
    BERT learns use it as `encoder` (a 6-layer 384-wide forward and backward pass per step is most of
    their time)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from kebr_model.training.train import default_encoder

    if (folder / "config.json").is_file():
        return folder
    tokenizer = AutoTokenizer.from_pretrained(default_encoder(), local_files_only=True)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=128))
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(folder)
    model.save_pretrained(folder)
    return folder


def tiny_audio_model(kind: str, dest: Path, attention_mask: bool, **config) -> Path:
    """A random-initialised 2-layer HuBERT (layer-normalised front end, as hubert-large), wav2vec2 (group
    norm) or data2vec-audio model with the standard 7-layer conv front end (stride 320), saved with its
    feature extractor in `dest`; `config` overrides the model's config (e.g. layerdrop=0.0)."""
    import torch
    import transformers

    torch.manual_seed(0)
    common = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                  conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, **config)
    if kind == "hubert":
        model = transformers.HubertModel(transformers.HubertConfig(**common, feat_extract_norm="layer",
                                                                   do_stable_layer_norm=True))
    elif kind == "wav2vec2":
        model = transformers.Wav2Vec2Model(transformers.Wav2Vec2Config(**common))
    else:
        model = transformers.Data2VecAudioModel(transformers.Data2VecAudioConfig(
            **{**common, "num_conv_pos_embeddings": 5, "num_conv_pos_embedding_groups": 4}))
    model.eval().save_pretrained(dest)
    transformers.Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                                          return_attention_mask=attention_mask).save_pretrained(dest)
    return dest


def rss_growth(fn, *args, **kwargs) -> tuple[object, int]:
    """Call fn(*args, **kwargs) while a thread samples this process's RSS every 5 ms; return (its result,
    the peak RSS during the call minus the RSS before it, in bytes): for "this input does not blow memory"."""
    import threading
    import time

    import psutil

    proc, peak, stop = psutil.Process(), [0], threading.Event()
    base = proc.memory_info().rss

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.005)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        result = fn(*args, **kwargs)
    finally:
        stop.set()
        thread.join()
    return result, max(peak[0], proc.memory_info().rss) - base


def train_cli(*args: object):  # -> click.testing.Result
    """`kebr-train ARGS` in this process (torch is imported already: no interpreter start and import of ~3 CPU-s);
    an exception escapes as itself, so a traceback fails the test. For tests of what a command does, not of
    how its process starts or ends (those run `python -m kebr_model.cli`)."""
    from click.testing import CliRunner

    from kebr_model.cli import main

    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
