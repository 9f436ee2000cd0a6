"""Printing the imported blocks and network as ``.arch`` text.

All of the importer's text comes from this module (to be replaced by the language's printer,
``archdsl.lang.printer``, when it lands: the plan below — chains as lines or ``->`` pipelines, branches
from one tensor as ``add:``/``mul:``/``concat:`` combinators, everything else as named values — would then
build AST nodes instead of lines). Literal values are printed from Python values through :func:`lit`, so
nothing from the model reaches the spec except numbers, booleans, quoted strings and validated names.
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from ..ops import OPS, MULTI_OUTPUT_OPS
from ..ops.core import REQUIRED, ArgSpec
from .blocks import BlockDef, Blocks, Expr, Layer, is_act
from .convert import Body, Ref, SNode

__all__ = ["lit", "label_text", "print_spec"]

_MERGES = {"add", "mul", "concat"}
_WIDTH = 110


def lit(v: Any) -> str:
    """A Python value as a spec literal."""
    if isinstance(v, Expr):
        return v.text()
    if isinstance(v, Layer):
        return str(v)
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"a non-finite number {v} cannot be written in a spec")
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(lit(x) for x in v) + "]"
    raise ValueError(f"a value of type {type(v).__name__} cannot be written in a spec")


def label_text(label: str) -> str:
    """A label as written before ``:`` (quoted when it holds dots or is a number)."""
    if label.isidentifier():
        return label
    return json.dumps(label)


@dataclass
class _Ctx:
    """What printing one body needs: the blocks, the template's slot expressions, plugin op names."""

    blocks: Blocks
    slot_expr: dict[int, Expr]
    plugin_ops: dict[str, dict[str, Any]]     # plugin op -> its defaults
    slot: int = 0

    def value(self, v: Any) -> Any:
        e = self.slot_expr.get(self.slot)
        self.slot += 1
        return e if e is not None else v


def _specs(op: str) -> list[ArgSpec]:
    return list(MULTI_OUTPUT_OPS[op]) if op in MULTI_OUTPUT_OPS else list(OPS[op].args)


def _op_text(node: SNode, ctx: _Ctx) -> str:
    if is_act(node):
        return lit(ctx.value(Layer(node.op)))
    values = {}
    for k in sorted(node.args):     # slots are numbered in sorted-key order (blocks.slots)
        values[k] = ctx.value(node.args[k])
    parts: list[str] = []
    for a in _specs(node.op):
        if a.name not in values:
            continue
        v = values[a.name]
        if a.default is REQUIRED:
            parts.append(lit(v))
        elif isinstance(v, Expr) or not _equal(v, a.default):
            parts.append(f"{a.name}={lit(v)}")
    return node.op + (f"({', '.join(parts)})" if parts else "")


