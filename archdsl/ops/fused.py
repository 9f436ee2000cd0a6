"""Built-in ops, fused element-wise math: ``addcmul`` (``t + a * b`` in one pass over memory).

The deploy rewrite (:func:`archdsl.passes.deploy.fuse_mul_add`) turns a product that feeds nothing but a sum
into this op: ConvNeXt V2's GRN (``weight * (x * nx) + bias + x``), a squeeze-excitation gate before its
residual sum. A product and a sum are two passes over the feature map, ``torch.addcmul`` one; on a CPU these
maps do not fit in cache, so the pass saved is time saved (timm writes GRN with ``torch.addcmul`` for this
reason). A spec may write it too, and the importer reads ``torch.addcmul(t, a, b)`` (``value=1``) as it.
"""
from __future__ import annotations

from typing import Any

from .core import EmitArgs, Expr, In, OpDef, Shape, ShapeError, TensorArg, TorchCall, broadcast, register
from .forms import function_form, method_form

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
