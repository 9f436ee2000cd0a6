"""Built-in ops, layers: conv, linear, norms, pooling, activations, dropout (one OpDef each)."""
from __future__ import annotations

import math
from typing import Any, Callable

from .core import (MOD, ArgSpec, EmitArgs, Expr, In, Kw, Lit, OpDef, Shape, ShapeError, TorchCall, TorchForm,
                   _check_positive, _need_rank, _pair, _same, conv_out, int_or_pair, layer_scale_shape, pool_out,
                   register)
from .forms import need_batch_first

__all__: list[str] = []


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
    if len(s) not in (1, 2, 3, 4):
        raise ShapeError(f"batchnorm expects [C, H, W], [C, T, H, W], a sequence [C, L] or [F], got {list(s)}")
    if a["eps"] <= 0:
        raise ShapeError(f"eps must be positive, got {a['eps']}", arg="eps")
    return s


def _bn_form(ranks: tuple[int, ...]) -> Callable[[TorchCall], dict[str, Any] | None]:
    """nn.BatchNorm1d (on [C, L] or [F]) / 2d (on [C, H, W]) / 3d (on [C, T, H, W]): the module's own
    settings; another per-sample rank is not this form. momentum=None (a cumulative average) has no
    spelling here."""
    def form(c: TorchCall) -> dict[str, Any] | None:
        need_batch_first(c, "BatchNorm")
        if len(c.in_shapes[0]) not in ranks:
            return None
        m = c.module
        if m.momentum is None:
            raise ShapeError("BatchNorm with momentum=None (a cumulative average) has no batchnorm argument")
        return {"eps": float(m.eps), "momentum": float(m.momentum), "affine": bool(m.affine),
                "track_running_stats": bool(m.track_running_stats)}
    return form


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



def _dropout_shape(shapes: list[Shape], a: dict[str, Any]) -> Shape:
    if not 0.0 <= a["p"] <= 1.0:
        raise ShapeError(f"dropout probability must be between 0 and 1, got {a['p']}", arg="p")
    return shapes[0]



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




def _drop_path_shape(shapes: list[Shape], a: dict[str, Any]) -> Shape:
    if not 0.0 <= a["p"] <= 1.0:
        raise ShapeError(f"drop_path probability must be between 0 and 1, got {a['p']}", arg="p")
    return shapes[0]


# ---- emission ----------------------------------------------------------------------------------------------
def _v(x: Any) -> Any:
    """A kernel/stride/padding value as PyTorch code writes it (3 for (3, 3))."""
    return int_or_pair(x).value


def _conv_ctor(e: EmitArgs) -> Expr:
    a = e.args
    return ("nn.Conv2d(", Lit(e.in_shapes[0][0], "in_channels"), ", ", Lit(a["out_channels"], "out_channels"), ", ",
            int_or_pair(a["kernel_size"], "kernel_size"), Kw("stride", _v(a["stride"]), 1),
            Kw("padding", _v(a["padding"]), 0), Kw("dilation", _v(a["dilation"]), 1), Kw("groups", a["groups"], 1),
            Kw("bias", a["bias"], True), Kw("padding_mode", a["padding_mode"], "zeros"), ")")


def _conv_emit(e: EmitArgs) -> Expr:
    a = e.args
    if (e.inference and a["kernel_size"] == (1, 1) and a["stride"] == (1, 1) and a["padding"] == (0, 0)
            and a["groups"] == e.in_shapes[0][0] == a["out_channels"] and len(e.in_shapes[0]) == 3):
        # a depthwise 1x1 conv (in a deploy form: a BatchNorm kept between nonlinearities) is a per-channel
        # multiply-add; PyTorch's CPU conv runs it group by group, ~100x slower
        return ("_channel_affine(", In(0), ", ", MOD, ".weight, ", MOD, ".bias)")
    return (MOD, "(", In(0), ")")


def _linear_ctor(e: EmitArgs) -> Expr:
    return ("nn.Linear(", Lit(e.in_shapes[0][-1], "in_features"), ", ", Lit(e.args["out_features"], "out_features"),
            Kw("bias", e.args["bias"], True), ")")


