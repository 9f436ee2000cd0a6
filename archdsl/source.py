"""Source files and spans: where every diagnostic and IR node points back to.

Also the two rules for echoing user text to a terminal (a leaf module, so every stage can use them):

- :func:`printable` escapes control characters (ANSI/OSC escape sequences, carriage returns, NULs,
  C1 controls, bidirectional overrides) as visible ``\\x1b``-style text, so nothing a spec or a file
  name contains can move the cursor, recolour, retitle or rewrite the user's terminal.
- :meth:`Span.snippet` shows at most :data:`EXCERPT_WIDTH` characters of a source line, a window
  around the caret with ``...`` where text was cut, so a 1 MB line is never echoed back whole.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Source", "Span", "printable", "EXCERPT_WIDTH", "BOM"]

EXCERPT_WIDTH = 120  # most characters of a source line a diagnostic shows
BOM = "\ufeff"

# C0 controls except tab, DEL, C1 controls, and the Unicode bidi/format controls that reorder text
# ("Trojan Source"); newline is escaped too: one diagnostic line must stay one terminal line.
_UNSAFE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _escape_char(m: re.Match[str]) -> str:
    c = ord(m.group())
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def printable(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with every control character shown as an escape (``"\\x1b[31m"`` -> ``\\x1b[31m``).

    ``keep_newlines`` leaves ``\\n`` alone (for multi-line text archdsl itself composed).
    """
    if keep_newlines:
        return "\n".join(_UNSAFE.sub(_escape_char, part) for part in text.split("\n"))
    return _UNSAFE.sub(_escape_char, text)


@dataclass(frozen=True)
class Source:
    """The text of one .arch file (or of a spec given as a string). A leading UTF-8 BOM is dropped."""

    text: str
    path: str = "<string>"
    lines: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.text.startswith(BOM):  # an editor's byte-order mark is not part of the spec
            object.__setattr__(self, "text", self.text[1:])
        # lines end at "\n" only, as the parser counts them (str.splitlines would also split at \f,
        # \x1c, \u2028, ... and point diagnostics at the wrong line); a CRLF file loses its "\r"
        parts = self.text.split("\n")
        if parts[-1] == "":
            parts.pop()
        object.__setattr__(self, "lines", tuple(p[:-1] if p.endswith("\r") else p for p in parts))

    @classmethod
    def from_file(cls, path: str | Path) -> "Source":
        """Read a UTF-8 file (with or without BOM). Size limits are checked by the loader, before this."""
        p = Path(path)
        return cls(p.read_text(encoding="utf-8-sig"), str(path))

    def line(self, n: int) -> str:
        """The 1-based line ``n`` (empty if out of range)."""
        return self.lines[n - 1] if 1 <= n <= len(self.lines) else ""


@dataclass(frozen=True)
class Span:
    """A 1-based line/column range inside a source."""

    source: Source
    line: int
    col: int
    end_line: int | None = None
    end_col: int | None = None

    @property
    def path(self) -> str:
        return self.source.path

    def location(self) -> str:
        """``file:line:col`` (the file name made printable)."""
        return f"{printable(self.source.path)}:{self.line}:{self.col}"

    def snippet(self) -> str:
        """The source line with a caret (and tildes) under the span, bounded and made printable."""
        text = self.source.line(self.line)
        if not text and self.line > len(self.source.lines):
            return ""
        col = max(1, self.col)
        width = 1
        if self.end_line == self.line and self.end_col is not None and self.end_col > col:
            width = self.end_col - col
        width = max(1, min(width, max(1, len(text) - col + 1)))
        # the window of the line that is shown: all of it when short, else EXCERPT_WIDTH around the caret
        start, end = 0, len(text)
        if len(text) > EXCERPT_WIDTH:
            start = max(0, min(col - 1 - EXCERPT_WIDTH // 3, len(text) - EXCERPT_WIDTH))
            end = start + EXCERPT_WIDTH
        head = "..." if start > 0 else ""
        tail = "..." if end < len(text) else ""
        before = printable(text[start: col - 1]) if col - 1 > start else ""
        marked = printable(text[col - 1: min(col - 1 + width, end)])
        after = printable(text[col - 1 + width: end]) if col - 1 + width < end else ""
        pad = " " * len(head) + "".join(ch if ch == "\t" else " " for ch in before)
        tildes = max(0, len(marked) - 1)
        return f"    {head}{before}{marked}{after}{tail}\n    {pad}^{'~' * tildes}"

    def __repr__(self) -> str:  # keep IR dumps short
        return f"Span({self.location()})"
