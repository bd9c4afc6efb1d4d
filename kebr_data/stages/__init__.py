"""Stage registry: the pipeline's stages in order, looked up by name."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from .acoustic import AcousticStage
from .asr import AsrStage
from .audio import AudioStage
from .base import Stage
from .mask import MaskStage
from .visual import VisualStage

#: every stage that exists, in pipeline order (`index` builds the plan and is run by the engine)
STAGES: dict[str, type[Stage]] = {cls.name: cls for cls in (AudioStage, AsrStage, MaskStage, AcousticStage, VisualStage)}
PIPELINE_ORDER = ("index", "audio", "asr", "mask", "acoustic", "visual")
#: what `kebr-data extract` runs by default (DESIGN §1); `mask` has its own command
EXTRACT_DEFAULT = tuple(s for s in ("index", "audio", "asr", "acoustic", "visual") if s == "index" or s in STAGES)


def make_stage(name: str, cfg: dict[str, dict[str, Any]]) -> Stage:
    """Instantiate stage `name` with its config section."""
    return STAGES[name](cfg[name])


def parse_stages(text: str | None, default: tuple[str, ...] = EXTRACT_DEFAULT) -> list[str]:
    """Parse `--stages a,b` into known stage names in pipeline order."""
    if not text:
        return list(default)
    names = [s.strip() for s in text.split(",") if s.strip()]
    known = ("index", *STAGES)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"unknown stage(s) {', '.join(unknown)}; available: {', '.join(known)}")
    return [s for s in PIPELINE_ORDER if s in names]
