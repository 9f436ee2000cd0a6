"""Families: a ``scales NETWORK:`` table names sets of the network's parameters (Ultralytics' ``scales:``).

A row's values are constants (numbers, strings, true/false/none, lists of those); two names are not network
parameters: ``input=[C, H, W]`` replaces the network's input line (EfficientNet-B1 is measured at 240) and
``reference=lib.name`` names the model the variant mirrors. ``--scale NAME`` / ``build(spec, scale=NAME)``
builds the network with the row's values; ``--set`` still overrides any of them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import ArchError, Diagnostic, did_you_mean
from . import ast as A

__all__ = ["ScaleSettings", "scale_settings", "scale_names", "check_scales"]

_SPECIAL = ("input", "reference")


@dataclass
class ScaleSettings:
    """What a row sets: network parameters, an input shape and a reference (each optional)."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    input_shape: tuple[int, ...] | None = None
    reference: str | None = None


def scale_names(spec: A.SpecFile, network: str) -> list[str]:
    """The variants of ``network`` in file order (empty when it has no scales table)."""
    t = spec.scales.get(network)
    return [r.name for r in t.rows] if t is not None else []


def _constant(e: Any) -> Any:
    """A row value: a literal, or a list of literals. Anything else is refused (located)."""
    if isinstance(e, A.Num):
        return e.value
    if isinstance(e, A.Str):
        return e.value
    if isinstance(e, A.Name) and e.id in ("true", "false", "none"):
        return {"true": True, "false": False, "none": None}[e.id]
    if isinstance(e, A.UnaryOp) and e.op == "-" and isinstance(e.operand, A.Num):
        return -e.operand.value
    if isinstance(e, A.ListExpr):
        return [_constant(x) for x in e.items]
    raise ArchError(Diagnostic("a scale's value must be a constant (a number, string, true/false/none or a list)",
                               e.span, hint="write the value itself; formulas belong in the network body"))


def _dotted(e: Any) -> str:
    if isinstance(e, A.Name):
        return e.id
    if isinstance(e, A.Attr):
        return _dotted(e.obj) + "." + e.name
    raise ArchError(Diagnostic("reference= takes a dotted name such as torchvision.efficientnet_b1", e.span))


def _row_settings(row: A.ScaleRow, net: A.NetworkDef) -> ScaleSettings:
    known = {p.name for p in net.params}
    out = ScaleSettings(row.name)
    errors: list[Diagnostic] = []
    for kw in row.kwargs:
        try:
            if kw.name == "reference":
                out.reference = _dotted(kw.value)
            elif kw.name == "input":
                v = _constant(kw.value)
                if not (isinstance(v, list) and v and all(isinstance(x, int) and not isinstance(x, bool) and x > 0
                                                          for x in v)):
                    raise ArchError(Diagnostic("input= takes the input's sizes, e.g. [3, 240, 240]", kw.value.span))
                out.input_shape = tuple(v)
            elif kw.name not in known:
                hint = did_you_mean(kw.name, known) or ("its parameters: " + ", ".join(sorted(known)) if known
                                                        else f"network {net.name} takes no parameters")
                raise ArchError(Diagnostic(f"network {net.name} has no parameter '{kw.name}'", kw.span, hint=hint))
            elif kw.name in out.params:
                raise ArchError(Diagnostic(f"scale '{row.name}' sets '{kw.name}' twice", kw.span))
            else:
                out.params[kw.name] = _constant(kw.value)
        except ArchError as e:
            errors.extend(e.diagnostics)
    if errors:
        raise ArchError(errors)
    return out


def scale_settings(spec: A.SpecFile, net: A.NetworkDef, scale: str) -> ScaleSettings:
    """The settings of variant ``scale`` of ``net`` (a located error when the table or the row is wrong)."""
    t = spec.scales.get(net.name)
    if t is None:
        raise ArchError(f"network {net.name} has no scales table, so no scale '{scale}'", None,
                        hint=f"add 'scales {net.name}:' with one row per variant, or drop --scale")
    for row in t.rows:
        if row.name == scale:
            return _row_settings(row, net)
    names = [r.name for r in t.rows]
    raise ArchError(f"network {net.name} has no scale '{scale}'", None,
                    hint=did_you_mean(scale, names) or "its scales: " + ", ".join(names))


def check_scales(spec: A.SpecFile) -> list[Diagnostic]:
    """Every problem of the file's scales tables: a table of an unknown network, unknown parameters, values."""
    out: list[Diagnostic] = []
    for t in spec.scales.values():
        net = spec.networks.get(t.network)
        if net is None:
            out.append(Diagnostic(f"scales of an unknown network '{t.network}'", t.name_span,
                                  hint=did_you_mean(t.network, spec.networks)
                                  or "a scales table follows the network it scales, in the same file"))
            continue
        for row in t.rows:
            try:
                _row_settings(row, net)
            except ArchError as e:
                out.extend(e.diagnostics)
    return out
