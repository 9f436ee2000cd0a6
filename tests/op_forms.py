"""Test helpers for the ops' PyTorch spellings (``OpDef.torch_forms``): find a form, call it on a hand-made
:class:`~archdsl.ops.core.TorchCall`, and write the op call it returns as spec text, so a test can build the
op from a real torch module's settings and compare it with that module."""
from __future__ import annotations

from typing import Any

from archdsl.ops import OPS
from archdsl.ops.core import TensorArg, TorchCall, TorchForm


def form(op: str, kind: str, target: str) -> TorchForm:
    """The form of ``op`` for ``kind``/``target`` (fails the test when the op lacks it)."""
    forms = [f for f in OPS[op].torch_forms if (f.kind, f.target) == (kind, target)]
    assert len(forms) == 1, f"{op} has {len(forms)} forms {kind} {target}: {OPS[op].torch_forms}"
    return forms[0]


def call(in_shapes: list[tuple[int, ...]], module: Any = None, args: tuple[Any, ...] = (),
         kwargs: dict[str, Any] | None = None, batch_axes: list[int] | None = None) -> TorchCall:
    """A TorchCall as the importer builds it; a module call gets its tensor inputs as ``args`` by default."""
    if module is not None and not args:
        args = tuple(TensorArg(k) for k in range(len(in_shapes)))
    return TorchCall(module, args, kwargs or {}, [tuple(s) for s in in_shapes],
                     batch_axes if batch_axes is not None else [0] * len(in_shapes))


def lit(v: Any) -> str:
    """A Python value as a spec literal."""
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(lit(x) for x in v) + "]"
    return repr(v)


def op_call(op: str, args: dict[str, Any]) -> str:
    """``op(k=v, ...)`` as spec text."""
    return f"{op}(" + ", ".join(f"{k}={lit(v)}" for k, v in args.items()) + ")"
