"""Face tracks from per-frame detections: IoU linking, the track choice (largest, or the speaker
whose mouth moves with the audio energy), and the smoothed square crop box of each frame.

Pure numpy (boxes are `x, y, w, h` in source pixels), so every rule has a hand-computed test; the
detector and the frames are the `faces` stage's business.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Track:
    """One face followed over sampled frames: the frame indices where it was detected and its boxes."""

    frames: list[int] = field(default_factory=list)
    boxes: list[np.ndarray] = field(default_factory=list)

    @property
    def last(self) -> int:
        return self.frames[-1]

    def area_sum(self) -> float:
        return float(sum(b[2] * b[3] for b in self.boxes))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two `x, y, w, h` boxes."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return float(inter / union) if union > 0 else 0.0


class TrackLinker:
    """Online IoU linking: each frame's detections join the open track they overlap most (greedy by
    IoU, at least `iou_min`); a track stays open across at most `max_gap` frames without a detection."""

    def __init__(self, iou_min: float = 0.3, max_gap: int = 5) -> None:
        self.iou_min, self.max_gap = iou_min, max_gap
        self.tracks: list[Track] = []

    def add(self, k: int, boxes: np.ndarray) -> list[int]:
        """Link frame `k`'s detections (n × 4); return the track index of each detection."""
        open_ = [i for i, t in enumerate(self.tracks) if k - t.last <= self.max_gap + 1]
        pairs = sorted(((iou(self.tracks[i].boxes[-1], b), i, j) for i in open_ for j, b in enumerate(boxes)),
                       key=lambda p: (-p[0], p[1], p[2]))
        owner: dict[int, int] = {}
        used: set[int] = set()
        for score, i, j in pairs:
            if score < self.iou_min:
                break
            if i in used or j in owner:
                continue
            owner[j] = i
            used.add(i)
        for j in range(len(boxes)):
            if j not in owner:
                owner[j] = len(self.tracks)
                self.tracks.append(Track())
            track = self.tracks[owner[j]]
            track.frames.append(k)
            track.boxes.append(np.asarray(boxes[j], dtype=np.float64))
        return [owner[j] for j in range(len(boxes))]


def largest(tracks: list[Track]) -> int:
    """The track with the largest sum of box areas over its frames (big and present long: the
    stable main face); the first such track on ties. -1 without tracks."""
    if not tracks:
        return -1
    scores = [t.area_sum() for t in tracks]
    return int(np.argmax(scores))


def pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    """Pearson correlation; None with fewer than 3 pairs or a constant series."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.size < 3:
        return None
    dx, dy = x - x.mean(), y - y.mean()
    den = np.sqrt((dx * dx).sum() * (dy * dy).sum())
    if den == 0:
        return None
    return float((dx * dy).sum() / den)


def frame_energy(samples: np.ndarray, sr: int, fps: float, n: int) -> np.ndarray:
    """RMS of the audio in the 1/fps window centred on each of `n` sampled frames (0 beyond the audio)."""
    out = np.zeros(n, dtype=np.float64)
    half = 0.5 / fps
    for k in range(n):
        a = max(0, int(round((k / fps - half) * sr)))
        b = min(samples.size, int(round((k / fps + half) * sr)))
        if b > a:
            seg = samples[a:b].astype(np.float64)
            out[k] = np.sqrt((seg * seg).mean())
    return out


def mouth_box(box: np.ndarray) -> tuple[int, int, int, int]:
    """The mouth region of a face box: its lower third, middle half of the width (x0, y0, x1, y1)."""
    x, y, w, h = box
    return (int(round(x + w / 4)), int(round(y + 2 * h / 3)), int(round(x + 3 * w / 4)), int(round(y + h)))


def speaker(motion: dict[int, dict[int, float]], energy: np.ndarray) -> tuple[int, float] | None:
    """The track whose mouth motion (per frame, `motion[track][k]` = change from frame k-1) correlates
    best with the audio energy; None when no track has 3 frames with a defined correlation."""
    best: tuple[int, float] | None = None
    for i in sorted(motion):
        ks = sorted(motion[i])
        r = pearson(np.array([motion[i][k] for k in ks]), energy[ks]) if ks else None
        if r is not None and (best is None or r > best[1]):
            best = (i, r)
    return best


def crop_boxes(track: Track, smooth: int, scale: float) -> tuple[int, np.ndarray, np.ndarray]:
    """Square crop boxes for every frame of the track's span: gaps filled linearly between detections,
    centre and side smoothed by a centred moving average of `smooth` frames (edges repeated), side =
    `scale` × the box's larger side. Returns (first frame, n × 3 array of centre x, centre y, side,
    detected flags)."""
    first, last = track.frames[0], track.last
    ks = np.arange(first, last + 1)
    det = np.array(track.frames)
    b = np.stack(track.boxes)
    cx = np.interp(ks, det, b[:, 0] + b[:, 2] / 2)
    cy = np.interp(ks, det, b[:, 1] + b[:, 3] / 2)
    side = np.interp(ks, det, np.maximum(b[:, 2], b[:, 3]))
    geo = np.stack([cx, cy, side], axis=1)
    if smooth > 1 and len(ks) > 1:
        pad = smooth // 2
        padded = np.concatenate([np.repeat(geo[:1], pad, 0), geo, np.repeat(geo[-1:], pad, 0)])
        kernel = np.ones(2 * pad + 1) / (2 * pad + 1)
        geo = np.stack([np.convolve(padded[:, c], kernel, mode="valid") for c in range(3)], axis=1)
    geo[:, 2] *= scale
    detected = np.isin(ks, det)
    return first, geo, detected
