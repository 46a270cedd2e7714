"""Optional dependencies (pyproject.toml's extras): a missing one is reported in one line naming the
extra to install, instead of a traceback from deep inside a command."""

from __future__ import annotations

import importlib


class MissingDependency(ImportError):
    """A command needs a package that is not installed; str() is the line to show the user."""


def require(module: str, *, package: str, extra: str, what: str) -> None:
    """Imports `module` (the import name of the PyPI `package`), or raises MissingDependency."""
    try:
        importlib.import_module(module)
    except ImportError:
        raise MissingDependency(f'{what} needs {package}: pip install "xsep[{extra}]"') from None
