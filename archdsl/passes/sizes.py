"""The input-size contract: which input sizes a network accepts, derived before any tensor exists.

A spec declares one input shape, but the model it builds runs at other sizes too wherever its layers allow:
convolutions and pools follow the input, ``upsample`` keeps its scale factor, ``resize_as`` reads its
reference, and ``reshape`` sizes written from the input (``in.h // 16``) are recomputed at run time. What
stops a size is a branch merge whose operands stop lining up (a U-Net's skip after an odd-sized pool), a
reshape that no longer divides, a layer whose parameters would change shape (``flatten`` into a ``linear``,
a position embedding added to the tokens), or a map that becomes empty.

:func:`input_contract` finds the sizes by re-running every node's shape rule over the graph at probe sizes
(the node's bound args, re-derived by the op's ``resize`` hook where they depend on the size) and checking
that every parameter keeps its count, that every layer is constructed and called as the spec would build it
there (the spec's arguments normalized again for the probe's shapes: an argument derived from a size, like
layernorm's normalized shape, must come out the same), and that every fact the expansion relied on about
sizes read from tensors still holds (``Graph.size_facts``: a comparison's outcome, a size used as a number;
see :mod:`archdsl.lower.dims`). Per spatial axis (H and W of ``[C, H, W]``, T, H and W of a video or volume
``[C, T, H, W]``, N of ``[N, C]``) it finds
the period (the smallest divisor ``d`` of the declared size such that the two next multiples work) and the
smallest working size on that lattice; channels never change. :class:`SizeContract` describes the result
("H and W multiples of 32") for ``archc check``/``summary`` and gives the generated ``forward`` its guard,
so a wrong size fails with the contract in a ``ValueError`` instead of a torch error deep inside.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Callable

from ..ir import Graph, Node
from ..lower.dims import ORDER_OPS, SIZE_OPS
from ..ops import OPS, EmitArgs, Lit

__all__ = ["AxisRule", "SizeContract", "input_contract", "shapes_at", "fixed_input_size", "min_input_size"]

_MAX_PROBES = 96          # shape propagations per contract (each is one pass over the graph's nodes)
_SWEEP_NODE_EVALS = 60_000   # node shape rules the lattice walk of a piecewise graph may run, all probes together
_AXIS_NAMES = {4: ("C", "T", "H", "W"), 3: ("C", "H", "W"), 2: ("N", "C"), 1: ("F",)}


@dataclass(frozen=True)
class AxisRule:
    """The sizes one input axis accepts: ``declared`` only when ``fixed``, else ``minimum + k * multiple``."""

    axis: int               # per-sample axis (batch left out): 1 and 2 for H and W (1, 2, 3: T, H, W of a
    #                         clip), 0 for the tokens' N
    name: str
    declared: int
    multiple: int = 1
    minimum: int = 1
    fixed: bool = False
    maximum: int | None = None   # None: no upper bound was found (probed up to 4x the declared size)

    def accepts(self, size: int) -> bool:
        if self.fixed:
            return size == self.declared
        return (size >= self.minimum and (size - self.minimum) % self.multiple == 0
                and (self.maximum is None or size <= self.maximum))

    def describe(self) -> str:
        if self.fixed:
            return f"exactly {self.declared}"
        rest = self.minimum % self.multiple
        if self.multiple == 1:
            what = ""
        elif rest == 0:
            what = f"multiples of {self.multiple}"
        else:
            what = f"{self.multiple}k + {rest}"
        low = self.minimum > (self.multiple if rest == 0 else 1)
        if self.maximum is not None:
            bounds = f"from {self.minimum} to {self.maximum}"
        elif low:
            bounds = f"at least {self.minimum}"
        else:
            bounds = "" if what else "any size"
        return ", ".join(p for p in (what, bounds) if p)


@dataclass(frozen=True)
class SizeContract:
    """The input shapes a graph accepts (per sample, batch left out)."""

    declared: tuple[int, ...]
    rules: tuple[AxisRule, ...]
    derived: bool = True     # False: the graph's shapes could not be re-derived; only the declared size is known

    @property
    def fixed(self) -> bool:
        return all(r.fixed for r in self.rules)

    def accepts(self, shape: tuple[int, ...]) -> bool:
        if len(shape) != len(self.declared):
            return False
        varying = {r.axis: r for r in self.rules}
        return all(varying[i].accepts(d) if i in varying else d == self.declared[i] for i, d in enumerate(shape))

    def pattern(self) -> str:
        """The accepted shape with its varying axes named: ``[3, H, W]``."""
        names = _AXIS_NAMES.get(len(self.declared), ())
        varying = {r.axis for r in self.rules if not r.fixed}
        return "[" + ", ".join(names[i] if i in varying else str(d) for i, d in enumerate(self.declared)) + "]"

    def describe(self) -> str:
        """One line: ``[3, H, W] with H and W multiples of 32`` or ``[3, 224, 224] only``."""
        if not self.derived or self.fixed or not self.rules:
            return f"{list(self.declared)} only"
        groups: dict[str, list[str]] = {}
        for r in self.rules:
            groups.setdefault(r.describe(), []).append(r.name)
        if list(groups) == ["any size"]:
            return f"{self.pattern()}, any size"
        parts = [f"{' and '.join(names)} {what}" for what, names in groups.items()]
        return f"{self.pattern()} with {'; '.join(parts)}"


def shapes_at(graph: Graph, shape: tuple[int, ...], order: list[Node] | None = None,
              code: dict[int, Any] | None = None) -> dict[int, tuple[int, ...]] | None:
    """Every node's output shape when the graph's input is ``shape``, or None when some node rejects it:
    its shape rule fails, a size becomes non-positive, a parameter would change its size, the spec built at
    this size would construct or call a layer differently (an argument derived from a size: layernorm's
    normalized shape, a flatten's features), or a fact the expansion relied on (``graph.size_facts``: a
    comparison's outcome, a size used as a number) would change. ``order``: the nodes by id (a node's inputs
    precede it; :meth:`Graph.verify` checks that), computed once per caller; ``code``: a cache of each
    node's generated code at the declared size, kept by the caller across calls."""
    out: dict[int, tuple[int, ...]] = {}
    code = {} if code is None else code
    for n in order if order is not None else graph.records():
        if n.op == "input":
            out[n.id] = tuple(shape)
            continue
        ins = [out[i] for i in n.inputs]
        if ins == [tuple(s) for s in n.in_shapes]:
            out[n.id] = tuple(n.shape)      # nothing upstream changed: neither does this node
            continue
        opdef = OPS.get(n.op)
        if opdef is None:
            return None
        try:
            args = opdef.resize(ins, dict(n.args)) if opdef.resize is not None else n.args
            new = tuple(opdef.shape(ins, args))
            if opdef.params(ins, args) != n.params:
                return None
            if n.id not in code:
                code[n.id] = _code(n, opdef, [tuple(s) for s in n.in_shapes], tuple(n.shape), None)
            if _code(n, opdef, ins, new, args) != code[n.id]:
                return None
        except Exception:   # noqa: BLE001 - any failure of a shape rule (a plugin's included) rejects the size
            return None
        if not new or any(not isinstance(d, int) or d <= 0 for d in new):
            return None
        out[n.id] = new
    if tuple(shape) != tuple(graph.input_shape) and not _facts_hold(graph, out):
        return None
    return out


