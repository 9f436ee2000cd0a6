"""Where an import fails, and classes kept whole automatically because of it.

A module whose class the importer cannot see through — data-dependent control flow, a module called twice
(shared weights), an op the language lacks, a reshape across the batch — does not fail the whole model:
the smallest enclosing module that can be kept (called once, one tensor in, one tensor out, not the root)
becomes a plugin op (:mod:`.plugin`), and the spec and ``archc import`` say so with the reason and the
source line (``kept whole: blocks.3 (mymodel.Mixer): data-dependent control flow ... at mymodel.py:12``).
``auto_keep=False`` (``archc import --no-auto-keep``) makes each such module an error instead.

When nothing can be kept — the problem is in the root's own ``forward``, or in a module it calls with
several tensors or more than once (traced as part of the root) — the report names the module the failing
code belongs to (its path and class) and the source line.

Locations come from the trace: the tracer marks each fx node with the user's source line
(:func:`mark_node`) and an exception raised while tracing with the innermost module it was raised in
(:func:`note_module`); an fx node knows its module from ``meta["nn_module_stack"]``.
"""
from __future__ import annotations

import math
import os
import traceback
from dataclasses import dataclass
from typing import Any, TypeVar

from ..errors import ArchError
from .concrete import skipped_dirs, user_line

__all__ = ["Where", "mark_node", "note_module", "where_traced", "where_node", "locate", "where_of",
           "kept_lines", "cannot_import", "root_failure", "finite", "ROOT_HINT"]

_ATTR = "_archdsl_where"     # read by ImportFailure.__str__ (trace.py) too
E = TypeVar("E", bound=BaseException)


@dataclass(frozen=True)
class Where:
    """The module a failure belongs to (its path under the traced module, its class) and the source line."""

    path: str = ""
    cls: str = ""
    line: str | None = None

    def under(self, base: str, base_cls: str = "") -> "Where":
        """This place with its path taken from the model's root (``base``: the traced module's path, of class
        ``base_cls``: the place when the failure is in its own forward)."""
        path = ".".join(p for p in (base, self.path) if p)
        return Where(path, self.cls if self.path else (self.cls or base_cls), self.line)

    def text(self) -> str:
        """`` at file.py:LINE`` (or nothing)."""
        return f" at {self.line}" if self.line else ""


def mark_node(node: Any) -> None:
    """Remember on ``node`` the user's source line it was traced from."""
    node.meta["archdsl_line"] = user_line()


def note_module(e: BaseException, path: str, cls: str) -> None:
    """Mark ``e`` (raised while tracing) with the innermost module it went through (the first mark wins)."""
    if getattr(e, _ATTR, None) is None:
        try:
            setattr(e, _ATTR, Where(path, cls, _tb_line(e)))
        except AttributeError:     # an exception type without a __dict__
            pass


def _tb_line(e: BaseException) -> str | None:
    skip = skipped_dirs()
    line = None
    for fr in traceback.extract_tb(e.__traceback__):
        path = os.path.abspath(fr.filename)
        if not path.startswith(skip) and not fr.filename.startswith("<"):
            line = f"{os.path.basename(path)}:{fr.lineno}"
    return line


def where_traced(e: BaseException) -> Where:
    """Where an exception raised while tracing came from (the traced module itself when unmarked)."""
    w = getattr(e, _ATTR, None)
    return w if isinstance(w, Where) else Where("", "", _tb_line(e))


def where_node(n: Any) -> Where:
    """Where an fx node came from: the innermost module it was traced in (``nn_module_stack``) and its line."""
    stack = list((n.meta.get("nn_module_stack") or {}).values())
    if stack and n.op == "call_module" and stack[-1][0] == n.target:
        stack.pop()         # the module called: the failure is in the code that calls it
    path, cls = "", ""
    if stack:
        path, typ = stack[-1]
        cls = typ if isinstance(typ, str) else f"{typ.__module__}.{typ.__qualname__}"
    return Where(str(path), cls, n.meta.get("archdsl_line"))


def locate(e: E, w: Where) -> E:
    """``e`` marked with ``w`` (unless already marked); returns ``e``."""
    if getattr(e, _ATTR, None) is None:
        setattr(e, _ATTR, w)
    return e


def where_of(e: BaseException) -> Where | None:
    """The place ``e`` was marked with, if any."""
    w = getattr(e, _ATTR, None)
    return w if isinstance(w, Where) else None


def finite(v: Any) -> bool:
    """Whether the numbers in ``v`` (an op's arguments: dicts, lists, numbers) are finite: a spec cannot write
    ``inf`` or ``nan``."""
    if isinstance(v, float):
        return math.isfinite(v)
    if isinstance(v, dict):
        return all(finite(x) for x in v.values())
    if isinstance(v, (list, tuple)):
        return all(finite(x) for x in v)
    return True


def kept_lines(kept: dict[str, str], classes: dict[str, str]) -> list[str]:
    """One line per module kept whole: ``PATH (CLASS): why`` (``classes``: path -> class name)."""
    return [" ".join(f"{path} ({classes.get(path, '?')}): {why}".split()) for path, why in kept.items()]


def cannot_import(path: str, cls: str, why: str, *, keep_hint: bool = False) -> ArchError:
    """The error for module ``path`` (class ``cls``) that cannot be imported nor kept whole (``keep_hint``:
    it could be, but ``auto_keep`` is off)."""
    hint = "without --no-auto-keep it is kept whole as a plugin op" if keep_hint else ROOT_HINT
    return ArchError(f"module '{path}' ({cls}) cannot be imported: {why}", None, hint=hint)


#: why a module traced as part of its caller was not kept whole (the importer retries with its class kept
#: when auto_keep is on: :mod:`.bound`)
ROOT_HINT = ("it is traced as part of its caller (called with other arguments than one tensor, or more than once); "
             "its class can be kept whole only when each of its modules is called once, with at most one tensor "
             "(and sizes), giving one tensor (and sizes)")


def root_failure(model_cls: str, why: str, where: Where) -> ArchError:
    """The error for a failure in the model's own forward (``model_cls``: its class) or in code traced as part
    of it (a module called with several tensors or more than once): the module the failing code belongs to
    and the line."""
    if where.path:
        return ArchError(f"module '{where.path}' ({where.cls}) cannot be imported: {why}", None,
                         hint=ROOT_HINT)
    return ArchError(f"the model ({model_cls}) cannot be imported: {why}", None)
