"""One small generic registry, so every pluggable thing can be listed (``slimship list``).

Entries are registered explicitly by the module that defines them; nothing is discovered by import side
effects beyond the module being imported by its package ``__init__``.

Example::

    SOURCES = Registry("data source")

    @SOURCES.register("idx", help="MNIST-style idx files (plain or .gz)")
    def load_idx(...): ...

    SOURCES.get("idx")          # the function
    SOURCES.list()              # [Entry(name="idx", help=..., obj=...)]
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Callable, Generic, TypeVar

from slimship.core.errors import SlimshipError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    obj: T
    help: str = ""


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, help: str = "") -> Callable[[T], T]:
        def deco(obj: T) -> T:
            self.add(name, obj, help)
            return obj

        return deco

    def add(self, name: str, obj: T, help: str = "") -> None:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} registered twice")
        self._entries[name] = Entry(name, obj, help)

    def get(self, name: str) -> T:
        try:
            return self._entries[name].obj
        except KeyError:
            close = difflib.get_close_matches(name, self._entries, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise SlimshipError(
                f"unknown {self.kind} {name!r}{hint}; available: {', '.join(sorted(self._entries))}"
            ) from None

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def names(self) -> list[str]:
        return list(self._entries)

    def list(self) -> list[Entry[T]]:
        return list(self._entries.values())

