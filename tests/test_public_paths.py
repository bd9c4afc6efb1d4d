"""The public API takes a path as a str or any os.PathLike, not only a pathlib.Path (issue #27):
`kebr_data.open`, `kebr_data.export.export` and `kebr_data.export.read_hdf5`."""

import os
from pathlib import Path

import pytest
from shard_factory import make_shards

import kebr_data
from kebr_data.export import export, read_hdf5


class FsPath:
    """An os.PathLike that is not a pathlib.Path (as other libraries' path objects are)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __fspath__(self) -> str:
        return self.path


@pytest.fixture()
def shards(tmp_path):
    return make_shards(tmp_path / "f", n=6, shard_size=4, labelled=True)


@pytest.mark.parametrize("kind", [str, FsPath])
def test_open_takes_a_str_or_a_pathlike(shards, kind):
    assert kebr_data.open(kind(shards)).equals(kebr_data.open(shards))


@pytest.mark.parametrize("kind", [str, FsPath])
def test_export_takes_a_str_or_a_pathlike_folder_and_destination(shards, tmp_path, kind):
    dest, note = export(kind(shards), "hdf5")
    assert dest == shards / "export/hdf5" and "2 file(s) written" in note
    dest, _ = export(kind(shards), "parquet", dest=kind(tmp_path / "elsewhere"))
    assert dest == tmp_path / "elsewhere" and (dest / "shard-00001.parquet").is_file()


@pytest.mark.parametrize("kind", [str, FsPath])
def test_read_hdf5_takes_a_str_or_a_pathlike(shards, kind):
    export(shards, "hdf5")
    path = shards / "export/hdf5/shard-00000.h5"
    assert isinstance(FsPath(path), os.PathLike) and not isinstance(FsPath(path), Path)
    assert read_hdf5(kind(path))["clip_id"] == read_hdf5(path)["clip_id"]
    assert len(read_hdf5(kind(path))["clip_id"]) == 4
