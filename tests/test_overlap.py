"""Overlapped stages (`run.overlap = true`, issue #28 point 3): a shard's next stage starts once its inputs are
committed; outputs byte for byte as the stage-by-stage run's, the same crash safety, the same refusals, and
`status` showing the stages progressing together."""

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from helpers import DEMO, run_cli, shard_files

from kebr_data.executors import EXECUTORS, Executor, LocalExecutor, TaskFeed

#: the demo in 4 shards of 2 clips, audio then melspec (the cheapest stage reading the audio): one worker, so
#: only the order in which shards are started can overlap the two stages
ARGS = ["--layout", "voxceleb", "--stages", "index,audio,melspec", "--set", "index.shard_size=2", "--max-failed", "1",
        "--workers", "1"]
OVERLAP = ["--set", "run.overlap=true"]


def extract(out: Path, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    return run_cli("extract", "--src", str(DEMO), "--out", str(out), *ARGS, *extra, check=check)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """Today's stage-by-stage run."""
    out = tmp_path_factory.mktemp("stagewise") / "out"
    extract(out)
    return out


def test_sigkill_mid_overlapped_run_then_status_and_rerun(reference, tmp_path):
    """SIGKILL the whole run once melspec committed a shard while audio has not finished (one worker: only the
    overlapped order gets there, later stages first): `status` shows both stages part done, and the rerun
    completes them with every clip once and outputs byte for byte as the stage-by-stage run's."""
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "kebr_data", "extract", "--src", str(DEMO), "--out", str(out),
                             *ARGS, *OVERLAP], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    try:
        while time.time() < deadline and proc.poll() is None:
            melspec = list(out.glob("_done/melspec/shard-*.json"))
            if melspec and len(list(out.glob("_done/audio/shard-*.json"))) < 4:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.005)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be interrupted"
    committed = tuple(len(list(out.glob(f"_done/{stage}/shard-*.json"))) for stage in ("audio", "melspec"))
    if not (committed[1] >= 1 and committed[0] < 4):  # a shard may commit between the poll and the signal
        pytest.fail(f"the kill did not land with both stages partly done (committed audio, melspec: {committed})")
    # status reports what the markers say, not a count of its own: both stages partly done, as committed
    status = run_cli("status", "--out", str(out), check=True).stdout
    shown = tuple(int(re.search(rf"{stage}\s*│\s*(\d)/4", status).group(1)) for stage in ("audio", "melspec"))
    assert shown == committed, status
    proc = extract(out, *OVERLAP)
    assert shard_files(out) == shard_files(reference)
    for stage in ("audio", "melspec"):
        ids = pq.read_table(out / stage).column("clip_id").to_pylist()
        assert ids == pq.read_table(out / "plan").column("clip_id").to_pylist() and len(set(ids)) == 8
    assert not list(out.rglob("*.tmp-*")) and not (out / "_tmp").exists()


def test_a_damaged_upstream_shard_is_recomputed_before_its_downstream_reads_it(reference, tmp_path):
    """An audio table changed after its commit: the overlapped rerun recomputes it, and melspec's shard waits
    for that commit (reading the damaged bytes would refuse, or differ); another config is refused as today."""
    import shutil

    out = tmp_path / "out"
    shutil.copytree(reference, out)
    shutil.rmtree(out / "melspec")
    shutil.rmtree(out / "_done/melspec")
    table = out / "audio/shard-00001.parquet"
    table.write_bytes(table.read_bytes()[:-100])
    proc = extract(out, *OVERLAP)
    assert "audio" in proc.stderr and shard_files(out) == shard_files(reference)
    refused = extract(out, *OVERLAP, "--set", "melspec.n_mels=64", check=False)
    assert refused.returncode == 2 and "another melspec config" in refused.stderr
    assert "Traceback" not in refused.stderr


def _square(task: int, progress) -> int:
    progress(1)
    return task * task


def test_local_executor_takes_tasks_added_while_it_runs_by_priority():
    """A TaskFeed grows as outcomes are read; ready tasks start lowest priority number first."""
    feed = TaskFeed([1, 2], planned=4)
    seen, out = [], []
    for task, result in LocalExecutor(workers=1).run(_square, feed, lambda t, n: seen.append(t)):
        out.append((task, result))
        if task == 1:
            feed.add(10, priority=1)
            feed.add(3, priority=-1)  # goes before 10 and before the already queued 2 (priority 0)
    assert out == [(1, 1), (3, 9), (2, 4), (10, 100)]
    assert sorted(seen) == [1, 2, 3, 10]


class _ListExecutor(Executor):
    """An executor written before overlapped stages: it iterates a list of tasks."""

    def run(self, fn, tasks, on_progress, cpus=1.0, gpus=0.0):
        for task in list(tasks):
            yield task, fn(task, lambda n, task=task: on_progress(task, n))


def test_an_executor_without_a_feed_runs_stage_by_stage_and_says_so(tmp_path, monkeypatch):
    from click.testing import CliRunner
    from shard_factory import make_shards

    from kebr_data.cli import main

    monkeypatch.setitem(EXECUTORS, "listonly", _ListExecutor)
    folder = make_shards(tmp_path / "f", n=5, shard_size=3, labelled=True)
    before = shard_files(folder)
    done = CliRunner().invoke(main, ["extract", "--out", str(folder), "--stages", "mask", "--force", "--executor",
                                     "listonly", "--set", "run.overlap=true"], catch_exceptions=False)
    assert done.exit_code == 0, done.output
    assert "run.overlap: the listonly executor runs stage by stage" in done.output
    assert shard_files(folder) == before


def test_a_failed_shard_stops_the_overlapped_run_as_it_stops_the_stage_by_stage_run(tmp_path):
    """audio shard 00000 cannot be committed (a folder holds its table's place: an OSError, the machine's
    failure, aborts the shard): overlapped, no melspec shard starts after it, as stage by stage; the same
    exit 3, the same message, the same shards committed."""
    ends = {}
    for mode in ("false", "true"):
        out = tmp_path / mode[0]  # names of one length: the message cuts a long path at the same place
        (out / "audio" / "shard-00000.parquet").mkdir(parents=True)
        proc = extract(out, "--set", f"run.overlap={mode}", check=False)
        error = proc.stderr[proc.stderr.index("error:"):].replace(str(out), "OUT")
        tables = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("shard-*.parquet") if p.is_file()}
        ends[mode] = proc.returncode, re.sub(r"tmp-[0-9a-f]+", "tmp-X", error), tables
    assert ends["true"] == ends["false"]
    code, error, files = ends["true"]
    assert code == 3 and "audio shard 00000: IsADirectoryError" in error and "Traceback" not in error
    assert sorted(f for f in files if not f.startswith("plan/")) == [f"audio/shard-0000{i}.parquet" for i in (1, 2, 3)]
