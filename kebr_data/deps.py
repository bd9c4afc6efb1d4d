"""Optional dependencies: import them lazily and name the extra that provides them."""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import PrerequisiteError


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import `module` or raise a PrerequisiteError naming `pip install 'kebr-toolkit[extra]'`."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise PrerequisiteError(
            f"{purpose} needs the Python package '{module.split('.')[0]}' ({exc}); "
            f"install it with: pip install 'kebr-toolkit[{extra}]'"
        ) from exc


def missing(module: str, extra: str, purpose: str) -> str | None:
    """Like `require` but returns the problem as text (None when importable), for up-front checks."""
    try:
        require(module, extra, purpose)
    except PrerequisiteError as exc:
        return str(exc)
    return None
