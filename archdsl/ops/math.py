"""Built-in ops, tensor math: element-wise math, reductions, matmul, attention, dim swaps and free parameters.

One convention for every op here: **dims count the batch as dim 0** (as ``permute``, ``concat``, ``mean``,
``softmax`` and torch do), negative dims count from the end, and no op may work over the batch dim itself.
Shapes are per sample (the batch is never written): ``[C, H, W]`` maps, ``[N, D]`` tokens, ``[heads, N, d]``.

Two-tensor ops (``sub``, ``div``, ``matmul``) and ``scaled_dot_product_attention`` are applied to named
tensors: ``sub(a, b)``, ``matmul(q, kt)``; ``a - b``, ``a / b`` (and ``a + b``, ``a * b``) between named
tensors are the same ops. MACs follow fvcore: a matmul ``[.., n, k] @ [.., k, m]`` counts ``n*k*m`` per
element of the (broadcast) batch dims; attention counts its two matmuls; element-wise math counts 0.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .core import (
    MOD,
    REQUIRED,
    ArgSpec,
    EmitArgs,
    Expr,
    In,
    Kw,
    Lit,
    OpDef,
    Shape,
    ShapeError,
    TensorArg,
    TorchCall,
    TorchForm,
    _same,
    broadcast,
    register,
)
from .forms import (FN, NN, Form, binary_operands, function_form, is_number, method_form, module_form, no_args,
                    reduce_form, spec_dims, two_tensors)
from .tensor import _dims_lit, _dims_norm, _norm_dim, _reduce_shape

__all__ = ["PARAMETER_INITS", "matmul_macs", "matmul_shape"]

#: How a free parameter starts: the value of its ``init=`` argument.
PARAMETER_INITS = ("zeros", "ones", "normal", "trunc_normal")

_ELEMENTWISE = frozenset({"channel-wise"})
_LAYOUT = frozenset({"layout-sensitive"})


def _count(shapes: list[Shape], n: int, what: str, names: str) -> None:
    if len(shapes) != n:
        raise ShapeError(f"{what} takes {n} tensors ({names}), got {len(shapes)}",
                         hint=f"write {what}({names}) over named tensors")


# ---- element-wise ---------------------------------------------------------------------------------------
def _binary_shape(what: str) -> Callable[[list[Shape], dict[str, Any]], Shape]:
    def rule(shapes: list[Shape], a: dict[str, Any]) -> Shape:
        _count(shapes, 2, what, "a, b")
        return broadcast(shapes, what)
    return rule


def _unary(name: str, fn: str, doc: str, *more_forms: TorchForm) -> OpDef:
    """An element-wise op without arguments; its PyTorch spellings are ``fn`` (torch.<name>), x.<name>() and
    ``more_forms``."""
    emit: Callable[[EmitArgs], Expr] = lambda e: (fn + "(", In(0), ")")
    return OpDef(name, "math", [], _same, doc, emit=emit, unbatched_emit=emit, traits=_ELEMENTWISE,
                 torch_forms=(function_form(fn, no_args), method_form(name, no_args), *more_forms))


def _clamp_shape(shapes: list[Shape], a: dict[str, Any]) -> Shape:
    lo, hi = a["min"], a["max"]
    if lo is None and hi is None:
        raise ShapeError("clamp needs min=, max= or both", hint="e.g. clamp(min=1e-6)")
    if lo is not None and hi is not None and lo > hi:
        raise ShapeError(f"clamp min={lo} is larger than max={hi}", arg="min")
    return shapes[0]


def _pow_shape(shapes: list[Shape], a: dict[str, Any]) -> Shape:
    return shapes[0]


# ---- reductions -------------------------------------------------------------------------------------------
def _norm_shape(shapes: list[Shape], a: dict[str, Any]) -> Shape:
    if a["ord"] <= 0:
        raise ShapeError(f"norm ord={a['ord']} must be positive (2 is the Euclidean norm)", arg="ord")
    return _reduce_shape(shapes, a)


# ---- dims -----------------------------------------------------------------------------------------------
def _transpose_norm(shapes: list[Shape], a: dict[str, Any]) -> dict[str, Any]:
    a = dict(a)
    rank = len(shapes[0])
    a["dim0"] = _norm_dim(a["dim0"], rank, "transpose", "dim0")
    a["dim1"] = _norm_dim(a["dim1"], rank, "transpose", "dim1")
    return a


def _transpose_shape(shapes: list[Shape], a: dict[str, Any]) -> Shape:
    s = list(shapes[0])
    i, j = a["dim0"] - 1, a["dim1"] - 1
    s[i], s[j] = s[j], s[i]
    return tuple(s)


def _roll_norm(shapes: list[Shape], a: dict[str, Any]) -> dict[str, Any]:
    a = dict(a)
    shifts = a["shifts"] if isinstance(a["shifts"], list) else [a["shifts"]]
    dims = a["dims"] if isinstance(a["dims"], list) else [a["dims"]]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in shifts):
        raise ShapeError(f"roll shifts must be integers, got {a['shifts']}", arg="shifts")
    if len(shifts) != len(dims):
        raise ShapeError(f"roll has {len(shifts)} shifts for {len(dims)} dims", arg="shifts",
                         hint="give one shift per dim, e.g. roll([-3, -3], [1, 2])")
    norm = tuple(_norm_dim(d, len(shapes[0]), "roll", "dims") for d in dims)
    if len(set(norm)) != len(norm):
        raise ShapeError(f"roll dims {a['dims']} name the same dim twice", arg="dims")
    # a shift is cyclic: reduced modulo the size, so any integer the spec computes stays a small literal
    a["shifts"] = tuple(sh % shapes[0][d - 1] for sh, d in zip(shifts, norm))
    a["dims"] = norm
    return a


def _slice_norm(shapes: list[Shape], a: dict[str, Any]) -> dict[str, Any]:
    a = dict(a)
    a["dim"] = _norm_dim(a["dim"], len(shapes[0]), "slice")
    if a["step"] < 1:
        raise ShapeError(f"slice step={a['step']} must be positive", arg="step")
    return a


def _slice_shape(shapes: list[Shape], a: dict[str, Any]) -> Shape:
    s = list(shapes[0])
    d = a["dim"] - 1
    n = len(range(*slice(a["start"], a["end"], a["step"]).indices(s[d])))
    if n == 0:
        raise ShapeError(f"slice {a['start']}:{a['end'] if a['end'] is not None else ''}:{a['step']} of dim "
                         f"{a['dim']} (size {s[d]}) is empty", arg="start", hint=f"the input here is {list(shapes[0])}")
    s[d] = n
    return tuple(s)


def _slice_emit(e: EmitArgs) -> Expr:
    a = e.args
    return (In(0), "[", ":, " * a["dim"], Lit(a["start"], "start"), ":", Lit(a["end"], "end"), ":",
            Lit(a["step"], "step"), "]")


_PAD_MODES = ("constant", "reflect", "replicate", "circular")


def _pad_norm(shapes: list[Shape], a: dict[str, Any]) -> dict[str, Any]:
    a = dict(a)
    p = a["padding"]
    rank = len(shapes[0])
    if not p or len(p) % 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in p):
        raise ShapeError(f"pad needs an even-length list of integers, got {p}", arg="padding",
                         hint="torch order, last dim first: [left, right, top, bottom] pads W then H")
    if len(p) > 2 * rank:
        raise ShapeError(f"pad {p} pads {len(p) // 2} dims but a sample {list(shapes[0])} has {rank}",
                         arg="padding")
    if a["mode"] != "constant" and (rank != 3 or len(p) != 4):
        raise ShapeError(f"pad mode \"{a['mode']}\" pads the H and W of a [C, H, W] map (4 values)",
                         arg="mode", hint="use mode=\"constant\" for other dims")
    if a["mode"] != "constant" and a["value"] != 0:
        raise ShapeError(f"pad value={a['value']} applies only to mode \"constant\"", arg="value")
    a["padding"] = tuple(p)
    return a


def _pad_shape(shapes: list[Shape], a: dict[str, Any]) -> Shape:
    s = list(shapes[0])
    p = a["padding"]
    for i in range(len(p) // 2):
        d = len(s) - 1 - i
        lo, hi = p[2 * i], p[2 * i + 1]
        if a["mode"] == "reflect" and max(lo, hi) >= s[d]:
            raise ShapeError(f"pad: reflect padding {max(lo, hi)} must be smaller than the size {s[d]}",
                             arg="padding")
        if a["mode"] == "circular" and max(lo, hi) > s[d]:
            raise ShapeError(f"pad: circular padding {max(lo, hi)} wraps around the size {s[d]} more than once",
                             arg="padding")
        s[d] += lo + hi
        if s[d] <= 0:
            raise ShapeError(f"pad {list(p)} leaves nothing of {list(shapes[0])}", arg="padding")
    return tuple(s)


# ---- matmul / attention ---------------------------------------------------------------------------------
def _batch_dims(sa: Shape, sb: Shape, what: str) -> Shape:
    """The broadcast leading (per-sample batch) dims of two matrix operands of equal rank."""
    try:
        return broadcast([sa[:-2], sb[:-2]], what) if sa[:-2] or sb[:-2] else ()
    except ShapeError as e:
        raise ShapeError(f"{what}: the leading dims of {list(sa)} and {list(sb)} do not broadcast "
                         f"({e.message.split(': ', 1)[-1]})",
                         hint="the dims before the last two must be equal or 1") from None


def _need_matrix(shapes: list[Shape], what: str, names: tuple[str, ...]) -> None:
    for s, n in zip(shapes, names):
        if len(s) < 2:
            raise ShapeError(f"{what}: {n} {list(s)} is not a matrix: a sample needs at least 2 dims "
                             "[.., rows, cols]", hint="reshape it first, e.g. reshape([1, -1])")
    if len({len(s) for s in shapes}) != 1:
        raise ShapeError(f"{what}: " + ", ".join(f"{n} {list(s)}" for s, n in zip(shapes, names))
                         + " have different ranks", hint="reshape so every operand has the same number of dims "
                                                         "(size-1 dims broadcast)")


def matmul_shape(shapes: list[Shape], a: dict[str, Any]) -> Shape:
    """``[.., n, k] @ [.., k, m] -> [.., n, m]`` per sample, leading dims broadcast."""
    _count(shapes, 2, "matmul", "a, b")
    _need_matrix(shapes, "matmul", ("a", "b"))
    sa, sb = shapes
    if sa[-1] != sb[-2]:
        raise ShapeError(f"matmul: {list(sa)} @ {list(sb)}: the last dim of a ({sa[-1]}) is not the "
                         f"second-to-last of b ({sb[-2]})", hint="transpose(-2, -1) one of them?")
    return (*_batch_dims(sa, sb, "matmul"), sa[-2], sb[-1])


def matmul_macs(shapes: list[Shape], out: Shape, a: dict[str, Any]) -> int:
    """fvcore's matmul count per sample: n*k*m for each element of the broadcast leading dims."""
    return math.prod(out) * shapes[0][-1]


