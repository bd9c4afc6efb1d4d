"""A modality the run reads must come from a table that is there: on a folder without the stage that
`modalities.audio` names, `kebr-train finetune` is refused (one line, exit 2) before any step, for the
default `acoustic` as for `melspec`, on an output folder as on an HDF5 export; in a sweep that point is a
failed run, not a result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from shard_factory import make_shards

from kebr_data.errors import PlanError
from kebr_model.cli import main

pytest.importorskip("transformers")


@pytest.fixture
def no_acoustic(tmp_path) -> Path:
    """A labelled folder whose audio frames are in `ssl_audio`: the acoustic stage never ran."""
    return make_shards(tmp_path / "f", n=10, shard_size=5, labelled=True, widths=(8, 709),
                       stages=("ssl_audio", "visual"))


@pytest.mark.parametrize("sets, stage", [(["modalities.use=ta"], "acoustic"),
                                         (["modalities.audio=melspec"], "melspec")])
def test_an_absent_modality_stage_is_refused_before_any_step(no_acoustic, tmp_path, tiny_bert, sets, stage):
    out = tmp_path / "run"
    args = ["finetune", "--shards", str(no_acoustic), "--out", str(out), "--set", f"encoder={json.dumps(tiny_bert)}",
            "--set", "max_steps=1", "--set", "batch_size=4"]
    res = CliRunner().invoke(main, [*args, *(x for s in sets for x in ("--set", s))], catch_exceptions=False)
    assert res.exit_code == 2, res.output
    assert res.stderr.count("\n") == 1 and f"modalities.audio = '{stage}'" in res.stderr
    assert f"no committed {stage}/ table" in res.stderr and f"--stages {stage}" in res.stderr
    assert not out.exists()  # nothing written
    ran = CliRunner().invoke(main, [*args, "--set", "modalities.audio=ssl_audio"], catch_exceptions=False)
    assert ran.exit_code == 0, ran.output  # the stage that is there trains


def test_an_hdf5_export_without_the_stage_is_refused(tmp_path):
    from kebr_data.export import export
    from kebr_model.data import open_reader

    dest, _ = export(make_shards(tmp_path / "f", n=4, shard_size=4, labelled=True), "hdf5", tmp_path / "h5")
    assert open_reader(dest).widths({"audio": "acoustic"}) == {"audio": 33}
    with pytest.raises(PlanError, match="modalities.audio = 'melspec': the HDF5 export has no melspec table"):
        open_reader(dest).widths({"audio": "melspec"})


def test_a_sweep_point_on_an_absent_stage_fails_as_a_run(no_acoustic, tmp_path, tiny_bert):
    from kebr_model.sweeps import RESULT, load_sweep, run_point

    grid = tmp_path / "grid.toml"
    grid.write_text(f"[sweep]\nseeds = [1]\n[train]\nencoder = {json.dumps(tiny_bert)}\nmax_steps = 1\n"
                    '[grid]\n"modalities.audio" = ["melspec"]\n')
    sweep = load_sweep(grid)
    run_dir = tmp_path / "sweep" / "melspec" / "seed-1"
    result, what = run_point(sweep, sweep.points()[0], 1, no_acoustic, run_dir)
    assert result is None and what.startswith("failed (PlanError: modalities.audio = 'melspec'")
    assert not (run_dir / RESULT).exists()


def test_an_hdf5_export_file_changed_after_its_export_is_refused(tmp_path):
    """#24 point 10 for the trainer's other input: a same-size edit of an export file (labels negated in
    place) is refused against the sha256 its export marker recorded; allow_stale reads it anyway."""
    import h5py

    from kebr_data.errors import StaleOutputError
    from kebr_data.export import export
    from kebr_data.storage.verified import Digests
    from kebr_model.data import open_reader

    dest, _ = export(make_shards(tmp_path / "f", n=4, shard_size=4, labelled=True), "hdf5", tmp_path / "h5")
    assert open_reader(dest).check("finetune") == []
    h5 = dest / "shard-00000.h5"
    size = h5.stat().st_size
    with h5py.File(h5, "r+") as f:
        f["label"][...] = -f["label"][...]
    assert h5.stat().st_size == size
    with pytest.raises(StaleOutputError, match="is not the file its export wrote"):
        open_reader(dest).check("finetune", digests=Digests())
    assert open_reader(dest).check("finetune", allow_stale=True) == []
    (dest / "_done" / "shard-00000.json").unlink()
    with pytest.raises(StaleOutputError, match="has no export marker recording its sha256"):
        open_reader(dest).check("finetune")
