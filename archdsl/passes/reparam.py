"""Re-parameterization groups: the compile-time proof that a ``reparam add:`` group fuses into one conv.

A group is fusable when every branch is a *linear* map from the group's input that a single
convolution can express, and all branches agree on where that convolution looks:

- a branch is a chain of conv2d / avgpool / batchnorm (eval-mode BN is a per-channel affine map),
  ``scale`` / ``layer_scale`` over channels (per-channel maps without a shift), identity, dropout and
  drop_path (both identity in eval), optionally a bias-free 1x1 conv (groups 1,
  stride 1) in front of the spatial op (the DBB "1x1 -> kxk" branch);
- every spatial branch has the same stride; identity-like branches (identity, BN alone) have stride 1
  and need the input and output shapes to agree;
- the fused kernel is the largest branch's; every smaller kernel must sit inside it at the same
  position, which with zero padding means ``kernel // 2 - padding`` is the same in every branch
  (``padding = kernel // 2`` everywhere is the usual way);
- the fused conv's groups is the smallest conv ``groups``; every other conv's ``groups`` must be a
  multiple of it (identity, BN and avgpool are depthwise and fit any grouping).

A one-branch group whose branch is a sum followed by per-channel maps (BatchNorm included: its shift is
added once) fuses those maps into the summed kernel (:attr:`GroupPlan.tail`). A group over vectors [F]
fuses into one ``linear`` (branches of linear layers and per-feature maps). With ``fused="."`` the fused
layer takes the container's path, and nothing else may live in that container.

This module only reads the IR (no torch): :func:`check_groups` (the compile-time check, run as a pass by
:func:`archdsl.passes.run_checks`) or lowering calls :func:`plan_group` to report a non-fusable group at its
spec line, and the deploy passes (:mod:`archdsl.passes.deploy`) call it again to build the fused conv.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

from ..errors import Diagnostic
from ..ir import DEFAULT_FUSED_NAME, Graph, Loc, Node   # the fused conv's default name (timm's)
from ..ops import OPS, conv_out, has_trait, ops_with
from ..source import Span

__all__ = ["DEFAULT_FUSED_NAME", "BranchPlan", "GroupPlan", "FusionError", "plan_group", "check_groups",
           "EVAL_IDENTITY_OPS", "FUSABLE_LINEAR_OPS", "TRANSPARENT_OPS", "SCALE_OPS"]

# Ops that are the identity in eval mode come from the op registry's "eval-identity" trait (asked at call
# time, so ops registered later count). The linear maps a branch may hold are the ones the branch algebra
# below (and codegen.weights) knows how to write as a conv kernel: "fusable-linear" ops that keep the
# [C, H, W] layout (linear carries the trait too, but acts on the last dim and cannot sit in a conv branch).
FUSABLE_LINEAR_OPS = frozenset({"conv2d", "avgpool", "batchnorm"})
assert FUSABLE_LINEAR_OPS <= ops_with("fusable-linear") - ops_with("layout-sensitive"), "registry traits changed"
EVAL_IDENTITY_OPS = ops_with("eval-identity")   # at import; has_trait(op, "eval-identity") is the live answer
TRANSPARENT_OPS = EVAL_IDENTITY_OPS              # the former name
# Per-channel scales without a shift (a constant `scale`, a learnable `layer_scale` over the channels of
# [C, H, W]) are diagonal linear maps: they fold into the branch's kernel like a BatchNorm's scale, and,
# having no shift, they may even sit before a padded conv (zero padding scales to zero).
SCALE_OPS = frozenset({"scale", "layer_scale"})
_LINEAR_OPS = FUSABLE_LINEAR_OPS | SCALE_OPS
_SHIFTING_OPS = frozenset({"batchnorm"})        # per-channel maps with an additive term
# A group over vectors [F] (a distilled classifier's parallel heads) fuses into one linear: its branches are
# chains of linear layers and per-feature affine maps (BatchNorm1d, scale, layer_scale).
_VECTOR_OPS = frozenset({"linear"}) | _SHIFTING_OPS | SCALE_OPS


class FusionError(Exception):
    """Why a group cannot be fused; ``nid`` is the node to point at (if any)."""

    def __init__(self, message: str, hint: str | None = None, nid: int | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.nid = nid


@dataclass(frozen=True)
class BranchPlan:
    """One branch as a conv: its steps (node ids, input side first) and its window geometry."""

    steps: tuple[int, ...]           # conv2d / avgpool / batchnorm nodes, in order
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    groups: int | None               # None: depthwise-like (identity, BN, avgpool): fits any grouping
    offset: tuple[int, int] = (0, 0)  # where this branch's kernel sits inside the fused kernel
    sign: int = 1                    # -1: the term is subtracted (the second operand of a `sub` in the group)


@dataclass(frozen=True)
class GroupPlan:
    """How a reparam group becomes one ``conv2d``: its geometry and the nodes it replaces."""

    path: str
    input_nid: int
    output_nid: int
    nodes: frozenset[int]            # every node of the group (branches, merge, transparent ops)
    branches: tuple[BranchPlan, ...]
    in_channels: int
    out_channels: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    groups: int
    fused_path: str                  # module path of the fused conv in the deploy form
    out_shape: tuple[int, ...] = field(default_factory=tuple)
    op: str = "conv2d"               # the fused layer: "linear" for a group over vectors [F]
    tail: tuple[int, ...] = ()       # per-channel maps after the group's sum (BatchNorm, scale), input side first
    fused_container: bool = False    # fused=".": the fused layer is the group's container itself


def _where(n: Node) -> str:
    return f"{n.name or n.op} ({n.op})"


# Merges a group may hold inside its branches: sums and differences are linear, so a branch that is a
# sum/difference of sub-branches is the sum of their kernels, each with its sign (FastViT's RepMixer:
# x + layer_scale * (mixer(x) - norm(x))).
_SUM_OPS = frozenset({"add", "sub"})
# ops that may follow such an inner sum: per-channel maps without a shift (applied to every term alike)
_AFTER_SUM_OPS = SCALE_OPS


@dataclass
class _Term:
    """One term of a group: the chain from the group input (input side first), then the ops after the inner
    sums it goes through, its sign, and the number of the group's branch it belongs to (for messages)."""

    chain: list[Node]
    sign: int
    idx: int


