"""Regenerate the bundled demo clips in VoxCeleb layout (demo/voxceleb/mp4/...).

Speech is espeak-ng saying the known sentences of `sentences.tsv` (clear sentiment words, one
neutral sentence); the picture is scikit-image's astronaut moving in a 192x192 window. Two
deliberately bad clips are added: one video without an audio track and one truncated MP4.

Needs Debian's espeak-ng, scikit-image and ffmpeg (PATH or imageio-ffmpeg):
    python demo/make_demo.py
"""

from __future__ import annotations

import csv
import math
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
from skimage import data

from kebr_data.media.ffmpeg import find_ffmpeg

HERE = Path(__file__).resolve().parent
OUT = HERE / "voxceleb" / "mp4"
SIZE = 192
FPS = 25
NO_AUDIO_ID = "id00003/kEbRdEmOe05/00001"
CORRUPT_ID = "id00003/kEbRdEmOe05/00002"


def frames(n: int, phase: float) -> np.ndarray:
    """`n` RGB frames of a window gliding over the astronaut's face (face about 95 px)."""
    img = data.astronaut()
    out = np.empty((n, SIZE, SIZE, 3), dtype=np.uint8)
    for i in range(n):
        t = i / FPS
        x = int(130 + 18 * math.sin(2 * math.pi * 0.4 * t + phase))
        y = int(20 + 12 * math.sin(2 * math.pi * 0.3 * t + phase))
        out[i] = img[y:y + SIZE, x:x + SIZE]
    return out


def encode(ffmpeg: str, video: np.ndarray, wav: Path | None, dest: Path) -> None:
    """Encode raw frames (and optionally a WAV) into a small H.264/AAC MP4."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    args = [ffmpeg, "-y", "-hide_banner", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
            "-s", f"{SIZE}x{SIZE}", "-r", str(FPS), "-i", "pipe:0"]
    if wav is not None:
        args += ["-i", str(wav), "-c:a", "aac", "-b:a", "32k", "-ar", "22050", "-ac", "1", "-shortest"]
    args += ["-c:v", "libx264", "-preset", "veryslow", "-crf", "34", "-pix_fmt", "yuv420p", "-threads", "1",
             "-map_metadata", "-1", "-fflags", "+bitexact", str(dest)]
    subprocess.run(args, input=video.tobytes(), check=True)


def main() -> None:
    ffmpeg = find_ffmpeg()
    if shutil.which("espeak-ng") is None:
        raise SystemExit("espeak-ng is needed: apt-get install espeak-ng")
    shutil.rmtree(HERE / "voxceleb", ignore_errors=True)
    with open(HERE / "sentences.tsv", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    with tempfile.TemporaryDirectory() as tmp:
        for i, r in enumerate(rows):
            wav = Path(tmp) / f"{i}.wav"
            subprocess.run(["espeak-ng", "-v", r["voice"], "-s", "140", "-w", str(wav), r["sentence"]], check=True)
            seconds = sf.info(str(wav)).duration + 0.3
            encode(ffmpeg, frames(int(seconds * FPS), phase=i), wav, OUT / f"{r['clip_id']}.mp4")
        encode(ffmpeg, frames(2 * FPS, phase=7.0), None, OUT / f"{NO_AUDIO_ID}.mp4")
        good = (OUT / f"{rows[0]['clip_id']}.mp4").read_bytes()
        (OUT / f"{CORRUPT_ID}.mp4").write_bytes(good[: len(good) // 3])
    total = sum(p.stat().st_size for p in OUT.rglob("*.mp4"))
    print(f"wrote {len(rows) + 2} clips under {OUT} ({total / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
