"""Values without the batch axis: which values have it, and which ops may mix the two kinds.

A buffer, a parameter stored without the batch axis (``batch_dim=false``) and what is computed from such values
alone have no batch axis (``Node.batched`` False): their shape is the whole tensor's, and dims still count dim
0 as the (absent) batch, so one spelling of an op serves both kinds. Code generation writes them without a
batch axis (:attr:`~archdsl.ops.core.OpDef.unbatched_emit`); see docs/language.md, "Buffers and computation on
parameters".
"""
from __future__ import annotations

from typing import Any, Sequence

from .core import OpDef, Shape, ShapeError

__all__ = ["batched_output", "check_batch_mix"]


def batched_output(d: OpDef, args: dict[str, Any], in_batched: Sequence[bool]) -> bool:
    """Whether the value op ``d`` makes has the batch axis: its ``output_batched`` says so from its args, else
    a source op's value has it and any other op's when one of its data inputs (not those read only for their
    size) has it."""
    if d.output_batched is not None:
        return bool(d.output_batched(args))
    if d.arity == 0:
        return True
    data = in_batched if d.size_inputs_from is None else in_batched[:d.size_inputs_from]
    return any(data) if data else True


def check_batch_mix(d: OpDef, shapes: Sequence[Shape], in_batched: Sequence[bool]) -> None:
    """Raise ShapeError when op ``d`` cannot take these inputs with and without the batch axis together: an
    op without ``mixed_batch`` takes either kind, not both; with it, a value without the batch axis may
    not have more dims than the batched ones where they broadcast (torch lines shapes up from the right,
    batch included)."""
    n = len(in_batched) if d.size_inputs_from is None else min(len(in_batched), d.size_inputs_from)
    for k in d.unbatched_inputs:
        if k < n and in_batched[k]:
            raise ShapeError(f"{d.name}: its input {k + 1} {list(shapes[k])} has the batch axis, but it is one "
                             "tensor for the whole batch (a weight)",
                             hint="compute it from parameters (batch_dim=false) and buffers only")
    with_b = [shapes[k] for k in range(n) if in_batched[k]]
    without = [shapes[k] for k in range(n) if not in_batched[k]]
    if not with_b or not without:
        return
    if not d.mixed_batch:
        raise ShapeError(f"{d.name} combines tensors with the batch axis and tensors without one (a buffer, a "
                         f"batch_dim=false parameter or a value computed from them: {list(without[0])})",
                         hint="expand it over the batch first (a parameter with batch_dim=true), or combine "
                              "them with broadcasting math (add, mul, sub, div, matmul)")
    if d.mixed_batch != "broadcast":
        return
    rank = max(len(s) for s in with_b)
    for s in without:
        if len(s) > rank:
            raise ShapeError(f"{d.name}: {list(s)} (without the batch axis) has more dims than the batched "
                             f"{list(with_b[0])}; torch would line its first dim up with the batch",
                             hint="reshape it to at most as many dims (size-1 dims broadcast)")
