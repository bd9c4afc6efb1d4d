"""An audio encoder trained inside the graph from the audio stage's FLAC (MMML's setting): tiny
random-initialised HuBERT and data2vec-audio models built here; their frames against direct Hugging Face
calls on the same decoded, resampled audio; the frozen CNN front end; checkpoints; the ready config
through the CLI; one-line refusals."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import tiny_audio_model
from shard_factory import make_shards

from kebr_data.errors import ConfigError
from kebr_data.media.flac import decode_flac
from kebr_data.storage.store import Store
from kebr_model.config import TrainConfig

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
librosa = pytest.importorskip("librosa")

from kebr_model.cli import main  # noqa: E402
from kebr_model.training.train import Trainer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
E2E = ROOT / "pipelines" / "systems" / "e2e" / "mmml.toml"
TOL = 1e-5
TINY = dict(batch_size=4, epochs=1, checkpoint_every=0, dropout=0.0, lr_other=1e-3, lr_encoder=1e-3,
            max_text_tokens=16, patience=0, freeze_encoder=True)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    base = tmp_path_factory.mktemp("models")
    return {"hubert": str(tiny_audio_model("hubert", base / "hubert", True, layerdrop=0.0)),
            "data2vec": str(tiny_audio_model("data2vec", base / "data2vec", True, layerdrop=0.0))}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_shards(tmp_path_factory.mktemp("e2e") / "f", n=10, shard_size=10, labelled=True, audio=True)


def e2e(model: str, **kw) -> TrainConfig:
    return TrainConfig.load([E2E], **{**TINY, "audio_encoder": model, "encoder": "", "require_encoder": False, **kw})


@functools.lru_cache(maxsize=2)
def hf(model: str):
    return (transformers.AutoFeatureExtractor.from_pretrained(model, local_files_only=True),
            transformers.AutoModel.from_pretrained(model, local_files_only=True).eval())


def direct(model: str, flac: bytes, max_s: float, hidden_states: bool = False):
    """The model as its card shows it, on one clip decoded and resampled with librosa's soxr_hq."""
    y, sr = decode_flac(flac)
    y = librosa.resample(y, orig_sr=sr, target_sr=16000, res_type="soxr_hq")[: int(max_s * 16000)]
    fe, net = hf(model)
    with torch.inference_mode():
        return net(**fe(y, sampling_rate=16000, return_tensors="pt"), output_hidden_states=hidden_states)


@pytest.mark.parametrize("kind,layer", [("hubert", "all"), ("data2vec", "last")])
def test_frames_equal_a_direct_call_on_the_decoded_resampled_audio(folder, models, tmp_path, kind, layer):
    trainer = Trainer(e2e(models[kind], audio_encoder_layer=layer, max_audio_s=0.6), folder, tmp_path / "run")
    enc = trainer.model.audio_encoder
    assert enc.exact_padding == (kind == "hubert")  # data2vec: each clip length on its own, as ssl_audio batches
    assert trainer.widths["audio"] == enc.dim == 32 * (3 if layer == "all" else 1)
    flac = dict(zip(*Store(folder).read("audio", 0, ["clip_id", "flac"]).to_pydict().values()))
    trainer.model.eval()
    seen = []
    for batch in trainer.batches("train", 0, shuffle=False):
        with torch.no_grad():
            frames, mask = enc(batch["audio"], batch["audio_mask"])
        lengths = batch["audio_mask"].sum(1)
        for i, clip in enumerate(batch["clip_id"]):
            seen.append(int(lengths[i]))
            if flac[clip] is None:  # no audio track: no frame
                assert lengths[i] == 0 and not mask[i].any()
                continue
            out = direct(models[kind], flac[clip], 0.6, hidden_states=layer == "all")
            want = torch.cat(out.hidden_states, -1)[0] if layer == "all" else out.last_hidden_state[0]
            assert int(mask[i].sum()) == len(want) and not mask[i, len(want):].any()
            assert float((frames[i, :len(want)] - want).abs().max()) <= TOL
    assert 0 in seen and len(set(seen)) > 3  # a clip without audio, and clips of different lengths share batches


