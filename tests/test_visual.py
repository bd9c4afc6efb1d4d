"""The visual stage: the parser against real OpenFace 2.2 CSVs, the subprocess path with a stand-in
FeatureExtraction that writes such CSVs, its failure modes, the pre-check and the CSV backend."""

import csv
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import OPENFACE_FIXTURES, ROOT, demo_clip, make_video, run_cli

from kebr_data import config
from kebr_data.errors import PrerequisiteError
from kebr_data.features.openface import BLOCKS, DIM, FEATURES, META, OpenFaceCsvError, parse_openface_csv
from kebr_data.media.openface import (CECLM_FILES, CLNF_MODEL, DEFAULT_MODEL, ModelChoice, OpenFaceUnavailable,
                                       choose_model)
from kebr_data.export import FORMATS
from kebr_data.export.base import ShardTables
from kebr_data.schema import PLAN, VISUAL
from kebr_data.stages.base import ShardContext
from kebr_data.stages.visual import DOCKER_HINT, IMAGE, VisualStage, find_openface

FIXTURES = OPENFACE_FIXTURES
FAKE = ROOT / "tests" / "fake_openface" / "FeatureExtraction"


def read_reference(path):
    """The CSV read the slow, obvious way: csv module, names stripped, floats."""
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    header = [h.strip() for h in rows[0]]
    return header, np.array([[float(v) for v in r] for r in rows[1:]])


# --- the 709 columns --------------------------------------------------------------------------

def test_709_columns_in_openface_order():
    assert DIM == 709 == sum(width for _, _, width in BLOCKS)
    assert [(name, FEATURES[start], FEATURES[start + width - 1]) for name, start, width in BLOCKS] == [
        ("gaze", "gaze_0_x", "gaze_angle_y"), ("eye_landmarks_2d", "eye_lmk_x_0", "eye_lmk_y_55"),
        ("eye_landmarks_3d", "eye_lmk_X_0", "eye_lmk_Z_55"), ("pose", "pose_Tx", "pose_Rz"),
        ("face_landmarks_2d", "x_0", "y_67"), ("face_landmarks_3d", "X_0", "Z_67"),
        ("pdm_params", "p_scale", "p_33"), ("au_intensity", "AU01_r", "AU45_r"),
        ("au_presence", "AU01_c", "AU45_c")]


@pytest.mark.parametrize("name", ["default.csv", "astronaut_gap.csv"])
def test_real_header_is_meta_plus_features_in_order(name):
    header, _ = read_reference(FIXTURES / name)
    assert tuple(header) == META + FEATURES


# --- parsing real OpenFace output --------------------------------------------------------------

def test_default_csv_values_equal_the_file():
    header, ref = read_reference(FIXTURES / "default.csv")
    frames = parse_openface_csv((FIXTURES / "default.csv").read_bytes())
    assert frames.features.shape == (288, 709) and frames.features.dtype == np.float32
    assert np.array_equal(frames.features, ref[:, 5:].astype(np.float32))
    assert frames.success.all() and frames.face_ratio == 1.0
    assert np.array_equal(frames.confidence, ref[:, 3].astype(np.float32))
    assert frames.fps == pytest.approx(15.0, abs=0.01)
    assert set(np.unique(frames.features[:, 691:])) <= {0.0, 1.0}  # AU presence reads 0.00/1.00


def test_failed_frames_are_zeroed_and_flagged():
    header, ref = read_reference(FIXTURES / "astronaut_gap.csv")
    frames = parse_openface_csv((FIXTURES / "astronaut_gap.csv").read_bytes())
    failed = ref[:, 4] == 0
    assert failed.sum() == 20 and np.array_equal(np.flatnonzero(failed), np.arange(40, 60))
    assert np.array_equal(frames.success, ~failed)
    assert frames.face_ratio == pytest.approx(0.8)
    assert not frames.features[failed].any()
    assert ref[failed][:, 5 + 294:5 + 430].any()  # OpenFace left stale 2D landmarks there...
    au_r = [header.index(c) for c in header if c.endswith("_r")]
    assert ref[failed][:, au_r].max() == pytest.approx(0.92)  # ...and smoothed AU intensities (frame 41)...
    assert np.array_equal(frames.features[~failed], ref[~failed][:, 5:].astype(np.float32))  # ...kept elsewhere
    assert frames.fps == pytest.approx(25.0, abs=0.01)


