"""Spatial geometry of a graph (receptive field, cumulative stride) and feature taps (torch-free).

Two analyses that read only the IR:

* :func:`receptive_fields` gives every node's static receptive field and cumulative stride ("jump") along
  each spatial axis, composing kernel, stride and dilation along every path (the largest over branches).
  Padding changes where a window sits, not how wide it is, so it does not enter the size.
* :func:`feature_taps` picks the feature maps a detection/segmentation neck wants: the output of each
  stage, i.e. the last node of the trunk before the resolution drops, and the last feature map before
  global pooling or flatten -- or the nodes the caller names -- and returns a derived graph whose
  outputs are those maps, with a timm-style ``feature_info``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from ..errors import ArchError, did_you_mean
from ..ir import Graph, Node
from ..ops import size_only_input

__all__ = ["Geometry", "FeatureInfo", "receptive_fields", "trunk", "stage_taps", "feature_taps"]

_CHW = ("C", "H", "W")
_HWC = ("H", "W", "C")   # channels-last maps (Swin's stages): timm gives them as NHWC
_CTHW = ("C", "T", "H", "W")   # videos and volumes: rf and jump stay spatial (H, W), time is not tracked
_WINDOW_OPS = frozenset({"conv2d", "maxpool", "avgpool", "conv3d", "maxpool3d", "avgpool3d"})
_ADAPTIVE_OPS = frozenset({"adaptive_avgpool", "adaptive_maxpool", "adaptive_avgpool3d", "adaptive_maxpool3d"})
_MODULE_KINDS = frozenset({"block", "group"})   # scope frames that are module containers (not combinators)


@dataclass(frozen=True)
class Geometry:
    """Per-node spatial facts. ``axes`` names the per-sample dims ('C', 'H', 'W', or '?'; None when the
    spatial dims are gone); ``rf`` and ``jump`` are (height, width) in input pixels."""

    axes: tuple[str, ...] | None
    rf: tuple[int, int]
    jump: tuple[int, int]

    @property
    def is_feature_map(self) -> bool:
        """A channels-first ``[C, H, W]`` map (not a channels-last or flattened view)."""
        return self.axes == _CHW


class FeatureInfo(list):  # type: ignore[type-arg]
    """timm's ``FeatureInfo`` API over the tapped levels: a list of ``{"num_chs", "reduction", "module"}``
    dicts (so ``info[i]["num_chs"]`` and comparing with a list of dicts work) with ``channels()``,
    ``reduction()``, ``module_name()``, ``get_dicts()``, ``get(key)`` and ``out_indices`` (the indices of the
    taps among all the network's levels). Each method takes ``idx`` (an int or a list of ints into the
    tapped levels) as timm's does, and returns a list when ``idx`` is None or a list."""

    def __init__(self, info: Sequence[dict[str, Any]] = (), out_indices: Sequence[int] | None = None) -> None:
        super().__init__(dict(d) for d in info)
        self.out_indices: tuple[int, ...] = tuple(out_indices) if out_indices is not None else tuple(range(len(self)))

    @property
    def info(self) -> list[dict[str, Any]]:
        """The level dicts (timm's attribute)."""
        return list(self)

    def get(self, key: str, idx: int | Sequence[int] | None = None) -> Any:
        """``key`` of the level(s) ``idx`` (all tapped levels when None)."""
        if idx is None:
            return [d[key] for d in self]
        if isinstance(idx, int):
            return self[idx][key]
        return [self[i][key] for i in idx]

    def get_dicts(self, keys: Sequence[str] | None = None, idx: int | Sequence[int] | None = None) -> Any:
        """The level dicts (only ``keys`` when given)."""
        def pick(d: dict[str, Any]) -> dict[str, Any]:
            return dict(d) if keys is None else {k: d[k] for k in keys}
        if idx is None:
            return [pick(d) for d in self]
        if isinstance(idx, int):
            return pick(self[idx])
        return [pick(self[i]) for i in idx]

    def channels(self, idx: int | Sequence[int] | None = None) -> Any:
        """Channels of the level(s)."""
        return self.get("num_chs", idx)

    def reduction(self, idx: int | Sequence[int] | None = None) -> Any:
        """Cumulative stride of the level(s)."""
        return self.get("reduction", idx)

    def module_name(self, idx: int | Sequence[int] | None = None) -> Any:
        """Module path of the level(s)."""
        return self.get("module", idx)

    def from_other(self, out_indices: Sequence[int]) -> "FeatureInfo":
        """The levels ``out_indices`` of these (timm's method)."""
        return FeatureInfo([self[i] for i in out_indices], [self.out_indices[i] for i in out_indices])


