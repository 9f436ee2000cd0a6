"""The PyTorch spellings of the built-in ops (:attr:`OpDef.torch_forms`), read by the importer.

Each op's forms are attached to its own registry entry here, after the families registered it, so the
importer (:mod:`archdsl.importer`) finds ``torch.nn.Conv2d``, ``F.relu`` or ``Tensor.permute`` by looking the
call up in ``OPS`` alone. (They live in one module rather than in each family's ``register(...)`` call
so the family files keep their shape rules readable; ops added later write ``torch_forms=`` directly.)
A form gets a :class:`TorchCall` and returns the op's keyword args, or None when the call is not this op
(e.g. ``Conv2d`` with a padding mode the op lacks, a ``mul`` by a number rather than a tensor).
Nothing here imports torch: modules are read through their attributes.
"""
from __future__ import annotations

from typing import Any, Callable

from .core import OPS, OpDef, TensorArg, TorchCall, TorchForm

__all__ = ["tensor_count", "attach", "MULTI_OUTPUT_FORMS"]

#: the forms of the ops that give several tensors (chunk, split: lowered to narrow nodes, no OpDef of their own)
MULTI_OUTPUT_FORMS: dict[str, tuple[TorchForm, ...]] = {}

Form = Callable[[TorchCall], "dict[str, Any] | None"]
NN = "torch.nn."
F = "torch.nn.functional."


def tensor_count(call: TorchCall) -> int:
    """How many tensor arguments the call has (a list of tensors counts each)."""
    n = 0
    for a in (*call.args, *call.kwargs.values()):
        if isinstance(a, TensorArg):
            n += 1
        elif isinstance(a, (list, tuple)):
            n += sum(isinstance(v, TensorArg) for v in a)
    return n


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _one(v: Any) -> Any:
    """(3, 3) -> 3, (1, 3) -> [1, 3]: a kernel/stride/padding as a spec writes it."""
    if isinstance(v, (tuple, list)):
        v = list(v)
        return v[0] if len(set(v)) == 1 else v
    return v


def attach(op: str, *forms: TorchForm) -> None:
    """Add ``forms`` to the registry entry of ``op`` (kept when the op is missing: a trimmed registry)."""
    if op in ("chunk", "split"):
        MULTI_OUTPUT_FORMS[op] = (*MULTI_OUTPUT_FORMS.get(op, ()), *forms)
        return
    d: OpDef | None = OPS.get(op)
    if d is not None:
        d.torch_forms = (*d.torch_forms, *forms)


def _mod(target: str, fn: Form) -> TorchForm:
    return TorchForm("module", target, fn)


def _fn(target: str, fn: Form) -> TorchForm:
    return TorchForm("function", target, fn)


def _meth(target: str, fn: Form) -> TorchForm:
    return TorchForm("method", target, fn)


def _rank(call: TorchCall, *ranks: int) -> bool:
    return bool(call.in_shapes) and len(call.in_shapes[0]) in ranks


# ---- layers ------------------------------------------------------------------------------------------
def _conv(c: TorchCall) -> dict[str, Any] | None:
    m = c.module
    if not _rank(c, 3) or m.padding_mode not in ("zeros", "reflect", "replicate", "circular"):
        return None
    pad = m.padding if isinstance(m.padding, str) else _one(m.padding)
    return {"out_channels": m.out_channels, "kernel_size": _one(m.kernel_size), "stride": _one(m.stride),
            "padding": pad, "dilation": _one(m.dilation), "groups": m.groups, "bias": m.bias is not None,
            "padding_mode": m.padding_mode}


def _convt(c: TorchCall) -> dict[str, Any] | None:
    m = c.module
    if not _rank(c, 3) or m.padding_mode != "zeros":
        return None
    return {"out_channels": m.out_channels, "kernel_size": _one(m.kernel_size), "stride": _one(m.stride),
            "padding": _one(m.padding), "output_padding": _one(m.output_padding), "groups": m.groups,
            "bias": m.bias is not None, "dilation": _one(m.dilation)}


def _linear(c: TorchCall) -> dict[str, Any] | None:
    return {"out_features": c.module.out_features, "bias": c.module.bias is not None}


def _bn(rank: int) -> Form:
    def form(c: TorchCall) -> dict[str, Any] | None:
        m = c.module
        if not _rank(c, rank) or m.momentum is None:
            return None
        return {"eps": m.eps, "momentum": m.momentum, "affine": m.affine,
                "track_running_stats": m.track_running_stats}
    return form


