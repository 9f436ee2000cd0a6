"""The op registry: every built-in layer's signature, shape rule, parameter and MAC count.

This is the language's semantics for layers; codegen holds how each op is emitted in PyTorch.
Shapes are per sample: ``(C, H, W)`` for feature maps, ``(F,)`` for vectors.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

__all__ = ["REQUIRED", "ArgSpec", "OpDef", "OPS", "ShapeError", "OP_FAMILIES", "conv_out", "pool_out"]


class _Required:
    def __repr__(self) -> str:
        return "<required>"


REQUIRED: Any = _Required()


class ShapeError(Exception):
    """Raised by a shape rule; ``arg`` names the argument to point the caret at."""

    def __init__(self, message: str, arg: str | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.arg = arg
        self.hint = hint


@dataclass(frozen=True)
class ArgSpec:
    """One argument of an op: name, type tag and default."""

    name: str
    type: str
    default: Any = REQUIRED
    choices: tuple[Any, ...] | None = None
    doc: str = ""


Shape = tuple[int, ...]


@dataclass
class OpDef:
    """A built-in op. ``shape`` maps (input shapes, bound args) to the output shape."""

    name: str
    family: str
    args: list[ArgSpec]
    shape: Callable[[list[Shape], dict[str, Any]], Shape]
    doc: str
    params: Callable[[list[Shape], dict[str, Any]], int] = lambda s, a: 0
    macs: Callable[[list[Shape], Shape, dict[str, Any]], int] = lambda s, o, a: 0
    stateful: bool = False
    arity: int = 1                      # number of tensor inputs; -1: any (>= 1)
    aliases: tuple[str, ...] = ()
    normalize: Callable[[list[Shape], dict[str, Any]], dict[str, Any]] | None = None
    key_args: tuple[str, ...] = field(default_factory=tuple)  # shown in diagrams


OP_FAMILIES = ("input", "conv", "linear", "norm", "pool", "act", "dropout", "merge", "shape", "identity")


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, (list, tuple)):
        return int(v[0]), int(v[1])
    return int(v), int(v)


def _need_rank(shapes: list[Shape], rank: int, what: str) -> Shape:
    s = shapes[0]
    if len(s) != rank:
        names = {3: "a feature map [C, H, W]", 1: "a vector [F]"}
        hint = "add 'flatten' before it" if rank == 1 else None
        raise ShapeError(f"{what} expects {names.get(rank, f'rank {rank}')}, got {list(s)}", hint=hint)
    return s


def conv_out(size: int, k: int, s: int, p: int, d: int, ceil: bool = False) -> int:
    """Output length of a conv/pool window (PyTorch's formula, ceil_mode included)."""
    eff = d * (k - 1) + 1
    num = size + 2 * p - eff
    if num < 0:
        return 0
    out = (-(-num // s) if ceil else num // s) + 1
    if ceil and (out - 1) * s >= size + p:  # the last window must start inside the input or left padding
        out -= 1
    return out


def pool_out(size: int, k: int, s: int, p: int, d: int, ceil: bool) -> int:
    return conv_out(size, k, s, p, d, ceil)


# ---- conv ------------------------------------------------------------------------------------------
def _conv_norm(shapes: list[Shape], a: dict[str, Any]) -> dict[str, Any]:
    a = dict(a)
    a["kernel_size"] = _pair(a["kernel_size"])
    a["stride"] = _pair(a["stride"])
    a["dilation"] = _pair(a["dilation"])
    p = a["padding"]
    if isinstance(p, str):
        if p == "valid":
            a["padding"] = (0, 0)
        elif p == "same":
            if a["stride"] != (1, 1):
                raise ShapeError("padding='same' needs stride 1", arg="padding",
                                 hint="give the padding as a number, e.g. padding=k // 2")
            tot = [d * (k - 1) for d, k in zip(a["dilation"], a["kernel_size"])]
            if any(t % 2 for t in tot):
                raise ShapeError("padding='same' with an even effective kernel pads unevenly", arg="padding",
                                 hint="use an odd kernel size")
            a["padding"] = (tot[0] // 2, tot[1] // 2)
        else:
            raise ShapeError(f"padding must be a number, a pair, 'same' or 'valid', got '{p}'", arg="padding")
    else:
        a["padding"] = _pair(p)
    a["in_channels"] = shapes[0][0] if shapes and len(shapes[0]) == 3 else None
    return a


def _check_positive(a: dict[str, Any], names: Sequence[str], allow_zero: Sequence[str] = ()) -> None:
    for n in names:
        v = a[n]
        vals = v if isinstance(v, tuple) else (v,)
        lo = 0 if n in allow_zero else 1
        for x in vals:
            if x < lo:
                what = "non-negative" if lo == 0 else "positive"
                raise ShapeError(f"{n} must be {what}, got {x}", arg=n)


def _conv_shape(shapes: list[Shape], a: dict[str, Any]) -> Shape:
    c, h, w = _need_rank(shapes, 3, "conv2d")
    _check_positive(a, ["out_channels", "kernel_size", "stride", "dilation", "groups"])
    _check_positive(a, ["padding"], allow_zero=["padding"])
    g = a["groups"]
    if c % g:
        raise ShapeError(f"groups={g} does not divide the {c} input channels", arg="groups",
                         hint=f"groups must divide both channel counts; divisors of {c}: "
                              + ", ".join(str(x) for x in _divisors(c)))
    if a["out_channels"] % g:
        raise ShapeError(f"groups={g} does not divide out_channels={a['out_channels']}", arg="groups")
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = a["kernel_size"], a["stride"], a["padding"], a["dilation"]
    oh, ow = conv_out(h, kh, sh, ph, dh), conv_out(w, kw, sw, pw, dw)
    if oh <= 0 or ow <= 0:
        raise ShapeError(
            f"kernel {kh}x{kw} (dilation {dh}x{dw}) is larger than the padded input "
            f"{h + 2 * ph}x{w + 2 * pw}", arg="kernel_size",
            hint=f"the input here is {list(shapes[0])}; use a smaller kernel, more padding, or less downsampling before")
    return (a["out_channels"], oh, ow)


def _conv_params(shapes: list[Shape], a: dict[str, Any]) -> int:
    c = shapes[0][0]
    kh, kw = a["kernel_size"]
    return a["out_channels"] * (c // a["groups"]) * kh * kw + (a["out_channels"] if a["bias"] else 0)


def _conv_macs(shapes: list[Shape], out: Shape, a: dict[str, Any]) -> int:
    c = shapes[0][0]
    kh, kw = a["kernel_size"]
    return math.prod(out) * (c // a["groups"]) * kh * kw


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, min(n, 64) + 1) if n % d == 0]


# ---- linear / norm ---------------------------------------------------------------------------------
def _linear_shape(shapes: list[Shape], a: dict[str, Any]) -> Shape:
    # nn.Linear works on the last dim of any rank (ConvNeXt applies it to channels-last [H, W, C]).
    _check_positive(a, ["out_features"])
    return (*shapes[0][:-1], a["out_features"])


def _linear_params(shapes: list[Shape], a: dict[str, Any]) -> int:
    return shapes[0][-1] * a["out_features"] + (a["out_features"] if a["bias"] else 0)


def _bn_shape(shapes: list[Shape], a: dict[str, Any]) -> Shape:
    s = shapes[0]
    if len(s) not in (1, 3):
        raise ShapeError(f"batchnorm expects [C, H, W] or [F], got {list(s)}")
    if a["eps"] <= 0:
        raise ShapeError(f"eps must be positive, got {a['eps']}", arg="eps")
    return s


# ---- pooling ---------------------------------------------------------------------------------------
def _pool_norm(shapes: list[Shape], a: dict[str, Any]) -> dict[str, Any]:
    a = dict(a)
    a["kernel_size"] = _pair(a["kernel_size"])
    a["stride"] = _pair(a["stride"]) if a["stride"] is not None else a["kernel_size"]
    a["padding"] = _pair(a["padding"])
    if "dilation" in a:
        a["dilation"] = _pair(a["dilation"])
    return a


def _pool_shape(op: str) -> Callable[[list[Shape], dict[str, Any]], Shape]:
    def rule(shapes: list[Shape], a: dict[str, Any]) -> Shape:
        c, h, w = _need_rank(shapes, 3, op)
        _check_positive(a, ["kernel_size", "stride"])
        _check_positive(a, ["padding"], allow_zero=["padding"])
        (kh, kw), (sh, sw), (ph, pw) = a["kernel_size"], a["stride"], a["padding"]
        dh, dw = a.get("dilation", (1, 1))
        if ph > kh // 2 or pw > kw // 2:
            raise ShapeError(f"padding {ph}x{pw} is more than half the kernel {kh}x{kw}", arg="padding",
                             hint="PyTorch requires pad <= kernel_size // 2 for pooling")
        oh = pool_out(h, kh, sh, ph, dh, a["ceil_mode"])
        ow = pool_out(w, kw, sw, pw, dw, a["ceil_mode"])
        if oh <= 0 or ow <= 0:
            raise ShapeError(f"pooling window {kh}x{kw} is larger than the padded input {h + 2 * ph}x{w + 2 * pw}",
                             arg="kernel_size", hint=f"the input here is {list(shapes[0])}")
        return (c, oh, ow)
    return rule


def _adaptive_norm(shapes: list[Shape], a: dict[str, Any]) -> dict[str, Any]:
    a = dict(a)
    a["output_size"] = _pair(a["output_size"])
    return a


def _adaptive_shape(shapes: list[Shape], a: dict[str, Any]) -> Shape:
    c, h, w = _need_rank(shapes, 3, "adaptive pooling")
    _check_positive(a, ["output_size"])
    return (c, *a["output_size"])


# ---- shape ops ---------------------------------------------------------------------------------------
def _flatten_shape(shapes: list[Shape], a: dict[str, Any]) -> Shape:
    return (math.prod(shapes[0]),)


def _same(shapes: list[Shape], a: dict[str, Any]) -> Shape:
    return shapes[0]


def _dropout_shape(shapes: list[Shape], a: dict[str, Any]) -> Shape:
    if not 0.0 <= a["p"] <= 1.0:
        raise ShapeError(f"dropout probability must be between 0 and 1, got {a['p']}", arg="p")
    return shapes[0]


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


def broadcast(shapes: list[Shape], what: str) -> Shape:
    """Numpy-style broadcasting of per-sample shapes, with a precise message when it fails."""
    rank = max(len(s) for s in shapes)
    padded = [(1,) * (rank - len(s)) + tuple(s) for s in shapes]
    out = []
    for i in range(rank):
        dims = {p[i] for p in padded if p[i] != 1}
        if len(dims) > 1:
            names = ["C", "H", "W"] if rank == 3 else [f"dim{j}" for j in range(rank)]
            raise ShapeError(f"{what}: shapes " + ", ".join(str(list(s)) for s in shapes)
                             + f" do not match in {names[i]} ({' vs '.join(str(p[i]) for p in padded)})")
        out.append(dims.pop() if dims else 1)
    return tuple(out)


def _add_shape(shapes: list[Shape], a: dict[str, Any]) -> Shape:
    return broadcast(shapes, "add")


def _mul_shape(shapes: list[Shape], a: dict[str, Any]) -> Shape:
    return broadcast(shapes, "mul")


def _concat_shape(shapes: list[Shape], a: dict[str, Any]) -> Shape:
    d = a["dim"]
    rank = len(shapes[0])
    if not 1 <= d <= rank:
        raise ShapeError(f"concat dim={d} is out of range for {list(shapes[0])} (batch is dim 0)", arg="dim")
    for s in shapes[1:]:
        if len(s) != rank or any(s[i] != shapes[0][i] for i in range(rank) if i != d - 1):
            raise ShapeError("concat: shapes " + ", ".join(str(list(x)) for x in shapes)
                             + f" differ outside dim {d}",
                             hint="all branches must keep the same spatial size")
    out = list(shapes[0])
    out[d - 1] = sum(s[d - 1] for s in shapes)
    return tuple(out)


def _act(name: str, doc: str, args: list[ArgSpec] | None = None, aliases: tuple[str, ...] = ()) -> OpDef:
    return OpDef(name, "act", args or [], _same, doc, aliases=aliases)


_A = ArgSpec
OPS: dict[str, OpDef] = {}


def _register(*defs: OpDef) -> None:
    for d in defs:
        OPS[d.name] = d
        for al in d.aliases:
            OPS[al] = d


_register(
    OpDef("conv2d", "conv", [
        _A("out_channels", "int"), _A("kernel_size", "int2"), _A("stride", "int2", 1),
        _A("padding", "padding", 0), _A("dilation", "int2", 1), _A("groups", "int", 1),
        _A("bias", "bool", True), _A("padding_mode", "str", "zeros", ("zeros", "reflect", "replicate", "circular")),
    ], _conv_shape, "2-D convolution; input channels are inferred.", params=_conv_params, macs=_conv_macs,
        stateful=True, normalize=_conv_norm, key_args=("kernel_size", "stride", "groups")),
    OpDef("linear", "linear", [_A("out_features", "int"), _A("bias", "bool", True)], _linear_shape,
          "Fully connected layer on the last dim ([F], or e.g. channels-last [H, W, C]).", params=_linear_params,
          macs=lambda s, o, a: math.prod(s[0]) * a["out_features"], stateful=True, key_args=("out_features",)),
    OpDef("batchnorm", "norm", [_A("eps", "float", 1e-5), _A("momentum", "float", 0.1), _A("affine", "bool", True),
                                 _A("track_running_stats", "bool", True)], _bn_shape,
          "Batch normalization over channels (2-D for [C,H,W], 1-D for [F]).",
          params=lambda s, a: 2 * s[0][0] if a["affine"] else 0, stateful=True),
    OpDef("maxpool", "pool", [_A("kernel_size", "int2"), _A("stride", "int2?", None), _A("padding", "int2", 0),
                              _A("dilation", "int2", 1), _A("ceil_mode", "bool", False)], _pool_shape("maxpool"),
          "Max pooling (stride defaults to the kernel size).", normalize=_pool_norm, key_args=("kernel_size", "stride")),
    OpDef("avgpool", "pool", [_A("kernel_size", "int2"), _A("stride", "int2?", None), _A("padding", "int2", 0),
                              _A("ceil_mode", "bool", False), _A("count_include_pad", "bool", True)],
          _pool_shape("avgpool"), "Average pooling (stride defaults to the kernel size).", normalize=_pool_norm,
          key_args=("kernel_size", "stride")),
    OpDef("adaptive_avgpool", "pool", [_A("output_size", "int2")], _adaptive_shape,
          "Adaptive average pooling to a fixed output size.", normalize=_adaptive_norm, key_args=("output_size",)),
    OpDef("adaptive_maxpool", "pool", [_A("output_size", "int2")], _adaptive_shape,
          "Adaptive max pooling to a fixed output size.", normalize=_adaptive_norm, key_args=("output_size",)),
    _act("relu", "max(x, 0)"),
    _act("relu6", "min(max(x, 0), 6)"),
    _act("sigmoid", "1 / (1 + exp(-x))"),
    _act("tanh", "hyperbolic tangent"),
    _act("gelu", "Gaussian error linear unit", [_A("approximate", "str", "none", ("none", "tanh"))]),
    _act("silu", "x * sigmoid(x) (also called swish)", aliases=("swish",)),
    _act("hardswish", "x * relu6(x + 3) / 6"),
    _act("hardsigmoid", "relu6(x + 3) / 6"),
    _act("leaky_relu", "max(x, 0) + negative_slope * min(x, 0)", [_A("negative_slope", "float", 0.01)]),
    OpDef("dropout", "dropout", [_A("p", "float", 0.5)], _dropout_shape, "Dropout (identity in eval mode).",
          key_args=("p",)),
    OpDef("flatten", "shape", [], _flatten_shape, "Flatten [C, H, W] to [C*H*W]."),
    OpDef("identity", "identity", [], _same, "The input, unchanged (a shortcut branch)."),
    OpDef("channel_shuffle", "shape", [_A("groups", "int")], _shuffle_shape,
          "ShuffleNet channel shuffle: [g, C/g] -> [C/g, g].", key_args=("groups",)),
    OpDef("add", "merge", [], _add_shape, "Element-wise sum of the branches (broadcasting).", arity=-1),
    OpDef("mul", "merge", [], _mul_shape, "Element-wise product of the branches (broadcasting).", arity=-1),
    OpDef("concat", "merge", [_A("dim", "int", 1)], _concat_shape,
          "Concatenation of the branches along dim (1 = channels; batch is dim 0).", arity=-1),
    # narrow is produced by chunk/split over named values; it is not written directly.
    OpDef("narrow", "shape", [_A("dim", "int"), _A("start", "int"), _A("length", "int")], _narrow_shape,
          "A slice of the channels (from chunk/split)."),
)

# Ops that produce several tensors: handled by the lowering, listed here for name lookup and docs.
MULTI_OUTPUT_OPS = {
    "chunk": [ArgSpec("chunks", "int"), ArgSpec("dim", "int", 1)],
    "split": [ArgSpec("sizes", "list"), ArgSpec("dim", "int", 1)],
}
__all__ += ["MULTI_OUTPUT_OPS", "broadcast"]


# ---- transformer-style ops (ConvNeXt): layernorm, permute, layer_scale, drop_path ---------------------
def _feature_dim(shapes: list[Shape], a: dict[str, Any], what: str) -> dict[str, Any]:
    """Resolve ``dim`` (batch is dim 0) to the 1-based dim the op works on.

    ``none`` means the channels of a [C, H, W] map and the last dim of any other rank: a rank-3 shape
    cannot tell channels-first from channels-last by itself, so after a ``permute`` to [H, W, C] the
    spec says ``dim=-1``.
    """
    a = dict(a)
    rank = len(shapes[0])
    d = a["dim"]
    if d is None:
        d = 1 if rank == 3 else rank
    elif isinstance(d, bool) or not isinstance(d, int):
        raise ShapeError(f"dim must be an integer or none, got {d!r}", arg="dim")
    elif d < 0:
        d = rank + 1 + d
    if not 1 <= d <= rank:
        raise ShapeError(f"{what} dim={a['dim']} is out of range for {list(shapes[0])} (batch is dim 0)", arg="dim",
                         hint=f"use dim=1 for channels or dim=-1 for the last dim (here {rank})")
    a["dim"] = d
    return a


def _layernorm_norm(shapes: list[Shape], a: dict[str, Any]) -> dict[str, Any]:
    a = _feature_dim(shapes, a, "layernorm")
    rank = len(shapes[0])
    # nn.LayerNorm normalizes trailing dims; channels-first maps are permuted around it (LayerNorm2d),
    # any other non-last dim has no torchvision counterpart.
    if a["dim"] != rank and not (a["dim"] == 1 and rank == 3):
        raise ShapeError(f"layernorm normalizes the channels of [C, H, W] or the last dim; dim={a['dim']} "
                         f"is neither for {list(shapes[0])}", arg="dim", hint="permute the dim to the end first")
    a["normalized"] = shapes[0][a["dim"] - 1]
    return a


def _layernorm_shape(shapes: list[Shape], a: dict[str, Any]) -> Shape:
    if a["eps"] <= 0:
        raise ShapeError(f"eps must be positive, got {a['eps']}", arg="eps")
    return shapes[0]


def _permute_norm(shapes: list[Shape], a: dict[str, Any]) -> dict[str, Any]:
    a = dict(a)
    dims = a["dims"]
    rank = len(shapes[0])
    if not all(isinstance(d, int) and not isinstance(d, bool) for d in dims):
        raise ShapeError(f"permute dims must be integers, got {dims}", arg="dims")
    if sorted(dims) != list(range(rank + 1)):
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


def layer_scale_shape(shape: Shape, dim: int) -> Shape:
    """Shape of the learnable scale: (C, 1, 1) for channels of [C, H, W] (torchvision), (F,) for the last dim."""
    if dim == len(shape):
        return (shape[-1],)
    return (shape[dim - 1],) + (1,) * (len(shape) - dim)


def _drop_path_shape(shapes: list[Shape], a: dict[str, Any]) -> Shape:
    if not 0.0 <= a["p"] <= 1.0:
        raise ShapeError(f"drop_path probability must be between 0 and 1, got {a['p']}", arg="p")
    return shapes[0]


_register(
    OpDef("layernorm", "norm", [_A("eps", "float", 1e-5), _A("affine", "bool", True), _A("dim", "int?", None)],
          _layernorm_shape,
          "Layer normalization over one dim: the channels of [C, H, W] (torchvision LayerNorm2d) or the last dim "
          "(nn.LayerNorm, e.g. after permute to [H, W, C]: dim=-1).",
          params=lambda s, a: 2 * a["normalized"] if a["affine"] else 0, stateful=True,
          normalize=_layernorm_norm, aliases=("layer_norm",)),
    OpDef("permute", "shape", [_A("dims", "list")], _permute_shape,
          "Reorder dims, batch included (torch.permute): permute([0, 2, 3, 1]) makes [C, H, W] channels-last.",
          normalize=_permute_norm, key_args=("dims",)),
    OpDef("layer_scale", "norm", [_A("init", "float", 1e-6), _A("dim", "int?", None)], _same,
          "A learnable per-channel scale (ConvNeXt), stored as a parameter named by the label; shape (C, 1, 1) "
          "for the channels of [C, H, W], (F,) for the last dim.",
          params=lambda s, a: s[0][a["dim"] - 1], stateful=True,
          normalize=lambda s, a: _feature_dim(s, a, "layer_scale"), key_args=("init",)),
    OpDef("drop_path", "dropout", [_A("p", "float", 0.0), _A("mode", "str", "row", ("row", "batch"))],
          _drop_path_shape,
          "Stochastic depth (torchvision StochasticDepth): in training, zero whole samples ('row') or the whole "
          "batch ('batch') with probability p and rescale by 1/(1-p); identity in eval.",
          aliases=("stochastic_depth",), key_args=("p",)),
)
__all__ += ["layer_scale_shape"]


# ---- attention and tensor-arithmetic ops (SK/ResNeSt split attention, SE, Inception-ResNet) -----------
# Dims follow torch with the batch as dim 0 (1 = channels); negative dims count from the end. None of these
# own parameters, and none count MACs: the reference counts (fvcore) include only conv/linear/matmul.
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


_register(
    OpDef("softmax", "act", [_A("dim", "int", 1)], _same,
          "Softmax along dim (batch is dim 0; 1 = channels), e.g. over the radix of split attention.",
          normalize=_softmax_norm, key_args=("dim",)),
    OpDef("mean", "shape", [_A("dim", "dims"), _A("keepdim", "bool", False)], _reduce_shape,
          "Mean over one dim or a list of dims (batch is dim 0): mean([2, 3], keepdim=true) is global average "
          "pooling to [C, 1, 1].", normalize=_dims_norm("mean"), key_args=("dim",)),
    # not called `sum`: that name is the built-in sum of a list of numbers
    OpDef("reduce_sum", "shape", [_A("dim", "dims"), _A("keepdim", "bool", False)], _reduce_shape,
          "Sum over one dim or a list of dims (batch is dim 0): reduce_sum(1) adds the branches of a stack.",
          normalize=_dims_norm("reduce_sum"), key_args=("dim",)),
    OpDef("reshape", "shape", [_A("shape", "list")], lambda s, a: a["shape"],
          "Reshape each sample (batch kept): one size may be -1 and is inferred.", normalize=_reshape_norm,
          aliases=("view",), key_args=("shape",)),
    OpDef("scale", "act", [_A("factor", "float")], _same,
          "Multiply by a constant (Inception-ResNet's residual scaling).", key_args=("factor",)),
)