def _spatial(shape: tuple[int, ...], axes: tuple[str, ...] | None) -> tuple[int, int]:
    """(H, W) sizes of a tensor with these axes (1 for an axis that is gone)."""
    if axes is None:
        return (1, 1)
    size = dict(zip(axes, shape))
    return (size.get("H", 1), size.get("W", 1))


def _grow(g: Geometry, k: tuple[int, int], s: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """Receptive field and jump after a window of effective size ``k`` and stride ``s``."""
    rf = (g.rf[0] + (k[0] - 1) * g.jump[0], g.rf[1] + (k[1] - 1) * g.jump[1])
    return rf, (g.jump[0] * s[0], g.jump[1] * s[1])


def _global(g: Geometry, shape: tuple[int, ...], axes: tuple[str, ...] | None,
            out_axes: tuple[str, ...] | None) -> Geometry:
    """Every spatial position of the input feeds every output (global pooling, flatten, spatial reduce)."""
    h, w = _spatial(shape, g.axes)
    rf, jump = _grow(g, (h, w), (h, w))
    return Geometry(out_axes, rf, jump)


def _node_geometry(n: Node, ins: list[Geometry]) -> Geometry:
    a = n.args
    first = ins[0]
    in_shape = n.in_shapes[0] if n.in_shapes else n.shape
    if n.op in _WINDOW_OPS and first.axes in (_CHW, _CTHW) and len(first.axes) == len(in_shape):
        kh, kw = a["kernel_size"][-2:]     # the 3-D ops' [t, h, w]: the field is spatial
        dh, dw = a.get("dilation", (1, 1))[-2:]
        rf, jump = _grow(first, (dh * (kh - 1) + 1, dw * (kw - 1) + 1), tuple(a["stride"][-2:]))  # type: ignore[arg-type]
        return Geometry(first.axes, rf, jump)
    if n.op in _ADAPTIVE_OPS and first.axes in (_CHW, _CTHW) and len(first.axes) == len(in_shape):
        (ih, iw), (oh, ow) = in_shape[-2:], n.shape[-2:]
        if (oh, ow) == (1, 1):
            return _global(first, in_shape, first.axes, first.axes)
        # PyTorch's adaptive windows are at most ceil(in/out) wide and start every ~in/out pixels
        rf, jump = _grow(first, (math.ceil(ih / oh), math.ceil(iw / ow)), (max(1, ih // oh), max(1, iw // ow)))
        return Geometry(first.axes, rf, jump)
    if n.op == "slice" and first.axes is not None and len(first.axes) == len(in_shape) \
            and first.axes[a["dim"] - 1] in ("H", "W") and a.get("step", 1) > 1:
        # a strided slice of a spatial axis (Swin's patch merging takes every other row and column)
        k = ("H", "W").index(first.axes[a["dim"] - 1])
        step = int(a["step"])
        jump = (first.jump[0] * step, first.jump[1]) if k == 0 else (first.jump[0], first.jump[1] * step)
        return Geometry(first.axes, first.rf, jump)
    if n.op == "permute" and first.axes is not None and len(first.axes) == len(in_shape):
        return Geometry(tuple(first.axes[d - 1] for d in a["dims"][1:]), first.rf, first.jump)
    if n.op == "flatten":
        return _global(first, in_shape, first.axes, None)
    if first.axes is not None and len(first.axes) != len(in_shape):   # a layout this analysis lost track of
        first = Geometry(("?",) * len(in_shape), first.rf, first.jump)
    if n.op in ("mean", "reduce_sum") and first.axes is not None:
        dims = a["dim"] if isinstance(a["dim"], tuple) else (a["dim"],)
        reduced = {first.axes[d - 1] for d in dims}
        if reduced & {"H", "W"}:
            out_axes = first.axes if a["keepdim"] else None
            return _global(first, in_shape, first.axes, out_axes)
        keep = first.axes if a["keepdim"] else tuple(x for i, x in enumerate(first.axes) if i + 1 not in dims)
        return Geometry(keep, first.rf, first.jump)
    if n.op == "reshape" and first.axes is not None:
        h, w = _spatial(in_shape, first.axes)
        if h * w == 1:   # no spatial extent left: a reshape of channels cannot widen the field
            return Geometry(("?",) * len(n.shape), first.rf, first.jump)
        if first.axes[-2:] == ("H", "W") and tuple(n.shape[-2:]) == (h, w):
            return Geometry(("?",) * (len(n.shape) - 2) + ("H", "W"), first.rf, first.jump)
        return _global(first, in_shape, first.axes, None)
    if n.op == "linear" and first.axes is not None and first.axes[-1] in ("H", "W"):
        return _global(first, in_shape, first.axes, None)
    if n.op == "softmax" and first.axes is not None and first.axes[a["dim"] - 1] in ("H", "W"):
        return _global(first, in_shape, first.axes, first.axes)
    if n.op == "stack":   # a new dim in front of the stacked maps
        axes = ins[0].axes
        d = a.get("dim", 1) - 1
        return Geometry(None if axes is None else axes[:d] + ("?",) + axes[d:],
                        (max(g.rf[0] for g in ins), max(g.rf[1] for g in ins)),
                        (max(g.jump[0] for g in ins), max(g.jump[1] for g in ins)))
    if len(ins) > 1:
        # merges: the widest field over the branches; the grid and layout of the full-size inputs (a
        # broadcast [C, 1, 1] gate, as in squeeze-excitation, sees everything but sets no grid)
        # The full-size inputs share one grid; take the smallest jump among them, since a branch that went
        # through a layout this analysis cannot follow (MobileViT's unfold to tokens and back) has an
        # over-counted one.
        full = [g for g, s in zip(ins, n.in_shapes) if tuple(s) == tuple(n.shape)] or ins
        return Geometry(full[0].axes, (max(g.rf[0] for g in ins), max(g.rf[1] for g in ins)),
                        (min(g.jump[0] for g in full), min(g.jump[1] for g in full)))
    return first  # pointwise: activations, norms, dropout, channel ops, linear over channels


def receptive_fields(graph: Graph) -> dict[int, Geometry]:
    """Static receptive field and cumulative stride of every node (keyed by node id)."""
    geo: dict[int, Geometry] = {}
    for n in graph.nodes():
        if n.op == "input" or not n.inputs:
            geo[n.id] = Geometry({3: _CHW, 4: _CTHW}.get(len(n.shape)), (1, 1), (1, 1))
            continue
        geo[n.id] = _node_geometry(n, [geo[i] for i in n.inputs])
    return geo


def _live(graph: Graph) -> set[int]:
    """Nodes some output depends on."""
    live: set[int] = set()
    stack = [nid for _, nid in graph.outputs]
    while stack:
        nid = stack.pop()
        if nid not in live:
            live.add(nid)
            stack.extend(graph.node(nid).inputs)
    return live


#: Ops that raise the resolution; the stage taps stop before them.
_UPSAMPLING_OPS = frozenset({"upsample", "resize_as", "conv_transpose2d", "conv_transpose3d", "pixel_shuffle"})


def _data_inputs(n: Node) -> list[int]:
    """The inputs whose values ``n`` reads (not those it reads only for a size: resize_as's reference)."""
    return [u for k, u in enumerate(n.inputs) if not size_only_input(n.op, k)]


def trunk(graph: Graph) -> list[int]:
    """The nodes every input-to-output path passes through, in execution order (the input included).

    In a topological order, a node is on every path exactly when no edge jumps over it: an edge from
    an earlier to a later node would give a path that avoids it.
    """
    live = _live(graph)
    order = [n.id for n in graph.nodes() if n.id in live]
    pos = {nid: i for i, nid in enumerate(order)}
    cuts: list[int] = []
    reach = -1
    for i, nid in enumerate(order):
        if reach <= i:
            cuts.append(nid)
        for c in graph.consumers(nid):
            if c in pos and nid in _data_inputs(graph.node(c)):
                reach = max(reach, pos[c])
    return cuts


def _is_map(geo: Geometry) -> bool:
    """A feature map: channels first, or channels last as Swin's stages keep them."""
    return geo.axes in (_CHW, _HWC, _CTHW)


def _layout(geo: Geometry) -> str:
    return {_HWC: "NHWC", _CTHW: "NCTHW"}.get(geo.axes or (), "NCHW")


def _channels(shape: tuple[int, ...], geo: Geometry) -> int:
    return shape[-1] if geo.axes == _HWC else shape[0]


def _is_head(n: Node, geo: Geometry, in_geo: Geometry | None) -> bool:
    """Where the feature maps end: global pooling, flatten, spatial reductions, token views."""
    if not _is_map(geo) or n.op in _ADAPTIVE_OPS or n.op in _UPSAMPLING_OPS:
        return True   # (upsampling starts a decoder or a dense-prediction head: the encoder's stages end)
    if n.op in ("maxpool", "avgpool") and n.shape[1:] == (1, 1) and in_geo is not None:
        ih, iw = n.in_shapes[0][1:]
        return tuple(n.args["kernel_size"]) >= (ih, iw)   # one window over the whole map: global pooling
    return False


def _block_ends(graph: Graph) -> dict[int, str]:
    """For a node that is the output (last node) of a block, the outermost such block's module path."""
    last: dict[str, int] = {}
    depth: dict[str, int] = {}
    for n in graph.nodes():
        k = 0
        for f in n.scope:
            if f.kind in _MODULE_KINDS and f.path:
                last[f.path] = n.id
                depth[f.path] = k
                k += 1
    ends: dict[int, str] = {}
    for path in sorted(last, key=lambda p: -depth[p]):   # inner first, outer blocks overwrite
        ends[last[path]] = path
    return ends


def _inside_stage_blocks(graph: Graph, geo: dict[int, Geometry]) -> set[int]:
    """Nodes inside a block that began at their own stride level and goes on after them.

    Such a node runs before the block's own output, e.g. the expansion conv of an inverted-residual
    block whose depthwise conv then halves the resolution: it is not a stage's output, the previous
    block's output is. Blocks entered at a finer stride (a whole 'features' container) do not count.
    """
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for n in graph.nodes():
        for f in n.scope:
            if f.kind in _MODULE_KINDS and f.path:
                first.setdefault(f.path, n.id)
                last[f.path] = n.id

    def entry(path: str) -> int:
        n = graph.node(first[path])
        return max(geo[n.inputs[0]].jump) if n.inputs else 1

    entries = {p: entry(p) for p in first}
    return {n.id for n in graph.records()
            if any(f.kind in _MODULE_KINDS and f.path and last[f.path] != n.id
                   and entries[f.path] == max(geo[n.id].jump) for f in n.scope)}


def stage_taps(graph: Graph, geo: dict[int, Geometry] | None = None) -> list[dict[str, Any]]:
    """The default taps: for each cumulative stride on the trunk, its last node before the stride grows,
    up to the last feature map before the head. Each entry: ``{num_chs, reduction, module, node}``."""
    geo = geo if geo is not None else receptive_fields(graph)
    ends = _block_ends(graph)
    inner = _inside_stage_blocks(graph, geo)
    # (reduction, node id, at a block boundary), one per stride level: the last trunk node of the level
    # that ends a block (or sits outside every block), else the level's last trunk node -- a stage's
    # output, not the expansion conv inside the next block that happens to run before its stride
    levels: list[tuple[int, int, bool]] = []
    for nid in trunk(graph):
        n = graph.node(nid)
        if n.op == "input":
            continue
        if _is_head(n, geo[nid], geo.get(n.inputs[0]) if n.inputs else None):
            break
        if n.op in ("permute", "transpose") and levels and levels[-1][0] == max(geo[nid].jump):
            continue   # a layout change (Swin's NHWC -> NCHW before pooling) is no new tap
        red = max(geo[nid].jump)
        boundary = nid not in inner
        if levels and levels[-1][0] == red:
            if boundary or not levels[-1][2]:
                levels[-1] = (red, nid, boundary)
        else:
            levels.append((red, nid, boundary))
    return [{"num_chs": _channels(graph.node(nid).shape, geo[nid]), "reduction": red,
             "module": ends.get(nid, graph.node(nid).name), "node": nid,
             "layout": _layout(geo[nid])} for red, nid, _ in levels]


def _find(graph: Graph, label: str) -> tuple[int, str]:
    """A tap named by the caller: an output name, a node's module path or label, or a block path (its
    output). Returns (node id, module path)."""
    outs = dict(graph.outputs)
    if label in outs:
        return outs[label], label
    blocks: dict[str, int] = {}
    for n in graph.nodes():
        for f in n.scope:
            if f.kind in _MODULE_KINDS and f.path:
                blocks[f.path] = n.id   # the last node of the block in execution order
    if label in blocks:
        return blocks[label], label
    by_name = {n.name: n.id for n in graph.records()}
    if label in by_name:
        return by_name[label], label
    by_label = [n.id for n in graph.records() if n.label == label]
    if len(by_label) == 1:
        return by_label[0], label
    known = list(outs) + list(blocks) + list(by_name)
    raise ArchError(f"no node or block named '{label}' in {graph.name}", None,
                    hint=did_you_mean(label, known) or "name a spec label, a block path such as 'layer4', "
                                                       "or an output of the network")


def feature_taps(graph: Graph, out_indices: Sequence[int] | None = None,
                 labels: Sequence[str] | None = None, *, levels: Sequence[dict[str, Any]] | None = None,
                 default_indices: Sequence[int] | None = None, as_list: bool = False) -> tuple[Graph, FeatureInfo]:
    """A derived graph that returns feature maps instead of the network's outputs.

    Args:
        graph: a compiled graph (``archdsl.graph(spec)``).
        out_indices: which of the levels to keep (timm's ``out_indices``; negative indices count from the
            end). The levels are ``levels`` when given, else the default taps: the trunk's last node at each
            cumulative stride -- the output of every stage before the resolution drops -- and the last
            feature map before global pooling / flatten (see :func:`stage_taps`). ``None`` keeps
            ``default_indices`` (all levels when not given).
        labels: tap these nodes instead, in this order: output names of the network, block paths
            (``"layer4"``: the block's output), node module paths (``"layer4.1.bn2"``) or unique spec labels.
            Not together with ``out_indices``.
        levels: the reference's levels (``{"module", "num_chs", "reduction"}`` dicts, timm's feature_info of a
            model with the same module paths); a level whose module is not a node or block of ``graph`` is
            the default tap of the same stride and width.
        as_list: the derived graph's forward returns a list in tap order (timm's features_only), else a dict
            by module path.

    A tap on tokens (``[L, C]``, a ViT block's output) is returned as an NCHW map as timm does: the prefix
    tokens (class, distillation) dropped and the patch tokens laid out on the grid of its reduction.

    Returns:
        ``(taps_graph, feature_info)``. ``taps_graph`` (named ``<network>_features``) has one output per
        tap, named by the tap's module path, and only the nodes the taps depend on (the head and everything
        after the last tap are dropped; state-dict keys of what is kept do not change). ``feature_info`` is a
        :class:`FeatureInfo`, in output order, of ``{"num_chs", "reduction", "module"}`` dicts like timm's.

    Raises:
        ArchError: an index out of range, an unknown label, or both selectors given.
    """
    geo = receptive_fields(graph)
    if labels is not None and out_indices is not None:
        raise ArchError("give out_indices or labels, not both", None,
                        hint="out_indices picks among the default stage taps; labels name the nodes")
    picked: list[int] | None = None
    if labels is not None:
        if not labels:
            raise ArchError("labels is empty: name at least one node to tap", None)
        taps = []
        for lab in labels:
            nid, module = _find(graph, lab)
            n = graph.node(nid)
            taps.append({"num_chs": _channels(n.shape, geo[nid]) if n.shape else 0,
                         "reduction": max(geo[nid].jump), "module": module, "node": nid,
                         "layout": _layout(geo[nid])})
    else:
        default = _reference_levels(graph, levels, geo) if levels else stage_taps(graph, geo)
        if not default:
            raise ArchError(f"{graph.name} has no feature map to tap (no [C, H, W] stage before its head)", None,
                            hint="name the nodes with labels=[...]")
        chosen = out_indices if out_indices is not None else default_indices
        if chosen is None:
            taps = default
            picked = list(range(len(default)))
        else:
            taps, picked = [], []
            for i in chosen:
                if isinstance(i, bool) or not isinstance(i, int) or not -len(default) <= i < len(default):
                    raise ArchError(f"out_indices: {i!r} is not an index of the {len(default)} feature levels "
                                    f"of {graph.name}", None,
                                    hint="levels: " + ", ".join(f"{k}: {t['module']} (stride {t['reduction']})"
                                                                for k, t in enumerate(default)))
                taps.append(default[i])
                picked.append(i % len(default))
    names = [str(t["module"]) for t in taps]
    if len(set(names)) != len(names):
        raise ArchError("the same feature map is tapped twice: " + ", ".join(names), None)
    out = _derive(graph, taps)
    out.output_list = as_list
    return out, FeatureInfo([{k: t[k] for k in ("num_chs", "reduction", "module")} for t in taps], picked)


def _reference_levels(graph: Graph, levels: Sequence[dict[str, Any]], geo: dict[int, Geometry]) -> list[dict[str, Any]]:
    """The reference's levels on ``graph``: its module where the graph has it, else the derived tap of the
    same stride and width (a stem activation the spec leaves unnamed)."""
    derived = stage_taps(graph, geo)
    out: list[dict[str, Any]] = []
    for lv in levels:
        try:
            nid, module = _find(graph, str(lv["module"]))
        except ArchError:
            alt = [t for t in derived if t["reduction"] == lv["reduction"] and t["num_chs"] == lv["num_chs"]]
            if not alt:
                return derived        # the reference does not fit this graph: the derived taps
            nid, module = alt[-1]["node"], alt[-1]["module"]
        n = graph.node(nid)
        tokens = len(n.shape) == 2 and len(graph.input_shape) == 3
        out.append({"num_chs": n.shape[-1] if tokens else _channels(n.shape, geo[nid]),
                    "reduction": int(lv["reduction"]), "module": module, "node": nid,
                    "layout": "NLC" if tokens else _layout(geo[nid])})
    return out


def _token_map(graph: Graph, out: Graph, tap: dict[str, Any], next_id: int) -> int | None:
    """Nodes laying the tokens of ``tap`` out as an NCHW map (timm's ViT feature maps); the last node's id,
    or None when the tokens do not hold a patch grid of the tap's reduction."""
    n = graph.node(tap["node"])
    _, h, w = graph.input_shape
    r = tap["reduction"]
    gh, gw = h // r, w // r
    length, ch = n.shape
    prefix = length - gh * gw
    if gh < 1 or gw < 1 or prefix < 0:
        return None
    scope = n.scope[:1]
    base = f"{tap['module']}.to_map"
    steps = [("narrow", {"dim": 1, "start": prefix, "length": gh * gw}, (gh * gw, ch)),
             ("transpose", {"dim0": 1, "dim1": 2}, (ch, gh * gw)),
             ("reshape", {"shape": (ch, gh, gw), "written": (ch, gh, gw)}, (ch, gh, gw))]
    src, shape = n.id, tuple(n.shape)
    for k, (op, args, new) in enumerate(steps):
        node = Node(id=next_id + k, op=op, args=args, inputs=[src], in_shapes=[shape], shape=new,
                    name=f"{base}.{k}", scope=scope, loc=n.loc)
        out.add(node)
        src, shape = node.id, new
    return src


def _upstream(graph: Graph, roots: list[int], name: str, address: str) -> Graph:
    """A derived graph named ``name`` holding the nodes ``roots`` read from (themselves included)."""
    keep: set[int] = set()
    stack = list(roots)
    while stack:
        nid = stack.pop()
        if nid not in keep:
            keep.add(nid)
            stack.extend(graph.node(nid).inputs)
    out = graph.derive(name)
    out.address = address
    for n in graph.records():
        if n.id in keep:
            out.add(n)
    # the reparam groups and fused convs among the kept nodes (nodes added afterwards belong to neither)
    kept_groups = {n.reparam for n in out.records() if n.reparam}
    out.reparam_groups = {p: v for p, v in graph.reparam_groups.items() if p in kept_groups}
    out.fused_nodes = {i for i in graph.fused_nodes if i in keep}
    return out


def _derive(graph: Graph, taps: list[dict[str, Any]]) -> Graph:
    # its own name and address: a build cache keyed by them must not hand back the whole network's class
    out = _upstream(graph, [t["node"] for t in taps], f"{graph.name}_features",
                    f"{graph.address} (features: {', '.join(t['module'] for t in taps)})")
    next_id = max(n.id for n in graph.records()) + 1
    outputs = []
    for t in taps:
        nid = t["node"]
        if t.get("layout") == "NLC":
            mapped = _token_map(graph, out, t, next_id)
            if mapped is not None:
                nid, next_id = mapped, mapped + 1
        outputs.append((t["module"], nid))
    out.outputs = outputs
    return out.verify()
