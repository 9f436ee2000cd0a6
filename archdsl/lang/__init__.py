"""Stage 1, the language: grammar, parser (text -> AST), syntax diagnostics, source bounds, the parse cache
and the loader (imports)."""
from __future__ import annotations

from .loader import Namespace, Program, find_specs, is_spec_text, load_program, load_source, read_source, split_address
from .parser import KEYWORDS, grammar_path, parse

__all__ = ["Namespace", "Program", "find_specs", "is_spec_text", "load_program", "load_source", "read_source",
           "split_address", "KEYWORDS", "grammar_path", "parse"]
