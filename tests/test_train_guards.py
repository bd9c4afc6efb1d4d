"""A training run guards its folder and its data: one run per --out (the lock), checkpoints checked
against their sha256 with a fall back to the newest complete one, and a resume only on the data the
run was trained on."""

import json
import shutil

import pytest
from click.testing import CliRunner

from shard_factory import make_shards

from kebr_data.storage.lock import OutputLock
from kebr_model.training import checkpoint
from kebr_model.cli import main


def cli(*args) -> object:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def one_line_error(result, *needles: str) -> str:
    assert result.exit_code == 2, result.output
    lines = [x for x in result.output.splitlines() if x.strip()]
    assert "Traceback" not in result.output and "Aborted" not in result.output
    for needle in needles:
        assert needle in lines[-1], (needle, lines[-1])
    return lines[-1]


@pytest.fixture(scope="module")
def tiny_args(tiny_bert) -> list[str]:
    """4 steps of a 1-layer model on the tiny random BERT, a checkpoint every 2 steps (2 kept)."""
    return ["--set", "layers=1", "--set", "batch_size=4", "--set", "checkpoint_every=2", "--set", "max_steps=4",
            "--set", "keep_last=2", "--set", f"encoder='{tiny_bert}'"]


def steps(run) -> list[int]:
    return [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_second_run_on_the_same_out_is_refused(tmp_path, tiny_args):
    shards = make_shards(tmp_path / "f", n=8, shard_size=8)
    out = tmp_path / "run"
    writing = out / "checkpoints/.step-00000002.tmp-0123"  # the other run's checkpoint, being written
    writing.mkdir(parents=True)
    with OutputLock(out / "_lock", "kebr-train finetune --out run"):  # another run holds the folder
        one_line_error(cli("pretrain", "--shards", shards, "--out", out, *tiny_args), "in use by another run",
                       "kebr-train finetune")
    assert writing.is_dir() and sorted(p.name for p in out.rglob("*")) == sorted(
        ["_lock", "checkpoints", writing.name])  # nothing swept, written or trained
    assert cli("pretrain", "--shards", shards, "--out", out, *tiny_args).exit_code == 0
    with OutputLock(out / "_lock"):  # the run let go of it
        assert not writing.exists()  # swept by a run that held the lock


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_args):
    """Shards and a finished 4-step run: checkpoints step-00000002 and the end's re-save step-00000004.1."""
    tmp = tmp_path_factory.mktemp("finished")
    shards = make_shards(tmp / "f", n=16, shard_size=8)
    run = tmp / "run"
    assert cli("pretrain", "--shards", shards, "--out", run, *tiny_args).exit_code == 0
    assert checkpoint.latest(run).name == "step-00000004.1" and (run / "checkpoints/step-00000002").is_dir()
    return shards, run


def damaged(finished, tmp_path, damage) -> tuple:
    shards, run = finished
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    damage(copy / "checkpoints")
    return shards, copy


def truncate(path) -> None:
    path.write_bytes(path.read_bytes()[:999])


@pytest.mark.parametrize("damage, why, step", [
    (lambda c: (c / "step-00000004.1/state.json").unlink(), "state.json missing", 2),
    (lambda c: truncate(c / "step-00000004.1/model.pt"), "model.pt is not the file committed", 2),
    (lambda c: truncate(c / "step-00000004.1/optimizer.pt"), "optimizer.pt is not the file committed", 2),
    (lambda c: (c / "latest").write_text("step-00000006"), "step-00000006 is damaged (folder missing)", 4),
])
def test_a_damaged_newest_checkpoint_falls_back_to_the_newest_complete_one(finished, tmp_path, tiny_args,
                                                                          damage, why, step):
    shards, run = damaged(finished, tmp_path, damage)
    rerun = cli("pretrain", "--shards", shards, "--out", run, *tiny_args)
    assert rerun.exit_code == 0, rerun.output
    folder = "step-00000002" if step == 2 else "step-00000004.1"
    assert why in rerun.output and f"falling back to {folder}, the newest complete" in rerun.output
    assert f"resumed from {run / 'checkpoints' / folder} (step {step}," in rerun.output
    assert steps(run) == [1, 2, 3, 4]  # steps 3 and 4 again, each logged once
    assert checkpoint.problem(checkpoint.latest(run)) is None


