"""``archc sweep``: a grid of variants of one spec, measured, with its Pareto front.

Modules, in the order data flows: :mod:`.grid` (the ``--grid`` axes and the variants they span, torch-free),
:mod:`.metrics` (what the graph tells of a variant: parameters, MACs, peak activation memory; torch-free),
:mod:`.measure` (latency of the eager and deploy forms, warmed up until stable, beside the machine's sgemm
bound; torch), :mod:`.runner` (the variants run locally over a process pool or on Ray, one task per variant,
results cached per variant so an interrupted sweep resumes), :mod:`.report` (the Pareto front, CSV, a static
PNG/SVG plot and a self-contained interactive HTML page).
"""
from __future__ import annotations

from .grid import Variant, parse_grid, variants
from .report import pareto_front, write_report
from .runner import SweepResult, run_sweep

__all__ = ["Variant", "parse_grid", "variants", "run_sweep", "SweepResult", "pareto_front", "write_report"]
