"""Optional dependencies: import them lazily and name the extra that provides them."""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import PrerequisiteError

CV2 = "opencv-python>=4.8,<5"  # 5.x dropped the Haar cascades


def require(module: str, extra: str | None, purpose: str, base: str | None = None) -> ModuleType:
    """Import `module` or raise a PrerequisiteError naming the install command: the extra that
    provides it, or (`extra=None`) the base requirement `base` that a broken install lacks."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        fix = (f"pip install 'kebr-toolkit[{extra}]'" if extra else
               f"pip install '{base}' (a base dependency of kebr-toolkit: its install is incomplete)")
        raise PrerequisiteError(
            f"{purpose} needs the Python package '{module.split('.')[0]}' ({exc}); install it with: {fix}"
        ) from exc


def missing(module: str, extra: str | None, purpose: str, base: str | None = None) -> str | None:
    """Like `require` but returns the problem as text (None when importable), for up-front checks."""
    try:
        require(module, extra, purpose, base)
    except PrerequisiteError as exc:
        return str(exc)
    return None
