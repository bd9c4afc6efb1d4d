"""Local Hugging Face model folders, loaded without running or unpickling anything from them.

A folder whose config names its own Python code (`auto_map`: transformers would ask to run it, with
`trust_remote_code`) or whose weights are pickles only (`pytorch_model.bin`, `*.pt`) is refused up
front, with the fix, before any work starts; `LOAD_OPTIONS` make `from_pretrained` itself never
download, never run a folder's code and never read pickled weights.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: keyword arguments for every `from_pretrained` of a model folder (for tokenizers and feature extractors,
#: `TEXT_LOAD_OPTIONS`: they have no weights)
TEXT_LOAD_OPTIONS = {"local_files_only": True, "trust_remote_code": False}
LOAD_OPTIONS = {**TEXT_LOAD_OPTIONS, "use_safetensors": True}
PICKLED_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def folder_problem(model: str | Path, option: str) -> str | None:
    """Why the model folder `model` (named by the setting `option`) cannot be loaded safely, or None."""
    path = Path(model)
    if not path.is_dir():
        return f"{option} {model} is not a folder (models are never downloaded at run time)"
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"{option} {model} has no config.json: give a Hugging Face model folder"
    except (OSError, ValueError) as exc:
        return f"{option} {model}: unreadable config.json ({exc})"
    if not isinstance(config, dict):
        return f"{option} {model}: config.json is not a JSON object"
    if "auto_map" in config:
        return (f"{option} {model} needs its own Python code (config.json's auto_map), which is never run: use a "
                "model type that transformers ships (e.g. bert, roberta, hubert, wav2vec2)")
    if not any(path.glob("*.safetensors")):
        pickled = sorted(p.name for p in path.iterdir() if p.suffix in PICKLED_SUFFIXES)
        held = f" (only pickled {', '.join(pickled[:3])}, which are never unpickled)" if pickled else ""
        return (f"{option} {model} has no .safetensors weights{held}: convert them once with "
                "save_pretrained(safe_serialization=True)")
    return None


@contextmanager
def quiet_loading() -> Iterator[None]:
    """transformers' own progress bars ("Loading weights: 100%") off while a model folder loads, restored
    after: the command's own progress is the only one on screen, and no global switch is left flipped."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()