def test_columns_are_selected_by_name_not_position():
    header, ref = read_reference(FIXTURES / "astronaut_gap.csv")
    order = list(range(len(header)))
    order[5:] = order[5:][::-1]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow([header[i] for i in order])
    w.writerows([[repr(float(v)) for v in row[order]] for row in ref])
    frames = parse_openface_csv(buf.getvalue().encode())
    assert np.array_equal(frames.features, parse_openface_csv((FIXTURES / "astronaut_gap.csv").read_bytes()).features)


def test_bad_header_zero_rows_and_empty_fail_loudly():
    text = (FIXTURES / "default.csv").read_text()
    with pytest.raises(OpenFaceCsvError, match="lacks 1 OpenFace column.*AU45_c") as exc:
        parse_openface_csv(text.replace("AU45_c", "AU46_c").encode())
    assert exc.value.error == "bad_header"
    with pytest.raises(OpenFaceCsvError, match="no frames"):
        parse_openface_csv(text.splitlines()[0].encode() + b"\n")
    with pytest.raises(OpenFaceCsvError, match="empty"):
        parse_openface_csv(b"")


# --- the stage -----------------------------------------------------------------------------------

def run_stage(tmp_path, videos, **overrides):
    sets = [f"visual.{k}={v!r}" if isinstance(v, str) else f"visual.{k}={str(v).lower()}"
            for k, v in overrides.items()]
    cfg = config.load(overrides=sets)
    stage = VisualStage(cfg["visual"])
    rows = [{"clip_id": f"c/{i}", "status": "ok", "video_path": str(v) if v else None, "source": "folder"}
            for i, v in enumerate(videos)]
    ctx = ShardContext(0, {"plan": pa.Table.from_pylist(rows, schema=PLAN)}, tmp_path / "shardtmp")
    return stage, stage.run_shard(ctx).to_pylist()


@pytest.fixture()
def fake_env(monkeypatch, tmp_path):
    monkeypatch.setenv("KEBR_FAKE_OPENFACE_CSV", str(FIXTURES / "astronaut_gap.csv"))
    monkeypatch.setenv("KEBR_FAKE_OPENFACE_LOG", str(tmp_path / "calls.log"))
    monkeypatch.delenv("KEBR_FAKE_OPENFACE_MODE", raising=False)
    return tmp_path / "calls.log"


def test_openface_backend_runs_the_binary_on_the_video(tmp_path, fake_env):
    clip = tmp_path / "odd name; 'quoted' ü.mp4"
    shutil.copy(demo_clip(0), clip)
    stage, (row,) = run_stage(tmp_path, [clip], openface_bin=str(FAKE))
    assert row["status"] == "ok", row["message"]
    want = parse_openface_csv((FIXTURES / "astronaut_gap.csv").read_bytes())
    assert row["num_frames"] == 100 and row["face_ratio"] == pytest.approx(0.8) and row["backend"] == "openface"
    assert np.array_equal(np.array(row["features"], dtype=np.float32), want.features)
    assert row["success"] == want.success.tolist() and row["fps"] == pytest.approx(25.0, abs=0.01)
    video, fps, args = fake_env.read_text().strip().split("\t")
    assert video.endswith("/in/00000.mp4") and float(fps) == pytest.approx(25.0)  # a link to the odd name
    assert "-2Dfp -3Dfp -pdmparams -pose -aus -gaze" in args
    assert not (tmp_path / "shardtmp").exists() or not any((tmp_path / "shardtmp").iterdir())


@pytest.mark.parametrize("mode,status,error,text", [
    ("exit", "failed", "openface_error", "FeatureExtraction exit 1: Segmentation fault in the tracker"),
    ("openfail", "failed", "no_csv", "Failed to open the video file at location"),
    ("nocsv", "failed", "no_csv", "wrote no CSV"),
    ("badheader", "failed", "bad_header", "gaze_angle_x"),
    ("zerorows", "failed", "empty_csv", "no frames"),
])
def test_openface_failure_modes_become_rows(tmp_path, fake_env, monkeypatch, mode, status, error, text):
    monkeypatch.setenv("KEBR_FAKE_OPENFACE_MODE", mode)
    _, (row,) = run_stage(tmp_path, [demo_clip(1)], openface_bin=str(FAKE))
    assert (row["status"], row["error"]) == (status, error)
    assert text in row["message"] and "GStreamer" not in row["message"]


def test_openface_timeout(tmp_path, fake_env, monkeypatch):
    monkeypatch.setenv("KEBR_FAKE_OPENFACE_MODE", "hang")
    _, (row,) = run_stage(tmp_path, [demo_clip(1)], openface_bin=str(FAKE), timeout_s=1.0)
    assert (row["status"], row["error"]) == ("failed", "timeout")