def _equal(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b if not isinstance(a, (int, float)) or isinstance(a, bool) \
        else (not isinstance(b, bool) and isinstance(b, (int, float)) and a == b)


def _use_text(node: SNode, ctx: _Ctx) -> str:
    assert node.child is not None
    d = ctx.blocks.of[id(node.child)]
    call = ctx.blocks.call[id(node.child)]
    parts: list[str] = []
    for p in d.params:
        v = call.get(p.name, p.default)
        v = ctx.value(v)
        if p.required:
            parts.append(lit(v))
        elif isinstance(v, Expr) or not _equal(v, p.default):
            parts.append(f"{p.name}={lit(v)}")
    return d.name + (f"({', '.join(parts)})" if parts else "")


def _item(node: SNode, ctx: _Ctx, *, inline: bool) -> str:
    """One layer as written in a pipeline or a line (without its label)."""
    if node.kind == "use":
        return _use_text(node, ctx)
    if node.kind == "plugin":
        defaults = ctx.plugin_ops.get(node.op, {})
        parts = []
        for k in sorted(node.args):
            v = ctx.value(node.args[k])
            d = defaults.get(k)
            if isinstance(v, Expr) or not _equal(v, list(d) if isinstance(d, tuple) else d):
                parts.append(f"{k}={lit(v)}")
        return node.op + (f"({', '.join(parts)})" if parts else "")
    if node.kind == "group":
        assert node.child is not None
        text = _list_text(node.child, ctx)
        if text is None:
            raise ValueError(f"group {node.label} holds groups: it cannot be written inside a pipeline")
        return text
    return _op_text(node, ctx)


def _list_text(body: Body, ctx: _Ctx) -> str | None:
    """A sequential group as a list: items numbered by position, others named; runs of equal items ``* n``.
    None when an item is itself a group (a list in a list would be spliced, ``named`` takes no list)."""
    if any(n.kind == "group" for n in body.nodes) or not _is_chain(body):
        return None
    items: list[str] = []
    for i, node in enumerate(body.nodes):
        text = _item(node, ctx, inline=True)
        if node.label is not None and node.label != str(i):
            text = f"named({json.dumps(node.label)}, {text})"
        items.append(text)
    runs: list[list[Any]] = []
    for t in items:
        if runs and runs[-1][0] == t and not t.startswith("named("):
            runs[-1][1] += 1
        else:
            runs.append([t, 1])
    parts = [t if n == 1 else f"{t} * {n}" for t, n in runs]
    return "[" + ", ".join(parts) + "]"


def _is_chain(body: Body) -> bool:
    return all(n.inputs == [Ref(i - 1)] and n.n_out == 1 and n.kind != "param" for i, n in enumerate(body.nodes)) \
        and body.out == Ref(len(body.nodes) - 1)


def _path_label(label: str) -> bool:
    return all(p.isidentifier() or p.isdigit() for p in label.split("."))


def _labelled(node: SNode, text: str) -> str:
    if node.label is None:
        return text
    if not _path_label(node.label):
        if "." in node.label:
            raise ValueError(f"module path '{node.label}' cannot be a label (its parts must be names or numbers)")
        return f"named({json.dumps(node.label)}, {text})"     # RegNet's block1-0
    return f"{label_text(node.label)}: {text}"


class _Printer:
    """Plans and prints one body."""

    def __init__(self, body: Body, ctx: _Ctx, start: int = 0, positional: bool = False,
                 conds: dict[int, str] | None = None) -> None:
        self.body, self.ctx = body, ctx
        self.conds = conds or {}          # node -> the condition it is written with (blocks' variants)
        self.positional = positional      # a group's body: labels equal to the position are left out
        self.nodes = body.nodes
        # the first slot of each node (blocks.slots numbers them in node order; printing may not follow it)
        self.base: list[int] = []
        s = start
        for n in self.nodes:
            self.base.append(s)
            s += _slot_count(n, ctx.blocks)
        self.users: dict[Ref, list[int]] = defaultdict(list)
        for j, n in enumerate(self.nodes):
            for r in n.inputs:
                self.users[r].append(j)
        self.names: dict[Ref, str] = {Ref(-1): "x"}
        self.no_comb: set[int] = set()

    def link(self, i: int) -> bool:
        j = i + 1
        if j >= len(self.nodes):
            return False
        n, m = self.nodes[i], self.nodes[j]
        return (n.n_out == 1 and n.kind != "param" and m.kind != "param" and len(m.inputs) == 1
                and (m.kind != "group" or (m.child is not None and _list_text(m.child, _Ctx(self.ctx.blocks, {}, self.ctx.plugin_ops)) is not None))
                and m.n_out == 1 and m.inputs[0] == Ref(i) and self.users[Ref(i)] == [j] and Ref(i) != self.body.out)

    def chain_end(self, i: int) -> int:
        while self.link(i):
            i += 1
        return i

    def comb(self, i: int) -> tuple[Ref, list[tuple[int, int] | None], int] | None:
        """Nodes i..m as branches from one source joined by merge m: (source, branches, m)."""
        n = self.nodes[i]
        if len(n.inputs) != 1 or n.kind == "param" or n.n_out != 1:
            return None
        s = n.inputs[0]
        us = sorted(set(self.users[s]))
        if len(us) < 2 or us[0] != i:
            return None
        spans: dict[Ref, tuple[int, int]] = {}
        pos, m = i, -1
        identity = False
        for u in us:
            node = self.nodes[u]
            if node.kind == "op" and node.op in _MERGES and s in node.inputs and (m == -1 or m == u) and u >= pos:
                identity, m = True, u       # the source itself is a branch of the merge
                continue
            if u != pos or node.n_out != 1 or len(node.inputs) != 1:
                return None
            e = u
            while self.link(e) and len(self.users[Ref(e)]) == 1:
                e += 1
            ends = self.users[Ref(e)]
            if len(ends) != 1 or (m != -1 and ends[0] != m):
                return None
            m = ends[0]
            spans[Ref(e)] = (u, e)
            pos = e + 1
        if m == -1 or pos != m:
            return None
        merge = self.nodes[m]
        if m in self.no_comb or merge.kind != "op" or merge.op not in _MERGES or len(set(merge.inputs)) != len(merge.inputs):
            return None
        if len(merge.inputs) != len(spans) + identity:
            return None
        branches: list[tuple[int, int] | None] = []
        for r in merge.inputs:
            if r == s:
                branches.append(None)
            elif r in spans:
                branches.append(spans.pop(r))
            else:
                return None
        if spans or s == self.body.out:
            return None
        return s, branches, m

    def plan(self) -> list[tuple[Any, ...]]:
        units: list[tuple[Any, ...]] = []
        i = 0
        while i < len(self.nodes):
            n = self.nodes[i]
            if n.kind == "param":
                units.append(("param", i))
                i += 1
                continue
            c = self.comb(i)
            if c is not None:
                s, branches, m = c
                units.append(("comb", s, branches, m, self.chain_end(m)))
                i = self.chain_end(m) + 1
                continue
            k = self.chain_end(i)
            units.append(("chain", i, k))
            i = k + 1
        return units

    def lines(self) -> list[str]:
        """The statements, one line each (a group's body indented below its label)."""
        return [ln for text in self.statements() for ln in text.split("\n")]

    def statements(self) -> list[str]:
        while True:
            units = self.plan()
            named = self.needs_names(units)
            bad = [u[3] for u, nm in zip(units, named) if u[0] == "comb" and nm]
            if not bad:
                break
            self.no_comb.update(bad)
        out: list[str] = []
        current = Ref(-1)
        for u, nm in zip(units, named):
            if u[0] == "param":
                node = self.nodes[u[1]]
                name = node.label or f"p{u[1]}"
                self.names[Ref(u[1])] = name
                self.ctx.slot = self.base[u[1]]
                out.append(f"{name} = {_op_text(node, self.ctx)}")
                continue
            if u[0] == "chain" and any(j in self.conds and len(self.nodes[j].inputs) != 1
                                       for j in range(u[1], u[2] + 1)):
                raise ValueError("a merge left out by a condition is not a combinator here")
            if u[0] == "comb":
                s, branches, m, end = u[1:]
                if s != current:
                    out.append(self.names[s])
                out += self.comb_lines(branches, m)
                out += [self.line(j) for j in range(m + 1, end + 1)]
                current = Ref(end)
                continue
            i, k = u[1], u[2]
            head = self.nodes[i]
            if head.n_out > 1:
                names = [f"t{i}_{j}" for j in range(head.n_out)]
                for j, nme in enumerate(names):
                    self.names[Ref(i, j)] = nme
                out.append(f"{', '.join(names)} = {self.names[head.inputs[0]]} -> {self.labelled_item(i)}")
                current = Ref(-2)
                continue
            if nm:
                name = f"t{k}"
                self.names[Ref(k)] = name
                out.append(f"{name} = " + " -> ".join(self.pipeline(i, k)))
                current = Ref(k)
                continue
            if len(head.inputs) == 1:
                if head.inputs[0] != current:
                    out.append(self.names[head.inputs[0]])
                out += [self.line(j) for j in range(i, k + 1)]
            else:
                out.append(self.pipeline(i, i)[0])     # the merge, then the rest of the chain line by line
                out += [self.line(j) for j in range(i + 1, k + 1)]
            current = Ref(k)
        return out

    def needs_names(self, units: list[tuple[Any, ...]]) -> list[bool]:
        named: list[bool] = []
        for idx, u in enumerate(units):
            if u[0] == "param":
                named.append(True)
                continue
            last = u[4] if u[0] == "comb" else u[2]
            r = Ref(last)
            if r == self.body.out and idx == len(units) - 1:
                named.append(False)
                continue
            nxt = units[idx + 1] if idx + 1 < len(units) else None
            ok = False
            if nxt is not None and nxt[0] == "chain":
                h = self.nodes[nxt[1]]
                ok = len(h.inputs) == 1 and h.inputs[0] == r and self.users[r] == [nxt[1]] and h.n_out == 1
            elif nxt is not None and nxt[0] == "comb":
                ok = nxt[1] == r and all(nxt[1] == self.nodes[j].inputs[0] or j == nxt[3] for j in self.users[r])
            named.append(not ok)
        return named

    def pipeline(self, i: int, k: int) -> list[str]:
        if any(j in self.conds for j in range(i, k + 1)):
            raise ValueError("a layer left out by a condition sits in a pipeline")
        head = self.nodes[i]
        if len(head.inputs) == 1:
            return [self.names[head.inputs[0]]] + [self.labelled_item(j) for j in range(i, k + 1)]
        args = ", ".join(self.names[r] for r in head.inputs)
        self.ctx.slot = self.base[i]
        text = _op_text(head, self.ctx)
        extra = text[len(head.op):]
        inner = args + (", " + extra[1:-1] if extra else "")
        return [f"{head.op}({inner})"] + [self.labelled_item(j) for j in range(i + 1, k + 1)]

    def labelled_item(self, j: int) -> str:
        self.ctx.slot = self.base[j]
        node = self.nodes[j]
        text = _item(node, self.ctx, inline=True)
        # an unlabelled list would be spliced into the body: a group keeps its label
        return text if self.positional and node.label == str(j) and node.kind != "group" else _labelled(node, text)

    def line(self, j: int, otherwise: str | None = None) -> str:
        text = self._line(j)
        if j in self.conds:
            if "\n" in text:
                raise ValueError("a group left out by a condition")
            text += f" if {self.conds[j]}" + (f" else {otherwise}" if otherwise else "")
        return text

    def _line(self, j: int) -> str:
        node = self.nodes[j]
        if node.kind == "group" and node.child is not None:
            self.ctx.slot = self.base[j]
            text = _list_text(node.child, self.ctx)
            if text is None or len(text) + len(node.label or "") + 8 > _WIDTH:
                body = _Printer(node.child, self.ctx, self.base[j], positional=True).lines()
                return f"{label_text(node.label or '')}:\n" + "\n".join("    " + ln for ln in body)
        return self.labelled_item(j)

    def comb_lines(self, branches: list[tuple[int, int] | None], m: int) -> list[str]:
        merge = self.nodes[m]
        head = merge.op
        self.ctx.slot = self.base[m]
        extra = _op_text(merge, self.ctx)[len(head):]
        if merge.label is not None:
            head = f"{label_text(merge.label)}: {head}"
        if m in self.conds and None not in branches:
            raise ValueError("a merge left out by a condition has no identity branch")
        out = [f"{head}{extra}:"]
        for br in branches:
            if br is None:
                out.append("    identity" + (f" if {self.conds[m]}" if m in self.conds else ""))
                continue
            a, b = br
            if a == b:
                out += _indent(self.line(a, otherwise="identity"))
            else:
                out.append("    seq:")
                for j in range(a, b + 1):
                    out += _indent(self.line(j), 2)
        return out


def _slot_count(n: SNode, blocks: Blocks) -> int:
    if n.kind == "group" and n.child is not None:
        return sum(_slot_count(c, blocks) for c in n.child.nodes)
    if n.kind == "use" and n.child is not None:
        return len(blocks.of[id(n.child)].params)
    return 1 if is_act(n) else len(n.args)


def _indent(text: str, n: int = 1) -> list[str]:
    return ["    " * n + ln for ln in text.split("\n")]


def body_lines(body: Body, blocks: Blocks, slot_expr: dict[int, Expr],
               plugin_ops: dict[str, dict[str, Any]], conds: dict[int, str] | None = None) -> list[str]:
    """The statements of one body (not indented); ``conds`` writes nodes as ``layer if flag``."""
    return _Printer(body, _Ctx(blocks, slot_expr, plugin_ops), conds=conds).lines()


def print_spec(root: Body, blocks: Blocks, *, name: str, input_shape: tuple[int, ...], header: list[str],
               plugin_ops: dict[str, dict[str, Any]]) -> str:
    """The whole spec: a header comment, one block per definition (its source class in a comment), the
    network."""
    out = [f"# {h}" if h else "#" for h in header]
    for d in blocks.defs:
        out.append("")
        out.append(f"# {d.cls}")
        params = ", ".join(p.name if p.required else f"{p.name}={lit(p.default)}" for p in d.params)
        out.append(f"block {d.name}" + (f"({params})" if params else "") + ":")
        conds = {i: lit(d.slot_expr[slot]) for slot, nodes in d.cond.items() if slot in d.slot_expr for i in nodes}
        out += ["    " + ln for ln in body_lines(d.template, blocks, d.slot_expr, plugin_ops, conds)]
    out.append("")
    out.append(f"# {root.cls}")
    out.append(f"network {name}:")
    out.append(f"    input {lit(list(input_shape))}")
    out += ["    " + ln for ln in body_lines(root, blocks, {}, plugin_ops)]
    return "\n".join(out) + "\n"
