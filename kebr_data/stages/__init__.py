"""Stage registry: the single list of stages, in pipeline order, looked up by name.

Adding a stage is one file (a `Stage` subclass) plus one line in `BUILTIN`. Other packages add
stages through the `kebr_data.stages` entry point group (`name = "package.module:StageClass"`);
`register` does the same at run time (tests, notebooks). A stage is inserted after its upstream
stages. A plugin never replaces a stage of the same name (a duplicate is refused, naming both), and a
plugin that fails to load is reported once and left out, so `status` and `validate` keep working.
Everything else (config sections, CLI choices, validation, export, report) is derived
from what the registered classes declare.
"""

from __future__ import annotations

import sys
from importlib.metadata import EntryPoint
from typing import Any

from ..display import printable
from ..errors import ConfigError
from ..plugins import describe, load_group
from .acoustic import AcousticStage
from .asr import AsrStage
from .audio import AudioStage
from .base import Stage
from .faces import FacesStage
from .mask import MaskStage
from .melspec import MelspecStage
from .opensmile import OpensmileStage
from .ssl_audio import SslAudioStage
from .video_encoder import VideoEncoderStage
from .visual import VisualStage

#: the toolkit's own stages, in pipeline order (`index` builds the plan and is run by the engine)
BUILTIN: tuple[type[Stage], ...] = (AudioStage, AsrStage, MaskStage, AcousticStage, VisualStage, SslAudioStage,
                                    OpensmileStage, MelspecStage, FacesStage, VideoEncoderStage)
INDEX = "index"
ENTRY_POINT_GROUP = "kebr_data.stages"

_registry: dict[str, type[Stage]] = {}
#: where each registered stage came from (`built-in module:Class`, `entry point name = value (dist)`)
_origins: dict[str, str] = {}
#: entry points refused because their stage name is taken: commands that run stages refuse to start
conflicts: list[str] = []


class DuplicateStage(ConfigError):
    """A stage name registered twice by different classes."""


def _origin(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def register(cls: type[Stage], origin: str = "") -> type[Stage]:
    """Add a stage class (usable as a decorator); its upstream stages must be registered already, and
    its name must not be taken by another class (the built-ins are registered first, so none is shadowed)."""
    if cls not in BUILTIN:
        registry()
    reserved = {INDEX, "plan", "run"}
    if not (isinstance(cls, type) and issubclass(cls, Stage)):
        raise ConfigError(f"{cls!r} is not a kebr_data.stages.base.Stage subclass")
    if cls.name in reserved or not cls.name.isidentifier():
        raise ConfigError(f"stage name {cls.name!r} is reserved or not an identifier")
    if _registry.get(cls.name, cls) is not cls:
        first = _origins.get(cls.name) or _origin(_registry[cls.name])
        raise DuplicateStage(f"stage {cls.name} is defined twice, by {first} and by {origin or _origin(cls)}: "
                             "rename the plugin's stage (its `name`) or uninstall it")
    missing = [u for u in cls.upstream if u != "plan" and u not in _registry]
    if missing:
        raise ConfigError(f"stage {cls.name} needs {', '.join(missing)}, which is not registered")
    _registry[cls.name] = cls
    _origins[cls.name] = origin or _origin(cls)
    return cls


def _register_plugin(ep: EntryPoint) -> None:
    """Register one entry point's stage; a duplicate is reported once on stderr and left out."""
    try:
        register(ep.load(), describe(ep))
    except DuplicateStage as exc:
        conflicts.append(str(exc))
        sys.stderr.write(f"warning: {printable(str(exc))}; kebr-data refuses to run stages until then\n")


def registry() -> dict[str, type[Stage]]:
    """Every registered stage in pipeline order (built-ins first, then entry points, then `register`)."""
    if not _registry:
        for cls in BUILTIN:
            register(cls, f"built-in {_origin(cls)}")
        load_group(ENTRY_POINT_GROUP, _register_plugin)
    return _registry


def stage_class(name: str) -> type[Stage]:
    try:
        return registry()[name]
    except KeyError:
        raise ConfigError(f"unknown stage {name!r}; available: {', '.join(registry())}") from None


def make_stage(name: str, config: dict[str, dict[str, Any]]) -> Stage:
    """Instantiate stage `name` with its section of the resolved `config` (typed by the stage into its settings
    object)."""
    return stage_class(name)(config[name])


def pipeline_order() -> tuple[str, ...]:
    return (INDEX, *registry())


def extract_default() -> tuple[str, ...]:
    """What `kebr-data extract` runs without --stages (`mask` has its own command)."""
    return (INDEX, *(name for name, cls in registry().items() if cls.extract_default))


def parse_stages(text: str | None, default: tuple[str, ...] | None = None) -> list[str]:
    """Parse `--stages a,b` into known stage names in pipeline order."""
    if not text:
        return list(extract_default() if default is None else default)
    names = [s.strip() for s in text.split(",") if s.strip()]
    known = pipeline_order()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"unknown stage(s) {', '.join(unknown)}; available: {', '.join(known)}")
    return [s for s in known if s in names]
