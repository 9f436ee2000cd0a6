"""Built-in ops, indexing and repetition: ``select`` (one index of a dim, the dim removed: what ``unbind``
produces), ``repeat_interleave``, ``tile``, and the PyTorch spellings of the multi-output ops (``chunk``, ``split``,
``unbind``), which the lowering expands into ``narrow``/``select`` nodes and so have no OpDef of their own.

Dims count the batch as dim 0, as everywhere (1 is the first per-sample dim); no op here works over the batch.
"""
from __future__ import annotations

from typing import Any

from .core import ArgSpec, EmitArgs, Expr, In, Lit, OpDef, Shape, ShapeError, TensorArg, TorchCall, TorchForm, register
from .forms import call_arg, plain_value, sample_dim_arg
from .tensor import _norm_dim

__all__ = ["MULTI_OUTPUT_FORMS"]


# ---- select ------------------------------------------------------------------------------------------------
def _select_norm(shapes: list[Shape], a: dict[str, Any]) -> dict[str, Any]:
    a = dict(a)
    rank = len(shapes[0])
    a["dim"] = _norm_dim(a["dim"], rank, "select")
    size = shapes[0][a["dim"] - 1]
    i = a["index"]
    if not -size <= i < size:
        raise ShapeError(f"select index {i} is out of range for dim {a['dim']} of size {size}", arg="index",
                         hint=f"the input here is {list(shapes[0])}; valid indices: 0..{size - 1} or -{size}..-1")
    a["index"] = i % size
    return a


def _select_shape(shapes: list[Shape], a: dict[str, Any]) -> Shape:
    s = shapes[0]
    if len(s) == 1:
        raise ShapeError(f"select on {list(s)} would leave only the batch", arg="dim",
                         hint="use slice(1, i, i + 1) to keep a dim of size 1")
    return tuple(v for k, v in enumerate(s) if k != a["dim"] - 1)


def _select_emit(e: EmitArgs) -> Expr:
    if e.args["dim"] == 1:
        return (In(0), "[:, ", Lit(e.args["index"], "index"), "]")
    return (In(0), ".select(", Lit(e.args["dim"], "dim"), ", ", Lit(e.args["index"], "index"), ")")


def _select_form(c: TorchCall) -> dict[str, Any]:
    """x.select(dim, index) / torch.select(x, dim, index)."""
    d = plain_value(call_arg(c, 1, "dim"), "dim")
    i = plain_value(call_arg(c, 2, "index"), "index")
    return {"dim": sample_dim_arg(c, d), "index": int(i)}


# ---- repeat_interleave -------------------------------------------------------------------------------------
def _ri_norm(shapes: list[Shape], a: dict[str, Any]) -> dict[str, Any]:
    a = dict(a)
    a["dim"] = _norm_dim(a["dim"], len(shapes[0]), "repeat_interleave")
    return a


def _ri_shape(shapes: list[Shape], a: dict[str, Any]) -> Shape:
    r = a["repeats"]
    if r < 1:
        raise ShapeError(f"repeat_interleave repeats={r} must be positive", arg="repeats")
    s = list(shapes[0])
    s[a["dim"] - 1] *= r
    return tuple(s)


def _ri_form(c: TorchCall) -> dict[str, Any]:
    """x.repeat_interleave(repeats, dim) / torch.repeat_interleave(x, repeats, dim): a constant repeat count
    along one dim (without a dim torch flattens the batch in)."""
    r = call_arg(c, 1, "repeats")
    if isinstance(r, TensorArg) or not isinstance(r, int) or isinstance(r, bool):
        raise ShapeError("repeat_interleave with per-element repeats (a tensor); only one constant count is an op")
    d = call_arg(c, 2, "dim", None)
    if d is None:
        raise ShapeError("repeat_interleave without dim flattens the batch into the result")
    return {"repeats": r, "dim": sample_dim_arg(c, plain_value(d, "dim"))}


# ---- tile --------------------------------------------------------------------------------------------------
def _tile_shape(shapes: list[Shape], a: dict[str, Any]) -> Shape:
    s, reps = shapes[0], list(a["reps"])
    if len(reps) != len(s):
        raise ShapeError(f"tile reps {reps} need one count per dim of the input {list(s)} (batch not counted)",
                         arg="reps", hint="write 1 for a dim that is not repeated")
    if any(not isinstance(r, int) or isinstance(r, bool) or r < 1 for r in reps):
        raise ShapeError(f"tile reps {reps} must be positive", arg="reps")
    return tuple(d * r for d, r in zip(s, reps))


def _tile_form(c: TorchCall) -> dict[str, Any]:
    """x.tile(dims) / torch.tile(x, dims) / x.repeat(dims): constant counts, the batch's 1 (torch prepends 1s
    to dims shorter than the input's rank; x.repeat needs them all)."""
    dims = c.args[1:] if len(c.args) > 2 else call_arg(c, 1, "dims", None)
    if dims is None:
        dims = call_arg(c, 1, "repeats")
    reps = [plain_value(d, "dims") for d in (dims if isinstance(dims, (list, tuple)) else [dims])]
    if not all(isinstance(r, int) and not isinstance(r, bool) for r in reps):
        raise ShapeError("tile by counts computed in forward; only constant counts are an op")
    b = c.batch_axes[0]
    rank = len(c.in_shapes[0]) + (b != -1)
    if len(reps) > rank:
        raise ShapeError(f"tile by {len(reps)} counts adds dims to an input of rank {rank}")
    reps = [1] * (rank - len(reps)) + reps
    if b != -1:
        if reps[b] != 1:
            raise ShapeError("tile repeats the batch axis")
        del reps[b]
    return {"reps": reps}


