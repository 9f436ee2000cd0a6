"""One signature binder for everything that takes arguments: ops, blocks and network parameters.

A call's positional and keyword arguments are matched to the callee's :class:`Slot` list the same way
for all three; only the words of the messages differ (``conv2d has no argument 'k'``, ``block B has no
parameter 'k'``, ``network 'n' has no parameter 'k'``). Defaults are filled in slot order by
:func:`fill_defaults`: a block's or network's default is an expression evaluated in the callee's
environment (so it may use the parameters before it), an op's is a value. Op arguments are then
type-checked against their :class:`~archdsl.ops.ArgSpec` by :func:`check_op_types`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal

from ..errors import did_you_mean
from ..lang import ast as A
from ..ops import REQUIRED, ArgSpec
from ..source import Span
from .values import POISON, fmt, is_int, is_num, non_finite, type_name

__all__ = ["Slot", "Signature", "bind", "fill_defaults", "check_op_types", "op_signature", "block_signature",
           "network_signature"]

ErrFn = Callable[..., Any]   # Evaluator.err: (message, span, hint=None, notes=None) -> POISON


@dataclass(frozen=True)
class Slot:
    """One parameter: its name, and its default (an op's value, a block's expression, or none: required)."""

    name: str
    required: bool
    default: Any = None


@dataclass(frozen=True)
class Signature:
    """What a call binds against; ``kind`` chooses the words of the messages."""

    kind: Literal["op", "block", "network"]
    name: str
    slots: tuple[Slot, ...]
    defined_at: Span | None = None   # a block's name, quoted in the 'takes N arguments' hint

    def text(self) -> str:
        """``conv2d(out, kernel_size, stride=1, ...)`` style parameter list (computed only for messages)."""
        if self.kind == "op":
            return ", ".join(s.name if s.required else f"{s.name}={fmt(s.default)}" for s in self.slots)
        return ", ".join(s.name if s.required else f"{s.name}=..." for s in self.slots)

    def title(self) -> str:
        return {"op": self.name, "block": f"block {self.name}", "network": f"network '{self.name}'"}[self.kind]


# Signatures by the identity of what they describe (an op's ArgSpec list, a BlockDef), built once: binding
# runs for every layer. The key object is kept beside the signature so its id cannot be reused.
_SIGNATURES: dict[int, tuple[Any, Signature]] = {}


def op_signature(name: str, spec: list[ArgSpec]) -> Signature:
    hit = _SIGNATURES.get(id(spec))
    if hit is not None and hit[0] is spec and hit[1].name == name:
        return hit[1]
    sig = Signature("op", name, tuple(Slot(a.name, a.default is REQUIRED, None if a.default is REQUIRED
                                           else a.default) for a in spec))
    _SIGNATURES[id(spec)] = (spec, sig)
    return sig


def block_signature(b: A.BlockDef) -> Signature:
    hit = _SIGNATURES.get(id(b))
    if hit is not None and hit[0] is b:
        return hit[1]
    kind: Literal["block", "network"] = "network" if isinstance(b, A.NetworkDef) else "block"
    sig = Signature(kind, b.name, tuple(Slot(p.name, p.default is None, p.default) for p in b.params),
                    b.name_span)
    _SIGNATURES[id(b)] = (b, sig)
    return sig


def network_signature(net: A.NetworkDef) -> Signature:
    return block_signature(net)


def bind(sig: Signature, args: list[tuple[Any, Span]], kwargs: dict[str, tuple[Any, Span | None]],
         span: Span | None, err: ErrFn) -> tuple[dict[str, Any], dict[str, Span | None], bool]:
    """Match ``args``/``kwargs`` to ``sig``: (values given, their spans, ok). Every mistake is reported."""
    title, names = sig.title(), [s.name for s in sig.slots]
    given: dict[str, Any] = {}
    spans: dict[str, Span | None] = {}
    ok = True
    if len(args) > len(sig.slots):
        n = len(sig.slots)
        hint = f"{sig.name}({sig.text()})"
        if sig.kind == "block" and sig.defined_at is not None:
            hint += f" at {sig.defined_at.location()}"
        err(f"{title} takes {n} argument{'s' if n != 1 else ''}, got {len(args)}", args[n][1], hint=hint)
        ok = False
    for s, (v, vs) in zip(sig.slots, args):
        given[s.name], spans[s.name] = v, vs
    for k, (v, ks) in kwargs.items():
        if k not in names:
            noun = "argument" if sig.kind == "op" else "parameter"
            if sig.kind == "network":
                fallback = ("its parameters: " + ", ".join(sorted(names))) if names else "it takes no parameters"
            else:
                fallback = f"{sig.name}({sig.text()})"
            err(f"{title} has no {noun} '{k}'", ks, hint=did_you_mean(k, names) or fallback)
            ok = False
        elif k in given:
            err(f"{title} got '{k}' twice" + (" (positionally and by keyword)" if sig.kind == "op" else ""), ks)
            ok = False
        else:
            given[k], spans[k] = v, ks
    for s in sig.slots:
        if s.name not in given and s.required:
            if sig.kind == "network":
                continue   # reported by fill_defaults at the parameter, where the default is missing
            err(f"{title} needs '{s.name}'", span, hint=f"{sig.name}({sig.text()})")
            ok = False
    return given, spans, ok


def fill_defaults(sig: Signature, given: dict[str, Any], evaluate: Callable[[Slot], Any],
                  err: ErrFn | None = None, params: list[A.Param] | None = None,
                  sink: dict[str, Any] | None = None) -> dict[str, Any]:
    """All slots in order: the given value, or the default (``evaluate(slot)`` for expression defaults).

    Values go into ``sink`` (the callee's variables) as they are made, so a default expression sees the
    parameters before it and no later one. A required slot with no value (networks only get here with
    one) is reported at its parameter and is POISON."""
    out: dict[str, Any] = {} if sink is None else sink
    for i, s in enumerate(sig.slots):
        if s.name in given:
            out[s.name] = given[s.name]
        elif not s.required:
            out[s.name] = evaluate(s) if isinstance(s.default, A.Node) else s.default
        else:
            if err is not None:
                where = params[i].span if params is not None else None
                err(f"network parameter '{s.name}' has no default and was not given", where,
                    hint=f"give it a default or pass --set {s.name}=...")
            out[s.name] = POISON
    return out


def check_op_types(fname: str, spec: list[ArgSpec], values: dict[str, Any], spans: dict[str, Span | None],
                   span: Span, err: ErrFn) -> bool:
    """Type-check an op's bound arguments against ``spec``; every bad one is reported at its argument."""
    ok = True
    sig: Signature | None = None
    for a in spec:
        msg = _check_type(a, values[a.name])
        if msg:
            sig = sig or op_signature(fname, spec)
            err(f"{fname}: {msg}", spans.get(a.name) or span, hint=f"{fname}({sig.text()})")
            ok = False
    return ok


def _check_type(a: ArgSpec, v: Any) -> str | None:
    t = a.type

    def pair_ok(x: Any) -> bool:
        return is_int(x) or (isinstance(x, list) and len(x) == 2 and all(is_int(i) for i in x))

    def triple_ok(x: Any) -> bool:
        return is_int(x) or (isinstance(x, list) and len(x) == 3 and all(is_int(i) for i in x))
    ok = True
    want = t
    if t == "int":
        ok, want = is_int(v), "an integer"
    elif t == "int2":
        ok, want = pair_ok(v), "an integer or a pair [h, w]"
    elif t == "int3":
        ok, want = triple_ok(v), "an integer or a triple [t, h, w]"
    elif t == "int3?":
        ok, want = v is None or triple_ok(v), "an integer, a triple [t, h, w] or none"
    elif t == "padding3":
        ok, want = triple_ok(v) or v in ("same", "valid"), "an integer, a triple, \"same\" or \"valid\""
    elif t == "int?":
        ok, want = v is None or is_int(v), "an integer or none"
    elif t == "int2?":
        ok, want = v is None or pair_ok(v), "an integer, a pair [h, w] or none"
    elif t == "float":
        ok, want = is_num(v), "a number"
    elif t == "bool":
        ok, want = isinstance(v, bool), "true or false"
    elif t == "float?":
        ok, want = v is None or is_num(v), "a number or none"
    elif t == "bool?":
        ok, want = v is None or isinstance(v, bool), "true, false or none"
    elif t == "str":
        ok, want = isinstance(v, str), "a string"
    elif t == "padding":
        ok, want = pair_ok(v) or v in ("same", "valid"), "an integer, a pair, \"same\" or \"valid\""
    elif t == "list":
        ok, want = isinstance(v, list), "a list"
    elif t == "dims":   # one dim or several (reductions): an integer or a non-empty list of integers
        ok = is_int(v) or (isinstance(v, list) and bool(v) and all(is_int(i) for i in v))
        want = "an integer or a list of integers"
    if not ok:
        return f"'{a.name}' must be {want}, got {type_name(v)} {fmt(v)}"
    bad = non_finite(v) if isinstance(v, (float, list)) else None
    if bad is not None:   # generated code would read 'inf' / 'nan' as names
        return f"'{a.name}' must be a finite number, got {bad}"
    if a.choices is not None and v not in a.choices:
        return f"'{a.name}' must be one of " + ", ".join(fmt(c) for c in a.choices) + f", got {fmt(v)}"
    return None
