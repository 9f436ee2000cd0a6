"""Weights (torch): the deploy form's tensors from the train form's, and checked checkpoint reading.

- :func:`deploy_state_dict` applies the recipes of a :class:`~archdsl.passes.deploy.DeployPlan` (float64
  math, original dtype out): BatchNorm folding, reparam branch kernels padded/regrouped and summed (or, for
  a group over vectors, branch matrices summed into one linear).
- :func:`read_checkpoint` (from :mod:`.checkpoint`, the one checkpoint reader of archdsl) reads a train-form
  ``state_dict`` file and checks everything before any model is built.
"""
from __future__ import annotations

from typing import Any

from ..errors import ArchError
from ..ir import Graph, Node
from ..ops import has_trait
from ..ops.user import user_ops
from ..passes.deploy import DeployPlan
from ..passes.reparam import GroupPlan
from .checkpoint import SHOW_KEYS, finite, listed, read_checkpoint

__all__ = ["SHOW_KEYS", "check_finite", "computed_keys", "deploy_state_dict", "read_checkpoint"]


# ------------------------------------------------------------------------------------------- weight algebra
def _mod(n: Node) -> str:
    """The module path of a stateful node (lowering gives every conv, BatchNorm and linear one)."""
    if n.module is None:
        raise ValueError(f"internal: node {n.name} ({n.op}) has no module path")
    return n.module


def _bn_scale_shift(sd: dict[str, Any], bn: Node) -> tuple[Any, Any]:
    """Eval-mode BN as y = x * scale + shift (per channel)."""
    import torch
    p = _mod(bn) + "."
    std = torch.sqrt(sd[p + "running_var"].double() + bn.args["eps"])
    gamma = sd[p + "weight"].double() if bn.args["affine"] else torch.ones_like(std)
    beta = sd[p + "bias"].double() if bn.args["affine"] else torch.zeros_like(std)
    scale = gamma / std
    return scale, beta - sd[p + "running_mean"].double() * scale


def _channel_affine(sd: dict[str, Any], n: Node, c: int) -> tuple[Any, Any]:
    """A per-channel map of a reparam branch (BatchNorm, ``scale``, ``layer_scale``) as y = x * scale + shift."""
    import torch
    if n.op == "batchnorm":
        return _bn_scale_shift(sd, n)
    if n.op == "scale":
        s = torch.full((c,), float(n.args["factor"]), dtype=torch.float64)
    else:   # layer_scale over channels: the parameter (C, 1, 1) is stored under the module path itself
        s = sd[_mod(n)].double().reshape(-1)
    return s, torch.zeros(c, dtype=torch.float64)


