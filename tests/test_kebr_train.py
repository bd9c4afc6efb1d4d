"""KEBR model and trainer on CPU: TCMF padding invariance, tokenisation with one [MASK], the traps of
the released code, overfitting 16 samples, resume equality, and pretrain -> finetune -> eval."""

import io
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import train_cli
from shard_factory import make_shards

from kebr_model.training import checkpoint
from kebr_model.config import TrainConfig
from kebr_model.data import DataConfig, ShardBatches, encode_text
from kebr_model.fusions.tcmf import TCMF
from kebr_model.training.train import Trainer, load_encoder

pytest.importorskip("transformers")
ROOT_TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def tokenizer():
    return load_encoder("")[0]


# --- TCMF ------------------------------------------------------------------------------------------

def test_padding_never_changes_valid_outputs():
    torch.manual_seed(0)
    tcmf = TCMF({"text": 16, "audio": 33, "visual": 709}, layers=2).eval()
    x_t = torch.randn(2, 5, 16)
    a, v = torch.randn(2, 7, 33), torch.randn(2, 4, 709)
    am = torch.tensor([[True] * 7, [True] * 3 + [False] * 4])
    vm = torch.tensor([[True] * 4, [True, True, False, False]])

    def run(a, am):
        return tcmf.fuse(x_t, {"audio": a, "visual": v}, {"audio": am, "visual": vm})[0]

    out = run(a, am)
    a_pad = torch.cat([a, 1e3 * torch.randn(2, 5, 33)], 1)  # garbage in padded frames
    am_pad = torch.cat([am, torch.zeros(2, 5, dtype=torch.bool)], 1)
    assert torch.allclose(out, run(a_pad, am_pad), atol=1e-5)
    a_garbage = a.clone()
    a_garbage[1, 3:] = 1e3
    assert torch.allclose(run(a_garbage, am), out, atol=1e-5)


def test_a_missing_modality_contributes_zero():
    torch.manual_seed(0)
    tcmf = TCMF({"text": 8, "audio": 33, "visual": 709}, layers=1).eval()
    x_t, a = torch.randn(1, 3, 8), torch.randn(1, 4, 33)
    masks = {"audio": torch.ones(1, 4, dtype=torch.bool), "visual": torch.zeros(1, 1, dtype=torch.bool)}
    out, _ = tcmf.fuse(x_t, {"audio": a, "visual": torch.randn(1, 1, 709)}, masks)
    out2, _ = tcmf.fuse(x_t, {"audio": a, "visual": torch.randn(1, 1, 709) * 100}, masks)
    assert torch.isfinite(out).all() and torch.allclose(out, out2)
    # the same layer without the visual modality at all gives the same output (its weights copied)
    audio_only = TCMF({"text": 8, "audio": 33}, layers=1).eval()
    audio_only.load_state_dict({k: v for k, v in tcmf.state_dict().items() if ".visual." not in k})
    assert torch.allclose(audio_only.fuse(x_t, {"audio": a}, {"audio": masks["audio"]})[0], out, atol=1e-6)


def test_shared_layers_compute_keys_and_values_once():
    calls = {"n": 0}
    for shared, want in ((True, 1), (False, 4)):
        tcmf = TCMF({"text": 8, "audio": 33, "visual": 709}, layers=4, shared=shared)
        calls["n"] = 0
        for layer in tcmf.layers:
            layer.modal["audio"].key.register_forward_hook(lambda *a: calls.__setitem__("n", calls["n"] + 1))
        tcmf.fuse(torch.randn(1, 3, 8), {"audio": torch.randn(1, 4, 33), "visual": torch.randn(1, 2, 709)},
             {"audio": torch.ones(1, 4, dtype=torch.bool), "visual": torch.ones(1, 2, dtype=torch.bool)})
        assert calls["n"] == want
    assert len(TCMF({"text": 8, "audio": 33, "visual": 709}, layers=4, shared=True).layers) == 1


def test_pooled_value_equals_the_mean_of_the_projected_frames():
    from kebr_model.fusions import masked_mean
    from kebr_model.fusions.tcmf import CrossModal

    torch.manual_seed(0)
    cm = CrossModal(33, 16)
    with torch.no_grad():
        cm.norm.weight.uniform_(0.5, 1.5)
        cm.norm.bias.uniform_(-0.5, 0.5)
    x = torch.randn(3, 9, 33)
    mask = torch.tensor([[True] * 9, [True] * 4 + [False] * 5, [True] + [False] * 8])
    want = masked_mean(cm.value(cm.norm(x)), mask)
    assert torch.allclose(cm.pooled_value(x, mask), want, atol=1e-5)
    cm.pooled_value(x, mask).sum().backward()
    assert cm.norm.weight.grad is not None and cm.value.weight.grad is not None  # the maps still learn


