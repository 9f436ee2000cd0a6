"""Naming scopes: the module path prefix and position counter of the container being filled."""
from __future__ import annotations

from ..ir import ScopeFrame

__all__ = ["Scope"]


class Scope:
    """A naming container: module path prefix, position counter and hierarchy frames."""

    def __init__(self, prefix: str, frames: list[ScopeFrame]):
        self.prefix = prefix
        self.counter = 0
        self.frames = frames

    def child(self, name: str, frame: ScopeFrame) -> "Scope":
        return Scope(self.prefix + name + ".", self.frames + [frame])

    def next_name(self, label: str | None) -> str:
        """The label, or the next position number when unlabelled (every layer takes a position)."""
        idx = self.counter
        self.counter += 1
        return label if label is not None else str(idx)