def _inner_sum(g: Graph, path: str, n: Node) -> bool:
    """Is ``n`` a sum/difference inside the group (expanded into its terms, not a step of a chain)?"""
    return n.op in _SUM_OPS and n.reparam == path and len(n.inputs) >= 2


def _expand(g: Graph, path: str, start: int, nid: int, parent: int | None, idx: int, sign: int,
            after: list[Node], top: int | None, terms: list[_Term], sums: set[int]) -> None:
    """The terms of the value ``nid`` of the group: chains from ``start``, split at inner sums.

    ``parent`` is the node that reads ``nid`` inside the group (None for the group's output); ``after`` the
    per-channel scales that follow an inner sum on the way to the output; ``top`` the group's own merge,
    whose operands number the branches.
    """
    chain = _branch_chain(g, path, start, nid, parent, idx)
    head = chain[0] if chain else None
    if head is None or not _inner_sum(g, path, head):
        terms.append(_Term(chain + after, sign, idx))
        return
    s, rest = head, chain[1:]
    for n in rest:
        if n.op not in _AFTER_SUM_OPS and not has_trait(n.op, "eval-identity"):
            what = "adds a shift" if n.op in _SHIFTING_OPS else "is not a per-channel scale"
            raise FusionError(f"branch {idx} applies {n.op} at {n.name or n.op} after the {s.op} at "
                              f"{s.name}, which {what}; only scale and layer_scale (over channels) may follow a "
                              f"sum inside a reparam group",
                              hint=f"move the {n.op} into each operand of the {s.op}, or out of the group", nid=n.id)
    for j, i in enumerate(s.inputs):
        shape = g.node(i).shape
        if shape != s.shape:
            raise FusionError(f"branch {idx if s.id != top else j + 1} has shape {list(shape)} but the {s.op} at "
                              f"{s.name} is {list(s.shape)}; a broadcast {s.op} cannot be fused", nid=i)
    sums.add(s.id)
    for j, i in enumerate(s.inputs):
        _expand(g, path, start, i, s.id, j + 1 if s.id == top else idx,
                -sign if (s.op == "sub" and j == 1) else sign, rest + after, top, terms, sums)


def _check_uses(g: Graph, path: str, n: Node, is_out: bool, merge: int | None, idx: int) -> None:
    """A value inside a branch feeds only the next step of its chain; a branch's output only the sum (``merge``)
    it is a term of (the group's output, ``merge`` None, is read outside by design)."""
    users = g.consumers(n.id)
    if not is_out:
        if len(users) != 1:
            raise FusionError(f"the value of {_where(n)} in branch {idx} is also used outside its branch",
                              hint="a fused group keeps only its sum; compute other uses outside the group", nid=n.id)
        return
    others = [u for u in users if merge is not None and u != merge]
    if others:
        where = "the group" if any(g.node(u).reparam != path for u in others) else "its branch"
        raise FusionError(f"the output of branch {idx} ({_where(n)}) is also used outside {where}",
                          hint="a fused group keeps only its sum", nid=n.id)


