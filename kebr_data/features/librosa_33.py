"""The 33-d acoustic frame features of the released code, bit-identical to librosa, computed faster.

Recipe `released`: at 22,050 Hz, hop 512, n_fft 2048, centred frames,
`[zero_crossing_rate | mfcc(n_mfcc=20, htk=True) | chroma_cqt()]`, frames × 33, float32:
what MMSA's CH-SIMS features, SKESL and KEBR compute with three librosa calls. Recipe `paper`
puts log F0 (pYIN, 65-400 Hz, unvoiced frames 0.0) in column 0 instead, as the papers describe.

Why it is faster while staying bit-identical: librosa's `chroma_cqt` rebuilds its constant-Q
filter bank on every call, estimates tuning with an STFT of its own, and `mfcc` computes yet
another STFT. Here one STFT serves tuning and MFCC, and every filter bank (mel, chroma map, the
CQT's per-octave bases for each tuning value the estimator can return) is built once per worker
and reused. The arithmetic on the signal is librosa's own functions called in librosa's order,
so each output is the same float32 as the direct calls.
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass

import librosa
import numpy as np
from librosa import filters
from librosa.core import constantq

from .recipe import HOP, N_CHROMA, N_FFT, N_MFCC, RECIPES, SR

# librosa's private CQT steps, called in the order `librosa.vqt` calls them
_early_downsample = getattr(constantq, "__early_downsample")
_vqt_filter_fft = getattr(constantq, "__vqt_filter_fft")
_cqt_response = getattr(constantq, "__cqt_response")
_trim_stack = getattr(constantq, "__trim_stack")
_parabolic_interpolation = librosa.core.pitch._parabolic_interpolation

BINS_PER_OCTAVE = 36  # chroma_cqt's default
N_OCTAVES = 7
F0_RANGE = (65.0, 400.0)
PIPTRACK_RANGE = (150.0, 4000.0)  # piptrack's defaults, used by estimate_tuning
PIPTRACK_THRESHOLD = 0.1


@dataclass
class _OctaveBank:
    """One octave's sparse FFT filter bank (already scaled as vqt scales it) and its FFT size."""

    basis: object
    n_fft: int


