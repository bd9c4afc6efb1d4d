"""`kebr-train` is careful: help per command and without torch, one-line exit-2 messages that name
the fix, strict JSON, resume refusing changed settings, and the labelled demo's README flow."""

import contextlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from PIL import Image

import cli_server
from conftest import DEMO_CFG
from helpers import DEMO, readme_commands
from shard_factory import make_shards

from kebr_model.training import checkpoint
from kebr_model.cli import main

ROOT = Path(__file__).resolve().parents[1]
NO_TORCH = ("import sys; sys.modules['torch'] = None; sys.argv[0] = 'kebr-train'; "
            "from kebr_model.cli import main; main()")


def strict_json(text: str):
    """json.loads that refuses Infinity and NaN (Python's json accepts them; other readers do not)."""
    def refuse(name: str):
        raise ValueError(f"{name} is not JSON")
    return json.loads(text, parse_constant=refuse)


def no_torch(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", NO_TORCH, *args], capture_output=True, text=True, env=env,
                          timeout=120)


def test_help_per_command_without_torch():
    top = no_torch("--help")
    assert top.returncode == 0, top.stderr
    assert "`train` extra" in top.stdout and "import-mmsa" in top.stdout and "finetune" in top.stdout
    for command, own in (("eval", "--run"), ("import-mmsa", "--trust-pickle"), ("pretrain", "--init"),
                         ("finetune", "--seeds"), ("train", "--task")):
        proc = no_torch(command, "--help")
        assert proc.returncode == 0, (command, proc.stderr)
        assert f"kebr-train {command}" in proc.stdout and own in proc.stdout, command
    assert "--pickle" not in no_torch("eval", "--help").stdout
    listed = no_torch("defaults")
    assert listed.returncode == 0 and "[train]" in listed.stdout and "[modalities]" in listed.stdout, listed.stderr
    refused = no_torch("pretrain", "--shards", "x", "--out", "y")
    assert refused.returncode == 2 and "`train` extra" in refused.stderr and "Traceback" not in refused.stderr


