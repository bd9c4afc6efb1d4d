"""Issue #27 point 9: what a command prints is the toolkit's own output. No transformers "Loading weights"
bar, no gRPC "Got goaway" line from the Google fake's teardown, and no summary line broken at the
console's width when the output goes to a log instead of a terminal."""

import csv
import os
import subprocess
import sys
from pathlib import Path

from helpers import ROOT, run_cli

GOOGLE_CYCLES = """
import sys
import numpy as np
sys.path.insert(0, sys.argv[1])
from fake_google_speech import FakeSpeech, serve, stop
from kebr_data.asr_engines.google_speech import GoogleSettings, transcribe_google
from kebr_data.media.flac import encode_flac
t = np.arange(22050) / 22050
flac = encode_flac((0.3 * np.sin(2 * np.pi * 220 * t) * 32767).astype(np.int16), 22050)
for _ in range(5):
    server, address = serve(FakeSpeech())
    cfg = GoogleSettings(google_endpoint=address, google_language_code="en-US", google_model="",
                         google_retry_initial_s=0.05, google_retry_deadline_s=10)
    assert transcribe_google(flac, 22050, 1.0, cfg).text == "hello from the fake service"
    stop(server, address)
"""


def test_loading_the_text_encoder_prints_no_transformers_bar(tiny_bert, capfd):
    from transformers.utils import logging as hf_logging

    from kebr_model.training.train import load_encoder

    assert hf_logging.is_progress_bar_enabled()
    load_encoder(tiny_bert)
    assert "Loading weights" not in capfd.readouterr().err
    assert hf_logging.is_progress_bar_enabled()  # switched off for the load only, not for the process


def test_the_google_fake_stops_without_a_goaway_line(tmp_path):
    """Stopped under the engine's open channel, the server's GOAWAY made gRPC log "Got goaway" in about
    half of the stops (5 stops: 3 such lines). The fake closes the engine's channel first (`stop`), and the
    suite runs gRPC at verbosity ERROR (conftest), as a process started from it does here."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", GOOGLE_CYCLES, str(ROOT / "tests")], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "goaway" not in proc.stderr.lower(), proc.stderr


def test_a_piped_summary_line_is_never_wrapped(tmp_path):
    """`kebr-data status` into a pipe (a log): the title line naming a 150-character folder stays one line
    (rich wrapped it at 120 columns); tables still fit 120 columns."""
    src = tmp_path / "MOSI"
    (src / "Raw/vid").mkdir(parents=True)
    with open(src / "label.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["video_id", "clip_id", "text", "label", "annotation", "mode"])
        (src / "Raw/vid/0.mp4").write_bytes(b"")
        w.writerow(["vid", 0, "I love this movie", "0.5", "Neutral", "train"])
    out = Path(tmp_path, *["a-long-folder-name-" + "x" * 20] * 4, "features")
    run_cli("extract", "--src", str(src), "--out", str(out), "--stages", "index", check=True)
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    proc = subprocess.run([sys.executable, "-m", "kebr_data", "status", "--out", str(out)], capture_output=True,
                          text=True, env={**env, "PYTHONPATH": str(ROOT)}, timeout=120, check=True)
    assert len(str(out)) > 150
    assert any(line.startswith(f"{out}: ") for line in proc.stdout.splitlines()), proc.stdout
    assert max(len(line) for line in proc.stdout.splitlines() if "┃" in line or "━" in line) <= 120
