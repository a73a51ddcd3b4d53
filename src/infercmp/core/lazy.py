"""Heavy third-party modules, imported on first use.

`torch = lazy_import("torch")` at the head of a file keeps every dependency visible there while
nothing is loaded until an attribute is read: `infercmp --help` and the worker's start stay light,
and infercmp's own imports can all sit at the top of each file (issue 24). A module that is not
installed raises MissingDependency on first use, one line naming the extra that provides it.

For type checking, import the real module under `if TYPE_CHECKING:` beside the proxy.
"""

from __future__ import annotations

import importlib
import types
from typing import Any

from infercmp.core.errors import MissingDependency


class LazyModule(types.ModuleType):
    """A stand-in for a module that is imported when one of its attributes is first read."""

    def __init__(self, name: str, extra: str | None = None, purpose: str | None = None) -> None:
        super().__init__(name)
        self.__dict__["_lazy_extra"] = extra
        self.__dict__["_lazy_purpose"] = purpose
        self.__dict__["_lazy_module"] = None

    def _load(self) -> types.ModuleType:
        module = self.__dict__["_lazy_module"]
        if module is None:
            module = load(
                self.__name__, self.__dict__["_lazy_extra"], self.__dict__["_lazy_purpose"]
            )
            # Nothing is copied from the module: every read goes to it, so a test that patches
            # the real module's attribute (psutil.Process, say) is seen through the proxy.
            self.__dict__["_lazy_module"] = module
        return module

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._load(), attribute)

    def __dir__(self) -> list[str]:
        return dir(self._load())

    def __repr__(self) -> str:
        state = "imported" if self.__dict__["_lazy_module"] is not None else "not imported yet"
        return f"<lazy module {self.__name__!r} ({state})>"


def lazy_import(name: str, extra: str | None = None, purpose: str | None = None) -> Any:
    """A proxy for module `name`; `extra` names the infercmp extra that installs it."""
    return LazyModule(name, extra, purpose)


def load(name: str, extra: str | None = None, purpose: str | None = None) -> types.ModuleType:
    """Import `name` now, or raise MissingDependency: one line naming the extra to install."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        install = f"pip install 'infercmp[{extra}]'" if extra else f"pip install {name}"
        needed = f"{purpose} needs" if purpose else "infercmp needs"
        raise MissingDependency(
            f"{needed} the Python module '{name}', which is not installed ({exc}); "
            f"install it with: {install}"
        ) from exc