# --- tokenisation ------------------------------------------------------------------------------

def test_exactly_one_mask_token_wherever_it_falls(tokenizer):
    for text in ("[MASK] movie was great.", "I really [MASK].", "the (unbelievable) [MASK], right"):
        ids, pos = encode_text(tokenizer, text, True, 64)
        assert ids.count(tokenizer.mask_token_id) == 1 and ids[pos] == tokenizer.mask_token_id
    assert encode_text(tokenizer, "two [MASK] and [MASK]", True, 64) is None
    long_text = " ".join(["word"] * 100) + " [MASK] " + " ".join(["end"] * 100)
    ids, pos = encode_text(tokenizer, long_text, True, 32)
    assert len(ids) == 32 and ids[pos] == tokenizer.mask_token_id
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id


def test_batches_pad_dynamically_and_mask_from_the_masked_text(tmp_path, tokenizer):
    root = make_shards(tmp_path / "f", n=40, shard_size=8)
    batches = list(ShardBatches(root, "pretrain", tokenizer, DataConfig(batch_size=4, bucket_batches=2), seed=1))
    assert sum(len(b["label"]) for b in batches) == 40
    for b in batches:
        lengths = b["attention_mask"].sum(1)
        assert b["input_ids"].shape[1] == int(lengths.max())  # padded to this batch's longest only
        for i in range(len(b["label"])):
            assert b["input_ids"][i, b["mask_pos"][i]] == tokenizer.mask_token_id
            assert b["audio_mask"][i].sum() > 0 and b["visual_mask"][i].sum() > 0
    again = list(ShardBatches(root, "pretrain", tokenizer, DataConfig(batch_size=4, bucket_batches=2), seed=1))
    assert [b["clip_id"] for b in again] == [b["clip_id"] for b in batches]  # order from the seed alone
    other = list(ShardBatches(root, "pretrain", tokenizer, DataConfig(batch_size=4, bucket_batches=2), seed=2))
    assert [b["clip_id"] for b in other] != [b["clip_id"] for b in batches]


# --- training -------------------------------------------------------------------------------------

#: the text encoder of `tiny()` configs: the tiny random BERT (set per module below; argv in ddp_worker.py)
TINY_ENCODER: dict[str, str] = {}


@pytest.fixture(autouse=True, scope="module")
def _tiny_encoder(tiny_bert):
    TINY_ENCODER["encoder"] = tiny_bert


def tiny(**kw):
    base = dict(layers=1, batch_size=16, epochs=1, checkpoint_every=0, lr_other=1e-3, lr_encoder=1e-4, dropout=0.0,
                **TINY_ENCODER)
    return TrainConfig.load(**{**base, **kw})


def test_tiny_model_overfits_16_samples(tmp_path):
    root = make_shards(tmp_path / "f", n=16, shard_size=16)
    trainer = Trainer(tiny(epochs=50, lr_other=3e-3, use_mcc=False), root, tmp_path / "run")
    trainer.fit()
    rows = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert rows[0]["l1"] > 0.8 and rows[-1]["l1"] < 0.2, (rows[0]["l1"], rows[-1]["l1"])


def test_frozen_encoder_stays_in_eval_mode(tmp_path):
    root = make_shards(tmp_path / "f", n=4, shard_size=4)
    trainer = Trainer(tiny(freeze_encoder=True, dropout=0.1), root, tmp_path / "run")
    trainer.train_mode()
    assert trainer.model.training and not trainer.model.encoder.training  # no dropout in a frozen encoder
    assert not any(p.requires_grad for p in trainer.model.encoder.parameters())
    assert "encoder" not in {g["name"] for g in trainer.optimizer.param_groups}


def test_validation_loss_is_the_training_formula(tmp_path):
    root = make_shards(tmp_path / "f", n=8, shard_size=8)
    trainer = Trainer(tiny(), root, tmp_path / "run")
    result = trainer.evaluate("")
    trainer.model.eval()
    batch = next(iter(trainer.batches("", 0, shuffle=False)))
    with torch.no_grad():
        terms = trainer.loss(trainer.model(batch, "pretrain"), batch)
    assert result["loss"] == pytest.approx(float(terms["loss"]), rel=1e-5)
    assert result["loss"] == pytest.approx(result["l1"] + result["mcc"], rel=1e-5)