def _bn_ctor(e: EmitArgs) -> Expr:
    a = e.args
    cls = {4: "nn.BatchNorm3d(", 3: "nn.BatchNorm2d("}.get(len(e.shape), "nn.BatchNorm1d(")
    return (cls, Lit(e.shape[0], "num_features"), Kw("eps", a["eps"], 1e-5), Kw("momentum", a["momentum"], 0.1),
            Kw("affine", a["affine"], True), Kw("track_running_stats", a["track_running_stats"], True), ")")


def _ln_ctor(e: EmitArgs) -> Expr:
    a = e.args
    return ("nn.LayerNorm(", Lit(a["normalized"], "normalized_shape"), Kw("eps", a["eps"], 1e-5),
            Kw("elementwise_affine", a["affine"], True), ")")


def _ln_emit(e: EmitArgs) -> Expr:
    if e.args["dim"] != len(e.shape):
        # torchvision's LayerNorm2d: normalize the channels of [C, H, W] in channels-last layout
        return (MOD, "(", In(0), ".permute(0, 2, 3, 1)).permute(0, 3, 1, 2)")
    return (MOD, "(", In(0), ")")


def _ls_ctor(e: EmitArgs) -> Expr:
    shape = layer_scale_shape(e.in_shapes[0], e.args["dim"])
    return ("nn.Parameter(torch.full(", Lit(shape, "shape"), ", ", Lit(float(e.args["init"]), "init"), "))")


def _pool_args(e: EmitArgs) -> Expr:
    a = e.args
    return (int_or_pair(a["kernel_size"], "kernel_size"), ", ", int_or_pair(a["stride"], "stride"), ", ",
            int_or_pair(a["padding"], "padding"))


def _maxpool_tail(e: EmitArgs) -> Expr:
    return (Kw("dilation", _v(e.args["dilation"]), 1), Kw("ceil_mode", e.args["ceil_mode"], False), ")")


def _avgpool_tail(e: EmitArgs) -> Expr:
    return (Kw("ceil_mode", e.args["ceil_mode"], False),
            Kw("count_include_pad", e.args["count_include_pad"], True), ")")


def _simple(fn: str, module: str, inplace: bool = False) -> tuple[Callable[[EmitArgs], Expr], Callable[[EmitArgs], Expr]]:
    """Emit/module-form pair of a one-input, argument-free activation."""
    def emit(e: EmitArgs) -> Expr:
        return (fn + "(", In(0), ", inplace=True)") if inplace and e.inplace else (fn + "(", In(0), ")")

    def mod(e: EmitArgs) -> Expr:
        return (module + "(inplace=True)",) if inplace and e.inplace else (module + "()",)
    return emit, mod


_ACT_TRAITS = frozenset({"channel-wise"})


def _act(name: str, doc: str, fn: str, module: str, *, inplace: bool = False,
         aliases: tuple[str, ...] = ()) -> OpDef:
    emit, mod = _simple(fn, module, inplace)
    # element-wise: the same call is right on a tensor without the batch axis (a buffer, a parameter)
    return OpDef(name, "act", [], _same, doc, aliases=aliases, emit=emit, module_form=mod, unbatched_emit=emit,
                 traits=_ACT_TRAITS | ({"inplace"} if inplace else set()))


