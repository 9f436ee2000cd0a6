"""The imported blocks and network as the language's AST, printed by the language's printer.

The plan of each body — chains as lines or ``->`` pipelines, branches from one tensor as ``add:``/``mul:``/
``concat:`` combinators, everything else as named values — builds nodes of :mod:`archdsl.lang.ast`;
:func:`archdsl.lang.printer.print_spec` writes them in the one canonical layout (the text ``archc fmt``
gives), the header and the comment naming each source class travelling in a
:class:`~archdsl.lang.comments.CommentMap`. Values from the model become nodes only through :func:`lit`
and names only through :func:`ident` (both in :mod:`.astlit`): nothing from the model reaches the spec
except numbers, booleans, strings and validated identifiers.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from ..lang import ast as A
from ..lang.comments import CommentMap
from ..lang.printer import INDENT, WIDTH, print_expr
from ..lang.printer import print_spec as print_ast
from ..ops import OPS, MULTI_OUTPUT_OPS
from ..ops.core import REQUIRED, ArgSpec
from .attrs import param_name
from .astlit import PATH as _PATH, SPAN as _SPAN, Item, ident, lit
from .astlit import callish as _callish, equal as _equal, kw as _kw, name_node as _name, named as _named
from .astlit import path_label as _path_label, value_name as _value_name, width as _width
from .blocks import Blocks, Expr, Layer, is_act
from .convert import Body, Ref, SNode
from .reroll import reroll, reroll_lines

__all__ = ["lit", "ident", "build_spec", "print_spec"]

_MERGES = {"add", "mul", "concat"}


def _pipe_stmt(items: list[Item], names: list[str] | None = None) -> A.Stmt:
    """``names = a -> b`` (a let) or ``label: a -> b`` (a layer line; the parser copies the first item's
    label to the statement)."""
    pipe = A.Pipeline(_SPAN, [A.PipeItem(_SPAN, lb, _SPAN if lb is not None else None, e) for lb, e in items])
    if names is not None:
        return A.LetStmt(_SPAN, [(ident(n), _SPAN) for n in names], pipe)
    first = items[0][0]
    return A.LayerStmt(_SPAN, first, _SPAN if first is not None else None, pipe)


def _bare(name: str) -> A.Stmt:
    return _pipe_stmt([(None, _name(name))])


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


def _op_args(node: SNode, ctx: _Ctx) -> tuple[list[A.Expr], list[A.Kwarg]]:
    """An op's arguments: required ones positional, others by name where they differ from the default."""
    values = {}
    for k in sorted(node.args):     # slots are numbered in sorted-key order (blocks.slots)
        values[k] = ctx.value(node.args[k])
    args: list[A.Expr] = []
    kwargs: list[A.Kwarg] = []
    for a in _specs(node.op):
        if a.name not in values:
            continue
        v = values[a.name]
        if a.default is REQUIRED:
            args.append(lit(v))
        elif isinstance(v, Expr) or not _equal(v, a.default):
            kwargs.append(_kw(a.name, v))
    return args, kwargs


def _op_expr(node: SNode, ctx: _Ctx) -> A.Expr:
    if is_act(node):
        return lit(ctx.value(Layer(node.op)))
    return _callish(node.op, *_op_args(node, ctx))


def _use_expr(node: SNode, ctx: _Ctx) -> A.Expr:
    assert node.child is not None
    d = ctx.blocks.of[id(node.child)]
    call = ctx.blocks.call[id(node.child)]
    args: list[A.Expr] = []
    kwargs: list[A.Kwarg] = []
    for p in d.params:
        v = ctx.value(call.get(p.name, p.default))
        if p.required:
            args.append(lit(v))
        elif isinstance(v, Expr) or not _equal(v, p.default):
            kwargs.append(_kw(p.name, v))
    return _callish(d.name, args, kwargs)