def _code(n: Node, opdef: Any, ins: list[tuple[int, ...]], shape: tuple[int, ...],
          resized: dict[str, Any] | None) -> Any:
    """What code generation writes for node ``n`` with inputs ``ins``, as the spec would build it there: the
    forward expression, the constructor and the module form, from the arguments the spec gave normalized
    for these inputs (a reshape's arguments ``resized`` by its own hook; the node's own where it was not
    made from spec arguments). Equal code at two sizes means the built layer is the one the spec gives."""
    if opdef.resize is not None and resized is not None:
        args = resized
    elif opdef.resize is None and n.bound is not None and opdef.normalize is not None:
        args = opdef.normalize(ins, dict(n.bound))
    else:
        args = n.args
    e = EmitArgs(dict(args), list(ins), shape, len(n.inputs))
    parts: list[Any] = [tuple(opdef.emit(e))]
    if n.module is not None and opdef.ctor is not None:
        # a plugin's factory is handed its input shape the way a conv is handed its input channels: to follow
        # the input (docs/extending.md); its shape rule and parameter count are what the probes check
        parts.append(tuple(p for p in opdef.ctor(e) if not (isinstance(p, Lit) and p.name == "in_shape")))
    if opdef.module_form is not None:
        parts.append(tuple(opdef.module_form(e)))
    return parts


