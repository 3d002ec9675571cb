"""The one name -> preset / factory table every family uses (GPT, RAR and tokenizer presets, frozen encoders)."""

from __future__ import annotations

from typing import Mapping, TypeVar

from vfmtok.utils.errors import VFMTokError

T = TypeVar("T")


class Registry(dict[str, T]):
    """A dict of named entries whose `pick(name)` fails in one line naming every known entry."""

    def __init__(self, kind: str, entries: Mapping[str, T] | None = None, sort_names: bool = False):
        super().__init__(entries or {})
        self.kind = kind
        self.sort_names = sort_names

    def names(self) -> list[str]:
        """The registered names (sorted when asked, else in registration order)."""
        return sorted(self) if self.sort_names else list(self)

    def pick(self, name: str) -> T:
        """The entry `name`, or VFMTokError("unknown <kind> 'name'; known: a, b, c")."""
        if name not in self:
            raise VFMTokError(f"unknown {self.kind} '{name}'; known: {', '.join(self.names())}")
        return self[name]