def _item(node: SNode, ctx: _Ctx) -> A.Expr:
    """One layer as written in a pipeline or a line (without its label)."""
    if node.kind == "use":
        return _use_expr(node, ctx)
    if node.kind == "plugin":
        defaults = ctx.plugin_ops.get(node.op, {})
        kwargs = []
        for k in sorted(node.args):
            v = ctx.value(node.args[k])
            d = defaults.get(k)
            if isinstance(v, Expr) or not _equal(v, list(d) if isinstance(d, tuple) else d):
                kwargs.append(_kw(k, v))
        return _callish(node.op, [], kwargs)
    if node.kind == "group":
        assert node.child is not None
        e = _list_expr(node.child, ctx)
        if e is None:
            raise ValueError(f"group {node.label} holds groups: it cannot be written inside a pipeline")
        return e
    return _op_expr(node, ctx)


def _can_list(body: Body) -> bool:
    """Whether a sequential group can be a list (a list in a list would be spliced, ``named`` takes no list)."""
    return not any(n.kind == "group" for n in body.nodes) and _is_chain(body)


def _can_flatten(body: Body) -> bool:
    """Whether a sequential group that holds groups can be written in a pipeline as its items one after
    another, each labelled with its module path (``"stage.0.1": [...]``): a chain whose groups are lists or
    flatten in turn (HRNet's ``transition1.1``, a Sequential holding one Sequential)."""
    return _is_chain(body) and all(n.kind != "group" or (n.child is not None and n.label is not None and (
        _can_list(n.child) or _can_flatten(n.child))) for n in body.nodes)


def _flat_items(prefix: str, body: Body, ctx: _Ctx) -> list[Item]:
    """The items of a group :func:`_can_flatten` accepts, labelled ``prefix.label`` (slots in node order, as
    :func:`_list_expr` reads them); an unlabelled item (a parameter-free op called again) stays unlabelled."""
    out: list[Item] = []
    for node in body.nodes:
        path = f"{prefix}.{node.label}" if node.label is not None else None
        if node.kind == "group" and node.child is not None and not _can_list(node.child):
            assert path is not None
            out += _flat_items(path, node.child, ctx)
            continue
        e = _item(node, ctx)
        if path is not None and not _path_label(path):
            raise ValueError(f"module path '{path}' cannot be a label (its parts must be names or numbers)")
        out.append((path, e))
    return out


def _list_expr(body: Body, ctx: _Ctx) -> A.Expr | None:
    """A sequential group as a list: items numbered by position, others named; runs of equal items ``* n``,
    runs of one block with linearly stepping arguments a comprehension (:mod:`.reroll`). None when it cannot
    be one (:func:`_can_list`)."""
    if not _can_list(body):
        return None
    items: list[tuple[A.Expr, bool]] = []
    for i, node in enumerate(body.nodes):
        e = _item(node, ctx)
        named = node.label is not None and node.label != str(i)
        if named:
            assert node.label is not None
            e = _named(node.label, e)
        items.append((e, named))
    out = reroll(items, lambda callee, kw: _default(callee, kw, ctx), lambda callee: callee in ctx.plugin_ops)
    # a list that is one comprehension is written as the comprehension (its items numbered 0..n-1)
    return out[0] if len(out) == 1 and isinstance(out[0], A.ListComp) else A.ListExpr(_SPAN, out)


def _default(callee: str, kw: str, ctx: _Ctx) -> A.Expr | None:
    """The default of keyword ``kw`` of a block, op or plugin op (what a call that leaves it out gets)."""
    d = next((d for d in ctx.blocks.defs if d.name == callee), None)
    if d is not None:
        p = next((p for p in d.params if p.name == kw), None)
        return None if p is None or p.required else lit(p.default)
    if callee in ctx.plugin_ops:
        v = ctx.plugin_ops[callee].get(kw)
        return None if kw not in ctx.plugin_ops[callee] else lit(list(v) if isinstance(v, tuple) else v)
    if callee in OPS or callee in MULTI_OUTPUT_OPS:
        a = next((a for a in _specs(callee) if a.name == kw), None)
        return None if a is None or a.default is REQUIRED else lit(a.default)
    return None


def _is_chain(body: Body) -> bool:
    return all(n.inputs == [Ref(i - 1)] and n.n_out == 1 and n.kind != "param" for i, n in enumerate(body.nodes)) \
        and body.out == Ref(len(body.nodes) - 1)


