"""The .arch expression evaluator: compile-time values from expressions, within a :class:`~.budget.Budget`.

Dispatch is an explicit table, :data:`EXPR_HANDLERS` (one handler per expression class of
:mod:`archdsl.lang.ast`), checked against ``ast.Expr`` at import time, so a new expression class without a
handler fails the import instead of a spec at run time. Errors are reported, not raised: a failed
expression evaluates to :data:`~.values.POISON` and its users stay silent.
"""
from __future__ import annotations

import difflib

import re
from abc import ABC, abstractmethod
from typing import Any, Callable, Iterable, get_args

from ..errors import Diagnostic, Reporter, did_you_mean
from ..lang import ast as A
from ..lang.loader import Namespace, Program
from ..lang.parser import KEYWORDS
from ..limits import Limits
from ..ops import MULTI_OUTPUT_OPS, OPS
from ..source import Span
from .budget import Budget, limit_hint
from .dims import Dim, compare, has_dims, pin, pin_all
from .builtins import BUILTINS, CHEAP_BUILTINS, CONSTANTS
from .synonyms import meaning_hint
from .values import ABSENT, POISON, LayerSpec, ShapeVal, TensorVal, fmt, is_int, is_num, type_name

__all__ = ["Env", "Evaluator", "EXPR_HANDLERS", "BUILTINS", "CONSTANTS"]  # the last two: from .builtins

class Env:
    """Lexical environment of a block instance."""

    def __init__(self, ns: Namespace, vars: dict[str, Any], in_shape: tuple[int, ...] | None,
                 in_nid: int | None = None):
        self.ns = ns
        self.vars = vars
        self.in_shape = in_shape
        self.in_nid = in_nid   # the node feeding the block: ``in.h`` reads its size (at run time in reshape)

    def names(self) -> Iterable[str]:
        return [*self.vars, *self.ns.blocks, *OPS, *MULTI_OUTPUT_OPS, *BUILTINS, *CONSTANTS]


