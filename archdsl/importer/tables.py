"""Values without the batch axis in an imported body: buffers read in forward and computation on parameters.

A ``get_attr`` of a module's own buffer becomes ``buffer(...)`` labelled with the buffer's name (so the
state_dict loads strictly): ``init="loaded"`` when it is persistent (the checkpoint fills it); when it is not
(no state_dict key, the model computes it when built) its values are written as a literal list when small
enough (:attr:`Limits.max_literal_values`), or named by a known generator when they equal its output (Swin's
``relative_position_index``, BEiT's with a class token, timm's rotary position embedding tables: the
generator's arguments are read from the owning module's attributes as candidates, the values decide); anything
else is an :class:`ImportFailure` (the class is kept as a plugin). A tensor computed from constants alone while
tracing is such a buffer too, unlabelled (:func:`constant_buffer`).

Torch calls whose tensors all lack the batch axis (``gamma.reshape(1, -1, 1, 1)``, ``table[index]``,
``bias.permute(2, 0, 1)``, ``torch.cat((q_bias, k_bias, v_bias))``) are written here: torch's dim ``d`` of
such a value is the spec's dim ``d + 1`` (the spec counts dim 0 as the absent batch, docs/language.md).

torch is imported inside the functions only.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..limits import Limits
from ..ops.buffers import relative_position_index
from ..ops.rotary import ROTARY_DEFAULTS, ROTARY_INITS
from ..ops.tensor import HELPERS
from .snodes import SNode
from .trace import ImportFailure

__all__ = ["buffer_args", "constant_buffer", "wrapped_function", "rotary_table", "unbatched_op", "is_batchnorm_act",
           "VALUES_INDICES", "NoValue", "stale_alias"]

#: torch calls that return a (values, indices) pair when given a dim (x.max(1), torch.min(x, 0)): the values are
#: an op (amax, amin), the indices are not expressible
VALUES_INDICES = frozenset({"max", "min", "torch.max", "torch.min"})


class NoValue:
    """A traced value the spec cannot hold (the indices of x.max(dim)): using it is an ImportFailure, since the
    converter accepts only tensors, constants and parameters as arguments."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __repr__(self) -> str:
        return f"NoValue({self.what})"

_DTYPES = {"torch.float32": "float32", "torch.int64": "int64", "torch.bool": "bool"}


def buffer_args(module: Any, name: str, t: Any, what: str = "") -> dict[str, Any]:
    """The ``buffer(...)`` arguments reproducing ``module``'s buffer ``name`` (the tensor ``t``). ``what``: the
    tensor is no buffer but a value computed from constants alone (``module`` None), described so in errors:
    a non-persistent buffer."""
    dtype = _DTYPES.get(str(t.dtype))
    if dtype is None:
        raise ImportFailure(f"{what or f'buffer {name}'} of dtype {t.dtype} (buffers are float32, int64 or bool)")
    what = what or f"non-persistent buffer {name}"
    shape = [int(s) for s in t.shape]
    persistent = module is not None and name not in getattr(module, "_non_persistent_buffers_set", set())
    args: dict[str, Any] = {"shape": shape, "dtype": dtype}
    if persistent:
        args["init"] = "loaded"
        return args
    args["persistent"] = False
    flat = t.detach().reshape(-1).tolist()
    if t.numel() > 1:
        # constant fills by name rather than a literal list (BEiT's k_bias: a zero per channel in every block)
        for init, want in (("zeros", lambda i: 0), ("ones", lambda i: 1), ("arange", lambda i: i)):
            if (init != "arange" or dtype != "bool") and all(v == want(i) for i, v in enumerate(flat)):
                args["init"] = init
                return args
    for cls_token in (False, True):
        window = _rpi_window(t, cls_token)
        if window is not None:
            args["init"] = "relative_position_index_cls" if cls_token else "relative_position_index"
            args["window"] = window
            return args
    rotary = _rotary_args(module, t)
    if rotary is not None:
        args.update(rotary)
        return args
    if t.numel() > Limits().max_literal_values:
        raise ImportFailure(f"{what} of {t.numel()} values (more than "
                            f"{Limits().max_literal_values} cannot be written as a literal list, and they equal no "
                            "known generator)")
    if dtype == "float32" and not all(abs(v) < float("inf") for v in flat):
        raise ImportFailure(f"{what} holds non-finite values")
    args["values"] = [bool(v) for v in flat] if dtype == "bool" else \
        [int(v) for v in flat] if dtype == "int64" else [float(v) for v in flat]
    return args


