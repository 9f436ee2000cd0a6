"""Built-in ops, layers: conv, linear, norms, pooling, activations, dropout (one OpDef each)."""
from __future__ import annotations

import math
from typing import Any, Callable

from .core import (MOD, ArgSpec, EmitArgs, Expr, In, Kw, Lit, OpDef, Shape, ShapeError, TorchCall, TorchForm,
                   _check_positive, _need_rank, _pair, _same, conv_out, int_or_pair, layer_scale_shape, pool_out,
                   register)
from .forms import (FN, NN, Form, function_form, has_rank, method_form, module_form, need_batch_first, no_args,
                    spec_size)

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




def _groups_check(c: int, a: dict[str, Any]) -> None:
    """A grouped convolution's groups divide both channel counts (conv1d, conv2d, conv3d)."""
    g = a["groups"]
    if c % g:
        raise ShapeError(f"groups={g} does not divide the {c} input channels", arg="groups",
                         hint=f"groups must divide both channel counts; divisors of {c}: "
                              + ", ".join(str(x) for x in _divisors(c)))
    if a["out_channels"] % g:
        raise ShapeError(f"groups={g} does not divide out_channels={a['out_channels']}", arg="groups")


def _conv_shape(shapes: list[Shape], a: dict[str, Any]) -> Shape:
    c, h, w = _need_rank(shapes, 3, "conv2d")
    _check_positive(a, ["out_channels", "kernel_size", "stride", "dilation", "groups"])
    _check_positive(a, ["padding"], allow_zero=["padding"])
    _groups_check(c, a)
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
def _pool_normalizer(fit: Callable[[Any], Any]) -> Callable[[list[Shape], dict[str, Any]], dict[str, Any]]:
    """A pool's args with every size made ``fit`` (a pair for the 2-D pools, a triple for the 3-D ones) and
    the stride defaulting to the kernel size."""
    def norm(shapes: list[Shape], a: dict[str, Any]) -> dict[str, Any]:
        a = dict(a)
        a["kernel_size"] = fit(a["kernel_size"])
        a["stride"] = fit(a["stride"]) if a["stride"] is not None else a["kernel_size"]
        a["padding"] = fit(a["padding"])
        if "dilation" in a:
            a["dilation"] = fit(a["dilation"])
        return a
    return norm


_pool_norm = _pool_normalizer(_pair)


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


# ---- PyTorch spellings (torch_forms, read by the importer) ------------------------------------------------
def _conv_form(c: TorchCall) -> dict[str, Any] | None:
    m = c.module
    if not has_rank(c, 3) or m.padding_mode not in ("zeros", "reflect", "replicate", "circular"):
        return None
    pad = m.padding if isinstance(m.padding, str) else spec_size(m.padding)
    return {"out_channels": m.out_channels, "kernel_size": spec_size(m.kernel_size), "stride": spec_size(m.stride),
            "padding": pad, "dilation": spec_size(m.dilation), "groups": m.groups, "bias": m.bias is not None,
            "padding_mode": m.padding_mode}


def _linear_form(c: TorchCall) -> dict[str, Any] | None:
    return {"out_features": c.module.out_features, "bias": c.module.bias is not None}


def _ln_last_form(c: TorchCall) -> dict[str, Any] | None:
    m = c.module
    shape = tuple(m.normalized_shape)
    if len(shape) != 1 or not c.in_shapes or c.in_shapes[0][-1] != shape[0]:
        return None
    if m.elementwise_affine and getattr(m, "bias", True) is None:
        return None      # LayerNorm(bias=False): the op's affine has a bias
    out: dict[str, Any] = {"eps": m.eps, "affine": m.elementwise_affine}
    if len(c.in_shapes[0]) == 3:
        out["dim"] = -1       # rank 3 defaults to the channels of [C, H, W]; here it is channels-last
    return out


def _ln_channels_form(c: TorchCall) -> dict[str, Any] | None:
    """torchvision's / timm's LayerNorm2d: nn.LayerNorm over the channels of [C, H, W]."""
    m = c.module
    if not has_rank(c, 3) or tuple(m.normalized_shape) != (c.in_shapes[0][0],):
        return None
    return {"eps": m.eps, "affine": m.elementwise_affine}


