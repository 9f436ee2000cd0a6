"""archdsl.importer: PyTorch models into specs, and the round trip that proves a spec is its model.

:func:`roundtrip` (check -> build -> strict load -> equal eval outputs, constants randomized first) and
:func:`randomize_constants` live in :mod:`archdsl.importer.roundtrip`. Torch is imported only when used.
"""
from __future__ import annotations

from .roundtrip import STAGES, RoundTrip, randomize_bn, randomize_constants, roundtrip

__all__ = ["RoundTrip", "STAGES", "roundtrip", "randomize_constants", "randomize_bn"]