def test_a_damaged_only_checkpoint_is_refused_in_one_line(finished, tmp_path, tiny_args):
    def only_one_with_an_empty_rng(c):
        shutil.rmtree(c / "step-00000002")
        (c / "step-00000004.1/rng.pt").write_bytes(b"")

    shards, run = damaged(finished, tmp_path, only_one_with_an_empty_rng)
    before = sorted(p.name for p in run.rglob("*"))
    one_line_error(cli("pretrain", "--shards", shards, "--out", run, *tiny_args), "no complete checkpoint",
                   "rng.pt is not the file committed", "new --out")
    assert sorted(p.name for p in run.rglob("*")) == before  # nothing swept or cut


def test_eval_or_init_from_a_damaged_checkpoint_is_one_line_with_or_without_its_sha256(finished, tmp_path,
                                                                                        tiny_args):
    shards, run = damaged(finished, tmp_path, lambda c: truncate(c / "step-00000004.1/model.pt"))
    one_line_error(cli("eval", "--shards", shards, "--run", run, "--split", ""), "damaged",
                   "model.pt is not the file committed")
    state = run / "checkpoints/step-00000004.1/state.json"  # a checkpoint from before the sha256s
    state.write_text(json.dumps({k: v for k, v in json.loads(state.read_text()).items() if k != "files"}))
    one_line_error(cli("eval", "--shards", shards, "--run", run, "--split", ""), "damaged",
                   "model.pt cannot be read as tensors")
    shutil.copytree(run / "checkpoints/step-00000002", run / "checkpoints/best-00000002")
    (run / "checkpoints/best-00000002/state.json").unlink()  # a damaged best: refused, not replaced by latest
    (run / "checkpoints/best").write_text("best-00000002")
    one_line_error(cli("eval", "--shards", shards, "--run", run, "--split", ""), "best-00000002 is damaged",
                   "state.json missing")
    state.unlink()  # --init names a run whose latest checkpoint lost its state.json
    mosi = make_shards(tmp_path / "mosi", n=8, shard_size=8, labelled=True)
    one_line_error(cli("finetune", "--shards", mosi, "--out", tmp_path / "ft", "--init", run, *tiny_args),
                   "step-00000004.1 is damaged (state.json missing)")


def test_eval_and_analyse_are_refused_while_a_run_trains_the_folder(finished, tmp_path):
    """eval and analyse wrote predictions and analysis.json beside a training run of the same folder."""
    shards, run = finished
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    for command, written in (("eval", "predictions-.parquet"), ("analyse", "analysis.json")):
        args = (command, "--shards", shards, "--run", copy, "--split", "")
        with OutputLock(copy / "_lock", f"kebr-train pretrain --out {copy}"):
            one_line_error(cli(*args), "in use by another run", "kebr-train pretrain")
        assert not (copy / written).exists()
        assert cli(*args).exit_code == 0 and (copy / written).exists()  # the lock let go: it runs


def test_a_resume_on_other_data_is_refused(tmp_path, tiny_args, monkeypatch):
    import shard_factory

    shards, out = tmp_path / "f", tmp_path / "run"
    make_shards(shards, n=8, shard_size=8, labelled=True)
    train = ("finetune", "--shards", shards, "--out", out, *tiny_args)
    assert cli(*train, "--set", "max_steps=1").exit_code == 0
    def files() -> dict:  # the table verdicts' cache (verified_tables.json) may change: it is not the run's
        return {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != "verified_tables.json"}

    kept = files()

    def refused(*needles: str) -> None:
        one_line_error(cli(*train), "was trained on other data", "new --out", *needles)
        assert files() == kept  # nothing swept, cut or trained

    shutil.rmtree(shards)  # the same clips, every label negated
    monkeypatch.setattr(shard_factory, "SENTIMENT", {w: -y for w, y in shard_factory.SENTIMENT.items()})
    make_shards(shards, n=8, shard_size=8, labelled=True)
    refused("another plan (other clips, splits or labels)", "mask tables hold other values")
    monkeypatch.undo()
    shutil.rmtree(shards)  # acoustic frames of another width (a traceback as the weights loaded, before)
    make_shards(shards, n=8, shard_size=8, labelled=True, widths=(40, 709))
    refused("acoustic tables hold other values", "audio width 33 -> 40")
    state = checkpoint.latest(out) / "state.json"  # a run from before the record: its weights refuse to load
    state.write_text(json.dumps({k: v for k, v in json.loads(state.read_text()).items() if k != "data"}))
    one_line_error(cli(*train), "does not fit this model", "(33,) there, (40,) here")
    shutil.rmtree(shards)
    make_shards(shards, n=8, shard_size=8, labelled=True)  # the data it was trained on: resumed
    resumed = cli(*train)
    assert resumed.exit_code == 0 and "resumed from" in resumed.output, resumed.output
