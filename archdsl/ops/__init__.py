"""The op registry: one :class:`OpDef` per op (signature, shape rule, parameters, MACs, emission, traits).

``core`` holds the machinery (OpDef, ArgSpec, traits, ``register``); ``nn`` registers the layers (conv,
linear, norms, pools, activations, dropout), ``nn3d`` the 3-D layers on videos and volumes [C, T, H, W],
``tensor`` the tensor ops (shape ops, reductions, merges), ``math`` tensor math, matmul, attention and free
parameters, ``sampling`` upsampling and transposed convs, ``layout`` select/repeat_interleave and the PyTorch
spellings of the multi-output ops (``MULTI_OUTPUT_FORMS``), ``fused`` addcmul (what deploy makes of a product
feeding a sum).

Each op's PyTorch spellings (``torch_forms``, read by the importer) are declared in its own ``OpDef``, next
to its shape rule; ``forms`` holds only the small readers those forms share.
"""
from __future__ import annotations

from . import nn as _nn  # noqa: F401  (registers the layer ops)
from . import nn3d as _nn3d  # noqa: F401  (registers the 3-D layer ops on [C, T, H, W])
from . import tensor as _tensor  # noqa: F401  (registers the tensor ops)
from . import math as _math  # noqa: F401  (registers tensor math, attention and free parameters)
from . import sampling as _sampling  # noqa: F401  (registers upsampling, transposed conv, pixel shuffle)
from . import index as _index  # noqa: F401  (registers Swin's relative position bias: an int64 index buffer)
from . import norms as _norms  # noqa: F401  (registers groupnorm, rmsnorm, normalize)
from . import seq as _seq  # noqa: F401  (registers conv1d and the 1-D pools on sequences [C, L])
from . import layout as _layout  # noqa: F401  (registers select and repeat_interleave)
from . import patches as _patches  # noqa: F401  (registers unfold and fold)
from . import einsum as _einsum  # noqa: F401  (registers einsum)
from . import mha as _mha  # noqa: F401  (registers multihead_attention)
from . import buffers as _buffers  # noqa: F401  (registers buffer, gather_rows, zeros_like)
from . import functional as _functional  # noqa: F401  (registers linear_fn, conv2d_fn: weights computed in forward)
from . import fused as _fused  # noqa: F401  (registers addcmul: t + a * b in one pass)
from .core import (MOD, OP_FAMILIES, OPS, REQUIRED, TRAITS, ArgSpec, ArgType, EmitArgs, In, Kw, Lit, OpDef,
                   ShapeError, broadcast, conv_out, has_trait, layer_scale_shape, ops_with, pool_out, register,
                   size_only_input)
from .batch import batched_output, check_batch_mix
from .layout import MULTI_OUTPUT_FORMS
from .tensor import HELPERS, MULTI_OUTPUT_OPS, size_helpers, wrap_unbatched

__all__ = ["REQUIRED", "ArgType", "ArgSpec", "OpDef", "OPS", "ShapeError", "OP_FAMILIES", "TRAITS", "register",
           "has_trait", "ops_with", "conv_out", "pool_out", "broadcast", "layer_scale_shape", "MULTI_OUTPUT_OPS",
           "HELPERS", "Lit", "In", "Kw", "MOD", "EmitArgs", "size_only_input", "size_helpers", "MULTI_OUTPUT_FORMS",
           "batched_output", "check_batch_mix", "wrap_unbatched"]