def _sdpa_shape(shapes: list[Shape], a: dict[str, Any]) -> Shape:
    if len(shapes) not in (3, 4):
        raise ShapeError(f"scaled_dot_product_attention takes 3 tensors (q, k, v) and an optional additive "
                         f"mask, got {len(shapes)}", hint="write scaled_dot_product_attention(q, k, v)")
    names = ("q", "k", "v", "mask")
    _need_matrix(shapes[:3], "scaled_dot_product_attention", names)
    q, k, v = shapes[:3]
    if q[-1] != k[-1]:
        raise ShapeError(f"scaled_dot_product_attention: q {list(q)} and k {list(k)} differ in the last dim "
                         f"({q[-1]} vs {k[-1]})", hint="q and k need the same head dim")
    if k[-2] != v[-2]:
        raise ShapeError(f"scaled_dot_product_attention: k {list(k)} and v {list(v)} differ in the number of "
                         f"keys ({k[-2]} vs {v[-2]})")
    lead = _batch_dims(q, k, "scaled_dot_product_attention")
    lead = _batch_dims((*lead, 1, 1), v, "scaled_dot_product_attention")
    if len(shapes) == 4:
        scores = (*lead, q[-2], k[-2])
        try:
            got = broadcast([scores, shapes[3]], "mask")
        except ShapeError:
            got = None
        if got != scores:
            raise ShapeError(f"scaled_dot_product_attention: the mask {list(shapes[3])} does not broadcast to "
                             f"the scores {list(scores)}", hint="the mask is [.., queries, keys]")
        if a["is_causal"]:
            raise ShapeError("scaled_dot_product_attention: is_causal=true and a mask cannot be combined",
                             arg="is_causal")
    if a["scale"] is not None and a["scale"] <= 0:
        raise ShapeError(f"scaled_dot_product_attention scale={a['scale']} must be positive", arg="scale")
    return (*lead, q[-2], v[-1])