def _branch_chain(g: Graph, path: str, start: int, out_nid: int, merge: int | None, idx: int) -> list[Node]:
    """Walk from a branch's output back to the group input (or to an inner sum, which then comes first);
    return the chain input-side first."""
    chain: list[Node] = []
    nid = out_nid
    vector = len(g.node(start).shape) == 1   # a group over vectors: linear layers fuse too
    while nid != start:
        n = g.node(nid)
        if _inner_sum(g, path, n):
            _check_uses(g, path, n, nid == out_nid, merge, idx)
            chain.append(n)
            break
        if n.op == "input" or n.reparam != path:
            inner = n.reparam if n.reparam and n.reparam != path and n.reparam.startswith(path) else None
            if inner:
                raise FusionError(f"branch {idx} holds another reparam group ('{inner}'); groups do not nest",
                                  hint="fuse the inner group into a plain conv in the spec, or drop one 'reparam'",
                                  nid=nid)
            raise FusionError(f"branch {idx} does not start from the group's input (it reads {_where(n)})",
                              hint="every branch of a reparam group must be computed from the group's input only",
                              nid=nid)
        if len(n.inputs) != 1:
            # a product of two branch values (mul, matmul, attention) is not linear in the input at all
            why = "which is not linear" if n.op in _NONLINEAR_OPS | {"matmul", "div"} else "which one conv cannot do"
            raise FusionError(f"branch {idx} combines several tensors at {_where(n)}, {why}",
                              hint="a reparam branch is a chain of conv2d/avgpool, batchnorm, scales and identity, "
                                   "or a sum/difference (add:, a - b) of such chains", nid=nid)
        if n.op not in (_VECTOR_OPS if vector else _LINEAR_OPS) and not has_trait(n.op, "eval-identity"):
            raise FusionError(f"branch {idx} applies {n.op} at {n.name or n.op}, {_why_not(n)}",
                              hint=("only linear, batchnorm, scale, layer_scale" if vector else
                                    "only conv2d, avgpool, batchnorm, scale, layer_scale (over channels)") +
                                   " and identity (dropout, drop_path) fuse; put activations and other layers after "
                                   "the group", nid=nid)
        if n.op == "layer_scale" and not (len(n.in_shapes[0]) in (1, 3) and n.args["dim"] == 1):
            raise FusionError(f"layer_scale {n.name} in branch {idx} scales dim {n.args['dim']} of "
                              f"{list(n.in_shapes[0])}, not the channels of a [C, H, W] map; a conv kernel "
                              "can only scale its output channels", hint="scale the channels (dim=1)", nid=nid)
        _check_uses(g, path, n, nid == out_nid, merge, idx)
        chain.append(n)
        nid = n.inputs[0]
    chain.reverse()
    return chain


# ops that are not linear maps at all, whatever their arguments (everything else refused is linear but
# not expressible as one conv kernel: it mixes positions or axes a conv cannot, or has no fixed weights)
_NONLINEAR_FAMILIES = frozenset({"act"})
_NONLINEAR_OPS = frozenset({"layernorm", "groupnorm", "instancenorm", "softmax", "maxpool",
                            "adaptive_maxpool", "mul", "scaled_dot_product_attention"})


def _why_not(n: Node) -> str:
    """The real reason an op cannot be part of a fused branch."""
    op = OPS.get(n.op)
    if n.op in _NONLINEAR_OPS or (op is not None and op.family in _NONLINEAR_FAMILIES and n.op not in SCALE_OPS):
        return "which is not linear"
    if n.op == "linear":
        return "a linear layer on the last axis (width) of the map, which a conv kernel cannot express"
    if n.op == "batchnorm":
        return "which is not a fixed linear map"
    return "which is not one of the linear maps a conv kernel can express"


