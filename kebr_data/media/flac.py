"""Lossless FLAC bytes for the audio stage's `flac` column, and decoding them back."""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf


def encode_flac(samples: np.ndarray, sample_rate: int) -> bytes:
    """Encode mono int16 samples as FLAC (deterministic: same samples, same bytes)."""
    buf = io.BytesIO()
    sf.write(buf, samples, sample_rate, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def decode_flac(data: bytes, dtype: str = "float32") -> tuple[np.ndarray, int]:
    """Decode FLAC bytes to (mono samples, sample_rate); float32 is scaled to [-1, 1) like librosa."""
    samples, sr = sf.read(io.BytesIO(data), dtype=dtype, always_2d=False)
    return samples, sr
