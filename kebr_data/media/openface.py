"""Running OpenFace 2.2's `FeatureExtraction`: which landmark model it can load, a fingerprint of
the binary and its models, a probe before any work, and batch runs with per-clip attribution.

FeatureExtraction loads its models at each invocation (0.2-0.75 CPU-s) and accepts several `-f`
inputs, which it opens in order, printing `Attempting to read from file: ...` before each. A
batch therefore costs one model load, and that line tells which clip a crash, a hang or an
unopenable file belongs to: the clips before it are complete, the clips after it are run again
in a new invocation. Every child gets the parent-death signal, so a killed run leaves no
OpenFace behind writing into the shard's temp folder. OpenFace's cost grows with the frames it
tracks: `budget_input` cuts a clip to its first `visual.max_frames` frames (losslessly) and
re-encodes one above `visual.max_fps` before it starts.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ClipError
from .ffmpeg import find_ffmpeg, stderr_tail

#: the flags that make FeatureExtraction write the 709 feature columns
FLAGS = ("-2Dfp", "-3Dfp", "-pdmparams", "-pose", "-aus", "-gaze")
DEFAULT_MODEL = "model/main_ceclm_general.txt"
CLNF_MODEL = "model/main_clnf_general.txt"
#: the CE-CLM patch experts upstream downloads separately (download_models.sh); without them the
#: default model does not load and every clip fails
CECLM_FILES = tuple(f"model/patch_experts/cen_patches_{s}_of.dat" for s in ("0.25", "0.35", "0.50", "1.00"))
START = "Attempting to read from file: "
OPEN_FAILED = "Failed to open the video file at location"
#: OpenFace's own lines worth showing in a message (its stdout also carries progress and INFO lines)
_OWN = re.compile(r"(ERROR|Error:|WARNING|Warning:|Failed|Could not|cannot|No such)", re.IGNORECASE)
_NOISE = re.compile(r"^\[ ?(WARN|INFO|DEBUG)|GStreamer|gst_|OpenCV\(|^\(FeatureExtraction:|^\s*$")
MESSAGE_CHARS = 600


class OpenFaceUnavailable(RuntimeError):
    """FeatureExtraction could not start (models missing, binary broken): the shard aborts and is
    resumed once the installation is fixed, instead of failing every clip."""


@dataclass(frozen=True)
class ModelChoice:
    """The landmark model FeatureExtraction runs with and the arguments that select it."""

    name: str  # ce-clm | clnf | user
    args: tuple[str, ...]
    reason: str = ""


def choose_model(binary: str, user_args: Sequence[str]) -> ModelChoice:
    """CE-CLM (OpenFace's default) when its patch experts sit beside the binary, else the CLNF model
    from the source tree; a `-mloc` in `visual.openface_args` always wins."""
    if "-mloc" in user_args:
        return ModelChoice("user", ())
    root = Path(binary).resolve().parent
    missing = [f for f in CECLM_FILES if not (root / f).is_file()]
    if not missing and (root / DEFAULT_MODEL).is_file():
        return ModelChoice("ce-clm", ())
    if (root / CLNF_MODEL).is_file():
        absent = missing[0] if missing else DEFAULT_MODEL
        return ModelChoice("clnf", ("-mloc", CLNF_MODEL), f"the CE-CLM model files are missing beside {binary} "
                                                          f"({absent}): using the CLNF model, -mloc {CLNF_MODEL}")
    return ModelChoice("ce-clm", (), f"neither the CE-CLM nor the CLNF model is beside {binary}")


def _hash_files(paths: list[Path], digest: hashlib._Hash, root: Path) -> None:
    for path in paths:
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)


@functools.lru_cache(maxsize=4)
def _fingerprint(binary: str, stamp: tuple[int, int]) -> str:
    root = Path(binary).parent
    digest = hashlib.sha256()
    _hash_files([Path(binary)], digest, root)
    for folder in ("model", "AU_predictors"):
        if (root / folder).is_dir():
            _hash_files(sorted(p for p in (root / folder).rglob("*") if p.is_file()), digest, root)
    return digest.hexdigest()[:16]


def fingerprint(binary: str) -> str:
    """sha256 (16 hex) of the binary and every model file beside it: two builds of the same tag
    differ in 699 of 709 columns, so the path alone does not identify the features."""
    path = Path(binary).resolve()
    st = path.stat()
    return _fingerprint(str(path), (st.st_mtime_ns, st.st_size))


def _die_with_parent() -> None:
    """In the child before exec: the kernel kills OpenFace when the worker that started it dies."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def popen(args: list[str], **kwargs) -> subprocess.Popen:
    """Start a child that dies with this process (Linux), pipes for stdout and stderr."""
    preexec = _die_with_parent if sys.platform.startswith("linux") else None
    return subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=preexec, **kwargs)  # noqa: PLW1509 - prctl only, no locks taken


