"""Source files and spans: where every diagnostic and IR node points back to."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Source", "Span"]


@dataclass(frozen=True)
class Source:
    """The text of one .arch file (or of a spec given as a string)."""

    text: str
    path: str = "<string>"
    lines: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "lines", tuple(self.text.splitlines()))

    @classmethod
    def from_file(cls, path: str | Path) -> "Source":
        p = Path(path)
        return cls(p.read_text(encoding="utf-8"), str(path))

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
        return f"{self.source.path}:{self.line}:{self.col}"

    def snippet(self) -> str:
        """The source line with a caret (and tildes) under the span."""
        text = self.source.line(self.line)
        if not text and self.line > len(self.source.lines):
            return ""
        width = 1
        if self.end_line == self.line and self.end_col is not None and self.end_col > self.col:
            width = self.end_col - self.col
        width = max(1, min(width, max(1, len(text) - self.col + 1)))
        pad = "".join(ch if ch == "\t" else " " for ch in text[: self.col - 1])
        return f"    {text}\n    {pad}^{'~' * (width - 1)}"

    def __repr__(self) -> str:  # keep IR dumps short
        return f"Span({self.location()})"
