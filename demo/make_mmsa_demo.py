"""Regenerate the labelled demo in MMSA layout (demo/mmsa/Raw/<video_id>/<clip_id>.mp4 + label.csv).

Eight tiny clips with utterance labels in [-3, 3] and MMSA's train/valid/test `mode` column, so that
fine-tuning and evaluation can be tried on this machine: espeak-ng speaks each sentence over the
same moving face as demo/voxceleb (make_demo.py's frames and encoder). The labels are set by hand to
the sentence's sentiment; they are a demo, not an annotation.

Needs Debian's espeak-ng, scikit-image and ffmpeg (PATH or imageio-ffmpeg):
    python demo/make_mmsa_demo.py
"""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_demo import FPS, encode, frames  # noqa: E402

from kebr_data.media.ffmpeg import find_ffmpeg  # noqa: E402

HERE = Path(__file__).resolve().parent
OUT = HERE / "mmsa"
# video_id, clip_id, voice, sentence, label, mode
CLIPS = [
    ("dEmOmOvIe01", "1", "en-us", "I love this wonderful movie, it made me so happy.", 2.6, "train"),
    ("dEmOmOvIe01", "2", "en-us", "This is a terrible and awful film, I feel sad.", -2.4, "train"),
    ("dEmOmOvIe02", "1", "en-gb", "The music was great and the acting was excellent.", 2.2, "train"),
    ("dEmOmOvIe02", "2", "en-gb", "I hate long scenes, they are so annoying.", -2.0, "train"),
    ("dEmOmOvIe03", "1", "en-us", "The story was good but a little slow.", 0.8, "valid"),
    ("dEmOmOvIe03", "2", "en-us", "The acting was bad and the ending was boring.", -1.6, "valid"),
    ("dEmOmOvIe04", "1", "en-gb", "What a beautiful and amazing surprise, thank you.", 2.4, "test"),
    ("dEmOmOvIe04", "2", "en-gb", "The plot was dull and the characters were weak.", -1.8, "test"),
]


def annotation(label: float) -> str:
    return "Positive" if label > 0 else "Negative" if label < 0 else "Neutral"


def main() -> None:
    ffmpeg = find_ffmpeg()
    if shutil.which("espeak-ng") is None:
        raise SystemExit("espeak-ng is needed: apt-get install espeak-ng")
    shutil.rmtree(OUT, ignore_errors=True)
    with tempfile.TemporaryDirectory() as tmp:
        for i, (video, clip, voice, sentence, _, _) in enumerate(CLIPS):
            wav = Path(tmp) / f"{i}.wav"
            subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", str(wav), sentence], check=True)
            seconds = sf.info(str(wav)).duration + 0.2
            encode(ffmpeg, frames(int(seconds * FPS), phase=0.7 * i), wav, OUT / "Raw" / video / f"{clip}.mp4")
    with open(OUT / "label.csv", "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["video_id", "clip_id", "text", "label", "annotation", "mode"])
        for video, clip, _, sentence, label, mode in CLIPS:
            w.writerow([video, clip, sentence, f"{label:.1f}", annotation(label), mode])
    total = sum(p.stat().st_size for p in OUT.rglob("*.mp4"))
    print(f"wrote {len(CLIPS)} labelled clips under {OUT} ({total / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
