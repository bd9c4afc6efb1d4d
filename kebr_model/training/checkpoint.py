"""Checkpoints as folders, committed so that a crash at any instant leaves a valid checkpoint.

    runs/pretrain/checkpoints/
      latest                       pointer: the name of the folder to resume from
      best                         pointer: the folder with the lowest validation loss
      step-00000200/               model.pt, optimizer.pt, scaler.pt, scheduler.pt, rng.pt, state.json
      step-00000200.1/             a re-save of step 200 (the slot beside the one `latest` named)
      best-00000150/               weights and state only: never resumed, so no optimiser state
      .step-00000400.tmp-<uuid>/   a commit in progress (or a crashed one, swept at the next start)
      .step-00000100.deleting.tmp-<uuid>/  a superseded folder being removed (swept too)

Commit (`save`): write every file into a temp folder and fsync it, rename it to a folder name that
no pointer uses (so a re-save of the same step never deletes what a pointer names), fsync, switch
the pointer atomically, and only then remove the folder it named before. Every state in between
has a pointer naming a complete folder. state.json records the sha256 of every other file; a load
checks them (`problem`), so a truncated or altered file is refused in one line (`DamagedCheckpoint`)
and a resume falls back to the newest complete step checkpoint (`resumable`). Loaded with
`weights_only=True` (no code from a file runs).
"""

from __future__ import annotations

import json
import os
import pickle
import random
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kebr_data.errors import KebrError
from kebr_data.storage.atomic import NotRegularFile, atomic_write, atomic_write_bytes, file_digest, fsync_dir, real_dir

from ..jsonout import dumps
from ..errors import TrainSetupError

POINTERS = ("latest", "best")
TMP_INFIX = ".tmp-"
_SLOT = re.compile(r"^(?P<name>[A-Za-z]+-\d+)(?:\.(?P<slot>\d+))?$")
_STEP = re.compile(r"^step-(?P<step>\d+)(?:\.(?P<slot>\d+))?$")


class DamagedCheckpoint(KebrError):
    """A checkpoint folder whose files are missing, unreadable, or not the bytes committed."""


def _fsynced_save(obj: Any, path: Path) -> str:
    """torch.save `obj` to `path`, committed by `atomic_write` (fsynced); return the file's sha256."""
    return atomic_write(path, lambda fh: torch.save(obj, fh))[1]


def write_tmp(run_dir: Path, name: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
              scaler: Any, state: dict[str, Any], scheduler: Any = None) -> Path:
    """Step 1 of a commit: every file of checkpoint `name` in a fresh temp folder of run_dir/checkpoints
    (a real folder inside the run folder, checked by `real_dir`: never a planted symlink), fsynced."""
    root = real_dir(run_dir, run_dir / "checkpoints")
    tmp = root / f".{name}{TMP_INFIX}{uuid.uuid4().hex}"
    tmp.mkdir()
    parts = {"model.pt": model, "optimizer.pt": optimizer, "scaler.pt": scaler, "scheduler.pt": scheduler}
    files = {name: _fsynced_save(part.state_dict(), tmp / name) for name, part in parts.items() if part is not None}
    py_state = random.getstate()
    np_state = np.random.get_state()
    files["rng.pt"] = _fsynced_save({"torch": torch.get_rng_state(),
                                     "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64))}, tmp / "rng.pt")
    meta = {**state, "files": files, "rng_python": [py_state[0], list(py_state[1]), py_state[2]],
            "rng_numpy": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])]}
    atomic_write_bytes(tmp / "state.json", dumps(meta, indent=2).encode())
    fsync_dir(tmp)
    return tmp


def free_slot(root: Path, name: str) -> Path:
    """`name` itself when free, else `name.1`, `name.2`, ...: never a folder a pointer may name."""
    slot, k = root / name, 0
    while slot.exists():
        k += 1
        slot = root / f"{name}.{k}"
    return slot


def publish(tmp: Path, name: str) -> Path:
    """Step 2: rename the complete temp folder to a free slot of `name` (nothing is replaced)."""
    final = free_slot(tmp.parent, name)
    os.rename(tmp, final)
    fsync_dir(tmp.parent)
    return final


def point(root: Path, pointer: str, final: Path) -> Path | None:
    """Step 3: switch `pointer` to `final` atomically; return the folder it named before."""
    before = resolve_in(root, pointer)
    atomic_write_bytes(root / pointer, final.name.encode())
    return before if before != final else None


def save(run_dir: Path, name: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
         scaler: Any, state: dict[str, Any], pointer: str = "latest", keep_last: int = 0,
         scheduler: Any = None) -> Path:
    """Commit checkpoint `name` under run_dir/checkpoints and point `pointer` at it; then remove
    the folder the pointer named before and, with `keep_last`, all but the newest `keep_last`
    step checkpoints (a folder a pointer names is always kept)."""
    root = run_dir / "checkpoints"
    final = publish(write_tmp(run_dir, name, model, optimizer, scaler, state, scheduler), name)
    before = point(root, pointer, final)
    if before is not None and (pointer == "best" or before.name.partition(".")[0] == name):
        _remove(before, root)  # an older best, or the same step re-saved: superseded
    prune(root, keep_last)
    return final