def _facts_hold(graph: Graph, out: dict[int, tuple[int, ...]]) -> bool:
    """Whether every fact the expansion relied on keeps its value with the node sizes ``out``."""
    if not graph.size_facts_complete:
        return False
    try:
        # a fact reading a node a derived graph dropped (the head after a backbone's last feature tap) was
        # about layers this model does not have: only the facts about its own nodes must hold
        return all(_value(expr, out) == want for expr, want in graph.size_facts.items()
                   if all(n in out for n in _reads(expr)))
    except (KeyError, IndexError, ZeroDivisionError, ValueError):
        return False   # a division by zero, or an index out of range: not this size


def _reads(expr: tuple[Any, ...]) -> list[int]:
    """The node ids a fact's expression reads."""
    if expr[0] == "dim":
        return [expr[1]]
    if expr[0] == "k":
        return []
    return [*_reads(expr[1]), *_reads(expr[2])]


def _value(expr: tuple[Any, ...], out: dict[int, tuple[int, ...]]) -> Any:
    op = expr[0]
    if op == "dim":
        return out[expr[1]][expr[2]]
    if op == "k":
        return expr[1]
    a, b = _value(expr[1], out), _value(expr[2], out)
    if op in ("//", "%") and b == 0:
        raise ZeroDivisionError
    fn = SIZE_OPS.get(op) or ORDER_OPS.get(op)
    if fn is None:
        raise ValueError(f"internal: unknown size operation {op!r}")
    return fn(a, b)


def _divisors(n: int) -> list[int]:
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