@pytest.mark.parametrize("freeze", [True, False])
def test_the_cnn_front_end_stays_frozen_and_checkpoints_hold_the_trainable_weights(folder, models, tmp_path, freeze):
    from kebr_model.training import checkpoint

    trainer = Trainer(e2e(models["hubert"], audio_encoder_freeze_cnn=freeze), folder, tmp_path / "run")
    net = trainer.model.audio_encoder.net
    cnn = dict(net.feature_extractor.named_parameters())
    layers = dict(net.encoder.layers.named_parameters())
    before = {k: v.detach().clone() for k, v in {**{f"c.{k}": v for k, v in cnn.items()},
                                                **{f"l.{k}": v for k, v in layers.items()}}.items()}
    groups = {g["name"]: {id(p) for p in g["params"]} for g in trainer.optimizer.param_groups}
    assert {id(p) for p in layers.values()} <= groups["encoder"]  # the encoder learning rate
    assert all((id(p) in groups["encoder"]) != freeze for p in cnn.values())
    trainer.step(next(iter(trainer.batches("train", 0, shuffle=True))))
    cnn_same = [torch.equal(v, before[f"c.{k}"]) for k, v in cnn.items()]
    if freeze:
        assert all(p.grad is None for p in cnn.values()) and all(cnn_same)
    else:
        assert not all(cnn_same)
    assert not all(torch.equal(v, before[f"l.{k}"]) for k, v in layers.items())
    trainer.save()
    saved = checkpoint.latest(tmp_path / "run")
    weights = torch.load(saved / "model.pt", weights_only=True)
    assert all(torch.equal(weights[f"audio_encoder.net.encoder.layers.{k}"], v) for k, v in layers.items())
    state = torch.load(saved / "optimizer.pt", weights_only=True)["state"]
    trainable = sum(p.requires_grad for p in trainer.model.parameters())
    assert len(state) <= trainable == sum(len(g) for g in groups.values())  # no optimiser state for frozen ones


def test_two_step_freezes_the_audio_encoder_in_step_two(folder, models, tmp_path):
    trainer = Trainer(e2e(models["hubert"], scheme="two-step", epochs=2), folder, tmp_path / "run")
    enc = trainer.model.audio_encoder
    trainer.train_mode()
    assert enc.training and any(p.requires_grad for p in enc.parameters())
    trainer.state["epoch"] = 1
    trainer.train_mode()
    assert not enc.training and not any(p.requires_grad for p in enc.parameters())


def test_short_clips_skip_specaugment_instead_of_failing(models):
    from kebr_model.audio_encoder import AudioEncoder

    net = transformers.AutoModel.from_pretrained(models["data2vec"], local_files_only=True)
    enc = AudioEncoder(net).train()
    short = torch.randn(1, 2400, 1)  # 7 frames, fewer than the model's mask_time_length of 10
    with pytest.raises(ValueError, match="mask_length"):
        net(short.squeeze(-1))  # Hugging Face alone, in training mode
    frames, mask = enc(short, torch.ones(1, 2400, dtype=torch.bool))
    assert frames.shape == (1, 7, 32) and mask.all() and torch.isfinite(frames).all()


def strict_json(text: str):
    def refuse(name: str):
        raise ValueError(f"{name} is not JSON")
    return json.loads(text, parse_constant=refuse)


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_the_ready_config_finetunes_and_evaluates_through_the_cli(folder, models, tmp_path):
    sets = [f"audio_encoder={models['data2vec']}", "encoder=''", "require_encoder=false", "batch_size=4", "epochs=1", "max_text_tokens=16",
            "checkpoint_every=0", "patience=0", "max_audio_s=0.5", "freeze_encoder=true"]
    run = tmp_path / "run"
    overrides = [a for s in sets for a in ("--set", s)]
    trained = cli("finetune", "--shards", folder, "--out", run, "--config", E2E, *overrides)
    assert trained.exit_code == 0, trained.output
    test = strict_json(trained.stdout)["test"]
    assert test["samples"] == 2 and {"MAE", "MAE_audio", "MAE_text"} <= set(test)
    evaluated = cli("eval", "--shards", folder, "--run", run, "--split", "test")
    assert evaluated.exit_code == 0, evaluated.output
    again = strict_json(evaluated.stdout)  # the best checkpoint reloaded into a new model
    assert again["samples"] == 2 and again["MAE"] == pytest.approx(test["MAE"], abs=1e-6)


