"""What the graph tells of a variant without building it: parameters, MACs and peak activation memory."""
from __future__ import annotations

import math
from typing import Any

from ..ir import Graph

__all__ = ["graph_metrics", "peak_activation_bytes"]


def peak_activation_bytes(g: Graph, *, batch: int = 1, itemsize: int = 4) -> int:
    """The most activation memory alive at once in a forward that frees each tensor after its last reader
    (the generated forward does: ``del`` at last use), in bytes, for ``batch`` samples of ``itemsize`` bytes.

    The input counts (the caller holds it); an output stays alive to the end. Aliasing ops (reshape, view,
    identity) are counted as their own tensors, so the figure is an upper bound of the eager forward's."""
    recs = g.records()
    last: dict[int, int] = {}
    for n in recs:
        for i in n.inputs:
            last[i] = n.id
    outputs = {nid for _, nid in g.outputs}
    size = {n.id: math.prod(n.shape) * batch * itemsize for n in recs}
    live = 0
    peak = 0
    for n in recs:
        live += size[n.id]
        peak = max(peak, live)
        for i in dict.fromkeys(n.inputs):
            if last.get(i) == n.id and i not in outputs and i not in g.inputs:
                live -= size[i]
        if last.get(n.id) is None and n.id not in outputs and n.id not in g.inputs:
            live -= size[n.id]   # read by nobody (a dead end): freed at once
    return peak


def graph_metrics(g: Graph, *, batch: int = 1) -> dict[str, Any]:
    """Parameters, MACs (for ``batch`` samples), layer count, peak activation memory (float32) and shapes."""
    return {"parameters": g.total_params, "macs": g.total_macs * batch, "layers": len(g) - len(g.inputs),
            "activation_bytes": peak_activation_bytes(g, batch=batch),
            "input_shape": list(g.input_shape),
            "output_shapes": {k: list(v) for k, v in g.output_shapes.items()}}
