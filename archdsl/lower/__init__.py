"""Stage 2, lowering: AST -> shape-checked graph IR (evaluation, argument binding, elaboration)."""
from __future__ import annotations

from .elaborate import lower_network, network_params, span_from_loc
from .names import NameProblem, check_identifier, class_name
from .values import LayerSpec, TensorVal

__all__ = ["LayerSpec", "TensorVal", "lower_network", "network_params", "span_from_loc", "check_identifier",
           "class_name", "NameProblem"]