def _in_index(cout: int, cin_g: int, groups: int) -> Any:
    """[cout, cin_g] -> the input channel each weight of a grouped conv reads."""
    import torch
    per = cout // groups
    return (torch.arange(cout) // per * cin_g)[:, None] + torch.arange(cin_g)[None, :]


def _regroup(w: Any, g: int, G: int) -> Any:
    """A groups=g conv weight written as an equivalent groups=G weight (G divides g): zeros elsewhere."""
    import torch
    if g == G:
        return w
    cout, cin_g = w.shape[0], w.shape[1]
    r = g // G
    out = torch.zeros(cout, cin_g * r, *w.shape[2:], dtype=w.dtype)
    j = (torch.arange(cout) // (cout // g)) % r
    cols = (j * cin_g)[:, None] + torch.arange(cin_g)[None, :]
    out[torch.arange(cout)[:, None], cols] = w
    return out


def _branch_kernel(sd: dict[str, Any], tg: Graph, steps: tuple[int, ...], c_in: int) -> tuple[Any, int, Any]:
    """A branch as (weight, groups, bias) in float64; an identity-like branch is a depthwise 1x1 kernel."""
    import torch
    diag_s = torch.ones(c_in, dtype=torch.float64)   # the branch so far, while it is per-channel affine
    diag_t = torch.zeros(c_in, dtype=torch.float64)
    w: Any = None
    groups = 0
    b: Any = None
    pre = False     # a BatchNorm came before the first conv (else diag_s/diag_t are 1/0: skip the products)
    for nid in steps:
        n = tg.node(nid)
        if n.op in ("batchnorm", "scale", "layer_scale"):
            s, t = _channel_affine(sd, n, c_in if w is None else w.shape[0])
            if w is None:
                diag_s, diag_t = diag_s * s, diag_t * s + t
                pre = True
            else:
                w, b = w * s[:, None, None, None], b * s + t
            continue
        if n.op == "conv2d":
            wn = sd[_mod(n) + ".weight"].double()
            gn = n.args["groups"]
            bn_ = sd[_mod(n) + ".bias"].double() if n.args["bias"] else torch.zeros(wn.shape[0], dtype=torch.float64)
        else:   # avgpool: a depthwise conv with a uniform kernel
            kh, kw = n.args["kernel_size"]
            c = n.shape[0]
            wn = torch.full((c, 1, kh, kw), 1.0 / (kh * kw), dtype=torch.float64)
            gn, bn_ = c, torch.zeros(c, dtype=torch.float64)
        if w is None and not pre:
            w, b, groups = wn, bn_, gn
        elif w is None:
            idx = _in_index(wn.shape[0], wn.shape[1], gn)
            b = bn_ + (wn * diag_t[idx][:, :, None, None]).sum((1, 2, 3))
            w, groups = wn * diag_s[idx][:, :, None, None], gn
        else:   # previous step is a 1x1 conv (groups 1, stride 1): compose the two
            dense = _regroup(wn, gn, 1)
            b = bn_ + torch.einsum("omhw,m->o", dense, b)
            w, groups = torch.einsum("omhw,mi->oihw", dense, w[:, :, 0, 0]), 1
    if w is None:
        w = diag_s.view(c_in, 1, 1, 1)
        return w, c_in, diag_t
    return w, groups, b


def _group_weights(sd: dict[str, Any], tg: Graph, gp: GroupPlan) -> tuple[Any, Any]:
    import torch
    K = gp.kernel
    weight = torch.zeros(gp.out_channels, gp.in_channels // gp.groups, *K, dtype=torch.float64)
    bias = torch.zeros(gp.out_channels, dtype=torch.float64)
    for br in gp.branches:
        w, g, b = _branch_kernel(sd, tg, br.steps, gp.in_channels)
        w = _regroup(w, g, gp.groups)
        (oh, ow), (kh, kw) = br.offset, w.shape[2:]
        weight[:, :, oh:oh + kh, ow:ow + kw] += br.sign * w   # sign -1: a subtracted term (`a - b` in the group)
        bias += br.sign * b
    return weight, bias


def _linear_group_weights(sd: dict[str, Any], tg: Graph, gp: GroupPlan) -> tuple[Any, Any]:
    """A reparam group over vectors [F] as one linear: each branch is a product of its linear maps and
    per-feature affine maps (BatchNorm1d, scale, layer_scale), a branch without a linear is the identity."""
    import torch
    weight = torch.zeros(gp.out_channels, gp.in_channels, dtype=torch.float64)
    bias = torch.zeros(gp.out_channels, dtype=torch.float64)
    for br in gp.branches:
        w = torch.eye(gp.in_channels, dtype=torch.float64)
        b = torch.zeros(gp.in_channels, dtype=torch.float64)
        for nid in br.steps:
            n = tg.node(nid)
            if n.op == "linear":
                wl = sd[_mod(n) + ".weight"].double()
                bl = sd[_mod(n) + ".bias"].double() if n.args["bias"] else torch.zeros(wl.shape[0], dtype=wl.dtype)
                w, b = wl @ w, wl @ b + bl
            elif n.op in ("batchnorm", "scale", "layer_scale"):
                s, t = _channel_affine(sd, n, w.shape[0])
                w, b = w * s[:, None], b * s + t
        weight += br.sign * w
        bias += br.sign * b
    return weight, bias


def _after_sum(sd: dict[str, Any], tg: Graph, gp: GroupPlan, w: Any, b: Any) -> tuple[Any, Any]:
    """The per-channel maps after a group's sum (RepViT's BatchNorm after RepVggDw's sum, the 0.5 of its
    distilled head) applied to the fused weight: each scales the output channels, a BatchNorm's shift once."""
    for nid in gp.tail:
        n = tg.node(nid)
        if n.op in ("batchnorm", "scale", "layer_scale"):
            s, t = _channel_affine(sd, n, w.shape[0])
            w, b = w * s.view(-1, *[1] * (w.dim() - 1)), b * s + t
    return w, b


def deploy_state_dict(plan: DeployPlan, train_sd: dict[str, Any]) -> dict[str, Any]:
    """The deploy form's ``state_dict`` computed from the train form's (float64 math, original dtype out)."""
    import torch
    tg = plan.train_graph
    assert tg is not None
    out: dict[str, Any] = {}
    dtype = next((v.dtype for v in train_sd.values() if v.is_floating_point()), torch.float32)
    owned: dict[str, list[str]] = {}      # module path -> its own tensors' keys (not its submodules')
    for k in train_sd:
        owned.setdefault(k.rpartition(".")[0], []).append(k)
    for path, r in plan.recipes.items():
        kind, obj = r.base
        if r.is_copy:
            # a plugin op's module (and a "nested-state" op's, nn.MultiheadAttention) has submodules of its
            # own: all its keys are copied
            nested = isinstance(obj, Node) and (obj.op in user_ops() or has_trait(obj.op, "nested-state"))
            keys = [k for k in train_sd if k.startswith(path + ".")] if nested else owned.get(path, [])
            for k in [*keys, *([path] if path in train_sd else [])]:
                out[k] = train_sd[k].clone()   # the deploy model must not share storage with the train model
            continue
        if kind == "group":
            is_linear = obj.op == "linear"
            w, b = (_linear_group_weights if is_linear else _group_weights)(train_sd, tg, obj)
            w, b = _after_sum(train_sd, tg, obj, w, b)
        elif kind == "bn_affine":   # a depthwise 1x1 conv; BNs around it may still fold into it below
            w, b = _bn_scale_shift(train_sd, obj)
            w = w.view(-1, 1, 1, 1)
            is_linear = False
        else:
            n: Node = obj
            w = train_sd[_mod(n) + ".weight"].to(torch.float64, copy=True)   # ours: scaled in place below
            is_linear = n.op == "linear"
            b = train_sd[_mod(n) + ".bias"].double() if n.args["bias"] else torch.zeros(w.shape[0], dtype=w.dtype)
        if r.pre_bn is not None:
            s, t = _bn_scale_shift(train_sd, r.pre_bn)
            if is_linear:
                b = b + w @ t
                w = w * s[None, :]
            else:
                g = r.pre_bn.shape[0] // w.shape[1]
                idx = _in_index(w.shape[0], w.shape[1], g)
                tail = [1] * (w.dim() - 2)     # the kernel's dims: (kh, kw), or (kt, kh, kw) of a conv3d
                b = b + (w * t[idx].view(*idx.shape, *tail)).sum(tuple(range(1, w.dim())))
                w = w * s[idx].view(*idx.shape, *tail)
        for post in (r.post_bn, r.post_scale):   # a BatchNorm, then a layer_scale / scale, after it
            if post is not None:
                s, t = _channel_affine(train_sd, post, w.shape[0])
                w = w.mul_(s.view(-1, *[1] * (w.dim() - 1)))   # w is this recipe's own copy
                b = b * s + t
        out[path + ".weight"] = w.to(dtype)
        out[path + ".bias"] = b.to(dtype)
    return out


def computed_keys(plan: DeployPlan) -> list[str]:
    """The deploy ``state_dict`` keys that folding computes (the rest are copies of train tensors)."""
    return [f"{path}.{k}" for path, r in plan.recipes.items()
            if not r.is_copy for k in ("weight", "bias")]


def check_finite(sd: dict[str, Any], what: str, keys: list[str] | None = None) -> None:
    """Refuse a state_dict holding NaN or infinite values in ``keys`` (default: all; ``what`` names it)."""
    bad = [k for k in (sd if keys is None else keys) if not finite(sd[k])]
    if bad:
        raise ArchError(f"{what} hold{'s' if len(bad) == 1 else ''} NaN or infinite values in {len(bad)} "
                        f"tensor{'s' if len(bad) != 1 else ''}: {listed(bad)}", None,
                        hint="the train-form weights overflow when BatchNorms are folded; check them, or "
                             "deploy with --keep-bn")
