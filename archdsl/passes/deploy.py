"""The deploy rewrite of the graph IR (no torch): train form -> inference form, as six named passes.

- ``fuse_reparam``: every ``reparam add:`` group becomes one conv, or one linear for a group over vectors
  (:mod:`archdsl.passes.reparam` proves it exact), keeping the id of the group's output so consumers need no
  rewiring; ``fused="."`` puts that layer at the container's own path (timm's ``fuse()`` modules);
- ``drop_eval_identities``: ops that are the identity in eval mode (dropout, drop_path) become ``identity``
  (code generation aliases identities away);
- ``fold_bn``: every BatchNorm is folded into the layer before it, or into the 1x1 conv / linear after it
  when that is exact, or else kept as a per-channel affine map (a depthwise 1x1 conv; on a video or volume
  ``[C, T, H, W]`` it stays a BatchNorm3d);
- ``fold_scales``: a ``layer_scale`` / ``scale`` folds into the conv or linear whose output it scales (permutes
  in between followed: ConvNeXt's ``linear, permute, layer_scale``);
- ``fuse_mul_add``: a product only a sum reads becomes ``addcmul`` (one pass over the map, not two);
- ``fuse_linear_pointwise``: a linear only a GELU/ReLU/SiLU or a residual sum reads becomes ``linear_act`` /
  ``linear_add`` (one oneDNN kernel on the CPU, the activation or sum as the GEMM's epilogue).

**Exact or not done.** A BatchNorm scales the *channel* axis (dim 0 of ``[C, H, W]`` and ``[C, T, H, W]``,
the only axis of ``[F]``). It folds into a neighbour only when that neighbour's own channel axis is the same
one: a conv2d (channels of a feature map), a conv3d (of a video or volume), or a ``linear`` on a vector
``[F]``. A ``linear`` on a feature map acts on the last axis (the width), so a BatchNorm beside it is never
folded into it; the plan says so in
:attr:`DeployPlan.notes`. The deploy form's size is checked too: a group whose fused conv would be much
larger than its branches (a dense kernel built from a grouped one) or a deploy form over
``Limits.max_params`` is refused with an error at the group's line.

:func:`deploy_plan` returns the deploy graph and, for every module of the deploy form, the recipe of its
weights (applied by :mod:`archdsl.codegen.weights`). With ``fold_bn=False`` only reparam groups are fused:
for RepLKNet that is exactly the official deploy form (``lkb_reparam``, BatchNorms kept).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ArchError, Diagnostic
from ..ir import Graph, Loc, Node
from ..limits import Limits
from ..ops import OPS, has_trait
from ..source import Source, Span
from .manager import Pass, run_passes
from .reparam import FusionError, GroupPlan, plan_group

__all__ = ["Recipe", "DeployPlan", "DEPLOY_PASSES", "MAX_GROUP_GROWTH", "deploy_graph", "deploy_plan",
           "deploy_note", "state_shapes", "loc_span"]

# A fused group may hold this many times the parameters of its branches (RepVGG/DBB/RepLKNet shrink) ...
MAX_GROUP_GROWTH = 8
# ... and always at least this many more (tiny groups may grow by any factor)
_GROWTH_SLACK = 1_000_000


@dataclass
class Recipe:
    """How one deploy-form module's tensors are computed from the train-form ``state_dict``.

    ``base``: ``("copy", node)`` (the train module, unchanged or with BNs folded in), ``("group", plan)``
    (a fused reparam group) or ``("bn_affine", node)`` (a lone BN as a depthwise 1x1 conv); nodes are
    train-graph nodes. ``pre_bn`` / ``post_bn``: BatchNorm nodes folded in before / after it;
    ``post_scale``: a ``layer_scale`` or ``scale`` folded in after those.
    """

    base: tuple[str, Any]
    pre_bn: Node | None = None
    post_bn: Node | None = None
    post_scale: Node | None = None

    @property
    def is_copy(self) -> bool:
        """The train module's tensors, unchanged (nothing folded into them)."""
        return self.base[0] == "copy" and self.pre_bn is None and self.post_bn is None and self.post_scale is None


