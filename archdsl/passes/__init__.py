"""Stage 3, passes over the graph IR: analyses and rewrites (reparam proof, lint, summary, deploy)."""
from __future__ import annotations

__all__: list[str] = []