def _pool_module_form(kind: str) -> Form:
    """nn.MaxPool2d / nn.AvgPool2d on [C, H, W] (return_indices and divisor_override have no spelling)."""
    def form(c: TorchCall) -> dict[str, Any] | None:
        m = c.module
        if not has_rank(c, 3):
            return None
        out = {"kernel_size": spec_size(m.kernel_size), "stride": spec_size(m.stride),
               "padding": spec_size(m.padding), "ceil_mode": m.ceil_mode}
        if kind == "max":
            if m.return_indices:
                return None
            out["dilation"] = spec_size(m.dilation)
        else:
            if m.divisor_override is not None:
                return None
            out["count_include_pad"] = m.count_include_pad
        return out
    return form


def _pool_function_form(kind: str) -> Form:
    """F.max_pool2d / F.avg_pool2d (torch.max_pool2d) on [C, H, W]; an empty stride is the kernel size."""
    def form(c: TorchCall) -> dict[str, Any] | None:
        if not has_rank(c, 3):
            return None
        k = c.arg(1, "kernel_size")
        s = c.arg(2, "stride", None)
        out = {"kernel_size": spec_size(k), "stride": spec_size(s) if s not in (None, [], ()) else None,
               "padding": spec_size(c.arg(3, "padding", 0))}
        if kind == "max":
            if c.arg(6, "return_indices", False):
                return None
            out["dilation"] = spec_size(c.arg(4, "dilation", 1))
            out["ceil_mode"] = c.arg(5, "ceil_mode", False)
        else:
            if c.arg(6, "divisor_override", None) is not None:
                return None
            out["ceil_mode"] = c.arg(4, "ceil_mode", False)
            out["count_include_pad"] = c.arg(5, "count_include_pad", True)
        return out
    return form


def _adaptive_args(size: Any) -> dict[str, Any] | None:
    """An adaptive pool's output size; None in it (keep that dim's size) has no spelling."""
    if size is None or (isinstance(size, (list, tuple)) and any(v is None for v in size)):
        return None
    return {"output_size": spec_size(size)}


def _drop_path_tv_form(c: TorchCall) -> dict[str, Any] | None:
    return {"p": float(c.module.p), "mode": c.module.mode}


def _drop_path_timm_form(c: TorchCall) -> dict[str, Any] | None:
    if not getattr(c.module, "scale_by_keep", True):
        return None
    return {"p": float(c.module.drop_prob)}


def _act_forms(module: str, fn: str, *, fns: tuple[str, ...] = (),
               methods: tuple[str, ...] = ()) -> tuple[TorchForm, ...]:
    """nn.<module>, F.<fn>, more functions and Tensor methods of an activation without arguments."""
    return (module_form(NN + module, no_args), function_form(FN + fn, no_args),
            *(function_form(f, no_args) for f in fns), *(method_form(m, no_args) for m in methods))


def _simple(fn: str, module: str, inplace: bool = False) -> tuple[Callable[[EmitArgs], Expr], Callable[[EmitArgs], Expr]]:
    """Emit/module-form pair of a one-input, argument-free activation."""
    def emit(e: EmitArgs) -> Expr:
        return (fn + "(", In(0), ", inplace=True)") if inplace and e.inplace else (fn + "(", In(0), ")")

    def mod(e: EmitArgs) -> Expr:
        return (module + "(inplace=True)",) if inplace and e.inplace else (module + "()",)
    return emit, mod


_ACT_TRAITS = frozenset({"channel-wise"})


def _act(name: str, doc: str, fn: str, module: str, *, inplace: bool = False,
         aliases: tuple[str, ...] = (), torch_forms: tuple[TorchForm, ...] = ()) -> OpDef:
    emit, mod = _simple(fn, module, inplace)
    # element-wise: the same call is right on a tensor without the batch axis (a buffer, a parameter)
    return OpDef(name, "act", [], _same, doc, aliases=aliases, emit=emit, module_form=mod, unbatched_emit=emit,
                 traits=_ACT_TRAITS | ({"inplace"} if inplace else set()), torch_forms=torch_forms)


