"""The 33-d acoustic features against direct librosa calls: bit-identical on speech and edge cases."""

import subprocess
import warnings

import librosa
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import demo_clip

from kebr_data import config
from kebr_data.features.librosa_33 import Librosa33, zero_crossing_rate
from kebr_data.media.flac import decode_flac, encode_flac
from kebr_data.schema import AUDIO, PLAN
from kebr_data.stages.acoustic import AcousticStage
from kebr_data.stages.base import ShardContext

SR = 22050


def direct(y, recipe="released"):
    """What the released code computes: three plain librosa calls, stacked frames x 33."""
    if recipe == "released":
        first = librosa.feature.zero_crossing_rate(y, frame_length=2048, hop_length=512, center=True)
    else:
        f0, voiced, _ = librosa.pyin(y, fmin=65.0, fmax=400.0, sr=SR, frame_length=2048, hop_length=512)
        first = np.where(voiced & np.isfinite(f0), np.log(np.where(voiced & np.isfinite(f0), f0, 1.0)), 0.0)[None]
    mfcc = librosa.feature.mfcc(y=y, sr=SR, n_mfcc=20, htk=True, n_fft=2048, hop_length=512)
    chroma = librosa.feature.chroma_cqt(y=y, sr=SR, hop_length=512)
    t = min(first.shape[1], mfcc.shape[1], chroma.shape[1])
    return np.concatenate([first[:, :t], mfcc[:, :t], chroma[:, :t]]).T.astype(np.float32)


def decode(ffmpeg, path, sr=SR):
    raw = subprocess.run([ffmpeg, "-loglevel", "error", "-i", str(path), "-ac", "1", "-ar", str(sr), "-f", "s16le",
                          "-"], capture_output=True, check=True).stdout
    return (np.frombuffer(raw, "<i2") / 32768.0).astype(np.float32)


@pytest.fixture(scope="module")
def speech(ffmpeg):
    return [decode(ffmpeg, demo_clip(i)) for i in range(6)]


@pytest.fixture(scope="module")
def ex():
    return Librosa33()


def test_released_recipe_is_bit_identical_on_speech(speech, ex):
    for y in speech:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got, want = ex.released(y), direct(y)
        assert got.dtype == np.float32 and got.shape[1] == 33
        assert got.shape == want.shape and got.shape[0] == 1 + len(y) // 512
        assert np.array_equal(got, want), np.abs(got - want).max()
    assert len(ex._banks) >= 3  # several tuning values were met and cached


def edge_cases(speech):
    rng = np.random.default_rng(7)
    y = speech[0]
    return {
        "silence": np.zeros(SR, np.float32),
        "0.2 s": y[: int(0.2 * SR)].copy(),
        "one frame": y[5000:5000 + 2048].copy(),
        "clipping": np.clip(y * 30, -1.0, 1.0).astype(np.float32),
        "dc offset": (y + 0.25).astype(np.float32),
        "noise": (0.1 * rng.standard_normal(2 * SR)).astype(np.float32),
        "tiny values": (1e-11 * np.sign(rng.standard_normal(SR))).astype(np.float32),
        "tone": (0.5 * np.sin(2 * np.pi * 440 * np.arange(SR) / SR)).astype(np.float32),
    }


@pytest.mark.parametrize("case", ["silence", "0.2 s", "one frame", "clipping", "dc offset", "noise", "tiny values",
                                  "tone"])
def test_edge_cases_are_bit_identical_and_finite(speech, ex, case):
    y = edge_cases(speech)[case]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got, want = ex.released(y), direct(y)
    assert np.array_equal(got, want), f"{case}: max diff {np.abs(got - want).max()}"
    assert np.isfinite(got).all()


@pytest.mark.parametrize("rate", [8000, 48000])
def test_other_source_rates_through_the_audio_stage(tmp_path, ffmpeg, ex, rate):
    src = tmp_path / f"speech{rate}.wav"
    subprocess.run([ffmpeg, "-loglevel", "error", "-i", str(demo_clip(3)), "-ac", "1", "-ar", str(rate), str(src)],
                   check=True)
    y = decode(ffmpeg, src)  # what the audio stage stores: ffmpeg's resampling to 22,050 Hz
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert np.array_equal(ex.released(y), direct(y))


def test_paper_recipe_puts_log_f0_first(speech, ex):
    y = speech[1]
    got, want = ex.paper(y), direct(y, "paper")
    assert np.array_equal(got, want)
    voiced = got[:, 0] != 0
    assert voiced.any() and (~voiced).any()
    assert np.all((got[voiced, 0] > np.log(64)) & (got[voiced, 0] < np.log(401)))
    assert np.array_equal(got[:, 1:], ex.released(y)[:, 1:])


