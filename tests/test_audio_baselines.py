"""The opensmile and melspec stages against direct calls of their libraries on the same audio, the
derived openSMILE config (frame and step), bad inputs as rows, and the pipeline end to end (reruns
and 1 vs 2 workers byte-identical, a SIGKILLed worker resumed, validate, hdf5 and parquet exports)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import time
import warnings

import librosa
import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers import ROOT, audio_shard, rss_growth, run_cli, section_overrides, shard_files, start_cli

from kebr_data import config
from kebr_data.media.flac import decode_flac, encode_flac
from kebr_data.stages.melspec import MelspecStage
from kebr_data.stages.opensmile import WIDTHS, OpensmileStage, derive_config

opensmile = pytest.importorskip("opensmile")


def tone(seconds: float, sr: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 160 + 40 * np.sin(2 * np.pi * 0.5 * t)
    y = sum(np.sin(k * 2 * np.pi * np.cumsum(f0) / sr) / k for k in range(1, 5))
    return (0.2 * y + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def stage_table(tmp_path, cls, name, arrays, **settings):
    cfg = config.load(overrides=section_overrides(name, settings))
    ctx = audio_shard(tmp_path, arrays)
    return cls(cfg[name]).run_shard(ctx)


def features(table, i: int) -> np.ndarray:
    width = table.schema.field("features").type.value_type.list_size
    return np.asarray(table.column("features")[i].values.flatten()).reshape(-1, width)


def roundtrip(y: np.ndarray, sr: int) -> np.ndarray:
    return decode_flac(encode_flac((y * 32767).astype(np.int16), sr))[0]


@pytest.mark.parametrize(("feature_set", "level"), sorted(WIDTHS))
def test_widths_are_the_packages(feature_set, level):
    names = opensmile.Smile(opensmile.FeatureSet[feature_set],
                            opensmile.FeatureLevel({"lld": "lld", "functionals": "func"}[level])).feature_names
    assert WIDTHS[feature_set, level] == len(names)


@pytest.mark.parametrize("feature_set", ["eGeMAPSv02", "ComParE_2016"])
def test_package_framing_equals_a_direct_smile_call(tmp_path, feature_set):
    y = tone(1.3, 16000)
    table = stage_table(tmp_path, OpensmileStage, "opensmile", [(y, 16000)], feature_set=feature_set,
                        frame_s=0.0, step_s=0.0)
    smile = opensmile.Smile(opensmile.FeatureSet[feature_set], opensmile.FeatureLevel.LowLevelDescriptors)
    want = smile.process_signal(roundtrip(y, 16000), 16000).to_numpy(np.float32)
    assert np.array_equal(features(table, 0), want)
    assert table.column("frame_rate")[0].as_py() == 100.0


def test_derived_config_changes_only_the_framers(tmp_path):
    derived = derive_config(tmp_path / "config", 0.06, 0.02)
    original = derived.parent / "orig"
    shutil.copytree(os.path.join(os.path.dirname(opensmile.__file__), "core", "config"), original)
    changed = {}
    for f in sorted(original.rglob("*")):
        if f.is_file():
            a, b = f.read_text().splitlines(), (derived / f.relative_to(original)).read_text().splitlines()
            diff = [(x, y) for x, y in zip(a, b, strict=True) if x != y]
            if diff:
                changed[f.relative_to(original).as_posix()] = diff
    assert changed["gemaps/v01b/GeMAPSv01b_core.lld.conf.inc"] == [
        ("frameSize = 0.060", "frameSize = 0.06"), ("frameStep = 0.010", "frameStep = 0.02"),
        ("frameSize = 0.020", "frameSize = 0.06"), ("frameStep = 0.010", "frameStep = 0.02")]
    assert "compare/ComParE_2016_core.lld.conf.inc" in changed
    assert all(re.match(r"frame(Size|Step) = ", y) for d in changed.values() for _, y in d)


def test_mmml_framing_equals_a_direct_smile_call_on_the_derived_config(tmp_path):
    y = tone(2.0, 16000)
    table = stage_table(tmp_path, OpensmileStage, "opensmile", [(y, 16000)])
    root = derive_config(tmp_path / "config", 0.06, 0.02)
    smile = opensmile.Smile(str(root / "egemaps/v02/eGeMAPSv02.conf"), "lld")
    want = smile.process_signal(roundtrip(y, 16000), 16000)
    assert np.array_equal(features(table, 0), want.to_numpy(np.float32))
    starts = want.index.get_level_values("start").total_seconds().to_numpy()
    assert np.allclose(np.diff(starts)[:-1], 0.02)  # 50 frames per second (openSMILE repeats the last start)
    assert table.column("frame_rate")[0].as_py() == 50.0 and table.column("num_frames")[0].as_py() == len(want)


def test_functionals_are_one_row(tmp_path):
    y = tone(1.0, 16000)
    table = stage_table(tmp_path, OpensmileStage, "opensmile", [(y, 16000)], level="functionals", frame_s=0.0,
                        step_s=0.0)
    want = opensmile.Smile(opensmile.FeatureSet.eGeMAPSv02, opensmile.FeatureLevel.Functionals).process_signal(
        roundtrip(y, 16000), 16000).to_numpy(np.float32)
    assert features(table, 0).shape == (1, 88) and np.array_equal(features(table, 0), want)


@pytest.mark.parametrize("sr", [22050, 16000])
def test_melspec_equals_direct_librosa_calls(tmp_path, sr):
    y = tone(1.1, sr)
    table = stage_table(tmp_path, MelspecStage, "melspec", [(y, sr)])
    y = roundtrip(y, sr)
    win, hop = round(0.06 * sr), round(0.02 * sr)
    power = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=win, hop_length=hop, n_mels=128)
    want = librosa.power_to_db(power).T.astype(np.float32)
    assert np.array_equal(features(table, 0), want)
    assert features(table, 0).shape == (1 + (len(y) + 2 * (win // 2) - win) // hop, 128)  # centred frames
    assert table.column("frame_rate")[0].as_py() == pytest.approx(sr / hop)


def test_melspec_log_power_by_hand():
    """power_to_db is 10·log10(max(S, 1e-10)) floored 80 dB below the maximum."""
    s = np.array([[1.0, 1e-3, 1e-12, 0.0]])
    assert np.allclose(librosa.power_to_db(s), [[0.0, -30.0, -80.0, -80.0]])
    assert np.allclose(librosa.power_to_db(s, top_db=None), [[0.0, -30.0, -100.0, -100.0]])


def test_melspec_resampled_rate(tmp_path):
    y = tone(1.0, 22050)
    table = stage_table(tmp_path, MelspecStage, "melspec", [(y, 22050)], sample_rate=16000)
    y16 = librosa.resample(roundtrip(y, 22050), orig_sr=22050, target_sr=16000, res_type="soxr_hq")
    want = librosa.power_to_db(librosa.feature.melspectrogram(y=y16, sr=16000, n_fft=960, hop_length=320, n_mels=128))
    assert np.array_equal(features(table, 0), want.T.astype(np.float32))


@pytest.mark.parametrize(("cls", "name"), [(OpensmileStage, "opensmile"), (MelspecStage, "melspec")])
def test_bad_inputs_are_rows(tmp_path, cls, name):
    clips = [(None, 16000), (tone(0.2, 16000), 16000), (np.zeros(16000, np.float32), 16000), (tone(0.03, 16000), 16000)]
    with warnings.catch_warnings(record=True) as seen:  # a clip shorter than the window: padded without a warning
        warnings.simplefilter("always")
        rows = stage_table(tmp_path, cls, name, clips).to_pylist()
    assert not [w for w in seen if "too large" in str(w.message)], [str(w.message) for w in seen]
    assert (rows[0]["status"], rows[0]["error"]) == ("skipped", "upstream_skipped")
    assert rows[1]["status"] == "ok" and rows[1]["num_frames"] >= 1
    assert rows[2]["status"] == "ok" and all(np.isfinite(v) for f in rows[2]["features"] for v in f)
    assert (rows[3]["status"], rows[3]["error"]) == (("skipped", "too_short") if name == "opensmile" else ("ok", None))


def test_melspec_of_a_30_minute_clip_is_one_row_in_bounded_memory(tmp_path):
    """30 min at 8 kHz: 90,001 frames; the STFT, power and dB arrays of the whole clip (~0.4 GB) are all it holds.
    (opensmile on 30 min takes about a minute: bench/encoders.py measures it.)"""
    y = np.tile(tone(1.0, 8000), 1800)
    ctx = audio_shard(tmp_path, [(y, 8000)])
    table, grown = rss_growth(MelspecStage(config.load()["melspec"]).run_shard, ctx)
    assert table.column("status")[0].as_py() == "ok"
    assert table.column("num_frames")[0].as_py() == 1 + len(y) // 160  # centred frames, hop 0.02 s
    assert grown < 2**30, f"{grown / 2**20:.0f} MiB"


# --- the CLI: one clean run is the reference for reruns, 2 workers and a SIGKILLed worker ----------------
# index and audio run once; each scenario starts from a copy of that folder and runs the two stages alone.

ARGS = ["--config", str(ROOT / "pipelines/demo.toml"), "--stages", "opensmile,melspec"]


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory, audio_done):
    """A clean 1-worker run and its tables' bytes (taken before anything else writes there)."""
    out = shutil.copytree(audio_done, tmp_path_factory.mktemp("baselines-clean") / "out")
    run_cli("extract", "--out", str(out), *ARGS, "--workers", "1", check=True)
    return out, shard_files(out)


