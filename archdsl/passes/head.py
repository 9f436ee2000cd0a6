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
    if out.op != "linear" or len(out.shape) != 1 or not out.in_shapes:
        return None
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
            "classifier": out.module, "feature_node": nid, "head_len": head_len}


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
