"""Nothing wrong is ever trusted: regression tests for the adversarial pass of issue 13 (pipeline side).

Each test names the item it pins: relative sources frozen into the plan (1), bad labels and text at
index time (4, 10, 12), side files of any type or size (5), symlinks planted at predictable paths (6),
writers without the lock (9), environment failures committed as clip rows (11), tracebacks instead
of one-line errors (12), terminal markup in user text (13), and the smaller items of 14.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
import unicodedata
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import ROOT, run_cli, shard_files, train_cli, write_wav

from kebr_data import config, sources
from kebr_data.errors import ClipError, EnvironmentFailure, PlanError
from kebr_data.media.files import SIDE_FILE_MAX_BYTES, read_side_file
from kebr_data.pipeline import plan
from kebr_data.schema import ASR, PLAN
from kebr_data.stages.base import ClipInput, ClipStage, ShardContext
from kebr_data.storage.layout import OutputDir
from kebr_data.storage.lock import OutputLock

INDEX_CFG = {"layout": "auto", "shard_size": 1000}


def plan_rows(out: Path) -> list[dict[str, Any]]:
    return pq.read_table(out / "plan").to_pylist()


def media_tree(root: Path, names=("a", "b")) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for n in names:
        write_wav(root / f"{n}.wav", 0.5)
    return root


# -- 1: plans hold absolute paths -----------------------------------------------------------------

def test_relative_src_is_frozen_as_absolute_paths(tmp_path, monkeypatch):
    media_tree(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    plan.build_plan(OutputDir(tmp_path / "out"), Path("data"), INDEX_CFG)
    rows = plan_rows(tmp_path / "out")
    assert [Path(r["audio_path"]) for r in rows] == [tmp_path / "data/a.wav", tmp_path / "data/b.wav"]


def test_manifest_relative_paths_are_relative_to_the_manifest_folder(tmp_path, monkeypatch):
    media_tree(tmp_path / "ds/media")
    (tmp_path / "ds/list.csv").write_text("clip_id,audio_path\na,media/a.wav\nb,media/b.wav\n")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    _, res = sources.scan(Path("../ds/list.csv"))
    assert [Path(c.audio_path).resolve() for c in res.clips] == [tmp_path / "ds/media/a.wav",
                                                                  tmp_path / "ds/media/b.wav"]
    assert all(os.path.isabs(c.audio_path) for c in res.clips)


def test_resume_from_another_directory_reads_the_planned_files(tmp_path, monkeypatch):
    media_tree(tmp_path / "here/data")
    media_tree(tmp_path / "there/data", names=("a",))  # a same-named relative tree elsewhere
    out = tmp_path / "out"
    monkeypatch.chdir(tmp_path / "here")  # each run's working directory is its caller's
    run_cli("extract", "--src", "data", "--out", str(out), "--stages", "index", check=True)
    monkeypatch.chdir(tmp_path / "there")
    proc = run_cli("extract", "--out", str(out), "--stages", "audio")
    assert proc.returncode == 0, proc.stderr
    assert [r["status"] for r in pq.read_table(out / "audio").to_pylist()] == ["ok", "ok"]


def test_a_plan_made_before_absolute_paths_is_refused_naming_replan(tmp_path):
    media_tree(tmp_path / "data")
    out = tmp_path / "out"
    run_cli("extract", "--src", str(tmp_path / "data"), "--out", str(out), "--stages", "index", check=True)
    marker = json.loads((out / "_done/plan.json").read_text())
    del marker["plan_format"]  # what an older toolkit wrote
    (out / "_done/plan.json").write_text(json.dumps(marker))
    proc = run_cli("extract", "--out", str(out), "--stages", "index")
    assert proc.returncode == 2 and "--replan" in proc.stderr and "Traceback" not in proc.stderr
    assert run_cli("extract", "--out", str(out), "--stages", "index", "--replan").returncode == 0


# -- 14: media replaced in place -----------------------------------------------------------------

def test_plan_records_size_and_mtime_and_replan_recomputes_replaced_media(tmp_path):
    src = media_tree(tmp_path / "data")
    out = tmp_path / "out"
    run_cli("extract", "--src", str(src), "--out", str(out), "--stages", "index,audio", check=True)
    row = plan_rows(out)[0]
    st = os.stat(src / "a.wav")
    assert (row["audio_size"], row["audio_mtime_ns"]) == (st.st_size, st.st_mtime_ns)
    assert row["video_size"] is None and row["video_mtime_ns"] is None
    write_wav(src / "a.wav", 1.0)  # replaced in place, same name
    run_cli("extract", "--out", str(out), "--stages", "index,audio", "--replan", check=True)
    rows = {r["clip_id"]: r for r in pq.read_table(out / "audio").to_pylist()}
    assert rows["a"]["duration_s"] == pytest.approx(1.0, abs=0.01)


# -- 4, 10, 12: labels, text and rows at index time ----------------------------------------------

def test_manifest_bad_labels_are_rejected_rows_with_reasons(tmp_path):
    write_wav(tmp_path / "a.wav", 0.2)
    (tmp_path / "m.csv").write_text("clip_id,audio_path,label\nok,a.wav,1.5\nn,a.wav,nan\ni,a.wav,inf\n"
                                    "big,a.wav,1e40\nword,a.wav,abc\nnone,a.wav,\n")
    _, res = sources.scan(tmp_path / "m.csv")
    assert {c.clip_id: c.label for c in res.clips} == {"ok": 1.5, "none": None}
    reasons = " | ".join(r for _, r in res.rejected)
    assert len(res.rejected) == 4
    assert "not finite" in reasons and "float32" in reasons and "'abc' is not a number" in reasons


def test_parquet_manifest_int_ids_speakers_and_binary_text(tmp_path):
    write_wav(tmp_path / "a.wav", 0.2)
    pq.write_table(pa.table({"clip_id": [0, 1, 2], "audio_path": ["a.wav"] * 3, "speaker_id": [7, 8, 9],
                             "text": [b"caf\xc3\xa9", b"caf\xe9", None]}), tmp_path / "m.parquet")
    _, res = sources.scan(tmp_path / "m.parquet")
    assert [(c.clip_id, c.speaker_id, c.given_text) for c in res.clips] == [("0", "7", "café"), ("2", "9", None)]
    ((where, reason),) = res.rejected
    assert "row 2" in where and "UTF-8" in reason


def test_manifest_csv_non_utf8_text_is_rejected_not_masked_as_bytes(tmp_path):
    write_wav(tmp_path / "a.wav", 0.2)
    (tmp_path / "m.csv").write_bytes(b"clip_id,audio_path,text\nx,a.wav,caf\xe9\ny,a.wav,fine\n")
    _, res = sources.scan(tmp_path / "m.csv")
    assert [(c.clip_id, c.given_text) for c in res.clips] == [("y", "fine")]
    assert "UTF-8" in res.rejected[0][1]


def mmsa_tree(root: Path, label_csv: bytes) -> Path:
    (root / "Raw/v1").mkdir(parents=True)
    (root / "label.csv").write_bytes(label_csv)
    return root


def test_mmsa_nan_label_short_row_and_latin1_line_are_rejected_rows(tmp_path):
    src = mmsa_tree(tmp_path / "mosi", b"video_id,clip_id,text,label,annotation,mode\n"
                                       b"v1,1,good,1.0,Positive,train\n"
                                       b"v1,2,bad,nan,Negative,train\n"
                                       b"v1,3,short\n"
                                       b"v1,4,caf\xe9,0.5,Neutral,test\n"
                                       b"v1,5,big,-inf,Negative,valid\n")
    _, res = sources.scan(src)
    assert [c.clip_id for c in res.clips] == ["v1$_$1"]
    reasons = [r for _, r in res.rejected]
    assert len(reasons) == 4 and any("fields" in r for r in reasons) and any("UTF-8" in r for r in reasons)
    assert sum("not finite" in r for r in reasons) == 2


def test_index_cli_with_bad_rows_exits_cleanly(tmp_path):
    write_wav(tmp_path / "a.wav", 0.2)
    (tmp_path / "m.csv").write_text("clip_id,audio_path,label\nx,a.wav,abc\ny,a.wav,2\n")
    proc = run_cli("extract", "--src", str(tmp_path / "m.csv"), "--out", str(tmp_path / "o"), "--stages", "index")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr and "is not a number" in proc.stderr


# -- 14: clip ids ---------------------------------------------------------------------------------

@pytest.mark.parametrize("char", ["\u0085", "\u2028", "\u2029", "\u202e", "\u200b", "\ufeff", "\u00ad"])
def test_clip_ids_with_unicode_controls_and_separators_are_rejected(char):
    from kebr_data.clip_ids import clip_id_problem
    assert "control" in clip_id_problem(f"a{char}b")


def test_nfc_and_nfd_spellings_are_one_clip(tmp_path):
    nfc, nfd = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")
    write_wav(tmp_path / f"{nfd}.wav", 0.2)
    (tmp_path / "m.csv").write_text(f"clip_id,audio_path\n{nfc},{nfd}.wav\n{nfd},{nfd}.wav\n", encoding="utf-8")
    _, res = sources.scan(tmp_path / "m.csv")
    assert [c.clip_id for c in res.clips] == [nfc]
    assert "duplicate" in res.rejected[0][1]
    media_tree(tmp_path / "f", names=(nfd,))
    (tmp_path / "f" / f"{nfc}.wav").write_bytes(b"x")  # another spelling: the same clip after NFC
    _, res = sources.scan(tmp_path / "f")
    assert [c.clip_id for c in res.clips] == [nfc]


# -- 5: side files --------------------------------------------------------------------------------

def test_side_file_reader_refuses_fifos_devices_escapes_and_huge_files(tmp_path):
    root = tmp_path / "src"
    root.mkdir()
    (root / "t.txt").write_text("hello")
    data, what = read_side_file(root / "t.txt", root)
    assert data == b"hello" and str(root / "t.txt") in what and "5 bytes" in what
    os.mkfifo(root / "fifo.txt")
    (root / "zero.txt").symlink_to("/dev/zero")
    (root / "passwd.txt").symlink_to("/etc/passwd")
    (root / "inside.txt").symlink_to(root / "t.txt")
    with open(root / "big.txt", "wb") as fh:
        fh.truncate(SIDE_FILE_MAX_BYTES + 1)
    cases = {"fifo.txt": "not_a_file", "zero.txt": "outside_source", "passwd.txt": "outside_source",
             "big.txt": "too_large"}
    for name, error in cases.items():
        t0 = time.monotonic()
        with pytest.raises(ClipError) as exc:
            read_side_file(root / name, root)
        assert exc.value.error == error and time.monotonic() - t0 < 5, name
    assert read_side_file(root / "inside.txt", root)[0] == b"hello"  # a link inside the tree is followed
    with pytest.raises(ClipError) as exc:
        read_side_file(root / "zero.txt", None)  # no tree given: still only regular files
    assert exc.value.error == "not_a_file"
    with pytest.raises(FileNotFoundError):
        read_side_file(root / "absent.txt", root)


def test_given_transcript_sidecar_records_what_was_read_and_refuses_escapes(tmp_path):
    from kebr_data.stages.asr import AsrStage
    for n in ("a", "b", "c"):
        write_wav(tmp_path / f"{n}.wav", 0.2)
    (tmp_path / "a.txt").write_text("a good day")
    (tmp_path / "b.txt").symlink_to("/etc/passwd")
    os.mkfifo(tmp_path / "c.txt")
    plan_t = pa.Table.from_pylist([{"clip_id": n, "status": "ok", "audio_path": str(tmp_path / f"{n}.wav"),
                                    "source": "folder"} for n in "abc"], schema=PLAN)
    stage = AsrStage(config.load(overrides=["asr.engine='given'"])["asr"])
    rows = stage.run_shard(ShardContext(0, {"plan": plan_t}, tmp_path / "tmp")).to_pylist()
    assert (rows[0]["status"], rows[0]["text"]) == ("ok", "a good day")
    assert str(tmp_path / "a.txt") in rows[0]["message"]
    assert [(r["status"], r["error"]) for r in rows[1:]] == [("failed", "outside_source"), ("failed", "not_a_file")]


def test_openface_csv_side_files_are_bounded_and_recorded(tmp_path):
    import shutil

    from helpers import OPENFACE_FIXTURES

    from kebr_data.stages.visual import VisualStage
    for n in "abc":
        (tmp_path / f"{n}.mp4").write_bytes(b"not read")
    shutil.copy(OPENFACE_FIXTURES / "default.csv", tmp_path / "a.mp4.csv")
    os.mkfifo(tmp_path / "b.mp4.csv")
    (tmp_path / "c.mp4.csv").symlink_to("/dev/zero")
    stage = VisualStage(config.load(overrides=["visual.backend='openface-csv'"])["visual"])
    plan_t = pa.Table.from_pylist([{"clip_id": n, "status": "ok", "video_path": str(tmp_path / f"{n}.mp4"),
                                    "source": "folder"} for n in "abc"], schema=PLAN)
    rows = stage.run_shard(ShardContext(0, {"plan": plan_t}, tmp_path / "tmp")).to_pylist()
    assert rows[0]["status"] == "ok" and str(tmp_path / "a.mp4.csv") in rows[0]["message"]
    assert [(r["status"], r["error"]) for r in rows[1:]] == [("failed", "not_a_file"), ("failed", "outside_source")]


# -- 6: symlinks at predictable paths -------------------------------------------------------------

def test_lock_symlink_is_refused_and_its_target_untouched(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    (out / "_lock").symlink_to(victim)
    with pytest.raises(PlanError.__mro__[1]) as exc:  # a KebrError: exit 2, one line
        OutputLock(out / "_lock").acquire()
    assert "symlink" in str(exc.value) and victim.read_text() == "precious"


def test_planted_log_tmp_and_report_symlinks_are_never_written_through(tmp_path):
    src = media_tree(tmp_path / "data")
    out = tmp_path / "out"
    run_cli("extract", "--src", str(src), "--out", str(out), "--stages", "index", check=True)
    victims = {}
    for rel in ("_logs/audio/shard-00000.log", "report/index.html", "report/durations.png"):
        victims[rel] = tmp_path / f"victim-{len(victims)}"
        victims[rel].write_text("precious")
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).symlink_to(victims[rel])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out / "_tmp").symlink_to(elsewhere)
    run_cli("extract", "--out", str(out), "--stages", "audio", check=True)
    assert run_cli("report", "--out", str(out)).returncode == 0
    assert all(v.read_text() == "precious" for v in victims.values())
    assert not (out / "_tmp").is_symlink() and list(elsewhere.iterdir()) == []
    assert "ok a" in (out / "_logs/audio/shard-00000.log").read_text()


# -- 9: every writer takes the lock ---------------------------------------------------------------

@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    root = tmp_path_factory.mktemp("indexed")
    src = media_tree(root / "data")
    run_cli("extract", "--src", str(src), "--out", str(root / "out"), "--stages", "index,audio", check=True)
    return root / "out"


@pytest.mark.parametrize("args", [("export", "--format", "parquet"), ("report",), ("mask",)])
def test_writers_are_refused_while_the_folder_is_locked(indexed, args):
    with OutputLock(indexed / "_lock", "holder"):
        proc = run_cli(args[0], "--out", str(indexed), *args[1:])
    assert proc.returncode == 2 and "in use by another run" in proc.stderr, proc.stderr


def mmsa_pickle(path: Path, n: int) -> Path:
    import pickle

    import numpy as np
    rng = np.random.default_rng(0)
    part = {"id": [f"v{i}$_${i}" for i in range(n)], "raw_text": ["fine"] * n,
            "audio": rng.standard_normal((n, 4, 33)).astype(np.float32),
            "vision": rng.standard_normal((n, 3, 709)).astype(np.float32),
            "regression_labels": np.zeros(n, np.float32)}
    path.write_bytes(pickle.dumps({"train": part}))
    return path


def test_import_mmsa_refuses_a_non_empty_folder_and_a_locked_one(indexed, tmp_path):
    import shutil
    out = tmp_path / "o"
    shutil.copytree(indexed, out)
    before = shard_files(out)
    cli = ["import-mmsa", "--pickle", mmsa_pickle(tmp_path / "p.pkl", 3), "--out", out, "--trust-pickle"]
    proc = train_cli(*cli)
    assert proc.exit_code == 2 and "--replan" in proc.stderr and shard_files(out) == before
    with OutputLock(out / "_lock", "holder"):  # a flock: another open file in this process is refused as well
        proc = train_cli(*cli, "--replan")
    assert proc.exit_code == 2 and "in use by another run" in proc.stderr and shard_files(out) == before
    proc = train_cli(*cli, "--replan")
    assert proc.exit_code == 0, proc.stderr
    assert len(plan_rows(out)) == 3


# -- 11: environment failures abort the shard ------------------------------------------------------

class DiskFullStage(ClipStage):
    """A stage whose second clip meets a full disk (as a stage's own temp write would)."""

    name = "asr"
    version = "t"
    schema = ASR
    upstream: ClassVar[tuple[str, ...]] = ("plan",)

    def process(self, clip: ClipInput, ctx: ShardContext) -> dict[str, Any]:
        if clip.clip_id == "b":
            try:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(ctx.temp() / "x"))
            except OSError as exc:  # a stage that wraps it as a clip error is still stopped
                raise ClipError("write_error", str(exc)) from None
        if clip.clip_id == "c":
            raise ClipError("bad", "a genuinely bad clip")
        return {"text": clip.clip_id}


