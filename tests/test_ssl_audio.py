"""The ssl_audio stage against direct calls of the same models: tiny random-initialised HuBERT,
wav2vec2 and data2vec-audio models built and saved here, and the real Whisper tiny.en encoder
(rebuilt from the bundled CTranslate2 weights). Chunk merging, batching by length, bad inputs,
the model's identity in the config hash, and the up-front stop on a missing model."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import ROOT, audio_shard, rss_growth, run_cli, section_overrides, shard_files, tiny_audio_model

from kebr_data import config
from kebr_data.features import ssl_encoder as enc
from kebr_data.features.resample import at_rate
from kebr_data.media.flac import decode_flac, encode_flac
from kebr_data.stages.ssl_audio import SslAudioStage

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TOL = 1e-5


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    base = tmp_path_factory.mktemp("models")
    out = {"hubert": tiny_audio_model("hubert", base / "hubert", True),
           "wav2vec2": tiny_audio_model("wav2vec2", base / "wav2vec2", False),
           "data2vec": tiny_audio_model("data2vec", base / "data2vec", True)}
    return {k: str(v) for k, v in out.items()}


@pytest.fixture(scope="module")
def whisper_dir(tmp_path_factory):
    from whisper_to_hf import convert

    from kebr_data.asr_engines.models import bundled_tiny_en

    return str(convert(bundled_tiny_en(), tmp_path_factory.mktemp("whisper") / "tiny.en"))


def speechlike(seconds: float, sr: int = 16000, seed: int = 0) -> np.ndarray:
    """A deterministic voiced-like signal: harmonics with a wandering pitch plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 140 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    y = sum(np.sin(k * phase) / k for k in range(1, 6)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)) ** 2
    return (0.2 * y + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def flac_roundtrip(y: np.ndarray, sr: int) -> np.ndarray:
    return decode_flac(encode_flac((y * 32767).astype(np.int16), sr))[0]


def stage_rows(tmp_path, arrays, **settings):
    cfg = config.load(overrides=section_overrides("ssl_audio", settings))
    ctx = audio_shard(tmp_path, arrays)
    stage = SslAudioStage(cfg["ssl_audio"])
    assert stage.check() == []
    table = stage.run_shard(ctx)
    return stage, table


def features(table, i: int) -> np.ndarray:
    width = table.schema.field("features").type.value_type.list_size
    return np.asarray(table.column("features")[i].values.flatten()).reshape(-1, width)


def direct(model_dir: str, y: np.ndarray, hidden_states: bool = False):
    """The same model called the way its model card shows, on one clip."""
    fe = transformers.AutoFeatureExtractor.from_pretrained(model_dir, local_files_only=True)
    model = transformers.AutoModel.from_pretrained(model_dir, local_files_only=True).eval()
    with torch.inference_mode():
        out = model(**fe(y, sampling_rate=16000, return_tensors="pt"), output_hidden_states=hidden_states)
    return out


@pytest.mark.parametrize("kind", ["hubert", "wav2vec2", "data2vec"])
def test_matches_a_direct_call_at_16k_and_resampled(tmp_path, models, kind):
    y16 = speechlike(2.3)
    y22 = speechlike(1.7, sr=22050, seed=1)
    stage, table = stage_rows(tmp_path, [(y16, 16000), (y22, 22050)], model=models[kind])
    assert stage.schema.field("features").type.value_type.list_size == 32
    rows = table.to_pylist()
    want0 = direct(models[kind], flac_roundtrip(y16, 16000)).last_hidden_state[0].numpy()
    resampled = at_rate(flac_roundtrip(y22, 22050), 22050, 16000)
    import librosa

    assert np.array_equal(resampled, librosa.resample(flac_roundtrip(y22, 22050), orig_sr=22050, target_sr=16000,
                                                      res_type="soxr_hq"))
    want1 = direct(models[kind], resampled).last_hidden_state[0].numpy()
    assert rows[0]["num_frames"] == len(want0) == (len(y16) - 400) // 320 + 1
    assert np.abs(features(table, 0) - want0).max() <= TOL
    assert np.abs(features(table, 1) - want1).max() <= TOL
    assert (rows[0]["frame_rate"], rows[0]["layer"], rows[0]["num_layers"]) == (50.0, "last", 1)


def test_layer_index_all_and_mean_pooling(tmp_path, models):
    y = speechlike(1.5)
    out = direct(models["hubert"], flac_roundtrip(y, 16000), hidden_states=True)
    _, t1 = stage_rows(tmp_path, [(y, 16000)], model=models["hubert"], layer="1")
    assert np.abs(features(t1, 0) - out.hidden_states[1][0].numpy()).max() <= TOL
    stage, ta = stage_rows(tmp_path, [(y, 16000)], model=models["hubert"], layer="all")
    assert stage.schema.field("features").type.value_type.list_size == 3 * 32 and ta.column("num_layers")[0].as_py() == 3
    stacked = features(ta, 0).reshape(-1, 3, 32)
    for k in range(3):
        assert np.abs(stacked[:, k] - out.hidden_states[k][0].numpy()).max() <= TOL
    _, tm = stage_rows(tmp_path, [(y, 16000)], model=models["hubert"], pooling="mean")
    assert tm.column("num_frames")[0].as_py() == 1
    assert np.abs(features(tm, 0)[0] - out.last_hidden_state[0].numpy().mean(0)).max() <= TOL


def test_whisper_tiny_en_encoder_matches_a_direct_call(tmp_path, whisper_dir):
    y = speechlike(4.1)
    stage, table = stage_rows(tmp_path, [(y, 16000)], model=whisper_dir)
    assert stage.schema.field("features").type.value_type.list_size == 384
    fe = transformers.WhisperFeatureExtractor.from_pretrained(whisper_dir)
    model = transformers.WhisperModel.from_pretrained(whisper_dir).eval()
    with torch.inference_mode():
        want = model.encoder(fe(flac_roundtrip(y, 16000), sampling_rate=16000, return_tensors="pt").input_features)
    n = -(-len(y) // 320)
    assert table.column("num_frames")[0].as_py() == n
    assert np.abs(features(table, 0) - want.last_hidden_state[0, :n].numpy()).max() <= TOL


def test_whisper_chunks_at_most_30_s(tmp_path, whisper_dir):
    y = speechlike(33.0)
    _, table = stage_rows(tmp_path, [(y, 16000)], model=whisper_dir, max_chunk_s=60.0)
    assert table.column("num_frames")[0].as_py() == -(-len(y) // 320)


@pytest.mark.parametrize("kind", ["wav2vec2", "data2vec"])
def test_long_clips_are_merged_from_overlapping_chunks(tmp_path, models, kind):
    """Each frame is the output of the chunk that owns it, equal to a direct call on that chunk."""
    y = speechlike(5.0)
    _, table = stage_rows(tmp_path, [(y, 16000)], model=models[kind], max_chunk_s=2.0, chunk_overlap_s=0.5)
    got = features(table, 0)
    y = flac_roundtrip(y, 16000)
    assert len(got) == (len(y) - 400) // 320 + 1  # as many frames as one call on the whole clip
    starts = enc.chunk_starts(len(y), 32000, 8000)
    assert starts == [0, 24000, 48000]  # the last chunk ends at the clip's end
    bounds = [0, (24000 + 4000) // 320, (48000 + 4000) // 320, len(got)]
    for i, s in enumerate(starts):
        want = direct(models[kind], y[s:s + 32000]).last_hidden_state[0].numpy()
        lo, hi = bounds[i], bounds[i + 1]
        assert np.abs(got[lo:hi] - want[lo - s // 320:hi - s // 320]).max() <= TOL


def test_merge_cuts_overlaps_in_their_middle():
    frames = [np.arange(10)[:, None] + 100 * i for i in range(3)]
    # stride 1, chunks of 10 starting at 0, 6, 12 with overlap 4: chunk 1 owns [8, 14), chunk 2 from 14
    merged = enc.merge(frames, [0, 6, 12], 4, 1)[:, 0]
    assert merged.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 102, 103, 104, 105, 106, 107, 202, 203, 204, 205, 206, 207, 208,
                               209]


@pytest.mark.parametrize("kind", ["hubert", "wav2vec2", "data2vec"])
def test_batching_by_length_equals_one_clip_at_a_time(tmp_path, models, kind):
    clips = [(speechlike(s, seed=i), 16000) for i, s in enumerate([1.0, 2.2, 1.0, 0.7, 2.2, 1.9])]
    _, batched = stage_rows(tmp_path, clips, model=models[kind], batch_size=4)
    _, single = stage_rows(tmp_path, clips, model=models[kind], batch_size=1)
    for i in range(len(clips)):
        assert np.abs(features(batched, i) - features(single, i)).max() <= TOL
    model = enc.Encoder(models[kind], "cpu")
    groups = model.batches([16000, 35200, 16000, 11200, 35200, 30400], 4)
    assert groups == ([[3, 0, 2, 5], [1, 4]] if kind == "hubert" else [[3], [0, 2], [5], [1, 4]])


def test_bad_inputs_are_rows(tmp_path, models):
    clips = [(None, 16000), (speechlike(0.01), 16000), (speechlike(0.2), 16000), (np.zeros(16000, np.float32), 16000)]
    _, table = stage_rows(tmp_path, clips, model=models["wav2vec2"])
    rows = table.to_pylist()
    assert (rows[0]["status"], rows[0]["error"]) == ("skipped", "upstream_skipped")
    assert (rows[1]["status"], rows[1]["error"]) == ("skipped", "too_short")
    assert rows[2]["status"] == "ok" and rows[2]["num_frames"] == 9
    assert rows[3]["status"] == "ok" and np.isfinite(features(table, 3)).all()


def test_model_identity_is_in_the_config_hash(tmp_path, models):
    import shutil

    copy = shutil.copytree(models["hubert"], tmp_path / "moved")
    cfg = lambda m: config.load(overrides=[f"ssl_audio.model='{m}'"])["ssl_audio"]  # noqa: E731
    assert SslAudioStage(cfg(models["hubert"])).config_hash() == SslAudioStage(cfg(copy)).config_hash()
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert SslAudioStage(cfg(models["hubert"])).config_hash() != SslAudioStage(cfg(copy)).config_hash()


def test_missing_or_broken_model_stops_the_run_up_front(tmp_path, demo_src, models):
    assert "set ssl_audio.model" in SslAudioStage(config.defaults()["ssl_audio"]).check()[0]
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    for model, words in ((tmp_path / "nowhere", "is not a folder"), (broken, "weights (*.safetensors")):
        proc = run_cli("extract", "--src", str(demo_src), "--out", str(tmp_path / "f"), "--stages",
                       "index,audio,ssl_audio", "--set", f"ssl_audio.model='{model}'", timeout=120)
        assert proc.returncode == 2 and words in proc.stderr and "Traceback" not in proc.stderr
        assert not (tmp_path / "f").exists()
    cfg = config.load(overrides=[f"ssl_audio.model='{models['hubert']}'", "ssl_audio.layer='7'"])
    assert "outside this model's hidden states" in SslAudioStage(cfg["ssl_audio"]).check()[0]


def test_a_config_describing_a_huge_model_is_refused_before_loading(tmp_path, demo_src, models):
    """`num_hidden_layers: 1000000` once grew memory without end while the model was built: the parameter
    count, computed from config.json on the meta device, is checked against ssl_audio.max_params first."""
    import json
    import shutil

    huge = tmp_path / "huge"
    shutil.copytree(models["hubert"], huge)
    cfg = json.loads((huge / "config.json").read_text())
    (huge / "config.json").write_text(json.dumps({**cfg, "num_hidden_layers": 1000000}))
    assert "more than ssl_audio.max_params" in SslAudioStage(config.load(
        overrides=[f"ssl_audio.model='{huge}'"])["ssl_audio"]).check()[0]  # before a run that would grow without end
    proc = run_cli("extract", "--src", str(demo_src), "--out", str(tmp_path / "f"), "--stages",
                   "index,audio,ssl_audio", "--set", f"ssl_audio.model='{huge}'", timeout=120, models=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "describes 8.54e+09 parameters, more than ssl_audio.max_params = 2e+09" in proc.stderr
    assert not (tmp_path / "f").exists()
    real = sum(p.numel() for p in transformers.AutoModel.from_pretrained(models["hubert"]).parameters())
    limit = config.load(overrides=[f"ssl_audio.model='{models['hubert']}'", f"ssl_audio.max_params={real}"])
    assert SslAudioStage(limit["ssl_audio"]).check() == []
    below = config.load(overrides=[f"ssl_audio.model='{models['hubert']}'", f"ssl_audio.max_params={real - 1}"])
    assert "raise ssl_audio.max_params" in SslAudioStage(below["ssl_audio"]).check()[0]


def test_a_30_minute_clip_is_one_row_in_bounded_memory(tmp_path):
    """30 min (8 kHz, resampled to 16 kHz) through 30-s chunks: every frame, and memory that a whole-clip
    forward pass (attention over 90,000 frames: tens of GB) would blow. A one-layer 16-wide model whose
    single convolution (kernel 400, stride 320) frames the audio exactly as the standard 7-layer front end."""
    torch.manual_seed(0)
    cfg = transformers.Wav2Vec2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                      conv_dim=(8,), conv_kernel=(400,), conv_stride=(320,), num_feat_extract_layers=1,
                                      num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
    transformers.Wav2Vec2Model(cfg).eval().save_pretrained(tmp_path / "m")
    transformers.Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, do_normalize=True,
                                          return_attention_mask=False).save_pretrained(tmp_path / "m")
    y = np.tile(speechlike(1.0, sr=8000), 1800)
    ctx = audio_shard(tmp_path, [(y, 8000)])
    stage = SslAudioStage(config.load(overrides=[f"ssl_audio.model='{tmp_path / 'm'}'"])["ssl_audio"])
    table, grown = rss_growth(stage.run_shard, ctx)
    assert table.column("status")[0].as_py() == "ok"
    assert table.column("num_frames")[0].as_py() == (1800 * 16000 - 400) // 320 + 1
    assert np.isfinite(table.column("features")[0].values.values.to_numpy()).all()
    assert grown < 1.5 * 2**30, f"{grown / 2**20:.0f} MiB"


# --- the CLI: one clean run is the reference for reruns, 2 workers and a SIGKILLed worker ----------------
# index and audio run once; each scenario starts from a copy of that folder and runs ssl_audio alone.


def cli_args(model: str) -> list[str]:
    return ["--config", str(ROOT / "pipelines/demo.toml"), "--stages", "ssl_audio", "--set", f"ssl_audio.model='{model}'"]


def from_audio(audio_done, dest):
    import shutil

    return shutil.copytree(audio_done, dest)


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory, audio_done, models):
    """A clean 1-worker run and its tables' bytes (taken before anything else writes there)."""
    out = from_audio(audio_done, tmp_path_factory.mktemp("ssl-clean") / "out")
    run_cli("extract", "--out", str(out), *cli_args(models["data2vec"]), "--workers", "1", check=True, models=True)
    files = shard_files(out)
    assert any(k.startswith("ssl_audio/") for k in files)
    return out, files


def test_a_model_changed_after_a_run_is_refused_never_mixed(tmp_path, models, clean_run):
    """The model is in the config hash by its files' sha256 (a moved copy is the same model:
    test_model_identity_is_in_the_config_hash); a checkpoint saved over it is another one, refused before
    any shard mixes the two."""
    import shutil

    out = shutil.copytree(clean_run[0], tmp_path / "out")
    model = shutil.copytree(models["data2vec"], tmp_path / "model")
    weights = model / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    proc = run_cli("extract", "--out", str(out), *cli_args(str(model)), models=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "were made with another ssl_audio config" in " ".join(proc.stderr.split())
    assert shard_files(out) == clean_run[1]


def test_two_workers_and_a_forced_rerun_are_byte_identical(tmp_path, audio_done, models, clean_run):
    _, clean = clean_run
    out = from_audio(audio_done, tmp_path / "two")
    run_cli("extract", "--out", str(out), *cli_args(models["data2vec"]), "--workers", "2", check=True, models=True)
    assert shard_files(out) == clean
    run_cli("extract", "--out", str(out), *cli_args(models["data2vec"]), "--workers", "1", "--force", check=True,
            models=True)
    assert shard_files(out) == clean


def test_validate_and_exports_carry_the_frames(clean_run):
    import h5py
    import pyarrow.parquet as pq

    from kebr_data.export import export
    from kebr_data.validate import validate

    out, _ = clean_run
    assert validate(out)[1] == []
    rows = pq.read_table(out / "ssl_audio").to_pylist()
    assert [r["status"] for r in rows].count("ok") == 6
    export(out, "hdf5")
    export(out, "parquet")
    with h5py.File(out / "export/hdf5/shard-00000.h5") as f:
        assert f["ssl_audio/values"].shape[1] == 32 and f["ssl_audio"].attrs["dim"] == 32
    merged = pq.read_table(next((out / "export/parquet").glob("shard-*.parquet")))
    assert "ssl_audio.features" in merged.column_names


def test_sigkilled_worker_then_rerun_is_identical(tmp_path, audio_done, models, clean_run):
    """SIGKILL the worker while it computes an ssl_audio shard (its log says it started, no marker yet);
    the run stops uncommitted and the rerun matches the clean run byte for byte."""
    import os
    import re
    import signal
    import time

    from helpers import start_cli

    _, clean = clean_run
    args = [*cli_args(models["data2vec"]), "--workers", "1"]
    out = from_audio(audio_done, tmp_path / "out")
    proc = start_cli("extract", "--out", str(out), *args, models=True)
    deadline, killed = time.time() + 180, False
    while time.time() < deadline and proc.poll() is None and not killed:
        for log in sorted((out / "_logs/ssl_audio").glob("shard-*.log")) if (out / "_logs/ssl_audio").exists() else []:
            m = re.search(r"pid (\d+)", log.read_text())
            if m and not (out / "_done/ssl_audio" / f"{log.stem}.json").exists():
                os.kill(int(m.group(1)), signal.SIGKILL)
                killed = True
                break
        time.sleep(0.002)
    proc.communicate(timeout=180)
    if not killed:
        pytest.skip("the run finished before a worker could be killed")
    assert proc.returncode == 3
    assert run_cli("extract", "--out", str(out), *args, models=True).returncode == 0
    assert shard_files(out) == clean