def _ln_last(c: TorchCall) -> dict[str, Any] | None:
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


def _ln_channels(c: TorchCall) -> dict[str, Any] | None:
    """torchvision's / timm's LayerNorm2d: nn.LayerNorm over the channels of [C, H, W]."""
    m = c.module
    if not _rank(c, 3) or tuple(m.normalized_shape) != (c.in_shapes[0][0],):
        return None
    return {"eps": m.eps, "affine": m.elementwise_affine}


def _pool_mod(kind: str) -> Form:
    def form(c: TorchCall) -> dict[str, Any] | None:
        m = c.module
        if not _rank(c, 3):
            return None
        out = {"kernel_size": _one(m.kernel_size), "stride": _one(m.stride), "padding": _one(m.padding),
               "ceil_mode": m.ceil_mode}
        if kind == "max":
            if m.return_indices:
                return None
            out["dilation"] = _one(m.dilation)
        else:
            if m.divisor_override is not None:
                return None
            out["count_include_pad"] = m.count_include_pad
        return out
    return form


def _pool_fn(kind: str) -> Form:
    def form(c: TorchCall) -> dict[str, Any] | None:
        if not _rank(c, 3):
            return None
        k = c.arg(1, "kernel_size")
        s = c.arg(2, "stride", None)
        out = {"kernel_size": _one(k), "stride": _one(s) if s not in (None, [], ()) else None,
               "padding": _one(c.arg(3, "padding", 0))}
        if kind == "max":
            if c.arg(6, "return_indices", False):
                return None
            out["dilation"] = _one(c.arg(4, "dilation", 1))
            out["ceil_mode"] = c.arg(5, "ceil_mode", False)
        else:
            if c.arg(6, "divisor_override", None) is not None:
                return None
            out["ceil_mode"] = c.arg(4, "ceil_mode", False)
            out["count_include_pad"] = c.arg(5, "count_include_pad", True)
        return out
    return form


def _adaptive(size: Any) -> dict[str, Any] | None:
    if size is None or (isinstance(size, (list, tuple)) and any(v is None for v in size)):
        return None
    return {"output_size": _one(size)}


def _no_args(c: TorchCall) -> dict[str, Any] | None:
    return {}


def _gelu_mod(c: TorchCall) -> dict[str, Any] | None:
    return {"approximate": c.module.approximate}


def _gelu_fn(c: TorchCall) -> dict[str, Any] | None:
    return {"approximate": c.arg(1, "approximate", "none")}


def _dropout_fn(c: TorchCall) -> dict[str, Any] | None:
    return {"p": float(c.arg(1, "p", 0.5))}


def _drop_path_tv(c: TorchCall) -> dict[str, Any] | None:
    return {"p": float(c.module.p), "mode": c.module.mode}


def _drop_path_timm(c: TorchCall) -> dict[str, Any] | None:
    if not getattr(c.module, "scale_by_keep", True):
        return None
    return {"p": float(c.module.drop_prob)}


# ---- tensor ops -------------------------------------------------------------------------------------
def _flatten(start: int, end: int, c: TorchCall) -> dict[str, Any] | None:
    # the op flattens everything after the batch; a partial flatten is a reshape (below)
    rank = len(c.in_shapes[0]) + 1
    if c.batch_axes[0] != 0 or start % rank != 1 or end % rank != rank - 1:
        return None
    return {}


def _reshape(c: TorchCall) -> dict[str, Any] | None:
    """Any view of one tensor that keeps the batch first and in place: the traced per-sample target."""
    if not c.out_shapes or c.batch_axes[0] != 0 or c.out_batch_axes[0] != 0:
        return None
    return {"shape": list(c.out_shapes[0])}


def _binary(c: TorchCall) -> tuple[Any, Any]:
    return c.arg(0, "input"), c.arg(1, "other")


def _two_tensors(c: TorchCall) -> dict[str, Any] | None:
    a, b = _binary(c)
    if not (isinstance(a, TensorArg) and isinstance(b, TensorArg)) or c.kwargs.get("alpha", 1) != 1:
        return None
    return {}


def _scale(c: TorchCall) -> dict[str, Any] | None:
    a, b = _binary(c)
    if isinstance(a, TensorArg) and _num(b):
        return {"factor": float(b)}
    if isinstance(b, TensorArg) and _num(a):
        return {"factor": float(a)}
    return None