def _sdpa_macs(shapes: list[Shape], out: Shape, a: dict[str, Any]) -> int:
    # the two matmuls as fvcore counts them written out: q @ k^T (L*E*S) and attn @ v (L*S*Ev)
    q, k = shapes[0], shapes[1]
    lead = math.prod(out[:-2])
    return lead * q[-2] * k[-2] * (q[-1] + out[-1])


def _sdpa_emit(e: EmitArgs) -> Expr:
    a = e.args
    if e.inference and e.n_inputs == 4 and e.finite_inputs[3:] == (True,) and not a["is_causal"]:
        # a deploy form's attention with a finite additive mask (Swin's bias) written out, as torchvision does:
        # PyTorch's CPU SDPA takes its math path for a float mask and scans the scores for fully masked rows
        # (all/isneginf/where), 2x the time of these three ops; a finite mask masks no row fully
        scale = a["scale"] if a["scale"] is not None else e.in_shapes[0][-1] ** -0.5
        return ("torch.matmul(torch.softmax(torch.matmul(", In(0), " * ", Lit(float(scale), "scale"), ", ", In(1),
                ".transpose(-2, -1)) + ", In(3), ", dim=-1), ", In(2), ")")
    lead = e.in_shapes[0][:-3]
    if e.n_inputs == 3 and lead and all(tuple(s[:-2]) == tuple(e.in_shapes[0][:-2]) for s in e.in_shapes[1:3]):
        # q, k, v of rank 5+ ([B, 1, heads, N, d]: a slice of the packed qkv): PyTorch's CPU SDPA has its fused
        # (flash) kernel for 4-D inputs only and otherwise takes its math path (ViT-Ti: 16% of the forward; in
        # the train form's bf16 eager forward, ViT-Ti batch 8, 60%); the leading dims merged into the batch (a
        # view here), split again after. Train and deploy forms alike: flatten/unflatten are views with a
        # gradient, and the fused kernel is the one timm's 4-D attention runs
        end = Lit(len(lead), "end_dim")
        flat = tuple(x for i in range(3) for x in (", " if i else "", In(i), ".flatten(0, ", end, ")"))
        return ("F.scaled_dot_product_attention(", *flat, Kw("is_causal", a["is_causal"], False),
                Kw("scale", a["scale"], None), ").unflatten(0, ", Lit((-1, *lead), "sizes"), ")")
    mask: tuple[Any, ...] = (", attn_mask=", In(3)) if e.n_inputs == 4 else ()
    return ("F.scaled_dot_product_attention(", In(0), ", ", In(1), ", ", In(2), *mask,
            Kw("is_causal", a["is_causal"], False), Kw("scale", a["scale"], None), ")")


