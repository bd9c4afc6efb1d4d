"""The video_encoder stage with a tiny random VideoMAE saved here with save_pretrained: equal to a
direct call of the model on the same crops, identical across reruns and 1 vs 2 workers, exported,
resumable after SIGKILL (faces and video_encoder), and a missing model stops the run up front. One
clean run of a 14-clip corpus is the reference of every comparison."""

from __future__ import annotations

import json
import math
import shutil

import cv2
import h5py
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from helpers import DEMO, kill_mid_shard, run_cli, shard_files
from transformers import VideoMAEConfig, VideoMAEModel

from kebr_data import config
from kebr_data.schema import rows_to_batch
from kebr_data.stages.base import ClipInput, ShardContext
from kebr_data.stages.video_encoder import VideoEncoderStage

DIM = 768  # the tiny model's width, VideoMAE-base's

TINY = dict(image_size=32, patch_size=16, num_frames=4, tubelet_size=2, hidden_size=DIM, num_hidden_layers=1,
            num_attention_heads=4, intermediate_size=64)
MEAN, STD = [0.45, 0.45, 0.4], [0.25, 0.25, 0.2]


def save_tiny(dest, seed=0, **changes):
    torch.manual_seed(seed)
    VideoMAEModel(VideoMAEConfig(**{**TINY, **changes})).save_pretrained(dest)
    (dest / "preprocessor_config.json").write_text(json.dumps({"image_mean": MEAN, "image_std": STD}))
    return dest


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("model") / "tiny-videomae")