def clean_message(lines: Sequence[str], limit: int = MESSAGE_CHARS) -> str:
    """OpenFace's own error and warning lines, without OpenCV/GStreamer noise or progress, as one line."""
    kept = [ln.strip() for ln in lines if _OWN.search(ln) and not _NOISE.search(ln.strip())]
    text = " | ".join(dict.fromkeys(kept))
    return text[-limit:]


@dataclass
class ClipOutcome:
    """What one input of a batch came to: a CSV path, or an error class and message."""

    csv: Path | None = None
    error: str | None = None
    message: str = ""
    lines: list[str] = field(default_factory=list)

    @property
    def warnings(self) -> str:
        return clean_message(self.lines)


class _Reader(threading.Thread):
    """Collects a pipe's lines and notes when each input starts (stdout) for the watchdog."""

    def __init__(self, pipe, starts: list[float] | None) -> None:
        super().__init__(daemon=True)
        self.pipe, self.starts, self.lines = pipe, starts, []
        self.per_input: list[list[str]] = [[]]  # lines before the first input, then one list per input

    def run(self) -> None:
        for raw in iter(self.pipe.readline, b""):
            line = raw.decode("utf-8", errors="replace").rstrip()
            if self.starts is not None and START in line:
                self.starts.append(time.monotonic())
                self.per_input.append([])
            self.per_input[-1].append(line)
            self.lines.append(line)
        self.pipe.close()


def run_batch(binary: str, inputs: Sequence[Path], out_dir: Path, extra: Sequence[str],
              timeout_s: float) -> list[ClipOutcome]:
    """Run FeatureExtraction on `inputs` (distinct stems) in as few invocations as possible.

    One outcome per input, in order: `csv` set when the input's sequence finished, else `error`
    (`timeout`: the input ran past `timeout_s`, model loading included for the first one;
    `openface_error`: the process died while on it; `no_csv`: OpenFace could not open it or wrote
    nothing). Inputs after a failed one are run again in a new invocation.
    """
    outcomes: list[ClipOutcome] = []
    while len(outcomes) < len(inputs):
        outcomes += _invoke(binary, list(inputs[len(outcomes):]), out_dir, extra, timeout_s)
    return outcomes


