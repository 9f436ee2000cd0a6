"""The classification head of a network, as timm sees it (torch-free): where ``forward_features`` ends and
``forward_head`` begins (:func:`head_features`), and a classifier put on a headless backbone
(:func:`with_classifier`, what ``timm.create_model(backbone, num_classes=N)`` builds)."""
from __future__ import annotations

from typing import Any

from ..errors import ArchError
from ..ir import Graph, Node
from .features import _ADAPTIVE_OPS, _CHW, _CTHW, _HWC, _MODULE_KINDS, _upstream, receptive_fields

__all__ = ["head_features", "with_classifier"]

_POOL_OPS = frozenset({"mean", "avgpool", "maxpool", "avgpool3d", "maxpool3d", *_ADAPTIVE_OPS})
_NORM_OPS = frozenset({"batchnorm", "layernorm", "groupnorm", "rmsnorm"})


def head_features(graph: Graph) -> dict[str, Any] | None:
    """timm's facts about the head of a network that ends in a ``linear`` classifier producing a vector (None
    for any other network): ``num_features`` (the channels of the unpooled features ``forward_features``
    returns), ``feature_shape`` (their per-sample shape), ``head_hidden_size`` (the width entering the
    top-level classifier module: what pre-logits are), ``num_classes``, ``global_pool`` ('avg' where the head
    pools, 'token' where it selects a token), ``output_fmt`` ('NCHW', 'NCTHW', 'NHWC' or 'NLC'),
    ``classifier`` (the linear's module path) and ``flatten`` (the classifier takes a ``[C, 1, 1]`` map, as ConvNeXt's does)."""
    if len(graph.outputs) != 1 or len(graph.inputs) != 1:
        return None
    out = graph.node(graph.outputs[0][1])
    if len(out.shape) != 1 or not out.in_shapes:
        return None
    if out.op != "linear":   # a convolutional classifier, or two heads averaged
        return _conv_head(graph, out) or _two_heads(graph, out)
    top = (out.module or out.name).split(".")[0]
    if top != (out.module or out.name):
        members = _container_chain(graph, top, out)
        if members is not None and graph.node(members[0]).inputs == [graph.inputs[0]] and len(members) > 1:
            return _whole_container(graph, out, top, members)   # LeNet: the whole network is one container
        if members is not None and _only_norms(graph, members[:-1]) \
                and any(graph.node(i).op in _POOL_OPS | _NORM_OPS for i in members[:-1]):
            # a head container that pools or normalizes, then the linear (RepVGG's, FastViT's ClassifierHead,
            # torchvision ConvNeXt's norm + flatten + linear): timm's pre-logits are what enters the linear,
            # and reset_classifier replaces the linear only (a dropout + linear container needs none of this)
            h = _legacy_head(graph, out)
            if h is not None:
                h.update(_inline_facts(top, members, (str(out.module),), (str(out.module),), "linear",
                                       h["feature_node"]))
                h["head_hidden_size"], h["flatten"] = out.in_shapes[0][0], False
            return h
    return _legacy_head(graph, out)