def constant_buffer(what: str, t: Any) -> SNode:
    """The unlabelled non-persistent ``buffer`` node of a tensor without the batch axis that a call computed
    from constants alone (``what``: the call) while tracing: DINOv3's coordinate grid of the traced size,
    ``_build_grid((14, 14), ...)``. Its values are the traced ones, by the buffer's rules (a generator, a
    fill, a literal list); the round trip checks them at the traced input size."""
    args = buffer_args(None, "", t, what=f"a tensor computed from constants alone ({what})")
    return SNode("param", "buffer", args, None, [])


def wrapped_function(fn: Any) -> bool:
    """Whether ``fn`` is a function of the model's own code that fx recorded as one call (``torch.fx.wrap``:
    timm's ``_build_grid``), not one of torch's or Python's (``torch.arange(h)`` of a size stays a call the
    importer refuses: what follows it, ``meshgrid``, would be refused in turn, and the module that makes it is
    kept whole instead)."""
    module = getattr(fn, "__module__", None) or ""
    return callable(fn) and module.split(".")[0] not in ("torch", "operator", "_operator", "builtins", "math")


def _rpi_window(t: Any, cls_token: bool = False) -> list[int] | None:
    """The window ``[h, w]`` whose Swin relative position index ``t`` is (flat or square), or with
    ``cls_token`` BEiT's (one more row and column for the class token), else None."""
    if str(t.dtype) != "torch.int64" or t.numel() == 0:
        return None
    n = t.numel()
    side = round(n ** 0.5)
    area = side - 1 if cls_token else side
    if side * side != n or area < 1 or not (t.dim() == 1 or tuple(t.shape) == (side, side)):
        return None
    flat = t.reshape(-1).tolist()
    for h in range(1, area + 1):
        if area % h == 0 and relative_position_index(h, area // h, cls_token) == flat:
            return [h, area // h]
    return None


def _rotary_args(module: Any, t: Any) -> dict[str, Any] | None:
    """The ``buffer(...)`` arguments of a rotary init whose table equals the float32 ``t`` (within 1e-6 of each
    value's magnitude, at least 1), trying the parameters a timm ``RotaryEmbedding(Cat)`` keeps as attributes
    (``feat_shape``, ``ref_feat_shape``, ``temperature``, ``grid_offset``, ``grid_indexing``, ``rotate_half``)
    and timm's defaults on a square grid; else None."""
    if str(t.dtype) != "torch.float32" or t.dim() != 2 or t.shape[1] % 4:
        return None
    n, width = int(t.shape[0]), int(t.shape[1])
    got: dict[str, Any] = {}
    for key, attr, ok in (("window", "feat_shape", _int_pair), ("ref_window", "ref_feat_shape", _int_pair),
                          ("temperature", "temperature", _number), ("offset", "grid_offset", _number),
                          ("indexing", "grid_indexing", lambda v: v if v in ("ij", "xy") else None),
                          ("rotate_half", "rotate_half", lambda v: v if isinstance(v, bool) else None)):
        v = ok(getattr(module, attr, None))
        if v is not None:
            got[key] = v
    side = round(n ** 0.5)
    candidates = [{**ROTARY_DEFAULTS, "window": [side, side]}]
    if "window" in got:
        candidates.insert(0, {**ROTARY_DEFAULTS, **got})
    for cand in candidates:
        h, w = cand["window"]
        if h * w != n:
            continue
        for init, part in ROTARY_INITS.items():
            per_band = 8 if part == "sin_cos" else 4
            if width % per_band:
                continue
            want = rotary_table(h, w, width // per_band, cand["temperature"], cand["ref_window"], cand["offset"],
                                cand["indexing"], cand["rotate_half"], part)
            if tuple(want.shape) == tuple(t.shape) and \
                    bool(((want - t).abs() <= 1e-6 * want.abs().clamp(min=1.0)).all()):
                out = {"init": init, "window": [h, w]}
                out.update({k: v for k, v in cand.items() if k in ROTARY_DEFAULTS and v != ROTARY_DEFAULTS[k]})
                return out
    return None


_ROTARY_FN: list[Callable[..., Any]] = []


def rotary_table(win_h: int, win_w: int, num_bands: int, temperature: float = 10000.0,
                 ref_window: tuple[int, int] | list[int] | None = None, offset: float = 0.0, indexing: str = "ij",
                 rotate_half: bool = False, part: str = "sin_cos") -> Any:
    """The table a rotary buffer's generated code builds (a float32 tensor), computed by the same helper text
    (``HELPERS["rotary_embedding"]``, trusted text of :mod:`archdsl.ops.rotary`, never spec text)."""
    if not _ROTARY_FN:
        import torch
        ns: dict[str, Any] = {"torch": torch}
        exec(compile(HELPERS["rotary_embedding"], "<archdsl rotary_embedding helper>", "exec"), ns)  # noqa: S102
        _ROTARY_FN.append(ns["_rotary_embedding"])
    ref_h, ref_w = ref_window if ref_window is not None else (0, 0)
    return _ROTARY_FN[0](win_h, win_w, num_bands, float(temperature), ref_h, ref_w, float(offset), indexing == "xy",
                         rotate_half, part)


def _int_pair(v: Any) -> list[int] | None:
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, int) and x > 0 for x in v):
        return [int(x) for x in v]
    return None


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) < float("inf") else None