def _scalar(op: str, rop: str | None) -> Form:
    def form(c: TorchCall) -> dict[str, Any] | None:
        a, b = _binary(c)
        if c.kwargs.get("alpha", 1) != 1:
            return None
        if isinstance(a, TensorArg) and _num(b):
            return {"op": op, "value": float(b)}
        if rop is not None and isinstance(b, TensorArg) and _num(a):
            return {"op": rop, "value": float(a)}
        return None
    return form


def _cat(c: TorchCall) -> dict[str, Any] | None:
    if len(set(c.batch_axes)) != 1:
        return None
    return {"dim": c.spec_dim(c.arg(1, "dim", 0))}


def _dims(c: TorchCall, dims: Any) -> Any:
    if isinstance(dims, (list, tuple)):
        return [c.spec_dim(d) for d in dims]
    return c.spec_dim(dims)


def _reduce(c: TorchCall) -> dict[str, Any] | None:
    dim = c.arg(1, "dim", None)
    if dim is None or c.kwargs.get("dtype") is not None:
        return None
    return {"dim": _dims(c, dim), "keepdim": bool(c.arg(2, "keepdim", False))}


def _softmax(c: TorchCall) -> dict[str, Any] | None:
    if c.kwargs.get("dtype") is not None:
        return None
    return {"dim": c.spec_dim(c.arg(1, "dim"))}


def _transpose(c: TorchCall) -> dict[str, Any] | None:
    if c.batch_axes[0] != 0:
        return None
    return {"dim0": c.spec_dim(c.arg(1, "dim0")), "dim1": c.spec_dim(c.arg(2, "dim1"))}


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


def _chunk(c: TorchCall) -> dict[str, Any] | None:
    return {"chunks": c.arg(1, "chunks"), "dim": c.spec_dim(c.arg(2, "dim", 0))}


def _split(c: TorchCall) -> dict[str, Any] | None:
    size = c.arg(1, "split_size_or_sections", None)
    if size is None:
        size = c.arg(-1, "split_size")
    d = c.sample_dim(c.arg(2, "dim", 0))
    n = c.in_shapes[0][d]
    sizes = list(size) if isinstance(size, (list, tuple)) else [min(size, n - i) for i in range(0, n, size)]
    return {"sizes": sizes, "dim": d + 1}


def _roll(c: TorchCall) -> dict[str, Any] | None:
    dims = c.arg(2, "dims", None)
    if dims is None:
        return None
    return {"shifts": c.arg(1, "shifts"), "dims": _dims(c, dims)}


def _pad(c: TorchCall) -> dict[str, Any] | None:
    pad = list(c.arg(1, "pad"))
    if len(pad) // 2 > len(c.in_shapes[0]) or c.batch_axes[0] != 0:
        return None
    return {"padding": pad, "mode": c.arg(2, "mode", "constant"), "value": float(c.arg(3, "value", None) or 0.0)}


def _interp(c: TorchCall) -> dict[str, Any] | None:
    if not _rank(c, 3) or c.arg(5, "recompute_scale_factor", None) or c.arg(6, "antialias", False):
        return None
    size, sf = c.arg(1, "size", None), c.arg(2, "scale_factor", None)
    out: dict[str, Any] = {"mode": c.arg(3, "mode", "nearest"), "align_corners": c.arg(4, "align_corners", None)}
    if sf is not None:
        sf = _one(sf)
        if isinstance(sf, list):
            return None
        out["scale_factor"] = float(sf)
    elif size is not None:
        out["size"] = _one(size)
    return out


def _upsample_mod(c: TorchCall) -> dict[str, Any] | None:
    m = c.module
    if not _rank(c, 3):
        return None
    out: dict[str, Any] = {"mode": m.mode, "align_corners": m.align_corners}
    if m.scale_factor is not None:
        sf = _one(m.scale_factor)
        if isinstance(sf, list):
            return None
        out["scale_factor"] = float(sf)
    else:
        out["size"] = _one(m.size)
    return out


def _sdpa(c: TorchCall) -> dict[str, Any] | None:
    if c.arg(4, "dropout_p", 0.0) or c.kwargs.get("enable_gqa"):
        return None
    return {"is_causal": bool(c.arg(5, "is_causal", False)), "scale": c.arg(-1, "scale", None)}


def _pow(c: TorchCall) -> dict[str, Any] | None:
    a, b = c.arg(0, "input"), c.arg(1, "exponent")
    if isinstance(a, TensorArg) and _num(b):
        return {"exponent": float(b)}
    return None


def _clamp(c: TorchCall) -> dict[str, Any] | None:
    lo, hi = c.arg(1, "min", None), c.arg(2, "max", None)
    if (lo is not None and not _num(lo)) or (hi is not None and not _num(hi)):
        return None
    return {"min": None if lo is None else float(lo), "max": None if hi is None else float(hi)}