def _remove(folder: Path, root: Path) -> None:
    """Delete a checkpoint folder: renamed to a temp name first, so a crash mid-delete leaves a
    folder that the sweep removes rather than a half folder that looks like a checkpoint."""
    if folder.name in {_pointer_text(root, p) for p in POINTERS}:
        return
    doomed = root / f".{folder.name}.deleting{TMP_INFIX}{uuid.uuid4().hex}"
    os.rename(folder, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def prune(root: Path, keep_last: int) -> list[Path]:
    """Remove superseded copies of a step and, with keep_last > 0, steps older than the newest
    keep_last; never a folder a pointer names. Returns what was removed."""
    named = {_pointer_text(root, p) for p in POINTERS}
    by_step: dict[str, list[Path]] = {}
    for p in root.iterdir():
        m = _SLOT.match(p.name)
        if p.is_dir() and m:
            by_step.setdefault(m["name"], []).append(p)
    removed = []
    for name, copies in by_step.items():
        if any(c.name in named for c in copies):
            removed += [c for c in copies if c.name not in named]
    steps = sorted(n for n in by_step if n.startswith("step-"))
    if keep_last > 0:
        for name in steps[:-keep_last]:
            removed += [c for c in by_step[name] if c.name not in named]
    for p in dict.fromkeys(removed):
        _remove(p, root)
    return removed


def sweep(run_dir: Path) -> list[Path]:
    """Remove temp folders of commits (or deletions) a crash interrupted; return them."""
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return []
    swept = [p for p in root.iterdir() if TMP_INFIX in p.name]  # folders and the pointers' temp files
    for p in swept:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return swept


def _pointer_text(root: Path, pointer: str) -> str | None:
    path = root / pointer
    return path.read_text().strip() if path.is_file() else None


def resolve_in(root: Path, pointer: str) -> Path | None:
    """The folder `root/pointer` names, when it is a complete checkpoint."""
    path = root / pointer
    if path.is_dir():  # runs made before pointers: `best/` was the folder itself
        return path if (path / "state.json").exists() else None
    text = _pointer_text(root, pointer)
    if not text:
        return None
    folder = root / text
    return folder if (folder / "state.json").exists() else None


def latest(run_dir: Path) -> Path | None:
    """The checkpoint to resume from, or None."""
    return resolve_in(run_dir / "checkpoints", "latest")


def best(run_dir: Path) -> Path | None:
    """The checkpoint with the lowest validation loss, or None."""
    return resolve_in(run_dir / "checkpoints", "best")


def evaluated(run: Path) -> Path:
    """The checkpoint `eval`, `analyse` and `predict` score with: best, else latest (verified); TrainSetupError
    naming the fix when the folder holds none (a sweep's or seeds' parent folder: which seed folder to give)."""
    ckpt = pointed(run, "best", "latest")
    if ckpt is None:
        seeds = sorted(p.name for p in run.glob("seed-*") if p.is_dir())
        hint = f": it holds {', '.join(seeds)}, pass --run {run / seeds[0]}" if seeds else ""
        raise TrainSetupError(f"{run} holds no checkpoint{hint or ' (give the --out folder of a training run)'}")
    return ckpt


def pointed(run_dir: Path, *pointers: str) -> Path | None:
    """The checkpoint the first existing pointer of `pointers` names (`eval` and `analyse`: best, else
    latest; `--init`: latest), None when none exists. Verified: a damaged one is DamagedCheckpoint,
    never silently replaced by another."""
    root = run_dir / "checkpoints"
    for pointer in pointers:
        if (root / pointer).exists():
            folder = resolve_in(root, pointer) or root / (_pointer_text(root, pointer) or pointer)
            verify(folder)
            return folder
    return None


def read_state(path: Path) -> dict[str, Any]:
    """The state.json of a checkpoint folder (step, epoch, data position, config, metrics rows, file sha256s)."""
    return json.loads((path / "state.json").read_text())


def problem(path: Path) -> str | None:
    """Why checkpoint folder `path` is not as committed (state.json missing or unreadable, a file missing or
    not the bytes whose sha256 state.json records), or None. Folders from before the sha256s pass on
    state.json alone (their files are still checked as they load)."""
    try:
        meta = read_state(path)
    except FileNotFoundError:
        return "folder missing" if not path.is_dir() else "state.json missing"
    except (OSError, ValueError) as exc:
        return f"state.json unreadable: {exc}"
    files = meta.get("files", {}) if isinstance(meta, dict) else None
    if not isinstance(files, dict) or not isinstance(meta.get("step"), int) \
            or any(Path(name).name != name or not isinstance(digest, str) for name, digest in files.items()):
        return "state.json lacks its fields"  # or names files outside its folder
    for name, digest in files.items():
        try:
            _, sha256 = file_digest(path / name)
        except FileNotFoundError:
            return f"{name} missing"
        except NotRegularFile:
            return f"{name} is not a regular file"
        if sha256 != digest:
            return f"{name} is not the file committed: its sha256 differs (truncated or overwritten)"
    return None


def verify(path: Path) -> None:
    """Raise DamagedCheckpoint (one line naming the fix) unless `path` is as committed."""
    why = problem(path)
    if why is not None:
        raise DamagedCheckpoint(f"checkpoint {path} is damaged ({why}): restore the folder from a copy, or train "
                                "again into a new --out")


def resumable(run_dir: Path) -> tuple[Path | None, list[str]]:
    """The checkpoint a run resumes from: the one `latest` names when it is as committed, else the newest
    step checkpoint that is (folder, then slot, numbers decide). Returns it (None for a run without
    checkpoints) and one line per damaged checkpoint passed over; raises DamagedCheckpoint when
    checkpoints exist but none is complete (nothing to fall back to)."""
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return None, []
    named = _pointer_text(root, "latest")
    steps = sorted((p for p in root.iterdir() if p.is_dir() and _STEP.match(p.name)), reverse=True,
                   key=lambda p: (int(_STEP.match(p.name)["step"]), int(_STEP.match(p.name)["slot"] or 0)))
    candidates = list(dict.fromkeys(([root / named] if named else []) + steps))
    passed = []
    for folder in candidates:
        why = problem(folder)
        if why is None:
            return folder, passed
        passed.append(f"checkpoint {folder.name} is damaged ({why})")
    if passed:
        raise DamagedCheckpoint(f"{run_dir} holds no complete checkpoint to resume from ({'; '.join(passed)}): "
                                "restore checkpoints/ from a copy, or train again into a new --out")
    return None, []


def _torch_load(path: Path, name: str) -> Any:
    """torch.load of one checkpoint file, tensors only; a file that cannot be read is DamagedCheckpoint."""
    try:
        return torch.load(path / name, weights_only=True, map_location="cpu")
    except (RuntimeError, EOFError, pickle.UnpicklingError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DamagedCheckpoint(f"checkpoint {path} is damaged ({name} cannot be read as tensors: {first}): restore "
                                "the folder from a copy, or train again into a new --out") from None


#: state_dict key prefixes renamed since checkpoints were first written (old -> new): before issue #26 SKESL's
#: per-modality TCMF sat in a wrapper (`fusion.tcmf.layers.*`); TCMF is now one fusion (`fusion.layers.*`)
RENAMED = {"fusion.tcmf.": "fusion."}


def upgrade_keys(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`weights` with the keys of older checkpoints renamed (`RENAMED`), values untouched."""
    def new(key: str) -> str:
        old = next((o for o in RENAMED if key.startswith(o)), None)
        return RENAMED[old] + key[len(old):] if old else key
    return {new(k): v for k, v in weights.items()}


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """The model weights of checkpoint folder `path`, checked against their recorded sha256, with the keys of
    older checkpoints renamed to today's (`upgrade_keys`)."""
    verify(path)
    return upgrade_keys(_torch_load(path, "model.pt"))


def _fit(path: Path, model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Refuse weights whose shapes differ from the model's (another run's input widths or layers)."""
    own = model.state_dict()
    wrong = [k for k, v in weights.items() if k in own and own[k].shape != v.shape]
    if wrong:
        key = wrong[0]
        raise TrainSetupError(f"checkpoint {path} does not fit this model ({key}: {tuple(weights[key].shape)} there, "
                              f"{tuple(own[key].shape)} here): it was trained on other data or settings; give the "
                              "--shards it was trained on, or use a new --out")


def load(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None, scaler: Any = None,
         restore_rng: bool = True, strict: bool = True, scheduler: Any = None) -> dict[str, Any]:
    """Load a checkpoint folder, its files checked against their sha256 first (tensors only:
    weights_only=True, no code from the file runs)."""
    weights = load_weights(path)
    _fit(path, model, weights)
    model.load_state_dict(weights, strict=strict)
    for name, part in (("optimizer.pt", optimizer), ("scaler.pt", scaler), ("scheduler.pt", scheduler)):
        if part is not None and (path / name).exists():
            part.load_state_dict(_torch_load(path, name))
    meta = read_state(path)
    if restore_rng:
        rng = _torch_load(path, "rng.pt")
        torch.set_rng_state(rng["torch"])
        v, pos, has_gauss, cached = meta["rng_numpy"]
        np.random.set_state((v, rng["numpy_keys"].numpy().astype(np.uint32), pos, has_gauss, cached))
        p = meta["rng_python"]
        random.setstate((p[0], tuple(p[1]), p[2]))
    return meta
