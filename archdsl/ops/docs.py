"""The built-in op table as documentation, generated from the registry (docs/ops.md, ``archc ops``)."""
from __future__ import annotations

from typing import Any

from .core import OPS, REQUIRED, ArgSpec
from .tensor import MULTI_OUTPUT_OPS

__all__ = ["op_entries", "ops_markdown"]


def _sig(args: list[ArgSpec]) -> str:
    parts = []
    for a in args:
        if a.default is REQUIRED:
            parts.append(a.name)
        else:
            d = a.default
            shown = "none" if d is None else ("true" if d is True else "false" if d is False else
                                             f'"{d}"' if isinstance(d, str) else str(d))
            parts.append(f"{a.name}={shown}")
    return ", ".join(parts)


def op_entries() -> list[dict[str, Any]]:
    """One entry per op name (aliases listed with their op), sorted by family then name."""
    seen: dict[str, dict[str, Any]] = {}
    for name, d in OPS.items():
        if d.name == "narrow":  # internal: produced by chunk/split
            continue
        e = seen.setdefault(d.name, {"name": d.name, "family": d.family, "signature": _sig(d.args),
                                      "doc": d.doc, "aliases": [], "params": d.stateful,
                                      "combinator": d.arity != 1})
        if name != d.name:
            e["aliases"].append(name)
    for name, args in MULTI_OUTPUT_OPS.items():
        seen[name] = {"name": name, "family": "shape", "signature": _sig(args),
                      "doc": "several tensors: use with named values, e.g. `a, b = x -> %s(...)`" % name,
                      "aliases": [], "params": False, "combinator": False}
    return sorted(seen.values(), key=lambda e: (e["family"], e["name"]))


def ops_markdown() -> str:
    """docs/ops.md: every built-in op with its signature, family and meaning."""
    lines = [
        "# Built-in ops",
        "",
        "Generated from the op registry (`archdsl/ops/`) by `archc ops --markdown`; a test keeps it in step.",
        "Input channels are never written: they come from shape inference. `add`, `mul`, `concat` (and `stack`)",
        "are combinators: write them as `add:` with one branch per line, or `add(a, b)` over named tensors.",
        "",
        "| op | arguments | family | owns weights | what it does |",
        "|---|---|---|---|---|",
    ]
    for e in op_entries():
        name = f"`{e['name']}`" + (" (" + ", ".join(f"`{a}`" for a in e["aliases"]) + ")" if e["aliases"] else "")
        sig = f"`{e['signature']}`" if e["signature"] else "—"
        lines.append(f"| {name} | {sig} | {e['family']} | {'yes' if e['params'] else ''} | {e['doc']} |")
    lines.append("")
    return "\n".join(lines)
