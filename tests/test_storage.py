import json
import os
import signal
import subprocess
import sys
import time

import pyarrow as pa
import pytest

from kebr_data.errors import LockedError
from kebr_data.storage.atomic import atomic_write, atomic_write_json, file_digest, sweep_tmp
from kebr_data.storage.layout import OutputDir
from kebr_data.storage.lock import OutputLock
from kebr_data.storage.markers import CorruptMarker, Marker, read_marker
from kebr_data.storage.parquet import read_table, write_table


def test_atomic_write_leaves_nothing_when_the_writer_fails(tmp_path):
    target = tmp_path / "a" / "x.bin"

    def boom(fh):
        fh.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(target, boom)
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_atomic_write_replaces_and_reports_digest(tmp_path):
    target = tmp_path / "x.bin"
    target.write_bytes(b"old")
    size, digest = atomic_write(target, lambda fh: fh.write(b"new!"))
    assert target.read_bytes() == b"new!" and (size, digest) == file_digest(target) and size == 4


def test_sweep_removes_only_tmp_files(tmp_path):
    out = OutputDir(tmp_path)
    (tmp_path / "audio").mkdir()
    (tmp_path / "audio" / "shard-00000.parquet.tmp-abc").write_bytes(b"torn")
    (tmp_path / "audio" / "shard-00000.parquet").write_bytes(b"ok")
    (tmp_path / "_tmp" / "audio-shard-00000.d").mkdir(parents=True)
    removed = out.sweep()
    assert len(removed) == 2
    assert (tmp_path / "audio" / "shard-00000.parquet").exists()
    assert not (tmp_path / "_tmp").exists()
    assert sweep_tmp(tmp_path / "nothing") == []


def test_parquet_is_deterministic(tmp_path):
    t = pa.table({"clip_id": ["a", "b"], "x": [1.5, 2.5]})
    write_table(tmp_path / "1.parquet", t)
    write_table(tmp_path / "2.parquet", t)
    assert (tmp_path / "1.parquet").read_bytes() == (tmp_path / "2.parquet").read_bytes()
    assert read_table(tmp_path / "1.parquet").equals(t)


def marker(**kw):
    base = dict(stage="audio", shard=3, rows=2, ok=1, failed=1, skipped=0, errors={"failed/timeout": 1},
                wall_s=1.0, config_hash="abc", stage_version="1", versions={}, upstream={"plan": "p"},
                output_bytes=10, output_sha256="s", finished_at="now")
    return Marker(**{**base, **kw})


def test_marker_round_trip_and_corruption(tmp_path):
    p = tmp_path / "m.json"
    marker().write(p)
    assert read_marker(p) == marker()
    assert read_marker(tmp_path / "absent.json") is None
    p.write_text('{"stage": "audio", "shard":')
    with pytest.raises(CorruptMarker):
        read_marker(p)
    atomic_write_json(p, {"schema": 99})
    with pytest.raises(CorruptMarker, match="schema"):
        read_marker(p)


def test_marker_shards_lists_committed_shards(tmp_path):
    out = OutputDir(tmp_path)
    marker(shard=2).write(out.marker("audio", 2))
    marker(shard=0).write(out.marker("audio", 0))
    assert out.marker_shards("audio") == [0, 2]
    assert out.marker("audio", 2).name == "shard-00002.json"


def test_lock_refuses_a_second_holder_and_names_the_first(tmp_path):
    with OutputLock(tmp_path / "_lock", "kebr-data extract --out x"):
        with pytest.raises(LockedError, match=f"pid {os.getpid()}.*kebr-data extract"):
            OutputLock(tmp_path / "_lock").acquire()
    with OutputLock(tmp_path / "_lock"):
        pass


def test_lock_is_released_when_its_holder_is_killed(tmp_path):
    code = ("import sys, time; from pathlib import Path; from kebr_data.storage.lock import OutputLock; "
            "l = OutputLock(Path(sys.argv[1])); l.acquire(); print('held', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "_lock")], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    with pytest.raises(LockedError):
        OutputLock(tmp_path / "_lock").acquire()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 5
    while True:
        try:
            with OutputLock(tmp_path / "_lock"):
                break
        except LockedError:
            assert time.time() < deadline
            time.sleep(0.05)
    assert json.loads((tmp_path / "_lock").read_text() or "{}") == {}