class Librosa33:
    """Computes the 33-d frames of one clip at a time; caches are per instance (one per worker).

    `max_tunings` bounds the CQT filter-bank cache: one entry per distinct tuning value
    (librosa's estimator returns multiples of 0.01 in [-0.5, 0.5), so at most 100 exist).
    """

    def __init__(self, sr: int = SR, max_tunings: int = 100) -> None:
        if sr != SR:
            raise ValueError(f"the released recipe is defined at {SR} Hz, got {sr}")
        self.sr = sr
        self.max_tunings = max_tunings
        self._lock = threading.Lock()
        self._banks: collections.OrderedDict[float, tuple[list[_OctaveBank], np.ndarray, np.ndarray, int, float]] = \
            collections.OrderedDict()
        # melspectrogram(..., htk=True) inside mfcc builds exactly this basis
        self.mel_basis = filters.mel(sr=sr, n_fft=N_FFT, norm="slaney", htk=True)
        # chroma_cqt maps its 252 CQT bins with this matrix (fmin=None, window=None)
        self.cq_to_chroma = filters.cq_to_chroma(N_OCTAVES * BINS_PER_OCTAVE, bins_per_octave=BINS_PER_OCTAVE,
                                                 n_chroma=N_CHROMA, fmin=None, window=None)

    # --- caches -----------------------------------------------------------------------------------

    def cache_bytes(self) -> int:
        """Memory held by the cached filter banks."""
        total = self.mel_basis.nbytes + self.cq_to_chroma.nbytes
        for octaves, freqs, lengths, _, _ in self._banks.values():
            total += freqs.nbytes + lengths.nbytes
            for o in octaves:
                b = o.basis
                total += b.data.nbytes + b.indices.nbytes + b.indptr.nbytes
        return total

    def _cqt_bank(self, tuning: float) -> tuple[list[_OctaveBank], np.ndarray, np.ndarray, int, float]:
        """Everything `librosa.vqt` derives from (tuning, sr, hop) before touching the signal."""
        key = float(tuning)  # pitch_tuning returns points of a fixed linspace: the same float every time
        with self._lock:
            if key in self._banks:
                self._banks.move_to_end(key)
                return self._banks[key]
        n_bins = N_OCTAVES * BINS_PER_OCTAVE
        fmin = librosa.note_to_hz("C1") * 2.0 ** (tuning / BINS_PER_OCTAVE)
        freqs = librosa.interval_frequencies(n_bins=n_bins, fmin=fmin, intervals="equal",
                                             bins_per_octave=BINS_PER_OCTAVE, sort=True)
        alpha = filters._relative_bandwidth(freqs=freqs)
        lengths, filter_cutoff = filters.wavelet_lengths(freqs=freqs, sr=self.sr, window="hann", filter_scale=1,
                                                         gamma=0, alpha=alpha)
        nyquist = self.sr / 2.0
        # the early-downsampling decision depends only on these numbers, not on the signal
        probe = np.zeros(1 << 12, dtype=np.float32)
        _, sr, hop = _early_downsample(probe, self.sr, HOP, "soxr_hq", N_OCTAVES, nyquist, filter_cutoff, True)
        octaves = []
        my_sr, my_hop = sr, hop
        for i in range(N_OCTAVES):
            sl = slice(-BINS_PER_OCTAVE, None) if i == 0 else \
                slice(-BINS_PER_OCTAVE * (i + 1), -BINS_PER_OCTAVE * i)
            basis, n_fft, _ = _vqt_filter_fft(my_sr, freqs[sl], 1, 1, 0.01, window="hann", gamma=0,
                                              dtype=np.complex64, alpha=alpha[sl])
            basis[:] *= np.sqrt(sr / my_sr)
            octaves.append(_OctaveBank(basis, n_fft))
            if my_hop % 2 == 0:
                my_hop //= 2
                my_sr /= 2.0
        entry = (octaves, freqs, lengths.reshape(-1, 1), hop, filter_cutoff)
        with self._lock:
            self._banks[key] = entry
            while len(self._banks) > self.max_tunings:
                self._banks.popitem(last=False)
        return entry

    # --- features ---------------------------------------------------------------------------------

    def chroma_cqt(self, y: np.ndarray, tuning: float) -> np.ndarray:
        """`librosa.feature.chroma_cqt(y=y, sr=22050, hop_length=512, tuning=tuning)`, bit for bit."""
        octaves, _, lengths, _, filter_cutoff = self._cqt_bank(tuning)
        my_y, my_sr, my_hop = _early_downsample(y, self.sr, HOP, "soxr_hq", N_OCTAVES, self.sr / 2.0,
                                                filter_cutoff, True)
        responses = []
        for bank in octaves:
            responses.append(_cqt_response(my_y, bank.n_fft, my_hop, bank.basis, "constant", dtype=np.complex64))
            if my_hop % 2 == 0:
                my_hop //= 2
                my_sr /= 2.0
                my_y = librosa.resample(my_y, orig_sr=2, target_sr=1, res_type="soxr_hq", scale=True)
        V = _trim_stack(responses, N_OCTAVES * BINS_PER_OCTAVE, np.complex64)
        V /= np.sqrt(lengths)
        C = np.abs(V)
        chroma = np.einsum("cf,...ft->...ct", self.cq_to_chroma, C, optimize=True)
        chroma[chroma < 0.0] = 0.0
        return librosa.util.normalize(chroma, norm=np.inf, axis=-2)

    def spectral(self, y: np.ndarray) -> tuple[np.ndarray, float]:
        """(MFCC 20 × T, tuning) from one STFT: what `mfcc(htk=True)` and `estimate_tuning` compute."""
        D = librosa.stft(y, n_fft=N_FFT, hop_length=HOP, window="hann", center=True, pad_mode="constant")
        S = np.abs(D)
        tuning = self.estimate_tuning(S)
        mel = np.einsum("...ft,mf->...mt", S ** 2.0, self.mel_basis, optimize=True)
        mfcc = librosa.get_fftlib().dct(librosa.power_to_db(mel), axis=-2, type=2, norm="ortho")[..., :N_MFCC, :]
        return mfcc, float(tuning)

    def estimate_tuning(self, S: np.ndarray) -> float:
        """`librosa.estimate_tuning(S=S, n_fft=2048, bins_per_octave=36)`, bit for bit, on only the
        rows piptrack can pick (150-4000 Hz, plus one neighbour each side for its stencils)."""
        lo, hi = self._pip_rows
        sub = S[lo:hi]
        avg = np.gradient(sub, axis=-2)
        shift = _parabolic_interpolation(sub, axis=-2)
        dskew = 0.5 * avg * shift
        ref_value = np.expand_dims(PIPTRACK_THRESHOLD * np.max(S, axis=-2), -2)
        peaks = librosa.util.localmax(sub * (sub > ref_value), axis=-2)
        peaks[0] = peaks[-1] = False  # the neighbour rows lie outside piptrack's frequency range
        idx = np.nonzero(peaks)
        pitch = ((idx[0] + lo + shift[idx]) * float(self.sr) / N_FFT).astype(S.dtype)
        mag = (sub[idx] + dskew[idx]).astype(S.dtype)
        voiced = pitch > 0
        threshold = np.median(mag[voiced]) if voiced.any() else 0.0
        return float(librosa.pitch_tuning(pitch[(mag >= threshold) & voiced], resolution=0.01,
                                          bins_per_octave=BINS_PER_OCTAVE))

    @property
    def _pip_rows(self) -> tuple[int, int]:
        freqs = librosa.fft_frequencies(sr=self.sr, n_fft=N_FFT)
        rows = np.flatnonzero((PIPTRACK_RANGE[0] <= freqs) & (freqs < min(PIPTRACK_RANGE[1], self.sr / 2)))
        return int(rows[0]) - 1, int(rows[-1]) + 2

    def released(self, y: np.ndarray) -> np.ndarray:
        """frames × 33 float32: [zero_crossing_rate | mfcc | chroma_cqt]."""
        y = np.ascontiguousarray(y, dtype=np.float32)
        zcr = zero_crossing_rate(y)
        mfcc, tuning = self.spectral(y)
        chroma = self.chroma_cqt(y, tuning)
        return stack(zcr, mfcc, chroma)

    def paper(self, y: np.ndarray) -> np.ndarray:
        """frames × 33 float32 with log F0 (pYIN 65-400 Hz, unvoiced 0.0) in column 0."""
        y = np.ascontiguousarray(y, dtype=np.float32)
        mfcc, tuning = self.spectral(y)
        chroma = self.chroma_cqt(y, tuning)
        return stack(log_f0(y, self.sr), mfcc, chroma)

    def compute(self, y: np.ndarray, recipe: str = "released") -> np.ndarray:
        if recipe == "released":
            return self.released(y)
        if recipe == "paper":
            return self.paper(y)
        raise ValueError(f"unknown acoustic recipe {recipe!r}; choose one of {', '.join(RECIPES)}")


