"""Entry-point discovery shared by model plugins and engines: lazy, duplicate-aware, never fatal.

Nothing is imported while discovering; an entry that fails to load, or a name registered by two
packages, is kept as unavailable with the reason, so one broken package never takes the CLI down.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from infercmp.core.errors import InfercmpError

if TYPE_CHECKING:
    from importlib import metadata


@dataclass
class Registered:
    """One registered name: loaded and checked on demand, or unavailable with `error` set."""

    name: str
    package: str
    target: str
    entry_point: metadata.EntryPoint | None = None
    error: str | None = None
    check: Callable[[Any, Registered], Any] = field(default=lambda obj, entry: obj, repr=False)

    @functools.cached_property
    def loaded(self) -> Any:
        if self.entry_point is None:
            raise LookupError(self.error)
        return self.check(self.entry_point.load(), self)

    def load(self) -> Any | None:
        """The checked object, or None with `error` set when it cannot be imported or checked."""
        if self.error is None:
            try:
                return self.loaded
            except Exception as exc:  # a third-party package may raise anything on import
                self.error = f"{type(exc).__name__}: {exc}"
        return None


def _package(ep: metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return dist.name if dist is not None else "<unknown package>"


def discover(
    group: str, what: str, check: Callable[[Any, Registered], Any] | None = None
) -> dict[str, Registered]:
    """Every name registered under `group`, sorted; `what` ("model", "engine") is for errors."""
    from importlib import metadata

    entries: dict[str, Registered] = {}
    for ep in metadata.entry_points(group=group):
        package = _package(ep)
        if ep.name in entries:
            first = entries[ep.name]
            if first.package == package and first.target == ep.value:
                continue  # the same distribution seen twice on sys.path
            first.entry_point = None
            first.error = (
                f"{what} name '{ep.name}' is registered by two packages: '{first.package}' "
                f"({first.target}) and '{package}' ({ep.value}); uninstall one of them"
            )
            continue
        entries[ep.name] = Registered(ep.name, package, ep.value, entry_point=ep)
        if check is not None:
            entries[ep.name].check = check  # dataclass default: the loaded object as it is
    return dict(sorted(entries.items()))


def suggestions(name: str, known: Iterable[str]) -> list[str]:
    """Known names that contain `name` (or it them), then close spellings: at most three."""
    known = list(known)
    folded = name.casefold()
    found = [k for k in known if folded and (folded in k.casefold() or k.casefold() in folded)]
    found += difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    return list(dict.fromkeys(found))[:3]


def load_named(entries: dict[str, Any], name: str, what: str) -> Any:
    """The loaded object registered as `name` among `entries` (anything with `load()`,
    `package` and `error`), or one clear error: unknown (with suggestions and the installed
    names) or unavailable (with the package and the reason)."""
    entry = entries.get(name)
    if entry is None:
        close = suggestions(name, entries)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise InfercmpError(
            f"unknown {what} '{name}'{hint} (installed {what}s: {', '.join(entries) or 'none'}; "
            f"see 'infercmp {what}s')"
        )
    loaded = entry.load()
    if loaded is None:
        raise InfercmpError(
            f"{what} '{name}' from package '{entry.package}' is unavailable: {entry.error}"
        )
    return loaded
