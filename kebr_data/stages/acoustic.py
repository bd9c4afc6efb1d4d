"""The acoustic stage: 33-d librosa frame features from the audio stage's FLAC.

Bit-identical to the direct librosa calls of the released recipe (see
`kebr_data.features.librosa_33`), with filter banks cached once per worker process.

librosa's numba kernels are compiled when it is first imported (about 30 s of one core). numba keeps
them in a cache folder (`kebr_data.features.numba_cache`, shared by every worker and later run); the engine
fills it once in the parent (`AcousticStage.warm_up`) before the workers start, so none of them stalls on it.
"""

from __future__ import annotations

import functools
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ..errors import ClipError, ClipSkipped
from ..features.numba_cache import cached_kernels, first_use, use_numba_cache, warmed
from ..features.recipe import HOP, N_FFT, SR
from ..media.flac import decode_flac
from ..schema import ACOUSTIC
from ..settings import setting
from .base import AudioClipStage, ClipInput, ShardContext


@functools.lru_cache(maxsize=1)
def extractor() -> Any:
    """One extractor per worker process: its filter-bank caches outlive shards (librosa is imported here,
    not when the stage registry is, so other stages' workers never pay for it)."""
    use_numba_cache()
    from ..features.librosa_33 import Librosa33

    return Librosa33(SR)


def to_recipe_rate(samples: np.ndarray, sr: int) -> np.ndarray:
    """The clip at 22,050 Hz (resampled as librosa.load would, soxr_hq, if the audio stage used another rate)."""
    if sr == SR:
        return samples
    import librosa

    return librosa.resample(samples, orig_sr=sr, target_sr=SR, res_type="soxr_hq").astype(np.float32)


@dataclass
class AcousticSettings:
    """The acoustic stage: 33-d librosa frame features."""

    recipe: Literal["released", "paper"] = setting(
        "released", "released: [zero-crossing rate | 20 MFCC (htk) | 12 chroma_cqt], what the released code "
                    "computes; paper: log F0 (pYIN 65-400 Hz, unvoiced 0.0) instead of the ZCR")


class AcousticStage(AudioClipStage):
    """frames × 33 float32 per clip at 22,050 / 512 ≈ 43.07 frames per second."""

    name = "acoustic"
    version = "1"
    schema = ACOUSTIC
    hdf5_attributes = ("recipe",)
    Settings = AcousticSettings
    settings: AcousticSettings
    compiles_kernels = True

    def kernel_key(self) -> str:
        return f"{self.name}-{self.settings.recipe}"  # the paper recipe's pYIN compiles kernels of its own

    def warm_up(self, say: Callable[[str], None]) -> None:
        """Compile librosa's kernels into the shared numba cache once, here, instead of in every worker;
        under an exclusive lock, so that two runs starting on a cold cache do not write the same kernel
        at once (numba's cache files are not safe against that: a torn index crashes the next load). Nothing
        to do on a cache already warmed for this recipe: the spawned workers load the kernels themselves, so
        loading them here too only delayed their start (1.6 CPU-s a run)."""
        if warmed(self.kernel_key()):
            return
        cache = use_numba_cache()
        waiting = f"waiting for another run compiling librosa kernels into {cache} ..."
        with first_use(self.kernel_key(), lambda: say(waiting)):  # its marker lets the workers skip the lock
            before = cached_kernels(cache)
            if not before:
                say(f"compiling librosa kernels (once, into {cache}) ...")
            t0 = time.monotonic()
            y = np.sin(np.arange(SR, dtype=np.float32) * np.float32(2 * np.pi * 220 / SR))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                extractor().compute(y, self.settings.recipe)
            compiled = cached_kernels(cache) != before
        if compiled:
            say(f"librosa kernels compiled in {time.monotonic() - t0:.1f} s and cached for every worker and "
                "later run (not counted in throughput)")

    def versions(self) -> dict[str, str]:
        import librosa

        return {"librosa": librosa.__version__, "numpy": np.__version__}

    def process(self, clip: ClipInput, ctx: ShardContext) -> dict[str, Any]:
        samples, sr = decode_flac(clip.upstream["audio"]["flac"])
        y = to_recipe_rate(samples, sr)
        if y.shape[-1] < N_FFT:
            raise ClipSkipped("too_short", f"{y.shape[-1]} samples at {SR} Hz, fewer than one {N_FFT}-sample "
                                           f"frame ({N_FFT / SR:.3f} s)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # librosa's notes on short low-octave CQT frames
            features = extractor().compute(y, self.settings.recipe)
        if not np.isfinite(features).all():
            raise ClipError("non_finite", "the features contain NaN or infinity (corrupt audio?)")
        return {"recipe": self.settings.recipe, "frame_rate": SR / HOP, "num_frames": features.shape[0],
                "features": features}
