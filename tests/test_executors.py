"""Executors: local workers are single-threaded; Ray gives byte-identical outputs and can take over
a run the local executor started (the same done markers commit the work)."""

import os
import shutil

import pytest
from helpers import ROOT, run_cli, shard_files

from kebr_data.executors import LocalExecutor

DEMO_CFG = str(ROOT / "pipelines" / "demo.toml")


def thread_settings(task, progress):
    import numpy  # noqa: F401  (as a stage would: after the worker started)

    progress(1)
    return task, {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


def test_local_workers_get_one_blas_thread(monkeypatch):
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)  # the suite sets OMP_NUM_THREADS itself (conftest.py)
    seen = []
    results = list(LocalExecutor(workers=2).run(thread_settings, ["a", "b", "c"], lambda t, n: seen.append(t)))
    assert sorted(t for t, _ in results) == ["a", "b", "c"]
    assert all(env == {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
               for _, (_, env) in results)
    assert sorted(seen) == ["a", "b", "c"]  # clip progress crosses the process boundary



def test_ray_outputs_are_byte_identical_and_resume_across_executors(tmp_path, demo_acoustic, audio_done):
    """One Ray run (its start-up is most of the cost) checks both: a run started locally (index, audio) with
    shard 1's audio commit lost is finished on Ray, overlapped, redoing only that shard, and every table equals
    the local executor's run (conftest.py) byte for byte."""
    pytest.importorskip("ray")
    mixed = shutil.copytree(audio_done, tmp_path / "mixed")
    (mixed / "_done/audio/shard-00001.json").unlink()  # as if a crash lost shard 1's commit
    proc = run_cli("extract", "--out", str(mixed), "--config", DEMO_CFG, "--stages", "audio,acoustic", "--executor",
                   "ray", "--workers", "2", "--set", "run.overlap=true", check=True, timeout=600)
    assert "1 shards" in proc.stderr  # only the missing audio shard was redone
    assert shard_files(mixed) == shard_files(demo_acoustic)
