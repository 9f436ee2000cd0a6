"""Built-in ops, fused math: ``addcmul`` (``t + a * b`` in one pass over memory) and the linear layer with its
activation or its residual sum as one kernel (``linear_act``, ``linear_add``).

The deploy rewrite (:func:`archdsl.passes.deploy.fuse_mul_add`) turns a product that feeds nothing but a sum
into this op: ConvNeXt V2's GRN (``weight * (x * nx) + bias + x``), a squeeze-excitation gate before its
residual sum. A product and a sum are two passes over the feature map, ``torch.addcmul`` one; on a CPU these
maps do not fit in cache, so the pass saved is time saved (timm writes GRN with ``torch.addcmul`` for this
reason). A spec may write it too, and the importer reads ``torch.addcmul(t, a, b)`` (``value=1``) as it.
"""
from __future__ import annotations

from typing import Any

from . import nn as _nn  # noqa: F401  (registers linear, whose signature, counts and module the fused forms share)
from .core import (MOD, OPS, ArgSpec, EmitArgs, Expr, In, Lit, OpDef, Shape, ShapeError, TensorArg, TorchCall,
                   broadcast, register)
from .forms import function_form, method_form
from .tensor import HELPERS

__all__: list[str] = []


def _addcmul_shape(shapes: list[Shape], a: dict[str, Any]) -> Shape:
    if len(shapes) != 3:
        raise ShapeError(f"addcmul takes 3 tensors (t, a, b), got {len(shapes)}",
                         hint="write addcmul(t, a, b) over named tensors: it is t + a * b")
    return broadcast(shapes, "addcmul")


def _addcmul_emit(e: EmitArgs) -> Expr:
    return ("torch.addcmul(", In(0), ", ", In(1), ", ", In(2), ")")


def _addcmul_form(call: TorchCall) -> dict[str, Any] | None:
    """``torch.addcmul(t, a, b)`` and ``t.addcmul(a, b)`` over three tensors, ``value`` 1 (another value
    scales the product: that is not this op)."""
    if len(call.args) != 3 or not all(isinstance(v, TensorArg) for v in call.args):
        return None
    if set(call.kwargs) - {"value"} or call.kwargs.get("value", 1) != 1:
        return None
    return {}


register(
    OpDef("addcmul", "math", [], _addcmul_shape,
          "t + a * b of three named tensors (broadcasting) in one pass: addcmul(t, a, b), torch.addcmul. The "
          "deploy form writes a product that only feeds a sum this way.",
          arity=3, emit=_addcmul_emit, unbatched_emit=_addcmul_emit, mixed_batch="broadcast",
          traits={"inplace-safe-producer"},
          torch_forms=(function_form("torch.addcmul", _addcmul_form), method_form("addcmul", _addcmul_form))),
)


# ---- linear + activation, linear + residual sum ----------------------------------------------------------
# The deploy rewrite (:func:`archdsl.passes.deploy.fuse_linear_pointwise`) turns a ``linear`` read only by a
# GELU/ReLU/SiLU into ``linear_act``, and one read only by a two-term sum into ``linear_add``. On the CPU,
# ``F.linear`` first writes its bias over the whole output (``addmm``), then the activation or the sum makes
# another pass over it; oneDNN's inner product applies both as the GEMM's epilogue (the kernel inductor picks
# for these pairs). bench/bench_fused_linear.py times it per layer (bench/results/fused_linear_cpu.md, 2 AVX-512
# cores: plain / fused median 1.13x; Swin-T's first-stage fc1 + GELU at batch 8, 25088x96 @ 96x384, 1.52x in fp32
# and 1.79x in bf16). The module stays an ``nn.Linear`` at the same path (same state_dict keys).
HELPERS["fused_linear"] = '''
_MKLDNN_LINEAR = torch.backends.mkldnn.is_available()
_MKLDNN_LINEAR_BF16 = _MKLDNN_LINEAR and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def _fused_linear_ok(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    # oneDNN's fused inner product has no backward, and is a CPU kernel for fp32 and bf16 only; traced,
    # exported and compiled code gets the plain ops (portable; inductor fuses the pair itself)
    if not _MKLDNN_LINEAR or torch.jit.is_tracing() or torch.compiler.is_compiling():
        return False
    if x.device.type != "cpu" or x.dtype != weight.dtype or (bias is not None and bias.dtype != x.dtype):
        return False
    if x.dtype != torch.float32 and not (x.dtype == torch.bfloat16 and _MKLDNN_LINEAR_BF16):
        return False
    return not (torch.is_grad_enabled()
                and (x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)))


def _linear_act(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, act: str,
                approximate: str) -> torch.Tensor:
    # act(F.linear(x, weight, bias)) with act one of gelu (approximate: none / tanh), relu, silu
    if not torch.jit.is_scripting():
        if _fused_linear_ok(x, weight, bias):
            return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "swish" if act == "silu" else act, [],
                                                      approximate if act == "gelu" else "")
    y = F.linear(x, weight, bias)
    if act == "gelu":
        return F.gelu(y, approximate=approximate)
    if act == "silu":
        return F.silu(y)
    return F.relu(y)


def _linear_add(x: torch.Tensor, other: torch.Tensor, weight: torch.Tensor,
                bias: torch.Tensor | None) -> torch.Tensor:
    # other + F.linear(x, weight, bias); the fused kernel does not broadcast: other must have the output's shape
    if not torch.jit.is_scripting():
        if (_fused_linear_ok(x, weight, bias) and other.dtype == x.dtype and other.device == x.device
                and other.shape[:-1] == x.shape[:-1] and other.shape[-1] == weight.shape[0]):
            return torch.ops.mkldnn._linear_pointwise.binary(x, other, weight, bias, "add")
    return other + F.linear(x, weight, bias)


# one call each for symbolic tracing (fx cannot branch on a traced tensor's device or dtype)
torch.fx.wrap("_linear_act")
torch.fx.wrap("_linear_add")
'''