# ---- free parameters ---------------------------------------------------------------------------------------
def _parameter_norm(shapes: list[Shape], a: dict[str, Any]) -> dict[str, Any]:
    a = dict(a)
    shape = a["shape"]
    if not shape or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise ShapeError(f"parameter needs its per-sample shape as a non-empty list of integers, got {shape}",
                         arg="shape", hint="e.g. parameter([1, 192]) for a class token of width 192 "
                                           "(stored as (1, 1, 192))")
    if any(d <= 0 for d in shape):
        raise ShapeError(f"parameter shape {shape}: sizes must be positive", arg="shape")
    if a["std"] <= 0:
        raise ShapeError(f"parameter std={a['std']} must be positive", arg="std")
    a["shape"] = tuple(shape)
    if a["dim"] is not None:
        # per-channel (or per-any-dim) parameters: the stored axes line up with the block input's dims from
        # `dim` on (batch is dim 0), trailing dims broadcast; stored as written, like batch_dim=false
        rank = len(shapes[0])
        d = _norm_dim(a["dim"], rank, "parameter")
        if d - 1 + len(shape) > rank:
            raise ShapeError(f"parameter {list(shape)} from dim={a['dim']} would reach past the last dim of the block "
                             f"input {list(shapes[0])} (batch is dim 0)", arg="dim",
                             hint=f"a [C] parameter over the channels of [C, H, W] is parameter([C], dim=1)")
        a["dim"] = d
        a["batch_dim"] = False
        a["view"] = tuple(shape) + (1,) * (rank - (d - 1) - len(shape))
    return a


def _parameter_shape(shapes: list[Shape], a: dict[str, Any]) -> Shape:
    return a["view"] if a.get("view") is not None else a["shape"]


def _parameter_ctor(e: EmitArgs) -> Expr:
    a = e.args
    full = Lit((1, *a["shape"]) if a["batch_dim"] else tuple(a["shape"]), "shape")
    init = a["init"]
    if init == "zeros":
        return ("nn.Parameter(torch.zeros(", full, "))")
    if init == "ones":
        return ("nn.Parameter(torch.ones(", full, "))")
    if init == "normal":
        return ("nn.Parameter(torch.randn(", full, ") * ", Lit(float(a["std"]), "std"), ")")
    return ("nn.Parameter(nn.init.trunc_normal_(torch.empty(", full, "), std=", Lit(float(a["std"]), "std"), "))")


