"""Built-in ops, tensor manipulation: shape ops, reductions, merges (combinators), and the codegen helpers."""
from __future__ import annotations

import math
from typing import Any, Callable

from .core import (ArgSpec, EmitArgs, Expr, In, Kw, Lit, OpDef, Shape, ShapeError, TensorArg, TorchCall, TorchForm,
                   _need_rank, _same, broadcast, register)
from .forms import (FN, NN, Form, binary_operands, function_form, is_number, method_form, module_form, no_args,
                    reduce_form, two_tensors)

__all__ = ["MULTI_OUTPUT_OPS", "HELPERS", "SIZE_OPS", "eval_size", "size_helpers", "wrap_unbatched"]

# Module-level functions the generated code may need (named by OpDef.helpers); trusted text, no spec value.
HELPERS: dict[str, str] = {
    "channel_shuffle": '''
def _channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)
''',
    # a depthwise 1x1 conv (stride 1, no padding: a BatchNorm the deploy form could not fold) as the per-channel
    # affine map it is; PyTorch's CPU conv runs such a conv group by group (8 ms for 512 channels at 8x8, where
    # this takes 0.05 ms). One multiply and one add per element, as the conv
    "channel_affine": '''
def _channel_affine(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    w = weight.view(1, -1, 1, 1)
    if bias is None:
        return x * w
    return torch.addcmul(bias.view(1, -1, 1, 1), x, w)
''',
    "drop_path": '''
def _stochastic_depth(x: torch.Tensor, p: float, mode: str, training: bool) -> torch.Tensor:
    # torchvision.ops.stochastic_depth: keep each sample ('row') or the whole batch with prob 1 - p
    if not training or p == 0.0:
        return x
    keep = 1.0 - p
    size = [x.shape[0]] + [1] * (x.dim() - 1) if mode == "row" else [1] * x.dim()
    noise = torch.empty(size, dtype=x.dtype, device=x.device).bernoulli_(keep)
    if keep > 0.0:
        noise.div_(keep)
    return x * noise
''',
    # run-time sizes (reshape): min/max of sizes read from tensors. TorchScript compiles the builtin; torch.fx
    # symbolic tracing (which cannot branch on a size) sees one leaf call; torch.export and torch.compile get
    # the symbolic max, so a dynamic size stays dynamic
    "size_ops": '''
def _size_max(a: int, b: int) -> int:
    if torch.jit.is_scripting():
        return max(a, b)
    return torch.sym_max(a, b)


def _size_min(a: int, b: int) -> int:
    if torch.jit.is_scripting():
        return min(a, b)
    return torch.sym_min(a, b)


torch.fx.wrap("_size_max")
torch.fx.wrap("_size_min")
''',
}


def _flatten_shape(shapes: list[Shape], a: dict[str, Any]) -> Shape:
    return (math.prod(shapes[0]),)




def _shuffle_shape(shapes: list[Shape], a: dict[str, Any]) -> Shape:
    c = _need_rank(shapes, 3, "channel_shuffle")[0]
    g = a["groups"]
    if g < 1 or c % g:
        raise ShapeError(f"channel_shuffle groups={g} does not divide the {c} channels", arg="groups")
    return shapes[0]


def _narrow_shape(shapes: list[Shape], a: dict[str, Any]) -> Shape:
    s = list(shapes[0])
    s[a["dim"] - 1] = a["length"]
    return tuple(s)



def _add_shape(shapes: list[Shape], a: dict[str, Any]) -> Shape:
    return broadcast(shapes, "add")


def _mul_shape(shapes: list[Shape], a: dict[str, Any]) -> Shape:
    return broadcast(shapes, "mul")


def _concat_norm(shapes: list[Shape], a: dict[str, Any]) -> dict[str, Any]:
    a = dict(a)
    a["dim"] = _norm_dim(a["dim"], len(shapes[0]), "concat")   # dim=-1: the last dim, as torch.cat
    return a


