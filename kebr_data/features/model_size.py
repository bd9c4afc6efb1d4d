"""The parameter count of a local Hugging Face model, computed from its config.json before it is built.

Loading trusts the config's sizes: `num_hidden_layers: 1000000` makes `from_pretrained` allocate
layer after layer until the machine runs out of memory. The count comes from the same model class
built on torch's meta device (shapes only, no memory) with one and then two layers per stack, and is
extrapolated to the configured depth: every layer of a stack has the same parameters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: config keys that repeat a block (encoder-only models: num_hidden_layers; Whisper: both stacks)
DEPTH_KEYS = ("num_hidden_layers", "encoder_layers", "decoder_layers")


def _meta_count(config: Any, depths: dict[str, int]) -> int:
    """Parameters of the model `config` describes with the given stack depths (built without memory)."""
    import torch
    from transformers import AutoModel

    small = config.__class__.from_dict({**config.to_dict(), **depths})
    with torch.device("meta"):
        net = AutoModel.from_config(small)
    return sum(p.numel() for p in net.parameters())


def parameter_count(model: str | Path) -> int:
    """Parameters of the model whose config.json is in the folder `model`, without building it."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(model), local_files_only=True)
    depths = {k: int(v) for k in DEPTH_KEYS if isinstance(v := getattr(config, k, None), int)}
    ones = {k: 1 for k in depths}
    base = _meta_count(config, ones)
    return base + sum((depth - 1) * (_meta_count(config, {**ones, key: 2}) - base) for key, depth in depths.items())


def size_problem(model: str | Path, max_params: float, option: str) -> str | None:
    """Why the model in `model` is refused for its size (over `max_params`, the setting `option`), or None."""
    where = f"{option.rsplit('.', 1)[0]}.model {model}"
    try:
        count = parameter_count(model)
    except (ValueError, KeyError, TypeError, OSError) as exc:
        return f"{where}: unreadable config ({exc})"
    if count > max_params:
        return (f"{where}: its config.json describes {count:.3g} parameters, more than {option} = {max_params:.3g}; "
                f"check the config (e.g. num_hidden_layers), or raise {option}")
    return None
