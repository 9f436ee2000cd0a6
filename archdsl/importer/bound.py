"""Classes kept whole that the model calls with more than a tensor: ``attn(x, feat_size)`` returning
``(x, new_size)`` (MViTv2), ``pos_embed(B, H, W)`` (XCiT's Fourier position encoding).

Such a module is traced through as part of its caller (it is not "one tensor in, one tensor out"); when its
own code cannot be expressed, its class is kept whole (:func:`retry_class`, the importer's retry) and each
call becomes a plugin op whose spec arguments are the constructor's and, prefixed ``call_``, the call's
non-tensor arguments as traced (sizes known at trace time; the batch size, which is not, written
``"batch"``). The plugin file gives the class a subclass whose ``forward`` takes the op's tensor and makes
the model's call (:func:`bound_lines`); a tuple result gives its one tensor, its other items (sizes) are
constants of the caller. A call with no tensor argument (``pos_embed(B, H, W)``) takes the caller's input,
for its batch size only.

Values reach the plugin's source only as ``repr`` literals (in the spec arguments) and identifiers checked
here; nothing here imports torch.
"""
from __future__ import annotations

import keyword
import re
from dataclasses import dataclass, field
from typing import Any

from ..ops.core import BatchSize, TensorArg
from .snodes import Const, Ref, SNode, has_tensor, plain
from .trace import Val, class_name

__all__ = ["Binding", "bind_call", "bound_call", "bound_lines", "BOUND_HELPERS", "CALL_PREFIX", "batch_value"]

#: the spec arguments holding a bound call's arguments: ``call_feat_size=[56, 56]``
CALL_PREFIX = "call_"
_BATCH_RE = re.compile(r"batch(\*([1-9][0-9]*))?")


@dataclass
class Binding:
    """How the model calls one kept module: ``slots`` in the call's order, each ``(keyword or None,
    kind)`` with kind ``"x"`` (the op's tensor) or a forward parameter's name (a ``call_`` spec argument);
    ``out``: the index of the tensor in a tuple result (None: the result is the tensor); ``donor``: the op's
    tensor is the caller's input, taken for its batch size only. ``values``: the ``call_`` arguments (spec
    values); ``in_shape``/``out_shape``: the traced per-sample shapes."""

    slots: list[tuple[str | None, str]]
    out: int | None
    donor: bool
    values: dict[str, Any] = field(default_factory=dict)
    in_shape: tuple[int, ...] = ()
    out_shape: tuple[int, ...] = ()

    def layout(self) -> tuple[Any, ...]:
        """What every instance sharing one plugin op must have alike (the values may differ)."""
        return (tuple(self.slots), self.out, self.donor)


def batch_value(v: BatchSize) -> str:
    """The spec value of the batch size times ``v.factor``: ``"batch"`` or ``"batch*3"``."""
    return "batch" if v.factor == 1 else f"batch*{v.factor}"


def _spec_value(v: Any, what: str) -> Any:
    """A call's non-tensor argument as a spec value; ValueError when it has none."""
    if isinstance(v, BatchSize):
        return batch_value(v)
    if isinstance(v, str) and _BATCH_RE.fullmatch(v):
        raise ValueError(f"{what} is the string {v!r}, which a bound call reads as the batch size")
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, (list, tuple)) and all(isinstance(x, (bool, int, float)) and not isinstance(x, BatchSize)
                                            for x in v):
        return list(v)
    raise ValueError(f"{what} ({type(v).__name__}) is not a number, string, boolean or list of numbers")


def _names(sig_params: list[str], n_pos: int, kwargs: dict[str, Any]) -> list[str | None]:
    """The forward parameter names of the call's positional arguments (then its keywords)."""
    names: list[str | None] = []
    for i in range(n_pos):
        names.append(sig_params[i] if i < len(sig_params) else None)
    return names + list(kwargs)


def bind_call(forward_params: list[str], args: tuple[Any, ...], kwargs: dict[str, Any],
              out_items: list[str] | None) -> Binding:
    """The :class:`Binding` of a call with ``args``/``kwargs`` (tensors as :class:`TensorArg`, at most one)
    of a forward whose parameters after ``self`` are ``forward_params``; ``out_items``: for a tuple result,
    each item's kind ("tensor" or another), None for a tensor result. ValueError says why it cannot be."""
    names = _names(forward_params, len(args), kwargs)
    slots: list[tuple[str | None, str]] = []
    values: dict[str, Any] = {}
    tensors = 0
    for i, (name, a) in enumerate(zip(names, (*args, *kwargs.values()))):
        kw = name if i >= len(args) else None
        if isinstance(a, TensorArg):
            tensors += 1
            slots.append((kw, "x"))
            continue
        if name is None or not name.isidentifier() or keyword.iskeyword(name) or not name.isascii():
            raise ValueError(f"its argument {i} has no parameter name a spec can write")
        values[CALL_PREFIX + name] = _spec_value(a, f"its argument {name}")
        slots.append((kw, name))
    if tensors > 1:
        raise ValueError("it is called with more than one tensor")
    out = None
    if out_items is not None:
        idx = [k for k, kind in enumerate(out_items) if kind == "tensor"]
        if len(idx) != 1:
            raise ValueError(f"its result holds {len(idx)} tensors (a plugin op gives one)")
        out = idx[0]
    return Binding(slots, out, tensors == 0, values)