LINEAR_ACTS = ("gelu", "relu", "silu")
# linear's own entry: the fused forms take its arguments, shape rule, parameter and MAC counts and nn.Linear
# constructor; of its traits all but "fusable-linear" (the reparam/BN algebra runs before they exist)
_LINEAR = OPS["linear"]
_LINEAR_TRAITS = _LINEAR.traits - {"fusable-linear"}


def _linear_act_emit(e: EmitArgs) -> Expr:
    return ("_linear_act(", In(0), ", ", MOD, ".weight, ", MOD, ".bias, ", Lit(e.args["act"], "act"), ", ",
            Lit(e.args["approximate"], "approximate"), ")")


def _linear_add_shape(shapes: list[Shape], a: dict[str, Any]) -> Shape:
    if len(shapes) != 2:
        raise ShapeError(f"linear_add takes 2 tensors (x, other), got {len(shapes)}",
                         hint="linear_add(x, other, out_features) is other + linear(x)")
    out = _LINEAR.shape(shapes[:1], a)
    if tuple(shapes[1]) != tuple(out):
        raise ShapeError(f"linear_add's other term {list(shapes[1])} is not of the output's shape {list(out)}",
                         hint="the sum must not broadcast: give both terms the same shape")
    return out


def _linear_add_emit(e: EmitArgs) -> Expr:
    return ("_linear_add(", In(0), ", ", In(1), ", ", MOD, ".weight, ", MOD, ".bias)")


register(
    OpDef("linear_act", "linear",
          [*_LINEAR.args, ArgSpec("act", "str", "gelu", LINEAR_ACTS),
           ArgSpec("approximate", "str", "none", ("none", "tanh"))], _LINEAR.shape,
          "act(linear(x)) in one kernel on the CPU (oneDNN's inner product with the activation as its "
          "epilogue; the plain ops elsewhere, under autograd, tracing and torch.compile): gelu (approximate "
          "none/tanh), relu or silu. The deploy form writes a linear read only by that activation this way; "
          "the module is an nn.Linear.",
          params=_LINEAR.params, macs=_LINEAR.macs, stateful=True, key_args=("out_features", "act"),
          ctor=_LINEAR.ctor, emit=_linear_act_emit, traits=_LINEAR_TRAITS, helpers=("fused_linear",)),
    OpDef("linear_add", "linear", list(_LINEAR.args), _linear_add_shape,
          "other + linear(x) in one kernel on the CPU (the sum as the GEMM's epilogue; the plain ops elsewhere): "
          "linear_add(x, other, out_features). The deploy form writes a linear read only by a residual sum this "
          "way; the module is an nn.Linear.",
          arity=2, params=_LINEAR.params, macs=_LINEAR.macs, stateful=True,
          key_args=("out_features",), ctor=_LINEAR.ctor, emit=_linear_add_emit, traits=_LINEAR_TRAITS,
          helpers=("fused_linear",)),
)