@pytest.mark.parametrize("case,needle", [("missing", "is not a folder"), ("unset", "--set audio_encoder="),
                                         ("no_audio_stage", "kebr-data audio")])
def test_setup_mistakes_stop_with_one_line(folder, models, tmp_path, case, needle):
    shards = make_shards(tmp_path / "bare", n=5, shard_size=5, labelled=True) if case == "no_audio_stage" else folder
    model = {"missing": str(tmp_path / "nope"), "unset": ""}.get(case, models["hubert"])
    result = cli("finetune", "--shards", shards, "--out", tmp_path / "run", "--config", E2E,
                 "--set", f"audio_encoder={model}", "--set", "encoder=''", "--set", "require_encoder=false")
    lines = [x for x in result.output.splitlines() if x.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and needle in lines[0], result.output
    assert "Traceback" not in result.output


def test_audio_encoder_needs_the_raw_audio_modality():
    with pytest.raises(ConfigError, match="modalities.audio = 'audio'"):
        TrainConfig.load(overrides=["audio_encoder=/models/x"])


def test_finetuning_with_init_starts_from_the_pretrained_audio_encoder(folder, models, tmp_path):
    """KEBR's path with an in-graph audio encoder: pre-train it (TCMF, masked sentiment), then --init a
    fine-tuning run: the fine-tuning model's audio encoder holds the pre-trained weights, not its model folder's."""
    sets = [f"audio_encoder={models['hubert']}", "modalities.audio=audio", "modalities.use=ta", "batch_size=4",
            "epochs=1", "max_text_tokens=16", "checkpoint_every=0", "patience=0", "max_audio_s=0.5",
            "freeze_encoder=true", "lr_encoder=0.01"]
    pre = tmp_path / "pre"
    trained = cli("pretrain", "--shards", folder, "--out", pre, *[a for s in sets for a in ("--set", s)])
    assert trained.exit_code == 0, trained.output
    from kebr_model.training import checkpoint

    saved = torch.load(checkpoint.latest(pre) / "model.pt", weights_only=True)
    encoder = {k.removeprefix("audio_encoder."): v for k, v in saved.items() if k.startswith("audio_encoder.")}
    fresh = Trainer(TrainConfig.load(overrides=sets, task="finetune"), folder, tmp_path / "fresh").model
    moved = [k for k, v in fresh.audio_encoder.state_dict().items() if not torch.equal(v, encoder[k])]
    assert moved  # pre-training changed the encoder's layers (its CNN front end stayed frozen)
    assert not [k for k in moved if k.startswith("net.feature_extractor.")]
    ft = Trainer(TrainConfig.load(overrides=sets, task="finetune"), folder, tmp_path / "ft", init=pre).model
    assert all(torch.equal(v, encoder[k]) for k, v in ft.audio_encoder.state_dict().items())


def test_two_ranks_train_the_in_graph_encoder_with_its_cnn_frozen(models, tiny_bert, tmp_path):
    """DDP (gloo, two CPU processes) over a model whose frozen CNN front end has no gradient: both ranks step to
    the end; the saved CNN weights are the model folder's, the transformer layers moved."""
    import subprocess
    import sys

    from kebr_model.training import checkpoint

    root = make_shards(tmp_path / "f", n=16, shard_size=4, labelled=True, audio=True)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(ROOT / "tests" / "ddp_worker.py"), str(root), str(tmp_path / "ddp"),
                           tiny_bert, models["hubert"]], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = torch.load(checkpoint.latest(tmp_path / "ddp") / "model.pt", weights_only=True)
    start = hf(models["hubert"])[1].state_dict()
    cnn = [k for k in start if k.startswith("feature_extractor.")]
    assert cnn and all(torch.equal(saved[f"audio_encoder.net.{k}"], start[k]) for k in cnn)
    assert any(not torch.equal(saved[f"audio_encoder.net.{k}"], v) for k, v in start.items()
               if k.startswith("encoder.layers."))
