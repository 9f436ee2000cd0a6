"""Diagnostics: every user mistake becomes a located, explained, hinted message.

:meth:`Diagnostic.format` is the only place diagnostics become terminal text, and it passes every piece
that can hold user text (message, hint, notes, file names, the source excerpt) through
:func:`archdsl.source.printable`: control characters are shown as escapes, never sent raw.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Iterable, Literal

from .source import Span, printable

__all__ = ["Diagnostic", "ArchError", "Reporter", "did_you_mean"]

Severity = Literal["error", "warning", "note"]


@dataclass
class Diagnostic:
    """One message at one place: ``file:line:col: error: message`` + source + hint."""

    message: str
    span: Span | None = None
    severity: Severity = "error"
    hint: str | None = None
    notes: list[tuple[str, Span | None]] = field(default_factory=list)

    def format(self) -> str:
        """``file:line:col: error: message``, the source excerpt with a caret, notes and the hint.

        Safe to print to a terminal: user text is escaped (see the module docstring) and the excerpt
        is bounded (:data:`archdsl.source.EXCERPT_WIDTH`).
        """
        loc = self.span.location() + ": " if self.span else ""
        out = [f"{loc}{self.severity}: {printable(self.message, keep_newlines=True)}"]
        if self.span:
            snip = self.span.snippet()
            if snip:
                out.append(snip)
        for text, span in self.notes:
            where = span.location() + ": " if span else ""
            out.append(f"  {where}note: {printable(text, keep_newlines=True)}")
            if span and span.snippet():
                out.append(span.snippet())
        if self.hint:
            out.append(f"  hint: {printable(self.hint, keep_newlines=True)}")
        return "\n".join(out)

    def to_json(self) -> dict[str, object]:
        return {
            "severity": self.severity,
            "message": self.message,
            "file": self.span.path if self.span else None,
            "line": self.span.line if self.span else None,
            "col": self.span.col if self.span else None,
            "hint": self.hint,
        }


class ArchError(Exception):
    """Raised for an invalid spec; carries every diagnostic that was found."""

    def __init__(self, diagnostics: Iterable[Diagnostic] | Diagnostic | str, span: Span | None = None,
                 hint: str | None = None):
        if isinstance(diagnostics, str):
            diagnostics = [Diagnostic(diagnostics, span, hint=hint)]
        elif isinstance(diagnostics, Diagnostic):
            diagnostics = [diagnostics]
        self.diagnostics: list[Diagnostic] = list(diagnostics)
        super().__init__(self.format())

    def format(self) -> str:
        return "\n".join(d.format() for d in self.diagnostics)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]


class Reporter:
    """Collects diagnostics so that one run reports all of them, not only the first."""

    def __init__(self, max_errors: int = 100) -> None:
        self.diagnostics: list[Diagnostic] = []
        self.max_errors = max_errors
        self._seen: set[tuple[str, str | None, int | None, int | None]] = set()

    def add(self, diag: Diagnostic) -> None:
        key = (diag.message, diag.span.path if diag.span else None,
               diag.span.line if diag.span else None, diag.span.col if diag.span else None)
        if key in self._seen:  # the same error reached through two paths is reported once
            return
        self._seen.add(key)
        self.diagnostics.append(diag)
        if len(self.errors) >= self.max_errors:
            raise ArchError(self.diagnostics + [Diagnostic(
                f"too many errors ({self.max_errors}); stopping", None, "note")])

    def error(self, message: str, span: Span | None, hint: str | None = None) -> None:
        self.add(Diagnostic(message, span, "error", hint))

    def warning(self, message: str, span: Span | None, hint: str | None = None) -> None:
        self.add(Diagnostic(message, span, "warning", hint))

    def extend(self, err: ArchError) -> None:
        for d in err.diagnostics:
            self.add(d)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "warning"]

    def raise_if_errors(self) -> None:
        if self.errors:
            raise ArchError(self.diagnostics)


def did_you_mean(name: str, candidates: Iterable[str]) -> str | None:
    """A "did you mean 'x'?" hint for a misspelt ``name``, or None."""
    pool = sorted(set(candidates))
    lower = {c.lower(): c for c in pool}
    if name.lower() in lower and lower[name.lower()] != name:
        return f"did you mean '{lower[name.lower()]}'?"
    close = difflib.get_close_matches(name, pool, n=3, cutoff=0.6)
    if not close:
        return None
    if len(close) == 1:
        return f"did you mean '{close[0]}'?"
    return "did you mean " + ", ".join(f"'{c}'" for c in close[:-1]) + f" or '{close[-1]}'?"
