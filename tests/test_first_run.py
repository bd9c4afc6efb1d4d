"""What a new user hits first: wrong paths and wrong order get the message naming the real problem
(before any prerequisite check), a failed start leaves nothing behind, and the acoustic stage's
one-time kernel compilation happens once, in a shared cache, before the workers start."""

import json
import os
from pathlib import Path

from helpers import DEMO, ROOT, extract_demo, run_cli, shard_files

from kebr_data.storage.layout import OutputDir


def _only_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


def test_misspelt_source_is_named_before_prerequisites(tmp_path):
    # the default stages include visual, whose OpenFace is missing here: that must not hide the typo
    out = tmp_path / "features"
    proc = run_cli("extract", "--src", str(ROOT / "demo/voxcelb"), "--out", str(out))
    line = _only_line(proc.stderr)
    assert proc.returncode == 2 and "demo/voxcelb does not exist" in line
    assert f"did you mean {DEMO}?" in line and "OpenFace" not in proc.stderr
    assert not out.exists()


def test_failed_start_leaves_nothing_in_a_folder_it_created(tmp_path):
    src = tmp_path / "empty_dataset"
    src.mkdir()
    out = tmp_path / "new" / "features"
    proc = run_cli("extract", "--src", str(src), "--out", str(out), "--stages", "index")
    assert proc.returncode == 2 and "no clips found" in _only_line(proc.stderr)
    assert not (tmp_path / "new").exists()  # no _lock, no run.json, no empty folders
    existing = tmp_path / "mine"
    existing.mkdir()
    proc = run_cli("extract", "--src", str(src), "--out", str(existing), "--stages", "index")
    assert proc.returncode == 2 and existing.is_dir() and not any(existing.iterdir())


def test_resume_without_src_in_a_missing_folder(tmp_path):
    proc = run_cli("extract", "--out", str(tmp_path / "nothere"))
    line = _only_line(proc.stderr)
    assert proc.returncode == 2 and "does not exist" in line and "kebr-data extract --src DATASET" in line
    assert not (tmp_path / "nothere").exists()


def test_mask_on_a_folder_that_is_not_an_output_folder(tmp_path):
    proc = run_cli("mask", "--out", str(tmp_path))
    line = _only_line(proc.stderr)
    assert proc.returncode == 2 and "is not a kebr-data output folder" in line
    assert f"kebr-data extract --src DATASET --out {tmp_path}" in line and "give --src" not in line
    assert not any(tmp_path.iterdir())


def test_mask_before_asr_names_the_command(tmp_path):
    out = tmp_path / "features"
    extract_demo(out, "index", check=True)
    proc = run_cli("mask", "--out", str(out))
    line = _only_line(proc.stderr)
    assert proc.returncode == 2 and "ASR has not run" in line
    assert f"kebr-data extract --out {out} --stages audio,asr" in line
    assert not (out / "mask").exists()


def test_librosa_kernels_compile_once_before_the_workers(tmp_path):
    cache = tmp_path / "cache"
    env = {"KEBR_CACHE_DIR": str(cache), "NUMBA_CACHE_DIR": ""}  # empty = unset for numba and for us
    first = extract_demo(tmp_path / "a", "index,audio,acoustic", "--workers", "2", "--max-failed", "1",
                         env=env, check=True)
    assert "acoustic: compiling librosa kernels (once" in first.stderr
    assert "not counted in throughput" in first.stderr
    assert first.stderr.index("compiling librosa kernels") < first.stderr.index("acoustic ")  # before the bar
    kernels = sorted(p.relative_to(cache) for p in cache.rglob("*.nb[ic]"))
    assert kernels and all(p.parts[0] == "numba" for p in kernels)
    # every kernel was written before the acoustic worker started its shard: no worker compiled
    marker = OutputDir(tmp_path / "a").marker("acoustic", 0)
    worker_start = marker.stat().st_mtime - json.loads(marker.read_text())["wall_s"]
    assert max((cache / p).stat().st_mtime for p in kernels) < worker_start
    second = extract_demo(tmp_path / "b", "index,audio,acoustic", "--workers", "2", "--max-failed", "1",
                          env=env, check=True)
    assert "librosa kernels" not in second.stderr  # every process of the second run found them cached
    assert sorted(p.relative_to(cache) for p in cache.rglob("*.nb[ic]")) == kernels
    assert shard_files(tmp_path / "a") == shard_files(tmp_path / "b")