def cli(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def one_line_error(result, *needles: str) -> str:
    assert result.exit_code == 2, result.output
    lines = [x for x in result.output.splitlines() if x.strip()]
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[-1], (needle, lines[-1])
    return lines[-1]


@pytest.fixture(scope="module")
def tiny_args(tiny_bert) -> list[str]:
    """Small settings and the tiny random BERT (conftest.py) for runs that check the CLI, not learning."""
    return ["--set", "layers=1", "--set", "batch_size=4", "--set", "checkpoint_every=0", "--set",
            f"encoder='{tiny_bert}'"]


def test_mistakes_exit_2_with_the_fix(tmp_path, tiny_args):
    pre = make_shards(tmp_path / "pre", n=8, shard_size=4)
    mosi = make_shards(tmp_path / "mosi", n=10, shard_size=5, seed=3, labelled=True)
    out = tmp_path / "run"
    one_line_error(cli("pretrain", "--shards", tmp_path / "nowhere", "--out", out), "does not exist")
    one_line_error(cli("pretrain", "--shards", tmp_path, "--out", out), "not a kebr-data output folder",
                   "kebr-data extract")
    unmasked = tmp_path / "unmasked"
    shutil.copytree(pre, unmasked)
    shutil.rmtree(unmasked / "mask")
    one_line_error(cli("pretrain", "--shards", unmasked, "--out", out), "no committed mask/", "kebr-data mask --out")
    (unmasked / "mask").mkdir()
    shutil.copytree(pre / "mask", unmasked / "mask", dirs_exist_ok=True)
    (unmasked / "_done/mask/shard-00001.json").unlink()
    one_line_error(cli("pretrain", "--shards", unmasked, "--out", out), "only 1 of 2 shards")
    unlabelled_train = _without_labels(mosi, tmp_path / "unlabelled_train", "train")
    one_line_error(cli("finetune", "--shards", unlabelled_train, "--out", out, *tiny_args), "no clip in split 'train'",
                   "has a label")
    one_line_error(cli("finetune", "--shards", mosi, "--out", out, "--set", "test_split='tset'", *tiny_args),
                   "split 'tset'", "splits: test, train, valid")
    typo = cli("pretrain", "--shards", pre, "--out", out, "--set", "bach_size=4")
    assert typo.exit_code == 2 and "did you mean train.batch_size?" in typo.output
    one_line_error(cli("eval", "--shards", mosi, "--run", tmp_path), "holds no checkpoint")
    (tmp_path / "seeds/seed-1").mkdir(parents=True)
    one_line_error(cli("eval", "--shards", mosi, "--run", tmp_path / "seeds"), "seed-1", "--run")
    one_line_error(cli("finetune", "--shards", mosi, "--out", out, "--init", tmp_path / "mosi/_done/plan.json",
                       *tiny_args), "--init", "checkpoint")
    assert not out.exists()  # nothing was started


def _without_labels(folder: Path, copy: Path, split: str | None = None) -> Path:
    """A copy of `folder` whose plan has no label (in `split` only, when given)."""
    shutil.copytree(folder, copy)
    for table in (copy / "plan").glob("shard-*.parquet"):
        plan = pq.read_table(table)
        labels = [None if split is None or s == split else y
                  for s, y in zip(plan.column("split").to_pylist(), plan.column("label").to_pylist())]
        pq.write_table(plan.set_column(plan.schema.get_field_index("label"), "label",
                                       pa.array(labels, pa.float32())), table)
    return copy


def test_finetune_on_an_unlabelled_folder_says_it_has_no_labels(tmp_path, tiny_args):
    """Issue #27 point 7: an unlabelled folder (no split, no label, as the demo's VoxCeleb extraction) is not a
    split-name typo: the message says the folder has no labels and names a command that makes a labelled one."""
    pre = make_shards(tmp_path / "pre", n=8, shard_size=4)
    out = tmp_path / "run"
    for folder in (pre, _without_labels(make_shards(tmp_path / "mosi", n=10, shard_size=5, labelled=True),
                                        tmp_path / "nulled")):
        line = one_line_error(cli("finetune", "--shards", folder, "--out", out, *tiny_args),
                              f"{folder} has no labels", "kebr-data extract --src demo/mmsa")
        assert "fix the name" not in line
    assert not out.exists()


def test_resume_refuses_changed_settings_and_never_refuses_an_existing_run(tmp_path, tiny_args):
    pre = make_shards(tmp_path / "pre", n=8, shard_size=8)
    out = tmp_path / "run"
    done = cli("pretrain", "--shards", pre, "--out", out, *tiny_args, "--set", "max_steps=1")
    assert done.exit_code == 0, done.output
    result = strict_json(done.output[done.output.index("{"):])
    assert result == {"step": 1, "best_valid": None}  # Infinity before: not JSON
    one_line_error(cli("pretrain", "--shards", pre, "--out", out, *tiny_args, "--set", "batch_size=2"),
                   "batch_size: 4 -> 2", "new --out")
    one_line_error(cli("pretrain", "--shards", pre, "--out", out, *tiny_args, "--resume", "never"), "already holds a run")
    more = cli("pretrain", "--shards", pre, "--out", out, *tiny_args, "--set", "max_steps=2")
    assert more.exit_code == 0 and "resumed from" in more.output and "step-00000001" in more.output
    for line in (out / "metrics.jsonl").read_text().splitlines():
        strict_json(line)
    assert [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    state = (checkpoint.latest(out) / "state.json").read_text()
    assert "Infinity" not in state and strict_json(state)["best_valid"] is None


def test_no_numpy_not_writable_warning(tmp_path, tiny_args):
    root = make_shards(tmp_path / "f", n=8, shard_size=8)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")  # shown even where an earlier test in this process warned once
        done = cli("pretrain", "--shards", root, "--out", tmp_path / "run", *tiny_args, "--set", "max_steps=1")
    assert done.exit_code == 0, done.output
    assert not [w for w in seen if "not writable" in str(w.message)]


def readme_command(marker: str) -> str:
    """The README opening block's commands that follow the comment starting with `marker`, joined by ` && `."""
    return " && ".join(readme_commands(marker))


@contextlib.contextmanager
def readme_runner(tmp: Path) -> Iterator[Callable[[str, list[str]], list[subprocess.CompletedProcess]]]:
    """A function that runs each `&&` part of a README line (pip installs left out), outputs moved under `tmp`;
    each command a process of its own, all forked from one pre-imported interpreter (tests/cli_server.py)
    that serves every line run in the block."""
    moved = {name: tmp / name for name in ("demo-features", "demo-mmsa-features", "demo-predictions")}
    sock = tmp / "cli.sock"
    exe = {"kebr-data": cli_server.command(sock, "kebr_data"), "kebr-train": cli_server.command(sock, "kebr_model.cli")}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    with cli_server.running(sock, env, ROOT):
        yield lambda line, extra_train: _run_parts(line, tmp, extra_train, moved, exe, env)


def _run_parts(line: str, tmp: Path, extra_train: list[str], moved: dict[str, Path], exe: dict[str, list[str]],
               env: dict[str, str]) -> list[subprocess.CompletedProcess]:
    """Each `&&` part of `line` with `exe`'s commands; an assertion names the part that failed."""
    done = []
    for part in line.split(" && "):
        words = shlex.split(part)
        if words[:4] == ["python", "-m", "pip", "install"]:
            continue
        args = [str(moved.get(w, tmp / w if w.startswith("demo-runs/") else w)) for w in words[1:]]
        if words[0] == "kebr-train" and words[1] in ("pretrain", "finetune"):
            args += extra_train
        proc = subprocess.run(exe[words[0]] + args, capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
        assert proc.returncode == 0, (part, proc.stderr[-3000:])
        done.append(proc)
    return done


def test_the_readme_train_on_demo_command_runs(tmp_path, demo_all):
    """The README's third command as written (one epoch instead of five), after the first command's
    pipeline: pre-train on the VoxCeleb demo, fine-tune on the labelled demo, evaluate; then eval --tsne.
    The first command's extract is the suite's shared demo run (conftest.demo_all, the same arguments: checked
    here), copied to demo-features; its other commands run as written."""
    assert (ROOT / "demo/mmsa/label.csv").is_file(), "labelled demo missing: python demo/make_mmsa_demo.py"
    line = readme_command("# 3.")
    assert all(f"kebr-train {c}" in line for c in ("pretrain", "finetune", "eval", "predict"))
    eval_line = next(part for part in line.split(" && ") if part.startswith("kebr-train eval"))
    first = readme_commands("# 1.")
    extract = next(part for part in first if part.startswith("kebr-data extract"))
    src, cfg = (str(path.relative_to(ROOT)) for path in (DEMO, DEMO_CFG))
    assert extract == shlex.join(["kebr-data", "extract", "--src", src, "--out", "demo-features", "--config", cfg])
    shutil.copytree(demo_all[0], tmp_path / "demo-features")
    with readme_runner(tmp_path) as run_readme_line:
        run_readme_line(" && ".join(part for part in first if part != extract), [])
        procs = run_readme_line(line, ["--set", "epochs=1"])
        # the demo has no visual features (no OpenFace): t-SNE crashed on their all-zero block (exit 139)
        run_readme_line(f"{eval_line} --split train --tsne demo-runs/tsne.png", [])
    pretrain = strict_json(procs[1].stdout)
    assert pretrain["step"] == 3  # 6 masked demo clips, batches of 2
    assert "resumed" not in procs[2].stderr
    metrics = strict_json((tmp_path / "demo-runs/finetune/test_metrics.json").read_text())
    evaluated = strict_json(procs[3].stdout)
    assert evaluated == metrics and evaluated["samples"] == 2 and "Non0_acc_2" in evaluated
    # predict on the VoxCeleb demo videos: every clip a row, the good ones scored (the README's last line)
    predicted = pq.read_table(tmp_path / "demo-predictions/predictions.parquet").to_pylist()
    assert len(predicted) == 8 and sum(r["status"] == "ok" and r["prediction"] is not None for r in predicted) == 6
    assert Image.open(tmp_path / "demo-runs/tsne.png").format == "PNG"
