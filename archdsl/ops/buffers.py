"""Built-in ops, buffers and gathers: ``buffer`` (a registered constant), ``gather_rows`` (``table[index]``) and
``zeros_like``.

A buffer is a value without the batch axis (see :mod:`archdsl.ops.batch`) bound to a name, which is its
state_dict key when it is persistent: index tables (Swin's and BEiT's ``relative_position_index``), masks,
fixed filters, constants. Its values come from a fixed table of data-only initializers (:data:`BUFFER_INITS`),
never from code in a spec: ``zeros``, ``ones``, ``arange``, ``values=[...]`` (finite numbers, at most
``Limits.max_literal_values`` of them, written into the generated code as a repr literal), the relative
position indexes of a window, rotary position embedding tables (:mod:`archdsl.ops.rotary`), or ``loaded``
(zeros until a checkpoint fills it: persistent only).
"""
from __future__ import annotations

import math
from typing import Any

from .core import (MOD, ArgSpec, EmitArgs, Expr, In, Lit, OpDef, Shape, ShapeError, TensorArg, TorchCall,
                   TorchForm, _same, register)
from .rotary import ROTARY_DEFAULTS, ROTARY_INITS, rotary_ctor, rotary_norm
from .tensor import HELPERS

__all__ = ["BUFFER_INITS", "BUFFER_DTYPES", "relative_position_index"]

#: How a buffer gets its values (its ``init=``): a fixed table, each entry data only.
BUFFER_INITS: dict[str, str] = {
    "zeros": "all zeros",
    "ones": "all ones",
    "arange": "0, 1, 2, ... in row-major order (torch.arange(numel).reshape(shape))",
    "values": "the numbers given by values=[...] (flat in row-major order, or nested as the shape)",
    "relative_position_index": "Swin's index of the relative position of every (query, key) pair of a "
                               "window=[h, w] window into a ((2h-1)*(2w-1), heads) table: shape [h*w, h*w] "
                               "(timm) or [h*w*h*w] (torchvision)",
    "relative_position_index_cls": "BEiT's index (timm gen_relative_position_index): the window's pairs as "
                                   "above plus a class token, [h*w+1, h*w+1] into a table of "
                                   "(2h-1)*(2w-1)+3 rows",
    "rotary_sin_cos": "timm's rotary position embedding of a window=[h, w] grid of patches (RotaryEmbeddingCat, "
                      "EVA-02): sin then cos, [h*w, 8*bands]; temperature=, ref_window=, offset=, rotate_half=, "
                      "indexing=\"ij\"|\"xy\" as timm's build_rotary_pos_embed(in_pixels=False)",
    "rotary_sin": "the sin half of rotary_sin_cos, [h*w, 4*bands] (timm RotaryEmbedding.pos_embed_sin)",
    "rotary_cos": "the cos half of rotary_sin_cos, [h*w, 4*bands] (timm RotaryEmbedding.pos_embed_cos)",
    "loaded": "zeros until a checkpoint fills it (persistent buffers only): a build without weights has zeros",
}
#: The element types a buffer may have, as torch spells them (trusted text, never spec text).
BUFFER_DTYPES: dict[str, str] = {"float32": "torch.float32", "int64": "torch.int64", "bool": "torch.bool"}

HELPERS["relative_position_index"] = '''
def _relative_position_index(win_h: int, win_w: int, cls_token: bool = False) -> torch.Tensor:
    # timm get_relative_position_index / torchvision define_relative_position_index; with a class token,
    # timm's BEiT gen_relative_position_index (three more table rows: cls->token, token->cls, cls->cls)
    coords = torch.stack(torch.meshgrid(torch.arange(win_h), torch.arange(win_w), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).contiguous()
    rel[:, :, 0] += win_h - 1
    rel[:, :, 1] += win_w - 1
    rel[:, :, 0] *= 2 * win_w - 1
    index = rel.sum(-1)
    if not cls_token:
        return index
    rows = (2 * win_h - 1) * (2 * win_w - 1) + 3
    out = torch.zeros((win_h * win_w + 1,) * 2, dtype=index.dtype)
    out[1:, 1:] = index
    out[0, 0:] = rows - 3
    out[0:, 0] = rows - 2
    out[0, 0] = rows - 1
    return out
'''


