"""The op registry: one :class:`OpDef` per op (signature, shape rule, parameters, MACs, emission, traits).

``core`` holds the machinery (OpDef, ArgSpec, traits, ``register``); ``nn`` registers the layers (conv,
linear, norms, pools, activations, dropout), ``tensor`` the tensor ops (shape ops, reductions, merges),
``math`` tensor math, matmul, attention and free parameters, ``sampling`` upsampling and transposed convs.
"""
from __future__ import annotations

from . import nn as _nn  # noqa: F401  (registers the layer ops)
from . import tensor as _tensor  # noqa: F401  (registers the tensor ops)
from . import math as _math  # noqa: F401  (registers tensor math, attention and free parameters)
from . import sampling as _sampling  # noqa: F401  (registers upsampling, transposed conv, pixel shuffle)
from . import index as _index  # noqa: F401  (registers Swin's relative position bias: an int64 index buffer)
from . import pytorch as _pytorch  # noqa: F401,E402  (the PyTorch spellings of the ops above)
from .core import (MOD, OP_FAMILIES, OPS, REQUIRED, TRAITS, ArgSpec, ArgType, EmitArgs, In, Kw, Lit, OpDef,
                   ShapeError, broadcast, conv_out, has_trait, layer_scale_shape, ops_with, pool_out, register,
                   size_only_input)
from .tensor import HELPERS, MULTI_OUTPUT_OPS, size_helpers

__all__ = ["REQUIRED", "ArgType", "ArgSpec", "OpDef", "OPS", "ShapeError", "OP_FAMILIES", "TRAITS", "register",
           "has_trait", "ops_with", "conv_out", "pool_out", "broadcast", "layer_scale_shape", "MULTI_OUTPUT_OPS",
           "HELPERS", "Lit", "In", "Kw", "MOD", "EmitArgs", "size_only_input", "size_helpers"]
