"""One output folder, one build of each external program: run.json pins the ffmpeg (and OpenFace) a stage
first ran with; another build is refused naming both, `--set audio.ffmpeg=` or `--force` are the ways
out, a forced run that was interrupted is finished with the new build, and `validate` reports a folder
whose shards were made by several builds.

A second ffmpeg build without a second download: a wrapper script named `ffmpeg` on PATH that runs the
real one. It is another file (another sha256), which is what the pin compares; it cannot know that the
wrapper decodes alike, so it must refuse it as it would a system ffmpeg that appeared on PATH."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest
from helpers import run_cli, write_wav

from kebr_data import config
from kebr_data.errors import StaleOutputError
from kebr_data.media.binaries import binary_sha256
from kebr_data.pipeline import pins, run_record
from kebr_data.stages.visual import VisualStage
from kebr_data.storage.layout import OutputDir
from kebr_data.validate import validate


def wrapper(folder: Path, target: str, name: str = "ffmpeg", extra: str = "") -> Path:
    """An executable `name` in `folder` that runs `target` with its arguments."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f'#!/bin/sh\nexec "{target}" "$@"\n{extra}')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture(scope="module")
def decoded_once(tmp_path_factory, ffmpeg):
    """Two clips in two shards, decoded by the default ffmpeg."""
    src = tmp_path_factory.mktemp("pins") / "src"
    src.mkdir()
    for name in ("a", "b"):
        write_wav(src / f"{name}.wav", 0.3)
    out = src.parent / "out"
    run_cli("extract", "--src", str(src), "--out", str(out), "--stages", "index,audio", "--workers", "1",
            "--set", "index.shard_size=1", check=True)
    return out


@pytest.fixture()
def decoded(decoded_once, tmp_path, ffmpeg):
    """A copy of `decoded_once`, and a PATH whose ffmpeg is another build."""
    out = Path(shutil.copytree(decoded_once, tmp_path / "out"))
    other = wrapper(tmp_path / "bin", ffmpeg)
    env = {"PATH": f"{other.parent}{os.pathsep}{os.environ['PATH']}", "KEBR_FFMPEG": ""}
    return out, other, env


def test_another_ffmpeg_on_path_is_refused_naming_both_and_the_fixes(decoded, ffmpeg):
    out, other, env = decoded
    pinned = json.loads((out / "run.json").read_text())["tools"]["audio"]["ffmpeg"]
    assert (pinned["path"], pinned["sha256"]) == (ffmpeg, binary_sha256(ffmpeg))
    assert pinned["kind"] in ("imageio-ffmpeg", "PATH") and pinned["version"].startswith("ffmpeg version")
    before = (out / "run.json").read_bytes()
    refused = run_cli("extract", "--out", str(out), "--stages", "audio", env=env)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
    err = " ".join(refused.stderr.split())
    assert f"{ffmpeg} (from {pinned['kind']}" in err and f"{other} (from PATH" in err
    assert f"--set audio.ffmpeg={ffmpeg}" in err and "--force --stages audio" in err
    assert (out / "run.json").read_bytes() == before
    kept = run_cli("extract", "--out", str(out), "--stages", "audio", "--set", f"audio.ffmpeg='{ffmpeg}'", env=env)
    assert kept.returncode == 0, kept.stderr


def test_force_pins_the_new_build_and_an_interrupted_force_is_finished_with_it(decoded):
    out, other, env = decoded
    run_cli("extract", "--out", str(out), "--stages", "audio", "--force", "--workers", "1", env=env, check=True)
    assert json.loads((out / "run.json").read_text())["tools"]["audio"]["ffmpeg"]["path"] == str(other)
    assert validate(out)[1] == []
    # as a --force run killed after its first shard leaves it: shard 1 still made by the old build
    marker = out / "_done" / "audio" / "shard-00001.json"
    data = json.loads(marker.read_text())
    data["versions"]["ffmpeg_sha256"] = "0" * 16
    marker.write_text(json.dumps(data))
    (problem,) = validate(out)[1]
    assert problem.stage == "audio" and "different ffmpeg builds" in problem.what and "0" * 16 in problem.what
    run_cli("extract", "--out", str(out), "--stages", "audio", "--workers", "1", env=env, check=True)
    assert validate(out)[1] == []
    assert json.loads(marker.read_text())["versions"]["ffmpeg_sha256"] == binary_sha256(str(other))


def test_another_openface_build_is_refused_too(tmp_path):
    fake = Path(__file__).parent / "fake_openface" / "FeatureExtraction"
    out = OutputDir(tmp_path / "out")
    out.root.mkdir()

    def stage(binary: Path) -> VisualStage:
        return VisualStage(config.load(overrides=[f"visual.openface_bin='{binary}'"])["visual"])

    first = wrapper(tmp_path / "a", str(fake), "FeatureExtraction")
    tools = pins.check_tools(out, [stage(first)], force=False)
    run_record.record(out, config.load(), "test", ["visual"], None, tools=tools)
    assert pins.check_tools(out, [stage(first)], force=False) == tools
    assert pins.check_tools(out, [stage(wrapper(tmp_path / "c", str(fake), "FeatureExtraction", "# other\n"))],
                            force=False) != tools  # no visual shard done yet: nothing to mix, it re-pins
    (out.root / "_done" / "visual").mkdir(parents=True)
    (out.root / "_done" / "visual" / "shard-00000.json").write_text("{}")  # a shard done with the pinned build
    second = wrapper(tmp_path / "b", str(fake), "FeatureExtraction", "# rebuilt\n")  # another build
    with pytest.raises(StaleOutputError, match="--set visual.openface_bin="):
        pins.check_tools(out, [stage(second)], force=False)
    assert pins.check_tools(out, [stage(second)], force=True)["visual"]["openface"]["path"] == str(second)
