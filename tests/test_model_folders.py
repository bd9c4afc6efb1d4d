"""A model folder that cannot be loaded safely is a prerequisite error before any work (one line, exit 2):
a folder that is not a model (`--set encoder=/etc`), one with pickled weights only (never unpickled), one
whose config names code of its own (`auto_map`: never run), one whose weights are damaged; for the
trainer's text and audio encoders as for the pipeline's ssl_audio and video_encoder stages."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from shard_factory import make_shards

pytest.importorskip("transformers")


def pickled_only(model: Path, dest: Path) -> Path:
    """A copy of `model` whose weights are a pickled state dict (pytorch_model.bin) only."""
    import torch
    from safetensors.torch import load_file

    shutil.copytree(model, dest)
    torch.save(load_file(dest / "model.safetensors"), dest / "pytorch_model.bin")
    (dest / "model.safetensors").unlink()
    return dest


def remote_code(model: Path, dest: Path) -> Path:
    """A copy of `model` whose config names Python code of its own, as hub models with custom code do."""
    shutil.copytree(model, dest)
    config = json.loads((dest / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "configuration_x.XConfig", "AutoModel": "modeling_x.XModel"}
    (dest / "config.json").write_text(json.dumps(config))
    (dest / "modeling_x.py").write_text("raise SystemExit('the folder ran its own code')\n")
    return dest


def damaged(model: Path, dest: Path) -> Path:
    shutil.copytree(model, dest)
    weights = dest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    return dest


def test_the_trainer_refuses_encoders_it_cannot_load_before_any_step(tmp_path, tiny_bert):
    from kebr_model.cli import main

    root = make_shards(tmp_path / "f", n=10, shard_size=5, labelled=True)
    bert = Path(tiny_bert)
    cases = {"/etc": "encoder /etc has no config.json",
             pickled_only(bert, tmp_path / "pk"): "has no .safetensors weights (only pickled pytorch_model.bin, which "
                                                  "are never unpickled)",
             remote_code(bert, tmp_path / "rc"): "needs its own Python code (config.json's auto_map)",
             damaged(bert, tmp_path / "dm"): "cannot be loaded (SafetensorError"}
    for k, (encoder, said) in enumerate(cases.items()):
        out = tmp_path / f"run{k}"
        res = CliRunner().invoke(main, ["finetune", "--shards", str(root), "--out", str(out), "--set",
                                        f"encoder={json.dumps(str(encoder))}", "--set", "max_steps=1"],
                                 catch_exceptions=False)
        assert res.exit_code == 2 and said in res.stderr, res.output
        assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1
        assert not out.exists()  # nothing written


def test_ssl_audio_refuses_pickled_and_remote_code_folders_up_front(tmp_path, demo_src):
    from helpers import tiny_audio_model

    from kebr_data.cli import main
    from kebr_model.audio_encoder import setup_problem

    hubert = tiny_audio_model("hubert", tmp_path / "hubert", attention_mask=True)
    for model, said in ((pickled_only(hubert, tmp_path / "pk"), "has no .safetensors weights (only pickled"),
                        (remote_code(hubert, tmp_path / "rc"), "needs its own Python code")):
        out = tmp_path / f"out-{model.name}"
        res = CliRunner().invoke(main, ["extract", "--src", str(demo_src), "--out", str(out), "--stages",
                                        "index,audio,ssl_audio", "--set", f"ssl_audio.model='{model}'"])
        assert res.exit_code == 2 and f"ssl_audio.model {model} {said}" in res.output, res.output
        assert "Traceback" not in res.output and not out.exists()
        assert f"audio_encoder {model} {said}" in setup_problem(str(model))  # the trainer's in-graph encoder


def test_video_encoder_refuses_a_remote_code_folder_up_front(tmp_path, demo_src):
    from kebr_data.cli import main

    folder = tmp_path / "videomae"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "x", "auto_map": {"AutoModel": "m.X"}}))
    (folder / "model.safetensors").write_bytes(b"")
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["extract", "--src", str(demo_src), "--out", str(out), "--stages",
                                    "index,audio,faces,video_encoder", "--set", f"video_encoder.model='{folder}'"])
    assert res.exit_code == 2 and f"video_encoder.model {folder} needs its own Python code" in res.output, res.output
    assert "Traceback" not in res.output and not out.exists()