def _concat_shape(shapes: list[Shape], a: dict[str, Any]) -> Shape:
    d = a["dim"]
    rank = len(shapes[0])
    for s in shapes[1:]:
        if len(s) != rank or any(s[i] != shapes[0][i] for i in range(rank) if i != d - 1):
            raise ShapeError("concat: shapes " + ", ".join(str(list(x)) for x in shapes)
                             + f" differ outside dim {d}",
                             hint="all branches must keep the same spatial size")
    out = list(shapes[0])
    out[d - 1] = sum(s[d - 1] for s in shapes)
    return tuple(out)



def _permute_norm(shapes: list[Shape], a: dict[str, Any]) -> dict[str, Any]:
    a = dict(a)
    dims = a["dims"]
    rank = len(shapes[0])
    if not all(isinstance(d, int) and not isinstance(d, bool) for d in dims):
        raise ShapeError(f"permute dims must be integers, got {dims}", arg="dims")
    written = dims
    # negative dims count from the end of the batched tensor, as in torch.permute: [0, -1, 1, 2] is [0, 3, 1, 2]
    dims = [d + rank + 1 if -(rank + 1) <= d < 0 else d for d in dims]
    if sorted(dims) != list(range(rank + 1)):
        dims = written
        raise ShapeError(f"permute dims {dims} are not a permutation of 0..{rank} for {list(shapes[0])} "
                         "(batch is dim 0)", arg="dims",
                         hint="e.g. permute([0, 2, 3, 1]) turns [C, H, W] into [H, W, C]")
    if dims[0] != 0:
        raise ShapeError(f"permute must keep the batch dim first, got {dims}", arg="dims",
                         hint="start the list with 0")
    a["dims"] = tuple(dims)
    return a


def _permute_shape(shapes: list[Shape], a: dict[str, Any]) -> Shape:
    return tuple(shapes[0][d - 1] for d in a["dims"][1:])



def _norm_dim(d: int, rank: int, what: str, arg: str = "dim") -> int:
    """A torch dim (batch 0, negatives from the end) -> its 1-based index into the per-sample shape."""
    full = d + rank + 1 if d < 0 else d
    if full == 0:
        raise ShapeError(f"{what} over the batch dim (0) is not supported", arg=arg,
                         hint="dims count the batch as 0: use 1 for channels, 2 and 3 for height and width")
    if not 1 <= full <= rank:
        raise ShapeError(f"{what} dim={d} is out of range: a sample has {rank} dims, numbered 1..{rank} "
                         "after the batch (dim 0)", arg=arg, hint=f"valid dims here: 1..{rank} or -{rank}..-1")
    return full


def _dims_norm(what: str) -> Callable[[list[Shape], dict[str, Any]], dict[str, Any]]:
    def norm(shapes: list[Shape], a: dict[str, Any]) -> dict[str, Any]:
        a = dict(a)
        raw = a["dim"] if isinstance(a["dim"], list) else [a["dim"]]
        dims = [_norm_dim(d, len(shapes[0]), what) for d in raw]
        if len(set(dims)) != len(dims):
            raise ShapeError(f"{what} dims {raw} name the same dim twice", arg="dim")
        a["dim"] = tuple(sorted(dims)) if isinstance(a["dim"], list) else dims[0]
        return a
    return norm


def _reduce_shape(shapes: list[Shape], a: dict[str, Any]) -> Shape:
    dims = a["dim"] if isinstance(a["dim"], tuple) else (a["dim"],)
    if a["keepdim"]:
        return tuple(1 if i + 1 in dims else s for i, s in enumerate(shapes[0]))
    out = tuple(s for i, s in enumerate(shapes[0]) if i + 1 not in dims)
    if not out:
        raise ShapeError(f"reducing every dim of {list(shapes[0])} leaves only the batch", arg="dim",
                         hint="use keepdim=true, or flatten and reduce fewer dims")
    return out


def _softmax_norm(shapes: list[Shape], a: dict[str, Any]) -> dict[str, Any]:
    a = dict(a)
    a["dim"] = _norm_dim(a["dim"], len(shapes[0]), "softmax")
    return a


