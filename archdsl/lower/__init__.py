"""Stage 2, lowering: AST -> shape-checked graph IR (evaluation, argument binding, elaboration)."""
from __future__ import annotations

from .elaborate import LayerSpec, TensorVal, lower_network, network_params

__all__ = ["LayerSpec", "TensorVal", "lower_network", "network_params"]
