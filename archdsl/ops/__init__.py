"""The op registry: one :class:`OpDef` per built-in op (signature, shape rule, parameters, MACs, emission)."""
from __future__ import annotations

from .core import *  # noqa: F401,F403
from .core import __all__ as _core_all

__all__ = list(_core_all)