def test_environment_errors_abort_the_shard_instead_of_becoming_rows(tmp_path):
    plan_t = pa.Table.from_pylist([{"clip_id": n, "status": "ok", "source": "t"} for n in "abc"], schema=PLAN)
    with pytest.raises(EnvironmentFailure) as exc:
        DiskFullStage({}).run_shard(ShardContext(0, {"plan": plan_t}, tmp_path))
    assert "No space left on device" in str(exc.value) and exc.value.exit_code == 3
    ok = pa.Table.from_pylist([{"clip_id": n, "status": "ok", "source": "t"} for n in "ac"], schema=PLAN)
    rows = DiskFullStage({}).run_shard(ShardContext(0, {"plan": ok}, tmp_path)).to_pylist()
    assert [r["status"] for r in rows] == ["ok", "failed"]


def test_missing_binary_mid_run_aborts_resumably_and_the_rerun_matches(tmp_path, ffmpeg):
    src = media_tree(tmp_path / "data", names=("a", "b", "c"))
    vanishing = tmp_path / "bin/ffmpeg"
    vanishing.parent.mkdir()
    vanishing.write_text(f'#!/bin/sh\ncase "$*" in *b.wav*) rm -f "$0"; exit 1;; esac\nexec "{ffmpeg}" "$@"\n')
    vanishing.chmod(0o755)
    out, ref = tmp_path / "out", tmp_path / "ref"
    args = ("--src", str(src), "--stages", "index,audio", "--workers", "1")
    proc = run_cli("extract", "--out", str(out), *args, "--set", f"audio.ffmpeg='{vanishing}'",
                   "--set", "audio.timeout_s=30")
    assert proc.returncode in (2, 3), proc.stderr
    assert not (out / "_done/audio/shard-00000.json").exists()
    log = (out / "_logs/audio/shard-00000.log").read_text() if (out / "_logs/audio/shard-00000.log").exists() else ""
    assert "error in the toolkit" not in log
    run_cli("extract", "--out", str(out), *args, "--set", "audio.ffmpeg=''", check=True)  # the folder remembers
    run_cli("extract", "--out", str(ref), *args, check=True)
    assert {k: v for k, v in shard_files(out).items() if not k.startswith("plan")} == \
        {k: v for k, v in shard_files(ref).items() if not k.startswith("plan")}