def _legacy_head(graph: Graph, out: Node) -> dict[str, Any] | None:
    """The facts of a network whose output is one linear (the first form :func:`head_features` knew)."""
    # pre-logits: what enters the top-level module that holds the classifier (ResNet's 2048 into ``fc``,
    # MobileNetV3's 960 into its ``classifier`` Sequential)
    top = (out.module or out.name).split(".")[0]
    first = next((n for n in graph.records() if (n.module or n.name) == top
                  or (n.module or n.name).startswith(top + ".")), out)
    into = tuple(first.in_shapes[0]) if first.in_shapes else tuple(out.in_shapes[0])
    flatten = len(into) > 1 and all(d == 1 for d in into[1:])
    # the unpooled features: back from the classifier's input over the parameter-free pooling / flatten /
    # permute / token-select chain (where the generated forward_head begins)
    nid = first.inputs[0] if first.inputs else out.inputs[0]
    pooled = False
    while True:
        n = graph.node(nid)
        if n.op == "input" or n.params or len(n.inputs) != 1 or n.op in ("linear", "conv2d", "conv3d") \
                or any(f.kind in _MODULE_KINDS and f.path for f in n.scope):
            break   # (a block's last op, ResNet's ReLU in layer4, is inside the features)
        pooled = pooled or n.op in _POOL_OPS
        nid = n.inputs[0]
    head_len = None
    if not pooled:
        # a head that pools first and then runs layers of its own (GhostNet's and timm MobileNetV3's
        # ``global_pool -> conv_head -> act -> flatten -> classifier``): timm's features end before the pool
        hit = _pooled_head_start(graph, first.inputs[0] if first.inputs else out.inputs[0])
        tail = _chain_len(graph, first.id, out.id)
        if hit is not None and tail is not None:
            nid, head_len, pooled = hit[0], hit[1] + 1 + tail, True
    feat = graph.node(nid)
    geo = receptive_fields(graph)
    axes = geo[nid].axes
    # a map entering a head container that pools inside (RepVGG's and FastViT's ``head``): its channels
    chw = len(into) == 3 and bool(first.inputs) and geo[first.inputs[0]].axes == _CHW and feat.op != "input" \
        and _pools_inside(graph, first.id, out.id)
    pooled = pooled or chw
    hidden = into[0] if flatten or chw else into[-1]
    fmt = "NHWC" if axes == _HWC else "NLC" if len(feat.shape) == 2 else "NCTHW" if axes == _CTHW else "NCHW"
    channels = feat.shape[0] if fmt in ("NCHW", "NCTHW") else feat.shape[-1]
    return {"num_features": channels, "feature_shape": tuple(feat.shape),
            "head_hidden_size": hidden, "num_classes": out.shape[0],
            "global_pool": "avg" if pooled else "token", "output_fmt": fmt, "flatten": flatten,
            "classifier": out.module, "feature_node": nid, "head_len": head_len, **_inline_facts()}


def _inline_facts(container: str | None = None, members: list[int] | None = None, classifiers: tuple[str, ...] = (),
                  layers: tuple[str, ...] = (), kind: str = "linear", feature: int | None = None) -> dict[str, Any]:
    """The facts of the newer head forms: ``classifiers`` (the modules reset_classifier(0) replaces by identity
    and pre-logits skip; empty: the top-level module of the one linear), ``layers`` (the classifier layers a
    positive reset_classifier replaces), ``layer_kind`` ('linear' or 'conv'), ``inline`` (a container of the
    network's own, one node per child in a chain, whose children forward_head runs one by one: the
    classifier is one of them) with ``inline_nodes`` (its nodes, in order) and ``split_node`` (where
    forward_features ends, found by node rather than by the legacy statement walk)."""
    return {"classifiers": classifiers, "layers": layers, "layer_kind": kind, "inline": container,
            "inline_nodes": tuple(members or ()), "split_node": feature}


def _container_chain(graph: Graph, top: str, last: Node) -> list[int] | None:
    """The nodes of the top-level container ``top`` (in order) where they form a chain of direct children
    (one node each, the first on the container's input) ending in ``last``; else None."""
    members = [n for n in graph.records() if n.op != "identity"
               and (n.module or n.name).startswith(top + ".")]
    if not members or members[-1].id != last.id:
        return None
    seen: set[str] = set()
    for k, n in enumerate(members):
        child = (n.module or n.name)[len(top) + 1:]
        if not child or "." in child or child in seen or len(n.inputs) != 1 or n.op in ("input", "parameter"):
            return None
        seen.add(child)
        if k and _skip_identity(graph, n.inputs[0]) != members[k - 1].id:
            return None
    return [n.id for n in members]


def _skip_identity(graph: Graph, nid: int) -> int:
    n = graph.node(nid)
    while n.op == "identity" and len(n.inputs) == 1:
        n = graph.node(n.inputs[0])
    return n.id


def _only_norms(graph: Graph, nids: list[int]) -> bool:
    """No layer with parameters among ``nids`` but norms."""
    return all(not graph.node(i).params or graph.node(i).op in _NORM_OPS for i in nids)


def _facts(graph: Graph, nid: int, pooled: bool, hidden: int, num_classes: int, classifier: Any,
           pool: str | None = None) -> dict[str, Any]:
    """The common facts, the features ending at ``nid``."""
    feat = graph.node(nid)
    axes = receptive_fields(graph)[nid].axes
    fmt = "NHWC" if axes == _HWC else "NLC" if len(feat.shape) == 2 else "NCTHW" if axes == _CTHW else "NCHW"
    return {"num_features": feat.shape[0] if fmt in ("NCHW", "NCTHW") else feat.shape[-1],
            "feature_shape": tuple(feat.shape), "head_hidden_size": hidden, "num_classes": num_classes,
            "global_pool": pool or ("avg" if pooled else "token"), "output_fmt": fmt, "flatten": False,
            "classifier": classifier, "feature_node": nid, "head_len": None}