def _vector_norm(c: TorchCall) -> dict[str, Any] | None:
    dim = c.arg(2, "dim", None)
    if dim is None:
        return None
    return {"ord": float(c.arg(1, "ord", 2.0)), "dim": _dims(c, dim), "keepdim": bool(c.arg(3, "keepdim", False))}


def _relu_like(op: str, module: str, fn: str, *, methods: tuple[str, ...] = (), fns: tuple[str, ...] = ()) -> None:
    attach(op, _mod(NN + module, _no_args), _fn(F + fn, _no_args), *(_fn(f, _no_args) for f in fns),
           *(_meth(m, _no_args) for m in methods))


_relu_like("relu", "ReLU", "relu", methods=("relu", "relu_"), fns=("torch.relu", "torch.relu_"))
_relu_like("relu6", "ReLU6", "relu6")
_relu_like("sigmoid", "Sigmoid", "sigmoid", methods=("sigmoid", "sigmoid_"), fns=("torch.sigmoid",))
_relu_like("tanh", "Tanh", "tanh", methods=("tanh",), fns=("torch.tanh",))
_relu_like("silu", "SiLU", "silu")
_relu_like("hardswish", "Hardswish", "hardswish")
_relu_like("hardsigmoid", "Hardsigmoid", "hardsigmoid")
attach("gelu", _mod(NN + "GELU", _gelu_mod), _fn(F + "gelu", _gelu_fn))
attach("leaky_relu", _mod(NN + "LeakyReLU", lambda c: {"negative_slope": c.module.negative_slope}),
       _fn(F + "leaky_relu", lambda c: {"negative_slope": float(c.arg(1, "negative_slope", 0.01))}))
attach("conv2d", _mod(NN + "Conv2d", _conv))
attach("conv_transpose2d", _mod(NN + "ConvTranspose2d", _convt))
attach("linear", _mod(NN + "Linear", _linear),
       _mod("torch.nn.modules.linear.NonDynamicallyQuantizableLinear", _linear))
attach("batchnorm", _mod(NN + "BatchNorm2d", _bn(3)), _mod(NN + "BatchNorm1d", _bn(1)))
attach("layernorm", _mod(NN + "LayerNorm", _ln_last), _mod("timm.layers.norm.LayerNorm", _ln_last),
       _mod("torchvision.models.convnext.LayerNorm2d", _ln_channels), _mod("timm.layers.norm.LayerNorm2d", _ln_channels))
attach("maxpool", _mod(NN + "MaxPool2d", _pool_mod("max")), _fn(F + "max_pool2d", _pool_fn("max")),
       _fn("torch.max_pool2d", _pool_fn("max")))
attach("avgpool", _mod(NN + "AvgPool2d", _pool_mod("avg")), _fn(F + "avg_pool2d", _pool_fn("avg")))
attach("adaptive_avgpool", _mod(NN + "AdaptiveAvgPool2d", lambda c: _adaptive(c.module.output_size)),
       _fn(F + "adaptive_avg_pool2d", lambda c: _adaptive(c.arg(1, "output_size"))))
attach("adaptive_maxpool", _mod(NN + "AdaptiveMaxPool2d",
                                lambda c: None if c.module.return_indices else _adaptive(c.module.output_size)),
       _fn(F + "adaptive_max_pool2d", lambda c: None if c.arg(2, "return_indices", False)
           else _adaptive(c.arg(1, "output_size"))))
attach("dropout", _mod(NN + "Dropout", lambda c: {"p": float(c.module.p)}), _fn(F + "dropout", _dropout_fn))
attach("drop_path", _mod("torchvision.ops.stochastic_depth.StochasticDepth", _drop_path_tv),
       _mod("timm.layers.drop.DropPath", _drop_path_timm))
attach("identity", _mod(NN + "Identity", _no_args), _meth("contiguous", _no_args), _meth("clone", _no_args))
attach("flatten", _mod(NN + "Flatten", lambda c: _flatten(c.module.start_dim, c.module.end_dim, c)),
       _fn("torch.flatten", lambda c: _flatten(c.arg(1, "start_dim", 0), c.arg(2, "end_dim", -1), c)),
       _meth("flatten", lambda c: _flatten(c.arg(1, "start_dim", 0), c.arg(2, "end_dim", -1), c)))