def _invoke(binary: str, inputs: list[Path], out_dir: Path, extra: Sequence[str],
            timeout_s: float) -> list[ClipOutcome]:
    """One invocation; outcomes for the inputs it finished or failed on (at least one)."""
    args = [binary]
    for path in inputs:
        args += ["-f", str(path)]
    args += ["-out_dir", str(out_dir), *FLAGS, *extra]
    starts: list[float] = []
    t0 = time.monotonic()
    proc = popen(args)
    out, err = _Reader(proc.stdout, starts), _Reader(proc.stderr, None)
    out.start()
    err.start()
    timed_out = False
    while proc.poll() is None:
        begun = starts[-1] if starts else t0
        if time.monotonic() - begun > timeout_s:
            proc.kill()
            timed_out = True
            break
        try:
            proc.wait(timeout=0.05)
        except subprocess.TimeoutExpired:
            pass
    rc = proc.wait()
    out.join()
    err.join()
    attempted = len(starts)
    per_input = out.per_input[1:]
    startup = out.per_input[0] + err.lines

    def csv_of(i: int) -> Path | None:
        csv = out_dir / f"{inputs[i].stem}.csv"
        return csv if csv.is_file() else None

    if attempted == 0:
        if timed_out:
            return [ClipOutcome(error="timeout", message=f"OpenFace did not finish within {timeout_s:g} s "
                                                         f"(still loading its models)", lines=startup)]
        message = clean_message(startup) or f"exit {rc} before reading any input"
        raise OpenFaceUnavailable(f"FeatureExtraction could not start: {message}")
    outcomes = [ClipOutcome(csv=csv_of(i), lines=per_input[i]) for i in range(attempted - 1)]
    last = attempted - 1
    lines = per_input[last]
    if timed_out:
        outcomes.append(ClipOutcome(error="timeout", message=f"OpenFace did not finish within {timeout_s:g} s",
                                    lines=lines))
    elif rc != 0:
        said = [ln.strip() for ln in err.lines if not _NOISE.search(ln.strip())]
        detail = " | ".join([m for m in (clean_message(lines), " | ".join(said)) if m])[-MESSAGE_CHARS:] or "no message"
        outcomes.append(ClipOutcome(error="openface_error", message=f"FeatureExtraction exit {rc}: {detail}",
                                    lines=lines))
    elif any(OPEN_FAILED in ln for ln in lines):
        outcomes.append(ClipOutcome(error="no_csv", message=clean_message(lines), lines=lines))
    else:
        outcomes.append(ClipOutcome(csv=csv_of(last), lines=lines))
    for o in outcomes:
        if o.error is None and o.csv is None:
            o.error, o.message = "no_csv", f"FeatureExtraction wrote no CSV: {clean_message(o.lines) or 'no message'}"
    return outcomes


def budget_input(video: Path, dest: Path, fps: float, max_fps: float, max_frames: int,
                 timeout_s: float = 600.0) -> Path | None:
    """The clip cut to the visual frame budget, written at `dest` with the suffix its codec needs, or None when
    OpenFace reads the video as it is (no budget, or a rate already at most `max_fps`).

    Above `max_fps` (> 0) the video is re-encoded to that rate (libx264, CRF 18). With `max_frames` > 0
    only its first `max_frames` frames are written; when the rate is kept they are written losslessly
    (FFV1), so OpenCV decodes them to the source's very pixels and OpenFace tracks them as it would in
    the whole clip (its tracking runs forward, frame by frame)."""
    subsample = max_fps > 0 and fps > max_fps
    if not subsample and max_frames <= 0:
        return None
    args = [find_ffmpeg(), "-nostdin", "-loglevel", "error", "-i", "file:" + str(video.resolve()), "-an"]
    if subsample:
        args += ["-vf", f"fps={max_fps:g}", "-c:v", "libx264", "-preset", "veryfast", "-crf", "18"]
        out, what = dest.with_suffix(".mp4"), f"re-encoding to {max_fps:g} fps"
    else:
        args += ["-c:v", "ffv1"]
        out, what = dest.with_suffix(".mkv"), f"cutting the first {max_frames} frames"
    if max_frames > 0:
        args += ["-frames:v", str(max_frames)]
    proc = popen([*args, str(out)])
    try:
        _, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise ClipError("decode_error", f"{what} took over {timeout_s:g} s") from None
    if proc.returncode != 0:
        raise ClipError("decode_error", f"{what} failed: {stderr_tail(err)}")
    return out


def write_probe_clip(path: Path) -> Path:
    """A tiny clip (5 grey 96×96 frames, MJPG) to probe that FeatureExtraction loads its models."""
    from ..deps import CV2, require

    cv2 = require("cv2", None, "the OpenFace model probe", CV2)
    import numpy as np

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (96, 96))
    for i in range(5):
        writer.write(np.full((96, 96, 3), 96 + 8 * i, np.uint8))
    writer.release()
    return path


def probe(binary: str, extra: Sequence[str], work: Path, timeout_s: float = 120.0) -> str | None:
    """Run FeatureExtraction once on a tiny clip; None when it wrote a CSV, else OpenFace's message."""
    work.mkdir(parents=True, exist_ok=True)
    clip = write_probe_clip(work / "kebr_probe.avi")
    try:
        outcome, = _invoke(binary, [clip], work / "out", extra, timeout_s)
    except OpenFaceUnavailable as exc:
        return str(exc)
    if outcome.error:
        return f"{outcome.error}: {outcome.message}"
    return None

