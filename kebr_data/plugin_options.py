"""Options a registered plugin declares for itself (an export format's, an executor's): a dataclass of
`option(...)` fields (`config.setting` fields with an optional flag name) on the plugin's `Options`.

The command line turns them into `--flag`s when it is called, not when it is imported, so a plugin
registered after import (by a test, by a program embedding the CLI) gets its flags too; `build` checks
values as a config key is checked (type, choices, range) and returns the plugin's options object.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, TypeVar

import click
from click.core import ParameterSource

from . import config
from .settings import NoOptions, flag_of, option
from .display import printable
from .errors import ConfigError

__all__ = ["NoOptions", "PluginCommand", "PluginFlag", "RegistryChoice", "build", "flag_of", "option"]

T = TypeVar("T")

#: where the plugin flags given on a command line are kept (`ctx.meta`): flag name -> value
_GIVEN = "kebr_data.plugin_options"


def _click_type(hint: Any, f: dataclasses.Field) -> Any:
    if typing.get_origin(hint) is Literal:
        return click.Choice([str(a) for a in typing.get_args(hint)])
    low, high = f.metadata.get("min"), f.metadata.get("max")
    if hint is int:
        return click.IntRange(low, high) if low is not None or high is not None else int
    if hint is float:
        return click.FloatRange(low, high) if low is not None or high is not None else float
    return str


def _keep(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Remember a plugin flag the user gave (not its default: the plugin's own default applies)."""
    if param.name and ctx.get_parameter_source(param.name) in (ParameterSource.COMMANDLINE,
                                                              ParameterSource.ENVIRONMENT):
        ctx.meta.setdefault(_GIVEN, {})[param.name] = value
    return value


