"""Module paths: every label becomes part of a dotted path in the generated module tree.

:class:`ModulePaths` reserves each path once and refuses what would make the generated module wrong
without an error: two modules of one name, a module inside a layer (a leaf label ``a`` beside a quoted
``"a.b"``), and labels that break the name rule of :func:`.names.check_identifier`.
"""
from __future__ import annotations

from typing import Any, Callable

from ..source import Span
from .names import check_identifier

__all__ = ["ModulePaths", "LEAVES"]

LEAVES = frozenset({"layer", "fused reparam conv"})   # module paths that cannot contain other modules


class ModulePaths:
    """The module paths claimed so far in one network, and what claimed them."""

    def __init__(self, err: Callable[..., Any]) -> None:
        self.err = err
        self._paths: dict[str, tuple[Span, str]] = {}      # path -> (span, what)
        self._inside: dict[str, tuple[str, Span]] = {}     # container path -> (a path below it, its span)

    def what(self, path: str) -> str | None:
        """What claimed ``path`` ('layer', 'block', 'group', ...), or None."""
        hit = self._paths.get(path)
        return hit[1] if hit is not None else None

    def label_problem(self, label: str, span: Span | None) -> bool:
        """Report a label (possibly dotted, from a quoted label) that cannot be a module name."""
        for part in label.split("."):
            p = check_identifier(part, "label")
            if p is not None:
                self.err(p.message, span, hint=p.hint)
                return True
        return False

    def claim(self, path: str, span: Span, what: str) -> None:
        """Reserve ``path``: two modules of one name, or a module inside a layer, are errors."""
        prev = self._paths.get(path)
        if prev is not None:
            self.err(f"two layers would be named '{path}'", span,
                     hint="give one of them a different label",
                     notes=[("the other one is here", prev[0])])
            return
        parts = path.split(".")
        for i in range(1, len(parts)):
            outer = ".".join(parts[:i])
            o = self._paths.get(outer)
            if o is not None and o[1] in LEAVES:
                self.err(f"'{path}' would be a module inside the layer '{outer}'", span,
                         hint="a layer holds its own weights, not other modules; rename one of them",
                         notes=[(f"'{outer}' is here", o[0])])
                return
        below = self._inside.get(path)
        if what in LEAVES and below is not None:
            self.err(f"the layer '{path}' would also be the container of '{below[0]}'", span,
                     hint="a layer holds its own weights, not other modules; rename one of them",
                     notes=[(f"'{below[0]}' is here", below[1])])
            return
        self._paths[path] = (span, what)
        for i in range(1, len(parts)):
            self._inside.setdefault(".".join(parts[:i]), (path, span))
