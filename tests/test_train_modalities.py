"""The trainer with any modalities of any width, per-modality labels, CH-SIMS metrics and the fidelity
options: widths read from the shards (a toy stage of width 5/20), MMSA pickles of any width, a CH-SIMS
v2-layout folder, `flatten` on raw inputs, per-seed heads, negative-cosine forms, scheduler, early stop."""

from __future__ import annotations

import csv
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import train_cli
from shard_factory import make_shards

from kebr_data.errors import ConfigError
from kebr_data.validate import validate
from kebr_model import mcc
from kebr_model.training import checkpoint
from kebr_model.config import TrainConfig
from kebr_model.training.optim import lr_factor
from kebr_model.errors import TrainSetupError
from kebr_model.training.train import Trainer

pytest.importorskip("transformers")
REPO = Path(__file__).resolve().parents[1]


#: the text encoder of `tiny()` configs: the tiny random BERT (conftest.py)
TINY_ENCODER: dict[str, str] = {}


@pytest.fixture(autouse=True, scope="module")
def _tiny_encoder(tiny_bert):
    TINY_ENCODER["encoder"] = tiny_bert


def tiny(**kw):
    base = dict(layers=1, batch_size=4, epochs=1, checkpoint_every=0, lr_other=1e-3, lr_encoder=1e-4, dropout=0.0,
                freeze_encoder=True, **TINY_ENCODER)
    return TrainConfig.load(**{**base, **kw})


def finetune(**kw):
    return tiny(task="finetune", train_split="train", valid_split="valid", **kw)


# --- config ----------------------------------------------------------------------------------------

def test_config_goes_through_the_pipeline_loader(tmp_path):
    toml = tmp_path / "t.toml"
    toml.write_text('[train]\nlayers = 2\n[modalities]\naudio = "ssl_audio"\nuse = "ta"\n')
    cfg = TrainConfig.load([toml], ["batch_size=3", "modalities.visual=video_encoder"])
    assert (cfg.fusion_settings.layers, cfg.batch_size, cfg.modalities.audio, cfg.modalities.visual) == (2, 3, "ssl_audio",
                                                                                          "video_encoder")
    assert cfg.used == {"audio": "ssl_audio"}
    with pytest.raises(ConfigError, match="did you mean train.layers"):
        TrainConfig.load(overrides=["layerz=2"])
    with pytest.raises(ConfigError, match="t \\| a \\| ta \\| tv \\| av \\| tav"):
        TrainConfig.load(overrides=["modalities.use=tva"])
    with pytest.raises(ConfigError, match="at least 1"):
        TrainConfig.load(overrides=["layers=0"])
    again = TrainConfig.load(**cfg.to_dict())  # as eval reloads a checkpoint's config
    assert again == cfg


# --- modalities by name, widths from the shards ------------------------------------------------------

def test_widths_come_from_the_shard_schema_of_any_stage(tmp_path):
    root = make_shards(tmp_path / "f", n=10, shard_size=5, labelled=True, widths=(5, 20),
                       stages=("toy_audio", "toy_visual"))
    mods = {"modalities": {"audio": "toy_audio", "visual": "toy_visual", "use": "tav"}}
    trainer = Trainer(finetune(max_steps=2, **mods), root, tmp_path / "run")
    assert trainer.widths == {"audio": 5, "visual": 20}
    layer = trainer.model.fusion.last
    assert layer.modal["audio"].key.in_features == 5 and layer.modal["visual"].key.in_features == 20
    trainer.fit()
    assert trainer.evaluate("test")["samples"] == 2
    for use, want in (("t", {}), ("ta", {"audio": 5}), ("tv", {"visual": 20}), ("av", {"audio": 5, "visual": 20})):
        t = Trainer(finetune(max_steps=1, modalities={**mods["modalities"], "use": use}), root, tmp_path / use)
        assert t.widths == want and set(t.model.fusion.last.modal) == set(want)
        t.fit()
        batch = next(iter(t.batches("train", 0, shuffle=False)))
        assert [m for m in ("audio", "visual") if m in batch] == list(want)
        if use == "av":  # the encoder sees [CLS] [SEP] only
            assert int(batch["attention_mask"].sum(1).max()) == 2


def test_a_stage_that_is_neither_in_the_folder_nor_registered_is_refused(tmp_path):
    root = make_shards(tmp_path / "f", n=5, shard_size=5, labelled=True)
    with pytest.raises(Exception, match="modalities.audio = 'nope'"):
        Trainer(finetune(modalities={"audio": "nope", "visual": "visual", "use": "tav"}), root, tmp_path / "r")