def test_retry_failed_output_is_byte_identical_to_a_clean_run(tmp_path):
    src = media_tree(tmp_path / "data", names=("a", "b"))
    (src / "a.txt").write_text("a fine day")
    os.mkfifo(src / "b.txt")  # a failed row now, a regular file later
    out, ref = tmp_path / "out", tmp_path / "ref"
    sets = ("--set", "asr.engine='given'", "--stages", "index,asr", "--max-failed", "1")
    run_cli("extract", "--src", str(src), "--out", str(out), *sets, check=True)
    assert [r["status"] for r in pq.read_table(out / "asr").to_pylist()] == ["ok", "failed"]
    os.unlink(src / "b.txt")
    (src / "b.txt").write_text("a bad day")
    run_cli("retry-failed", "--out", str(out), "--stages", "asr", "--set", "asr.engine='given'", check=True)
    run_cli("extract", "--src", str(src), "--out", str(ref), *sets, check=True)
    assert shard_files(out)["asr/shard-00000.parquet"] == shard_files(ref)["asr/shard-00000.parquet"]


def test_google_credentials_path_never_reaches_logs_or_the_terminal(tmp_path):
    pytest.importorskip("google.cloud.speech")
    src = media_tree(tmp_path / "data", names=("a",))
    key = tmp_path / "secret-key-location.json"  # absent: google-auth names it in its error
    out = tmp_path / "out"
    proc = run_cli("extract", "--src", str(src), "--out", str(out), "--stages", "index,audio,asr",
                   "--set", "asr.engine='google'", env={"GOOGLE_APPLICATION_CREDENTIALS": str(key)})
    assert proc.returncode == 3, proc.stderr
    texts = [proc.stderr, proc.stdout] + [p.read_text() for p in out.rglob("*.log")]
    assert not any(str(key) in t for t in texts)
    assert "GOOGLE_APPLICATION_CREDENTIALS" in proc.stderr
    assert not (out / "_done/asr/shard-00000.json").exists()