def _labelled(node: SNode, e: A.Expr) -> Item:
    if node.label is None:
        return None, e
    if not _path_label(node.label):
        if "." in node.label:
            raise ValueError(f"module path '{node.label}' cannot be a label (its parts must be names or numbers)")
        return None, _named(node.label, e)     # RegNet's block1-0
    return node.label, e


def _group_label(label: str | None) -> str:
    if label is None or not _path_label(label):
        raise ValueError(f"group {label!r} cannot be a label (its parts must be names or numbers)")
    return label


class _Printer:
    """Plans one body and builds its statements."""

    def __init__(self, body: Body, ctx: _Ctx, start: int = 0, positional: bool = False,
                 conds: dict[int, A.Expr] | None = None, depth: int = 1) -> None:
        self.body, self.ctx = body, ctx
        self.depth = depth                # indentation level of the body's statements (line widths)
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
                and (m.kind != "group" or (m.child is not None and (_can_list(m.child) or _can_flatten(m.child))))
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

    def statements(self) -> list[A.Stmt]:
        """The body's statements, in node order."""
        while True:
            units = self.plan()
            named = self.needs_names(units)
            bad = [u[3] for u, nm in zip(units, named) if u[0] == "comb" and nm]
            if not bad:
                break
            self.no_comb.update(bad)
        out: list[A.Stmt] = []
        current = Ref(-1)
        for u, nm in zip(units, named):
            if u[0] == "param":
                node = self.nodes[u[1]]
                # the label is the state_dict key; a dotted key (a submodule's: blocks.0.g) names its value
                # blocks_0_g; a key the value cannot be named by (a keyword: `seq`, `add`; an op it would
                # shadow: `scale`; x) labels a value of another name
                lb = node.label
                name = param_name(lb) if lb else f"p{u[1]}"
                if not _value_name(name):
                    name = f"p{u[1]}"
                while name != lb and (name in self.names.values() or any(
                        n.kind == "param" and n.label == name for n in self.nodes)):
                    name += "_"         # blocks.0.g beside an own parameter named blocks_0_g
                self.names[Ref(u[1])] = name
                self.ctx.slot = self.base[u[1]]
                out.append(_pipe_stmt([(lb if lb and lb != name else None, _op_expr(node, self.ctx))], [name]))
                continue
            if u[0] == "chain" and any(j in self.conds and len(self.nodes[j].inputs) != 1
                                       for j in range(u[1], u[2] + 1)):
                raise ValueError("a merge left out by a condition is not a combinator here")
            if u[0] == "comb":
                s, branches, m, end = u[1:]
                if s != current:
                    out.append(_bare(self.names[s]))
                out.append(self.comb_stmt(branches, m))
                out += [self.line(j, depth=self.depth) for j in range(m + 1, end + 1)]
                current = Ref(end)
                continue
            i, k = u[1], u[2]
            head = self.nodes[i]
            if head.n_out > 1:
                names = [f"t{i}_{j}" for j in range(head.n_out)]
                for j, nme in enumerate(names):
                    self.names[Ref(i, j)] = nme
                out.append(_pipe_stmt([(None, _name(self.names[head.inputs[0]])), self.labelled_item(i)], names))
                current = Ref(-2)
                continue
            if nm:
                name = f"t{k}"
                self.names[Ref(k)] = name
                out += self.split_let(self.pipeline(i, k), i, name)
                current = Ref(k)
                continue
            if len(head.inputs) == 1:
                if head.inputs[0] != current:
                    out.append(_bare(self.names[head.inputs[0]]))
                out += [self.line(j, depth=self.depth) for j in range(i, k + 1)]
            else:
                out.append(_pipe_stmt(self.pipeline(i, i)[:1]))   # the merge, then the rest line by line
                out += [self.line(j, depth=self.depth) for j in range(i + 1, k + 1)]
            current = Ref(k)
        return out

    def split_let(self, items: list[Item], i: int, name: str) -> list[A.Stmt]:
        """``name = items`` as one let, or, where that line would be wider than the printer's width, as
        several: each part ends at node j named ``t{j}`` (a name no other value has) and the next starts
        from it, so the printer never has to break a pipeline inside its brackets."""
        room = WIDTH - len(INDENT) * self.depth
        first = i if len(self.nodes[i].inputs) == 1 else i + 1     # the node of items[1]
        out: list[A.Stmt] = []
        part: list[Item] = [items[0]]
        for n, it in enumerate(items[1:]):
            if len(part) > 1 and _width(part + [it], name) > room:
                mid = f"t{first + n - 1}"
                out.append(_pipe_stmt(part, [mid]))
                part = [(None, _name(mid))]
            part.append(it)
        out.append(_pipe_stmt(part, [name]))
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

    def pipeline(self, i: int, k: int) -> list[Item]:
        """Nodes i..k as the items of one pipeline, starting from the name of the head's input (or, for a
        merge at the head, the merge over its inputs' names)."""
        if any(j in self.conds for j in range(i, k + 1)):
            raise ValueError("a layer left out by a condition sits in a pipeline")
        head = self.nodes[i]
        if len(head.inputs) == 1:
            return [(None, _name(self.names[head.inputs[0]]))] + [it for j in range(i, k + 1) for it in self.items(j)]
        self.ctx.slot = self.base[i]
        args, kwargs = _op_args(head, self.ctx)
        if args:    # a call on named tensors takes its other arguments by keyword: einsum(a, b, equation="...")
            req = [a.name for a in _specs(head.op) if a.default is REQUIRED and a.name in head.args]
            kwargs = [A.Kwarg(_SPAN, ident(k), v) for k, v in zip(req, args)] + kwargs
        merge = _callish(head.op, [_name(self.names[r]) for r in head.inputs], kwargs)
        return [(None, merge)] + [it for j in range(i + 1, k + 1) for it in self.items(j)]

    def items(self, j: int) -> list[Item]:
        """Node j as pipeline items: one, or a group that holds groups as its path-labelled items."""
        node = self.nodes[j]
        if node.kind == "group" and node.child is not None and not _can_list(node.child) \
                and _can_flatten(node.child):
            self.ctx.slot = self.base[j]
            return _flat_items(_group_label(node.label), node.child, self.ctx)
        return [self.labelled_item(j)]

    def labelled_item(self, j: int) -> Item:
        self.ctx.slot = self.base[j]
        node = self.nodes[j]
        e = _item(node, self.ctx)
        # an unlabelled list would be spliced into the body: a group keeps its label
        return (None, e) if self.positional and node.label == str(j) and node.kind != "group" else _labelled(node, e)

    def line(self, j: int, otherwise: str | None = None, *, depth: int) -> A.Stmt:
        """Node j as one statement at indentation ``depth``, with its condition (``layer if flag [else
        otherwise]``)."""
        st = self._line(j, depth)
        if j in self.conds:
            if not isinstance(st, A.LayerStmt):
                raise ValueError("a group left out by a condition")
            item = st.value.items[0]
            cond = self.conds[j]
            item.expr = (A.Ternary(_SPAN, item.expr, cond, _name(otherwise)) if otherwise
                         else A.OptionalExpr(_SPAN, item.expr, cond))
        return st

    def _line(self, j: int, depth: int) -> A.Stmt:
        node = self.nodes[j]
        if node.kind == "group" and node.child is not None:
            self.ctx.slot = self.base[j]
            e = _list_expr(node.child, self.ctx)
            # a list that does not fit on its line is a group body, one item per line
            if e is None or len(INDENT) * depth + _width([(_group_label(node.label), e)]) > WIDTH:
                lines = reroll_lines(e)
                if lines is not None:
                    return A.SeqStmt(_SPAN, _group_label(node.label), _SPAN, [_pipe_stmt([(None, x)]) for x in lines])
                body = _Printer(node.child, self.ctx, self.base[j], positional=True, depth=depth + 1).statements()
                return A.SeqStmt(_SPAN, _group_label(node.label), _SPAN, body)
        return _pipe_stmt([self.labelled_item(j)])

    def comb_stmt(self, branches: list[tuple[int, int] | None], m: int) -> A.Stmt:
        """The merge m over its branches as a combinator (``add:`` and one branch per line or ``seq:``)."""
        merge = self.nodes[m]
        self.ctx.slot = self.base[m]
        args, kwargs = _op_args(merge, self.ctx)
        if m in self.conds and None not in branches:
            raise ValueError("a merge left out by a condition has no identity branch")
        body: list[A.Stmt] = []
        for br in branches:
            if br is None:
                ident_e: A.Expr = _name("identity")
                if m in self.conds:
                    ident_e = A.OptionalExpr(_SPAN, ident_e, self.conds[m])
                body.append(_pipe_stmt([(None, ident_e)]))
                continue
            a, b = br
            if a == b:
                body.append(self.line(a, otherwise="identity", depth=self.depth + 1))
            else:
                body.append(A.SeqStmt(_SPAN, None, None, [self.line(j, depth=self.depth + 2) for j in range(a, b + 1)]))
        label = _group_label(merge.label) if merge.label is not None else None
        return A.CombinatorStmt(_SPAN, label, _SPAN if label is not None else None, False, merge.op,
                                args, kwargs, body)