def test_batches_load_the_models_once_per_batch(tmp_path, fake_env, monkeypatch):
    monkeypatch.setenv("KEBR_FAKE_OPENFACE_CALLS", str(tmp_path / "calls.txt"))
    _, rows = run_stage(tmp_path, [demo_clip(i % 6) for i in range(5)], openface_bin=str(FAKE), batch_clips=2)
    assert [r["status"] for r in rows] == ["ok"] * 5 and [r["clip_id"] for r in rows] == [f"c/{i}" for i in range(5)]
    assert (tmp_path / "calls.txt").read_text().split() == ["2", "2", "1"]


@pytest.mark.parametrize("mode,error", [("exit", "openface_error"), ("openfail", "no_csv"), ("hang", "timeout")])
def test_a_failure_in_a_batch_is_the_failing_clip_s_alone(tmp_path, fake_env, monkeypatch, mode, error):
    """Clip 2 of 5 fails: clips 0-1 are kept from the first invocation, 3-4 are run again in a second."""
    monkeypatch.setenv("KEBR_FAKE_OPENFACE_CALLS", str(tmp_path / "calls.txt"))
    monkeypatch.setenv("KEBR_FAKE_OPENFACE_MODE", mode)
    monkeypatch.setenv("KEBR_FAKE_OPENFACE_ONLY", "/in/00002.")
    _, rows = run_stage(tmp_path, [demo_clip(i) for i in range(5)], openface_bin=str(FAKE), batch_clips=8,
                        timeout_s=2.0)
    assert [(r["status"], r["error"]) for r in rows] == [("ok", None)] * 2 + [("failed", error)] + [("ok", None)] * 2
    assert (tmp_path / "calls.txt").read_text().split() == ["5", "2"]


def test_models_that_do_not_load_abort_the_shard(tmp_path, fake_env, monkeypatch):
    monkeypatch.setenv("KEBR_FAKE_OPENFACE_MODE", "noload")
    with pytest.raises(OpenFaceUnavailable, match="Could not load the landmark detector"):
        run_stage(tmp_path, [demo_clip(1)], openface_bin=str(FAKE))


def test_checks_before_openface_starts(tmp_path, fake_env, ffmpeg):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00" * 5000)
    empty = tmp_path / "empty.mp4"
    empty.touch()
    audio_only = tmp_path / "audio_only.mp4"
    subprocess.run([ffmpeg, "-loglevel", "error", "-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac",
                    str(audio_only)], check=True)
    _, rows = run_stage(tmp_path, [garbage, empty, audio_only, None], openface_bin=str(FAKE))
    assert [(r["status"], r["error"]) for r in rows] == [("failed", "no_frames"), ("failed", "empty_file"),
                                                         ("skipped", "no_video"), ("skipped", "no_video")]
    assert "audio only" in rows[2]["message"]
    assert not fake_env.exists()  # OpenFace was never started


def test_faceless_clips_are_skipped_by_openface_s_face_ratio(tmp_path, fake_env, ffmpeg):
    """One rule for a face, OpenFace's own tracking: astronaut_gap tracks 80 of 100 frames."""
    faceless = make_video(ffmpeg, tmp_path / "testsrc.mp4", seconds=1.0)  # no Haar face: OpenFace decides
    _, (kept,) = run_stage(tmp_path, [faceless], openface_bin=str(FAKE), min_face_ratio=0.8)
    _, (dropped,) = run_stage(tmp_path, [faceless], openface_bin=str(FAKE), min_face_ratio=0.81)
    assert kept["status"] == "ok" and kept["face_ratio"] == pytest.approx(0.8)
    assert (dropped["status"], dropped["error"]) == ("skipped", "no_face")
    assert "80 of 100 frames (80%), below visual.min_face_ratio = 0.81" in dropped["message"]


def test_max_fps_reencodes_first(tmp_path, fake_env):
    _, (row,) = run_stage(tmp_path, [demo_clip(2)], openface_bin=str(FAKE), max_fps=10.0)
    assert row["status"] == "ok"
    video, fps, _ = fake_env.read_text().strip().split("\t")
    assert float(fps) == pytest.approx(10.0) and video.endswith("/in/00000.mp4")