# ---- the multi-output ops' PyTorch spellings ------------------------------------------------------------------
def _chunk_form(c: TorchCall) -> dict[str, Any]:
    """x.chunk(chunks, dim=0) / torch.chunk(x, chunks, dim=0) into equal parts (the language's chunk); an uneven
    one is :func:`_chunk_split_form`."""
    n = int(plain_value(call_arg(c, 1, "chunks"), "chunks"))
    dim = sample_dim_arg(c, plain_value(call_arg(c, 2, "dim", 0), "dim"))
    size = c.in_shapes[0][dim - 1]
    if n < 1 or size % n:
        raise ShapeError(f"chunk: {size} cannot be split into {n} equal parts")
    return {"chunks": n, "dim": dim}


def _chunk_split_form(c: TorchCall) -> dict[str, Any]:
    """An uneven x.chunk(chunks, dim) is the split torch makes of it: parts of ceil(size / chunks), the last
    smaller (torch.chunk of 88 by 3 is 30, 30, 28; of 6 by 4 is 2, 2, 2: fewer parts than asked)."""
    n = int(plain_value(call_arg(c, 1, "chunks"), "chunks"))
    dim = sample_dim_arg(c, plain_value(call_arg(c, 2, "dim", 0), "dim"))
    size = c.in_shapes[0][dim - 1]
    if n < 1 or size < 1:
        raise ShapeError(f"chunk: {size} cannot be split into {n} parts")
    step = -(-size // n)
    return {"sizes": [min(step, size - k) for k in range(0, size, step)], "dim": dim}


def _split_form(c: TorchCall) -> dict[str, Any]:
    """x.split(sizes, dim=0) / torch.split(x, sizes, dim=0): sizes as a list (an int is a chunk size, turned
    into the list it makes for this input)."""
    sizes = call_arg(c, 1, "split_size_or_sections", None)
    if sizes is None:           # Tensor.split's own keyword: x.split(split_size=2)
        sizes = call_arg(c, 1, "split_size")
    sizes = plain_value(sizes, "split_size_or_sections")
    dim = sample_dim_arg(c, plain_value(call_arg(c, 2, "dim", 0), "dim"))
    if isinstance(sizes, int):
        total = c.in_shapes[0][dim - 1]
        sizes = [min(sizes, total - k) for k in range(0, total, sizes)]
    return {"sizes": [int(s) for s in sizes], "dim": dim}


def _unbind_form(c: TorchCall) -> dict[str, Any]:
    """x.unbind(dim=0) / torch.unbind(x, dim=0)."""
    return {"dim": sample_dim_arg(c, plain_value(call_arg(c, 1, "dim", 0), "dim"))}


#: The PyTorch spellings of the multi-output ops (``MULTI_OUTPUT_OPS``), for the importer: each call's
#: outputs are the op's outputs in order (a tuple the traced code indexes).
MULTI_OUTPUT_FORMS: dict[str, tuple[TorchForm, ...]] = {
    "chunk": (TorchForm("method", "chunk", _chunk_form), TorchForm("function", "torch.chunk", _chunk_form)),
    "split": (TorchForm("method", "split", _split_form), TorchForm("function", "torch.split", _split_form),
              TorchForm("function", "torch.functional.split", _split_form),    # torch.split's own module
              # tried after chunk's own forms: an uneven chunk
              TorchForm("method", "chunk", _chunk_split_form), TorchForm("function", "torch.chunk", _chunk_split_form)),
    "unbind": (TorchForm("method", "unbind", _unbind_form), TorchForm("function", "torch.unbind", _unbind_form)),
}


_A = ArgSpec
register(
    OpDef("select", "shape", [_A("dim", "int"), _A("index", "int")], _select_shape,
          "One index of a dim, the dim removed (x.select(dim, index); batch is dim 0): select(1, 0) of [3, N, D] "
          "is x[:, 0], [N, D]; negative indices count from the end. unbind produces these.",
          normalize=_select_norm, key_args=("dim", "index"), emit=_select_emit, traits={"layout-sensitive"},
          torch_forms=(TorchForm("method", "select", _select_form),
                       TorchForm("function", "torch.select", _select_form))),
    OpDef("repeat_interleave", "shape", [_A("repeats", "int"), _A("dim", "int")], _ri_shape,
          "Repeat each element of a dim `repeats` times in place (x.repeat_interleave(repeats, dim); batch is "
          "dim 0): [a, b] -> [a, a, b, b].",
          normalize=_ri_norm, key_args=("repeats", "dim"),
          emit=lambda e: (In(0), ".repeat_interleave(", Lit(e.args["repeats"], "repeats"), ", dim=",
                          Lit(e.args["dim"], "dim"), ")"),
          traits={"layout-sensitive"},
          torch_forms=(TorchForm("method", "repeat_interleave", _ri_form),
                       TorchForm("function", "torch.repeat_interleave", _ri_form))),
    OpDef("tile", "shape", [_A("reps", "list")], _tile_shape,
          "Repeat the whole input reps[i] times along each per-sample dim i (x.tile; the batch is not repeated): "
          "tile([1, 2, 3]) of [C, H, W] is [C, 2H, 3W]. No parameters, 0 MACs (a copy, as fvcore counts it).",
          key_args=("reps",),
          emit=lambda e: (In(0), ".tile(", Lit((1, *e.args["reps"]), "reps"), ")"),
          traits={"layout-sensitive"},
          torch_forms=(TorchForm("method", "tile", _tile_form), TorchForm("function", "torch.tile", _tile_form),
                       TorchForm("method", "repeat", _tile_form))),
)