def _slot_count(n: SNode, blocks: Blocks) -> int:
    if n.kind == "group" and n.child is not None:
        return sum(_slot_count(c, blocks) for c in n.child.nodes)
    if n.kind == "use" and n.child is not None:
        return len(blocks.of[id(n.child)].params)
    return 1 if is_act(n) else len(n.args)


def body_stmts(body: Body, blocks: Blocks, slot_expr: dict[int, Expr],
               plugin_ops: dict[str, dict[str, Any]], conds: dict[int, A.Expr] | None = None) -> list[A.Stmt]:
    """The statements of one body; ``conds`` writes nodes as ``layer if flag``."""
    return _Printer(body, _Ctx(blocks, slot_expr, plugin_ops), conds=conds).statements()


def build_spec(root: Body, blocks: Blocks, *, name: str, input_shape: tuple[int, ...], header: list[str],
               plugin_ops: dict[str, dict[str, Any]]) -> tuple[A.SpecFile, CommentMap]:
    """The whole spec as an AST and its comments: a header, one block per definition (a comment naming its
    source class above it), the network."""
    spec = A.SpecFile(_PATH)
    comments = CommentMap()
    for d in blocks.defs:
        conds = {i: lit(d.slot_expr[slot]) for slot, nodes in d.cond.items() if slot in d.slot_expr for i in nodes}
        params = [A.Param(_SPAN, ident(p.name), None if p.required else lit(p.default)) for p in d.params]
        bd = A.BlockDef(_SPAN, ident(d.name), params, body_stmts(d.template, blocks, d.slot_expr, plugin_ops, conds),
                        _SPAN, _PATH)
        if bd.name in spec.blocks:
            raise ValueError(f"two blocks are named {bd.name}")
        spec.blocks[bd.name] = bd
        comments.of(bd).leading.append(f"# {d.cls}")
    body: list[A.Stmt] = [A.InputStmt(_SPAN, lit(list(input_shape)))]
    net = A.NetworkDef(_SPAN, ident(name), [], body + body_stmts(root, blocks, {}, plugin_ops), _SPAN, _PATH)
    if net.name in spec.blocks:
        raise ValueError(f"the network's name {net.name} is also a block's")
    spec.networks[net.name] = net
    comments.of(net).leading.append(f"# {root.cls}")
    first: A.BlockDef = next(iter(spec.blocks.values()), net)
    # an empty header line is a bare '#' (an empty string would be a blank line)
    comments.of(first).leading[:0] = [f"# {h}" if h else "#" for h in header] + ([""] if header else [])
    return spec, comments


def print_spec(root: Body, blocks: Blocks, *, name: str, input_shape: tuple[int, ...], header: list[str],
               plugin_ops: dict[str, dict[str, Any]]) -> str:
    """The whole spec as text, from the language's printer (:func:`build_spec`)."""
    spec, comments = build_spec(root, blocks, name=name, input_shape=input_shape, header=header,
                                plugin_ops=plugin_ops)
    return print_ast(spec, comments)
