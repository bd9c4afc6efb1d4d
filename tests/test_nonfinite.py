"""The trainer never trains through NaN: a non-finite loss term or gradient stops the run (exit 3, one
line naming the term and the step, nothing saved after the last good checkpoint), or with
`nan_policy = skip_batch` the batch makes no update and is counted; under DDP every rank agrees."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from shard_factory import make_shards

from kebr_model.training import checkpoint
from kebr_model.cli import main
from kebr_model.config import TrainConfig
from kebr_model.training.nonfinite import NonFiniteError, describe_terms
from kebr_model.training.train import Trainer

ROOT = Path(__file__).resolve().parents[1]
#: in make_shards(n=16, shard_size=8), clip0013 is in the third batch of 4 (epoch 0, one process) and in
#: rank 0's second batch of two ranks (rank 1's batch is clean there)
POISON = "clip0013"


@pytest.fixture(scope="module")
def small(tiny_bert) -> list[str]:
    return ["--set", "layers=1", "--set", "batch_size=4", "--set", f"encoder='{tiny_bert}'"]


def cli(*args) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def rows(out: Path) -> list[dict]:
    metrics = out / "metrics.jsonl"
    return [json.loads(x) for x in metrics.read_text().splitlines()] if metrics.exists() else []


def test_the_issue_command_stops_at_step_1_naming_the_mcc_term(tmp_path, small):
    """`finetune --set mcc_g=1e308` logged "loss": null at every step and exited 0."""
    mosi = make_shards(tmp_path / "mosi", n=10, shard_size=5, seed=3, labelled=True)
    code, out, err = cli("finetune", "--shards", mosi, "--out", tmp_path / "run", *small, "--set", "mcc_g=1e308")
    assert code == 3 and "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: the MCC term went non-finite at step 1 ") and "nan_policy=skip_batch" in line
    assert "task loss" not in line  # the task term stayed finite
    assert not rows(tmp_path / "run") and checkpoint.latest(tmp_path / "run") is None and not out
    every = cli("finetune", "--shards", mosi, "--out", tmp_path / "skip", *small, "--set", "mcc_g=1e308",
                "--set", "nan_policy=skip_batch")
    assert every[0] == 3 and "every batch of epoch 0 (2) went non-finite" in every[2].strip().splitlines()[-1]


def test_a_poisoned_clip_stops_at_its_step_keeping_the_last_good_checkpoint(tmp_path, small):
    """-inf in one clip's audio frames: the run stops at that clip's step (3) with step 2's checkpoint as
    an uninterrupted clean run left it; resumed with skip_batch, it skips that batch and finishes."""
    every = [*small, "--set", "checkpoint_every=1", "--set", "keep_last=0"]
    clean = make_shards(tmp_path / "clean", n=16, shard_size=8)
    assert cli("pretrain", "--shards", clean, "--out", tmp_path / "clean-run", *every, "--set", "max_steps=2")[0] == 0
    poisoned = make_shards(tmp_path / "poisoned", n=16, shard_size=8, poison=POISON)
    out = tmp_path / "run"
    code, _, err = cli("pretrain", "--shards", poisoned, "--out", out, *every)
    assert code == 3 and "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert "the task loss and the MCC term went non-finite at step 3 (epoch 0, batch 3 of the epoch)" in line
    assert "step-00000002" in line
    assert checkpoint.latest(out).name == "step-00000002" and [r["step"] for r in rows(out)] == [1, 2]
    kept = torch.load(checkpoint.latest(out) / "model.pt", weights_only=True)
    reference = torch.load(checkpoint.latest(tmp_path / "clean-run") / "model.pt", weights_only=True)
    assert all(torch.isfinite(v).all() and torch.equal(v, reference[k]) for k, v in kept.items())

    code, stdout, err = cli("pretrain", "--shards", poisoned, "--out", out, *every, "--set", "nan_policy=skip_batch")
    assert code == 0, err
    assert "resumed from" in err and "skipped the batch of step 3 (epoch 0, batch 3 of the epoch)" in err
    assert json.loads(stdout) == {"step": 3, "best_valid": None, "skipped_batches": 1}
    assert [r["step"] for r in rows(out)] == [1, 2, 3] and all(r["loss"] is not None for r in rows(out))
    assert checkpoint.read_state(checkpoint.latest(out))["skipped_batches"] == 1


@pytest.mark.parametrize("policy", ["stop", "skip_batch"])
def test_a_non_finite_gradient_names_its_parameter_and_never_steps(tmp_path, tiny_bert, policy):
    root = make_shards(tmp_path / "f", n=4, shard_size=4)
    cfg = TrainConfig.load(layers=1, batch_size=4, encoder=tiny_bert, nan_policy=policy, grad_clip=1.0)
    trainer = Trainer(cfg, root, tmp_path / "run")
    target = trainer.model.pretrain_head[-1].weight
    target.register_hook(lambda grad: grad * float("nan"))  # an overflow in one parameter's backward
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    batch = next(iter(trainer.batches("", 0, shuffle=False)))
    if policy == "stop":
        with pytest.raises(NonFiniteError, match=r"the gradient \(pretrain_head\.\d+\.weight\) went non-finite at "
                                                 r"step 1 .*no checkpoint had been written yet"):
            trainer.step(batch)
    else:
        assert trainer.step(batch) is None and trainer.state["skipped_batches"] == 1
    assert not trainer.optimizer.state  # no update: Adam never stepped
    assert all(torch.equal(v, before[k]) for k, v in trainer.model.state_dict().items())


def test_terms_are_named_as_the_user_reads_them():
    assert describe_terms(["loss", "task", "l1"]) == "the task loss"
    assert describe_terms(["loss", "mcc", "task_audio"]) == "the MCC term and the audio head's loss"
    assert describe_terms(["loss"]) == "the total loss"
    assert describe_terms(["loss", "mcc", "mcc_audio"]) == "the MCC term and the MCC's audio term"


def test_a_non_finite_term_the_loss_does_not_use_trains_on(tmp_path, small):
    """With use_mcc = false the MCC is only logged: its overflow is not a reason to stop (it was, exit 3)."""
    mosi = make_shards(tmp_path / "mosi", n=10, shard_size=5, seed=3, labelled=True)
    code, out, err = cli("finetune", "--shards", mosi, "--out", tmp_path / "run", *small, "--set", "mcc_g=1e308",
                         "--set", "use_mcc=false")
    assert code == 0, err
    assert rows(tmp_path / "run") and all(r["loss"] is not None for r in rows(tmp_path / "run"))


def test_two_ddp_ranks_agree_to_stop_then_to_skip_a_batch_only_one_of_them_saw_go_non_finite(tmp_path, small):
    """Only rank 0's second batch holds the poisoned clip: both ranks must stop there (exit 3) and, resumed with skip_batch, both skip it (a rank stepping alone would wait forever in DDP's
    gradient all-reduce) and finish the epoch together."""
    poisoned = make_shards(tmp_path / "poisoned", n=16, shard_size=8, poison=POISON)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}

    def torchrun(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                               "-m", "kebr_model.cli", "pretrain", "--shards", str(poisoned),
                               "--out", str(tmp_path / "run"), *small, "--set", "checkpoint_every=1", *extra],
                              capture_output=True, text=True, timeout=300, env=env)

    stopped = torchrun()
    assert "(exitcode: 3)" in stopped.stderr, stopped.stderr[-3000:]
    # each rank says it (unless torchrun's SIGTERM, sent when the first rank exits, is quicker)
    lines = {x for x in stopped.stderr.splitlines() if x.startswith("error: ")}
    assert len(lines) == 1 and "non-finite at step 2 " in lines.pop()
    assert checkpoint.latest(tmp_path / "run").name == "step-00000001"

    proc = torchrun("--set", "nan_policy=skip_batch")
    assert proc.returncode == 0, proc.stderr[-3000:]
    decoder, text, results = json.JSONDecoder(), proc.stdout.strip(), []
    while text:  # each rank prints its result
        result, end = decoder.raw_decode(text)
        results.append(result)
        text = text[end:].strip()
    assert results == [{"step": 1, "best_valid": None, "skipped_batches": 1}] * 2
    assert proc.stderr.count("skipped the batch of step 2 (epoch 0, batch 2 of the epoch)") == 1  # rank 0 says so


def test_a_non_finite_validation_loss_is_a_warning_and_never_the_best(tmp_path, small):
    """-inf frames in a valid clip (clip0003): validation's loss was logged as null with no word, now one
    warning line names the split and the step; no `best` checkpoint is made from that epoch."""
    mosi = make_shards(tmp_path / "mosi", n=10, shard_size=5, labelled=True, poison="clip0003")
    code, _, err = cli("finetune", "--shards", mosi, "--out", tmp_path / "run", *small, "--set", "epochs=1")
    assert code == 0, err
    valid = [r for r in rows(tmp_path / "run") if r["split"] == "valid"]
    assert len(valid) == 1 and valid[0]["loss"] is None
    warnings = [x for x in err.splitlines() if x.startswith("warning: validation")]
    assert len(warnings) == 1, err
    assert warnings[0].startswith(f"warning: validation on split 'valid' at step {valid[0]['step']} (epoch 1) gave "
                                  "non-finite loss, ")
    assert warnings[0].endswith("(logged as null); this epoch is never selected")
    assert checkpoint.best(tmp_path / "run") is None