attach("reshape", *(_meth(m, _reshape) for m in ("reshape", "view", "flatten", "squeeze", "unsqueeze")),
       *(_fn("torch." + f, _reshape) for f in ("reshape", "flatten", "squeeze", "unsqueeze")),
       _mod(NN + "Flatten", _reshape))
attach("add", *(_fn(t, _two_tensors) for t in ("operator.add", "operator.iadd", "torch.add")),
       _meth("add", _two_tensors))
attach("mul", *(_fn(t, _two_tensors) for t in ("operator.mul", "operator.imul", "torch.mul")),
       _meth("mul", _two_tensors))
attach("sub", _fn("operator.sub", _two_tensors), _fn("torch.sub", _two_tensors), _meth("sub", _two_tensors))
attach("div", _fn("operator.truediv", _two_tensors), _fn("torch.div", _two_tensors), _meth("div", _two_tensors))
attach("scale", *(_fn(t, _scale) for t in ("operator.mul", "operator.imul", "torch.mul")), _meth("mul", _scale))
attach("scalar", *(_fn(t, _scalar("add", "add")) for t in ("operator.add", "operator.iadd", "torch.add")),
       _meth("add", _scalar("add", None)), _fn("operator.sub", _scalar("sub", "rsub")),
       _fn("operator.truediv", _scalar("div", "rdiv")), _meth("div", _scalar("div", None)))
attach("concat", _fn("torch.cat", _cat), _fn("torch.concat", _cat))
attach("stack", _fn("torch.stack", lambda c: {"dim": c.arg(1, "dim", 0) if c.arg(1, "dim", 0) < 0 else
                                               c.spec_dim(c.arg(1, "dim", 0))}))
attach("matmul", _fn("operator.matmul", _two_tensors), _fn("torch.matmul", _two_tensors),
       _meth("matmul", _two_tensors))
attach("softmax", _meth("softmax", _softmax), _fn(F + "softmax", _softmax), _fn("torch.softmax", _softmax),
       _mod(NN + "Softmax", lambda c: {"dim": c.spec_dim(c.module.dim)} if c.module.dim is not None else None))
attach("mean", _meth("mean", _reduce), _fn("torch.mean", _reduce))
attach("reduce_sum", _meth("sum", _reduce), _fn("torch.sum", _reduce))
attach("amax", _meth("amax", _reduce), _fn("torch.amax", _reduce))
attach("amin", _meth("amin", _reduce), _fn("torch.amin", _reduce))
attach("transpose", _meth("transpose", _transpose), _fn("torch.transpose", _transpose))
attach("permute", _meth("permute", _permute_method), _fn("torch.permute", lambda c: _permute_dims(c, c.arg(1, "dims"))),
       _mod("torchvision.ops.misc.Permute", lambda c: _permute_dims(c, list(c.module.dims))))
attach("chunk", _meth("chunk", _chunk), _fn("torch.chunk", _chunk))
attach("split", _meth("split", _split), _fn("torch.split", _split))
attach("roll", _fn("torch.roll", _roll), _meth("roll", _roll))
attach("pad", _fn(F + "pad", _pad))
attach("upsample", _fn(F + "interpolate", _interp), _mod(NN + "Upsample", _upsample_mod))
attach("pixel_shuffle", _mod(NN + "PixelShuffle", lambda c: {"upscale_factor": c.module.upscale_factor}),
       _fn(F + "pixel_shuffle", lambda c: {"upscale_factor": c.arg(1, "upscale_factor")}))
attach("pixel_unshuffle", _mod(NN + "PixelUnshuffle", lambda c: {"downscale_factor": c.module.downscale_factor}),
       _fn(F + "pixel_unshuffle", lambda c: {"downscale_factor": c.arg(1, "downscale_factor")}))
attach("channel_shuffle", _mod(NN + "ChannelShuffle", lambda c: {"groups": c.module.groups}),
       _fn(F + "channel_shuffle", lambda c: {"groups": c.arg(1, "groups")}))
attach("scaled_dot_product_attention", _fn(F + "scaled_dot_product_attention", _sdpa))
attach("pow", _fn("operator.pow", _pow), _fn("torch.pow", _pow), _meth("pow", _pow))
attach("clamp", _fn("torch.clamp", _clamp), _meth("clamp", _clamp))
attach("norm", _fn("torch.linalg.vector_norm", _vector_norm))
for _u in ("sqrt", "rsqrt", "exp", "log", "abs", "neg"):
    attach(_u, _fn("torch." + _u, _no_args), _meth(_u, _no_args))
attach("neg", _fn("operator.neg", _no_args))
