"""Shared fixtures: the real ffmpeg, the bundled demo clips, a tiny text encoder; one thread per test process."""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path

import pytest
from helpers import DEMO, ROOT

from kebr_data.features.numba_cache import numba_cache_dir
from kebr_data.media.ffmpeg import find_ffmpeg

# The suite runs on two pytest-xdist workers (pyproject.toml): one intra-op thread per test process and
# per subprocess it starts, so that two workers never oversubscribe two cores (tiny models also step
# faster on one thread). Set before torch loads its thread pool (numpy, imported above, keeps its own).
os.environ.setdefault("OMP_NUM_THREADS", "1")
# gRPC's core logs INFO lines ("Got goaway" when the fake Google service stops) to stderr, outside pytest's capture
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
# numba's kernel cache is not safe against two processes writing the same kernel at once (a torn index
# crashes the next load): each xdist worker, and the subprocesses it starts, gets a cache of its own.
_numba, _worker = numba_cache_dir(), os.environ.get("PYTEST_XDIST_WORKER", "main")  # numba not imported yet
os.environ["NUMBA_CACHE_DIR"] = str(_numba.with_name(f"{_numba.name}-pytest-{_worker}"))
try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # the data pipeline's tests run without torch
    pass


@pytest.fixture(scope="session")
def ffmpeg() -> str:
    return find_ffmpeg()


@pytest.fixture(scope="session")
def demo_src() -> Path:
    assert DEMO.is_dir(), "demo clips missing: run python demo/make_demo.py"
    return DEMO


DEMO_CFG = ROOT / "pipelines" / "demo.toml"


def shared_demo_run(tmp_path_factory: pytest.TempPathFactory, stages: str) -> tuple[Path, str]:
    """`kebr-data extract` of the demo with pipelines/demo.toml and `stages` ('' = the file's own), run once per
    suite: the first xdist worker to ask runs it under a lock in the folder the workers share, the others (and
    its later callers) wait for it and get the same folder. Returns the folder and the run's stderr. Tests only
    read the folder; one that writes there (or reruns, masks, ...) copies it first. `stages` run on one worker
    (a second one pays the stages' imports and kernel loads again for the same bytes: 6.6 vs 10.3 CPU-s for
    index,audio,acoustic); the file's own stages on the default workers (test_engine.py compares one worker)."""
    from helpers import extract_demo, run_cli

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # popen-gwN's parent: this run's
    name = "demo-" + (stages.replace(",", "-") or "all")
    out, done = shared / name / "out", shared / name / "stderr.txt"
    out.parent.mkdir(exist_ok=True)
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.is_file():
            shutil.rmtree(out, ignore_errors=True)  # a run whose worker died half-way
            proc = (extract_demo(out, stages, "--workers", "1", check=True) if stages else
                    run_cli("extract", "--src", str(DEMO), "--out", str(out), "--config", str(DEMO_CFG), check=True))
            done.write_text(proc.stderr)
    return out, done.read_text()


@pytest.fixture(scope="session")
def audio_done(tmp_path_factory, demo_src) -> Path:
    """The demo's index and audio stages, run once: tests of stages that read the audio copy it."""
    return shared_demo_run(tmp_path_factory, "index,audio")[0]


@pytest.fixture(scope="session")
def demo_acoustic(tmp_path_factory, demo_src) -> Path:
    """The demo's index, audio and acoustic stages, run once (read it; copy it to change it)."""
    return shared_demo_run(tmp_path_factory, "index,audio,acoustic")[0]


@pytest.fixture(scope="session")
def demo_all(tmp_path_factory, demo_src) -> tuple[Path, str]:
    """The demo with pipelines/demo.toml's own stages (index, audio, asr, acoustic), run once: the folder and
    the run's stderr (read it; copy it to change it)."""
    return shared_demo_run(tmp_path_factory, "")


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> str:
    """The path of a tiny random BERT folder with the real MiniLM tokenizer (see helpers.tiny_text_encoder)."""
    pytest.importorskip("transformers")
    from helpers import tiny_text_encoder

    return str(tiny_text_encoder(tmp_path_factory.mktemp("tiny-bert")))


# The files that take longest (CPU-s of each file run alone on one core, or mostly waiting: the Ray files), run
# first: with --dist loadfile each of the two workers takes the next file when it runs low, so a long file started
# last leaves one worker busy while the other idles. xdist's own order (most tests first; --no-loadscope-reorder
# in pyproject.toml turns it off) ran the few-test Ray, README and training files last. Of the files sharing a
# demo run (shared_demo_run), the one that makes it comes first (ssl_audio: audio_done; executors: demo_acoustic;
# engine: demo_all), so that the others find it made rather than wait for it.
LONGEST_FIRST = ("test_recipes.py", "test_video_encoder.py", "test_ssl_audio.py", "test_ray_cluster.py",
                 "test_executors.py", "test_train_cli.py", "test_first_run.py", "test_engine.py",
                 "test_audio_baselines.py", "test_nonfinite.py", "test_kebr_train.py", "test_untrusted.py",
                 "test_audio_e2e.py", "test_mask_stage.py", "test_asr.py", "test_crash.py", "test_operations.py",
                 "test_train_modalities.py", "test_bad_inputs.py", "test_acoustic.py", "test_systems.py",
                 "test_predict.py", "test_lever_crash.py", "test_bench_gpu.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Reorder the collected tests file by file, LONGEST_FIRST first (a stable sort: each file's own order kept)."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