def run_args(model, workers=1):
    return ["--layout", "folder", "--stages", "index,audio,faces,video_encoder", "--set", "index.shard_size=7",
            "--set", f"video_encoder.model='{model}'", "--max-failed", "1", "--workers", str(workers)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """14 clips in 2 shards of 7: the demo (with its clip without audio and its corrupt one) and its 6 good clips
    again, so the second shard has 6 good clips after the corrupt one (room to SIGKILL it mid-shard)."""
    src = tmp_path_factory.mktemp("corpus") / "src"
    shutil.copytree(DEMO / "mp4", src / "copy0")
    shutil.copytree(DEMO / "mp4", src / "copy1", ignore=shutil.ignore_patterns("id00003"))
    return src


@pytest.fixture(scope="module")
def reference(corpus, tiny, tmp_path_factory):
    """One clean 1-worker run: the reference of every comparison below, and its tables' bytes (taken before
    the export test writes there)."""
    out = tmp_path_factory.mktemp("ref") / "out"
    run_cli("extract", "--src", str(corpus), "--out", str(out), *run_args(tiny), check=True, models=True)
    return out, shard_files(out)


def direct(model_dir, crops):
    """The crops through VideoMAEModel called directly: decode, [0, 1], bilinear to 32 px, normalise,
    windows of 4 (last padded), spatial mean of last_hidden_state, ceil(T / 2) tokens."""
    model = VideoMAEModel.from_pretrained(str(model_dir), local_files_only=True).eval()
    rgb = np.stack([cv2.cvtColor(cv2.imdecode(np.frombuffer(c, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
                    for c in crops])
    x = torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 255
    x = torch.nn.functional.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    pad = -len(x) % 4
    x = torch.cat([x] + [x[-1:]] * pad).reshape(-1, 4, 3, 32, 32)
    with torch.no_grad():
        hidden = model(pixel_values=x).last_hidden_state  # windows × (2 × 2 × 2) tokens × D
    tokens = hidden.reshape(len(x), 2, 4, DIM).mean(dim=2).reshape(-1, DIM)
    return tokens[:math.ceil(len(crops) / 2)].numpy()


@pytest.mark.slow
def test_features_equal_a_direct_call_of_the_model(reference, tiny):
    out, _ = reference
    faces = pq.read_table(out / "faces").to_pylist()
    encoded = pq.read_table(out / "video_encoder").to_pylist()
    checked = 0
    for f, e in zip(faces, encoded, strict=True):
        assert f["clip_id"] == e["clip_id"]
        if f["status"] != "ok":
            assert e["status"] == "skipped" and e["error"] == f"upstream_{f['status']}"
            continue
        got = np.array(e["features"], np.float32)
        want = direct(tiny, f["crops"])
        assert got.shape == want.shape == (math.ceil(len(f["crops"]) / 2), DIM)
        assert np.abs(got - want).max() <= 1e-5
        assert e["frame_rate"] == 5.0 and e["num_frames"] == len(got)
        checked += 1
    assert checked == 13  # all but the corrupt clip (the one without audio is cropped: selection largest)


def index_and_audio(reference, dest):
    """A copy of the reference run with only its index and audio stages (faces and video_encoder to redo)."""
    return shutil.copytree(reference[0], dest, ignore=shutil.ignore_patterns("export", "faces", "video_encoder"))


@pytest.mark.slow
def test_two_workers_and_a_rerun_are_byte_identical(corpus, reference, tiny, tmp_path):
    _, files = reference
    out = index_and_audio(reference, tmp_path / "two")
    run_cli("extract", "--src", str(corpus), "--out", str(out), *run_args(tiny, 2), check=True, models=True)
    assert shard_files(out) == files and any(k.startswith("video_encoder/") for k in files)
    proc = run_cli("extract", "--src", str(corpus), "--out", str(out), *run_args(tiny, 2), check=True, models=True)
    assert shard_files(out) == files, proc.stderr


def test_mean_pooling_is_the_mean_of_the_frames(reference, tiny, tmp_path):
    out, _ = reference
    f = pq.read_table(out / "faces").to_pylist()[0]
    frames = pq.read_table(out / "video_encoder").to_pylist()[0]["features"]
    cfg = config.load(overrides=[f"video_encoder.model='{tiny}'", "video_encoder.pooling='mean'"])
    r = VideoEncoderStage(cfg["video_encoder"]).process(ClipInput("c", {}, {"faces": f}),
                                                        ShardContext(0, {}, tmp_path))
    assert r["features"].shape == (1, DIM) and r["num_frames"] == 1
    assert np.abs(r["features"][0] - np.array(frames, np.float32).mean(axis=0)).max() <= 1e-6


@pytest.mark.parametrize("n", [1, 2, 5])
def test_short_clips_pad_the_last_window(reference, tiny, tmp_path, n):
    out, _ = reference
    f = pq.read_table(out / "faces").to_pylist()[0]
    f = {**f, "crops": f["crops"][:n]}  # a 0.1-0.5 s clip: one window, padded with its last frame
    cfg = config.load(overrides=[f"video_encoder.model='{tiny}'"])["video_encoder"]
    r = VideoEncoderStage(cfg).process(ClipInput("c", {}, {"faces": f}), ShardContext(0, {}, tmp_path))
    assert r["features"].shape == (math.ceil(n / 2), DIM)
    assert np.abs(r["features"] - direct(tiny, f["crops"])).max() <= 1e-5


def test_a_corrupt_crop_is_a_failed_row(tiny, tmp_path):
    cfg = config.load(overrides=[f"video_encoder.model='{tiny}'"])["video_encoder"]
    clip = ClipInput("c", {}, {"faces": {"status": "ok", "fps": 10.0, "start_s": 0.0, "crops": [b"not a jpeg"]}})
    r = VideoEncoderStage(cfg)._clip_row(clip, ShardContext(0, {}, tmp_path))
    assert (r["status"], r["error"]) == ("failed", "decode_error")


def test_export_carries_the_features_and_leaves_out_the_crops(reference):
    from kebr_data.export import export

    out, _ = reference
    export(out, "hdf5")
    export(out, "parquet")
    table = pq.read_table(out / "video_encoder/shard-00000.parquet")
    with h5py.File(out / "export/hdf5/shard-00000.h5") as f:
        values = f["video_encoder/values"][()]
        assert values.shape == (sum(table.column("num_frames").fill_null(0).to_pylist()), DIM)
        first = np.array(table.column("features")[0].as_py(), np.float32)
        assert np.array_equal(values[:len(first)], first)
    merged = pq.read_table(out / "export/parquet/shard-00000.parquet")
    assert "video_encoder.features" in merged.column_names and "faces.face_ratio" in merged.column_names
    assert "faces.crops" not in merged.column_names


def test_the_model_files_are_in_the_config_hash(tiny, tmp_path):
    other = save_tiny(tmp_path / "other", seed=1)
    def hash_of(path):
        return VideoEncoderStage(config.load(overrides=[f"video_encoder.model='{path}'"])["video_encoder"]).config_hash()
    assert hash_of(tiny) == hash_of(tiny) != hash_of(other)


@pytest.mark.parametrize("model,message", [
    ("", "video_encoder.model is not set"),
    ("/nonexistent/videomae", "is not a folder"),
])
def test_a_missing_model_stops_the_run_up_front(tmp_path, model, message):
    out = tmp_path / "out"
    proc = run_cli("extract", "--src", str(DEMO), "--out", str(out), "--stages", "index,audio,faces,video_encoder",
                   "--set", f"video_encoder.model='{model}'")
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
    assert not (out / "_done/faces").exists()


def test_a_config_describing_a_huge_model_is_refused_before_loading(tiny, tmp_path):
    huge = tmp_path / "huge"
    shutil.copytree(tiny, huge)
    cfg = json.loads((huge / "config.json").read_text())
    (huge / "config.json").write_text(json.dumps({**cfg, "num_hidden_layers": 1000000}))
    (problem,) = VideoEncoderStage(config.load(overrides=[f"video_encoder.model='{huge}'"])["video_encoder"]).check()
    assert "parameters, more than video_encoder.max_params = 2e+09" in problem
    assert VideoEncoderStage(config.load(overrides=[f"video_encoder.model='{tiny}'"])["video_encoder"]).check() == []


def test_the_width_comes_from_the_model_and_pickled_weights_are_refused(reference, tmp_path):
    out, _ = reference
    f = pq.read_table(out / "faces").to_pylist()[0]
    narrow = save_tiny(tmp_path / "narrow", hidden_size=64)
    stage = VideoEncoderStage(config.load(overrides=[f"video_encoder.model='{narrow}'"])["video_encoder"])
    assert stage.check() == [] and stage.frame_columns() == {"features": 0}  # the class: any width
    assert stage.schema.field("features").type.value_type.list_size == 64
    row = {"clip_id": "c", "status": "ok", **stage.process(ClipInput("c", {}, {"faces": f}), ShardContext(0, {}, tmp_path))}
    table = rows_to_batch([row], stage.schema)
    assert np.array(table.column("features")[0].as_py()).shape == (math.ceil(len(f["crops"]) / 2), 64)
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy(narrow / "config.json", pickled / "config.json")
    (pickled / "pytorch_model.bin").write_bytes(b"")
    cfg = config.load(overrides=[f"video_encoder.model='{pickled}'"])["video_encoder"]
    assert "no .safetensors" in VideoEncoderStage(cfg).check()[0]


def test_swin3d_t_runs_only_where_torchvision_imports(tmp_path):
    try:
        from torchvision.models.video import swin3d_t
    except Exception:  # noqa: BLE001 - the PyPI torchvision fails to load with this CPU torch
        cfg = config.load(overrides=["video_encoder.model_type='swin3d_t'", f"video_encoder.model='{tmp_path}'"])
        (problem,) = VideoEncoderStage(cfg["video_encoder"]).check()
        assert "needs torchvision" in problem
        pytest.skip("torchvision does not import here: swin3d_t is refused up front (checked above)")
    from kebr_data.features.video_models import VideoModel

    torch.manual_seed(0)
    net = swin3d_t(weights=None).eval()
    torch.save(net.state_dict(), tmp_path / "swin3d_t.pt")
    frames = np.random.default_rng(0).integers(0, 256, (6, 128, 128, 3), dtype=np.uint8)
    got = VideoModel(tmp_path / "swin3d_t.pt", "swin3d_t").encode(frames)
    x = VideoModel(tmp_path / "swin3d_t.pt", "swin3d_t").windows(
        VideoModel(tmp_path / "swin3d_t.pt", "swin3d_t").pixels(frames)).permute(0, 2, 1, 3, 4)
    with torch.no_grad():
        want = net.norm(net.features(net.patch_embed(x))).mean(dim=(2, 3)).reshape(-1, DIM)[:3].numpy()
    assert np.abs(got - want).max() <= 1e-5


# --- SIGKILL and resume ----------------------------------------------------------------------------


@pytest.mark.slow
def test_sigkill_mid_shard_of_each_stage_then_rerun_is_identical(corpus, reference, tiny, tmp_path):
    """SIGKILL the worker mid-way through a faces shard; the resumed run is killed again mid-way through a
    video_encoder shard; the final rerun equals the clean run byte for byte."""
    _, files = reference
    for attempt in range(5):
        out = index_and_audio(reference, tmp_path / f"out{attempt}")
        for stage in ("faces", "video_encoder"):
            shard, _ = kill_mid_shard(corpus, out, run_args(tiny), stage, timeout=300, models=True)
            if (out / f"_done/{stage}/shard-{shard:05d}.json").exists():
                break  # the shard committed before the kill landed: start over in a fresh folder
        else:
            break
    else:
        pytest.fail("could not interrupt a faces and a video_encoder shard before their commits in 5 attempts")
    proc = run_cli("extract", "--src", str(corpus), "--out", str(out), *run_args(tiny), models=True)
    assert proc.returncode == 0, proc.stderr
    assert shard_files(out) == files