def mmsa_pickle(path: Path, a_dim: int, v_dim: int, sims: bool = False) -> Path:
    rng = np.random.default_rng(a_dim)

    def part(n, offset):
        audio = rng.standard_normal((n, 30, a_dim)).astype(np.float32)
        audio[:, 25:, :] = -np.inf  # COVAREP's -inf in padded frames
        audio[0, 0, 0] = -np.inf    # and inside a clip
        labels = rng.uniform(-1 if sims else -3, 1 if sims else 3, n).astype(np.float32)
        out = {"id": [f"vid{offset + i}$_${i}" for i in range(n)],
               "raw_text": np.array(["it was good fun", "what an awful film", "fine"] * n)[:n],
               "audio": audio, "vision": rng.standard_normal((n, 12, v_dim)).astype(np.float32),
               "audio_lengths": [30] * n, "vision_lengths": [12] * n, "regression_labels": labels}
        if sims:
            out |= {f"regression_labels_{m}": np.clip(labels + 0.1 * k, -1, 1) for k, m in enumerate("TAV")}
        return out

    path.write_bytes(pickle.dumps({"train": part(8, 0), "valid": part(2, 100), "test": part(2, 200)}))
    return path


@pytest.mark.parametrize("dims", [(5, 20), (74, 35)])
def test_mmsa_pickles_of_any_width_train_end_to_end(tmp_path, dims):
    from kebr_data.mmsa_import import import_mmsa, load_mmsa_pickle

    pkl = mmsa_pickle(tmp_path / "mosi.pkl", *dims)
    assert import_mmsa(load_mmsa_pickle(pkl, True), tmp_path / "f") == {"train": 8, "valid": 2, "test": 2}
    checked, problems = validate(tmp_path / "f")  # the pickle's widths are the tables' own, not 33/709
    assert checked > 0 and problems == []
    trainer = Trainer(finetune(epochs=2), tmp_path / "f", tmp_path / "run")
    assert trainer.widths == {"audio": dims[0], "visual": dims[1]}
    batch = next(iter(trainer.batches("train", 0, shuffle=False)))
    assert torch.isfinite(batch["audio"]).all() and (batch["audio"][:, 25:30] == 0).all()
    trainer.fit()
    assert {"Has0_acc_2", "MAE"} <= set(trainer.evaluate("test"))


def test_per_modality_labels_travel_through_import_and_train_as_targets(tmp_path):
    from kebr_data.mmsa_import import import_mmsa, load_mmsa_pickle
    from kebr_data.storage.store import Store

    data = load_mmsa_pickle(mmsa_pickle(tmp_path / "sims.pkl", 33, 709, sims=True), True)
    import_mmsa(data, tmp_path / "f")
    plan = Store(tmp_path / "f").read("plan", 0).to_pylist()
    by_id = {r["clip_id"]: r for r in plan}
    want = float(data["train"]["regression_labels_A"][3])
    assert by_id[data["train"]["id"][3]]["label_a"] == pytest.approx(want, abs=1e-6)
    trainer = Trainer(finetune(label="label_a", max_steps=1), tmp_path / "f", tmp_path / "run")
    assert trainer.metric_set == "sims2"
    batch = next(iter(trainer.batches("train", 0, shuffle=False)))
    assert batch["label"][0] == pytest.approx(by_id[batch["clip_id"][0]]["label_a"], abs=1e-6)


# --- CH-SIMS v2 layout --------------------------------------------------------------------------------

