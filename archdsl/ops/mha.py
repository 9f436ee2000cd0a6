"""Built-in op ``multihead_attention``: nn.MultiheadAttention as self-attention over tokens ``[N, E]``.

One input (query = key = value), the attention output only (not the weights). The module is built with
``batch_first=True`` (samples are batch-first everywhere in archdsl) and keeps nn.MultiheadAttention's own
state_dict keys: ``in_proj_weight`` (3E, E), ``in_proj_bias`` (3E), ``out_proj.weight``, ``out_proj.bias``.
MACs are fvcore's count of the module's default call ``attn(x, x, x)`` (need_weights=True: the attention as
two bmms): the input and output projections (4 N E^2) and the two attention matmuls (2 N^2 E), as
``scaled_dot_product_attention`` counts them. The generated call passes ``need_weights=False`` (same output,
fused SDPA), which fvcore does not see, as it does not see timm's fused attention: the count is the unfused one.
"""
from __future__ import annotations

from typing import Any

from .core import (MOD, ArgSpec, EmitArgs, Expr, In, Kw, Lit, OpDef, Shape, ShapeError, TensorArg, TorchCall,
                   TorchForm, register)
from .forms import call_arg

__all__: list[str] = []


def _mha_shape(shapes: list[Shape], a: dict[str, Any]) -> Shape:
    s = shapes[0]
    if len(s) != 2:
        raise ShapeError(f"multihead_attention expects tokens [N, E], got {list(s)}",
                         hint="flatten a map to tokens first: flatten(2) -> transpose(1, 2) makes [H*W, C]"
                         if len(s) == 3 else None)
    e, h = s[1], a["num_heads"]
    if h < 1:
        raise ShapeError(f"num_heads must be positive, got {h}", arg="num_heads")
    if e % h:
        raise ShapeError(f"num_heads={h} does not divide the embedding dim {e} of {list(s)}", arg="num_heads",
                         hint="divisors of the embedding dim: " + ", ".join(str(d) for d in range(1, e + 1)
                                                                           if e % d == 0 and d <= 64))
    if not 0.0 <= a["dropout"] < 1.0:
        raise ShapeError(f"dropout must be in [0, 1), got {a['dropout']}", arg="dropout")
    return s


def _mha_params(shapes: list[Shape], a: dict[str, Any]) -> int:
    e = shapes[0][-1]
    return 4 * e * e + (4 * e if a["bias"] else 0)


def _mha_macs(shapes: list[Shape], out: Shape, a: dict[str, Any]) -> int:
    n, e = shapes[0]
    return 4 * n * e * e + 2 * n * n * e


def _mha_ctor(e: EmitArgs) -> Expr:
    a = e.args
    return ("nn.MultiheadAttention(", Lit(e.in_shapes[0][-1], "embed_dim"), ", ", Lit(a["num_heads"], "num_heads"),
            Kw("dropout", float(a["dropout"]), 0.0), Kw("bias", a["bias"], True), ", batch_first=True)")


def _mha_form(c: TorchCall) -> dict[str, Any] | None:
    """A self-attention call ``mha(x, x, x)`` without masks; its result's first item is this op."""
    m = c.module
    q, k, v = (call_arg(c, i, n) for i, n in enumerate(("query", "key", "value")))
    if not (isinstance(q, TensorArg) and q == k == v):
        return None   # cross-attention: query, key and value differ
    for i, name in ((3, "key_padding_mask"), (5, "attn_mask")):
        if call_arg(c, i, name, None) is not None:
            return None
    if call_arg(c, 7, "is_causal", False):
        return None
    if m.bias_k is not None or m.add_zero_attn or not m._qkv_same_embed_dim:
        raise ShapeError("MultiheadAttention with add_bias_kv, add_zero_attn or kdim/vdim other than embed_dim")
    if c.batch_axes[q.k] != (0 if m.batch_first else 1):
        raise ShapeError(f"MultiheadAttention(batch_first={m.batch_first}) on an input whose batch axis is dim "
                         f"{c.batch_axes[q.k]}")
    return {"num_heads": int(m.num_heads), "bias": m.in_proj_bias is not None, "dropout": float(m.dropout)}


register(
    OpDef("multihead_attention", "math",
          [ArgSpec("num_heads", "int"), ArgSpec("bias", "bool", True), ArgSpec("dropout", "float", 0.0)], _mha_shape,
          "Self-attention over tokens [N, E] as nn.MultiheadAttention (query = key = value = the input; the "
          "attention output, not the weights); E is inferred. State: in_proj_weight/in_proj_bias, out_proj.",
          params=_mha_params, macs=_mha_macs, stateful=True, aliases=("mha",), key_args=("num_heads",),
          ctor=_mha_ctor, emit=lambda e: (MOD, "(", In(0), ", ", In(0), ", ", In(0), ", need_weights=False)[0]"),
          traits={"stateful-module", "layout-sensitive", "nested-state"},
          torch_forms=(TorchForm("module", "torch.nn.MultiheadAttention", _mha_form),)),
)
