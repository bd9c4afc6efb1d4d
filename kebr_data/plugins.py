"""Entry-point plugins (stages, ASR engines): where one came from, and the one warning a broken one gets.

A plugin that fails to load is reported once on stderr and left out, so `status` and `validate` keep
working; the registries decide what a duplicate name means.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points

from .display import one_line, printable


def describe(ep: EntryPoint) -> str:
    """`entry point NAME = VALUE (from DIST VERSION)`, naming the plugin in messages."""
    dist = f" (from {ep.dist.name} {ep.dist.version})" if ep.dist is not None else ""
    return f"entry point {ep.name} = {ep.value}{dist}"


def load_group(group: str, register: Callable[[EntryPoint], None]) -> None:
    """Run `register` on each entry point of `group` in name order (it loads the entry point and reports a
    duplicate name its own way); one that raises is reported once on stderr and skipped."""
    for ep in sorted(entry_points(group=group), key=lambda e: e.name):
        try:
            register(ep)
        except Exception as exc:  # noqa: BLE001 (a plugin's import can raise anything; it must not stop status)
            sys.stderr.write(f"warning: the {group} plugin {printable(describe(ep))} cannot be loaded "
                             f"({type(exc).__name__}: {one_line(str(exc))}); going on without it: fix or "
                             "uninstall it\n")
