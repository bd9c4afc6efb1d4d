import pytest

from kebr_data.deps import missing, require
from kebr_data.errors import PrerequisiteError


def test_missing_extra_names_the_pip_command():
    with pytest.raises(PrerequisiteError, match=r"pip install 'kebr-toolkit\[asr\]'") as exc:
        require("faster_whisper_not_installed_here", "asr", "the asr stage (faster-whisper)")
    assert "the asr stage (faster-whisper) needs the Python package 'faster_whisper_not_installed_here'" in str(exc.value)


def test_present_module_is_returned():
    assert require("json", "dev", "x").dumps([1]) == "[1]"
    assert missing("json", "dev", "x") is None
    assert "kebr-toolkit[ray]" in missing("ray_nope", "ray", "the ray executor")


def test_missing_base_dependency_names_its_requirement_not_an_extra():
    from kebr_data.deps import CV2
    msg = missing("cv2_not_installed_here", None, "the visual pre-check", CV2)
    assert "pip install 'opencv-python>=4.8,<5'" in msg and "kebr-toolkit[" not in msg
    assert "base dependency" in msg
