"""Built-in ops, resampling: upsample/interpolate, resize_as, conv_transpose2d, pixel_shuffle/unshuffle.

The emitted code follows the input's size at run time: ``upsample`` passes ``scale_factor`` (never a size
computed for the declared input) and ``resize_as(a, ref)`` reads ``ref``'s size from the tensor, the way
torchvision's FCN/DeepLab heads resize their logits to the network input. Shapes are per sample [C, H, W].
"""
from __future__ import annotations

import math
from typing import Any

from .core import (
    ArgSpec,
    EmitArgs,
    Expr,
    In,
    Kw,
    Lit,
    OpDef,
    Shape,
    ShapeError,
    _check_positive,
    _need_rank,
    _pair,
    TorchCall,
    int_or_pair,
    register,
)
from .forms import FN, NN, function_form, has_rank, module_form, spec_size

__all__ = ["INTERPOLATION_MODES", "conv_transpose_out"]

#: The modes of ``upsample``/``resize_as`` (F.interpolate's 2-D modes).
INTERPOLATION_MODES = ("nearest", "nearest-exact", "bilinear", "bicubic")
_ALIGNABLE = ("bilinear", "bicubic")


def _check_align(a: dict[str, Any], what: str) -> None:
    if a["align_corners"] is not None and a["mode"] not in _ALIGNABLE:
        raise ShapeError(f"{what} align_corners applies only to mode \"bilinear\" or \"bicubic\", not "
                         f"\"{a['mode']}\"", arg="align_corners", hint="leave align_corners out (none)")


# ---- upsample --------------------------------------------------------------------------------------------
def _upsample_shape(shapes: list[Shape], a: dict[str, Any]) -> Shape:
    c, h, w = _need_rank(shapes, 3, "upsample")
    _check_align(a, "upsample")
    if a.get("antialias") and a["mode"] not in _ALIGNABLE:
        raise ShapeError(f"upsample antialias applies only to mode \"bilinear\" or \"bicubic\", not \"{a['mode']}\"",
                         arg="antialias", hint="leave antialias out (false)")
    s, size = a["scale_factor"], a["size"]
    if (s is None) == (size is None):
        raise ShapeError("upsample takes scale_factor= or size=, exactly one of them",
                         hint="upsample(scale_factor=2) follows the input size; resize_as(a, ref) matches a tensor")
    if size is not None:
        oh, ow = _pair(size)
        if oh <= 0 or ow <= 0:
            raise ShapeError(f"upsample size {size} must be positive", arg="size")
        return (c, oh, ow)
    if s <= 0:
        raise ShapeError(f"upsample scale_factor={s} must be positive", arg="scale_factor")
    oh, ow = math.floor(h * s), math.floor(w * s)   # F.interpolate's output size for a scale factor
    if oh <= 0 or ow <= 0:
        raise ShapeError(f"upsample scale_factor={s} makes the {h}x{w} input empty ({oh}x{ow})", arg="scale_factor",
                         hint=f"the input here is {list(shapes[0])}")
    return (c, oh, ow)


def _interp_tail(e: EmitArgs) -> Expr:
    a = e.args
    return (", mode=", Lit(a["mode"], "mode"), Kw("align_corners", a["align_corners"], None),
            Kw("antialias", a.get("antialias", False), False), ")")


def _upsample_how(e: EmitArgs) -> Expr:
    a = e.args
    if a["size"] is not None:
        return ("size=", int_or_pair(a["size"], "size"))
    # a float literal (2.0, not 2): torch.jit.script types scale_factor as float
    return ("scale_factor=", Lit(float(a["scale_factor"]), "scale_factor"))


def _resize_shape(shapes: list[Shape], a: dict[str, Any]) -> Shape:
    if len(shapes) != 2:
        raise ShapeError(f"resize_as takes 2 tensors (a, ref), got {len(shapes)}",
                         hint="write resize_as(a, ref): a resized to ref's height and width")
    _check_align(a, "resize_as")
    src, ref = shapes
    if len(src) != 3:
        raise ShapeError(f"resize_as: a {list(src)} is not a feature map [C, H, W]")
    if len(ref) < 2:
        raise ShapeError(f"resize_as: ref {list(ref)} has no height and width (its last two dims)")
    return (src[0], ref[-2], ref[-1])


# ---- conv_transpose2d ----------------------------------------------------------------------------------
def conv_transpose_out(size: int, k: int, s: int, p: int, op: int, d: int) -> int:
    """Output length of a transposed conv (PyTorch's formula)."""
    return (size - 1) * s - 2 * p + d * (k - 1) + op + 1


def _convt_norm(shapes: list[Shape], a: dict[str, Any]) -> dict[str, Any]:
    a = dict(a)
    for n in ("kernel_size", "stride", "padding", "output_padding", "dilation"):
        a[n] = _pair(a[n])
    return a