#: helpers the plugin file defines once when it has a bound op
BOUND_HELPERS = '''

def _bind(m, cls, values):
    """``m`` as ``cls`` (a subclass of its class whose forward makes the model's call) with its call's values."""
    m.__class__ = cls
    m._archdsl_call = dict(values)
    return m


def _arg(v, x):
    """A bound call's argument: ``"batch"`` / ``"batch*k"`` is the batch size of ``x`` (times k), a list a tuple."""
    if isinstance(v, str) and (v == "batch" or v.startswith("batch*")):
        return x.shape[0] * (int(v[6:]) if v != "batch" else 1)
    return tuple(v) if isinstance(v, list) else v'''


def bound_lines(op_name: str, alias: str, cls_name: str, b: Binding) -> list[str]:
    """The subclass of the kept class (``alias`` in the plugin file) whose ``forward(x)`` makes the model's
    call: ``_<op>_call``. Identifiers only: parameter names are checked by :func:`bind_call`."""
    parts = []
    for kw, kind in b.slots:
        v = "x" if kind == "x" else f"_arg(a[{kind!r}], x)"
        parts.append(f"{kw}={v}" if kw is not None else v)
    shown = ", ".join((f"{kw}=" if kw else "") + ("<tensor>" if kind == "x" else kind) for kw, kind in b.slots)
    pick = "" if b.out is None else f"[{b.out}]"
    what = "its input's batch size" if b.donor else "its input"
    return ["", "",
            f"class _{op_name}_call({alias}):",
            f'    """{cls_name} called as the imported model calls it, forward({shown}), with {what}"""',
            "",
            "    def forward(self, x):",
            "        a = self._archdsl_call",
            f"        return super().forward({', '.join(parts)}){pick}"]


def _mark(e: Exception, sub: Any) -> Exception:
    """``e`` noting the kept class whose call it is about (``kept_class``): an import that kept the class by a
    retry then reports why it tried (the module's own failure), not this."""
    setattr(e, "kept_class", class_name(sub))
    return e


def bound_call(conv: Any, n: Any, sub: Any, args: tuple[Any, ...], kwargs: dict[str, Any], refs: list[Ref],
               val: Val, label: str) -> Any:
    """The converter's (``conv``: :class:`~.convert._Conv`) node for fx call ``n`` of the kept module ``sub``
    called with more than a tensor: a plugin op bound to the call; for a tuple result, the tuple with the op's
    output for its tensor and constants for the rest."""
    import inspect
    items = None if val.kind != "seq" else ["tensor" if i.kind == "tensor" else "other" for i in val.items]
    try:
        b = bind_call(list(inspect.signature(sub.forward).parameters), args, kwargs, items)
    except (ValueError, TypeError) as e:
        raise _mark(conv.fail(n, f"{class_name(sub)} is kept whole but its call is no plugin op: {e}"), sub) from None
    src = refs[0] if refs else Ref(-1)
    out = val.items[b.out] if val.kind == "seq" and b.out is not None else val
    rest = [i for k, i in enumerate(val.items) if k != b.out] if val.kind == "seq" else []
    for what, v in (("its tensor argument", conv.vals[src]), ("its result", out)):
        if v.batch != 0 or v.fold != 1:
            raise _mark(conv.fail(n, f"{class_name(sub)} is kept whole but {what} does not have the batch first"),
                        sub)
    if any(has_tensor(i) for i in rest):
        raise _mark(conv.fail(n, f"{class_name(sub)} is kept whole but its result holds more than one tensor"), sub)
    b.in_shape, b.out_shape = conv.vals[src].sample_shape, out.sample_shape
    r = conv.add(SNode("plugin", class_name(sub), {}, label, [src], module=sub, bound=b), out)
    if val.kind != "seq":
        return r
    return tuple(r if k == b.out else Const(plain(i)) for k, i in enumerate(val.items))
