"""`kebr-data export`: HDF5, merged Parquet and MMSA pickles equal the stage tables; half-written
exports are never taken for finished ones."""

import json
import pickle
import subprocess
import sys

import h5py
import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers import run_cli
from shard_factory import make_shards

from kebr_data.export import read_hdf5


@pytest.fixture()
def shards(tmp_path):
    return make_shards(tmp_path / "f", n=10, shard_size=4, labelled=True)


def stage_rows(root, stage):
    return {r["clip_id"]: r for r in pq.read_table(root / stage).to_pylist()}


def test_hdf5_round_trip_with_h5py_alone(shards):
    run_cli("export", "--out", str(shards), "--format", "hdf5", check=True)
    acoustic, visual, mask = stage_rows(shards, "acoustic"), stage_rows(shards, "visual"), stage_rows(shards, "mask")
    plan = stage_rows(shards, "plan")
    seen = 0
    for path in sorted((shards / "export/hdf5").glob("shard-*.h5")):
        with h5py.File(path, "r") as f:  # no toolkit code: values + offsets, as documented
            ids = [c.decode() for c in f["clip_id"][()]]
            values, offsets = f["acoustic/values"][()], f["acoustic/offsets"][()]
            vvalues, voffsets = f["visual/values"][()], f["visual/offsets"][()]
            assert f.attrs["schema_version"] == "1" and f["acoustic"].attrs["recipe"] == "released"
            assert set(json.loads(f.attrs["sources"])) == {"plan", "mask", "acoustic", "visual"}
            for i, cid in enumerate(ids):
                assert np.array_equal(values[offsets[i]:offsets[i + 1]],
                                      np.asarray(acoustic[cid]["features"], np.float32))
                assert np.array_equal(vvalues[voffsets[i]:voffsets[i + 1]],
                                      np.asarray(visual[cid]["features"], np.float32))
                assert f["label"][i] == np.float32(plan[cid]["label"])
                assert f["masked_text"][i].decode() == mask[cid]["masked_text"]
                assert f["split"][i].decode() == plan[cid]["split"]
                seen += 1
    assert seen == 10


def test_parquet_merged_tables(shards):
    run_cli("export", "--out", str(shards), "--format", "parquet", check=True)
    table = pq.read_table(shards / "export/parquet/shard-00000.parquet")
    assert {"clip_id", "split", "label", "mask.masked_text", "mask.label", "acoustic.features",
            "visual.success"} <= set(table.column_names)
    original = pq.read_table(shards / "acoustic/shard-00000.parquet")
    assert table.column("acoustic.features").equals(original.column("features"))