@dataclass
class DeployPlan:
    """The deploy graph and the recipe of every module in it (keyed by module path); also the context the
    deploy passes share while they run (``by_id``: recipes by node id until module paths are attached)."""

    graph: Graph
    recipes: dict[str, Recipe] = field(default_factory=dict)
    train_graph: Graph | None = None
    fused_groups: list[str] = field(default_factory=list)
    folded_bn: int = 0
    bn_as_conv: int = 0
    folded_scales: int = 0
    fused_mul_add: int = 0
    fused_linear_act: int = 0
    fused_linear_add: int = 0
    notes: list[str] = field(default_factory=list)   # what was left unfused, and why
    limits: Limits = field(default_factory=Limits)
    by_id: dict[int, Recipe] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------ helpers
def loc_span(loc: Loc | None) -> Span | None:
    """A :class:`Span` for a node's location, with the source line when the spec file is readable."""
    if loc is None:
        return None
    text = ""
    try:
        p = Path(loc.file)
        if p.is_file() and p.stat().st_size <= 16 << 20:
            text = p.read_text(encoding="utf-8", errors="replace")
    except OSError:   # the location alone still says where
        pass
    return Span(Source(text, loc.file), loc.line, loc.col)


def _copy(n: Node, **update: Any) -> Node:
    """A copy of ``n`` whose containers are its own (passes never edit their input's nodes)."""
    base = {"args": dict(n.args), "inputs": list(n.inputs), "in_shapes": list(n.in_shapes), "scope": list(n.scope)}
    return n.model_copy(update={**base, **update})


def _rebuild(graph: Graph, nodes: dict[int, Node], fused: set[int]) -> Graph:
    g = graph.derive(graph.name)
    for nid in sorted(nodes):
        g.add(nodes[nid])
    g.fused_nodes = set(fused)
    return g


def _conv_node(nid: int, module: str, in_shape: tuple[int, ...], out_shape: tuple[int, ...], kernel: tuple[int, int],
               stride: tuple[int, int], padding: tuple[int, int], groups: int, scope: Any, loc: Any,
               inputs: list[int]) -> Node:
    args = {"out_channels": out_shape[0], "kernel_size": kernel, "stride": stride, "padding": padding,
            "dilation": (1, 1), "groups": groups, "bias": True, "padding_mode": "zeros", "in_channels": in_shape[0]}
    op = OPS["conv2d"]
    return Node(id=nid, op="conv2d", args=args, inputs=list(inputs), in_shapes=[in_shape], shape=out_shape,
                name=module, module=module, scope=list(scope), loc=loc, params=op.params([in_shape], args),
                macs=op.macs([in_shape], out_shape, args))


def _linear_node(nid: int, module: str, in_shape: tuple[int, ...], out_shape: tuple[int, ...], scope: Any,
                 loc: Any, inputs: list[int]) -> Node:
    """A ``linear`` with bias (the fused layer of a reparam group over vectors)."""
    args = {"out_features": out_shape[0], "bias": True}
    op = OPS["linear"]
    return Node(id=nid, op="linear", args=args, inputs=list(inputs), in_shapes=[in_shape], shape=out_shape,
                name=module, module=module, scope=list(scope), loc=loc, params=op.params([in_shape], args),
                macs=op.macs([in_shape], out_shape, args))


def _with_bias(n: Node) -> Node:
    """A copy of layer ``n`` with a bias (folding a BatchNorm's shift or a scale into it needs one), its
    parameter count updated."""
    args = {**n.args, "bias": True}
    return _copy(n, args=args, params=OPS[n.op].params(n.in_shapes, args))


def _channel_axis_is_bn_axis(n: Node, shape: tuple[int, ...]) -> bool:
    """Does layer ``n`` mix/scale the same axis a BatchNorm on ``shape`` normalises (dim 0)?

    conv2d: its channels are dim 0 of a feature map; conv3d: of a video or volume ``[C, T, H, W]``. linear: it
    acts on the last dim, which is the BN's axis only for a vector ``[F]``.
    """
    if n.op == "conv2d":
        return len(shape) == 3
    if n.op == "conv3d":
        return len(shape) == 4
    if n.op == "linear":
        return len(shape) == 1
    return False