def _convt_shape(shapes: list[Shape], a: dict[str, Any]) -> Shape:
    c, h, w = _need_rank(shapes, 3, "conv_transpose2d")
    _check_positive(a, ["out_channels", "kernel_size", "stride", "dilation", "groups"])
    _check_positive(a, ["padding", "output_padding"], allow_zero=["padding", "output_padding"])
    g = a["groups"]
    if c % g:
        raise ShapeError(f"groups={g} does not divide the {c} input channels", arg="groups")
    if a["out_channels"] % g:
        raise ShapeError(f"groups={g} does not divide out_channels={a['out_channels']}", arg="groups")
    for op, s, d in zip(a["output_padding"], a["stride"], a["dilation"]):
        if op >= max(s, d):
            raise ShapeError(f"output_padding {op} must be smaller than the stride ({s}) or the dilation ({d})",
                             arg="output_padding", hint="output_padding picks one of the stride's possible sizes")
    (kh, kw), (sh, sw), (ph, pw) = a["kernel_size"], a["stride"], a["padding"]
    (oph, opw), (dh, dw) = a["output_padding"], a["dilation"]
    oh, ow = conv_transpose_out(h, kh, sh, ph, oph, dh), conv_transpose_out(w, kw, sw, pw, opw, dw)
    if oh <= 0 or ow <= 0:
        raise ShapeError(f"padding {ph}x{pw} leaves nothing of the {h}x{w} input ({oh}x{ow})", arg="padding",
                         hint=f"the input here is {list(shapes[0])}")
    return (a["out_channels"], oh, ow)