def _parameter_emit(e: EmitArgs) -> Expr:
    if e.args.get("view") is not None and tuple(e.args["view"]) != tuple(e.args["shape"]):
        # parameter([C], dim=1) over [C, H, W]: stored (C,), seen as (C, 1, 1) (a view, no copy)
        return (MOD, ".view(", *_view_sizes(e.args["view"]), ")")
    if not e.args["batch_dim"]:
        # stored as given (GRN's (C,)): torch broadcasts it from the right, like a bias
        return (MOD,)
    # stored with a leading 1 (timm's (1, 1, D) cls_token), expanded over the batch of the block's input so
    # it concatenates with batched tensors (expand is a view, no copy)
    return (MOD, ".expand(", In(0), ".shape[0]", ", -1" * len(e.shape), ")")


def _view_sizes(view: tuple[int, ...]) -> Expr:
    out: list[Any] = []
    for k, v in enumerate(view):
        out += [", " if k else "", Lit(v, f"view{k}")]
    return tuple(out)


def _sub_emit(e: EmitArgs) -> Expr:
    return (In(0), " - ", In(1))


def _div_emit(e: EmitArgs) -> Expr:
    return (In(0), " / ", In(1))


def _matmul_emit(e: EmitArgs) -> Expr:
    return (In(0), " @ ", In(1))


def _pow_emit(e: EmitArgs) -> Expr:
    return ("torch.pow(", In(0), ", ", Lit(e.args["exponent"], "exponent"), ")")


def _clamp_emit(e: EmitArgs) -> Expr:
    return ("torch.clamp(", In(0), Kw("min", e.args["min"], None), Kw("max", e.args["max"], None), ")")


_SCALAR = {"add": (In(0), " + ", "v"), "sub": (In(0), " - ", "v"), "rsub": ("v", " - ", In(0)),
           "div": (In(0), " / ", "v"), "rdiv": ("v", " / ", In(0))}


def _scalar_emit(e: EmitArgs) -> Expr:
    v = Lit(e.args["value"], "value")
    return tuple(v if p == "v" else p for p in _SCALAR[e.args["op"]])


def _scalar_shape(shapes: list[Shape], a: dict[str, Any]) -> Shape:
    if a["op"] in ("div",) and a["value"] == 0:
        raise ShapeError("division of a tensor by zero", arg="value")
    return shapes[0]


# ---- PyTorch spellings (torch_forms, read by the importer) ------------------------------------------------
def _scalar_form(op: str, rop: str | None) -> Form:
    """``t + k`` (op) and, where ``rop`` is given, ``k + t`` (rop): a tensor and a number."""
    def form(c: TorchCall) -> dict[str, Any] | None:
        a, b = binary_operands(c)
        if c.kwargs.get("alpha", 1) != 1:
            return None
        if isinstance(a, TensorArg) and is_number(b):
            return {"op": op, "value": float(b)}
        if rop is not None and isinstance(b, TensorArg) and is_number(a):
            return {"op": rop, "value": float(a)}
        return None
    return form


def _transpose_form(c: TorchCall) -> dict[str, Any] | None:
    if c.batch_axes[0] != 0:
        return None
    return {"dim0": c.spec_dim(c.arg(1, "dim0")), "dim1": c.spec_dim(c.arg(2, "dim1"))}


def _roll_form(c: TorchCall) -> dict[str, Any] | None:
    dims = c.arg(2, "dims", None)
    if dims is None:
        return None         # a roll of the flattened tensor, batch included
    return {"shifts": c.arg(1, "shifts"), "dims": spec_dims(c, dims)}


def _pad_form(c: TorchCall) -> dict[str, Any] | None:
    pad = list(c.arg(1, "pad"))
    if len(pad) // 2 > len(c.in_shapes[0]) or c.batch_axes[0] != 0:
        return None
    return {"padding": pad, "mode": c.arg(2, "mode", "constant"), "value": float(c.arg(3, "value", None) or 0.0)}


def _pad_module_form(mode: str) -> Form:
    """nn.ZeroPad2d / ConstantPad / ReflectionPad / ReplicationPad / CircularPad (1-3d): F.pad of the
    module's ``padding`` (torch order already) in its mode."""
    def form(c: TorchCall) -> dict[str, Any] | None:
        pad = [int(v) for v in c.module.padding]
        if len(pad) // 2 > len(c.in_shapes[0]) or c.batch_axes[0] != 0:
            return None
        return {"padding": pad, "mode": mode, "value": float(getattr(c.module, "value", 0.0) or 0.0)}
    return form