def sims2_folder(src: Path) -> Path:
    """CH-SIMS v2's layout: Raw/<video>/<clip>.mp4 (empty files here) and label.csv with label_T/A/V,
    plus unlabelled clips (no label, no mode) as v2's unsupervised part has."""
    (src / "Raw").mkdir(parents=True)
    rows = []
    for i in range(15):
        video, clip = f"video_{i // 5:04d}", f"{i % 5:04d}"
        (src / "Raw" / video).mkdir(exist_ok=True)
        (src / "Raw" / video / f"{clip}.mp4").write_bytes(b"")
        y = round(((i * 7) % 11 - 5) / 5, 1)
        rows.append({"video_id": video, "clip_id": clip, "text": "这部电影很好看", "label": y, "label_T": y,
                     "label_A": round(y / 2, 2), "label_V": -y, "annotation": "Positive",
                     "mode": ("train", "train", "train", "valid", "test")[i % 5]})
    rows += [{"video_id": "video_9999", "clip_id": f"{k:04d}", "text": "未标注", "label": "", "label_T": "",
              "label_A": "", "label_V": "", "annotation": "", "mode": ""} for k in range(2)]
    with open(src / "label.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return src


def test_a_ch_sims_v2_folder_indexes_trains_and_reports_sims_metrics(tmp_path, tiny_bert):
    from kebr_data.pipeline.plan import build_plan
    from kebr_data.schema import ACOUSTIC, VISUAL
    from kebr_data.storage.commit import commit_rows
    from kebr_data.storage.layout import OutputDir
    from kebr_data.storage.store import Store

    src = sims2_folder(tmp_path / "sims2")
    out = OutputDir(tmp_path / "f")
    build_plan(out, src, {"layout": "auto", "shard_size": 100})
    store = Store(tmp_path / "f")
    plan = store.read("plan", 0).to_pylist()
    assert len(plan) == 17 and sum(r["label"] is None and r["split"] is None for r in plan) == 2
    first = next(r for r in plan if r["clip_id"] == "video_0000$_$0001")
    assert (first["label_t"], first["label_a"], first["label_v"]) == pytest.approx((0.4, 0.2, -0.4))
    rng = np.random.default_rng(0)
    for stage, schema, dim in (("acoustic", ACOUSTIC, 33), ("visual", VISUAL, 709)):
        rows = [{"clip_id": r["clip_id"], "status": "ok", "features": rng.standard_normal((6, dim)).astype("f4")}
                for r in plan]
        commit_rows(out, stage, 0, rows, schema, "test", store.plan.shards["00000"]["sha256"])
    proc = train_cli("finetune", "--shards", tmp_path / "f", "--out", tmp_path / "run", "--config",
                     REPO / "pipelines/train_sims2.toml", "--set", "layers=1", "--set", "batch_size=4", "--set",
                     "epochs=1", "--set", "freeze_encoder=true", "--set", f"encoder='{tiny_bert}'")
    assert proc.exit_code == 0, proc.stderr[-3000:]
    test = json.loads((tmp_path / "run/test_metrics.json").read_text())
    assert {"Acc2", "Acc2_weak", "Acc3", "Acc5", "F1", "MAE", "Corr"} <= set(test) and test["samples"] == 3
    proc = train_cli("eval", "--shards", tmp_path / "f", "--run", tmp_path / "run", "--split", "test")
    assert proc.exit_code == 0, proc.stderr[-3000:]
    import pyarrow.parquet as pq

    preds = pq.read_table(tmp_path / "run/predictions-test.parquet").to_pylist()
    assert len(preds) == 3 and {p["split"] for p in preds} == {"test"}
    assert json.loads(proc.stdout)["MAE"] == pytest.approx(
        round(float(np.mean([abs(np.clip(p["prediction"], -1, 1) - p["label"]) for p in preds])), 4), abs=1e-4)


# --- fidelity ---------------------------------------------------------------------------------------

def test_flatten_compares_the_fused_text_with_the_raw_inputs(tmp_path, monkeypatch):
    root = make_shards(tmp_path / "f", n=4, shard_size=4)
    trainer = Trainer(tiny(mcc_space="flatten"), root, tmp_path / "run")
    seen = []
    real = mcc.flatten_cosine
    monkeypatch.setattr(mcc, "flatten_cosine", lambda a, am, b, bm: seen.append((a.shape[-1], b)) or real(a, am, b, bm))
    batch = next(iter(trainer.batches("", 0, shuffle=False)))
    out = trainer.model(batch, "pretrain")
    assert [w for w, _ in seen] == [trainer.model.encoder.config.hidden_size] * 2
    assert [b.shape[-1] for _, b in seen] == [33, 709]
    assert seen[0][1] is batch["audio"] and seen[1][1] is batch["visual"]  # the inputs themselves
    assert out.c_a.shape == (4,)


def test_seeds_with_init_start_from_different_heads(tmp_path):
    pre = make_shards(tmp_path / "pre", n=8, shard_size=8)
    Trainer(tiny(max_steps=1), pre, tmp_path / "pre-run").fit()
    saved = torch.load(checkpoint.latest(tmp_path / "pre-run") / "model.pt", weights_only=True)
    mosi = make_shards(tmp_path / "mosi", n=10, shard_size=10, labelled=True)
    heads = []
    for seed in (1, 2):
        t = Trainer(finetune(seed=seed), mosi, tmp_path / f"s{seed}", init=tmp_path / "pre-run")
        state = t.model.state_dict()
        assert all(torch.equal(state[k], v) for k, v in saved.items() if not k.startswith("finetune_head."))
        heads.append(state["finetune_head.1.weight"].clone())
    assert not torch.equal(heads[0], heads[1])
    assert not torch.equal(heads[0], saved["finetune_head.1.weight"])


def test_negative_cosine_forms_by_hand_and_with_gradient():
    c_a = torch.tensor([-0.5, 0.3], requires_grad=True)
    c_v = torch.tensor([0.3, 0.3], requires_grad=True)
    f11 = mcc.eq11(c_a, c_v).detach()
    const = mcc.mcc_paper(c_a, c_v, negative="constant").detach()
    assert float(const[0]) == pytest.approx(float(f11[0]) + 1.0) and float(const[1]) == pytest.approx(float(f11[1]))
    assert float(mcc.mcc_paper(c_a, c_v, negative="mean")[0].detach()) == pytest.approx(1 - (-0.5 + 0.3) / 2)  # 1.1
    assert float(mcc.mcc_paper(c_a, c_v, negative="abs")[0].detach()) == pytest.approx(1 + 0.5 + 0.3)  # 1.8
    for form, want in (("mean", -0.5), ("abs", -1.0)):  # d/dc_a at c_a = -0.5: pushes c_a up
        grad, = torch.autograd.grad(mcc.mcc_paper(c_a, c_v, negative=form)[0], c_a)
        assert float(grad[0]) == pytest.approx(want)


def test_lr_factor_by_hand():
    assert lr_factor(0, 0, 4, "none", 20) == 0.25 and lr_factor(3, 0, 4, "none", 20) == 1.0
    assert lr_factor(100, 10, 0, "cosine", 20) == pytest.approx(0.5)
    assert lr_factor(100, 20, 0, "cosine", 20) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(1, 5, 4, "cosine", 20) == pytest.approx(0.5 * (1 + np.cos(np.pi / 4)) / 2)


def test_scheduler_is_saved_and_a_resume_continues_it(tmp_path):
    root = make_shards(tmp_path / "f", n=16, shard_size=8)
    cfg = dict(batch_size=4, checkpoint_every=2, scheduler="cosine", scheduler_t_max=2, warmup_steps=3, epochs=2)
    Trainer(tiny(max_steps=6, **cfg), root, tmp_path / "a").fit()
    straight = [json.loads(x) for x in (tmp_path / "a/metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in straight]
    assert lrs[:3] == pytest.approx([1e-3 * (k + 2) / 3 if k < 2 else 1e-3 for k in range(3)])  # after each step
    assert lrs[4] == pytest.approx(1e-3 * 0.5)  # epoch 1 of a 2-epoch cosine
    Trainer(tiny(max_steps=2, **cfg), root, tmp_path / "b").fit()
    assert (checkpoint.latest(tmp_path / "b") / "scheduler.pt").exists()
    resumed = Trainer(tiny(max_steps=6, **cfg), root, tmp_path / "b")
    resumed.resume(checkpoint.latest(tmp_path / "b"))
    resumed.fit()
    rows = [json.loads(x) for x in (tmp_path / "b/metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in rows] == pytest.approx(lrs) and [r["loss"] for r in rows] == [r["loss"] for r in straight]


def test_early_stopping_after_patience_validations_without_improvement(tmp_path):
    root = make_shards(tmp_path / "f", n=10, shard_size=10, labelled=True)
    trainer = Trainer(finetune(epochs=6, patience=2, lr_other=0.0, lr_encoder=0.0), root, tmp_path / "run")
    state = trainer.fit()
    valid = [json.loads(x) for x in (tmp_path / "run/metrics.jsonl").read_text().splitlines()
             if json.loads(x)["split"] == "valid"]
    assert len(valid) == 3 and state["stopped_early"] and state["epoch"] == 3  # best, then 2 without gain


def test_learning_rates_per_encoder_and_optimizer_options(tmp_path):
    root = make_shards(tmp_path / "f", n=4, shard_size=4)
    t = Trainer(tiny(freeze_encoder=False, lr_audio=0.5, lr_visual=0.25, optimizer="adamw", weight_decay=0.01),
                root, tmp_path / "run")
    groups = {g["name"]: g for g in t.optimizer.param_groups}
    assert {k: g["lr"] for k, g in groups.items()} == {"encoder": 1e-4, "audio": 0.5, "visual": 0.25, "other": 1e-3}
    assert isinstance(t.optimizer, torch.optim.AdamW) and groups["audio"]["weight_decay"] == 0.01
    audio = {id(p) for p in groups["audio"]["params"]}
    assert audio == {id(p) for n, p in t.model.named_parameters() if ".modal.audio." in n}


def test_mse_loss_option(tmp_path):
    root = make_shards(tmp_path / "f", n=4, shard_size=4)
    t = Trainer(tiny(loss="mse", use_mcc=False), root, tmp_path / "run")
    batch = next(iter(t.batches("", 0, shuffle=False)))
    with torch.no_grad():
        out = t.model(batch, "pretrain")
        terms = t.loss(out, batch)
    assert float(terms["loss"]) == pytest.approx(float(((out.prediction - batch["label"]) ** 2).mean()))


def test_paper_presets_refuse_to_start_without_their_encoder(tmp_path):
    root = make_shards(tmp_path / "f", n=5, shard_size=5, labelled=True)
    for name in ("train_mosi_paper.toml", "train_mosei_paper.toml"):
        cfg = TrainConfig.load([REPO / "pipelines" / name])
        assert cfg.epochs == 200 and cfg.require_encoder
        with pytest.raises(TrainSetupError, match="not a local folder|names its encoder"):
            Trainer(cfg, root, tmp_path / "run")
    released = TrainConfig.load([REPO / "pipelines/train_mosi_released.toml"])
    assert (released.mcc_space, released.fusion_settings.shared_layers, released.fusion_settings.ffn,
            released.scheduler) == (
        "released", True, "linear-dropout", "cosine")


# --- analyse ----------------------------------------------------------------------------------------

def test_shuffle_moves_every_sample_and_only_that_modality():
    from kebr_model.evaluation.analyse import shuffled

    batch = {"audio": torch.arange(5.0)[:, None], "audio_mask": torch.ones(5, 1, dtype=torch.bool),
             "visual": torch.arange(5.0)[:, None], "label": torch.arange(5.0), "clip_id": list("abcde")}
    out = shuffled(batch, "audio", torch.Generator().manual_seed(0))
    assert sorted(out["audio"][:, 0].tolist()) == [0, 1, 2, 3, 4]
    assert all(out["audio"][i, 0] != i for i in range(5))  # a derangement
    assert torch.equal(out["visual"], batch["visual"]) and torch.equal(out["label"], batch["label"])


def test_analyse_reports_cosines_eq11_and_reliance_per_split(tmp_path):
    from click.testing import CliRunner

    from kebr_model.cli import main

    root = make_shards(tmp_path / "f", n=10, shard_size=10, labelled=True)
    run = tmp_path / "run"
    Trainer(finetune(epochs=1), root, run).fit()
    res = CliRunner().invoke(main, ["analyse", "--shards", str(root), "--run", str(run)])
    assert res.exit_code == 0, res.output
    out = json.loads((run / "analysis.json").read_text())
    assert set(out["splits"]) == {"train", "valid", "test"}
    test = out["splits"]["test"]
    assert set(test["reliance"]) == {"text", "audio", "visual"} and test["samples"] == 2
    trainer = Trainer(finetune(), root, tmp_path / "again")
    checkpoint.load(checkpoint.best(run), trainer.model, restore_rng=False)
    rows: list[dict] = []
    trainer.evaluate("test", rows)  # per-clip cosines, as eval writes them
    want = mcc.eq11(torch.tensor([r["c_a"] for r in rows]), torch.tensor([r["c_v"] for r in rows])).mean()
    assert test["eq11"] == pytest.approx(float(want), abs=1e-5)
    assert test["c_a"] == pytest.approx(float(np.mean([r["c_a"] for r in rows])), abs=1e-5)


def test_labels_and_widths_travel_through_the_hdf5_and_mmsa_exports(tmp_path):
    from helpers import run_cli

    from kebr_data.mmsa_import import import_mmsa, load_mmsa_pickle
    from kebr_data.storage.store import Store

    root = make_shards(tmp_path / "f", n=10, shard_size=10, labelled=True, sims=True, widths=(5, 20))
    plan = {r["clip_id"]: r for r in Store(root).read("plan", 0).to_pylist()}
    run_cli("export", "--out", str(root), "--format", "mmsa", check=True)
    data = pickle.loads((root / "export/mmsa/mmsa.pkl").read_bytes())
    train = data["train"]
    assert train["audio"].shape[2] == 5 and train["vision"].shape[2] == 20
    assert list(train["regression_labels_V"]) == pytest.approx([plan[c]["label_v"] for c in train["id"]])
    import_mmsa(load_mmsa_pickle(root / "export/mmsa/mmsa.pkl", True), tmp_path / "back")
    back = {r["clip_id"]: r for r in Store(tmp_path / "back").read("plan", 0).to_pylist()}
    assert all(back[c]["label_t"] == pytest.approx(plan[c]["label_t"]) for c in train["id"])
    run_cli("export", "--out", str(root), "--format", "hdf5", check=True)
    trainer = Trainer(finetune(label="label_t", max_steps=1), root / "export/hdf5", tmp_path / "run")
    assert trainer.widths == {"audio": 5, "visual": 20}
    batch = next(iter(trainer.batches("train", 0, shuffle=False)))
    assert batch["label"].tolist() == pytest.approx([plan[c]["label_t"] for c in batch["clip_id"]])


def test_a_per_modality_target_is_counted_before_training_and_refused_when_empty(tmp_path):
    from click.testing import CliRunner

    from kebr_model.cli import main

    root = make_shards(tmp_path / "f", n=5, shard_size=5, labelled=True)  # label_t column present, all null
    res = CliRunner().invoke(main, ["finetune", "--shards", str(root), "--out", str(tmp_path / "r"),
                                    "--set", "label='label_t'"], catch_exceptions=False)
    assert res.exit_code == 2 and "has a label" in res.output and "Traceback" not in res.output
    bad = CliRunner().invoke(main, ["finetune", "--shards", str(root), "--out", str(tmp_path / "r"),
                                    "--set", "modalities.use='tx'"], catch_exceptions=False)
    assert bad.exit_code == 2 and "modalities.use" in bad.output
    assert not (tmp_path / "r").exists()


def test_a_manifest_carries_per_modality_labels(tmp_path):
    from kebr_data.sources import manifest

    (tmp_path / "m.csv").write_text("clip_id,video_path,label,label_t,label_a,label_v\n"
                                    "a,a.mp4,0.5,0.4,,-0.2\nb,b.mp4,,,,\n")
    clips = {c.clip_id: c for c in manifest.scan(tmp_path / "m.csv").clips}
    assert (clips["a"].label, clips["a"].label_t, clips["a"].label_a, clips["a"].label_v) == (0.5, 0.4, None, -0.2)
    assert (clips["b"].label, clips["b"].label_t) == (None, None)


def test_a_joint_fine_tune_from_a_pre_training_starts_its_unimodal_heads_from_its_seed(tmp_path, capsys):
    """A pre-training checkpoint has no unimodal heads: --init into a joint scheme loads everything else,
    starts the heads (and the fine-tuning head) from this run's seed, says so in one line (the run's path
    escaped: a control character in it is shown, not sent to the terminal), and trains."""
    pre = make_shards(tmp_path / "pre", n=8, shard_size=8)
    pre_run = tmp_path / "pre\x1b[2J-run"
    Trainer(tiny(max_steps=1), pre, pre_run).fit()
    saved = torch.load(checkpoint.latest(pre_run) / "model.pt", weights_only=True)
    mosi = make_shards(tmp_path / "mosi", n=10, shard_size=10, labelled=True)
    joint = dict(scheme="joint", alpha_text=0.5, alpha_audio=0.5, alpha_visual=0.5, max_steps=2)
    heads = []
    for seed in (1, 2):
        capsys.readouterr()
        t = Trainer(finetune(seed=seed, **joint), mosi, tmp_path / f"s{seed}", init=pre_run)
        lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("--init")]
        shown = str(checkpoint.latest(pre_run)).replace("\x1b", "\\x1b")
        assert lines == [f"--init {shown}: weights loaded, except finetune_head, "
                         f"modal_heads.audio, modal_heads.text, modal_heads.visual, initialised from this run's seed "
                         f"{seed}"]
        state = t.model.state_dict()
        assert all(torch.equal(state[k], v) for k, v in saved.items() if not k.startswith("finetune_head."))
        fresh = Trainer(finetune(seed=seed, **joint), mosi, tmp_path / f"n{seed}").model.state_dict()
        assert all(torch.equal(state[k], fresh[k]) for k in state if k.startswith("modal_heads."))
        heads.append(state["modal_heads.text.1.weight"].clone())
        assert t.fit()["step"] == 2
    assert not torch.equal(heads[0], heads[1])