# -- 12: one-line errors, Ctrl-C -------------------------------------------------------------------

def test_out_that_is_a_file_is_one_line_exit_2(tmp_path):
    (tmp_path / "f").write_text("x")
    media_tree(tmp_path / "data")
    proc = run_cli("extract", "--src", str(tmp_path / "data"), "--out", str(tmp_path / "f"), "--stages", "index")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "--out" in proc.stderr


def test_ctrl_c_exits_130_with_a_clean_message(tmp_path, ffmpeg):
    src = media_tree(tmp_path / "data", names=("a",))
    slow = tmp_path / "ffmpeg"
    running = tmp_path / "ffmpeg-running"  # the worker is in the middle of a clip: its decode has started
    # slow decodes only: the version probe before the run (it slept 20 s too, an idle wait of every run of this test)
    slow.write_text(f'#!/bin/sh\ncase " $* " in *" -version "*) exec "{ffmpeg}" "$@";; esac\n'
                    f'touch "{running}"\nsleep 20\nexec "{ffmpeg}" "$@"\n')
    slow.chmod(0o755)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "kebr_data", "extract", "--src", str(src), "--out", str(out),
                             "--stages", "index,audio", "--set", f"audio.ffmpeg='{slow}'", "--workers", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    log = out / "_logs/audio/shard-00000.log"
    deadline = time.monotonic() + 60
    while not running.exists() and time.monotonic() < deadline:  # a condition, not a fixed wait
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err
    assert "error in the toolkit" not in log.read_text()