_PAD_MODULES = (("ZeroPad", "constant"), ("ConstantPad", "constant"), ("ReflectionPad", "reflect"),
                ("ReplicationPad", "replicate"), ("CircularPad", "circular"))


def _sdpa_form(c: TorchCall) -> dict[str, Any] | None:
    if c.arg(4, "dropout_p", 0.0) or c.kwargs.get("enable_gqa"):
        return None
    return {"is_causal": bool(c.arg(5, "is_causal", False)), "scale": c.arg(-1, "scale", None)}


def _pow_form(c: TorchCall) -> dict[str, Any] | None:
    a, b = c.arg(0, "input"), c.arg(1, "exponent")
    if isinstance(a, TensorArg) and is_number(b):
        return {"exponent": float(b)}
    return None


def _clamp_form(c: TorchCall) -> dict[str, Any] | None:
    lo, hi = c.arg(1, "min", None), c.arg(2, "max", None)
    if (lo is not None and not is_number(lo)) or (hi is not None and not is_number(hi)):
        return None
    return {"min": None if lo is None else float(lo), "max": None if hi is None else float(hi)}


def _vector_norm_form(c: TorchCall) -> dict[str, Any] | None:
    """torch.linalg.vector_norm(x, ord, dim, keepdim); torch.norm / x.norm(p, dim, keepdim) (timm's GRN) over
    given dims with a number p, or "fro" (the 2-norm over those dims)."""
    dim, p = c.arg(2, "dim", None), c.arg(1, "ord", c.kwargs.get("p", 2.0))
    if dim is None or not (p == "fro" or is_number(p)) or c.kwargs.get("dtype") is not None:
        return None
    return {"ord": 2.0 if p == "fro" else float(p), "dim": spec_dims(c, dim), "keepdim": bool(c.arg(3, "keepdim", False))}


def _values_form(call: TorchCall) -> dict[str, Any] | None:
    """x.max(dim, keepdim) / torch.max(x, dim) (and min): the values of the (values, indices) pair torch returns
    are amax (amin) over that dim; the importer keeps only the values (using the indices is refused there).
    torch.max(a, b) (element-wise) and x.max() (over everything, the batch included) are not this op."""
    dim = call.arg(1, "dim", None)
    if not isinstance(dim, int) or isinstance(dim, bool):
        return None
    return reduce_form(call)


def _both(fn: str, method: str, form: Form) -> tuple[TorchForm, TorchForm]:
    """The function and the Tensor method of one op (torch.transpose, x.transpose)."""
    return function_form(fn, form), method_form(method, form)


