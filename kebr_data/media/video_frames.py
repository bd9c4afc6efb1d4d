"""A video's frames at a fixed rate (OpenCV decoding): the source frame shown at each time k / fps,
so clips of any frame rate give the same number of frames per second (frames repeat when the
source is slower). Frames not sampled are only grabbed, not converted."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from ..deps import require


def source_index(k: int, fps: float, src_fps: float) -> int:
    """The source frame shown at time k / fps (the last one that started by then)."""
    return int(math.floor(k * src_fps / fps + 1e-6))


class SampledVideo:
    """An opened video: `fps`, `width`, `height`, `duration_s`, and `frames(keep)` iterating
    (k, BGR frame) for the sampled frames k for which `keep(k)` is true."""

    def __init__(self, path: Path, fps: float) -> None:
        self.cv2 = require("cv2", "all", "the faces stage (opencv-python<5)")
        self.path, self.fps = path, fps
        cap = self.cv2.VideoCapture(str(path))
        try:
            self.ok = cap.isOpened() and cap.read()[0]
            self.src_fps = float(cap.get(self.cv2.CAP_PROP_FPS) or 0.0)
            self.width = int(cap.get(self.cv2.CAP_PROP_FRAME_WIDTH))
            self.height = int(cap.get(self.cv2.CAP_PROP_FRAME_HEIGHT))
            count = int(cap.get(self.cv2.CAP_PROP_FRAME_COUNT) or 0)
        finally:
            cap.release()
        self.duration_s = count / self.src_fps if self.src_fps > 0 else 0.0

    def frames(self, keep: Callable[[int], bool] = lambda k: True) -> Iterator[tuple[int, np.ndarray]]:
        cap = self.cv2.VideoCapture(str(self.path))
        try:
            k, i = 0, 0
            while cap.grab():
                wanted = []
                while source_index(k, self.fps, self.src_fps) == i:
                    wanted.append(k)
                    k += 1
                if any(keep(j) for j in wanted):
                    ok, frame = cap.retrieve()
                    if not ok:
                        return
                    for j in wanted:
                        if keep(j):
                            yield j, frame
                i += 1
        finally:
            cap.release()