_A = ArgSpec
register(
    OpDef("conv2d", "conv", [
        _A("out_channels", "int"), _A("kernel_size", "int2"), _A("stride", "int2", 1),
        _A("padding", "padding", 0), _A("dilation", "int2", 1), _A("groups", "int", 1),
        _A("bias", "bool", True), _A("padding_mode", "str", "zeros", ("zeros", "reflect", "replicate", "circular")),
    ], _conv_shape, "2-D convolution; input channels are inferred.", params=_conv_params, macs=_conv_macs,
        stateful=True, normalize=_conv_norm, key_args=("kernel_size", "stride", "groups"), ctor=_conv_ctor,
        emit=_conv_emit,
        traits={"stateful-module", "fusable-linear", "inplace-safe-producer"}),
    OpDef("linear", "linear", [_A("out_features", "int"), _A("bias", "bool", True)], _linear_shape,
          "Fully connected layer on the last dim ([F], or e.g. channels-last [H, W, C]).", params=_linear_params,
          macs=lambda s, o, a: math.prod(s[0]) * a["out_features"], stateful=True, key_args=("out_features",),
          ctor=_linear_ctor,
          traits={"stateful-module", "fusable-linear", "inplace-safe-producer", "layout-sensitive"}),
    OpDef("batchnorm", "norm", [_A("eps", "float", 1e-5), _A("momentum", "float", 0.1), _A("affine", "bool", True),
                                 _A("track_running_stats", "bool", True)], _bn_shape,
          "Batch normalization over channels (nn.BatchNorm2d for [C, H, W], nn.BatchNorm3d for [C, T, H, W], "
          "nn.BatchNorm1d for a sequence [C, L] or features [F]).",
          params=lambda s, a: 2 * s[0][0] if a["affine"] else 0, stateful=True, ctor=_bn_ctor,
          # running mean and variance, and the batch counter
          buffers=lambda s, a: 2 * s[0][0] + 1 if a["track_running_stats"] else 0,
          traits={"stateful-module", "fusable-linear", "inplace-safe-producer", "channel-wise"},
          torch_forms=tuple(TorchForm("module", f"torch.nn.BatchNorm{k}d", _bn_form(ranks))
                            for k, ranks in ((1, (1, 2)), (2, (3,)), (3, (4,))))),
    OpDef("maxpool", "pool", [_A("kernel_size", "int2"), _A("stride", "int2?", None), _A("padding", "int2", 0),
                              _A("dilation", "int2", 1), _A("ceil_mode", "bool", False)], _pool_shape("maxpool"),
          "Max pooling (stride defaults to the kernel size).", normalize=_pool_norm, key_args=("kernel_size", "stride"),
          emit=lambda e: ("F.max_pool2d(", In(0), ", ", *_pool_args(e), *_maxpool_tail(e)),
          module_form=lambda e: ("nn.MaxPool2d(", *_pool_args(e), *_maxpool_tail(e)), traits={"channel-wise"}),
    OpDef("avgpool", "pool", [_A("kernel_size", "int2"), _A("stride", "int2?", None), _A("padding", "int2", 0),
                              _A("ceil_mode", "bool", False), _A("count_include_pad", "bool", True)],
          _pool_shape("avgpool"), "Average pooling (stride defaults to the kernel size).", normalize=_pool_norm,
          key_args=("kernel_size", "stride"),
          emit=lambda e: ("F.avg_pool2d(", In(0), ", ", *_pool_args(e), *_avgpool_tail(e)),
          module_form=lambda e: ("nn.AvgPool2d(", *_pool_args(e), *_avgpool_tail(e)),
          traits={"channel-wise", "fusable-linear"}),
    OpDef("adaptive_avgpool", "pool", [_A("output_size", "int2")], _adaptive_shape,
          "Adaptive average pooling to a fixed output size.", normalize=_adaptive_norm, key_args=("output_size",),
          emit=lambda e: ("F.adaptive_avg_pool2d(", In(0), ", ", int_or_pair(e.args["output_size"], "output_size"), ")"),
          module_form=lambda e: ("nn.AdaptiveAvgPool2d(", int_or_pair(e.args["output_size"], "output_size"), ")"),
          traits={"channel-wise"}),
    OpDef("adaptive_maxpool", "pool", [_A("output_size", "int2")], _adaptive_shape,
          "Adaptive max pooling to a fixed output size.", normalize=_adaptive_norm, key_args=("output_size",),
          emit=lambda e: ("F.adaptive_max_pool2d(", In(0), ", ", int_or_pair(e.args["output_size"], "output_size"), ")"),
          module_form=lambda e: ("nn.AdaptiveMaxPool2d(", int_or_pair(e.args["output_size"], "output_size"), ")"),
          traits={"channel-wise"}),
    _act("relu", "max(x, 0)", "F.relu", "nn.ReLU", inplace=True),
    _act("relu6", "min(max(x, 0), 6)", "F.relu6", "nn.ReLU6", inplace=True),
    _act("sigmoid", "1 / (1 + exp(-x))", "torch.sigmoid", "nn.Sigmoid"),
    _act("tanh", "hyperbolic tangent", "torch.tanh", "nn.Tanh"),
    OpDef("gelu", "act", [_A("approximate", "str", "none", ("none", "tanh"))], _same, "Gaussian error linear unit",
          emit=lambda e: ("F.gelu(", In(0), Kw("approximate", e.args["approximate"], "none"), ")"),
          unbatched_emit=lambda e: ("F.gelu(", In(0), Kw("approximate", e.args["approximate"], "none"), ")"),
          module_form=lambda e: ("nn.GELU(", Kw("approximate", e.args["approximate"], "none", sep=""), ")"),
          traits=_ACT_TRAITS),
    _act("silu", "x * sigmoid(x) (also called swish)", "F.silu", "nn.SiLU", aliases=("swish",)),
    _act("hardswish", "x * relu6(x + 3) / 6", "F.hardswish", "nn.Hardswish"),
    _act("hardsigmoid", "relu6(x + 3) / 6", "F.hardsigmoid", "nn.Hardsigmoid"),
    OpDef("leaky_relu", "act", [_A("negative_slope", "float", 0.01)], _same,
          "max(x, 0) + negative_slope * min(x, 0)",
          emit=lambda e: ("F.leaky_relu(", In(0), ", ", Lit(e.args["negative_slope"], "negative_slope"), ")"),
          unbatched_emit=lambda e: ("F.leaky_relu(", In(0), ", ", Lit(e.args["negative_slope"], "negative_slope"), ")"),
          module_form=lambda e: ("nn.LeakyReLU(", Lit(e.args["negative_slope"], "negative_slope"), ")"),
          traits=_ACT_TRAITS),
    OpDef("dropout", "dropout", [_A("p", "float", 0.5)], _dropout_shape, "Dropout (identity in eval mode).",
          key_args=("p",), emit=lambda e: ("F.dropout(", In(0), ", ", Lit(e.args["p"], "p"), ", self.training)"),
          module_form=lambda e: ("nn.Dropout(", Lit(e.args["p"], "p"), ")"), traits={"eval-identity", "channel-wise"}),
    OpDef("layernorm", "norm", [_A("eps", "float", 1e-5), _A("affine", "bool", True), _A("dim", "int?", None)],
          _layernorm_shape,
          "Layer normalization over one dim: the channels of [C, H, W] (torchvision LayerNorm2d) or the last dim "
          "(nn.LayerNorm, e.g. after permute to [H, W, C]: dim=-1).",
          params=lambda s, a: 2 * a["normalized"] if a["affine"] else 0, stateful=True,
          normalize=_layernorm_norm, aliases=("layer_norm",), ctor=_ln_ctor, emit=_ln_emit,
          traits={"stateful-module", "layout-sensitive"}),
    OpDef("layer_scale", "norm", [_A("init", "float", 1e-6), _A("dim", "int?", None)], _same,
          "A learnable per-channel scale (ConvNeXt), stored as a parameter named by the label; shape (C, 1, 1) "
          "for the channels of [C, H, W], (F,) for the last dim.",
          params=lambda s, a: s[0][a["dim"] - 1], stateful=True,
          normalize=lambda s, a: _feature_dim(s, a, "layer_scale"), key_args=("init",), ctor=_ls_ctor,
          emit=lambda e: (MOD, " * ", In(0)), traits={"parameter", "channel-wise"}),
    OpDef("drop_path", "dropout", [_A("p", "float", 0.0), _A("mode", "str", "row", ("row", "batch"))],
          _drop_path_shape,
          "Stochastic depth (torchvision StochasticDepth): in training, zero whole samples ('row') or the whole "
          "batch ('batch') with probability p and rescale by 1/(1-p); identity in eval.",
          aliases=("stochastic_depth",), key_args=("p",), helpers=("drop_path",),
          emit=lambda e: ("_stochastic_depth(", In(0), ", ", Lit(float(e.args["p"]), "p"), ", ",
                          Lit(e.args["mode"], "mode"), ", self.training)"),
          traits={"eval-identity", "channel-wise"}),
)