def _convt_params(shapes: list[Shape], a: dict[str, Any]) -> int:
    kh, kw = a["kernel_size"]
    return shapes[0][0] * (a["out_channels"] // a["groups"]) * kh * kw + (a["out_channels"] if a["bias"] else 0)


def _convt_macs(shapes: list[Shape], out: Shape, a: dict[str, Any]) -> int:
    # fvcore: weight elements times input positions (every input pixel scatters a full kernel)
    c, h, w = shapes[0]
    kh, kw = a["kernel_size"]
    return c * (a["out_channels"] // a["groups"]) * kh * kw * h * w


def _convt_ctor(e: EmitArgs) -> Expr:
    a = e.args

    def v(x: Any) -> Any:
        return int_or_pair(x).value
    return ("nn.ConvTranspose2d(", Lit(e.in_shapes[0][0], "in_channels"), ", ", Lit(a["out_channels"], "out_channels"),
            ", ", int_or_pair(a["kernel_size"], "kernel_size"), Kw("stride", v(a["stride"]), 1),
            Kw("padding", v(a["padding"]), 0), Kw("output_padding", v(a["output_padding"]), 0),
            Kw("groups", a["groups"], 1), Kw("bias", a["bias"], True), Kw("dilation", v(a["dilation"]), 1), ")")


# ---- pixel shuffle ---------------------------------------------------------------------------------------
def _shuffle_shape(shapes: list[Shape], a: dict[str, Any]) -> Shape:
    c, h, w = _need_rank(shapes, 3, "pixel_shuffle")
    r = a["upscale_factor"]
    if r < 1:
        raise ShapeError(f"pixel_shuffle upscale_factor={r} must be positive", arg="upscale_factor")
    if c % (r * r):
        raise ShapeError(f"pixel_shuffle needs channels that are a multiple of upscale_factor**2 = {r * r}, got {c}",
                         arg="upscale_factor", hint=f"the input here is {list(shapes[0])}")
    return (c // (r * r), h * r, w * r)


def _unshuffle_shape(shapes: list[Shape], a: dict[str, Any]) -> Shape:
    c, h, w = _need_rank(shapes, 3, "pixel_unshuffle")
    r = a["downscale_factor"]
    if r < 1:
        raise ShapeError(f"pixel_unshuffle downscale_factor={r} must be positive", arg="downscale_factor")
    if h % r or w % r:
        raise ShapeError(f"pixel_unshuffle needs H and W divisible by downscale_factor={r}, got {h}x{w}",
                         arg="downscale_factor", hint=f"the input here is {list(shapes[0])}")
    return (c * r * r, h // r, w // r)


# ---- PyTorch spellings (torch_forms, read by the importer) ------------------------------------------------
def _convt_form(c: TorchCall) -> dict[str, Any] | None:
    m = c.module
    if not has_rank(c, 3) or m.padding_mode != "zeros":
        return None
    return {"out_channels": m.out_channels, "kernel_size": spec_size(m.kernel_size), "stride": spec_size(m.stride),
            "padding": spec_size(m.padding), "output_padding": spec_size(m.output_padding), "groups": m.groups,
            "bias": m.bias is not None, "dilation": spec_size(m.dilation)}


def _interpolate_form(c: TorchCall) -> dict[str, Any] | None:
    """F.interpolate by one scale factor or to a size (a scale per dim, recomputed scales: not the op)."""
    if not has_rank(c, 3) or c.arg(5, "recompute_scale_factor", None):
        return None
    size, sf = c.arg(1, "size", None), c.arg(2, "scale_factor", None)
    out: dict[str, Any] = {"mode": c.arg(3, "mode", "nearest"), "align_corners": c.arg(4, "align_corners", None)}
    if c.arg(6, "antialias", False):
        out["antialias"] = True
    if sf is not None:
        sf = spec_size(sf)
        if isinstance(sf, list):
            return None
        out["scale_factor"] = float(sf)
    elif size is not None:
        out["size"] = spec_size(size)
    return out


def _upsample_module_form(c: TorchCall) -> dict[str, Any] | None:
    m = c.module
    if not has_rank(c, 3):
        return None
    out: dict[str, Any] = {"mode": m.mode, "align_corners": m.align_corners}
    if m.scale_factor is not None:
        sf = spec_size(m.scale_factor)
        if isinstance(sf, list):
            return None
        out["scale_factor"] = float(sf)
    else:
        out["size"] = spec_size(m.size)
    return out


_A = ArgSpec
_MODE = _A("mode", "str", "nearest", INTERPOLATION_MODES)
register(
    OpDef("upsample", "upsample", [_A("scale_factor", "float?", None), _MODE, _A("align_corners", "bool?", None),
                                   _A("size", "int2?", None), _A("antialias", "bool", False)], _upsample_shape,
          "Resize [C, H, W] by scale_factor (F.interpolate; the generated code keeps the factor, so the output "
          "follows the input size at run time), or to a fixed size=[h, w]; antialias=true filters a bilinear or "
          "bicubic downscale (F.interpolate's antialias).",
          aliases=("interpolate",), key_args=("scale_factor", "mode"),
          emit=lambda e: ("F.interpolate(", In(0), ", ", *_upsample_how(e), *_interp_tail(e)),
          module_form=lambda e: ("nn.Upsample(", *_upsample_how(e), *_interp_tail(e)),
          traits={"channel-wise"},
          torch_forms=(function_form(FN + "interpolate", _interpolate_form),
                       module_form(NN + "Upsample", _upsample_module_form))),
    OpDef("resize_as", "upsample", [_MODE, _A("align_corners", "bool?", None)], _resize_shape,
          "resize_as(a, ref): a [C, H, W] resized to ref's height and width, read from ref at run time "
          "(F.interpolate(a, size=ref.shape[-2:]): FCN/DeepLab heads back to the input size).",
          arity=2, key_args=("mode",), size_inputs_from=1,
          emit=lambda e: ("F.interpolate(", In(0), ", size=", In(1), ".shape[-2:]", *_interp_tail(e))),
    OpDef("conv_transpose2d", "conv", [
        _A("out_channels", "int"), _A("kernel_size", "int2"), _A("stride", "int2", 1), _A("padding", "int2", 0),
        _A("output_padding", "int2", 0), _A("groups", "int", 1), _A("bias", "bool", True), _A("dilation", "int2", 1),
    ], _convt_shape, "2-D transposed convolution (nn.ConvTranspose2d); input channels are inferred. "
                     "H' = (H - 1) * stride - 2 * padding + dilation * (k - 1) + output_padding + 1.",
        params=_convt_params, macs=_convt_macs, stateful=True, normalize=_convt_norm,
        key_args=("kernel_size", "stride"), ctor=_convt_ctor, traits={"stateful-module", "inplace-safe-producer"},
        torch_forms=(module_form(NN + "ConvTranspose2d", _convt_form),)),
    OpDef("pixel_shuffle", "upsample", [_A("upscale_factor", "int")], _shuffle_shape,
          "Depth to space: [C*r*r, H, W] -> [C, H*r, W*r] (nn.PixelShuffle).", key_args=("upscale_factor",),
          emit=lambda e: ("F.pixel_shuffle(", In(0), ", ", Lit(e.args["upscale_factor"], "upscale_factor"), ")"),
          module_form=lambda e: ("nn.PixelShuffle(", Lit(e.args["upscale_factor"], "upscale_factor"), ")"),
          traits={"layout-sensitive"},
          torch_forms=(module_form(NN + "PixelShuffle", lambda c: {"upscale_factor": c.module.upscale_factor}),
                       function_form(FN + "pixel_shuffle", lambda c: {"upscale_factor": c.arg(1, "upscale_factor")}))),
    OpDef("pixel_unshuffle", "upsample", [_A("downscale_factor", "int")], _unshuffle_shape,
          "Space to depth: [C, H*r, W*r] -> [C*r*r, H, W] (nn.PixelUnshuffle).", key_args=("downscale_factor",),
          emit=lambda e: ("F.pixel_unshuffle(", In(0), ", ", Lit(e.args["downscale_factor"], "downscale_factor"), ")"),
          module_form=lambda e: ("nn.PixelUnshuffle(", Lit(e.args["downscale_factor"], "downscale_factor"), ")"),
          traits={"layout-sensitive"},
          torch_forms=(module_form(NN + "PixelUnshuffle", lambda c: {"downscale_factor": c.module.downscale_factor}),
                       function_form(FN + "pixel_unshuffle",
                                     lambda c: {"downscale_factor": c.arg(1, "downscale_factor")}))),
)
