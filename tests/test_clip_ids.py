import pytest

from kebr_data.clip_ids import check_clip_id, clip_id_problem


@pytest.mark.parametrize("good", ["id00001/abc-_DEF12/00001", "video$_$3", "a b/c'd;e", "été/日本語", "x.y"])
def test_accepted(good):
    assert clip_id_problem(good) is None
    assert check_clip_id(good) == good


@pytest.mark.parametrize("bad,reason", [
    ("", "empty"), ("../etc/passwd", "'..'"), ("a/../../b", "'..'"), ("/abs/path", "absolute"),
    ("C:/x", "absolute"), ("a\nb", "control"), ("a\x00b", "control"), ("a\\b", "backslash"),
    ("a//b", "empty path segment"), ("./a", "'.'"), ("x" * 600, "longer"),
])
def test_rejected(bad, reason):
    assert reason in clip_id_problem(bad)
    with pytest.raises(ValueError):
        check_clip_id(bad)
