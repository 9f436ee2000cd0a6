"""Rendering a backend :class:`~archdsl.backends.plan.Plan` for ``archc summary --backends`` (no torch)."""
from __future__ import annotations

from rich.table import Table

from .plan import Plan

__all__ = ["plan_table", "plan_footer"]


def _ms(v: float) -> str:
    return "inf" if v == float("inf") else (f"{v:.3f}" if v < 10 else f"{v:.1f}")


def plan_table(plan: Plan, title: str = "") -> Table:
    """One row per conv: the chosen backend, its layouts, predicted time and the runner-up."""
    table = Table(title=title or f"conv backends ({plan.method}, {plan.device_key})", show_edge=False,
                  header_style="bold")
    for col, just in (("layer", "left"), ("conv", "left"), ("backend", "left"), ("layout", "left"),
                      ("ms", "right"), ("from", "left"), ("next best", "left")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for c in plan.layers:
        others = [(k, v) for k, v in c.options.items() if not k.startswith(c.backend + "@")]
        nxt = f"{others[0][0]} {_ms(others[0][1])}" if others else "-"
        lay = c.layout_in if not c.convert_ms else f"{c.layout_in} (+{_ms(c.convert_ms)} convert)"
        table.add_row(c.name, c.spec.describe(), c.backend, lay, _ms(c.ms), c.source, nxt)
    return table


def plan_footer(plan: Plan) -> str:
    counts = ", ".join(f"{n} {b}" for b, n in sorted(plan.counts().items(), key=lambda kv: -kv[1]))
    return (f"backends: {counts}; predicted {_ms(plan.total_ms)} ms per batch vs {_ms(plan.baseline_ms)} ms "
            f"with PyTorch defaults ({plan.speedup:.2f}x)")
