"""Checkpoints as folders (`checkpoints/step-00000200/`): model, optimiser, scaler, RNG states, data
position and config. Written to a temp folder and renamed, then the `latest` pointer is replaced,
so a crash never leaves a half checkpoint that looks whole. Loaded with `weights_only=True`."""

from __future__ import annotations

import json
import os
import random
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kebr_data.storage.atomic import atomic_write_bytes, fsync_dir


def save(run_dir: Path, name: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
         scaler: Any, state: dict[str, Any], keep: int = 0) -> Path:
    """Commit checkpoint `name` under run_dir/checkpoints and point `latest` at it."""
    root = run_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{name}.tmp-{uuid.uuid4().hex}"
    tmp.mkdir()
    torch.save(model.state_dict(), tmp / "model.pt")
    if optimizer is not None:
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    if scaler is not None:
        torch.save(scaler.state_dict(), tmp / "scaler.pt")
    py_state = random.getstate()
    np_state = np.random.get_state()
    torch.save({"torch": torch.get_rng_state(), "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64))}, tmp / "rng.pt")
    meta = {**state, "rng_python": [py_state[0], list(py_state[1]), py_state[2]],
            "rng_numpy": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])]}
    (tmp / "state.json").write_text(json.dumps(meta, indent=2, default=str))
    final = root / name
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_dir(root)
    atomic_write_bytes(root / "latest", name.encode())
    if keep:
        steps = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-"))
        for old in steps[:-keep]:
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)
    return final


def latest(run_dir: Path) -> Path | None:
    pointer = run_dir / "checkpoints" / "latest"
    if not pointer.exists():
        return None
    path = run_dir / "checkpoints" / pointer.read_text().strip()
    return path if (path / "state.json").exists() else None


def load(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None, scaler: Any = None,
         restore_rng: bool = True, strict: bool = True) -> dict[str, Any]:
    """Load a checkpoint folder (tensors only: weights_only=True, no code from the file runs)."""
    model.load_state_dict(torch.load(path / "model.pt", weights_only=True, map_location="cpu"), strict=strict)
    if optimizer is not None and (path / "optimizer.pt").exists():
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True, map_location="cpu"))
    if scaler is not None and (path / "scaler.pt").exists():
        scaler.load_state_dict(torch.load(path / "scaler.pt", weights_only=True))
    meta = json.loads((path / "state.json").read_text())
    if restore_rng:
        rng = torch.load(path / "rng.pt", weights_only=True)
        torch.set_rng_state(rng["torch"])
        v, pos, has_gauss, cached = meta["rng_numpy"]
        np.random.set_state((v, rng["numpy_keys"].numpy().astype(np.uint32), pos, has_gauss, cached))
        p = meta["rng_python"]
        random.setstate((p[0], tuple(p[1]), p[2]))
    return meta
