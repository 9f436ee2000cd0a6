"""Per-layer summary of a graph: module name, op, output shape, params, MACs, and totals."""
from __future__ import annotations

from typing import Any

from ..ir import Graph

__all__ = ["summary_rows", "summary_dict", "format_count"]


def summary_rows(g: Graph) -> list[dict[str, Any]]:
    """One row per node except the input and identities, in execution order."""
    rows = []
    for n in g.nodes():
        if n.op in ("input", "identity"):
            continue
        rows.append({
            "name": n.name,
            "module": n.module,
            "op": n.op,
            "shape": list(n.shape),
            "params": n.params,
            "macs": n.macs,
            "line": f"{n.loc}" if n.loc else None,
        })
    return rows


def summary_dict(g: Graph) -> dict[str, Any]:
    rows = summary_rows(g)
    return {
        "network": g.name,
        "spec": getattr(g, "address", g.name),
        "reference": g.reference,
        "input": list(g.input_shape),
        "outputs": {k: list(v) for k, v in g.output_shapes.items()},
        "parameters": {k: v for k, v in g.params_used.items() if isinstance(v, (int, float, str, bool, list))},
        "layers": rows,
        "totals": {"params": g.total_params, "macs": g.total_macs, "layers": len(rows)},
    }


def format_count(n: int) -> str:
    """1234567 -> '1.23M' (for humans; JSON keeps exact integers)."""
    for unit, div in (("G", 10**9), ("M", 10**6), ("K", 10**3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)