def test_resume_gives_the_same_next_step_loss(tmp_path):
    root = make_shards(tmp_path / "f", n=32, shard_size=8)
    cfg = dict(batch_size=4, dropout=0.1, checkpoint_every=2, epochs=1)
    Trainer(tiny(max_steps=5, **cfg), root, tmp_path / "a").fit()
    straight = [json.loads(x) for x in (tmp_path / "a/metrics.jsonl").read_text().splitlines()]
    Trainer(tiny(max_steps=2, **cfg), root, tmp_path / "b").fit()
    resumed = Trainer(tiny(max_steps=5, **cfg), root, tmp_path / "b")
    resumed.resume(checkpoint.latest(tmp_path / "b"))
    assert resumed.state["step"] == 2
    resumed.fit()
    rows = [json.loads(x) for x in (tmp_path / "b/metrics.jsonl").read_text().splitlines()]
    after = [r for r in rows if r["split"] == "train" and r["step"] > 2]
    assert [r["loss"] for r in after] == [r["loss"] for r in straight if r["step"] > 2]


def test_checkpoints_load_tensors_only(tmp_path, capsys):
    root = make_shards(tmp_path / "f", n=4, shard_size=4)
    trainer = Trainer(tiny(), root, tmp_path / "run")
    path = checkpoint.save(tmp_path / "run", "step-00000001", trainer.model, trainer.optimizer, None, trainer.state)
    assert (path / "model.pt").exists() and checkpoint.latest(tmp_path / "run") == path

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    buf = io.BytesIO()
    torch.save({"x": Evil()}, buf)
    (path / "model.pt").write_bytes(buf.getvalue())
    with pytest.raises(checkpoint.DamagedCheckpoint, match="model.pt is not the file committed"):
        checkpoint.load(path, trainer.model)  # refused by its sha256 before it is read
    state = checkpoint.read_state(path)
    del state["files"]  # a checkpoint from before the sha256s: the unpickler itself refuses the code
    (path / "state.json").write_text(json.dumps(state))
    with pytest.raises(checkpoint.DamagedCheckpoint, match="model.pt cannot be read as tensors"):
        checkpoint.load(path, trainer.model)
    assert "pwned" not in capsys.readouterr().out


def test_pretrain_then_finetune_then_eval_through_the_cli(tmp_path, tiny_bert):
    pre = make_shards(tmp_path / "pre", n=16, shard_size=8)
    mosi = make_shards(tmp_path / "mosi", n=20, shard_size=10, seed=3, labelled=True)
    common = ["--set", "layers=1", "--set", "batch_size=4", "--set", "checkpoint_every=0", "--set",
              f"encoder='{tiny_bert}'"]

    def train(*args):  # in-process (the README command's test runs the installed CLI in subprocesses)
        result = train_cli(*args)
        assert result.exit_code == 0, result.output[-3000:]
        return result

    train("--shards", str(pre), "--task", "pretrain", "--out", str(tmp_path / "runs/pre"), *common)
    assert (tmp_path / "runs/pre/plots/cosines.png").exists()
    proc = train("--shards", str(mosi), "--task", "finetune", "--init", str(tmp_path / "runs/pre"), "--out",
                 str(tmp_path / "runs/mosi"), "--seeds", "1,2", "--set", "train_split='train'",
                 "--set", "valid_split='valid'", "--set", "epochs=2", *common)
    assert "mean ± std" in proc.stdout and "Has0_acc_2" in proc.stdout
    assert checkpoint.best(tmp_path / "runs/mosi/seed-1") is not None
    test = json.loads((tmp_path / "runs/mosi/seed-2/test_metrics.json").read_text())
    assert test["samples"] == 4 and set(test) >= {"Non0_F1_score", "Mult_acc_7", "MAE", "Corr"}
    proc = train("eval", "--shards", str(mosi), "--run", str(tmp_path / "runs/mosi/seed-1"), "--split", "test")
    assert json.loads(proc.stdout)["samples"] == 4


def ddp_config() -> TrainConfig:
    """Deterministic settings shared by the DDP ranks and the single-process reference. Plain SGD, so
    that the comparison is of gradients: Adam would blow float noise in zero-gradient parameters
    (attention key biases) up to full-size steps."""
    return tiny(batch_size=2, max_steps=2, dropout=0.0, encoder_dropout=0.0, use_mcc=True, optimizer="sgd",
                lr_other=0.1, lr_encoder=0.01)


