"""ASR engines, one file each, chosen by `asr.engine` from this registry.

Adding an engine is one new file (a subclass of `base.AsrEngine`, its options in its own `Settings`
dataclass) and one line in `BUILTIN`. Other packages add engines through the `kebr_data.asr_engines`
entry point group (`name = "package.module:EngineClass"`); `register` does the same at run time. An
engine never replaces another of the same name, and a plugin that fails to load is reported once and
left out.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint

from ..errors import ConfigError
from ..plugins import describe, load_group
from .base import AsrEngine, ClipAudio, LocalModelEngine, LocalModelSettings, Packing, Transcript, Word
from .faster_whisper import FasterWhisper
from .given import Given
from .google_speech import GoogleSpeech
from .openai_whisper import OpenAIWhisper

#: the toolkit's own engines (their keys enter the asr stage's config hash whichever engine runs, as they always did)
BUILTIN: tuple[type[AsrEngine], ...] = (FasterWhisper, OpenAIWhisper, GoogleSpeech, Given)
ENTRY_POINT_GROUP = "kebr_data.asr_engines"

ENGINES: dict[str, AsrEngine] = {cls.name: cls() for cls in BUILTIN}
_plugins_loaded = False


def register(cls: type[AsrEngine], origin: str = "") -> type[AsrEngine]:
    """Add an engine class (usable as a decorator); its name must not be taken by another class."""
    if not (isinstance(cls, type) and issubclass(cls, AsrEngine)):
        raise ConfigError(f"{cls!r} is not a kebr_data.asr_engines.base.AsrEngine subclass")
    taken = ENGINES.get(cls.name)
    if taken is not None and type(taken) is not cls:
        raise ConfigError(f"ASR engine {cls.name} is defined twice, by {type(taken).__module__}:"
                          f"{type(taken).__qualname__} and by {origin or f'{cls.__module__}:{cls.__qualname__}'}: "
                          "rename the plugin's engine (its `name`) or uninstall it")
    ENGINES.setdefault(cls.name, cls())
    return cls


def _register_plugin(ep: EntryPoint) -> None:
    register(ep.load(), describe(ep))


def engines() -> dict[str, AsrEngine]:
    """Every engine by name: the built-ins, then the entry points (loaded once), then `register`'s."""
    global _plugins_loaded
    if not _plugins_loaded:
        _plugins_loaded = True
        load_group(ENTRY_POINT_GROUP, _register_plugin)
    return ENGINES


__all__ = ["BUILTIN", "ENGINES", "AsrEngine", "ClipAudio", "LocalModelEngine", "LocalModelSettings", "Packing",
           "Transcript", "Word", "engines", "register"]