_A = ArgSpec
register(
    OpDef("conv2d", "conv", [
        _A("out_channels", "int"), _A("kernel_size", "int2"), _A("stride", "int2", 1),
        _A("padding", "padding", 0), _A("dilation", "int2", 1), _A("groups", "int", 1),
        _A("bias", "bool", True), _A("padding_mode", "str", "zeros", ("zeros", "reflect", "replicate", "circular")),
    ], _conv_shape, "2-D convolution; input channels are inferred.", params=_conv_params, macs=_conv_macs,
        stateful=True, normalize=_conv_norm, key_args=("kernel_size", "stride", "groups"), ctor=_conv_ctor,
        emit=_conv_emit,
        traits={"stateful-module", "fusable-linear", "inplace-safe-producer"},
        torch_forms=(module_form(NN + "Conv2d", _conv_form),)),
    OpDef("linear", "linear", [_A("out_features", "int"), _A("bias", "bool", True)], _linear_shape,
          "Fully connected layer on the last dim ([F], or e.g. channels-last [H, W, C]).", params=_linear_params,
          macs=lambda s, o, a: math.prod(s[0]) * a["out_features"], stateful=True, key_args=("out_features",),
          ctor=_linear_ctor,
          traits={"stateful-module", "fusable-linear", "inplace-safe-producer", "layout-sensitive"},
          torch_forms=(module_form(NN + "Linear", _linear_form),
                       module_form("torch.nn.modules.linear.NonDynamicallyQuantizableLinear", _linear_form))),
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
          module_form=lambda e: ("nn.MaxPool2d(", *_pool_args(e), *_maxpool_tail(e)), traits={"channel-wise"},
          torch_forms=(module_form(NN + "MaxPool2d", _pool_module_form("max")),
                       function_form(FN + "max_pool2d", _pool_function_form("max")),
                       function_form("torch.max_pool2d", _pool_function_form("max")))),
    OpDef("avgpool", "pool", [_A("kernel_size", "int2"), _A("stride", "int2?", None), _A("padding", "int2", 0),
                              _A("ceil_mode", "bool", False), _A("count_include_pad", "bool", True)],
          _pool_shape("avgpool"), "Average pooling (stride defaults to the kernel size).", normalize=_pool_norm,
          key_args=("kernel_size", "stride"),
          emit=lambda e: ("F.avg_pool2d(", In(0), ", ", *_pool_args(e), *_avgpool_tail(e)),
          module_form=lambda e: ("nn.AvgPool2d(", *_pool_args(e), *_avgpool_tail(e)),
          traits={"channel-wise", "fusable-linear"},
          torch_forms=(module_form(NN + "AvgPool2d", _pool_module_form("avg")),
                       function_form(FN + "avg_pool2d", _pool_function_form("avg")))),
    OpDef("adaptive_avgpool", "pool", [_A("output_size", "int2")], _adaptive_shape,
          "Adaptive average pooling to a fixed output size.", normalize=_adaptive_norm, key_args=("output_size",),
          emit=lambda e: ("F.adaptive_avg_pool2d(", In(0), ", ", int_or_pair(e.args["output_size"], "output_size"), ")"),
          module_form=lambda e: ("nn.AdaptiveAvgPool2d(", int_or_pair(e.args["output_size"], "output_size"), ")"),
          traits={"channel-wise"},
          torch_forms=(module_form(NN + "AdaptiveAvgPool2d", lambda c: _adaptive_args(c.module.output_size)),
                       function_form(FN + "adaptive_avg_pool2d", lambda c: _adaptive_args(c.arg(1, "output_size"))))),
    OpDef("adaptive_maxpool", "pool", [_A("output_size", "int2")], _adaptive_shape,
          "Adaptive max pooling to a fixed output size.", normalize=_adaptive_norm, key_args=("output_size",),
          emit=lambda e: ("F.adaptive_max_pool2d(", In(0), ", ", int_or_pair(e.args["output_size"], "output_size"), ")"),
          module_form=lambda e: ("nn.AdaptiveMaxPool2d(", int_or_pair(e.args["output_size"], "output_size"), ")"),
          traits={"channel-wise"},
          torch_forms=(module_form(NN + "AdaptiveMaxPool2d", lambda c: None if c.module.return_indices
                                   else _adaptive_args(c.module.output_size)),
                       function_form(FN + "adaptive_max_pool2d", lambda c: None if c.arg(2, "return_indices", False)
                                     else _adaptive_args(c.arg(1, "output_size"))))),
    _act("relu", "max(x, 0)", "F.relu", "nn.ReLU", inplace=True,
         torch_forms=_act_forms("ReLU", "relu", fns=("torch.relu", "torch.relu_"), methods=("relu", "relu_"))),
    _act("relu6", "min(max(x, 0), 6)", "F.relu6", "nn.ReLU6", inplace=True, torch_forms=_act_forms("ReLU6", "relu6")),
    _act("sigmoid", "1 / (1 + exp(-x))", "torch.sigmoid", "nn.Sigmoid",
         torch_forms=_act_forms("Sigmoid", "sigmoid", fns=("torch.sigmoid",), methods=("sigmoid", "sigmoid_"))),
    _act("tanh", "hyperbolic tangent", "torch.tanh", "nn.Tanh",
         torch_forms=_act_forms("Tanh", "tanh", fns=("torch.tanh",), methods=("tanh",))),
    OpDef("gelu", "act", [_A("approximate", "str", "none", ("none", "tanh"))], _same, "Gaussian error linear unit",
          emit=lambda e: ("F.gelu(", In(0), Kw("approximate", e.args["approximate"], "none"), ")"),
          unbatched_emit=lambda e: ("F.gelu(", In(0), Kw("approximate", e.args["approximate"], "none"), ")"),
          module_form=lambda e: ("nn.GELU(", Kw("approximate", e.args["approximate"], "none", sep=""), ")"),
          traits=_ACT_TRAITS,
          torch_forms=(module_form(NN + "GELU", lambda c: {"approximate": c.module.approximate}),
                       function_form(FN + "gelu", lambda c: {"approximate": c.arg(1, "approximate", "none")}))),
    _act("silu", "x * sigmoid(x) (also called swish)", "F.silu", "nn.SiLU", aliases=("swish",),
         torch_forms=_act_forms("SiLU", "silu")),
    _act("hardswish", "x * relu6(x + 3) / 6", "F.hardswish", "nn.Hardswish",
         torch_forms=_act_forms("Hardswish", "hardswish")),
    _act("hardsigmoid", "relu6(x + 3) / 6", "F.hardsigmoid", "nn.Hardsigmoid",
         torch_forms=_act_forms("Hardsigmoid", "hardsigmoid")),
    OpDef("leaky_relu", "act", [_A("negative_slope", "float", 0.01)], _same,
          "max(x, 0) + negative_slope * min(x, 0)",
          emit=lambda e: ("F.leaky_relu(", In(0), ", ", Lit(e.args["negative_slope"], "negative_slope"), ")"),
          unbatched_emit=lambda e: ("F.leaky_relu(", In(0), ", ", Lit(e.args["negative_slope"], "negative_slope"), ")"),
          module_form=lambda e: ("nn.LeakyReLU(", Lit(e.args["negative_slope"], "negative_slope"), ")"),
          traits=_ACT_TRAITS,
          torch_forms=(module_form(NN + "LeakyReLU", lambda c: {"negative_slope": c.module.negative_slope}),
                       function_form(FN + "leaky_relu",
                                     lambda c: {"negative_slope": float(c.arg(1, "negative_slope", 0.01))}))),
    OpDef("dropout", "dropout", [_A("p", "float", 0.5)], _dropout_shape, "Dropout (identity in eval mode).",
          key_args=("p",), emit=lambda e: ("F.dropout(", In(0), ", ", Lit(e.args["p"], "p"), ", self.training)"),
          module_form=lambda e: ("nn.Dropout(", Lit(e.args["p"], "p"), ")"), traits={"eval-identity", "channel-wise"},
          torch_forms=(module_form(NN + "Dropout", lambda c: {"p": float(c.module.p)}),
                       function_form(FN + "dropout", lambda c: {"p": float(c.arg(1, "p", 0.5))}))),
    OpDef("layernorm", "norm", [_A("eps", "float", 1e-5), _A("affine", "bool", True), _A("dim", "int?", None)],
          _layernorm_shape,
          "Layer normalization over one dim: the channels of [C, H, W] (torchvision LayerNorm2d) or the last dim "
          "(nn.LayerNorm, e.g. after permute to [H, W, C]: dim=-1).",
          params=lambda s, a: 2 * a["normalized"] if a["affine"] else 0, stateful=True,
          normalize=_layernorm_norm, aliases=("layer_norm",), ctor=_ln_ctor, emit=_ln_emit,
          traits={"stateful-module", "layout-sensitive"},
          torch_forms=(module_form(NN + "LayerNorm", _ln_last_form),
                       module_form("timm.layers.norm.LayerNorm", _ln_last_form),
                       module_form("torchvision.models.convnext.LayerNorm2d", _ln_channels_form),
                       module_form("timm.layers.norm.LayerNorm2d", _ln_channels_form))),
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
          traits={"eval-identity", "channel-wise"},
          torch_forms=(module_form("torchvision.ops.stochastic_depth.StochasticDepth", _drop_path_tv_form),
                       module_form("timm.layers.drop.DropPath", _drop_path_timm_form))),
)
