"""The acoustic stage: 33-d librosa frame features from the audio stage's FLAC.

Bit-identical to the direct librosa calls of the released recipe (see
`kebr_data.features.librosa_33`), with filter banks cached once per worker process.

librosa's numba kernels are compiled when it is first imported (about 30 s of one core). numba keeps
them in a cache folder (`numba_cache_dir()`, shared by every worker and later run); the engine fills it
once in the parent (`AcousticStage.warm_up`) before the workers start, so none of them stalls on it.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..config import setting
from ..errors import ClipError, ClipSkipped
from ..features.recipe import HOP, N_FFT, SR
from ..media.flac import decode_flac
from ..schema import ACOUSTIC
from .base import AudioClipStage, ClipInput, ShardContext


def numba_cache_dir() -> Path:
    """Where compiled librosa kernels are kept: $NUMBA_CACHE_DIR when set, else $KEBR_CACHE_DIR/numba,
    else $XDG_CACHE_HOME/kebr/numba (~/.cache/kebr/numba): per user, so every run on the machine finds it."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return Path(os.environ["NUMBA_CACHE_DIR"])
    if os.environ.get("KEBR_CACHE_DIR"):
        return Path(os.environ["KEBR_CACHE_DIR"]) / "numba"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kebr" / "numba"


def use_numba_cache() -> Path:
    """Point numba's cache at `numba_cache_dir()` in this process and the workers it starts.

    Must run before librosa is imported: numba picks a kernel's cache folder when the kernel is defined.
    A folder that cannot be created is left alone (numba then falls back to its own places).
    """
    path = numba_cache_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return path
    os.environ["NUMBA_CACHE_DIR"] = str(path)
    if "numba" in sys.modules:  # imported already (by another library): make it re-read the variable
        sys.modules["numba"].core.config.reload_config()
    return path


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on `path` (created if missing, never followed through a symlink); where the
    cache folder cannot hold it, go on unlocked (numba falls back to its own places then, too)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _cached_kernels(path: Path) -> set[str]:
    return {p.name for p in path.rglob("*.nb[ic]")} if path.is_dir() else set()


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
    Settings = AcousticSettings

    def warm_up(self, say: Callable[[str], None]) -> None:
        """Compile librosa's kernels into the shared numba cache once, here, instead of in every worker;
        under an exclusive lock, so that two runs starting on a cold cache do not write the same kernel
        at once (numba's cache files are not safe against that: a torn index crashes the next load)."""
        cache = use_numba_cache()
        with _exclusive(cache / ".compile.lock"):
            before = _cached_kernels(cache)
            if not before:
                say(f"compiling librosa kernels (once, into {cache}) ...")
            t0 = time.monotonic()
            y = np.sin(np.arange(SR, dtype=np.float32) * np.float32(2 * np.pi * 220 / SR))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                extractor().compute(y, self.cfg["recipe"])
            compiled = _cached_kernels(cache) != before
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
            features = extractor().compute(y, self.cfg["recipe"])
        if not np.isfinite(features).all():
            raise ClipError("non_finite", "the features contain NaN or infinity (corrupt audio?)")
        return {"recipe": self.cfg["recipe"], "frame_rate": SR / HOP, "num_frames": features.shape[0],
                "features": features}