def _features_before(graph: Graph, nid: int) -> tuple[int, bool]:
    """Back from ``nid`` (what enters the head's first unit) over the parameter-free steps of the network
    itself (dropout, flatten, global pooling): (where the features end, whether a pooling was passed). A
    pooling with a window (NiN's last max-pool) belongs to the features, as timm's."""
    pooled = False
    while True:
        n = graph.node(nid)
        local = n.op in _POOL_OPS and n.op not in _ADAPTIVE_OPS and n.op != "mean" \
            and any(d != 1 for d in n.shape[1:])
        if n.op == "input" or n.params or len(n.inputs) != 1 or n.op in ("linear", "conv2d", "conv3d") or local \
                or any(f.kind in _MODULE_KINDS and f.path for f in n.scope):
            return nid, pooled
        pooled = pooled or n.op in _POOL_OPS
        nid = n.inputs[0]


def _whole_container(graph: Graph, out: Node, top: str, members: list[int]) -> dict[str, Any] | None:
    """LeNet: the whole network in one container. The features end at its last map (before the flatten);
    the head is the rest (flatten, the hidden linears), the classifier its last linear, as timm's VGG keeps
    its pre-logits layers."""
    k = len(members) - 1
    while k > 0 and len(graph.node(members[k - 1]).shape) == 1:
        k -= 1
    if k == 0 or len(graph.node(members[k - 1]).shape) != 3:
        return None
    h = _facts(graph, members[k - 1], False, out.in_shapes[0][0], out.shape[0], out.module, "flatten")
    h.update(_inline_facts(top, members, (str(out.module),), (str(out.module),), "linear", members[k - 1]))
    return h


def _conv_head(graph: Graph, out: Node) -> dict[str, Any] | None:
    """A convolutional classifier (SqueezeNet's 1x1 conv, NiN's last block): a conv to ``num_classes`` channels,
    then parameter-free steps with a global pooling to the class vector. num_features are the channels
    entering the classifier's unit (timm's rule for conv classifiers); reset_classifier(0) replaces that unit
    by identity, so the pooled features come out."""
    n, pooled = out, False
    while not n.params:
        if len(n.inputs) != 1 or n.op == "input":
            return None
        pooled = pooled or (n.op in _POOL_OPS and all(d == 1 for d in n.shape[1:]))
        n = graph.node(n.inputs[0])
    if n.op != "conv2d" or not pooled or n.shape[0] != out.shape[0] or not n.module:
        return None
    top = n.module.split(".")[0]
    entry = first = n   # (the head's first node; the classifier unit's first node)
    if top == n.module:
        facts = _inline_facts(None, None, (top,), (top,), "conv")
    else:
        members = _container_chain(graph, top, graph.node(max(m.id for m in graph.records()
                                                                if (m.module or m.name).startswith(top + "."))))
        if members is None:
            return None
        entry = graph.node(members[0])
        if _only_norms(graph, [m for m in members if m != n.id]):   # SqueezeNet: the conv alone is the classifier
            facts = _inline_facts(top, members, (n.module,), (n.module,), "conv")
        else:                                                        # NiN: its last block is
            facts = _inline_facts(None, None, (top,), (n.module,), "conv")
            first = entry
    feat, _ = _features_before(graph, entry.inputs[0])
    if len(graph.node(feat).shape) != 3:
        return None
    h = _facts(graph, feat, True, first.in_shapes[0][0], out.shape[0], n.module)
    h.update(facts)
    h["split_node"] = feat
    return h


def _two_heads(graph: Graph, out: Node) -> dict[str, Any] | None:
    """Two linear heads averaged (DeiT's distilled head and dist head on two tokens, RepViT's distilled
    classifier): as timm, pre-logits are the mean of the heads' inputs, reset_classifier(0) replaces the heads
    by identity and a positive one replaces both linears."""
    n = out
    while n.op in ("scale", "scalar", "div", "mul") and len(n.inputs) == 1:
        n = graph.node(n.inputs[0])
    if n.op != "add" or len(n.inputs) != 2:
        return None
    linears, chains = [], []
    for i in n.inputs:
        m = graph.node(i)
        if m.op != "linear" or m.shape != out.shape or not m.module:
            return None
        chain, k = [], m.inputs[0]
        for _ in range(64):   # the single-input path up from the linear
            chain.append(k)
            node = graph.node(k)
            if len(node.inputs) != 1:
                break
            k = node.inputs[0]
        linears.append(m)
        chains.append(chain)
    common = next((c for c in chains[0] if c in chains[1]), None)
    if common is None:
        return None
    tops = tuple(dict.fromkeys(str(m.module).split(".")[0] for m in linears))
    units = [m for m in graph.records() if any((m.module or m.name).startswith(t + ".") or m.module == t for t in tops)]
    entry = min(units, key=lambda m: m.id)
    hidden = entry.in_shapes[0][-1] if entry.in_shapes else graph.node(common).shape[-1]
    feat, pooled = _features_before(graph, common)
    h = _facts(graph, feat, pooled, hidden, out.shape[0], tuple(str(m.module) for m in linears))
    h.update(_inline_facts(None, None, tops, tuple(str(m.module) for m in linears), "linear", feat))
    return h