#: The layers a BatchNorm folds into (weights.py scales their weight along the output or input channels).
_FOLDS_BN = ("conv2d", "conv3d", "linear")


def _pre_foldable(n: Node, bn_shape: tuple[int, ...]) -> bool:
    """A BN right before this layer folds into it exactly: a linear on a vector, or a 1x1 (1x1x1) conv without
    padding (a padded border would see the BN's shift where the train form sees zeros)."""
    if not _channel_axis_is_bn_axis(n, bn_shape):
        return False
    if n.op == "linear":
        return True
    return (set(n.args["kernel_size"]) == {1} and set(n.args["padding"]) == {0}
            and set(n.args["dilation"]) == {1})


def _group_error(graph: Graph, path: str, message: str, hint: str | None, nid: int | None = None) -> ArchError:
    info = graph.reparam_groups[path]
    notes = []
    if nid is not None:
        n = graph.node(nid)
        notes.append((f"{n.name or n.op} ({n.op}) is here", loc_span(n.loc)))
    return ArchError(Diagnostic(message, loc_span(info.loc), hint=hint, notes=notes))


# ------------------------------------------------------------------------------------------------- passes
def fuse_reparam(graph: Graph, plan: DeployPlan) -> Graph:
    """Every reparam group -> one conv at the group output's id; refuses a fused form that explodes in size."""
    nodes = {n.id: n for n in graph.records()}
    out_nodes: dict[int, Node] = {}
    removed: set[int] = set()
    fused: set[int] = set(graph.fused_nodes)
    for path in graph.reparam_groups:
        try:
            gp: GroupPlan = plan_group(graph, path)
        except FusionError as e:   # proven at compile time; a graph built by hand may still get here
            raise _group_error(graph, path, f"reparam group cannot be fused into one conv: {e.message}", e.hint,
                               e.nid) from None
        out = graph.node(gp.output_nid)
        src = graph.node(gp.input_nid)
        # the fused conv lives in the group's container: the output's frames up to the group's own, not
        # those of a block inside a branch (a single-branch group's output is that block's last layer)
        cut = next((i + 1 for i, f in enumerate(out.scope) if f.kind == "reparam" and f.path == path),
                   len(out.scope))
        scope = out.scope[:cut]
        if gp.fused_container:   # fused=".": the layer is the container itself, no longer a module inside it
            fp = gp.fused_path
            scope = [f for f in scope if f.path != fp and not f.path.startswith(fp + ".")]
        if gp.op == "linear":    # a group over vectors [F]: one linear
            conv = _linear_node(gp.output_nid, gp.fused_path, src.shape, gp.out_shape, scope, out.loc,
                                [gp.input_nid])
        else:
            conv = _conv_node(gp.output_nid, gp.fused_path, src.shape, gp.out_shape, gp.kernel, gp.stride,
                              gp.padding, gp.groups, scope, out.loc, [gp.input_nid])
        branch_params = sum(graph.node(i).params for i in gp.nodes)
        if conv.params > plan.limits.max_params or \
                conv.params > max(MAX_GROUP_GROWTH * branch_params, branch_params + _GROWTH_SLACK):
            layer = ("a linear layer" if gp.op == "linear" else
                     f"a {gp.kernel[0]}x{gp.kernel[1]} conv with groups={gp.groups}")
            raise _group_error(
                graph, path,
                f"the deploy form of reparam group '{path}' would be {layer} and {conv.params:,} parameters, "
                f"{conv.params / max(1, branch_params):,.0f}x "
                f"the {branch_params:,} of its branches (limit: {MAX_GROUP_GROWTH}x, max_params "
                f"{plan.limits.max_params:,})",
                "branches with different groups fuse into the densest one; give every conv branch the same "
                "groups, or drop 'reparam'")
        removed |= set(gp.nodes) - {gp.output_nid}
        out_nodes[gp.output_nid] = conv
        plan.by_id[gp.output_nid] = Recipe(("group", gp))
        plan.fused_groups.append(path)
        fused.add(gp.output_nid)
    kept = {nid: out_nodes.get(nid) or _copy(n) for nid, n in nodes.items() if nid not in removed}
    return _rebuild(graph, kept, fused)


