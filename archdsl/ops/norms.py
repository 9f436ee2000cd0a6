"""Built-in ops, normalizations beyond batchnorm/layernorm: ``groupnorm``, ``rmsnorm`` and ``normalize``.

``groupnorm`` normalizes groups of channels of a channels-first sample ``[C, ...]`` (nn.GroupNorm; timm's
GroupNorm1 is ``groupnorm(1)``); ``rmsnorm`` is written like ``layernorm`` (the channels of ``[C, H, W]`` or the
last dim, nn.RMSNorm); ``normalize`` divides by the p-norm along a dim (F.normalize, no weights). Norms count
no MACs, as fvcore's conv/linear/matmul count does not.
"""
from __future__ import annotations

from typing import Any

from .core import (MOD, ArgSpec, EmitArgs, Expr, In, Kw, Lit, OpDef, Shape, ShapeError, TorchCall, TorchForm,
                   register)
from .forms import call_arg, need_batch_first, plain_value, sample_dim_arg
from .nn import _divisors, _feature_dim
from .tensor import _norm_dim

__all__: list[str] = []


# ---- groupnorm ---------------------------------------------------------------------------------------------
def _gn_shape(shapes: list[Shape], a: dict[str, Any]) -> Shape:
    s = shapes[0]
    c, g = s[0], a["num_groups"]
    if g < 1:
        raise ShapeError(f"groupnorm num_groups must be positive, got {g}", arg="num_groups")
    if c % g:
        raise ShapeError(f"groupnorm num_groups={g} does not divide the {c} channels of {list(s)}",
                         arg="num_groups", hint=f"divisors of {c}: " + ", ".join(str(x) for x in _divisors(c)))
    if a["eps"] <= 0:
        raise ShapeError(f"eps must be positive, got {a['eps']}", arg="eps")
    return s


def _gn_ctor(e: EmitArgs) -> Expr:
    a = e.args
    return ("nn.GroupNorm(", Lit(a["num_groups"], "num_groups"), ", ", Lit(e.in_shapes[0][0], "num_channels"),
            Kw("eps", a["eps"], 1e-5), Kw("affine", a["affine"], True), ")")


def _gn_form(c: TorchCall) -> dict[str, Any]:
    """nn.GroupNorm and its timm subclasses (GroupNorm, GroupNorm1: the same weight/bias keys)."""
    need_batch_first(c, "GroupNorm")
    m = c.module
    return {"num_groups": int(m.num_groups), "eps": float(m.eps), "affine": bool(m.affine)}


# ---- rmsnorm -----------------------------------------------------------------------------------------------
def _rms_norm(shapes: list[Shape], a: dict[str, Any]) -> dict[str, Any]:
    a = _feature_dim(shapes, a, "rmsnorm")
    rank = len(shapes[0])
    # as layernorm: nn.RMSNorm normalizes trailing dims; the channels of [C, H, W] go through a permute
    if a["dim"] != rank and not (a["dim"] == 1 and rank == 3):
        raise ShapeError(f"rmsnorm normalizes the channels of [C, H, W] or the last dim; dim={a['dim']} "
                         f"is neither for {list(shapes[0])}", arg="dim", hint="permute the dim to the end first")
    a["normalized"] = shapes[0][a["dim"] - 1]
    return a


def _rms_shape(shapes: list[Shape], a: dict[str, Any]) -> Shape:
    if a["eps"] is not None and a["eps"] <= 0:
        raise ShapeError(f"eps must be positive (or none: the dtype's machine epsilon), got {a['eps']}", arg="eps")
    return shapes[0]


def _rms_ctor(e: EmitArgs) -> Expr:
    a = e.args
    return ("nn.RMSNorm(", Lit(a["normalized"], "normalized_shape"), Kw("eps", a["eps"], None),
            Kw("elementwise_affine", a["affine"], True), ")")


def _rms_emit(e: EmitArgs) -> Expr:
    if e.args["dim"] != len(e.shape):
        # the channels of [C, H, W], normalized channels-last (timm's RmsNorm2d)
        return (MOD, "(", In(0), ".permute(0, 2, 3, 1)).permute(0, 3, 1, 2)")
    return (MOD, "(", In(0), ")")


def _rms_torch(c: TorchCall) -> dict[str, Any]:
    """nn.RMSNorm over the last dim (a normalized_shape of one size)."""
    m = c.module
    if len(tuple(m.normalized_shape)) != 1:
        raise ShapeError(f"RMSNorm over the {len(tuple(m.normalized_shape))} last dims; rmsnorm normalizes one dim")
    eps = None if m.eps is None else float(m.eps)
    return {"eps": eps, "affine": bool(m.elementwise_affine), "dim": sample_dim_arg(c, -1)}