class PluginFlag(click.Option):
    """A plugin option's `--flag`, knowing the plugins that declare it (`owners`, of kind `kind`)."""

    def __init__(self, *args: Any, owners: list[str], kind: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.owners, self.kind = owners, kind


def _values_of(f: dataclasses.Field, hint: Any) -> tuple[Any, ...]:
    """What a flag accepts: plugins may share a flag only where this is the same."""
    return hint, f.metadata.get("min"), f.metadata.get("max")


def flags(plugins: Mapping[str, type], kind: str) -> list[PluginFlag]:
    """One `--flag` per option of the plugins in `plugins` (name -> class with an `Options` dataclass, each a
    `kind` such as "executor"); an option that several plugins declare under one flag accepting the same
    values is one flag, its help naming them all. A flag that two plugins declare for different values, or
    that one plugin gives two of its options, is refused: a ConfigError naming the plugin, the flag and the
    other owner (or option)."""
    owners: dict[str, list[str]] = {}
    first: dict[str, tuple[dataclasses.Field, Any]] = {}
    for name, cls in plugins.items():
        hints = typing.get_type_hints(cls.Options)
        mine: dict[str, str] = {}  # this plugin's flags -> its option
        for f in dataclasses.fields(cls.Options):
            flag = flag_of(f)
            if flag in mine:
                raise ConfigError(f"{kind} {printable(name)}'s options {mine[flag]} and {f.name} both take the flag "
                                  f"--{printable(flag)}: give one of them another flag (option(..., flag=...))")
            mine[flag] = f.name
            if flag in first and _values_of(*first[flag]) != _values_of(f, hints[f.name]):
                raise ConfigError(f"{kind} {printable(name)}'s option {f.name} takes the flag --{printable(flag)}, "
                                  f"already an option of {kind} {printable(owners[flag][0])} accepting other "
                                  "values: give one of them another flag (option(..., flag=...))")
            owners.setdefault(flag, []).append(name)
            first.setdefault(flag, (f, hints[f.name]))
    options = []
    for flag, (f, hint) in first.items():
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        shown = "" if hint is bool else f" (default {default!r})" if default != "" else ""
        text = f"{', '.join(owners[flag])}: {f.metadata.get('help', '')}{shown}."
        if hint is bool:
            options.append(PluginFlag([f"--{flag}"], is_flag=True, default=False, help=text,
                                      expose_value=False, callback=_keep, owners=owners[flag], kind=kind))
        else:
            options.append(PluginFlag([f"--{flag}"], type=_click_type(hint, f), default=None, help=text,
                                      expose_value=False, callback=_keep, owners=owners[flag], kind=kind))
    return options


def given(ctx: click.Context, cls: type, owner: str, kind: str) -> dict[str, Any]:
    """The options of `cls` (the `Options` of plugin `owner`, a `kind` such as "export format") given as flags
    on this command line, by field name; a flag of another plugin is refused, listing `owner`'s own."""
    by_flag = {flag_of(f).replace("-", "_"): f.name for f in dataclasses.fields(cls)}
    values = {}
    for param, value in ctx.meta.get(_GIVEN, {}).items():
        if param not in by_flag:
            raise ConfigError(f"--{param.replace('_', '-')} is not an option of {kind} {owner}; "
                              f"{_listing(cls, kind, owner)}")
        values[by_flag[param]] = value
    return values


def given_keys(ctx: click.Context, plugins: Mapping[str, type]) -> dict[str, Any]:
    """The plugin flags given on this command line as config keys `<plugin>.<option>` (the plugins' `Options`
    are config sections), set for every plugin in `plugins` that declares the flag."""
    keys = {}
    for param, value in ctx.meta.get(_GIVEN, {}).items():
        for name, cls in plugins.items():
            keys |= {f"{name}.{f.name}": value for f in dataclasses.fields(cls.Options)
                     if flag_of(f).replace("-", "_") == param}
    return keys


def _listing(cls: type, kind: str, owner: str) -> str:
    names = [f"--{flag_of(f)}" for f in dataclasses.fields(cls)]
    return f"the options of {kind} {owner}: {', '.join(names)}" if names else f"{kind} {owner} has no options"


def build(cls: type[T], values: Mapping[str, Any], owner: str, kind: str) -> T:
    """`cls` (a plugin's `Options` dataclass) from `values` (field name -> value, the rest defaults), each
    checked as a config key is (type, choices, range); an unknown name is refused with "did you mean"."""
    names = [f.name for f in dataclasses.fields(cls)]
    for key in values:
        if key not in names:
            raise ConfigError(f"{kind} {owner} has no option {key!r}{config.did_you_mean(key, names)}; "
                              f"{_listing(cls, kind, owner)}")
    flags_of = {f.name: flag_of(f) for f in dataclasses.fields(cls)}
    try:
        checked = config.apply(config.defaults({owner: cls}), {f"{owner}.{k}": v for k, v in values.items()},
                               schema_sections={owner: cls})
    except ConfigError as exc:  # said with the flag the user knows: "--audio-len must be at least 1, got -5"
        text = str(exc)
        for name, flag in flags_of.items():
            text = text.replace(f"config key {owner}.{name} ", f"--{flag} ")
        raise ConfigError(text) from None
    return cls(**checked[owner])


class PluginCommand(click.Command):
    """A command whose last options are built from registries when it runs (`plugin_flags()`), so a plugin
    registered after import gets its flags in parsing and in --help; a plugin flag that is one of the
    command's own is refused (ConfigError), never dropped."""

    def __init__(self, *args: Any, plugin_flags: Callable[[], Iterable[PluginFlag]] = list, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.plugin_flags = plugin_flags

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        help_option = self.get_help_option(ctx)
        own = [p for p in super().get_params(ctx) if p is not help_option]
        taken = {name for p in [*own, *([help_option] if help_option is not None else [])]
                 for name in [*p.opts, *p.secondary_opts]}
        extra = list(self.plugin_flags())
        for p in extra:
            if clash := taken & set(p.opts):
                raise ConfigError(f"{p.kind} {printable(p.owners[0])}'s option {' '.join(sorted(clash))} clashes "
                                  f"with {printable(ctx.command_path)}'s own {' '.join(sorted(clash))}: give it "
                                  "another flag (option(..., flag=...))")
        return [*own, *extra, *([help_option] if help_option is not None else [])]


class RegistryChoice(click.Choice):
    """A choice among a registry's names, read when the value is checked (plugins registered after import count)."""

    def __init__(self, names: Callable[[], Iterable[str]]) -> None:
        self._names = names
        self.case_sensitive = True

    @property  # type: ignore[override]
    def choices(self) -> tuple[str, ...]:
        return tuple(self._names())