def drop_eval_identities(graph: Graph, plan: DeployPlan) -> Graph:
    """dropout / drop_path (identity in eval mode) become ``identity`` nodes, which codegen aliases away."""
    nodes = {n.id: (_copy(n, op="identity", args={}, module=None, params=0, macs=0)
                    if has_trait(n.op, "eval-identity") and n.op != "identity" else _copy(n))
             for n in graph.records()}
    return _rebuild(graph, nodes, graph.fused_nodes)


def fold_bn(graph: Graph, plan: DeployPlan) -> Graph:
    """Fold every BatchNorm into a neighbour that acts on the same axis, else keep it as a depthwise 1x1 conv."""
    tg = plan.train_graph or graph
    nodes = {n.id: _copy(n) for n in graph.records()}
    recipes = plan.by_id
    outputs = {nid for _, nid in graph.outputs}

    def to_identity(bn: Node) -> None:
        nodes[bn.id] = _copy(bn, op="identity", args={}, module=None, params=0, macs=0)

    for nid in sorted(nodes):            # ids are a topological order
        bn = nodes[nid]
        if bn.op != "batchnorm" or not bn.args["track_running_stats"]:
            continue
        prod = nodes[bn.inputs[0]]
        users = [nodes[u] for u in graph.consumers(bn.id)]
        blocked = [n for n in [prod, *users] if n.op in _FOLDS_BN and not _channel_axis_is_bn_axis(n, bn.shape)]
        if (prod.op in _FOLDS_BN and _channel_axis_is_bn_axis(prod, bn.shape)
                and graph.consumers(prod.id) == [bn.id] and prod.id not in outputs
                and recipes.get(prod.id, Recipe(("copy", None))).post_bn is None):
            r = recipes.setdefault(prod.id, Recipe(("copy", tg.node(prod.id))))
            r.post_bn = tg.node(bn.id)
            nodes[prod.id] = _with_bias(prod)
            to_identity(bn)
            plan.folded_bn += 1
            continue
        if users and bn.id not in outputs and all(
                _pre_foldable(u, bn.shape) and (u.id not in recipes or recipes[u.id].pre_bn is None) for u in users):
            for u in users:
                r = recipes.setdefault(u.id, Recipe(("copy", tg.node(u.id))))
                r.pre_bn = tg.node(bn.id)
                nodes[u.id] = _with_bias(nodes[u.id])
            to_identity(bn)
            plan.folded_bn += 1
            continue
        kept_as = "kept as a batchnorm"
        if len(bn.shape) == 3:   # a BN between nonlinearities: keep it as a per-channel affine conv
            c = bn.shape[0]
            conv = _conv_node(bn.id, bn.module or bn.name, bn.shape, bn.shape, (1, 1), (1, 1), (0, 0), c,
                              bn.scope, bn.loc, list(bn.inputs))
            conv.label = bn.label
            nodes[bn.id] = conv
            recipes[bn.id] = Recipe(("bn_affine", tg.node(bn.id)))
            plan.bn_as_conv += 1
            kept_as = "kept as a depthwise 1x1 conv"
        if blocked:
            where = f" ({bn.loc})" if bn.loc else ""
            other = blocked[0]
            plan.notes.append(
                f"batchnorm '{bn.name}'{where} not folded into {other.op} '{other.name}': it acts on the last "
                f"dimension of {list(other.in_shapes[0])}, not on the channels the batchnorm scales; {kept_as}")
    return _rebuild(graph, nodes, graph.fused_nodes)


def _out_axis(n: Node) -> int | None:
    """The per-sample axis of layer ``n``'s output that its weight's rows make (a conv's channels, dim 0 of
    [C, H, W] / [C, T, H, W]; a linear's features, the last dim); None for any other op."""
    if (n.op == "conv2d" and len(n.shape) == 3) or (n.op == "conv3d" and len(n.shape) == 4):
        return 0
    if n.op == "linear":
        return len(n.shape) - 1
    return None


