"""Built-in op ``einsum``: Einstein summation over named tensors, with a per-sample equation.

The spec's equation names the per-sample dims only (``einsum(a, b, equation="nc,mc->nm")`` for tokens
``[N, C]`` and ``[M, C]``); code generation puts a batch letter the equation does not use in front of every
operand and of the result (``"bnc,bmc->bnm"``), so each sample is contracted on its own. An equation without
``->`` gets torch's implicit output (the letters seen once, sorted), written out explicitly. Letters only: an
ellipsis is refused (write the dims out). Every operand is batched (a ``parameter`` operand keeps its default
``batch_dim=true``).

MACs are fvcore's count of the batched equation at batch 1, replicated exactly: its two bmm-like equations
count ``n*c*t*p``; any other asks numpy's ``einsum_path(optimize="optimal")`` for its "optimized FLOP count"
(printed to 4 digits) and halves it. :func:`fvcore_einsum_macs` is that computation without numpy.
"""
from __future__ import annotations

import itertools
import math
import string
from typing import Any

from .core import ArgSpec, EmitArgs, Expr, In, Lit, OpDef, Shape, ShapeError, TensorArg, TorchCall, TorchForm, register
from .forms import call_arg

__all__ = ["fvcore_einsum_macs", "parse_equation"]

#: the most operands one einsum may take: the MAC count searches every contraction order (factorial)
MAX_OPERANDS = 6
_LETTERS = frozenset(string.ascii_letters)
# the batch letter: the conventional "b" when free, else the first free one
_BATCH_CHOICES = "b" + string.ascii_lowercase.replace("b", "") + string.ascii_uppercase


def parse_equation(eq: Any, n: int, arg: str = "equation") -> tuple[list[str], str]:
    """``(operand terms, output term)`` of an einsum equation over ``n`` operands, the output explicit (torch's
    implicit output: the letters seen once, sorted). Raises ShapeError with the reason."""
    if not isinstance(eq, str):
        raise ShapeError(f"einsum equation must be a string, got {eq!r}", arg=arg)
    eq = eq.replace(" ", "")
    if "..." in eq:
        raise ShapeError("einsum: an ellipsis (...) is not supported", arg=arg,
                         hint="name every per-sample dim with a letter, e.g. \"nc,mc->nm\"")
    lhs, arrow, out = eq.partition("->")
    terms = lhs.split(",")
    bad = sorted({ch for ch in lhs + out if ch not in _LETTERS and ch != ","} | ({","} if "," in out else set()))
    if bad or "->" in out:
        raise ShapeError(f"einsum equation \"{eq}\" has characters other than letters, ',' and one '->': "
                         f"{' '.join(repr(b) for b in bad) or repr('->')}", arg=arg)
    if len(terms) != n:
        raise ShapeError(f"einsum equation \"{eq}\" names {len(terms)} operand(s) but {n} tensor(s) are given",
                         arg=arg, hint="one comma-separated term per tensor, e.g. einsum(a, b, equation=\"ij,jk->ik\")")
    seen = "".join(terms)
    if not arrow:
        out = "".join(sorted(ch for ch in set(seen) if seen.count(ch) == 1))
    for ch in out:
        if ch not in seen:
            raise ShapeError(f"einsum output letter '{ch}' does not occur in any operand of \"{eq}\"", arg=arg)
        if out.count(ch) > 1:
            raise ShapeError(f"einsum output letter '{ch}' occurs twice in \"{eq}\"", arg=arg)
    return terms, out


def _sizes(terms: list[str], shapes: list[Shape], eq: str) -> dict[str, int]:
    size: dict[str, int] = {}
    for k, (t, s) in enumerate(zip(terms, shapes)):
        if len(t) != len(s):
            raise ShapeError(f"einsum term '{t}' has {len(t)} letter(s) for operand {k} of shape {list(s)} "
                             f"({len(s)} per-sample dims)", arg="equation",
                             hint="the equation is per sample: leave the batch out")
        for ch, d in zip(t, s):
            if size.setdefault(ch, d) != d:
                raise ShapeError(f"einsum letter '{ch}' of \"{eq}\" is {size[ch]} in one operand and {d} in "
                                 f"operand {k} ({list(s)})", arg="equation")
    return size


def _einsum_norm(shapes: list[Shape], a: dict[str, Any]) -> dict[str, Any]:
    a = dict(a)
    if len(shapes) > MAX_OPERANDS:
        raise ShapeError(f"einsum takes at most {MAX_OPERANDS} tensors, got {len(shapes)}",
                         hint="split it into several einsums")
    terms, out = parse_equation(a["equation"], len(shapes))
    used = set("".join(terms))
    b = next((ch for ch in _BATCH_CHOICES if ch not in used), None)
    if b is None:
        raise ShapeError("einsum equation uses all 52 letters; one is needed for the batch", arg="equation")
    a["equation"] = ",".join(terms) + "->" + out
    a["batched"] = ",".join(b + t for t in terms) + "->" + b + out
    return a


def _einsum_shape(shapes: list[Shape], a: dict[str, Any]) -> Shape:
    terms, out = parse_equation(a["equation"], len(shapes))
    size = _sizes(terms, shapes, a["equation"])
    if not out:
        raise ShapeError(f"einsum \"{a['equation']}\" sums every per-sample dim away, leaving only the batch",
                         arg="equation", hint="keep a dim in the output, e.g. \"ij,ij->i\"")
    return tuple(size[ch] for ch in out)


# ---- fvcore's count --------------------------------------------------------------------------------------------
def _flops(idx: set[str], inner: bool, n_terms: int, size: dict[str, int]) -> int:
    # numpy's _flop_count: the contraction's size times (terms - 1, at least 1), plus one for an inner product
    return math.prod(size[i] for i in idx) * (max(1, n_terms - 1) + (1 if inner else 0))