# -- 13: terminal markup ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["x[v2]", "y[/]", "z[bold]w[/bold]"])
def test_user_text_with_brackets_is_printed_verbatim(tmp_path, name):
    proc = run_cli("extract", "--src", str(tmp_path / name / "missing"), "--out", str(tmp_path / "o"),
                   "--stages", "index")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"{name}/missing" in proc.stderr.replace("\n", "")


def test_stale_message_of_retry_failed_names_its_own_options(indexed, tmp_path):
    import shutil
    out = tmp_path / "o"
    shutil.copytree(indexed, out)
    proc = run_cli("retry-failed", "--out", str(out), "--set", "audio.sample_rate=16000")
    assert proc.returncode == 2
    err = " ".join(proc.stderr.split())
    assert "Rerun with --force" not in err and "--stages audio --force" in err and "kebr-data extract" in err


@pytest.mark.parametrize("setup,args,fix", [
    (lambda d: None, ("--set", "run.stages=[1,2]"), "run.stages expects a list of strings"),
    (lambda d: (d / "bad.toml").write_bytes(b'[index]\nlayout = "caf\xe9"\n'), ("--config", "bad.toml"),
     "save it as UTF-8"),
])
def test_config_and_folder_problems_are_one_line_exit_2(tmp_path, monkeypatch, setup, args, fix):
    media_tree(tmp_path / "data")
    setup(tmp_path)
    monkeypatch.chdir(tmp_path)
    proc = run_cli("extract", "--src", "data", "--stages", "index", "--out", "o", *args)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and fix in proc.stderr, proc.stderr