def fold_scales(graph: Graph, plan: DeployPlan) -> Graph:
    """Fold every ``layer_scale`` and ``scale`` into the conv or linear whose output it scales.

    ConvNeXt's ``layer_scale`` follows ``linear(dim), permute([0, 3, 1, 2])``: the permute is followed back, so
    the scale's channel axis is matched with the linear's output features. ``gamma * (W x + b)`` is
    ``(gamma W) x + gamma b`` exactly; the scale's pass over the feature map is gone. Folded only where every
    value in between feeds nothing else (a value read twice would see the scale where the train form does not).
    """
    nodes = {n.id: _copy(n) for n in graph.records()}
    tg = plan.train_graph or graph
    outputs = {nid for _, nid in graph.outputs}
    for nid in sorted(nodes):
        sc = nodes[nid]
        if sc.op not in ("layer_scale", "scale") or nid in outputs or not sc.inputs:
            continue
        # the scaled axis, per sample (None: a scalar scales every axis)
        axis = sc.args["dim"] - 1 if sc.op == "layer_scale" else None
        prev, cur = sc, nodes[sc.inputs[0]]
        while cur.op in ("permute", "identity") and graph.consumers(cur.id) == [prev.id] and cur.id not in outputs:
            if cur.op == "permute" and axis is not None:
                axis = cur.args["dims"][axis + 1] - 1     # dims count the batch as 0
            prev, cur = cur, nodes[cur.inputs[0]]
        out_axis = _out_axis(cur)
        r = plan.by_id.get(cur.id)
        if (out_axis is None or (axis is not None and axis != out_axis) or graph.consumers(cur.id) != [prev.id]
                or cur.id in outputs or (r is not None and r.post_scale is not None)):
            continue
        r = plan.by_id.setdefault(cur.id, Recipe(("copy", tg.node(cur.id))))
        r.post_scale = tg.node(nid)
        nodes[cur.id] = _with_bias(cur)
        nodes[nid] = _copy(sc, op="identity", args={}, module=None, params=0, macs=0)
        plan.folded_scales += 1
    return _rebuild(graph, nodes, graph.fused_nodes)


def _past_identities(nodes: dict[int, Node], n: Node) -> Node:
    """The value ``n`` passes on: an identity (an identity branch, a dropout made one) is its input."""
    while n.op == "identity" and len(n.inputs) == 1:
        n = nodes[n.inputs[0]]
    return n


def fuse_mul_add(graph: Graph, plan: DeployPlan) -> Graph:
    """A product of two tensors read only by a sum, as its first or second term, becomes ``addcmul``.

    ``a * b + t`` (and ``t + a * b``) is ``torch.addcmul(t, a, b)``: one pass over the map where the train form
    makes two (ConvNeXt V2's GRN, a squeeze-excitation gate before its residual sum). A sum of more terms keeps
    the rest: ``a * b + t + u`` is ``addcmul(t, a, b) + u``, the same order of additions.
    """
    from ..ops import broadcast
    nodes = {n.id: _copy(n) for n in graph.records()}
    outputs = {nid for _, nid in graph.outputs}
    for nid in sorted(nodes):
        add = nodes[nid]
        if add.op != "add" or len(add.inputs) < 2:
            continue
        for pos in (0, 1):
            m = nodes[add.inputs[pos]]
            if (m.op != "mul" or len(m.inputs) != 2 or m.id in outputs or graph.consumers(m.id) != [nid]
                    or add.inputs.count(m.id) != 1):
                continue
            t = _past_identities(nodes, nodes[add.inputs[1 - pos]])
            ins, shapes = [t.id, *m.inputs], [t.shape, *m.in_shapes]
            if len(add.inputs) == 2:      # the sum itself becomes the addcmul
                nodes[nid] = _copy(add, op="addcmul", args={}, inputs=ins, in_shapes=shapes)
                del nodes[m.id]
            elif t.id < m.id:             # the product's node becomes addcmul(t, a, b), the sum keeps the rest
                nodes[m.id] = _copy(m, op="addcmul", args={}, inputs=ins, in_shapes=shapes,
                                    shape=broadcast([t.shape, m.shape], "addcmul"), batched=t.batched or m.batched)
                nodes[nid] = _copy(add, inputs=[m.id, *add.inputs[2:]],
                                   in_shapes=[nodes[m.id].shape, *add.in_shapes[2:]])
            else:                         # t is computed after the product: the node order has no place for it
                continue
            plan.fused_mul_add += 1
            break
    return _rebuild(graph, nodes, graph.fused_nodes)