def _reshape_norm(shapes: list[Shape], a: dict[str, Any]) -> dict[str, Any]:
    """Resolve a per-sample target shape with at most one -1 against the input's size."""
    a = dict(a)
    target = a["shape"]
    if not target or not all(isinstance(d, int) and not isinstance(d, bool) for d in target):
        raise ShapeError(f"reshape needs a non-empty list of integers (batch left out), got {target}", arg="shape",
                         hint="e.g. reshape([2, -1, 1, 1])")
    size = math.prod(shapes[0])
    free = [i for i, d in enumerate(target) if d == -1]
    if len(free) > 1:
        raise ShapeError(f"reshape {target} has more than one -1", arg="shape",
                         hint="only one dim can be inferred")
    if any(d == 0 or d < -1 for d in target):
        raise ShapeError(f"reshape {target}: sizes must be positive (or -1 for the inferred one)", arg="shape")
    known = math.prod(d for d in target if d != -1)
    if free:
        if size % known:
            raise ShapeError(f"reshape {target}: {list(shapes[0])} has {size} elements per sample, "
                             f"not a multiple of {known}", arg="shape")
        target = [size // known if d == -1 else d for d in target]
    elif known != size:
        raise ShapeError(f"reshape {target} holds {known} elements per sample but {list(shapes[0])} has {size}",
                         arg="shape", hint="use -1 for the dim to infer")
    a["written"] = tuple(a["shape"])   # as the spec wrote it: codegen keeps the -1, so any input size works
    a["shape"] = tuple(target)
    return a


# ---- sizes read from tensors at run time (the "reads-sizes" trait) ---------------------------------------
# A formula is ("in", k, axis): the size of the op's k-th input along per-sample ``axis``; ("k", n): a
# constant; (op, a, b) with op in + - * // % max min. Lowering turns the spec's ``in.h // 16`` into one (the tensor
# it reads becomes input k); emission writes it as Python over ``x.shape``; the contract pass evaluates it.
SIZE_OPS: dict[str, Callable[[int, int], int]] = {
    "+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
    "//": lambda a, b: a // b, "%": lambda a, b: a % b, "max": max, "min": min}
# min/max are written as calls of these helpers (HELPERS["size_ops"]), the others as infix operators
_SIZE_CALLS = {"max": "_size_max", "min": "_size_min"}


# the helper calls an expression may contain beyond its op's own helpers: call text -> HELPERS key
_CALLED_HELPERS = {"_size_max(": "size_ops", "_size_min(": "size_ops", "_channel_affine(": "channel_affine",
                   "_rotary_embedding(": "rotary_embedding"}


def size_helpers(expr: Expr) -> tuple[str, ...]:
    """The helpers (:data:`HELPERS` keys) an emitted expression calls beyond its op's own: the size ones, the
    deploy form's per-channel affine map (a conv2d emitted for inference only) and a rotary buffer's table."""
    return tuple(sorted({_CALLED_HELPERS[p] for p in expr if isinstance(p, str) and p in _CALLED_HELPERS}))


def eval_size(expr: tuple[Any, ...], shapes: list[Shape]) -> int:
    """The value of a size formula for inputs of ``shapes`` (raises ShapeError on a division by zero)."""
    if expr[0] == "k":
        return int(expr[1])
    if expr[0] == "in":
        return int(shapes[expr[1]][expr[2]])
    a, b = eval_size(expr[1], shapes), eval_size(expr[2], shapes)
    if expr[0] in ("//", "%") and b == 0:
        raise ShapeError(f"a size computed from the input divides by zero ({expr[0]} 0)", arg="shape")
    return SIZE_OPS[expr[0]](a, b)


def _size_code(expr: tuple[Any, ...], name: str) -> Expr:
    """A size formula as generated code: ``x.shape[2] // 16``. Axis numbers are ints from lowering (never
    spec text); constants are literals; every operation is parenthesized."""
    if expr[0] == "k":
        return (Lit(int(expr[1]), name),)
    if expr[0] == "in":
        return (In(int(expr[1])), f".shape[{int(expr[2]) + 1}]")
    if expr[0] not in SIZE_OPS:
        raise ValueError(f"internal: unknown size operation {expr[0]!r}")
    if expr[0] in _SIZE_CALLS:
        return (_SIZE_CALLS[expr[0]] + "(", *_size_code(expr[1], name), ", ", *_size_code(expr[2], name), ")")
    return ("(", *_size_code(expr[1], name), f" {expr[0]} ", *_size_code(expr[2], name), ")")


def _reshape_sizes(e: EmitArgs) -> Expr:
    written = e.args.get("written", e.args["shape"])
    dyn = e.args.get("dyn") or (None,) * len(written)
    out: list[Any] = []
    for k, (v, f) in enumerate(zip(written, dyn)):
        out += [", ", *(_size_code(f, f"size{k}") if f is not None and v != -1 else (Lit(v, f"size{k}"),))]
    return tuple(out)


def _reshape_resize(shapes: list[Shape], a: dict[str, Any]) -> dict[str, Any]:
    """reshape's args for inputs of ``shapes``: the run-time sizes recomputed, the -1 resolved again."""
    written = a.get("written", a["shape"])
    dyn = a.get("dyn") or (None,) * len(written)
    # fixed sizes are checked again too: they must still hold the input's elements
    target = [v if f is None or v == -1 else eval_size(f, shapes) for v, f in zip(written, dyn)]
    out = _reshape_norm(shapes, {"shape": target})
    out["written"] = tuple(written)
    if a.get("dyn"):
        out["dyn"] = a["dyn"]   # keep the formulas for the next size
    return out



def _stack_norm(shapes: list[Shape], a: dict[str, Any]) -> dict[str, Any]:
    a = dict(a)
    # the new dim is a dim of the result, which has one more: dim=-1 puts it last, as torch.stack
    a["dim"] = _norm_dim(a["dim"], len(shapes[0]) + 1, "stack")
    return a


def _stack_shape(shapes: list[Shape], a: dict[str, Any]) -> Shape:
    if any(s != shapes[0] for s in shapes):
        raise ShapeError("stack: branch shapes " + ", ".join(str(list(s)) for s in shapes) + " differ")
    d = a["dim"] - 1
    return (*shapes[0][:d], len(shapes), *shapes[0][d:])


# ---- emission ----------------------------------------------------------------------------------------------
def _join(e: EmitArgs, sep: str) -> Expr:
    out: list[Any] = []
    for k in range(e.n_inputs):
        if k:
            out.append(sep)
        out.append(In(k))
    return tuple(out)


def _add_emit(e: EmitArgs) -> Expr:
    if not e.inplace:
        return _join(e, " + ")
    rest: list[Any] = []
    for k in range(1, e.n_inputs):
        rest += [" + ", In(k)] if k > 1 else [In(k)]
    return (In(0), ".add_(", *rest, ")")


def _cat_emit(fn: str) -> Callable[[EmitArgs], Expr]:
    return lambda e: (fn + "([", *_join(e, ", "), "], ", Lit(e.args["dim"], "dim"), ")")


def _dims_lit(d: Any) -> Lit:
    if isinstance(d, tuple) and len(d) == 1:
        d = d[0]
    return Lit(d, "dim")


def _narrow_emit(e: EmitArgs) -> Expr:
    a = e.args
    if a["dim"] == 1:
        return (In(0), "[:, ", Lit(a["start"], "start"), ":", Lit(a["start"] + a["length"], "stop"), "]")
    return (In(0), ".narrow(", Lit(a["dim"], "dim"), ", ", Lit(a["start"], "start"), ", ",
            Lit(a["length"], "length"), ")")


def _mul_emit(e: EmitArgs) -> Expr:
    return _join(e, " * ")


# ---- emission on values without the batch axis (buffers, batch_dim=false parameters; EmitArgs.batched) ----
# dims in the spec count dim 0 as the batch even where there is none, so the torch call takes each dim - 1
def _u_dims(d: Any) -> Lit:
    return _dims_lit(tuple(x - 1 for x in d) if isinstance(d, tuple) else d - 1)


def _u_cat(fn: str) -> Callable[[EmitArgs], Expr]:
    return lambda e: (fn + "([", *_join(e, ", "), "], ", Lit(e.args["dim"] - 1, "dim"), ")")


def _u_permute(e: EmitArgs) -> Expr:
    dims = [d - 1 for d in e.args["dims"][1:]]
    return (In(0), ".permute(", Lit(dims[0], "dims0"), *_seq(dims[1:], "dim"), ")")


def _reads_input(f: Any, k: int) -> bool:
    """Whether the size formula ``f`` reads a size of input ``k``."""
    if f is None or f[0] == "k":
        return False
    if f[0] == "in":
        return bool(f[1] == k)
    return _reads_input(f[1], k) or _reads_input(f[2], k)


def _u_reshape(e: EmitArgs) -> Expr:
    if any(_reads_input(f, 0) for f in e.args.get("dyn") or ()):
        # a size read from the reshaped tensor itself counts its batch axis: the generic form
        return wrap_unbatched(e, _reshape_emit(e))
    sizes = _reshape_sizes(e)   # sizes read from other (batched) tensors are computed from them at run time
    return (In(0), ".reshape(", *sizes[1:], ")")


def _u_reduce(method: str) -> Callable[[EmitArgs], Expr]:
    return lambda e: (In(0), f".{method}(", _u_dims(e.args["dim"]), Kw("keepdim", e.args["keepdim"], False), ")")


def _reshape_emit(e: EmitArgs) -> Expr:
    # the target as written (a -1 stays inferred at run time, sizes read from tensors are recomputed from them);
    # the batch size is read from the input
    return (In(0), ".reshape(", In(0), ".shape[0]", *_reshape_sizes(e), ")")


def wrap_unbatched(e: EmitArgs, expr: Expr, whole: bool = True) -> Expr:
    """The generic form of an op's ``expr`` over inputs without the batch axis: each such input made a batch
    of one (``t[None]``) and, when the result has no batch axis either (and ``whole``), the result's batch of
    one taken off (``[0]``). Right for any op that works per sample; ``whole=False`` only reads sizes from
    such inputs as if they had the batch axis."""
    out: list[Any] = []
    for p in expr:
        out.append(p)
        if isinstance(p, In) and not e.has_batch(p.k):
            out.append("[None]")
    if e.out_batched or not whole:
        return tuple(out)
    return ("(", *out, ")[0]")


def _seq(values: Any, name: str) -> Expr:
    out: list[Any] = []
    for k, v in enumerate(values):
        out += [", ", Lit(v, f"{name}{k}")]
    return tuple(out)


# ---- PyTorch spellings (torch_forms, read by the importer) ------------------------------------------------
def _flatten_form(start: int, end: int, c: TorchCall) -> dict[str, Any] | None:
    # the op flattens everything after the batch; a partial flatten is a reshape (below)
    rank = len(c.in_shapes[0]) + 1
    if c.batch_axes[0] != 0 or start % rank != 1 or end % rank != rank - 1:
        return None
    return {}


def _flatten_call(c: TorchCall) -> dict[str, Any] | None:
    return _flatten_form(c.arg(1, "start_dim", 0), c.arg(2, "end_dim", -1), c)


def _reshape_form(c: TorchCall) -> dict[str, Any] | None:
    """Any view of one tensor that keeps the batch first and in place: the traced per-sample target."""
    if not c.out_shapes or c.batch_axes[0] != 0 or c.out_batch_axes[0] != 0:
        return None
    return {"shape": list(c.out_shapes[0])}


def _scale_form(c: TorchCall) -> dict[str, Any] | None:
    a, b = binary_operands(c)
    if isinstance(a, TensorArg) and is_number(b):
        return {"factor": float(b)}
    if isinstance(b, TensorArg) and is_number(a):
        return {"factor": float(a)}
    return None


def _cat_form(c: TorchCall) -> dict[str, Any] | None:
    if len(set(c.batch_axes)) != 1:
        return None
    return {"dim": c.spec_dim(c.arg(1, "dim", 0))}


def _stack_form(c: TorchCall) -> dict[str, Any] | None:
    d = c.arg(1, "dim", 0)
    b = c.batch_axes[0] if c.batch_axes else 0
    if len(set(c.batch_axes)) > 1:
        return None
    if d < 0 or b == -1:
        return {"dim": d if d < 0 else c.spec_dim(d)}
    # a new axis at or before the batch (torch.stack(heads, dim=0)) moves the batch behind it; per sample
    # it is the same stack, at the sample's dim d
    if d > len(c.in_shapes[0]) + 1:
        raise ShapeError(f"dimension {d} is out of range for stacking rank-{len(c.in_shapes[0]) + 1} tensors")
    return {"dim": d + 1 if d <= b else d}


def _softmax_form(c: TorchCall) -> dict[str, Any] | None:
    if c.kwargs.get("dtype") is not None:
        return None
    return {"dim": c.spec_dim(c.arg(1, "dim"))}


def _permute_dims(c: TorchCall, dims: Any) -> dict[str, Any] | None:
    rank = len(c.in_shapes[0]) + 1
    dims = [d % rank for d in dims]
    b = c.batch_axes[0]
    # the spec's tensors keep the batch first: the permutation of the other dims, wherever torch puts the
    # batch (its place in the output is the importer's business: out_batch_axes)
    return {"dims": [0] + [c.spec_dim(d) for d in dims if d != b]}


def _permute_method(c: TorchCall) -> dict[str, Any] | None:
    dims = c.args[1:] if len(c.args) > 2 else c.arg(1, "dims")
    if isinstance(dims, int):
        dims = [dims]
    return _permute_dims(c, list(dims))


def _binary_forms(op: str, fn: Form) -> tuple[TorchForm, ...]:
    """``a + b`` / ``a += b`` / torch.add / a.add (``op`` "add"; "mul" likewise)."""
    return (*(function_form(t, fn) for t in (f"operator.{op}", f"operator.i{op}", f"torch.{op}")),
            method_form(op, fn))


#: the Tensor methods that cast (``x.float()``, ``x.to(torch.float32)``, ``x.type_as(y)``, ``x.type(dtype)``)
_CASTS = ("float", "to", "type_as", "type")


def _float_cast_form(c: TorchCall) -> dict[str, Any] | None:
    """A cast of a float32 value that gives float32 (NaFlexViT's ``x.float()``) changes nothing: the identity.
    The traced dtypes decide (a spec's tensors are float32); any other cast is not this op."""
    if not c.in_dtypes or c.in_dtypes[0] != "float32" or c.out_dtypes != ["float32"]:
        raise ShapeError(f"a cast from {(c.in_dtypes or [''])[0] or 'an unknown dtype'} to "
                         f"{(c.out_dtypes or [''])[0] or 'an unknown dtype'}: only float32 to float32 "
                         "(the identity) has a spelling")
    return {}


_A = ArgSpec
register(
    OpDef("flatten", "shape", [], _flatten_shape, "Flatten [C, H, W] to [C*H*W].",
          emit=lambda e: ("torch.flatten(", In(0), ", 1)"), module_form=lambda e: ("nn.Flatten()",),
          unbatched_emit=lambda e: ("torch.flatten(", In(0), ")"),
          traits={"layout-sensitive"},
          torch_forms=(module_form(NN + "Flatten", lambda c: _flatten_form(c.module.start_dim, c.module.end_dim, c)),
                       function_form("torch.flatten", _flatten_call), method_form("flatten", _flatten_call))),
    OpDef("identity", "identity", [], _same, "The input, unchanged (a shortcut branch).",
          emit=lambda e: (In(0),), module_form=lambda e: ("nn.Identity()",), traits={"eval-identity", "channel-wise"},
          torch_forms=(module_form(NN + "Identity", no_args), method_form("contiguous", no_args),
                       method_form("clone", no_args), *(method_form(m, _float_cast_form) for m in _CASTS))),
    OpDef("channel_shuffle", "shape", [_A("groups", "int")], _shuffle_shape,
          "ShuffleNet channel shuffle: [g, C/g] -> [C/g, g].", key_args=("groups",), helpers=("channel_shuffle",),
          emit=lambda e: ("_channel_shuffle(", In(0), ", ", Lit(e.args["groups"], "groups"), ")"),
          traits={"layout-sensitive"},
          torch_forms=(module_form(NN + "ChannelShuffle", lambda c: {"groups": c.module.groups}),
                       function_form(FN + "channel_shuffle", lambda c: {"groups": c.arg(1, "groups")}))),
    OpDef("add", "merge", [], _add_shape, "Element-wise sum of the branches (broadcasting).", arity=-1,
          emit=_add_emit, unbatched_emit=_add_emit, mixed_batch="broadcast", traits={"merge", "inplace", "inplace-safe-producer"},
          torch_forms=_binary_forms("add", two_tensors)),
    OpDef("mul", "merge", [], _mul_shape, "Element-wise product of the branches (broadcasting).", arity=-1,
          emit=_mul_emit, unbatched_emit=_mul_emit, mixed_batch="broadcast", traits={"merge"},
          torch_forms=_binary_forms("mul", two_tensors)),
    OpDef("concat", "merge", [_A("dim", "int", 1)], _concat_shape,
          "Concatenation of the branches along dim (1 = channels; batch is dim 0; -1 the last).", arity=-1,
          normalize=_concat_norm,
          emit=_cat_emit("torch.cat"), unbatched_emit=_u_cat("torch.cat"), traits={"merge", "layout-sensitive"},
          torch_forms=(function_form("torch.cat", _cat_form), function_form("torch.concat", _cat_form))),
    OpDef("stack", "merge", [_A("dim", "int", 1)], _stack_shape,
          "Stack the branches along a new dim (1: after the batch; -1: last), e.g. the radix branches of split "
          "attention.", arity=-1, normalize=_stack_norm, emit=_cat_emit("torch.stack"),
          unbatched_emit=_u_cat("torch.stack"), traits={"merge", "layout-sensitive"},
          torch_forms=(function_form("torch.stack", _stack_form),)),
    # narrow is produced by chunk/split over named values; it is not written directly.
    OpDef("narrow", "shape", [_A("dim", "int"), _A("start", "int"), _A("length", "int")], _narrow_shape,
          "A slice of the channels (from chunk/split).", emit=_narrow_emit, traits={"layout-sensitive"}),
    OpDef("permute", "shape", [_A("dims", "list")], _permute_shape,
          "Reorder dims, batch included (torch.permute): permute([0, 2, 3, 1]) makes [C, H, W] channels-last.",
          normalize=_permute_norm, key_args=("dims",),
          emit=lambda e: (In(0), ".permute(", Lit(e.args["dims"][0], "dims0"), *_seq(e.args["dims"][1:], "dim"), ")"),
          unbatched_emit=_u_permute,
          traits={"layout-sensitive"},
          torch_forms=(method_form("permute", _permute_method),
                       function_form("torch.permute", lambda c: _permute_dims(c, c.arg(1, "dims"))),
                       module_form("torchvision.ops.misc.Permute", lambda c: _permute_dims(c, list(c.module.dims))))),
    OpDef("softmax", "act", [_A("dim", "int", 1)], _same,
          "Softmax along dim (batch is dim 0; 1 = channels), e.g. over the radix of split attention.",
          normalize=_softmax_norm, key_args=("dim",),
          emit=lambda e: ("torch.softmax(", In(0), ", ", Lit(e.args["dim"], "dim"), ")"),
          unbatched_emit=lambda e: ("torch.softmax(", In(0), ", ", Lit(e.args["dim"] - 1, "dim"), ")"),
          module_form=lambda e: ("nn.Softmax(", Lit(e.args["dim"], "dim"), ")"), traits={"layout-sensitive"},
          torch_forms=(method_form("softmax", _softmax_form), function_form(FN + "softmax", _softmax_form),
                       function_form("torch.softmax", _softmax_form),
                       module_form(NN + "Softmax", lambda c: {"dim": c.spec_dim(c.module.dim)}
                                   if c.module.dim is not None else None))),
    OpDef("mean", "shape", [_A("dim", "dims"), _A("keepdim", "bool", False)], _reduce_shape,
          "Mean over one dim or a list of dims (batch is dim 0): mean([2, 3], keepdim=true) is global average "
          "pooling to [C, 1, 1].", normalize=_dims_norm("mean"), key_args=("dim",),
          emit=lambda e: (In(0), ".mean(", _dims_lit(e.args["dim"]), Kw("keepdim", e.args["keepdim"], False), ")"),
          unbatched_emit=_u_reduce("mean"),
          traits={"layout-sensitive"},
          torch_forms=(method_form("mean", reduce_form), function_form("torch.mean", reduce_form))),
    # not called `sum`: that name is the built-in sum of a list of numbers
    OpDef("reduce_sum", "shape", [_A("dim", "dims"), _A("keepdim", "bool", False)], _reduce_shape,
          "Sum over one dim or a list of dims (batch is dim 0): reduce_sum(1) adds the branches of a stack.",
          normalize=_dims_norm("reduce_sum"), key_args=("dim",),
          emit=lambda e: (In(0), ".sum(", _dims_lit(e.args["dim"]), Kw("keepdim", e.args["keepdim"], False), ")"),
          unbatched_emit=_u_reduce("sum"),
          traits={"layout-sensitive"},
          torch_forms=(method_form("sum", reduce_form), function_form("torch.sum", reduce_form))),
    OpDef("reshape", "shape", [_A("shape", "list")], lambda s, a: a["shape"],
          "Reshape each sample (batch kept): one size may be -1 and is inferred; sizes written from the input "
          "(in.h // 16) are computed at run time, so the model runs at other input sizes.",
          normalize=_reshape_norm, resize=_reshape_resize, size_inputs_from=1,
          aliases=("view",), key_args=("shape",),
          emit=_reshape_emit, unbatched_emit=_u_reshape,
          traits={"layout-sensitive", "reads-sizes"},
          # any view that keeps the batch first (a partial flatten too; a whole one is flatten, above)
          torch_forms=(*(method_form(m, _reshape_form) for m in ("reshape", "view", "flatten", "squeeze", "unsqueeze")),
                       *(function_form("torch." + f, _reshape_form)
                         for f in ("reshape", "flatten", "squeeze", "unsqueeze")),
                       module_form(NN + "Flatten", _reshape_form))),
    OpDef("scale", "act", [_A("factor", "float")], _same,
          "Multiply by a constant (Inception-ResNet's residual scaling).", key_args=("factor",),
          emit=lambda e: (In(0), " * ", Lit(e.args["factor"], "factor")),
          unbatched_emit=lambda e: (In(0), " * ", Lit(e.args["factor"], "factor")), traits={"channel-wise"},
          # a * 0.5: a mul with a number (mul itself takes two tensors)
          torch_forms=(*(function_form(t, _scale_form) for t in ("operator.mul", "operator.imul", "torch.mul")),
                       method_form("mul", _scale_form))),
)

# Ops that produce several tensors: handled by the lowering, listed here for name lookup and docs.
MULTI_OUTPUT_OPS = {
    "chunk": [ArgSpec("chunks", "int"), ArgSpec("dim", "int", 1)],
    "split": [ArgSpec("sizes", "list"), ArgSpec("dim", "int", 1)],
    # one tensor per index of the dim, the dim removed (lowered to select nodes): q, k, v = qkv -> unbind(1)
    "unbind": [ArgSpec("dim", "int", 1)],
}