def relative_position_index(win_h: int, win_w: int, cls_token: bool = False) -> list[int]:
    """The relative position index of a ``win_h`` x ``win_w`` window, row-major (what the generated helper
    computes), for checks and tests without torch."""
    n = win_h * win_w
    idx = [((i // win_w) - (j // win_w) + win_h - 1) * (2 * win_w - 1) + (i % win_w) - (j % win_w) + win_w - 1
           for i in range(n) for j in range(n)]
    if not cls_token:
        return idx
    rows = (2 * win_h - 1) * (2 * win_w - 1) + 3
    out = [rows - 1] + [rows - 3] * n
    for i in range(n):
        out += [rows - 2] + idx[i * n:(i + 1) * n]
    return out


def _flat(v: Any, depth: int = 0) -> list[Any]:
    if isinstance(v, (list, tuple)):
        if depth > 8:
            raise ShapeError("buffer values nest more than 8 lists deep", arg="values")
        return [x for item in v for x in _flat(item, depth + 1)]
    return [v]


def _check_value(v: Any, dtype: str) -> None:
    if dtype == "bool":
        if not isinstance(v, bool):
            raise ShapeError(f"buffer values of dtype \"bool\" must be true or false, got {v!r}", arg="values")
        return
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ShapeError(f"buffer values must be numbers, got {v!r}", arg="values")
    if dtype == "int64":
        if not isinstance(v, int):
            raise ShapeError(f"buffer values of dtype \"int64\" must be integers, got {v!r}", arg="values",
                             hint="use dtype=\"float32\" for fractions")
        if not -(1 << 63) <= v < (1 << 63):
            raise ShapeError(f"buffer value {v} does not fit in int64", arg="values")
    elif not math.isfinite(v) or abs(v) > 3.4e38:
        raise ShapeError(f"buffer value {v!r} is not a finite float32", arg="values")


def _buffer_norm(shapes: list[Shape], a: dict[str, Any]) -> dict[str, Any]:
    a = dict(a)
    shape = a["shape"]
    if not shape or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
        raise ShapeError(f"buffer needs its shape as a non-empty list of positive integers, got {shape}", arg="shape",
                         hint="e.g. buffer([49, 49], dtype=\"int64\", init=\"relative_position_index\", window=7)")
    a["shape"] = tuple(shape)
    numel = math.prod(shape)
    init, dtype, values = a["init"], a["dtype"], a["values"]
    if values is not None:
        if init not in ("zeros", "values"):
            raise ShapeError(f"buffer values=[...] gives the values; init=\"{init}\" would too", arg="init",
                             hint="leave init out when giving values")
        flat = _flat(values)
        if len(flat) != numel:
            raise ShapeError(f"buffer values has {len(flat)} numbers but the shape {list(shape)} holds {numel}",
                             arg="values", hint="give every value, row-major (flat or nested as the shape)")
        for v in flat:
            _check_value(v, dtype)
        a["init"], a["values"] = "values", tuple(float(v) if dtype == "float32" else v for v in flat)
    elif init == "values":
        raise ShapeError("buffer init=\"values\" needs values=[...]", arg="init")
    init = a["init"]
    if init == "arange" and dtype == "bool":
        raise ShapeError("buffer init=\"arange\" makes numbers, not booleans", arg="dtype")
    if init == "loaded" and not a["persistent"]:
        raise ShapeError("buffer init=\"loaded\" takes its values from a checkpoint, so it must be persistent",
                         arg="persistent", hint="a non-persistent buffer is no state_dict key: give its values")
    window = a["window"]
    if init.startswith("relative_position_index"):
        if window is None:
            raise ShapeError(f"buffer init=\"{init}\" needs window=[h, w] (or one size)", arg="init")
        h, w = (window, window) if isinstance(window, int) else (window[0], window[1])
        if h < 1 or w < 1:
            raise ShapeError(f"buffer window={window} must be positive", arg="window")
        n = h * w + (1 if init.endswith("_cls") else 0)
        if a["shape"] not in ((n, n), (n * n,)):
            raise ShapeError(f"buffer init=\"{init}\" of a {h}x{w} window has shape [{n}, {n}] or [{n * n}], got "
                             f"{list(shape)}", arg="shape")
        if dtype != "int64":
            raise ShapeError(f"buffer init=\"{init}\" makes indexes: dtype must be \"int64\"", arg="dtype")
        a["window"] = (h, w)
    elif window is not None and init not in ROTARY_INITS:
        raise ShapeError(f"buffer window= is read only by init=\"relative_position_index\" and the rotary inits, "
                         f"not \"{init}\"", arg="window")
    return rotary_norm(a)


def _buffer_ctor(e: EmitArgs) -> Expr:
    a = e.args
    shape, dt = Lit(tuple(a["shape"]), "shape"), BUFFER_DTYPES[a["dtype"]]
    init = a["init"]
    if init in ("zeros", "loaded"):
        return ("torch.zeros(", shape, f", dtype={dt})")
    if init == "ones":
        return ("torch.ones(", shape, f", dtype={dt})")
    if init == "arange":
        return ("torch.arange(", Lit(math.prod(a["shape"]), "numel"), f", dtype={dt}).reshape(", shape, ")")
    if init == "values":
        return ("torch.tensor(", Lit(tuple(a["values"]), "values"), f", dtype={dt}).reshape(", shape, ")")
    if init in ROTARY_INITS:
        return rotary_ctor(e, shape)
    h, w = a["window"]
    cls = ", True" if init.endswith("_cls") else ""
    return ("_relative_position_index(", Lit(h, "win_h"), ", ", Lit(w, "win_w"), cls + ").reshape(", shape, ")")


# ---- gather_rows: table[index] ------------------------------------------------------------------------------
def _gather_shape(shapes: list[Shape], a: dict[str, Any]) -> Shape:
    if len(shapes) != 2:
        raise ShapeError(f"gather_rows takes 2 tensors (table, index), got {len(shapes)}",
                         hint="write gather_rows(table, index) over named tensors")
    table, index = shapes
    return (*index, *table[1:])


def _gather_emit(e: EmitArgs) -> Expr:
    # both with the batch axis: each sample's rows, by advanced indexing with the batch position broadcast
    ones = ", 1" * len(e.in_shapes[1])
    return (In(0), "[torch.arange(", In(0), ".shape[0], device=", In(0), f".device).view(-1{ones}), ", In(1), "]")


def _gather_unbatched(e: EmitArgs) -> Expr:
    if e.has_batch(0) and e.has_batch(1):
        return _gather_emit(e)
    if e.has_batch(0):              # rows of each sample's table, the same index for every sample
        return (In(0), "[:, ", In(1), "]")
    return (In(0), "[", In(1), "]")   # one table: torch indexes it as written (a batched index keeps its batch)


def _gather_form(c: TorchCall) -> dict[str, Any] | None:
    # table[index]: operator.getitem with one tensor index (the table is input 0, the index input 1)
    return {} if len(c.args) == 2 and all(isinstance(x, TensorArg) for x in c.args) else None


_A = ArgSpec
register(
    OpDef("buffer", "parameter",
          [_A("shape", "list"), _A("dtype", "str", "float32", tuple(BUFFER_DTYPES)), _A("persistent", "bool", True),
           _A("init", "str", "zeros", tuple(BUFFER_INITS)), _A("values", "any", None), _A("window", "int2?", None),
           _A("temperature", "float", ROTARY_DEFAULTS["temperature"]), _A("ref_window", "int2?", None),
           _A("offset", "float", ROTARY_DEFAULTS["offset"]), _A("rotate_half", "bool", False),
           _A("indexing", "str", "ij", ("ij", "xy"))],
          lambda s, a: a["shape"],
          "A registered buffer bound to a name, which is its state_dict key when persistent (the default; "
          "persistent=false: not saved, computed when the model is built): index tables, masks, fixed filters, "
          "constants. Its shape is the whole tensor's (no batch axis; dims still count dim 0 as the batch). init: "
          "zeros, ones, arange, relative_position_index (window=[h, w]; Swin), relative_position_index_cls "
          "(BEiT, with a class token), rotary_sin_cos / rotary_sin / rotary_cos (timm's rotary position "
          "embedding of a window=[h, w] grid: temperature=10000, ref_window=none, offset=0, rotate_half=false, "
          "indexing=\"ij\"), loaded (zeros until a checkpoint fills it); values=[...] gives the numbers "
          "(at most Limits.max_literal_values). dtype: float32, int64, bool.",
          stateful=True, arity=0, size_inputs_from=0, normalize=_buffer_norm, key_args=("shape", "init"),
          buffers=lambda s, a: math.prod(a["shape"]), ctor=_buffer_ctor, emit=lambda e: (MOD,),
          unbatched_emit=lambda e: (MOD,), output_batched=lambda a: False,
          persistent=lambda a: bool(a["persistent"]), helpers=("relative_position_index",), traits={"buffer"}),
    OpDef("gather_rows", "shape", [], _gather_shape,
          "table[index] over named tensors: the rows of the table (its dim 1, batch being dim 0) picked by an "
          "integer index tensor, gather_rows(table, index) -> [*index, *table[1:]]: Swin's relative position "
          "bias is gather_rows(relative_position_bias_table, relative_position_index). Either may lack the batch "
          "axis (a parameter table, a buffer index).",
          arity=2, emit=_gather_emit, unbatched_emit=_gather_unbatched, mixed_batch="any",
          traits={"layout-sensitive"},
          torch_forms=(TorchForm("function", "operator.getitem", _gather_form),)),
    OpDef("zeros_like", "math", [], _same, "Zeros of the input's shape (and dtype), torch.zeros_like: BEiT's "
          "qkv bias is concat(q_bias, k_bias, v_bias, dim=1) with k_bias = v_bias -> zeros_like.",
          emit=lambda e: ("torch.zeros_like(", In(0), ")"), unbatched_emit=lambda e: ("torch.zeros_like(", In(0), ")"),
          torch_forms=(TorchForm("function", "torch.zeros_like", lambda c: {}),)),
)
