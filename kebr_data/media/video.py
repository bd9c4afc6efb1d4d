"""Looking at a video before the expensive run: OpenCV reads its properties and one frame, so
unreadable files and files without a video stream become rows without starting OpenFace.

Whether a clip shows a face is OpenFace's call (it tracks faces rotated in-plane that a Haar
detector misses), made from its `success` column after the run.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..deps import CV2, require

_VIDEO_STREAM = re.compile(r"Stream #\d+:\d+.*: Video: ")
_ATTACHED_PIC = "(attached pic)"


@dataclass
class VideoProbe:
    fps: float
    frames: int
    duration_s: float


def probe_video(path: Path) -> VideoProbe | None:
    """fps, frame count and duration of a video whose first frame OpenCV can decode; None otherwise."""
    cv2 = require("cv2", None, "the visual pre-check", CV2)
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            return None
        ok, _ = cap.read()
        if not ok:
            return None
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        return VideoProbe(fps, count, count / fps if fps > 0 else 0.0)
    finally:
        cap.release()


def has_video_stream(ffmpeg: str, path: Path, timeout_s: float = 60.0) -> bool | None:
    """Whether ffmpeg sees a video stream in `path` (cover art excluded); None when it cannot read
    the container at all. Only asked when OpenCV read no frame, to tell an audio-only file
    (skipped) from a corrupt one (failed)."""
    args = [ffmpeg, "-nostdin", "-hide_banner", "-i", "file:" + str(path.resolve())]
    try:
        proc = subprocess.run(args, capture_output=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return None
    text = proc.stderr.decode("utf-8", errors="replace")
    streams = [ln for ln in text.splitlines() if ln.strip().startswith("Stream #")]
    if not streams:
        return None
    return any(_VIDEO_STREAM.search(ln) and _ATTACHED_PIC not in ln for ln in streams)