class Evaluator(ABC):
    """Evaluates expressions; the elaborator (:class:`~.elaborate.Lowerer`) builds on it."""

    def __init__(self, program: Program, reporter: Reporter, limits: Limits):
        self.program = program
        self.rep = reporter
        self.limits = limits
        self.budget = Budget(limits)
        # the module path of the block instance being expanded (errors found there name it, and one line's
        # errors from many instances are reported once: archdsl.errors.merge_instances); None outside blocks
        self.instance: str | None = None

    # ------------------------------------------------------------------ hooks for the elaborator
    @abstractmethod
    def combine(self, kind: str, tensors: list[TensorVal], kwargs: dict[str, tuple[Any, Span]], span: Span) -> Any:
        """``add(a, b)`` over named tensors: a merge node (made by the elaborator)."""

    # ------------------------------------------------------------------ diagnostics
    def err(self, msg: str, span: Span | None, hint: str | None = None,
            notes: list[tuple[str, Span | None]] | None = None) -> Any:
        self.rep.add(Diagnostic(msg, span, "error", hint, notes or [],
                                instances=(self.instance,) if self.instance else ()))
        return POISON

    def fit(self, v: Any, span: Span) -> Any:
        """``v``, or POISON (reported at ``span``) when it is out of the budget's bounds."""
        p = self.budget.problem(v)
        if p is None:
            return v
        return self.err(p[0], span, hint=p[1])

    def shadow_hint(self, span: Span | None) -> str | None:
        """When the name written at ``span`` is an op or block that a parameter of the same name hides."""
        if span is None:
            return None
        m = re.match(r"[A-Za-z_]\w*", span.source.line(span.line)[span.col - 1:])
        name = m.group(0) if m else ""
        if name in OPS or name in MULTI_OUTPUT_OPS:
            kind = "op"
        elif any(name in f.blocks for f in self.program.files.values()):
            kind = "block"
        else:
            return None
        return (f"'{name}' here is a parameter or named value of this block that hides the {kind} '{name}'; "
                f"rename it (e.g. '{name}_p')")

    # ------------------------------------------------------------------ dispatch
    def eval(self, e: A.Expr, env: Env) -> Any:
        # Every evaluation counts against Limits.max_steps: comprehensions are the only loops, and a
        # filtered one can spin without producing items, so counting items alone would not bound time.
        self.budget.charge(1, e.span)
        return EXPR_HANDLERS[type(e)](self, e, env)

    # ------------------------------------------------------------------ handlers
    def _num(self, e: A.Num, env: Env) -> Any:
        return self.fit(e.value, e.span)

    def _str_lit(self, e: A.Str, env: Env) -> Any:
        return self.fit(e.value, e.span)

    def _name(self, e: A.Name, env: Env) -> Any:
        n = e.id
        if n in env.vars:
            return env.vars[n]
        if n in CONSTANTS:
            return CONSTANTS[n]
        if n in env.ns.blocks:
            return LayerSpec("block", n, env.ns.blocks[n], e.span)
        if n in OPS:
            return LayerSpec("op", n, OPS[n], e.span)
        if n in MULTI_OUTPUT_OPS:
            return LayerSpec("multi", n, MULTI_OUTPUT_OPS[n], e.span)
        if n in BUILTINS:
            return BUILTINS[n]
        if n in KEYWORDS:
            return self.err(f"'{n}' is a keyword, not a value", e.span,
                            hint="keywords start statements and expressions ('if', 'for', 'in', ...)")
        return self.err(f"unknown name '{n}'", e.span, hint=self._unknown_hint(n, env, called=False))

    def _unknown_hint(self, n: str, env: Env, called: bool) -> str:
        """What an unknown name may have meant: by meaning first (deconv -> conv_transpose2d), then by
        spelling; a called name is matched against callables only ('fuse(a, b)' never suggests 'false') and,
        like a name with no near miss, may be an op a Python plugin registers, which only whoever runs archc
        can load."""
        if n in ("True", "False", "None"):
            return f"write {n.lower()}"
        plugin = "if a Python plugin registers it as an op, load the plugin: archc ... --plugin FILE.py (or " \
                 "ARCHDSL_PLUGINS=FILE.py)"
        if called:
            # a misspelt op needs no plugin hint; a name known only by meaning (cross_attention) may be one
            layers = [k for k, v in env.vars.items() if isinstance(v, LayerSpec)]
            callables = [*layers, *env.ns.blocks, *OPS, *MULTI_OUTPUT_OPS, *BUILTINS]
            near = meaning_hint(n, [*OPS, *MULTI_OUTPUT_OPS]) or did_you_mean(n, callables)
            if difflib.get_close_matches(n, callables, n=1, cutoff=0.85):   # a typo (batchnrom, batch_norm)
                return near or ""
            return f"{near} Or, {plugin}" if near else f"define the block or import it, or, {plugin}"
        near = meaning_hint(n, [*OPS, *MULTI_OUTPUT_OPS]) or did_you_mean(n, env.names())
        return near or f"define it with 'name = ...', import the block that defines it, or, {plugin}"

    def _unknown(self, n: str, env: Env) -> bool:
        """Whether the name ``n`` resolves to nothing (see :meth:`_name`)."""
        return not (n in env.vars or n in CONSTANTS or n in env.ns.blocks or n in OPS or n in MULTI_OUTPUT_OPS
                    or n in BUILTINS or n in KEYWORDS)

    def _input_ref(self, e: A.InputRef, env: Env) -> Any:
        if env.in_shape is None:
            return self.err("'in' is only known inside a block or after the network's input", e.span)
        return ShapeVal(env.in_shape, env.in_nid)

    def _list(self, e: A.ListExpr, env: Env) -> Any:
        if self.budget.list_too_long(len(e.items)):
            return self.err(f"the list has {len(e.items):,} items, more than the limit {self.limits.max_repeat:,}",
                            e.span, hint=limit_hint("max_repeat"))
        out = []
        for it in e.items:
            v = self.eval(it, env)
            if v is POISON:
                return POISON
            if v is ABSENT:
                continue
            out.append(v)
        return out

    def _list_comp(self, e: A.ListComp, env: Env) -> Any:
        out: list[Any] = []
        saved = dict(env.vars)

        def rec(i: int) -> bool:
            if i == len(e.fors):
                v = self.eval(e.elt, env)
                if v is POISON:
                    return False
                out.append(v)
                if len(out) > self.limits.max_repeat:
                    self.err(f"list comprehension produces more than {self.limits.max_repeat:,} items", e.span,
                             hint=limit_hint("max_repeat"))
                    return False
                return True
            f = e.fors[i]
            it = self.eval(f.iter, env)
            if it is POISON:
                return False
            if not isinstance(it, list):
                self.err(f"can only loop over a list or range(...), got {type_name(it)}", f.iter.span,
                         hint=f"e.g. 'for {f.var} in range(n)'")
                return False
            names = [f.var, *f.unpack]
            for item in it:
                if f.unpack:
                    if isinstance(item, (ShapeVal, TensorVal)):
                        item = item.dims()
                    if not isinstance(item, list) or len(item) != len(names):
                        got = f"a list of {len(item)}" if isinstance(item, list) else f"{type_name(item)} {fmt(item)}"
                        self.err(f"'for {', '.join(names)} in ...' unpacks each item into {len(names)} names; "
                                 f"got {got}", f.iter.span,
                                 hint=f"loop over a list of {len(names)}-item lists, e.g. zip(widths, strides) "
                                      f"or enumerate(widths)")
                        return False
                    env.vars.update(zip(names, item))
                else:
                    env.vars[f.var] = item
                if f.cond is not None:
                    c = self.eval(f.cond, env)
                    if c is POISON:
                        return False
                    if not c:
                        continue
                if not rec(i + 1):
                    return False
            return True

        ok = rec(0)
        env.vars.clear()
        env.vars.update(saved)
        return out if ok else POISON

    def _call(self, e: A.Call, env: Env) -> Any:
        if isinstance(e.func, A.Name) and self._unknown(e.func.id, env):
            return self.err(f"unknown name '{e.func.id}'", e.func.span,
                            hint=self._unknown_hint(e.func.id, env, called=True))
        f = self.eval(e.func, env)
        args = [(self.eval(a, env), a.span) for a in e.args]
        kwargs: dict[str, tuple[Any, Span]] = {}
        for k in e.kwargs:
            if k.name in kwargs:
                self.err(f"argument '{k.name}' given twice", k.span)
                return POISON
            kwargs[k.name] = (self.eval(k.value, env), k.span)
        if f is POISON or any(v is POISON for v, _ in args) or any(v is POISON for v, _ in kwargs.values()):
            return POISON
        if isinstance(f, LayerSpec):
            if f.called:
                return self.err(f"{f.describe()} already has its arguments", e.span,
                                hint="call a layer once: conv2d(64, 3, stride=2)")
            if f.kind == "op" and (args or kwargs) and not f.target.args and f.name in BUILTINS \
                    and not any(isinstance(v, TensorVal) for v, _ in args):
                # an argument-free op that is also a compile-time function (abs): a call with values is the function
                return self._call_builtin(BUILTINS[f.name], e, [v for v, _ in args],
                                          {k: v for k, (v, _) in kwargs.items()})
            if f.kind == "op" and f.target.arity != 1 and any(isinstance(v, TensorVal) for v, _ in args):
                # a several-tensor op over named tensors: sub(a, b), matmul(q, k), resize_as(a, ref)
                bad = next((v for v, _ in args if not isinstance(v, TensorVal)), None)
                if bad is not None:
                    return self.err(f"{f.name}(...) takes named tensors, then keyword arguments; got "
                                    f"{type_name(bad)} {fmt(bad)} among the tensors", e.span,
                                    hint=f"pass the op's other arguments by name: {f.name}(a, b, name=value)")
                return self.combine(f.name, [v for v, _ in args], kwargs, e.span)
            if any(isinstance(v, TensorVal) for v, _ in args):
                return self.err(f"{f.name} is a layer; apply it to a tensor with '->'", e.span,
                                hint=f"write 'y = x -> {f.name}(...)'")
            return LayerSpec(f.kind, f.name, f.target, f.span, args, kwargs, True, e.span, label=f.label,
                             inline=f.inline)
        if callable(f):
            return self._call_builtin(f, e, [v for v, _ in args], {k: v for k, (v, _) in kwargs.items()})
        return self.err(f"{type_name(f)} is not callable", e.func.span, hint=self.shadow_hint(e.func.span))

    def _call_builtin(self, f: Callable[..., Any], e: A.Call, args: list[Any], kwargs: dict[str, Any]) -> Any:
        fname = getattr(e.func, "id", "call")
        if f is BUILTINS["range"]:
            n = self.budget.range_len(args)
            if n is not None and self.budget.list_too_long(n):
                return self.err(f"range(...) would make {n:,} items, more than the limit {self.limits.max_repeat:,}",
                                e.span, hint=limit_hint("max_repeat"))
        elif f is BUILTINS["sum"] and args:
            items, start = args[0], (args[1] if len(args) > 1 else kwargs.get("start", 0))
            if isinstance(items, list) and isinstance(start, list):
                n = len(start) + sum(len(x) for x in items if isinstance(x, list))
                if self.budget.list_too_long(n):
                    return self.err(f"sum(..., []) would make a list of {n:,} items, more than the limit "
                                    f"{self.limits.max_repeat:,}", e.span, hint=limit_hint("max_repeat"))
                self.budget.charge(n, e.span)
        elif f is BUILTINS["round"]:
            nd = args[1] if len(args) > 1 else kwargs.get("ndigits")
            if isinstance(nd, int) and abs(nd) * 0.30103 > self.limits.max_int_bits:   # computes 10 ** |ndigits|
                return self.err(f"round(...): 10 ** {abs(nd):,} would have about {int(abs(nd) * 3.3219):,} bits, "
                                f"more than the limit {self.limits.max_int_bits:,}", e.span,
                                hint=limit_hint("max_int_bits"))
        if f not in CHEAP_BUILTINS:
            refused = self.budget.walk(f"{fname}(...)", [*args, *kwargs.values()], e.span)
            if refused:
                return self.err(refused, e.span, hint=limit_hint("max_value_size"))
        try:
            out = f(*args, **kwargs)
        except (TypeError, ValueError, ZeroDivisionError, OverflowError) as ex:
            return self.err(f"{fname}(...): {ex}", e.span)
        if (f not in CHEAP_BUILTINS or f is BUILTINS["range"]) and not has_dims(out) \
                and (has_dims(args) or has_dims(list(kwargs.values()))):
            # the result no longer carries the sizes it was computed from (str, float, log2, range, a float
            # min): those sizes keep their values in the input contract
            pin_all(args)
            pin_all(list(kwargs.values()))
        if f is BUILTINS["str"] and len(out) > self.limits.max_value_size:
            return self.err(f"str(...) would make {len(out):,} characters, more than the limit "
                            f"{self.limits.max_value_size:,}", e.span, hint=limit_hint("max_value_size"))
        if isinstance(out, list):
            self.budget.charge(len(out), e.span)
        return self.fit(out, e.span)

    def _index(self, e: A.Index, env: Env) -> Any:
        obj = self.eval(e.obj, env)
        idx = self.eval(e.index, env)
        if obj is POISON or idx is POISON:
            return POISON
        if isinstance(obj, (ShapeVal, TensorVal)):
            obj = obj.dims()
        if not isinstance(obj, list):
            return self.err(f"cannot index {type_name(obj)}", e.obj.span)
        if not is_int(idx):
            return self.err(f"list index must be an integer, got {type_name(idx)}", e.index.span)
        pin(idx)   # which item is picked: a size used as an index keeps its value
        if not -len(obj) <= idx < len(obj):
            return self.err(f"index {idx} is out of range for a list of {len(obj)}", e.index.span,
                            hint=f"valid indices are 0 to {len(obj) - 1} (or -{len(obj)} to -1)" if obj else
                            "the list is empty")
        return obj[idx]

    def _attr(self, e: A.Attr, env: Env) -> Any:
        obj = self.eval(e.obj, env)
        if obj is POISON:
            return POISON
        if isinstance(obj, (ShapeVal, TensorVal)):
            try:
                return obj.attr(e.name)
            except KeyError:
                return self.err(f"a shape has no attribute '{e.name}'", e.span,
                                hint=did_you_mean(e.name, ["c", "h", "w", "shape", "rank"]) or "use c, h, w, shape or rank")
            except IndexError:
                return self.err(f"shape {list(obj.shape)} has no '{e.name}'", e.span,
                                hint="c, h and w exist only for [C, H, W] feature maps (c also for [F]); "
                                     "use .shape[i] (e.g. .shape[-1] for tokens [N, C]) or .rank"
                                if len(obj.shape) == 2 else "t exists only for videos and volumes [C, T, H, W]"
                                if e.name == "t" else "h and w exist only for [C, H, W] and [C, T, H, W] maps")
        return self.err(f"{type_name(obj)} has no attribute '{e.name}'", e.span,
                        hint="attributes exist on 'in' and named tensors: .c .h .w .shape")

    def _binop(self, e: A.BinOp, env: Env) -> Any:
        a = self.eval(e.left, env)
        b = self.eval(e.right, env)
        if a is POISON or b is POISON:
            return POISON
        op = e.op
        # repetition of layers: Block(...) * n
        if op == "*" and (isinstance(a, (LayerSpec, list)) or isinstance(b, (LayerSpec, list))) and \
                (is_int(a) or is_int(b)):
            seq, n = (a, b) if is_int(b) else (b, a)
            pin(n)   # the count is a number of layers: a size it was read from keeps its value
            if n < 0:
                return self.err(f"repetition count must be >= 0, got {n}", e.right.span if is_int(b) else e.left.span)
            if n > self.limits.max_repeat:
                return self.err(f"repetition count {n:,} exceeds the limit {self.limits.max_repeat:,}", e.span,
                                hint=limit_hint("max_repeat"))
            items = seq if isinstance(seq, list) else [seq]
            if n * len(items) > self.limits.max_repeat:
                return self.err(f"repetition makes {n * len(items):,} items, more than the limit "
                                f"{self.limits.max_repeat:,}", e.span, hint=limit_hint("max_repeat"))
            self.budget.charge(n * len(items), e.span)
            return [x for _ in range(n) for x in items]
        if op == "+" and isinstance(a, str) and isinstance(b, str):
            if len(a) + len(b) > self.limits.max_value_size:
                return self.err(f"the string would have {len(a) + len(b):,} characters, more than the limit "
                                f"{self.limits.max_value_size:,}", e.op_span, hint=limit_hint("max_value_size"))
            self.budget.charge((len(a) + len(b)) // 64, e.span)
            return a + b
        if op == "+" and isinstance(a, list) and isinstance(b, list):
            if len(a) + len(b) > self.limits.max_repeat:
                return self.err(f"the list would have {len(a) + len(b):,} items, more than the limit "
                                f"{self.limits.max_repeat:,}", e.op_span, hint=limit_hint("max_repeat"))
            self.budget.charge(len(a) + len(b), e.span)
            return a + b
        if isinstance(a, TensorVal) or isinstance(b, TensorVal):
            return self._tensor_binop(op, a, b, e)
        if not is_num(a) or not is_num(b):
            return self.err(f"cannot apply '{op}' to {type_name(a)} and {type_name(b)}", e.op_span,
                            hint="arithmetic needs numbers; lists and layers only support '+ list' and '* n'")
        if op == "*" and is_int(a) and is_int(b) and self.budget.int_product_too_wide(a, b):
            return self.err(f"the product would have about {a.bit_length() + b.bit_length():,} bits, more than the "
                            f"limit {self.limits.max_int_bits:,}", e.op_span, hint=limit_hint("max_int_bits"))
        try:
            out = _arith(op, a, b)
        except ZeroDivisionError:
            return self.err("division by zero", e.op_span, hint=f"the right side '{fmt(b)}' is zero here")
        except OverflowError:
            return self.err(f"the result of '{op}' is too large for a number", e.op_span,
                            hint="numbers in a spec are sizes and rates; check the operands")
        if out is None:
            return self.err("exponent too large", e.span,
                            hint="powers are limited to |base| <= 2**20 and |exponent| <= 64")
        if isinstance(out, complex):
            base = f"({fmt(a)})" if a < 0 else fmt(a)
            return self.err(f"{base} ** {fmt(b)} is not a real number", e.span,
                            hint="a negative base needs an integer exponent")
        if not isinstance(out, Dim):
            pin(a)   # a size that went into a float or a power keeps only its value (see lower.dims)
            pin(b)
        return self.fit(out, e.op_span)

    def _unary(self, e: A.UnaryOp, env: Env) -> Any:
        v = self.eval(e.operand, env)
        if v is POISON:
            return POISON
        if e.op == "not":
            return not v
        if not is_num(v):
            return self.err(f"cannot apply '{e.op}' to {type_name(v)}", e.span)
        return -v if e.op == "-" else v

    def _compare(self, e: A.Compare, env: Env) -> Any:
        left = self.eval(e.first, env)
        if left is POISON:
            return POISON
        for op, rexpr in e.rest:
            right = self.eval(rexpr, env)
            if right is POISON:
                return POISON
            if op in ("==", "!="):
                refused = self._walk_pair(left, right, e.span)
                if refused is not None:
                    return refused
                eq = _equal(left, right)
                res = eq if op == "==" else not eq
            else:
                if not (is_num(left) and is_num(right)) and not (isinstance(left, str) and isinstance(right, str)):
                    return self.err(f"cannot compare {type_name(left)} {op} {type_name(right)}", e.span,
                                    hint="order comparisons need two numbers or two strings")
                # (through lower.dims.compare: a size read from a tensor notes the outcome as a fact)
                res = compare(op, left, right) if is_num(left) else \
                    {"<": left < right, ">": left > right, "<=": left <= right, ">=": left >= right}[op]
            if not res:
                return False
            left = right
        return True

    def _walk_pair(self, a: Any, b: Any, span: Span) -> Any:
        """Charge ``a == b`` (it walks the smaller side at most); POISON when the walk is refused."""
        if not isinstance(a, (list, str, LayerSpec)) or not isinstance(b, (list, str, LayerSpec)):
            return None
        small = a if self.budget.size(a) <= self.budget.size(b) else b
        refused = self.budget.walk("'=='", [small], span)
        return self.err(refused, span, hint=limit_hint("max_value_size")) if refused else None

    def _boolop(self, e: A.BoolOp, env: Env) -> Any:
        v: Any = None
        for x in e.values:
            v = self.eval(x, env)
            if v is POISON:
                return POISON
            if e.op == "and" and not v:
                return v
            if e.op == "or" and v:
                return v
        return v

    def _ternary(self, e: A.Ternary, env: Env) -> Any:
        c = self.eval(e.cond, env)
        if c is POISON:
            return POISON
        return self.eval(e.value if c else e.orelse, env)

    def _tensor_binop(self, op: str, a: Any, b: Any, e: A.BinOp) -> Any:
        """Math between named tensors: ``a + b``, ``a - b``, ``a * b``, ``a / b`` are the ops add, sub, mul,
        div (broadcasting); ``t * k`` with a number ``k`` is ``scale(k)``."""
        kind = {"+": "add", "-": "sub", "*": "mul", "/": "div"}.get(op)
        if isinstance(a, TensorVal) and isinstance(b, TensorVal) and kind is not None:
            return self.combine(kind, [a, b], {}, e.span)
        if op == "*" and (is_num(a) or is_num(b)):
            t, k, kspan = (a, b, e.right.span) if is_num(b) else (b, a, e.left.span)
            return self.combine("scale", [t], {"factor": (k, kspan)}, e.span)
        if op in ("+", "-", "/") and (is_num(a) or is_num(b)):
            # a tensor and a number: the op 'scalar' ('t + 1e-6', 'k - t', 't / k')
            t, k, kspan = (a, b, e.right.span) if is_num(b) else (b, a, e.left.span)
            which = {"+": "add", "-": "sub", "/": "div"}[op]
            if is_num(a) and op != "+":
                which = "r" + which
            return self.combine("scalar", [t], {"op": (which, e.op_span), "value": (k, kspan)}, e.span)
        other = b if isinstance(a, TensorVal) else a
        return self.err(f"cannot apply '{op}' to a tensor and {type_name(other)}", e.op_span,
                        hint="between named tensors '+', '-', '*' and '/' are add, sub, mul and div; with a "
                             "number, 't * k' is scale(k) and 't + k', 't - k', 't / k' the op scalar")

    def _optional(self, e: A.OptionalExpr, env: Env) -> Any:
        c = self.eval(e.cond, env)
        if c is POISON:
            return POISON
        return self.eval(e.value, env) if c else None

    def _combinator_call(self, e: A.CombinatorCall, env: Env) -> Any:
        vals = [self.eval(a, env) for a in e.args]
        if any(v is POISON for v in vals):
            return POISON
        flat: list[Any] = []
        for v in vals:
            flat.extend(v if isinstance(v, list) else [v])
        if not flat or not all(isinstance(v, TensorVal) for v in flat):
            bad = next((v for v in flat if not isinstance(v, TensorVal)), None)
            return self.err(f"{e.kind}(...) combines named tensors" +
                            (f", got {type_name(bad)}" if flat else ", got nothing"), e.span,
                            hint=f"for branches computed from the current value write '{e.kind}:' "
                                 "with one branch per indented line")
        kwargs = {k.name: (self.eval(k.value, env), k.span) for k in e.kwargs}
        if len(flat) == 1:
            return flat[0]
        return self.combine(e.kind, flat, kwargs, e.span)


def _arith(op: str, a: Any, b: Any) -> Any:
    """``a op b`` on two numbers; None for a power out of bounds; raises ZeroDivisionError/OverflowError."""
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "/":
        return a / b
    if op == "//":
        return a // b
    if op == "%":
        return a % b
    if op == "**":
        if abs(b) > 64 or abs(a) > 1 << 20:
            return None
        return a ** b
    raise ValueError(f"unknown operator '{op}'")  # the grammar has no other operator


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, LayerSpec) or isinstance(b, LayerSpec):
        if isinstance(a, LayerSpec) and isinstance(b, LayerSpec):
            return fmt(a, 1 << 62) == fmt(b, 1 << 62)   # bounded: the caller charged the walk
        return False
    if isinstance(a, str) != isinstance(b, str):
        return False
    if (isinstance(a, Dim) or isinstance(b, Dim)) and is_num(a) and is_num(b):
        return compare("==", a, b)
    return bool(a == b)


EXPR_HANDLERS: dict[type, Callable[[Evaluator, Any, Env], Any]] = {
    A.Num: Evaluator._num, A.Str: Evaluator._str_lit, A.Name: Evaluator._name, A.InputRef: Evaluator._input_ref,
    A.ListExpr: Evaluator._list, A.ListComp: Evaluator._list_comp, A.Call: Evaluator._call,
    A.Index: Evaluator._index, A.Attr: Evaluator._attr, A.BinOp: Evaluator._binop, A.UnaryOp: Evaluator._unary,
    A.Compare: Evaluator._compare, A.BoolOp: Evaluator._boolop, A.Ternary: Evaluator._ternary,
    A.OptionalExpr: Evaluator._optional, A.CombinatorCall: Evaluator._combinator_call,
}

# Every expression class of the AST has a handler, and nothing else does: checked once, at import.
_missing = set(get_args(A.Expr)) ^ set(EXPR_HANDLERS)
if _missing:
    raise ImportError("archdsl.lower.evaluate: EXPR_HANDLERS does not match ast.Expr: "
                      + ", ".join(sorted(c.__name__ for c in _missing)))