def _dims(dims: Any) -> list[int]:
    if isinstance(dims, int):
        return [dims]
    return [int(d) for d in dims]


def unbatched_op(kind: str, target: str, args: tuple[Any, ...], kwargs: dict[str, Any],
                 shapes: list[tuple[int, ...]], out_shape: tuple[int, ...]) -> tuple[str, dict[str, Any]] | None:
    """The spec op and its arguments for a torch call on values without the batch axis (``shapes``: their
    whole shapes, ``out_shape`` the traced result's), or None when it is not one written here (the op's own
    torch form is tried then)."""
    rank = len(shapes[0]) if shapes else 0

    def spec(d: int) -> int:
        return d % rank + 1
    if (kind, target) in (("method", "reshape"), ("method", "view"), ("function", "torch.reshape"),
                          ("method", "flatten"), ("function", "torch.flatten"), ("method", "unsqueeze"),
                          ("function", "torch.unsqueeze"), ("method", "squeeze"), ("method", "contiguous")):
        if len(shapes) != 1:
            return None
        if target == "contiguous" or tuple(shapes[0]) == tuple(out_shape):
            return "identity", {}
        return "reshape", {"shape": list(out_shape)}
    if (kind, target) in (("method", "permute"), ("function", "torch.permute")):
        dims = args[1:] if len(args) > 2 else args[1] if len(args) > 1 else kwargs.get("dims")
        return "permute", {"dims": [0] + [spec(d) for d in _dims(dims)]}
    if (kind, target) in (("method", "transpose"), ("function", "torch.transpose")):
        d0 = args[1] if len(args) > 1 else kwargs["dim0"]
        d1 = args[2] if len(args) > 2 else kwargs["dim1"]
        return "transpose", {"dim0": spec(d0), "dim1": spec(d1)}
    if (kind, target) in (("function", "torch.cat"), ("function", "torch.concat")):
        d = args[1] if len(args) > 1 else kwargs.get("dim", 0)
        return "concat", {"dim": spec(d)}
    return None


def is_batchnorm_act(m: Any) -> bool:
    """timm's ``BatchNormAct2d``: an ``nn.BatchNorm2d`` subclass whose forward is BatchNorm2d's (the same
    F.batch_norm call on its own weight, bias and running statistics, cumulative average when momentum is
    None) then ``self.drop`` and ``self.act``. It is the ``batchnorm`` op labelled with its path (the same
    state_dict keys) followed by the act (and the dropout when there is one)."""
    cls = type(m)
    if cls.__name__ != "BatchNormAct2d" or not cls.__module__.startswith("timm.") \
            or not any(_is(c, "torch.nn.modules.batchnorm", "BatchNorm2d") for c in cls.__mro__):
        return False
    return (_is_module(getattr(m, "act", None)) and _is_module(getattr(m, "drop", None))
            and bool(m.track_running_stats) and m.running_mean is not None)


def _is(cls: type, module: str, name: str) -> bool:
    return cls.__module__ == module and cls.__name__ == name


def _is_module(obj: Any) -> bool:
    """An nn.Module instance (by its class's bases: this module does not import torch)."""
    return obj is not None and any(_is(c, "torch.nn.modules.module", "Module") for c in type(obj).__mro__)


def stale_alias(graph: Any, n: Any, vals: dict[str, Any]) -> str | None:
    """For an in-place method ``n`` (``x.add_(y)``), the name of a value made before it that shares ``x``'s
    storage (a view of it, or what it views) and is read after it, or None. The importer rebinds ``x`` to the
    result; such a value would see the change too, which a spec (no aliasing) cannot say."""
    def storage(name: str) -> int | None:
        t: Any = getattr(vals.get(name), "value", None)
        return int(t.untyped_storage().data_ptr()) if hasattr(t, "untyped_storage") else None
    src = n.args[0]
    mine = storage(src.name)
    before, after = set(), False
    for m in graph.nodes:
        if m is n:
            after = True
        elif not after:
            before.add(m.name)
        else:
            for q in m.all_input_nodes:
                if q is not src and q.name in before and mine is not None and storage(q.name) == mine:
                    return q.name
    return None if mine is not None else src.name
