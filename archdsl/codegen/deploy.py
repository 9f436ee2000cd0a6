"""The deploy compiler: a trained train-form model -> an inference model with the same function.

Two layers:

- :func:`deploy_plan` / :func:`deploy_graph` (no torch) rewrite the IR: every ``reparam add:`` group becomes one conv
  (:mod:`archdsl.reparam` proved it possible at compile time), every BatchNorm is folded into the
  conv/linear before it, or into the 1x1 conv/linear after it when that is exact (no padding in between),
  or else becomes a depthwise 1x1 conv; identity, dropout and drop-path disappear. It returns the
  deploy graph and, for each module of the deploy form, the recipe of its weights.
- :func:`deploy` (torch, imported lazily) applies the recipes to a module's ``state_dict``, emits the
  deploy module as generated source (:mod:`archdsl.codegen`) and picks its memory layout.

With ``fold_bn=False`` only the reparam groups are fused (and identities dropped): for RepLKNet that
gives exactly the official deploy form (``large_kernel.lkb_reparam``, BatchNorms kept).

Memory layout rule (``memory_format="auto"``): time a forward at the deployment batch size (``batch_size``,
default 1) in both layouts on this machine and keep the faster one (channels-last wins for dense convs on
oneDNN CPUs and on GPUs, often loses for depthwise-heavy models on CPU; measuring is cheaper than guessing).
The choice and the timings are in ``model.deploy_info``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from .emit import generate
from ..ir import Graph, Node
from ..ops import OPS
from ..passes.reparam import TRANSPARENT_OPS, GroupPlan, plan_group

__all__ = ["Recipe", "DeployPlan", "deploy_graph", "deploy_plan", "deploy", "deploy_state_dict", "deploy_source",
           "deploy_note"]


@dataclass
class Recipe:
    """How one deploy-form module's tensors are computed from the train-form ``state_dict``.

    ``base``: ``("copy", node)`` (the train module, unchanged or with BNs folded in), ``("group", plan)``
    (a fused reparam group) or ``("bn_affine", node)`` (a lone BN as a depthwise 1x1 conv).
    ``pre_bn`` / ``post_bn``: BatchNorm nodes folded in before / after it.
    """

    base: tuple[str, Any]
    pre_bn: Node | None = None
    post_bn: Node | None = None


@dataclass
class DeployPlan:
    """The deploy graph and the recipe of every module in it (keyed by module path)."""

    graph: Graph
    recipes: dict[str, Recipe] = field(default_factory=dict)
    train_graph: Graph | None = None
    fused_groups: list[str] = field(default_factory=list)
    folded_bn: int = 0
    bn_as_conv: int = 0


def _conv_node(nid: int, module: str, in_shape: tuple[int, ...], out_shape: tuple[int, ...], kernel: tuple[int, int],
               stride: tuple[int, int], padding: tuple[int, int], groups: int, scope: Any, loc: Any) -> Node:
    args = {"out_channels": out_shape[0], "kernel_size": kernel, "stride": stride, "padding": padding,
            "dilation": (1, 1), "groups": groups, "bias": True, "padding_mode": "zeros", "in_channels": in_shape[0]}
    op = OPS["conv2d"]
    return Node(id=nid, op="conv2d", args=args, inputs=[], in_shapes=[in_shape], shape=out_shape, name=module,
                module=module, scope=scope, loc=loc, params=op.params([in_shape], args),
                macs=op.macs([in_shape], out_shape, args))


def deploy_graph(graph: Graph, *, fold_bn: bool = True) -> Graph:
    """The deploy form of ``graph`` (no torch): reparam groups fused, BatchNorms folded, identities gone."""
    return deploy_plan(graph, fold_bn=fold_bn).graph


def deploy_plan(graph: Graph, *, fold_bn: bool = True) -> DeployPlan:
    """Rewrite ``graph`` into its deploy form and say how each module's weights follow (no torch).

    See the module docstring for the rules.
    """
    # shallow copies: only args/inputs are rewritten below (scope frames are immutable)
    nodes: dict[int, Node] = {n.id: n.model_copy(update={"args": dict(n.args), "inputs": list(n.inputs)})
                              for n in graph.nodes()}
    plan = DeployPlan(graph.derive(graph.name + "_deploy"), train_graph=graph)
    recipes: dict[int, Recipe] = {}       # by node id (module paths are attached at the end)
    removed: set[int] = set()

    # 1. reparam groups -> one conv, reusing the id of the group's output so consumers need no rewiring
    for path in graph.reparam_groups:
        gp: GroupPlan = plan_group(graph, path)
        out = graph.node(gp.output_nid)
        src = graph.node(gp.input_nid)
        conv = _conv_node(gp.output_nid, gp.fused_path, src.shape, gp.out_shape, gp.kernel, gp.stride, gp.padding,
                          gp.groups, out.scope, out.loc)
        conv.inputs = [gp.input_nid]
        removed |= set(gp.nodes) - {gp.output_nid}
        nodes[gp.output_nid] = conv
        recipes[gp.output_nid] = Recipe(("group", gp))
        plan.fused_groups.append(path)
    for nid in removed:
        nodes.pop(nid, None)

    # 2. ops that are the identity in eval mode vanish (codegen aliases identity nodes away)
    for n in nodes.values():
        if n.op in TRANSPARENT_OPS and n.op != "identity":
            n.op, n.args, n.module = "identity", {}, None

    consumers: dict[int, list[int]] = {nid: [] for nid in nodes}
    for n in nodes.values():
        for i in n.inputs:
            consumers[i].append(n.id)
    outputs = {nid for _, nid in graph.outputs}

    def to_identity(bn: Node) -> None:
        bn.op, bn.args, bn.module, bn.params = "identity", {}, None, 0

    # 3. BatchNorm folding, in topological order
    if fold_bn:
        for nid in [n.id for n in graph.nodes() if n.id in nodes]:
            bn = nodes[nid]
            if bn.op != "batchnorm" or not bn.args["track_running_stats"]:
                continue
            prod = nodes[bn.inputs[0]]
            if (prod.op in ("conv2d", "linear") and consumers[prod.id] == [bn.id] and prod.id not in outputs
                    and recipes.get(prod.id, Recipe(("copy", prod))).post_bn is None):
                r = recipes.setdefault(prod.id, Recipe(("copy", graph.node(prod.id))))
                r.post_bn = graph.node(bn.id)
                prod.args = {**prod.args, "bias": True}
                to_identity(bn)
                plan.folded_bn += 1
                continue
            users = [nodes[u] for u in consumers[bn.id]]
            if users and bn.id not in outputs and all(
                    _pre_foldable(u) and (u.id not in recipes or recipes[u.id].pre_bn is None) for u in users):
                for u in users:
                    r = recipes.setdefault(u.id, Recipe(("copy", graph.node(u.id))))
                    r.pre_bn = graph.node(bn.id)
                    u.args = {**u.args, "bias": True}
                to_identity(bn)
                plan.folded_bn += 1
                continue
            if len(bn.shape) == 3:   # a BN between nonlinearities: keep it as a per-channel affine conv
                c = bn.shape[0]
                conv = _conv_node(bn.id, bn.module or bn.name, bn.shape, bn.shape, (1, 1), (1, 1), (0, 0), c,
                                  bn.scope, bn.loc)
                conv.inputs = list(bn.inputs)
                nodes[bn.id] = conv
                recipes[bn.id] = Recipe(("bn_affine", graph.node(bn.id)))
                plan.bn_as_conv += 1

    # 4. assemble the deploy graph: module nodes keep their path; parameter counts follow the new args
    g = plan.graph
    for nid in sorted(nodes):
        n = nodes[nid]
        if n.op in ("conv2d", "linear"):   # folding a BN adds a bias
            n.params = OPS[n.op].params(n.in_shapes, n.args)
        g.add(n)
    # ids of the fused convs (the renderer marks them; same attribute as render.fuse_reparam_groups)
    g.fused_nodes = {graph.reparam_groups[p]["output"] for p in plan.fused_groups}  # type: ignore[attr-defined]
    for nid, r in recipes.items():
        plan.recipes[nodes[nid].module or ""] = r
    for n in nodes.values():     # untouched stateful modules: copied as they are
        if n.module and n.module not in plan.recipes:
            plan.recipes[n.module] = Recipe(("copy", graph.node(n.id)))
    return plan


def _pre_foldable(n: Node) -> bool:
    """A BN right before this layer folds into it exactly: a linear layer, or a 1x1 conv without padding."""
    if n.op == "linear":
        return True
    return (n.op == "conv2d" and tuple(n.args["kernel_size"]) == (1, 1) and tuple(n.args["padding"]) == (0, 0)
            and tuple(n.args["dilation"]) == (1, 1))


def deploy_note(graph: Graph) -> str:
    """The provenance line of a generated deploy module."""
    return f"{getattr(graph, 'address', graph.name)} (deploy form)"


def deploy_source(graph: Graph, *, fold_bn: bool = True, memory_format: str = "contiguous") -> str:
    """The generated source of the deploy form of ``graph`` (no torch needed)."""
    return generate(deploy_graph(graph, fold_bn=fold_bn), source_note=deploy_note(graph),
                    memory_format=memory_format)


# ---------------------------------------------------------------------------------------- weights (torch)
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
    for nid in steps:
        n = tg.node(nid)
        if n.op == "batchnorm":
            s, t = _bn_scale_shift(sd, n)
            if w is None:
                diag_s, diag_t = diag_s * s, diag_t * s + t
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
        if w is None:
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
        weight[:, :, oh:oh + kh, ow:ow + kw] += w
        bias += b
    return weight, bias


def deploy_state_dict(plan: DeployPlan, train_sd: dict[str, Any]) -> dict[str, Any]:
    """The deploy form's ``state_dict`` computed from the train form's (float64 math, original dtype out)."""
    import torch
    tg = plan.train_graph
    assert tg is not None
    out: dict[str, Any] = {}
    dtype = next((v.dtype for v in train_sd.values() if v.is_floating_point()), torch.float32)
    for path, r in plan.recipes.items():
        kind, obj = r.base
        if kind == "copy" and r.pre_bn is None and r.post_bn is None:
            for k, v in train_sd.items():
                if k == path or (k.startswith(path + ".") and "." not in k[len(path) + 1:]):
                    out[k] = v.clone()   # the deploy model must not share storage with the train model
            continue
        if kind == "group":
            w, b = _group_weights(train_sd, tg, obj)
            is_linear = False
        elif kind == "bn_affine":   # a depthwise 1x1 conv; BNs around it may still fold into it below
            w, b = _bn_scale_shift(train_sd, obj)
            w = w.view(-1, 1, 1, 1)
            is_linear = False
        else:
            n: Node = obj
            w = train_sd[_mod(n) + ".weight"].double()
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
                b = b + (w * t[idx][:, :, None, None]).sum((1, 2, 3))
                w = w * s[idx][:, :, None, None]
        if r.post_bn is not None:
            s, t = _bn_scale_shift(train_sd, r.post_bn)
            w = w * (s[:, None] if is_linear else s[:, None, None, None])
            b = b * s + t
        out[path + ".weight"] = w.to(dtype)
        out[path + ".bias"] = b.to(dtype)
    return out


def _time(model: Any, x: Any, repeats: int) -> float:
    import torch

    def sync() -> None:
        if x.device.type == "cuda":   # kernels run asynchronously: wait for them before reading the clock
            torch.cuda.synchronize(x.device)
    with torch.inference_mode():
        model(x)
        sync()
        ts = []
        for _ in range(repeats):
            t = time.perf_counter()
            model(x)
            sync()
            ts.append(time.perf_counter() - t)
    return sorted(ts)[len(ts) // 2]


def _compile_frozen(model: Any, x: Any) -> Any:
    """``torch.compile`` with inductor's freezing, compiled now on ``x``: the weights become constants, so
    convs run oneDNN's prepacked kernels with bias/ReLU/residual add fused into them (CPU), and the
    pointwise rest is fused into generated loops."""
    import torch
    import torch._inductor.config as inductor_config

    compiled = torch.compile(model, dynamic=False)
    with inductor_config.patch(freezing=True), torch.inference_mode():
        compiled(x)
    return compiled


def deploy(module: Any, *, fold_bn: bool = True, memory_format: str = "auto", repeats: int = 3,
           batch_size: int = 1, compile: bool = False) -> Any:
    """The deploy (inference) form of a compiled train-form module, with the same eval-mode function.

    ``module`` comes from :func:`archdsl.build` (it carries ``arch_graph``) and holds trained weights.
    ``memory_format``: ``"auto"`` (measure both on a ``batch_size`` input, keep the faster), ``"channels_last"``
    or ``"contiguous"``. The faster layout can depend on the batch size, so pass the batch you will deploy
    at.

    ``compile=True`` also compiles the deploy module with ``torch.compile`` and inductor's weight freezing,
    for a ``batch_size`` input (the compile happens here, ~20 s for ResNet-50 on 2 CPU cores, and needs a C++
    compiler on CPU). Call the result under ``torch.inference_mode()``: it is an inference artefact.
    The result is in eval mode; ``model.deploy_info`` records what was done.
    """
    import torch

    from .build import module_class
    graph: Graph | None = getattr(module, "arch_graph", None)
    if graph is None:
        raise TypeError("deploy() needs a module compiled by archdsl (it carries .arch_graph); "
                        "build it with archdsl.build(spec) and load the trained weights into it")
    if memory_format not in ("auto", "channels_last", "contiguous"):
        raise ValueError(f"memory_format must be 'auto', 'channels_last' or 'contiguous', got {memory_format!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    plan = deploy_plan(graph, fold_bn=fold_bn)
    sd = deploy_state_dict(plan, {k: v.detach().cpu() for k, v in module.state_dict().items()})
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    note = deploy_note(graph)

    def make(fmt: str) -> Any:
        src = generate(plan.graph, source_note=note, memory_format=fmt)
        with torch.device("meta"):   # no random init: every tensor comes from the state_dict
            m = module_class(plan.graph, src)()
        m.load_state_dict(sd, strict=True, assign=True)
        m.to(device).eval()
        if fmt == "channels_last":
            m.to(memory_format=torch.channels_last)
        m.arch_graph = plan.graph
        return m

    timings: dict[str, float] = {}
    chosen = memory_format
    model = make("contiguous")
    if memory_format == "auto":
        chosen = "contiguous"
        if len(graph.input_shape) == 3:
            dtype = next((p.dtype for p in module.parameters()), torch.float32)
            x = torch.randn(batch_size, *graph.input_shape, device=device, dtype=dtype)
            timings["contiguous"] = _time(model, x, repeats)
            cl = make("channels_last")
            timings["channels_last"] = _time(cl, x, repeats)
            if timings["channels_last"] < timings["contiguous"]:
                model, chosen = cl, "channels_last"
    elif memory_format == "channels_last":
        model = make("channels_last")
    info = {"fused_groups": len(plan.fused_groups), "folded_bn": plan.folded_bn,
            "bn_as_conv": plan.bn_as_conv, "memory_format": chosen, "timings_s": timings,
            "timed_batch": batch_size if timings else None, "fold_bn": fold_bn, "compiled": False}
    model.deploy_info = info
    if compile:
        if len(graph.input_shape) != 3:
            raise ValueError("deploy(compile=True) needs a network with an image input [C, H, W]")
        dtype = next((p.dtype for p in module.parameters()), torch.float32)
        x = torch.randn(batch_size, *graph.input_shape, device=device, dtype=dtype)
        if chosen == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
        model = _compile_frozen(model, x)
        model.deploy_info = dict(info, compiled=True)
    return model
