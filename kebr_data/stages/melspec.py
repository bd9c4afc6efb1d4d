"""The melspec stage: a log-power mel spectrogram of the audio stage's FLAC, as MMML's baseline
(128 bands, 0.06 s window, 0.02 s hop), computed by `librosa.feature.melspectrogram` and
`librosa.power_to_db` with librosa's defaults (Hann window, centred frames, ref 1.0, amin 1e-10,
top_db 80: the output spans at most 80 dB below the clip's loudest bin).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import ClipError
from ..features.resample import at_rate
from ..media.flac import decode_flac
from ..schema import ANY_WIDTH, COMMON, frame_field
from ..settings import setting
from .base import AudioClipStage, ClipInput, ShardContext


def melspec_schema(width: int) -> pa.Schema:
    return pa.schema(COMMON + [
        pa.field("sample_rate", pa.int32()),
        pa.field("frame_rate", pa.float32()),
        pa.field("num_frames", pa.int32()),
        frame_field("features", width),
    ])


def window_samples(seconds: float, sr: int) -> int:
    return int(round(seconds * sr))


@dataclass
class MelspecSettings:
    """The melspec stage: log-power mel spectrogram (librosa)."""

    n_mels: int = setting(128, "mel bands", min=1, max=512)
    window_s: float = setting(0.06, "analysis window (and FFT size) in seconds", min=0.005, max=1.0)
    hop_s: float = setting(0.02, "hop in seconds", min=0.001, max=1.0)
    sample_rate: int = setting(0, "Hz; 0 = the audio stage's rate, else resampled with soxr_hq", min=0)
    top_db: float = setting(80.0, "librosa.power_to_db's floor below the loudest bin; 0 = none", min=0.0)


class MelspecStage(AudioClipStage):
    """frames × n_mels float32 (dB) per clip at 1 / hop_s frames per second."""

    name = "melspec"
    version = "1"
    schema = melspec_schema(ANY_WIDTH)
    Settings = MelspecSettings
    settings: MelspecSettings
    compiles_kernels = True
    extract_default = False

    def __init__(self, settings: Any) -> None:
        super().__init__(settings)
        self.schema = melspec_schema(self.settings.n_mels)

    def versions(self) -> dict[str, str]:
        import librosa

        return {"librosa": librosa.__version__, "numpy": np.__version__}

    def process(self, clip: ClipInput, ctx: ShardContext) -> dict[str, Any]:
        import librosa

        samples, sr = decode_flac(clip.upstream["audio"]["flac"])
        rate = self.settings.sample_rate or sr
        y = at_rate(samples, sr, rate)
        win, hop = window_samples(self.settings.window_s, rate), window_samples(self.settings.hop_s, rate)
        with warnings.catch_warnings():  # a clip shorter than the window is zero-padded by design (centred frames)
            warnings.filterwarnings("ignore", message="n_fft=.* is too large", category=UserWarning)
            power = librosa.feature.melspectrogram(y=y, sr=rate, n_fft=win, hop_length=hop,
                                                   n_mels=self.settings.n_mels)
        db = librosa.power_to_db(power, top_db=self.settings.top_db or None)
        features = np.ascontiguousarray(db.T, dtype=np.float32)
        if not np.isfinite(features).all():
            raise ClipError("non_finite", "the spectrogram contains NaN or infinity (corrupt audio?)")
        return {"sample_rate": rate, "frame_rate": rate / hop, "num_frames": len(features), "features": features}