def test_immutable_out_is_one_line_exit_2(tmp_path):
    media_tree(tmp_path / "data")
    frozen = tmp_path / "frozen"
    frozen.mkdir()
    if subprocess.run(["chattr", "+i", str(frozen)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not permitted here")
    try:
        proc = run_cli("extract", "--src", str(tmp_path / "data"), "--out", str(frozen / "o"), "--stages", "index")
    finally:
        subprocess.run(["chattr", "-i", str(frozen)], check=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "another --out" in proc.stderr


def test_a_full_disk_in_the_main_process_is_one_line_naming_the_fix():
    from kebr_data.cli import os_error
    with pytest.raises(OSError) as exc, open("/dev/full", "wb", buffering=0) as fh:
        fh.write(b"x")  # the kernel's own ENOSPC
    err = os_error(exc.value)
    assert err.exit_code == 2 and "No space left on device" in str(err) and "free some space" in str(err)


def test_markers_with_wrong_types_are_corrupt_not_crashes(indexed, tmp_path):
    import shutil
    out = tmp_path / "o"
    shutil.copytree(indexed, out)
    before = shard_files(out)["audio/shard-00000.parquet"]
    marker = json.loads((out / "_done/audio/shard-00000.json").read_text())
    (out / "_done/audio/shard-00000.json").write_text(json.dumps({**marker, "rows": "2", "errors": {"x": "y"}}))
    status = run_cli("status", "--out", str(out))
    assert status.returncode == 0 and "Traceback" not in status.stderr and "0/1" in status.stdout
    run_cli("extract", "--out", str(out), "--stages", "audio", check=True)  # recomputed
    assert shard_files(out)["audio/shard-00000.parquet"] == before
    assert json.loads((out / "_done/audio/shard-00000.json").read_text())["rows"] == 2


# -- 11: a full disk that OpenFace reports only by failing ------------------------------------------

@pytest.fixture()
def small_disk(tmp_path):
    """A real 1 MiB tmpfs (root only; skipped where mounting is not permitted)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs is not permitted here")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_full_disk_under_openface_aborts_the_shard_instead_of_failed_rows(tmp_path, small_disk, monkeypatch):
    from helpers import OPENFACE_FIXTURES, demo_clip

    from kebr_data.errors import full_disk
    from kebr_data.stages.visual import VisualStage
    fake = ROOT / "tests/fake_openface/FeatureExtraction"
    monkeypatch.setenv("KEBR_FAKE_OPENFACE_CSV", str(OPENFACE_FIXTURES / "astronaut_gap.csv"))
    monkeypatch.setenv("KEBR_FAKE_OPENFACE_MODE", "nocsv")  # what OpenFace does when it cannot write
    monkeypatch.delenv("KEBR_FAKE_OPENFACE_LOG", raising=False)
    stage = VisualStage(config.load(overrides=[f"visual.openface_bin='{fake}'"])["visual"])
    plan_t = pa.Table.from_pylist([{"clip_id": "a", "status": "ok", "video_path": str(demo_clip(0)),
                                    "source": "folder"}], schema=PLAN)
    assert full_disk(small_disk) is None
    rows = stage.run_shard(ShardContext(0, {"plan": plan_t}, small_disk / "tmp")).to_pylist()
    assert (rows[0]["status"], rows[0]["error"]) == ("failed", "no_csv")  # room left: the clip's own failure
    (small_disk / "filler").write_bytes(b"\0" * (1000 << 10))
    assert "No space left on device" in full_disk(small_disk)
    with pytest.raises(EnvironmentFailure) as exc:
        stage.run_shard(ShardContext(0, {"plan": plan_t}, small_disk / "tmp"))
    assert "No space left on device" in str(exc.value) and exc.value.exit_code == 3


def test_full_disk_while_opensmile_copies_its_config_aborts_and_leaves_no_half_copy(small_disk):
    """The derived config folder (392 KB) meets a full disk halfway: the shard stops as the machine's fault
    (exit 3, resumable) and the half-copied folder is removed."""
    pytest.importorskip("opensmile")
    from helpers import audio_shard

    from kebr_data.stages.opensmile import OpensmileStage
    (small_disk / "filler").write_bytes(b"\0" * (800 << 10))
    ctx = audio_shard(small_disk / "shard", [(np.full(16000, 0.1, np.float32), 16000)])
    with pytest.raises(EnvironmentFailure) as exc:
        OpensmileStage(config.defaults()["opensmile"]).run_shard(ctx)
    assert "opensmile could not copy its config folder: No space left" in str(exc.value) and exc.value.exit_code == 3
    assert not (ctx.tmp_dir / "opensmile-config").exists()


# -- 6: the store never reads through a symlink planted in the folder --------------------------------

def test_store_refuses_symlinked_markers_tables_and_plan(indexed, tmp_path):
    import shutil

    from kebr_data.storage.store import Store
    out = tmp_path / "o"
    shutil.copytree(indexed, out)
    marker, table = out / "_done/audio/shard-00000.json", out / "audio/shard-00000.parquet"
    assert Store(out).problem("audio", 0) is None
    os.replace(table, tmp_path / "table.parquet")
    table.symlink_to(tmp_path / "table.parquet")  # same bytes, but not the folder's own file
    assert "not a regular file" in Store(out).problem("audio", 0, verify=True)
    assert "not a regular file" in Store(out).problem("audio", 0)
    os.replace(marker, tmp_path / "marker.json")
    os.mkfifo(marker)  # a FIFO would block a plain read forever
    t0 = time.monotonic()
    assert "not a regular file" in Store(out).corrupt("audio", 0) and time.monotonic() - t0 < 5
    plan_marker = out / "_done/plan.json"
    os.replace(plan_marker, tmp_path / "plan.json")
    plan_marker.symlink_to(tmp_path / "plan.json")
    with pytest.raises(PlanError, match="symlink"):
        Store(out).plan  # noqa: B018
    proc = run_cli("status", "--out", str(out))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "--replan" in proc.stderr


def test_import_mmsa_into_a_file_is_one_line_exit_2(tmp_path):
    (tmp_path / "f").write_text("x")
    proc = train_cli("import-mmsa", "--pickle", mmsa_pickle(tmp_path / "p.pkl", 2), "--out", tmp_path / "f",
                     "--trust-pickle")
    assert proc.exit_code == 2 and "Traceback" not in proc.stderr and "--out" in proc.stderr, proc.stderr
