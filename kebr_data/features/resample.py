"""One resampler for the encoder and baseline stages: soxr's high-quality mode through librosa
(`res_type="soxr_hq"`, what `librosa.load` uses), so every stage sees the same samples at a rate."""

from __future__ import annotations

import numpy as np


def at_rate(samples: np.ndarray, sr: int, target: int) -> np.ndarray:
    """`samples` (float32 mono at `sr` Hz) at `target` Hz; unchanged when the rates agree or target is 0."""
    if not target or sr == target:
        return samples
    import librosa

    return librosa.resample(samples, orig_sr=sr, target_sr=target, res_type="soxr_hq").astype(np.float32)