def mmsa_vision(rows, vision_len=55):
    """The `vision` array the MMSA export writes for these visual rows (given text and a label each)."""
    plan = pa.Table.from_pylist([{"clip_id": r["clip_id"], "status": "ok", "source": "folder", "split": "train",
                                  "label": 0.5, "given_text": "a clip"} for r in rows], schema=PLAN)
    tables = ShardTables(0, plan, {"visual": pa.Table.from_pylist(rows, schema=VISUAL)}, {})
    mmsa = FORMATS["mmsa"]
    data, _ = mmsa(mmsa.Options(vision_len=vision_len, allow_missing=True)).build([tables])
    return data["train"]["vision"], data["train"]["vision_lengths"]


def test_a_frame_budget_tracks_today_s_first_frames_only(tmp_path, fake_env, monkeypatch):
    """Issue #28 point 4: visual.max_frames = 55 cuts each clip to its first 55 frames before OpenFace, losslessly:
    OpenFace sees today's pixels for them (the fake writes a CRC of each decoded frame), so the rows are today's
    first 55 frames and the MMSA export (--vision-len 55) is byte for byte today's."""
    monkeypatch.setenv("KEBR_FAKE_OPENFACE_PER_FRAME", "1")
    clips = [demo_clip(0), demo_clip(4)]  # 94 and 81 frames
    whole, today = run_stage(tmp_path / "all", clips, openface_bin=str(FAKE))
    budget, cut = run_stage(tmp_path / "cut", clips, openface_bin=str(FAKE), max_frames=55)
    assert [r["num_frames"] for r in today] == [94, 81] and [r["num_frames"] for r in cut] == [55, 55]
    for a, b in zip(today, cut, strict=True):
        assert b["status"] == "ok" and b["features"] == a["features"][:55] and b["success"] == a["success"][:55]
    assert len({r["features"][0][FEATURES.index("pose_Tx")] for r in cut}) == 2  # the CRCs differ per clip
    inputs = [line.split("\t")[0] for line in fake_env.read_text().splitlines()]
    assert [Path(p).suffix for p in inputs] == [".mp4", ".mp4", ".mkv", ".mkv"]  # links, then the cuts
    vision, lengths = mmsa_vision(cut)
    want, want_lengths = mmsa_vision(today)
    assert vision.tobytes() == want.tobytes() and lengths == want_lengths == [55, 55]
    assert budget.config_hash() != whole.config_hash()


def test_a_frame_budget_with_a_lower_frame_rate_and_a_bad_video(tmp_path, fake_env, monkeypatch):
    monkeypatch.setenv("KEBR_FAKE_OPENFACE_PER_FRAME", "1")
    _, (row,) = run_stage(tmp_path, [demo_clip(2)], openface_bin=str(FAKE), max_fps=10.0, max_frames=20)
    video, fps, _ = fake_env.read_text().strip().split("\t")
    assert row["num_frames"] == 20 and float(fps) == pytest.approx(10.0) and video.endswith("/in/00000.mp4")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00" * 5000)
    _, (bad,) = run_stage(tmp_path, [garbage], openface_bin=str(FAKE), precheck=False, max_frames=55)
    assert (bad["status"], bad["error"]) == ("failed", "decode_error")
    assert bad["message"].startswith("cutting the first 55 frames failed")


def test_csv_backend_beside_the_video_and_in_a_folder(tmp_path):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"not read")
    shutil.copy(FIXTURES / "default.csv", tmp_path / "clip.mp4.csv")
    _, (beside, missing) = run_stage(tmp_path, [video, tmp_path / "other.mp4"], backend="openface-csv")
    assert beside["status"] == "ok" and beside["num_frames"] == 288 and beside["backend"] == "openface-csv"
    assert (missing["status"], missing["error"]) == ("failed", "missing_csv")
    (tmp_path / "csvs" / "c").mkdir(parents=True)
    shutil.copy(FIXTURES / "astronaut_gap.csv", tmp_path / "csvs" / "c" / "0.csv")
    _, (row,) = run_stage(tmp_path, [None], backend="openface-csv", csv_dir=str(tmp_path / "csvs"))
    assert row["status"] == "ok" and row["num_frames"] == 100