def _rms_timm(dim: int) -> Any:
    """timm's RmsNorm (last dim) and RmsNorm2d (channels of NCHW): a ``weight`` key like nn.RMSNorm's."""
    def form(c: TorchCall) -> dict[str, Any]:
        m = c.module
        if dim == 1:
            need_batch_first(c, "RmsNorm2d")
            if len(c.in_shapes[0]) != 3:
                raise ShapeError(f"RmsNorm2d on {list(c.in_shapes[0])}: rmsnorm(dim=1) needs [C, H, W]")
        d = 1 if dim == 1 else sample_dim_arg(c, -1)
        return {"eps": float(m.eps), "affine": bool(m.elementwise_affine), "dim": d}
    return form


# ---- normalize ---------------------------------------------------------------------------------------------
def _normalize_norm(shapes: list[Shape], a: dict[str, Any]) -> dict[str, Any]:
    a = dict(a)
    a["dim"] = _norm_dim(a["dim"], len(shapes[0]), "normalize")
    return a


def _normalize_shape(shapes: list[Shape], a: dict[str, Any]) -> Shape:
    if a["p"] <= 0:
        raise ShapeError(f"normalize p={a['p']} must be positive (2 is the Euclidean norm)", arg="p")
    if a["eps"] < 0:
        raise ShapeError(f"normalize eps={a['eps']} must not be negative", arg="eps")
    return shapes[0]


def _normalize_form(c: TorchCall) -> dict[str, Any] | None:
    """F.normalize(input, p=2.0, dim=1, eps=1e-12); a call writing into ``out=`` is not this op."""
    if call_arg(c, 4, "out", None) is not None:
        return None
    p = plain_value(call_arg(c, 1, "p", 2.0), "p")
    d = plain_value(call_arg(c, 2, "dim", 1), "dim")
    eps = plain_value(call_arg(c, 3, "eps", 1e-12), "eps")
    return {"p": float(p), "dim": sample_dim_arg(c, d), "eps": float(eps)}


_A = ArgSpec
register(
    OpDef("groupnorm", "norm", [_A("num_groups", "int"), _A("eps", "float", 1e-5), _A("affine", "bool", True)],
          _gn_shape,
          "Group normalization of a channels-first sample [C, ...] (nn.GroupNorm): the channels in num_groups "
          "groups, each normalized over its channels and every other dim; groupnorm(1) is timm's GroupNorm1.",
          params=lambda s, a: 2 * s[0][0] if a["affine"] else 0, stateful=True, aliases=("group_norm",),
          key_args=("num_groups",), ctor=_gn_ctor, traits={"stateful-module", "layout-sensitive"},
          torch_forms=(TorchForm("module", "torch.nn.GroupNorm", _gn_form),
                       TorchForm("module", "timm.layers.norm.GroupNorm", _gn_form),
                       TorchForm("module", "timm.layers.norm.GroupNorm1", _gn_form))),
    OpDef("rmsnorm", "norm", [_A("eps", "float?", None), _A("affine", "bool", True), _A("dim", "int?", None)],
          _rms_shape,
          "Root-mean-square normalization over one dim (nn.RMSNorm; eps none: the dtype's machine epsilon), "
          "written like layernorm: the channels of [C, H, W] (timm RmsNorm2d) or the last dim (dim=-1).",
          params=lambda s, a: a["normalized"] if a["affine"] else 0, stateful=True, normalize=_rms_norm,
          aliases=("rms_norm",), ctor=_rms_ctor, emit=_rms_emit, traits={"stateful-module", "layout-sensitive"},
          torch_forms=(TorchForm("module", "torch.nn.RMSNorm", _rms_torch),
                       TorchForm("module", "timm.layers.norm.RmsNorm", _rms_timm(-1)),
                       TorchForm("module", "timm.layers.norm.RmsNorm2d", _rms_timm(1)))),
    OpDef("normalize", "norm", [_A("p", "float", 2.0), _A("dim", "int", 1), _A("eps", "float", 1e-12)],
          _normalize_shape,
          "Divide by the p-norm along dim (F.normalize; batch is dim 0, 1 = channels): x / max(||x||_p, eps).",
          normalize=_normalize_norm, key_args=("dim",),
          emit=lambda e: ("F.normalize(", In(0), Kw("p", float(e.args["p"]), 2.0), ", dim=", Lit(e.args["dim"], "dim"),
                          Kw("eps", float(e.args["eps"]), 1e-12), ")"),
          traits={"layout-sensitive"},
          torch_forms=(TorchForm("function", "torch.nn.functional.normalize", _normalize_form),)),
)
