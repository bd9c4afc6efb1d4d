"""`kebr-train import-mmsa` applies the index stage's rules (finite float32 labels, finite features once
COVAREP's -inf is zeroed, valid ids unique across splits after NFC), refusing a pickle that breaks one
with one line naming the samples and writing nothing; `kebr-data validate` finds non-finite labels and
features in committed tables; a pickle of another shape is one line, exit 2."""

from __future__ import annotations

import pickle
import unicodedata

import numpy as np
import pytest

from kebr_data.errors import PlanError
from kebr_data.mmsa_import import import_mmsa, load_mmsa_pickle
from kebr_data.validate import validate


def part(n: int, offset: int) -> dict:
    rng = np.random.default_rng(offset)
    return {"id": [f"vid{offset + i}$_${i}" for i in range(n)], "raw_text": ["it was good fun"] * n,
            "audio": rng.standard_normal((n, 6, 5)).astype(np.float32),
            "vision": rng.standard_normal((n, 4, 20)).astype(np.float32),
            "audio_lengths": [6] * n, "vision_lengths": [4] * n,
            "regression_labels": rng.uniform(-3, 3, n).astype(np.float32)}


def splits() -> dict:
    return {"train": part(4, 0), "valid": part(2, 100), "test": part(2, 200)}


def _label(data, value):
    data["train"]["regression_labels"] = np.array([0.5, value, 1.0, 2.0], dtype=np.float64)


def _audio_nan(data):
    data["train"]["audio"][1] = np.nan


def _vision_inf(data):
    data["train"]["vision"][1] = np.inf


def _same_id_in_every_split(data):
    data["valid"]["id"][0] = data["test"]["id"][0] = data["train"]["id"][1]


def _nfc_nfd(data):
    data["train"]["id"][1] = unicodedata.normalize("NFC", "café$_$1")
    data["valid"]["id"][0] = unicodedata.normalize("NFD", "café$_$1")


@pytest.mark.parametrize("break_it, reason", [
    (lambda d: _label(d, np.inf), "label inf is not finite"),
    (lambda d: _label(d, -np.inf), "label -inf is not finite"),
    (lambda d: _label(d, 1e40), "outside float32's range"),
    (_audio_nan, "audio features contain NaN"),
    (_vision_inf, "vision features contain NaN or +infinity"),
    (_same_id_in_every_split, "duplicate id (also in train"),
    (_nfc_nfd, "duplicate id (also in train spelt 'café$_$1': NFC and NFD spellings are one id)"),
])
def test_a_sample_that_breaks_an_index_rule_refuses_the_import(tmp_path, break_it, reason):
    data = splits()
    break_it(data)
    with pytest.raises(PlanError, match="fix or drop them in the pickle") as refused:
        import_mmsa(data, tmp_path / "f")
    bad = 2 if break_it is _same_id_in_every_split else 1  # the valid and the test copy
    assert str(refused.value).startswith(f"{bad} sample(s)") and reason in str(refused.value)
    assert not (tmp_path / "f").exists()


def test_the_refusal_names_the_first_ten_samples_and_counts_them(tmp_path):
    data = {"train": part(12, 0)}
    data["train"]["regression_labels"][:] = np.inf
    with pytest.raises(PlanError) as refused:
        import_mmsa(data, tmp_path / "f")
    message = str(refused.value)
    assert message.startswith("12 sample(s)") and "(and 2 more)" in message
    assert "'vid9$_$9'" in message and "'vid10$_$10'" not in message and "\n" not in message


def test_nan_labels_stay_unlabelled_and_neg_inf_features_become_zero(tmp_path):
    """MMSA's own conventions still hold: NaN is no label, COVAREP's -inf is 0."""
    data = splits()
    data["train"]["regression_labels"][0] = np.nan
    data["train"]["audio"][0, :, 0] = -np.inf
    assert import_mmsa(data, tmp_path / "f") == {"train": 4, "valid": 2, "test": 2}
    assert validate(tmp_path / "f")[1] == []


def test_validate_finds_non_finite_labels_and_features(tmp_path):
    """Tables written before the rules (the writer fed rows directly) are reported, naming the clips."""
    from kebr_data.mmsa_import import write_samples

    rows = [(f"c{i}", "train", [0.5, np.inf, np.nan][i % 3], "fine",
             np.full((3, 5), np.nan if i == 4 else 0.0, np.float32), np.zeros((2, 20), np.float32),
             {"label_t": None, "label_a": None, "label_v": None}) for i in range(6)]
    write_samples(rows, {"audio": 5, "vision": 20}, tmp_path / "f", shard_size=4)
    problems = [(p.stage, p.shard, p.what) for p in validate(tmp_path / "f")[1]]
    assert [(s, k) for s, k, _ in problems] == [("plan", 0), ("plan", 1), ("acoustic", 1)]
    assert "label holds NaN or infinity in 2 clip(s) ('c1', 'c2')" in problems[0][2]
    assert "label holds NaN or infinity in 2 clip(s) ('c4', 'c5')" in problems[1][2]
    assert "features holds NaN or infinity in 1 clip(s) ('c4')" in problems[2][2]


def test_import_cli_refuses_bad_samples_and_other_pickles_in_one_line(tmp_path):
    from click.testing import CliRunner

    from kebr_model.cli import main

    data = splits()
    _label(data, np.inf)
    cases = {"inf.pkl": (data, "label inf is not finite"), "list.pkl": ([1, 2], "holds a list, not MMSA features"),
             "keys.pkl": ({"train": {"x": [1]}}, "split 'train' lacks id, raw_text, audio, vision"),
             "junk.pkl": (None, "cannot unpickle")}
    for name, (obj, said) in cases.items():
        pkl = tmp_path / name
        pkl.write_bytes(b"not a pickle" if obj is None else pickle.dumps(obj))
        out = tmp_path / f"out-{name}"
        res = CliRunner().invoke(main, ["import-mmsa", "--pickle", str(pkl), "--out", str(out), "--trust-pickle"],
                                 catch_exceptions=False)
        assert res.exit_code == 2 and said in res.stderr, res.output
        assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1 and not out.exists()


def test_load_refuses_a_pickle_of_another_layout(tmp_path):
    pkl = tmp_path / "p.pkl"
    pkl.write_bytes(pickle.dumps({"train": {**part(2, 0), "id": ["a"]}}))
    with pytest.raises(PlanError, match="entries of different lengths"):
        load_mmsa_pickle(pkl, trust=True)
