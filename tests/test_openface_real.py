"""The visual stage against a real OpenFace 2.2 build (marker `openface`): set KEBR_OPENFACE_BIN to its
FeatureExtraction (docs/openface.md, "Building OpenFace for the real-binary tests"); skipped otherwise.

Every value is compared with a bare FeatureExtraction run on the same clip, the one way OpenFace's
users call it.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from helpers import ROOT, demo_clip

from kebr_data import config
from kebr_data.features.openface import parse_openface_csv
from kebr_data.media.openface import FLAGS, choose_model
from kebr_data.schema import PLAN
from kebr_data.stages.base import ShardContext
from kebr_data.stages.visual import VisualStage

BIN = os.environ.get("KEBR_OPENFACE_BIN", "")
pytestmark = [pytest.mark.openface,
              pytest.mark.skipif(not BIN, reason="KEBR_OPENFACE_BIN is not set: no real OpenFace build to test "
                                                 "(see docs/openface.md, 'Building OpenFace for the real-binary tests')")]


def stage_for(**overrides) -> VisualStage:
    sets = [f"visual.openface_bin={BIN!r}"] + [f"visual.{k}={v}" for k, v in overrides.items()]
    return VisualStage(config.load(overrides=sets)["visual"])


def run_stage(tmp_path, videos, **overrides):
    stage = stage_for(**overrides)
    rows = [{"clip_id": f"c/{i}", "status": "ok", "video_path": str(v), "source": "folder"}
            for i, v in enumerate(videos)]
    ctx = ShardContext(0, {"plan": pa.Table.from_pylist(rows, schema=PLAN)}, tmp_path / "shardtmp")
    return stage.run_shard(ctx).to_pylist()


def bare(video: Path, out: Path):
    """FeatureExtraction on one clip, as its users run it (with the model the stage picked)."""
    model = choose_model(BIN, [])
    subprocess.run([BIN, "-f", str(video), "-out_dir", str(out), *FLAGS, *model.args], capture_output=True,
                   check=True)
    return parse_openface_csv((out / f"{video.stem}.csv").read_bytes())


def rotated_face_video(path: Path, degrees: float, frames: int = 25) -> Path:
    """scikit-image's astronaut, face rotated in-plane by `degrees`, as an MJPG clip."""
    import cv2
    from skimage import data

    image = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    h, w = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2, h / 4), degrees, 1.0)  # about the face
    rotated = cv2.warpAffine(image, matrix, (w, h), borderMode=cv2.BORDER_REFLECT)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (w, h))
    for _ in range(frames):
        writer.write(rotated)
    writer.release()
    return path


def test_batch_rows_equal_bare_runs(tmp_path):
    clips = [demo_clip(i) for i in range(3)]
    rows = run_stage(tmp_path, clips, batch_clips=3)
    for i, (clip, row) in enumerate(zip(clips, rows, strict=True)):
        want = bare(clip, tmp_path / f"bare{i}")
        assert row["status"] == "ok", row["message"]
        assert np.array_equal(np.array(row["features"], dtype=np.float32), want.features)
        assert row["success"] == want.success.tolist()
        assert np.array_equal(np.array(row["confidence"], dtype=np.float32), want.confidence)


@pytest.mark.parametrize("degrees", [30, 45])
def test_rotated_face_is_tracked_not_skipped(tmp_path, degrees):
    video = rotated_face_video(tmp_path / f"rot{degrees}.avi", degrees)
    (row,) = run_stage(tmp_path, [video])
    assert row["status"] == "ok", row["message"]
    assert row["face_ratio"] > 0.9


def test_probe_picks_a_loadable_model_and_records_it(tmp_path):
    stage = stage_for()
    assert stage.check() == []
    versions = stage.versions()
    assert versions["openface_model"].split()[0] in ("ce-clm", "clnf") and len(versions["openface_sha256"]) == 16


def test_probe_fails_on_a_broken_install(tmp_path):
    broken = tmp_path / "openface"
    shutil.copytree(Path(BIN).resolve().parent, broken)
    shutil.rmtree(broken / "model" / "pdms")
    (problem,) = VisualStage(config.load(overrides=[f"visual.openface_bin={str(broken / 'FeatureExtraction')!r}"])
                             ["visual"]).check()
    assert "fails on a probe clip" in problem and "Could not load the landmark detector" in problem


def openface_processes(marker: str) -> list[int]:
    """Live FeatureExtraction processes whose command line mentions `marker`."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline and cmdline[0].endswith(b"FeatureExtraction") and marker.encode() in b" ".join(cmdline):
            found.append(int(proc.name))
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux only")
def test_sigkill_of_the_run_leaves_no_openface_behind(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(8):
        shutil.copy(demo_clip(i % 6), src / f"clip{i}.mp4")
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "kebr_data", "extract", "--src", str(src), "--out", str(out),
                             "--layout", "folder", "--stages", "index,visual", "--workers", "1",
                             "--set", f"visual.openface_bin={BIN!r}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 120
        while not openface_processes(str(out)) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert openface_processes(str(out)), "OpenFace never started"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 10
        while openface_processes(str(out)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert openface_processes(str(out)) == []
    finally:
        if proc.poll() is None:
            proc.kill()


def test_build_script_self_check_passes_and_fails_on_a_broken_install(tmp_path):
    """docker/build_openface.sh check runs the installed binary on the bundled sample video."""
    prefix = Path(BIN).resolve().parents[1]
    if not (prefix / "selfcheck").is_dir():
        pytest.skip(f"{prefix} was not installed by docker/build_openface.sh (no selfcheck/ folder)")
    script = str(ROOT / "docker" / "build_openface.sh")
    good = subprocess.run(["bash", script, "check", str(prefix)], capture_output=True, text=True)
    assert good.returncode == 0 and "self-check ok" in good.stdout, good.stderr
    broken = tmp_path / "openface"
    shutil.copytree(prefix, broken)
    shutil.rmtree(broken / "bin" / "model" / "pdms")
    bad = subprocess.run(["bash", script, "check", str(broken)], capture_output=True, text=True)
    assert bad.returncode == 1 and "self-check FAILED" in bad.stderr