def test_two_process_ddp_matches_one_process(tmp_path):
    """Each rank's batch i is half of a global batch: DDP's averaged gradient equals one process
    stepping on the two halves together, so the weights after 2 steps must agree."""
    from kebr_model.data import collate

    root = make_shards(tmp_path / "f", n=16, shard_size=4)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(ROOT_TESTS / "ddp_worker.py"), str(root), str(tmp_path / "ddp"),
                           TINY_ENCODER["encoder"]],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp_state = torch.load(checkpoint.latest(tmp_path / "ddp") / "model.pt", weights_only=True)
    single = Trainer(ddp_config(), root, tmp_path / "single")
    start = {k: v.clone() for k, v in single.model.state_dict().items()}
    halves = [iter(ShardBatches(root, "pretrain", single.tokenizer, single.data_cfg, seed=0, epoch=0, rank=r,
                                world=2).sample_batches()) for r in (0, 1)]
    for _ in range(2):
        single.step(collate(next(halves[0]) + next(halves[1]), single.tokenizer.pad_token_id))
    moved = max(float((v - start[k]).abs().max()) for k, v in single.model.state_dict().items())
    assert moved > 1e-3  # the two steps really changed the weights
    for name, value in single.model.state_dict().items():
        assert torch.allclose(value, ddp_state[name], atol=2e-6), name


