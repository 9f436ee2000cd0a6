"""Stage 1, the language: grammar, parser (text -> AST), syntax diagnostics and the loader (imports)."""
from __future__ import annotations

from .loader import Namespace, Program, find_specs, load_program, load_source, split_address
from .parser import KEYWORDS, parse

__all__ = ["Namespace", "Program", "find_specs", "load_program", "load_source", "split_address", "KEYWORDS", "parse"]
