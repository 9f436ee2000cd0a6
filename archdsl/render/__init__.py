"""Stage 4, diagrams: graph IR -> Graphviz DOT / SVG / PNG / PDF and a self-contained HTML view."""
from __future__ import annotations

from .core import *  # noqa: F401,F403
from .core import __all__ as _core_all

__all__ = list(_core_all)