def test_mmsa_pickle_needs_trust_then_trains(tmp_path):
    rng = np.random.default_rng(0)

    def part(n, offset):
        return {"id": [f"vid{offset + i}$_${i}" for i in range(n)],
                "raw_text": np.array(["it was good fun", "what an awful film", "fine"] * n)[:n],
                "audio": rng.standard_normal((n, 30, 33)).astype(np.float32),
                "vision": rng.standard_normal((n, 12, 709)).astype(np.float32),
                "audio_lengths": [30, 20] * (n // 2) + [30] * (n % 2), "vision_lengths": [12] * n,
                "regression_labels": rng.uniform(-3, 3, n).astype(np.float32)}

    pkl = tmp_path / "mosi.pkl"
    pkl.write_bytes(pickle.dumps({"train": part(8, 0), "valid": part(2, 100), "test": part(2, 200)}))
    cli = ["import-mmsa", "--pickle", pkl, "--out", tmp_path / "f"]
    refused = train_cli(*cli)
    assert refused.exit_code == 2 and "--trust-pickle" in refused.stderr and not (tmp_path / "f").exists()
    done = train_cli(*cli, "--trust-pickle")
    assert done.exit_code == 0, done.stderr
    assert json.loads(done.stdout) == {"train": 8, "valid": 2, "test": 2}
    trainer = Trainer(tiny(task="finetune", batch_size=4, train_split="train", valid_split="valid"), tmp_path / "f",
                      tmp_path / "run")
    lengths = sorted(int(b["audio_mask"].sum(1).max()) for b in trainer.batches("train", 0, shuffle=True))
    assert lengths[-1] == 30 and trainer.evaluate("test")["samples"] == 2


def test_attention_mask_comes_from_the_masked_text(tokenizer):
    """A word of several word pieces becomes one [MASK]: the mask must follow the masked sequence,
    not the unmasked one (a trap of the released code)."""
    from kebr_model.data import collate

    plain = tokenizer("an unbelievably dull movie")["input_ids"]
    ids, pos = encode_text(tokenizer, "an [MASK] dull movie", True, 64)
    assert len(ids) < len(plain)
    b = collate([{"clip_id": "a", "input_ids": ids, "mask_pos": pos, "label": 1.0,
                  "audio": np.zeros((0, 33), "float32"),
                  "visual": np.zeros((0, 709), "float32")},
                 {"clip_id": "b", "input_ids": plain, "mask_pos": 1, "label": 0.0,
                  "audio": np.zeros((2, 33), "float32"),
                  "visual": np.zeros((0, 709), "float32")}], tokenizer.pad_token_id)
    assert int(b["attention_mask"][0].sum()) == len(ids) and int(b["attention_mask"][1].sum()) == len(plain)
    assert b["input_ids"][0, len(ids):].eq(tokenizer.pad_token_id).all()
    assert not b["audio_mask"][0].any() and b["audio_mask"][1].sum() == 2 and not b["visual_mask"].any()


def test_loader_workers_see_every_sample_once(tmp_path, tokenizer):
    root = make_shards(tmp_path / "f", n=24, shard_size=4)
    ds = ShardBatches(root, "pretrain", tokenizer, DataConfig(batch_size=4), seed=0)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
    ids = [c for b in loader for c in b["clip_id"]]
    assert sorted(ids) == [f"clip{i:04d}" for i in range(24)]


# --- checkpoint commit: never without a valid checkpoint ------------------------------------------

def resave_killed_at_call(run: Path, k: int) -> None:
    """In a forked child: save step 2, then re-save it with other weights, SIGKILLed just before the
    k-th file-system call of the re-save (rename, replace, fsync, unlink, rmdir, mkdir, rmtree)."""
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters())
    checkpoint.save(run, "step-00000002", model, opt, None, {"step": 2, "version": "old"})
    calls = {"n": 0}

    def killing(fn):
        def wrapped(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == k:
                os.kill(os.getpid(), signal.SIGKILL)
            return fn(*args, **kwargs)
        return wrapped

    for module, name in ((os, "rename"), (os, "replace"), (os, "fsync"), (os, "unlink"), (os, "rmdir"),
                         (os, "mkdir"), (shutil, "rmtree")):
        setattr(module, name, killing(getattr(module, name)))
    with torch.no_grad():
        model.weight.fill_(7.0)
    checkpoint.save(run, "step-00000002", model, opt, None, {"step": 2, "version": "new"})


def killed_child(run: Path, k: int) -> bool:
    """Run `resave_killed_at_call` in a forked process; True when the kill happened."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            resave_killed_at_call(run, k)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) or os.WEXITSTATUS(status) == 0
    return os.WIFSIGNALED(status)


def test_a_kill_at_any_point_of_a_re_save_leaves_a_valid_checkpoint(tmp_path):
    """SIGKILL before each file-system call of a re-save of the same step (what happens whenever
    max_steps or an epoch's end is a multiple of checkpoint_every): `latest` must always name a
    complete checkpoint, old or new, and the next start sweeps what the kill left."""
    k, outcomes = 0, set()
    while True:
        k += 1
        run = tmp_path / f"k{k}"
        killed = killed_child(run, k)
        folder = checkpoint.latest(run)
        assert folder is not None, f"kill at call {k}: no valid checkpoint left"
        meta = checkpoint.read_state(folder)
        weights = torch.load(folder / "model.pt", weights_only=True)["weight"]
        assert bool((weights == 7.0).all()) == (meta["version"] == "new"), k
        outcomes.add(meta["version"])
        checkpoint.sweep(run)
        checkpoint.prune(run / "checkpoints", keep_last=0)
        left = sorted(p.name for p in (run / "checkpoints").iterdir())
        assert left == ["latest", folder.name], (k, left)
        if not killed:
            break
    assert outcomes == {"old", "new"} and k > 5


def test_resume_sweeps_temp_folders_and_cuts_the_metrics_log(tmp_path):
    root = make_shards(tmp_path / "f", n=16, shard_size=8)
    cfg = dict(batch_size=4, checkpoint_every=2, epochs=1)
    run = tmp_path / "run"
    Trainer(tiny(max_steps=3, **cfg), root, run).fit()
    straight = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in straight] == [1, 2, 3]
    # as if killed after logging step 3 and during the write of its checkpoint
    shutil.rmtree(checkpoint.latest(run))
    (run / "checkpoints/latest").write_text("step-00000002")
    (run / "checkpoints/.step-00000003.tmp-0123").mkdir()
    resumed = Trainer(tiny(max_steps=3, **cfg), root, run)
    line = resumed.resume(checkpoint.latest(run))
    assert "step-00000002 (step 2" in line and "swept 1" in line and "dropped 1 metrics.jsonl row" in line
    assert not (run / "checkpoints/.step-00000003.tmp-0123").exists()
    resumed.fit()
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3] and rows[2]["loss"] == straight[2]["loss"]


def test_checkpoints_keep_last_and_hold_no_optimiser_state_for_frozen_parameters(tmp_path):
    root = make_shards(tmp_path / "f", n=16, shard_size=8, labelled=True)
    run = tmp_path / "run"
    trainer = Trainer(tiny(task="finetune", batch_size=2, checkpoint_every=1, max_steps=4, keep_last=2,
                           freeze_encoder=True, train_split="train", valid_split="valid"), root, run)
    trainer.fit()
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["best", sorted(n for n in names if n.startswith("best-"))[0], "latest", "step-00000003",
                     "step-00000004.1"], names
    trainable = {n: p.numel() for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert not any(n.startswith("encoder.") for n in trainable)
    opt = torch.load(checkpoint.latest(run) / "optimizer.pt", weights_only=True)
    stored = sum(t.numel() for s in opt["state"].values() for key, t in s.items() if key != "step")
    assert 0 < stored <= 2 * sum(trainable.values())  # Adam's two moments, for trainable parameters only
    assert not (checkpoint.best(run) / "optimizer.pt").exists()  # best is evaluated or fine-tuned from, not resumed