def test_a_warmed_cache_is_not_warmed_up_again(tmp_path):
    """On a cache that has seen the acoustic stage (its marker and kernels), the parent does not load librosa
    and its kernels before the workers start: the spawned workers load them themselves anyway."""
    import subprocess
    import sys

    from kebr_data.features.numba_cache import cached_kernels

    code = ("import sys; from kebr_data import config; from kebr_data.features.numba_cache import first_use, "
            "use_numba_cache; from kebr_data.stages.acoustic import AcousticStage\n"
            "stage = AcousticStage(config.load()['acoustic'])\n"
            "with first_use(stage.kernel_key()): pass  # the marker a finished first clip leaves\n"
            "(use_numba_cache() / 'kernel.nbi').touch()\n"
            "stage.warm_up(print)\n"
            "print('librosa' in sys.modules)")
    env = {**os.environ, "KEBR_CACHE_DIR": str(tmp_path), "NUMBA_CACHE_DIR": ""}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "False\n"  # nothing said, librosa never imported
    assert cached_kernels(tmp_path / "numba") == {"kernel.nbi"}  # and nothing compiled


def test_numba_cache_dir_defaults(monkeypatch, tmp_path):
    from kebr_data.features.numba_cache import numba_cache_dir

    for var in ("NUMBA_CACHE_DIR", "KEBR_CACHE_DIR", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    assert numba_cache_dir() == Path(os.path.expanduser("~/.cache/kebr/numba"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert numba_cache_dir() == tmp_path / "xdg/kebr/numba"
    monkeypatch.setenv("KEBR_CACHE_DIR", str(tmp_path / "k"))
    assert numba_cache_dir() == tmp_path / "k/numba"
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "n"))
    assert numba_cache_dir() == tmp_path / "n"


def test_kernel_compilation_is_serialised_across_runs(tmp_path):
    """Two runs starting on a cold cache: the second waits for the first's compilation (numba's cache files
    are not safe against two writers), and the lock file is never followed through a planted symlink."""
    import time

    from kebr_data.features.numba_cache import exclusive

    lock = tmp_path / ".compile.lock"
    holder = hold_lock(lock, 1.5)
    t0, said = time.monotonic(), []
    with exclusive(lock, lambda: said.append("waiting")):
        waited = time.monotonic() - t0
    holder.wait()
    assert waited > 0.8 and said == ["waiting"], (waited, said)
    target = tmp_path / "elsewhere"
    (tmp_path / "planted").symlink_to(target)
    with exclusive(tmp_path / "planted"):  # O_NOFOLLOW: not created through the link, and no hang
        pass
    assert not target.exists()


def hold_lock(lock: Path, seconds: float):
    """Another process holding the kernel cache's lock for `seconds` (returns once it holds it)."""
    import subprocess
    import sys

    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time; fd = os.open(sys.argv[1], "
                               "os.O_RDWR | os.O_CREAT); fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); "
                               f"time.sleep({seconds})", str(lock)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_each_workers_first_clip_of_a_librosa_stage_waits_for_a_compiling_run(tmp_path, monkeypatch):
    """A worker whose parent did not warm the cache (another node, another stage): its first clip of a stage
    that runs librosa waits while another process compiles into the same cache; its later clips do not, and
    once a first clip has finished, a marker in the cache lets later workers (here: this process again, as
    new) skip the lock."""
    import time

    import numpy as np
    from helpers import audio_shard

    from kebr_data import config
    from kebr_data.features import numba_cache
    from kebr_data.stages.melspec import MelspecStage

    stage = MelspecStage(config.load()["melspec"])
    ctx = audio_shard(tmp_path, [(np.sin(np.arange(8000, dtype=np.float32) / 5), 16000)])
    stage.run_shard(ctx)  # librosa imported and its kernels loaded: what is left to time is the wait
    cache = numba_cache.use_numba_cache()
    for marker in cache.glob(".warmed-melspec-*"):
        marker.unlink()  # as on a cache that has not seen melspec
    monkeypatch.setattr(numba_cache, "_first_done", set())  # as in a new worker process
    timings = []
    for new_worker in (True, False, True):
        if new_worker:
            monkeypatch.setattr(numba_cache, "_first_done", set())
        holder = hold_lock(cache / numba_cache.LOCK_NAME, 1.5)
        t0 = time.monotonic()
        assert stage.run_shard(ctx).column("status").to_pylist() == ["ok"]
        timings.append(time.monotonic() - t0)
        holder.wait()
    assert timings[0] > 1.0 and timings[1] < 0.5 and timings[2] < 0.5, timings
    assert len(list(cache.glob(".warmed-melspec-*"))) == 1