def test_missing_binary_message_names_docker_and_csv_backend(monkeypatch, tmp_path):
    monkeypatch.delenv("KEBR_OPENFACE_BIN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(PrerequisiteError) as exc:
        find_openface("")
    assert "docker" in str(exc.value) and "openface-csv" in str(exc.value)
    monkeypatch.setenv("KEBR_OPENFACE_BIN", str(FAKE))
    assert find_openface("") == str(FAKE)


def test_extract_with_visual_through_the_cli(tmp_path, demo_src, fake_env):
    out = tmp_path / "f"
    proc = run_cli("extract", "--src", str(demo_src), "--out", str(out), "--config",
                   str(ROOT / "pipelines/demo.toml"), "--stages", "index,visual",
                   "--set", f"visual.openface_bin='{FAKE}'", env={"KEBR_FAKE_OPENFACE_LOG": ""})
    assert proc.returncode == 0, proc.stderr
    rows = {r["clip_id"]: r for r in pq.read_table(out / "visual").to_pylist()}
    assert sum(r["status"] == "ok" for r in rows.values()) == 7  # the silent clip still has a face
    assert rows["id00003/kEbRdEmOe05/00002"]["error"] == "no_frames"  # the truncated MP4
    assert all(len(r["features"][0]) == 709 for r in rows.values() if r["status"] == "ok")


def test_prerequisite_failure_before_any_work(tmp_path, demo_src):
    path = f"{os.path.dirname(sys.executable)}:/usr/bin:/bin"  # no FeatureExtraction there
    proc = run_cli("extract", "--src", str(demo_src), "--out", str(tmp_path / "f"), "--stages", "index,visual",
                   env={"KEBR_OPENFACE_BIN": "", "PATH": path})
    assert proc.returncode == 2 and "FeatureExtraction was not found" in proc.stderr
    assert not (tmp_path / "f").exists()


# --- the model probe -------------------------------------------------------------------------------

def install_fake(root, *model_files):
    """The stand-in binary in a folder of its own, with (empty) model files beside it."""
    (root / "bin").mkdir(parents=True)
    binary = root / "bin" / "FeatureExtraction"
    shutil.copy(FAKE, binary)
    for name in model_files:
        (root / "bin" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "bin" / name).write_text("model")
    return str(binary)


def visual_stage(**overrides):
    return VisualStage(config.load(overrides=[f"visual.{k}={v!r}" if isinstance(v, str) else f"visual.{k}={v}"
                                              for k, v in overrides.items()])["visual"])


def test_model_choice_ceclm_clnf_or_user(tmp_path):
    ceclm = install_fake(tmp_path / "full", DEFAULT_MODEL, CLNF_MODEL, *CECLM_FILES)
    clnf = install_fake(tmp_path / "clnf", DEFAULT_MODEL, CLNF_MODEL, *CECLM_FILES[:3])  # one download failed
    assert choose_model(ceclm, []) == ModelChoice("ce-clm", ())
    choice = choose_model(clnf, [])
    assert (choice.name, choice.args) == ("clnf", ("-mloc", CLNF_MODEL)) and CECLM_FILES[3] in choice.reason
    assert choose_model(clnf, ["-mloc", "model/main_clm_general.txt"]) == ModelChoice("user", ())


def test_model_is_in_the_config_hash_and_versions(tmp_path, fake_env, caplog):
    ceclm = visual_stage(openface_bin=install_fake(tmp_path / "full", DEFAULT_MODEL, CLNF_MODEL, *CECLM_FILES))
    clnf = visual_stage(openface_bin=install_fake(tmp_path / "clnf", CLNF_MODEL))
    assert ceclm.config_hash() != clnf.config_hash()
    assert ceclm.check() == [] and "CE-CLM" not in caplog.text
    assert clnf.check() == [] and f"using the CLNF model, -mloc {CLNF_MODEL}" in caplog.text
    versions = clnf.versions()
    assert versions["openface_model"] == f"clnf -mloc {CLNF_MODEL}"
    assert versions["openface_sha256"] != ceclm.versions()["openface_sha256"]  # the model files differ
    _, (row,) = run_stage(tmp_path, [demo_clip(0)], openface_bin=clnf.settings.openface_bin)
    assert row["status"] == "ok" and f"-mloc {CLNF_MODEL}" in fake_env.read_text()


def test_probe_failure_is_one_message_before_any_work(tmp_path, fake_env, monkeypatch):
    monkeypatch.setenv("KEBR_FAKE_OPENFACE_MODE", "noload")
    (problem,) = visual_stage(openface_bin=str(FAKE)).check()
    assert "fails on a probe clip" in problem and "Could not load the landmark detector" in problem
    assert "build_openface.sh" in problem


def test_one_image_tag_in_the_hint_and_the_docker_docs():
    tags = {line.split("-t ")[1].split()[0] for path in ("docker/README.md", "docker/Dockerfile", "README.md")
            for line in (ROOT / path).read_text().splitlines() if "docker build -t " in line}
    assert f"docker build -t {IMAGE} " in DOCKER_HINT and tags <= {IMAGE, f"{IMAGE}-gpu"}