def _sole_reader(graph: Graph, nodes: dict[int, Node], nid: int, outputs: set[int]) -> tuple[Node, int] | None:
    """The one op that reads ``nid``'s value, past identities between them, and the id it reads (``nid`` or
    the last identity); None where that value or one on the way is a graph output or is read by more than one
    op (it must not see a fused epilogue)."""
    while nid not in outputs:
        readers = graph.consumers(nid)
        if len(readers) != 1 or nodes[readers[0]].inputs.count(nid) != 1:
            return None
        n = nodes[readers[0]]
        if n.op != "identity":
            return n, nid
        nid = n.id
    return None


def fuse_linear_pointwise(graph: Graph, plan: DeployPlan) -> Graph:
    """A ``linear`` read only by a GELU/ReLU/SiLU becomes ``linear_act``; one read only by a two-term sum whose
    other term has its shape becomes ``linear_add`` (the sum's other term its second input).

    Both run on the CPU as one oneDNN inner product with the activation or the sum as its epilogue
    (:mod:`archdsl.ops.fused`): the pass the bias broadcast and the separate activation or sum make over the
    output is gone (ViT's fc1 + GELU and fc2 + residual, Swin's and ConvNeXt's MLPs, VGG's classifier). The
    linear keeps its node id and module path (its weights, folds included, are unchanged); the activation or
    sum becomes an identity of it. The other term must be computed before the linear (it is its input now).
    """
    from ..ops.fused import LINEAR_ACTS
    nodes = {n.id: _copy(n) for n in graph.records()}
    outputs = {nid for _, nid in graph.outputs}
    for nid in sorted(nodes):
        lin = nodes[nid]
        if lin.op != "linear" or not lin.batched or not lin.module:
            continue
        found = _sole_reader(graph, nodes, nid, outputs)
        if found is None:
            continue
        reader, via = found
        if not reader.batched:
            continue
        if reader.op in LINEAR_ACTS:
            nodes[nid] = _copy(lin, op="linear_act", args={**lin.args, "act": reader.op,
                                                            "approximate": reader.args.get("approximate", "none")})
            plan.fused_linear_act += 1
        elif reader.op == "add" and len(reader.inputs) == 2:
            other = _past_identities(nodes, nodes[reader.inputs[1 - reader.inputs.index(via)]])
            if other.id >= nid or other.shape != lin.shape or not other.batched:
                continue
            nodes[nid] = _copy(lin, op="linear_add", inputs=[*lin.inputs, other.id],
                               in_shapes=[*lin.in_shapes, other.shape])
            plan.fused_linear_add += 1
        else:
            continue
        # the activation or the sum is now the identity of the value it read (the fused linear's, aliased)
        nodes[reader.id] = _copy(reader, op="identity", args={}, module=None, params=0, macs=0,
                                 inputs=[via], in_shapes=[nodes[via].shape])
    return _rebuild(graph, nodes, graph.fused_nodes)


DEPLOY_PASSES = (
    Pass("fuse_reparam", fuse_reparam, "reparam groups -> one conv each"),
    Pass("drop_eval_identities", drop_eval_identities, "dropout, drop_path -> identity"),
    Pass("fold_bn", fold_bn, "BatchNorm folded into the conv/linear acting on its channels"),
    Pass("fold_scales", fold_scales, "layer_scale/scale folded into the conv/linear whose output it scales"),
    Pass("fuse_mul_add", fuse_mul_add, "a product read only by a sum -> addcmul"),
    Pass("fuse_linear_pointwise", fuse_linear_pointwise,
         "a linear read only by gelu/relu/silu or a residual sum -> linear_act / linear_add"),
)

