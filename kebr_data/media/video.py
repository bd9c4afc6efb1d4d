"""Looking at a video before the expensive run: OpenCV reads its properties and samples frames
for a Haar face detector, so clips without a face are skipped before OpenFace is started."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..deps import require


@dataclass
class VideoProbe:
    fps: float
    frames: int
    duration_s: float
    sampled: int
    with_face: int


@functools.lru_cache(maxsize=1)
def _face_detector():
    cv2 = require("cv2", "all", "the visual pre-check (opencv-python<5)")
    path = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
    detector = cv2.CascadeClassifier(str(path))
    if detector.empty():
        raise RuntimeError(f"cannot load the Haar cascade {path} (opencv-python 5 dropped them: use <5)")
    return detector


def probe_video(path: Path, samples: int = 8) -> VideoProbe | None:
    """fps, frame count, duration and how many of `samples` evenly spread frames show a face.

    None when OpenCV cannot open the file or read a single frame (no video stream).
    """
    cv2 = require("cv2", "all", "the visual pre-check (opencv-python<5)")
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            return None
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        targets = sorted({int(i) for i in np.linspace(0, max(count - 1, 0), num=max(samples, 1))})
        sampled = with_face = 0
        detector = _face_detector()
        for target in targets:
            cap.set(cv2.CAP_PROP_POS_FRAMES, target)
            ok, frame = cap.read()
            if not ok:
                continue
            sampled += 1
            gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
            scale = 320.0 / max(gray.shape)
            if scale < 1.0:
                gray = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            faces = detector.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=4, minSize=(24, 24))
            with_face += int(len(faces) > 0)
        if sampled == 0:
            return None
        return VideoProbe(fps, count, count / fps if fps > 0 else 0.0, sampled, with_face)
    finally:
        cap.release()
