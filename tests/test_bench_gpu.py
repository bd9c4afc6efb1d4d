"""bench/gpu.py before a GPU exists: `--cpu-check` runs its code paths on the CPU at tiny sizes."""

from __future__ import annotations

import math
import re
import subprocess
import sys

import pytest
from helpers import ROOT

TURBO = "large-v3-turbo shape, random (shrunk)"
ASR_ROWS = {(model, clip, windows, batch) for model, clip in (("tiny.en", "4 s"), (TURBO, "4 s"), (TURBO, "7.8 s"))
            for windows in ("one clip a window", "packed 30 s") for batch in ("1", "2")}
ENCODER_ROWS = {(stage, batch) for stage in ("ssl_audio (HuBERT-base)", "video_encoder (VideoMAE-base)")
                for batch in ("1", "2")}


@pytest.mark.slow
def test_the_cpu_check_writes_every_row_with_finite_positive_numbers(tmp_path):
    """~13 CPU-s (~20 s wall on two loaded cores): tiny.en, the shrunk turbo shape converted as on the GPU,
    and tiny HuBERT and VideoMAE, each row once; the table goes to --out, RESULTS.md is left alone."""
    results = (ROOT / "bench/RESULTS.md").read_bytes()
    out = tmp_path / "gpu-check.md"
    proc = subprocess.run([sys.executable, str(ROOT / "bench/gpu.py"), "--cpu-check", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (ROOT / "bench/RESULTS.md").read_bytes() == results
    text = out.read_text()
    assert text.startswith("CPU (--cpu-check: a check, not a measurement)")
    asr, encoders = {}, {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 8 and re.fullmatch(r"[\d.]+", cells[4]):
            asr[tuple(cells[:4])] = [float(c) for c in cells[4:]]
        elif len(cells) == 4 and re.fullmatch(r"[\d.]+", cells[2]):
            encoders[tuple(cells[:2])] = [float(c) for c in cells[2:]]
    assert set(asr) == ASR_ROWS and set(encoders) == ENCODER_ROWS
    for numbers in [*asr.values(), *encoders.values()]:
        assert all(math.isfinite(x) and x > 0 for x in numbers), numbers
    for (model, clip, _, _), numbers in asr.items():  # the random weights decode 3 tokens per second of speech,
        if model == TURBO:  # not the half of it that faster-whisper's max_new_tokens alone gives
            assert numbers[2] == pytest.approx(3 * float(clip.split()[0]), abs=0.5)


def test_the_cpu_check_without_out_refuses_in_one_line():
    proc = subprocess.run([sys.executable, str(ROOT / "bench/gpu.py"), "--cpu-check"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "bench/gpu.py --cpu-check writes its table to a file, never RESULTS.md: add --out PATH"]


def test_a_gpu_that_torch_cannot_use_is_refused_before_any_row(monkeypatch, capsys):
    """CTranslate2 sees a GPU (simulated: there is none here) but torch is a CPU-only build: one line, exit 2,
    before the first ASR row would fail on torch.cuda."""
    import ctranslate2
    import torch

    if torch.cuda.is_available():
        pytest.skip("torch can use a GPU here")
    sys.path.insert(0, str(ROOT / "bench"))
    import gpu

    monkeypatch.setattr(ctranslate2, "get_cuda_device_count", lambda: 1)
    with pytest.raises(SystemExit) as exc:
        gpu.refuse_without_gpu()
    assert exc.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        f"bench/gpu.py needs a CUDA build of torch (torch {torch.__version__} cannot use the GPU): install one from "
        "https://pytorch.org"]