#: the passes ``fold_bn=False`` leaves out (they fold or fuse layers other than reparam groups)
_FOLDING = frozenset({"fold_bn", "fold_scales", "fuse_mul_add", "fuse_linear_pointwise"})


# ------------------------------------------------------------------------------------------------ drivers
def deploy_plan(graph: Graph, *, fold_bn: bool = True, limits: Limits | None = None,
                print_after: str | None = None, verify: bool = True) -> DeployPlan:
    """Rewrite ``graph`` into its deploy form and say how each module's weights follow (no torch).

    Raises :class:`ArchError` (at the group's line) when the deploy form would exceed the size checks.
    ``graph`` itself is left untouched.
    """
    plan = DeployPlan(graph, train_graph=graph, limits=limits or Limits())
    # fold_bn=False is the official RepLKNet deploy form: reparam groups fused, every other layer as it is
    passes = [p for p in DEPLOY_PASSES if fold_bn or p.name not in _FOLDING]
    g = run_passes(graph, passes, plan, verify=verify, print_after=print_after)
    g.name = graph.name + "_deploy"
    total = g.total_params
    if total > plan.limits.max_params:
        raise ArchError(Diagnostic(f"the deploy form of '{graph.name}' has {total:,} parameters, over the limit "
                                   f"max_params={plan.limits.max_params:,}", loc_span(graph.loc),
                                   hint="raise it with --limit max_params=N if this is intended"))
    plan.graph = g
    for nid, r in plan.by_id.items():
        plan.recipes[g.node(nid).module or ""] = r
    for n in g.records():     # untouched stateful modules: copied as they are
        if n.module and n.module not in plan.recipes:
            plan.recipes[n.module] = Recipe(("copy", graph.node(n.id)))
    return plan


def deploy_graph(graph: Graph, *, fold_bn: bool = True, limits: Limits | None = None) -> Graph:
    """The deploy form of ``graph`` (no torch): reparam groups fused, BatchNorms folded, identities gone.

    ``fused_nodes`` of the result holds the ids of the fused convs (the renderer marks them).
    """
    return deploy_plan(graph, fold_bn=fold_bn, limits=limits).graph


def deploy_note(graph: Graph) -> str:
    """The provenance line of a generated deploy module."""
    return f"{graph.address} (deploy form)"


def state_shapes(graph: Graph) -> dict[str, tuple[int, ...]] | None:
    """The ``state_dict`` keys and shapes ``graph`` compiles to, computed from the IR (nothing is built).

    ``None`` when the graph holds a stateful op this function does not know (callers then build the
    model on the meta device instead).
    """
    from ..ops import layer_scale_shape
    out: dict[str, tuple[int, ...]] = {}
    for n in graph.records():
        if not n.module:
            continue
        p, a = n.module, n.args
        if n.op in ("conv2d", "conv3d"):
            out[p + ".weight"] = (a["out_channels"], n.in_shapes[0][0] // a["groups"], *a["kernel_size"])
            if a["bias"]:
                out[p + ".bias"] = (a["out_channels"],)
        elif n.op == "linear":
            out[p + ".weight"] = (a["out_features"], n.in_shapes[0][-1])
            if a["bias"]:
                out[p + ".bias"] = (a["out_features"],)
        elif n.op == "batchnorm":
            if a["affine"]:
                out[p + ".weight"] = out[p + ".bias"] = (n.shape[0],)
            if a["track_running_stats"]:
                out[p + ".running_mean"] = out[p + ".running_var"] = (n.shape[0],)
                out[p + ".num_batches_tracked"] = ()
        elif n.op == "layernorm":
            if a["affine"]:
                out[p + ".weight"] = out[p + ".bias"] = (a["normalized"],)
        elif n.op == "layer_scale":
            out[p] = tuple(layer_scale_shape(n.in_shapes[0], a["dim"]))
        elif OPS[n.op].stateful:
            return None
    return out
