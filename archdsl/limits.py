"""Resource bounds on evaluating a spec (a leaf module)."""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Iterable

from .errors import ArchError, did_you_mean

__all__ = ["Limits"]


@dataclass(frozen=True)
class Limits:
    """Resource bounds: a spec that would expand past these stops with an error, before any weight.

    Every bound is checked while the spec is expanded, so a runaway spec fails in bounded time and
    memory (well under 2 s with the defaults). Override them from the API (``Limits(max_nodes=50_000)``)
    or the CLI (``archc check --limit max_nodes=50000``); ``docs/diagnostics.md`` lists them.
    """

    max_nodes: int = 10_000       # graph nodes; the specs in specs/ need at most about 1,000
    max_depth: int = 64           # nested block instantiations (catches recursive blocks)
    max_repeat: int = 10_000      # items made by one repetition, range(...), or list comprehension
    max_channels: int = 1 << 20   # any single dimension of any shape
    max_params: int = 20_000_000_000
    max_steps: int = 500_000      # expression evaluations; big specs need ~5,000 (catches huge loops)
    max_files: int = 256          # files reachable through imports
    # bounds on one source file, checked before it is parsed (parsing costs ~0.3 ms a line; see
    # archdsl/lang/bounds.py): the largest file in specs/ has 7.4 kB, 167 lines, lines of 145 characters
    max_source_bytes: int = 262_144  # size of one .arch file (checked before it is read)
    max_source_lines: int = 5_000    # lines of one .arch file
    max_source_tokens: int = 30_000  # tokens of a spec and the files it imports (specs/: at most 1,911)
    max_line_length: int = 4_000     # characters of one line
    max_nesting: int = 32            # indentation levels; the AST may nest twice as deep (specs/ needs 14)
    max_number_digits: int = 100     # characters of one number literal
    max_value_size: int = 100_000  # one value worked through by str, ==, sum, min/max: list items (nested
                                  # lists counted through) + string characters; also any string's length
    max_int_bits: int = 4096      # any integer value (repeated squaring); floats must stay finite
    # numbers in one list argument of an op (a buffer's values=[...]: each becomes a literal in the generated
    # code); the ops of specs/ take at most a few dozen
    max_literal_values: int = 4096
    max_render_nodes: int = 2_500  # boxes + frames a diagram may hand to Graphviz (its layout is superlinear)
    max_render_edges: int = 5_000  # edges a diagram may hand to Graphviz
    # boxes + edge bends on the widest rank of the layout: Graphviz's crossing minimization grows much faster
    # than the width (dense DAGs of 20/24 convs, widths 101/145, take 3-5/14-40 s of CPU; of 64 convs, width
    # 1,025, minutes); the widest view of specs/ and examples/ has 41
    max_render_width: int = 100
    max_render_seconds: int = 20   # wall time `dot` may take before it is stopped (a backstop under 30 s)

    @classmethod
    def names(cls) -> list[str]:
        """The names accepted by :meth:`with_overrides` (and ``--limit``)."""
        return [f.name for f in fields(cls)]

    def with_overrides(self, items: Iterable[str]) -> "Limits":
        """A copy with ``name=value`` overrides (from ``--limit``); bad input is an :class:`ArchError`."""
        changes: dict[str, int] = {}
        for it in items:
            name, sep, value = it.partition("=")
            name = name.strip()
            if not sep:
                raise ArchError(f"--limit expects name=value, got '{it}'", None,
                                hint="e.g. --limit max_nodes=50000")
            if name not in self.names():
                raise ArchError(f"unknown limit '{name}'", None,
                                hint=did_you_mean(name, self.names()) or "limits: " + ", ".join(self.names()))
            try:
                n = int(value.strip().replace("_", ""))
            except ValueError:
                raise ArchError(f"--limit {name} expects a positive integer, got '{value.strip()}'", None) from None
            if n <= 0:
                raise ArchError(f"--limit {name} expects a positive integer, got {n}", None)
            changes[name] = n
        return replace(self, **changes)
