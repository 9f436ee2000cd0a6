"""Stage 5, code generation: graph IR -> PyTorch source (torch-free: emit, units, program, render, names);
building modules from it (build, torch) and the runtime deploy (deploy, weights)."""
from __future__ import annotations

from .emit import GenerationError, class_name, generate

__all__ = ["GenerationError", "class_name", "generate"]