def _branch_plan(chain: list[Node], idx: int) -> BranchPlan:
    steps = [n for n in chain if n.op in _LINEAR_OPS]
    spatial = [n for n in steps if n.op in ("conv2d", "avgpool")]
    for n in steps:
        a = n.args
        if n.op == "batchnorm" and not a["track_running_stats"]:
            raise FusionError(f"batchnorm {n.name} in branch {idx} has track_running_stats=false, so it uses "
                              "batch statistics in eval mode and is not a fixed linear map",
                              hint="drop track_running_stats=false", nid=n.id)
        if n.op == "conv2d":
            if tuple(a["dilation"]) != (1, 1):
                raise FusionError(f"conv {n.name} in branch {idx} is dilated ({list(a['dilation'])}); "
                                  "dilated branches cannot be fused", hint="use dilation=1 in reparam groups", nid=n.id)
            if a["padding_mode"] != "zeros":
                raise FusionError(f"conv {n.name} in branch {idx} pads with '{a['padding_mode']}'; only zero "
                                  "padding fuses", hint="use the default padding_mode", nid=n.id)
        if n.op == "avgpool":
            if a["ceil_mode"] or not a["count_include_pad"]:
                raise FusionError(f"avgpool {n.name} in branch {idx} uses ceil_mode or count_include_pad=false, "
                                  "which a conv cannot express", hint="use avgpool(k, stride, k // 2)", nid=n.id)
    if not spatial:
        if chain and chain[0].in_shapes[0] != chain[-1].shape:
            raise FusionError(f"identity-like branch {idx} changes the shape {list(chain[0].in_shapes[0])} -> "
                              f"{list(chain[-1].shape)}", nid=chain[-1].id)
        return BranchPlan(tuple(n.id for n in steps), (1, 1), (1, 1), (0, 0), None)
    if len(spatial) > 2:
        raise FusionError(f"branch {idx} chains {len(spatial)} convolutions/poolings; at most a 1x1 conv followed "
                          "by one kxk op fuses", hint="split the branch, or drop 'reparam'", nid=spatial[2].id)
    first_spatial = steps.index(spatial[0])
    last = spatial[-1]
    la = last.args
    # a bias or BN in front of a padded window is padded with zeros, not with the shifted value: not exact
    if len(spatial) == 2:
        pre = spatial[0]
        pa = pre.args
        if pre.op != "conv2d" or tuple(pa["kernel_size"]) != (1, 1) or tuple(pa["stride"]) != (1, 1) \
                or tuple(pa["padding"]) != (0, 0) or pa["groups"] != 1:
            raise FusionError(f"branch {idx} chains {pre.op} {pre.name} before {last.op} {last.name}; only a 1x1 "
                              "conv with stride 1, no padding and groups=1 may come first",
                              hint="write the branch as [conv2d(c, 1, bias=false), conv2d(c, k, ...)]", nid=pre.id)
        if last.op == "conv2d" and la["groups"] != 1:
            raise FusionError(f"branch {idx}: the kxk conv after a 1x1 conv must have groups=1", nid=last.id)
        between = steps[steps.index(pre) + 1: steps.index(last)]
        biased = any(tuple(b.op for b in between if b.op in _SHIFTING_OPS)) or pa["bias"]
        if biased and tuple(la["padding"]) != (0, 0):
            raise FusionError(f"branch {idx} adds a bias (bias=true or batchnorm) between the 1x1 and the padded "
                              f"{last.op} {last.name}; zero padding makes that inexact at the borders",
                              hint="use bias=false and no batchnorm on the 1x1 conv", nid=last.id)
    if any(n.op in _SHIFTING_OPS for n in steps[:first_spatial]) and tuple(spatial[0].args["padding"]) != (0, 0):
        raise FusionError(f"branch {idx} applies batchnorm before the padded {spatial[0].op} {spatial[0].name}; "
                          "zero padding makes that inexact at the borders",
                          hint="put the batchnorm after the conv", nid=steps[0].id)
    kernel = tuple(la["kernel_size"])
    stride = tuple(la["stride"])
    padding = tuple(la["padding"])
    if len(spatial) == 2:
        groups: int | None = 1
    elif last.op == "conv2d":
        groups = la["groups"]
    else:
        groups = None
    return BranchPlan(tuple(n.id for n in steps), kernel, stride, padding, groups)  # type: ignore[arg-type]


def _vector_plan(chain: list[Node], idx: int) -> BranchPlan:
    """A branch of a group over vectors [F]: linear layers and per-feature affine maps, any number of each."""
    steps = [n for n in chain if n.op in _VECTOR_OPS]
    for n in steps:
        if n.op == "batchnorm" and not n.args["track_running_stats"]:
            raise FusionError(f"batchnorm {n.name} in branch {idx} has track_running_stats=false, so it uses "
                              "batch statistics in eval mode and is not a fixed linear map",
                              hint="drop track_running_stats=false", nid=n.id)
    dense = any(n.op == "linear" for n in steps)
    if not dense and chain and chain[0].in_shapes[0] != chain[-1].shape:
        raise FusionError(f"identity-like branch {idx} changes the shape {list(chain[0].in_shapes[0])} -> "
                          f"{list(chain[-1].shape)}", nid=chain[-1].id)
    return BranchPlan(tuple(n.id for n in steps), (1, 1), (1, 1), (0, 0), 1 if dense else None)