def zero_crossing_rate(y: np.ndarray) -> np.ndarray:
    """`librosa.feature.zero_crossing_rate(y, frame_length=2048, hop_length=512, center=True)` exactly,
    from one pass over the signal instead of one per overlapping frame.

    A sample crosses when its sign bit differs from its predecessor's (|x| <= 1e-10 counts as +0);
    the first sample of each frame never counts. The rate is the integer count / 2048, which is what
    librosa's float64 mean of booleans gives exactly.
    """
    padded = np.pad(y, N_FFT // 2, mode="edge")
    sign = np.signbit(padded) & (np.abs(padded) > 1e-10)
    crossed = np.concatenate([[0], np.cumsum(sign[1:] != sign[:-1], dtype=np.int64)])
    n_frames = 1 + (padded.shape[-1] - N_FFT) // HOP
    starts = np.arange(n_frames) * HOP
    counts = crossed[starts + N_FFT - 1] - crossed[starts]
    return (counts / float(N_FFT))[np.newaxis, :]


def log_f0(y: np.ndarray, sr: int = SR) -> np.ndarray:
    """1 × T natural log of pYIN's F0 over 65-400 Hz on the 2048/512 frame grid; unvoiced frames 0.0."""
    f0, voiced, _ = librosa.pyin(y, fmin=F0_RANGE[0], fmax=F0_RANGE[1], sr=sr, frame_length=N_FFT,
                                 hop_length=HOP, center=True)
    out = np.zeros_like(f0)
    ok = voiced & np.isfinite(f0) & (f0 > 0)
    out[ok] = np.log(f0[ok])
    return out[np.newaxis, :]


def stack(first: np.ndarray, mfcc: np.ndarray, chroma: np.ndarray) -> np.ndarray:
    """frames × 33 float32 from 1 × T, 20 × T and 12 × T blocks (trimmed to the shortest T)."""
    t = min(first.shape[-1], mfcc.shape[-1], chroma.shape[-1])
    out = np.concatenate([first[..., :t], mfcc[..., :t], chroma[..., :t]], axis=0).T
    return np.ascontiguousarray(out, dtype=np.float32)

