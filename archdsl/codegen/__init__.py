"""Stage 4, code generation: graph IR -> PyTorch source (torch-free); building and deploying modules (torch)."""
from __future__ import annotations

from .emit import class_name, generate

__all__ = ["class_name", "generate"]