def _tail(g: Graph, path: str, start: int, out: int) -> tuple[tuple[int, ...], int]:
    """A one-branch group whose branch is a sum followed by per-channel maps (RepViT's ``bn(conv(x) + conv1(x)
    + x)``, its heads' ``(a + b) * 0.5``): those maps (input side first) and the sum; ``((), out)`` otherwise.

    A BatchNorm's shift is added once after the sum, so unlike the scales inside a branch it may sit here.
    """
    tail: list[Node] = []
    nid = out
    while nid != start:
        n = g.node(nid)
        if _inner_sum(g, path, n):
            return (tuple(t.id for t in reversed(tail)), nid) if tail else ((), out)
        if (n.reparam != path or len(n.inputs) != 1 or (tail and g.consumers(nid) != [tail[-1].id])
                or (n.op not in _SHIFTING_OPS | SCALE_OPS and not has_trait(n.op, "eval-identity"))):
            break
        if n.op == "batchnorm" and not n.args["track_running_stats"]:
            raise FusionError(f"batchnorm {n.name} after the sum has track_running_stats=false, so it uses batch "
                              "statistics in eval mode and is not a fixed linear map",
                              hint="drop track_running_stats=false", nid=n.id)
        if n.op == "layer_scale" and not (len(n.in_shapes[0]) in (1, 3) and n.args["dim"] == 1):
            raise FusionError(f"layer_scale {n.name} after the sum scales dim {n.args['dim']} of "
                              f"{list(n.in_shapes[0])}, not the channels; the fused layer can only scale its "
                              "output channels", hint="scale the channels (dim=1)", nid=n.id)
        tail.append(n)
        nid = n.inputs[0]
    return (), out


def _check_container(g: Graph, fp: str, nodes: set[int]) -> None:
    """``fused="."``: the fused layer takes the container's path, so nothing outside the group may live there."""
    for n in g.records():
        if n.id in nodes or n.op == "input":
            continue
        m = n.module or ""
        if m == fp or m.startswith(fp + ".") or any(f.path == fp for f in n.scope):
            raise FusionError(f"fused=\".\" makes the fused layer the container '{fp}' itself, but {_where(n)} is "
                              "in that container and not in the group",
                              hint='move that layer out of the container, or name the fused layer (fused="name")',
                              nid=n.id)