_A = ArgSpec
register(
    OpDef("scalar", "math", [_A("op", "str", REQUIRED, tuple(_SCALAR)), _A("value", "float")], _scalar_shape,
          "A tensor and a number: 't + 1e-6', 't - k', 'k - t', 't / k', 'k / t' between a named tensor and a number "
          "are this op (t * k is scale(k)).", key_args=("op", "value"), emit=_scalar_emit, unbatched_emit=_scalar_emit,
          traits=_ELEMENTWISE,
          torch_forms=(*(function_form(t, _scalar_form("add", "add"))
                         for t in ("operator.add", "operator.iadd", "torch.add")),
                       method_form("add", _scalar_form("add", None)),
                       function_form("operator.sub", _scalar_form("sub", "rsub")),
                       function_form("operator.truediv", _scalar_form("div", "rdiv")),
                       method_form("div", _scalar_form("div", None)))),
    OpDef("sub", "math", [], _binary_shape("sub"), "a - b of two named tensors (broadcasting): sub(a, b) or a - b.",
          arity=2, emit=_sub_emit, unbatched_emit=_sub_emit, mixed_batch="broadcast",
          torch_forms=(function_form("operator.sub", two_tensors), *_both("torch.sub", "sub", two_tensors))),
    OpDef("div", "math", [], _binary_shape("div"), "a / b of two named tensors (broadcasting): div(a, b) or a / b.",
          arity=2, emit=_div_emit, unbatched_emit=_div_emit, mixed_batch="broadcast",
          torch_forms=(function_form("operator.truediv", two_tensors), *_both("torch.div", "div", two_tensors))),
    OpDef("pow", "math", [_A("exponent", "float")], _pow_shape, "Element-wise x ** exponent.",
          key_args=("exponent",), emit=_pow_emit, unbatched_emit=_pow_emit,
          traits=_ELEMENTWISE,
          torch_forms=(function_form("operator.pow", _pow_form), *_both("torch.pow", "pow", _pow_form))),
    _unary("sqrt", "torch.sqrt", "Element-wise square root."),
    _unary("rsqrt", "torch.rsqrt", "Element-wise 1 / sqrt(x)."),
    _unary("exp", "torch.exp", "Element-wise e ** x."),
    _unary("log", "torch.log", "Element-wise natural logarithm."),
    _unary("sin", "torch.sin", "Element-wise sine (rotary position embeddings computed in forward)."),
    _unary("cos", "torch.cos", "Element-wise cosine (rotary position embeddings computed in forward)."),
    _unary("abs", "torch.abs", "Element-wise absolute value (abs(-3) on a number stays the built-in)."),
    _unary("neg", "torch.neg", "Element-wise -x.", function_form("operator.neg", no_args)),
    OpDef("clamp", "math", [_A("min", "float?", None), _A("max", "float?", None)], _clamp_shape,
          "Element-wise clamp to [min, max] (either may be none).", key_args=("min", "max"),
          emit=_clamp_emit, unbatched_emit=_clamp_emit,
          traits=_ELEMENTWISE,
          torch_forms=_both("torch.clamp", "clamp", _clamp_form)),
    OpDef("norm", "math", [_A("dim", "dims"), _A("ord", "float", 2.0), _A("keepdim", "bool", False)], _norm_shape,
          "Vector norm over one dim or a list of dims (batch is dim 0), torch.linalg.vector_norm: "
          "norm([1, 2], keepdim=true) of channels-last [H, W, C] is ConvNeXt V2's GRN norm.",
          aliases=("vector_norm",), normalize=_dims_norm("norm"), key_args=("dim", "ord"),
          emit=lambda e: ("torch.linalg.vector_norm(", In(0), ", ", Lit(e.args["ord"], "ord"), ", ",
                          _dims_lit(e.args["dim"]), Kw("keepdim", e.args["keepdim"], False), ")"),
          traits=_LAYOUT,
          torch_forms=(*(function_form(f, _vector_norm_form) for f in ("torch.linalg.vector_norm", "torch.norm")),
                       method_form("norm", _vector_norm_form))),
    OpDef("amax", "math", [_A("dim", "dims"), _A("keepdim", "bool", False)], _reduce_shape,
          "Maximum over one dim or a list of dims (batch is dim 0), torch.amax.", aliases=("reduce_max",),
          normalize=_dims_norm("amax"), key_args=("dim",),
          emit=lambda e: (In(0), ".amax(", _dims_lit(e.args["dim"]), Kw("keepdim", e.args["keepdim"], False), ")"),
          traits=_LAYOUT, torch_forms=(method_form("amax", reduce_form), function_form("torch.amax", reduce_form),
                                       *_both("torch.max", "max", _values_form))),
    OpDef("amin", "math", [_A("dim", "dims"), _A("keepdim", "bool", False)], _reduce_shape,
          "Minimum over one dim or a list of dims (batch is dim 0), torch.amin.", aliases=("reduce_min",),
          normalize=_dims_norm("amin"), key_args=("dim",),
          emit=lambda e: (In(0), ".amin(", _dims_lit(e.args["dim"]), Kw("keepdim", e.args["keepdim"], False), ")"),
          traits=_LAYOUT, torch_forms=(method_form("amin", reduce_form), function_form("torch.amin", reduce_form),
                                       *_both("torch.min", "min", _values_form))),
    OpDef("matmul", "math", [], matmul_shape,
          "Batched matrix product of two named tensors: matmul(a, b) is [.., n, k] @ [.., k, m] -> [.., n, m] "
          "(leading dims broadcast; MACs n*k*m per leading element, as fvcore counts).",
          arity=2, macs=matmul_macs, emit=_matmul_emit, unbatched_emit=_matmul_emit, mixed_batch="broadcast", traits=_LAYOUT,
          torch_forms=(function_form("operator.matmul", two_tensors), *_both("torch.matmul", "matmul", two_tensors))),
    OpDef("transpose", "shape", [_A("dim0", "int"), _A("dim1", "int")], _transpose_shape,
          "Swap two dims (batch is dim 0): transpose(-2, -1) turns [h, N, d] into [h, d, N].",
          aliases=("swapdims",), normalize=_transpose_norm, key_args=("dim0", "dim1"),
          emit=lambda e: (In(0), ".transpose(", Lit(e.args["dim0"], "dim0"), ", ", Lit(e.args["dim1"], "dim1"), ")"),
          unbatched_emit=lambda e: (In(0), ".transpose(", Lit(e.args["dim0"] - 1, "dim0"), ", ",
                                    Lit(e.args["dim1"] - 1, "dim1"), ")"),
          traits=_LAYOUT, torch_forms=(method_form("transpose", _transpose_form),
                                       function_form("torch.transpose", _transpose_form))),
    OpDef("roll", "shape", [_A("shifts", "dims"), _A("dims", "dims")], _same,
          "Cyclic shift along dims (batch is dim 0), torch.roll: roll([-3, -3], [1, 2]) is Swin's shifted "
          "window on channels-last [H, W, C].", normalize=_roll_norm, key_args=("shifts", "dims"),
          emit=lambda e: ("torch.roll(", In(0), ", ", _dims_lit(e.args["shifts"]), ", ", _dims_lit(e.args["dims"]),
                          ")"),
          traits=_LAYOUT, torch_forms=_both("torch.roll", "roll", _roll_form)),
    OpDef("slice", "shape", [_A("dim", "int"), _A("start", "int", 0), _A("end", "int?", None), _A("step", "int", 1)],
          _slice_shape, "Python slicing along one dim (batch is dim 0): slice(2, 0, none, 2) is x[:, :, 0::2] "
          "(Swin's patch merging on [H, W, C]).", normalize=_slice_norm, key_args=("dim", "start", "step"),
          emit=_slice_emit, traits=_LAYOUT),
    OpDef("pad", "shape", [_A("padding", "list"), _A("mode", "str", "constant", _PAD_MODES), _A("value", "float", 0.0)],
          _pad_shape, "F.pad: padding in torch order, last dim first ([left, right, top, bottom] pads W then H; "
          "negative values crop).", normalize=_pad_norm, key_args=("padding",),
          emit=lambda e: ("F.pad(", In(0), ", ", Lit(e.args["padding"], "padding"),
                          Kw("mode", e.args["mode"], "constant"), Kw("value", float(e.args["value"]), 0.0), ")"),
          traits=_LAYOUT, torch_forms=(function_form(FN + "pad", _pad_form),
                                        *(module_form(f"{NN}{cls}{d}d", _pad_module_form(mode))
                                          for cls, mode in _PAD_MODULES for d in (1, 2, 3)))),
    OpDef("scaled_dot_product_attention", "math",
          [_A("is_causal", "bool", False), _A("scale", "float?", None)], _sdpa_shape,
          "softmax(q @ k^T * scale + mask) @ v over named tensors, scaled_dot_product_attention(q, k, v) with "
          "per-sample [heads, N, d] (scale none: 1/sqrt(d)); an optional 4th tensor is an additive (or boolean) "
          "mask. MACs are the two matmuls, as fvcore counts attention written as matmuls.",
          arity=-1, aliases=("sdpa",), macs=_sdpa_macs, emit=_sdpa_emit, unbatched_emit=_sdpa_emit, mixed_batch="broadcast",
          traits=_LAYOUT, torch_forms=(function_form(FN + "scaled_dot_product_attention", _sdpa_form),)),
    OpDef("parameter", "parameter",
          [_A("shape", "list"), _A("init", "str", "zeros", PARAMETER_INITS), _A("std", "float", 0.02),
           _A("batch_dim", "bool", True), _A("dim", "int?", None)],
          _parameter_shape,
          "A learnable tensor of the given per-sample shape, bound to a name that is its state_dict key: "
          "cls_token = parameter([1, 192]) is stored as (1, 1, 192) and expanded over the batch; usable in "
          "math (x + pos_embed) and concat(cls_token, x, dim=1). batch_dim=false stores the shape as given, "
          "broadcast from the right like a bias (parameter([C], batch_dim=false) is (C,); not for concat). "
          "dim=d stores the shape as given and lines its axes up with the block input's dims from d on (batch "
          "is dim 0): parameter([C], dim=1) is (C,), used as [C, 1, 1] over [C, H, W] (a per-channel affine "
          "without permutes). init: zeros, ones, normal(std), trunc_normal(std).",
          params=lambda s, a: math.prod(a["shape"]), stateful=True, arity=0, normalize=_parameter_norm,
          size_inputs_from=0,
          key_args=("shape", "init"), ctor=_parameter_ctor, emit=_parameter_emit, traits={"parameter"},
          output_batched=lambda a: bool(a["batch_dim"])),
)