def input_contract(graph: Graph) -> SizeContract:
    """The input sizes ``graph`` accepts; see the module docstring for how they are found."""
    declared = tuple(graph.input_shape)
    names = _AXIS_NAMES.get(len(declared), ())
    axes = {4: (1, 2, 3), 3: (1, 2), 2: (0,)}.get(len(declared), ())
    if len(graph.inputs) != 1:
        return SizeContract(declared, (), derived=False)
    order = graph.records()
    base = shapes_at(graph, declared, order)
    if base is None or any(base[n.id] != tuple(n.shape) for n in order):
        return SizeContract(declared, (), derived=False)   # the rules do not reproduce the graph: claim nothing
    seen: dict[tuple[int, ...], bool] = {declared: True}
    code: dict[int, Any] = {}

    def ok(s: tuple[int, ...]) -> bool:
        if s not in seen:
            seen[s] = len(seen) < _MAX_PROBES and shapes_at(graph, s, order, code) is not None
        return seen[s]

    def probe(a: int) -> Callable[[int], bool]:
        return lambda v: ok(_with(declared, a, v))

    rules = [_axis_rule(probe(a), a, names[a], declared[a]) for a in axes]
    if _piecewise(order):
        # a run-time min/max/abs makes the sizes a reshape accepts piecewise, not a threshold the searches
        # above assume: walk the lattice around the declared size and stop each rule at its first failure
        budget = [max(16, _SWEEP_NODE_EVALS // len(order))]

        def walk(s: tuple[int, ...]) -> bool:
            if s in seen:
                return seen[s]
            budget[0] -= 1
            seen[s] = budget[0] >= 0 and shapes_at(graph, s, order, code) is not None
            return seen[s]

        def along(a: int) -> Callable[[int], bool]:
            return lambda v: walk(_with(declared, a, v))

        rules = [_swept(r, along(r.axis)) for r in rules]
        # the axes may fail together where each works alone (a min of H and W): every accepted combination
        # (pair of H and W, triple of T, H and W) is walked
        free = [r for r in rules if not r.fixed]
        if len(free) >= 2:
            ranges = [range(r.minimum, (r.maximum or 0) + 1, r.multiple) for r in free]
            if math.prod(len(x) for x in ranges) > budget[0] or not all(
                    walk(_at(declared, [r.axis for r in free], combo)) for combo in itertools.product(*ranges)):
                rules = [AxisRule(r.axis, r.name, r.declared, fixed=True) for r in rules]
    # the axes were probed one at a time; the smallest sizes together and larger ones together must work too
    if rules and not all(r.fixed for r in rules):
        lo = list(declared)
        hi = list(declared)
        for r in rules:
            if not r.fixed:
                lo[r.axis] = r.minimum
                hi[r.axis] = r.maximum if r.maximum is not None else r.declared + (1 + r.axis) * r.multiple
        if not (ok(tuple(lo)) and ok(tuple(hi))):
            rules = [AxisRule(r.axis, r.name, r.declared, fixed=True) for r in rules]
    return SizeContract(declared, tuple(rules))


def _piecewise(order: list[Node]) -> bool:
    """Whether a node computes a run-time size with min or max (a reshape's ``dyn`` formulas)."""
    def has(f: Any) -> bool:
        return isinstance(f, tuple) and bool(f) and (f[0] in ("max", "min") or any(has(x) for x in f[1:]))
    return any(has(f) for n in order for f in (n.args.get("dyn") or ()) if f is not None)


def _swept(r: AxisRule, ok: Callable[[int], bool]) -> AxisRule:
    """``r`` cut at the first size on its lattice, below and above the declared one, that ``ok`` refuses
    (sizes ``ok`` cannot afford to check count as refused: the rule only shrinks); bounded above by the
    walk, so every size the rule accepts was checked."""
    if r.fixed:
        return r
    low = r.minimum
    s = r.declared - r.multiple
    while s >= r.minimum:
        if not ok(s):
            low = s + r.multiple
            break
        s -= r.multiple
    # a piecewise formula may fail again far above: the rule stops where the walk did (at most about 4x)
    top = r.maximum if r.maximum is not None else 4 * r.declared + 2 * r.multiple
    s = r.declared + r.multiple
    while s <= top and ok(s):
        s += r.multiple
    high = s - r.multiple
    if low == r.declared and high == r.declared:
        return AxisRule(r.axis, r.name, r.declared, fixed=True)
    return AxisRule(r.axis, r.name, r.declared, multiple=r.multiple, minimum=low, maximum=high)


def _at(shape: tuple[int, ...], axes: list[int], values: tuple[int, ...]) -> tuple[int, ...]:
    s = list(shape)
    for a, v in zip(axes, values):
        s[a] = v
    return tuple(s)


def _with(shape: tuple[int, ...], axis: int, v: int) -> tuple[int, ...]:
    s = list(shape)
    s[axis] = v
    return tuple(s)


def _axis_rule(ok: Callable[[int], bool], axis: int, name: str, size: int) -> AxisRule:
    """The rule of one axis from probes ``ok(size)`` (the other axes at their declared sizes)."""
    step = next((d for d in _divisors(size) if ok(size + d) and ok(size + 2 * d)), None)
    if step is None:
        return AxisRule(axis, name, size, fixed=True)
    # the smallest working size on the lattice size - k * step: validity grows with the size (a map that is
    # large enough stays large enough), so a binary search over k finds it
    good, bad = 0, (size - 1) // step + 1          # k = good works; k = bad is below 1 (or fails)
    while bad - good > 1:
        mid = (good + bad) // 2
        if ok(size - mid * step):
            good = mid
        else:
            bad = mid
    minimum = size - good * step
    # and the largest: most nets have none, but a fixed-size reshape or parameter accepts only the sizes
    # that floor to the declared one (a ViT's 16x16 patches take 224..239)
    far = 3 * size // step + 2                        # k steps above: about 4x the declared size
    maximum = None
    if not ok(size + far * step):
        good, bad = 2, far                            # size + 2*step worked above
        while bad - good > 1:
            mid = (good + bad) // 2
            if ok(size + mid * step):
                good = mid
            else:
                bad = mid
        maximum = size + good * step
    return AxisRule(axis, name, size, multiple=step, minimum=minimum, maximum=maximum)


def fixed_input_size(graph: Graph) -> bool:
    """timm's ``fixed_input_size``: the input contract of ``graph`` has a fixed or bounded spatial size (a
    ViT's position embedding, Swin's windows), or could not be derived."""
    c = input_contract(graph)
    return not c.derived or any(r.fixed or r.maximum is not None for r in c.rules)


def min_input_size(graph: Graph) -> tuple[int, ...] | None:
    """timm's ``min_input_size`` where timm's test sizes (multiples of 32: 96, 128) may be refused: the
    smallest input the contract accepts when a spatial axis needs a multiple over 32 (MobileViT's 64); else
    None (any size of the test targets fits, or the size is fixed)."""
    c = input_contract(graph)
    rules = {r.axis: r for r in c.rules}
    if not c.derived or len(graph.input_shape) != 3 or set(rules) != {1, 2} \
            or any(r.fixed or r.maximum is not None for r in rules.values()) \
            or all(r.multiple <= 32 for r in rules.values()):
        return None
    return (graph.input_shape[0], *(-(-max(rules[a].minimum, rules[a].multiple) // rules[a].multiple)
                                    * rules[a].multiple for a in (1, 2)))