def _contract(pos: tuple[int, ...], sets: list[set[str]], out: set[str]) -> tuple[set[str], list[set[str]], set[str],
                                                                                   set[str]]:
    # numpy's _find_contraction
    contract: set[str] = set()
    remain = set(out)
    rest = []
    for k, s in enumerate(sets):
        if k in pos:
            contract |= s
        else:
            rest.append(s)
            remain |= s
    new = remain & contract
    return new, [*rest, new], contract - new, contract


def _optimal_path(sets: list[set[str]], out: set[str], size: dict[str, int], limit: int) -> list[tuple[int, ...]]:
    # numpy's _optimal_path: every order of pairwise contractions whose intermediates fit in `limit`
    full: list[tuple[int, list[tuple[int, ...]], list[set[str]]]] = [(0, [], sets)]
    for it in range(len(sets) - 1):
        nxt = []
        for cost, path, remaining in full:
            for con in itertools.combinations(range(len(sets) - it), 2):
                new, rest, removed, contract = _contract(con, remaining, out)
                if math.prod(size[i] for i in new) > limit:
                    continue
                nxt.append((cost + _flops(contract, bool(removed), len(con), size), path + [con], rest))
        if not nxt:
            return min(full, key=lambda r: r[0])[1] + [tuple(range(len(sets) - it))]
        full = nxt
    return min(full, key=lambda r: r[0])[1]


def fvcore_einsum_macs(equation: str, shapes: list[Shape]) -> int:
    """fvcore's ``einsum_flop_jit`` count of ``torch.einsum(equation, *operands)`` with operands of ``shapes``
    (full shapes, batch included): equal to it by construction, numpy's path search written out."""
    eq = equation.replace(" ", "")
    order = list(dict.fromkeys(ch for ch in eq if ch.isalpha()))
    canon = eq.translate({ord(ch): 97 + k for k, ch in enumerate(order)})
    if canon == "abc,abd->acd":   # fvcore counts these two as the bmm they are, exactly
        return math.prod(shapes[0]) * shapes[-1][-1]
    if canon == "abc,adc->adb":
        return math.prod(shapes[0]) * shapes[-1][1]
    lhs, _, out = eq.partition("->")
    terms = lhs.split(",")
    size: dict[str, int] = {}
    for t, s in zip(terms, shapes):
        for ch, d in zip(t, s):
            if size.get(ch, 1) == 1:   # numpy lets a size-1 dim broadcast
                size[ch] = d
    sets = [set(t) for t in terms]
    out_set, indices = set(out), set(lhs.replace(",", ""))
    limit = max(math.prod(size[ch] for ch in t) for t in [*terms, out])
    if len(terms) in (1, 2) or indices == out_set:
        path: list[tuple[int, ...]] = [tuple(range(len(terms)))]
    else:
        path = _optimal_path(sets, out_set, size, limit)
    total = 0
    for con in path:
        _, sets, removed, contract = _contract(tuple(sorted(con, reverse=True)), sets, out_set)
        total += _flops(contract, bool(removed), len(con), size)
    # numpy prints "Optimized FLOP count" as sum + 1 with 4 significant digits; fvcore parses and halves it
    return math.floor(float(f"{total + 1:.3e}") / 2)


def _einsum_macs(shapes: list[Shape], out: Shape, a: dict[str, Any]) -> int:
    return fvcore_einsum_macs(a["batched"], [(1, *s) for s in shapes])


def _einsum_emit(e: EmitArgs) -> Expr:
    parts: list[Any] = ["torch.einsum(", Lit(e.args["batched"], "equation")]
    for k in range(e.n_inputs):
        parts += [", ", In(k)]
    return (*parts, ")")


def _einsum_form(c: TorchCall) -> dict[str, Any]:
    """torch.einsum(equation, *operands) (or a list of operands): the equation with each operand's batch
    letter taken out; the batch must be one letter, in every operand and first in the result."""
    eq = call_arg(c, 0, "equation")
    ops = c.args[1:]
    if len(ops) == 1 and isinstance(ops[0], (list, tuple)):
        ops = tuple(ops[0])
    if not isinstance(eq, str) or not all(isinstance(o, TensorArg) for o in ops):
        raise ShapeError("einsum with a non-constant equation or non-tensor operands")
    terms, out = parse_equation(eq, len(ops))
    if any(len(t) != len(c.in_shapes[o.k]) + 1 for t, o in zip(terms, ops)):
        raise ShapeError(f"einsum \"{eq}\": a term does not match its operand's rank")
    letters = {t[c.batch_axes[o.k]] for t, o in zip(terms, ops)}
    b = letters.pop()
    if letters or not out.startswith(b) or any(t.count(b) != 1 for t in terms):
        raise ShapeError(f"einsum \"{eq}\" mixes the batch with other dims (its batch letter must be one letter, "
                         "once in every operand and first in the result)")
    return {"equation": ",".join(t.replace(b, "") for t in terms) + "->" + out[1:]}


register(
    OpDef("einsum", "math", [ArgSpec("equation", "str")], _einsum_shape,
          "Einstein summation of named tensors with a per-sample equation: einsum(a, b, equation=\"nc,mc->nm\") "
          "(codegen adds a batch letter to every term; implicit output as torch; letters only, no ellipsis). "
          "MACs as fvcore counts the batched einsum.",
          arity=-1, normalize=_einsum_norm, macs=_einsum_macs, key_args=("equation",), emit=_einsum_emit,
          traits={"layout-sensitive"},
          torch_forms=(TorchForm("function", "torch.einsum", _einsum_form),
                       TorchForm("function", "torch.functional.einsum", _einsum_form))),
)