def test_mmsa_pickle_layout_round_trips_into_the_trainer(shards, tmp_path):
    run_cli("export", "--out", str(shards), "--format", "mmsa", "--audio-len", "50", "--vision-len", "10", check=True)
    data = pickle.loads((shards / "export/mmsa/mmsa.pkl").read_bytes())
    assert set(data) == {"train", "valid", "test"}
    train = data["train"]
    assert train["audio"].shape == (len(train["id"]), 50, 33) and train["vision"].shape[1:] == (10, 709)
    cid = train["id"][0]
    original = np.asarray(stage_rows(shards, "acoustic")[cid]["features"], np.float32)
    n = train["audio_lengths"][0]
    assert n == min(50, len(original)) and np.array_equal(train["audio"][0][:n], original[:n])
    assert not train["audio"][0][n:].any()
    done = subprocess.run([sys.executable, "-m", "kebr_model.cli", "import-mmsa", "--pickle",
                           str(shards / "export/mmsa/mmsa.pkl"), "--out", str(tmp_path / "back"), "--trust-pickle"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {s: len(data[s]["id"]) for s in ("train", "valid", "test")}


@pytest.mark.parametrize("option", ["--audio-len", "--vision-len"])
def test_mmsa_frame_counts_must_be_positive(shards, option):
    proc = run_cli("export", "--out", str(shards), "--format", "mmsa", option, "-5")
    assert proc.returncode == 2 and option in proc.stderr and "Traceback" not in proc.stderr
    assert not (shards / "export").exists()


def test_an_mmsa_export_with_no_clip_is_refused_naming_label_mask(tmp_path):
    """Issue #27 point 8: an unlabelled folder's MMSA export wrote "0 clip(s)" and exited 0."""
    unlabelled = make_shards(tmp_path / "u", n=6, shard_size=3)
    proc = run_cli("export", "--out", str(unlabelled), "--format", "mmsa")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "no clip written" in lines[0] and "6 no plan label" in lines[0] and "--label mask" in lines[0]
    assert not (unlabelled / "export").exists()
    done = run_cli("export", "--out", str(unlabelled), "--format", "mmsa", "--label", "mask", check=True)
    assert "6 clip(s) written" in done.stdout + done.stderr
    assert len(pickle.loads((unlabelled / "export/mmsa/mmsa.pkl").read_bytes())["train"]["id"]) == 6


def test_mmsa_frame_counts_are_checked_for_library_callers(shards):
    from kebr_data.errors import ConfigError
    from kebr_data.export import export

    with pytest.raises(ConfigError, match="--audio-len must be at least 1"):
        export(shards, "mmsa", audio_len=-5, vision_len=55)


def test_half_written_export_is_never_taken_for_finished(shards):
    run_cli("export", "--out", str(shards), "--format", "hdf5", check=True)
    dest = shards / "export/hdf5"
    finished = dest / "shard-00001.h5"
    mtime = finished.stat().st_mtime_ns
    (dest / "_done/shard-00000.json").unlink()  # as if the run died between file and marker
    (dest / "shard-00002.h5").write_bytes(b"\x89HDF half")  # a torn file under the final name, no marker either
    (dest / "_done/shard-00002.json").unlink()
    with pytest.raises(ValueError, match="no done marker"):
        read_hdf5(dest / "shard-00000.h5")
    run_cli("export", "--out", str(shards), "--format", "hdf5", check=True)
    assert finished.stat().st_mtime_ns == mtime  # up to date: not rewritten
    assert len(read_hdf5(dest / "shard-00002.h5")["clip_id"]) == 2  # redone, readable
    assert read_hdf5(dest / "shard-00000.h5")["attrs"]["schema_version"] == "1"


def test_the_trainer_reads_the_hdf5_export_like_the_stage_tables(shards):
    pytest.importorskip("transformers")
    from kebr_model.data import DataConfig, ShardBatches
    from kebr_model.training.train import load_encoder

    run_cli("export", "--out", str(shards), "--format", "hdf5", check=True)
    tok = load_encoder("")[0]
    for task, split in (("pretrain", None), ("finetune", "train")):
        a = list(ShardBatches(shards, task, tok, DataConfig(batch_size=3), seed=4, split=split))
        b = list(ShardBatches(shards / "export/hdf5", task, tok, DataConfig(batch_size=3), seed=4, split=split))
        assert [x["clip_id"] for x in a] == [x["clip_id"] for x in b] and a
        for x, y in zip(a, b, strict=True):
            for key in ("input_ids", "attention_mask", "audio", "audio_mask", "visual", "visual_mask", "label",
                        "mask_pos"):
                assert np.array_equal(x[key].numpy(), y[key].numpy()), key


def test_truncated_edited_or_symlinked_export_files_are_rewritten(shards, tmp_path):
    """Issue 24, point 15: "already up to date" means the file's size and sha256 are those its marker records."""
    run_cli("export", "--out", str(shards), "--format", "hdf5", check=True)
    dest = shards / "export/hdf5"
    good = {p.name: p.read_bytes() for p in dest.glob("shard-*.h5")}
    with open(dest / "shard-00000.h5", "r+b") as fh:
        fh.truncate(len(good["shard-00000.h5"]) // 2)
    edited = bytearray(good["shard-00001.h5"])
    edited[-9] ^= 0xFF  # same size, one byte changed
    (dest / "shard-00001.h5").write_bytes(bytes(edited))
    elsewhere = tmp_path / "elsewhere.h5"
    elsewhere.write_bytes(good["shard-00002.h5"])  # the right bytes, but not the export's own file
    (dest / "shard-00002.h5").unlink()
    (dest / "shard-00002.h5").symlink_to(elsewhere)
    done = run_cli("export", "--out", str(shards), "--format", "hdf5", check=True)
    assert "3 file(s) written, 0 already up to date" in done.stdout + done.stderr
    assert {p.name: p.read_bytes() for p in dest.glob("shard-*.h5")} == good
    assert not (dest / "shard-00002.h5").is_symlink() and elsewhere.read_bytes() == good["shard-00002.h5"]
    again = run_cli("export", "--out", str(shards), "--format", "hdf5", check=True)
    assert "0 file(s) written, 3 already up to date" in again.stdout + again.stderr


def test_the_trainer_refuses_an_infinite_label_of_an_hdf5_export(shards, tiny_bert):
    """A NaN label of an export is "no label"; an infinite one is refused naming the clip, as validate does."""
    from kebr_data.errors import PlanError
    from kebr_model.data import DataConfig, ShardBatches
    from kebr_model.training.train import load_encoder

    run_cli("export", "--out", str(shards), "--format", "hdf5", check=True)
    dest = shards / "export/hdf5"
    with h5py.File(dest / "shard-00000.h5", "r+") as f:
        clip = f["clip_id"][0].decode()
        f["label"][0] = np.inf
    tok = load_encoder(tiny_bert)[0]
    with pytest.raises(PlanError, match="kebr-data validate") as refused:
        list(ShardBatches(dest, "finetune", tok, DataConfig(batch_size=3), seed=4, split="train"))
    assert repr(clip) in str(refused.value) and "inf" in str(refused.value) and "\n" not in str(refused.value)