def test_two_workers_and_a_forced_rerun_are_byte_identical(tmp_path, audio_done, clean_run):
    _, clean = clean_run
    out = shutil.copytree(audio_done, tmp_path / "two")
    run_cli("extract", "--out", str(out), *ARGS, "--workers", "2", check=True)
    assert shard_files(out) == clean
    run_cli("extract", "--out", str(out), *ARGS, "--workers", "1", "--force", check=True)
    assert shard_files(out) == clean


def test_validate_and_exports_carry_the_frames(clean_run):
    import h5py

    from kebr_data.export import export
    from kebr_data.validate import validate

    out, _ = clean_run
    assert validate(out)[1] == []
    for stage in ("opensmile", "melspec"):
        assert [r["status"] for r in pq.read_table(out / stage).to_pylist()].count("ok") == 6
    export(out, "hdf5")
    export(out, "parquet")
    with h5py.File(out / "export/hdf5/shard-00000.h5") as f:
        assert f["opensmile/values"].shape[1] == 25 and f["melspec/values"].shape[1] == 128
    merged = pq.read_table(next((out / "export/parquet").glob("shard-*.parquet")))
    assert {"opensmile.features", "melspec.features"} <= set(merged.column_names)


def test_opensmile_workers_leave_nothing_in_tmpdir(tmp_path, audio_done, clean_run):
    """Each worker once left its 392 KB derived config copy in TMPDIR; it now lives in the shard's temp folder."""
    _, clean = clean_run
    out, tmpdir = shutil.copytree(audio_done, tmp_path / "out"), tmp_path / "tmpdir"
    tmpdir.mkdir()
    run_cli("extract", "--out", str(out), "--config", str(ROOT / "pipelines/demo.toml"), "--stages", "opensmile",
            "--workers", "1", env={"TMPDIR": str(tmpdir)}, check=True)
    assert list(tmpdir.iterdir()) == [] and not any((out / "_tmp").iterdir())
    assert {k: v for k, v in shard_files(out).items() if k.startswith("opensmile/")} == \
        {k: v for k, v in clean.items() if k.startswith("opensmile/")}


def test_sigkilled_worker_then_rerun_is_identical(tmp_path, audio_done, clean_run):
    """SIGKILL the worker once it has logged a clip of a melspec shard; the rerun matches the clean run."""
    _, clean = clean_run
    out = shutil.copytree(audio_done, tmp_path / "out")
    proc = start_cli("extract", "--out", str(out), *ARGS, "--workers", "1")
    deadline, killed = time.time() + 120, False
    while time.time() < deadline and proc.poll() is None and not killed:
        for log in sorted((out / "_logs/melspec").glob("shard-*.log")) if (out / "_logs/melspec").exists() else []:
            text = log.read_text()
            m = re.search(r"pid (\d+)", text)
            if m and " ok " in text and "done:" not in text:
                os.kill(int(m.group(1)), signal.SIGKILL)
                killed = True
                break
        time.sleep(0.002)
    proc.communicate(timeout=120)
    if not killed:
        pytest.skip("the run finished before a worker could be killed")
    assert proc.returncode == 3
    assert run_cli("extract", "--out", str(out), *ARGS, "--workers", "1").returncode == 0
    assert shard_files(out) == clean