def _pooled_head_start(graph: Graph, nid: int) -> tuple[int, int] | None:
    """From the classifier's input back over a single-input chain of the network's own layers (no block's)
    to a global pooling (to 1 x 1): (the pooling's input, the number of non-identity steps from the pooling
    to ``nid``, both included), or None where no such pooling ends the chain."""
    steps = 0
    while True:
        n = graph.node(nid)
        if n.op == "input" or len(n.inputs) != 1 or any(f.kind in _MODULE_KINDS and f.path for f in n.scope):
            return None
        steps += n.op != "identity"
        if n.op in ("adaptive_avgpool", "adaptive_maxpool") and len(n.shape) == 3 and n.shape[1:] == (1, 1):
            return n.inputs[0], steps
        nid = n.inputs[0]


def _pools_inside(graph: Graph, first: int, last: int) -> bool:
    """A pooling op on the single-input chain from ``first`` to ``last`` (both included)."""
    nid = last
    while True:
        n = graph.node(nid)
        if n.op in _POOL_OPS:
            return True
        if nid == first or len(n.inputs) != 1:
            return False
        nid = n.inputs[0]


def _chain_len(graph: Graph, first: int, last: int) -> int | None:
    """Non-identity steps after ``first`` up to ``last`` (included) on the single-input chain between them;
    None where ``last`` does not lead back to ``first`` over single-input nodes."""
    k, nid = 0, last
    while nid != first:
        n = graph.node(nid)
        if len(n.inputs) != 1:
            return None
        k += n.op != "identity"
        nid = n.inputs[0]
    return k


def with_classifier(graph: Graph, num_classes: int, output: str | None = None) -> Graph:
    """A classifier on a headless network (a backbone whose outputs are feature maps): the output
    ``output`` (the last when None) -> global average pooling -> flatten -> ``head``, a
    ``linear(num_classes)``; the other outputs are left out (the feature taps still reach them). What timm
    builds for ``create_model(backbone, num_classes=N)``; the backbone's state-dict keys do not change."""
    outs = dict(graph.outputs)
    name = output if output is not None else graph.outputs[-1][0]
    if name not in outs:
        raise ArchError(f"{graph.name} has no output '{name}'", None, hint="outputs: " + ", ".join(outs))
    src = graph.node(outs[name])
    if len(src.shape) != 3 or receptive_fields(graph)[src.id].axes != _CHW:
        raise ArchError(f"{graph.name}: output '{name}' is not a [C, H, W] feature map to pool", None)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ArchError(f"num_classes must be a positive int, got {num_classes!r}", None)
    out = _upstream(graph, [src.id], f"{graph.name}_cls{num_classes}",
                    f"{graph.address} (+ classifier of {num_classes})")
    c = src.shape[0]
    scope = src.scope[:1]
    nid = max(n.id for n in graph.records()) + 1
    steps: list[tuple[str, dict[str, Any], tuple[int, ...], str, str | None, int, int]] = [
             ("adaptive_avgpool", {"output_size": (1, 1)}, (c, 1, 1), "pool", None, 0, 0),
             ("flatten", {}, (c,), "flatten", None, 0, 0),
             ("linear", {"out_features": num_classes, "bias": True}, (num_classes,), "head", "head",
              c * num_classes + num_classes, c * num_classes)]
    prev, shape = src.id, tuple(src.shape)
    for k, (op, args, new, nm, module, params, macs) in enumerate(steps):
        node = Node(id=nid + k, op=op, args=args, inputs=[prev], in_shapes=[shape], shape=new, name=nm,
                    module=module, scope=scope, loc=src.loc, params=params, macs=macs,
                    label=nm if op == "linear" else None)
        out.add(node)
        prev, shape = node.id, new
    out.outputs = [("logits", prev)]
    out.output_list = False
    return out.verify()