def plan_group(g: Graph, path: str) -> GroupPlan:
    """Prove the group at ``path`` fuses into one conv and return how; raise :class:`FusionError` if not."""
    info = g.reparam_groups[path]
    if info.kind != "add":
        raise FusionError(f"only 'reparam add:' groups fuse, not '{info.kind}'",
                          hint="branches of a reparam group are summed; write 'reparam add:'")
    if info.input is None or info.output is None:
        raise FusionError("the group did not expand (an error inside it was reported first)")
    start, out = info.input, info.output
    out_node = g.node(out)
    merge = out if (out_node.op == "add" and out_node.reparam == path and not info.single) else None
    in_shape = g.node(start).shape
    if len(in_shape) not in (1, 3):
        raise FusionError(f"a reparam group works on feature maps [C, H, W] or vectors [F], its input is "
                          f"{list(in_shape)}")
    vector = len(in_shape) == 1
    # per-channel maps after the sum of a one-branch group's sum (applied once to the fused layer)
    tail, top = _tail(g, path, start, out) if info.single else ((), out)
    # the group's value as a signed sum of chains: its own branches, and inside them any add/sub of
    # sub-branches (followed by per-channel scales), expanded term by term
    terms: list[_Term] = []
    sums: set[int] = set()
    _expand(g, path, start, top, tail[0] if tail else None, 1, 1, [], merge, terms, sums)
    out_shape = out_node.shape
    chains = [t.chain for t in terms]
    idxs = [t.idx for t in terms]
    plans = [replace((_vector_plan if vector else _branch_plan)(t.chain, t.idx), sign=t.sign) for t in terms]
    for i, (p, ch) in zip(idxs, zip(plans, chains)):
        if p.groups is None and p.kernel == (1, 1) and not any(g.node(s).op == "avgpool" for s in p.steps):
            if in_shape != out_shape:
                raise FusionError(f"identity branch {i} needs the input and output shapes to agree, got "
                                  f"{list(in_shape)} -> {list(out_shape)}",
                                  hint="use the identity branch only where channels and stride stay the same",
                                  nid=ch[-1].id if ch else out)
    strides = {p.stride for p in plans}
    if len(strides) > 1:
        desc = ", ".join(f"branch {i}: {list(p.stride)}" for i, p in zip(idxs, plans))
        raise FusionError(f"branches use different strides ({desc})", hint="all branches need the same stride")
    big = max(range(len(plans)), key=lambda i: plans[i].kernel[0] * plans[i].kernel[1])
    K, P = plans[big].kernel, plans[big].padding
    fixed: list[BranchPlan] = []
    for i, p in zip(idxs, plans):
        off = (P[0] - p.padding[0], P[1] - p.padding[1])
        if any(o < 0 or o + k > KK for o, k, KK in zip(off, p.kernel, K)):
            raise FusionError(
                f"branch {i} (kernel {p.kernel[0]}x{p.kernel[1]}, padding {p.padding[0]}x{p.padding[1]}) is not "
                f"centred inside the {K[0]}x{K[1]} kernel of branch {idxs[big]} (padding {P[0]}x{P[1]})",
                hint="give every branch padding = kernel_size // 2 (odd kernels)",
                nid=p.steps[-1] if p.steps else None)
        fixed.append(replace(p, offset=off))
    conv_groups = sorted({p.groups for p in fixed if p.groups is not None})
    G = conv_groups[0] if conv_groups else in_shape[0]
    for gr in conv_groups[1:]:
        if gr % G:
            raise FusionError(f"branches with groups={G} and groups={gr} cannot share one conv: one groups count "
                              "must divide the other", hint="use the same groups in every conv branch")
    stride = next(iter(strides))
    oh, ow = (1, 1) if vector else (conv_out(in_shape[1], K[0], stride[0], P[0], 1),
                                     conv_out(in_shape[2], K[1], stride[1], P[1], 1))
    if not vector and (oh, ow) != tuple(out_shape[1:]):
        raise FusionError(f"the fused {K[0]}x{K[1]} conv would produce {oh}x{ow}, the branches produce "
                          f"{out_shape[1]}x{out_shape[2]}", hint="give every branch padding = kernel_size // 2")
    nodes = set(sums) | set(tail)
    for ch in chains:
        nodes.update(n.id for n in ch)
    fused_path = info.fused_path or DEFAULT_FUSED_NAME
    if info.fused_container:
        _check_container(g, fused_path, nodes)
    return GroupPlan(path=path, input_nid=start, output_nid=out, nodes=frozenset(nodes), branches=tuple(fixed),
                     in_channels=in_shape[0], out_channels=out_shape[0], kernel=K, stride=stride, padding=P,
                     groups=1 if vector else G, fused_path=fused_path, out_shape=tuple(out_shape),
                     op="linear" if vector else "conv2d", tail=tail, fused_container=info.fused_container)


def check_groups(g: Graph, span_of: Callable[[Loc | None], Span | None]) -> list[Diagnostic]:
    """The fusability proof of every expanded ``reparam`` group as diagnostics (errors at the group's line).

    ``span_of`` turns a node or group location into a :class:`Span` (with its source line). Groups that did
    not expand (``input``/``output`` unset: an error inside them was already reported) are skipped.
    """
    out: list[Diagnostic] = []
    for path, info in g.reparam_groups.items():
        if info.input is None or info.output is None:
            continue
        try:
            plan_group(g, path)
        except FusionError as e:
            notes: list[tuple[str, Span | None]] = []
            if e.nid is not None:
                n = g.node(e.nid)
                notes.append((f"{n.name or n.op} ({n.op}) is here", span_of(n.loc)))
            layer = "linear" if len(g.node(info.input).shape) == 1 else "conv"   # a group over vectors [F]
            # the block instance the group is in: one group line of a block used 32 times is one error
            inst = next((f.path for f in reversed(g.node(info.output).scope) if f.kind == "block"), None)
            out.append(Diagnostic(f"reparam group cannot be fused into one {layer}: {e.message}", span_of(info.loc),
                                  hint=e.hint or "every branch must be linear (conv2d, batchnorm, avgpool, identity)",
                                  notes=notes, instances=(inst,) if inst else ()))
    return out