def test_zero_crossing_rate_matches_librosa_exactly():
    rng = np.random.default_rng(3)
    for n in (2048, 3000, 22050, 30001):
        y = rng.standard_normal(n).astype(np.float32)
        y[rng.random(n) < 0.1] = 0.0
        y[rng.random(n) < 0.05] = 1e-12
        y[rng.random(n) < 0.05] = -0.0
        want = librosa.feature.zero_crossing_rate(y, frame_length=2048, hop_length=512, center=True)
        assert np.array_equal(zero_crossing_rate(y), want)


def test_tuning_estimate_matches_librosa_on_noise_and_tones():
    ex = Librosa33()
    rng = np.random.default_rng(5)
    for i in range(12):
        t = np.arange(SR) / SR
        y = (np.sin(2 * np.pi * (200 + 37 * i) * t) + 0.3 * rng.standard_normal(SR)).astype(np.float32)
        S = np.abs(librosa.stft(y, n_fft=2048, hop_length=512))
        assert ex.estimate_tuning(S) == librosa.estimate_tuning(y=y, sr=SR, bins_per_octave=36)


def test_filter_bank_cache_is_bounded_and_stays_exact(speech):
    ex = Librosa33(max_tunings=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for y in speech + speech[:2]:
            assert np.array_equal(ex.released(y), direct(y))
            assert len(ex._banks) <= 2
    assert 0 < ex.cache_bytes() < 2 * 2**20


def stage_rows(tmp_path, arrays, recipe="released"):
    cfg = config.load(overrides=[f"acoustic.recipe='{recipe}'"])
    plan = [{"clip_id": f"c{i}", "status": "ok", "source": "folder"} for i in range(len(arrays))]
    audio = [{"clip_id": f"c{i}", "status": "ok", "sample_rate": sr, "num_samples": len(y),
              "duration_s": len(y) / sr, "flac": encode_flac((y * 32767).astype(np.int16), sr)}
             for i, (y, sr) in enumerate(arrays)]
    ctx = ShardContext(0, {"plan": pa.Table.from_pylist(plan, schema=PLAN),
                           "audio": pa.Table.from_pylist(audio, schema=AUDIO)}, tmp_path)
    return AcousticStage(cfg["acoustic"]).run_shard(ctx)


def test_stage_rows_and_too_short(tmp_path, speech):
    table = stage_rows(tmp_path, [(speech[0], SR), (speech[0][:1000], SR), (speech[0][:8000], 16000)])
    rows = table.to_pylist()
    assert rows[0]["status"] == "ok" and rows[0]["num_frames"] == 1 + len(speech[0]) // 512
    assert rows[0]["frame_rate"] == pytest.approx(43.06640625)
    assert (rows[1]["status"], rows[1]["error"]) == ("skipped", "too_short")
    assert "fewer than one 2048-sample frame" in rows[1]["message"]
    y16 = decode_flac(encode_flac((speech[0][:8000] * 32767).astype(np.int16), 16000))[0]
    want = librosa.resample(y16, orig_sr=16000, target_sr=SR, res_type="soxr_hq")
    assert rows[2]["num_frames"] == 1 + len(want) // 512  # resampled to 22,050 Hz like librosa.load
    feats = np.asarray(table.column("features")[0].values.flatten()).reshape(-1, 33)
    y0 = decode_flac(encode_flac((speech[0] * 32767).astype(np.int16), SR))[0]
    assert np.array_equal(feats, direct(y0))


def test_non_finite_features_never_reach_the_shard(tmp_path, speech, monkeypatch):
    from kebr_data.stages import acoustic

    class Broken:
        def compute(self, y, recipe):
            out = np.zeros((3, 33), np.float32)
            out[1, 5] = np.nan
            return out

    monkeypatch.setattr(acoustic, "extractor", lambda: Broken())
    (row,) = stage_rows(tmp_path, [(speech[0], SR)]).to_pylist()
    assert (row["status"], row["error"], row["features"]) == ("failed", "non_finite", None)


def test_demo_end_to_end(demo_all):
    out, _ = demo_all  # the demo extracted with pipelines/demo.toml (conftest.py)
    acoustic = pq.read_table(out / "acoustic").to_pylist()
    assert [r["status"] for r in acoustic].count("ok") == 6
    assert {r["error"] for r in acoustic if r["status"] != "ok"} == {"upstream_failed", "upstream_skipped"}
    ok = [r for r in acoustic if r["status"] == "ok"]
    assert all(r["num_frames"] == len(r["features"]) and len(r["features"][0]) == 33 for r in ok)
