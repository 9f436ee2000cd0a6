"""Small readers the ops' :class:`~archdsl.ops.core.TorchForm` functions share: a call's argument by position
or name, and the checks that a call works per sample (its batch axis where the module expects it).

Nothing here imports torch: a module instance is read through its attributes only.
"""
from __future__ import annotations

from typing import Any

from .core import REQUIRED, ShapeError, TensorArg, TorchCall

__all__ = ["call_arg", "need_batch_first", "single", "sample_dim_arg", "plain_value"]


def call_arg(c: TorchCall, pos: int, name: str, default: Any = REQUIRED) -> Any:
    """The call's argument ``name``, given at position ``pos`` or by keyword, else ``default`` (a ShapeError
    when the call lacks a required one)."""
    if name in c.kwargs:
        return c.kwargs[name]
    if pos < len(c.args):
        return c.args[pos]
    if default is REQUIRED:
        raise ShapeError(f"the call lacks its argument '{name}'")
    return default


def plain_value(v: Any, name: str) -> Any:
    """``v`` when it is a plain value, a ShapeError when it is a tensor (an argument computed in forward)."""
    if isinstance(v, TensorArg):
        raise ShapeError(f"'{name}' is a tensor computed in forward, not a constant")
    return v


def need_batch_first(c: TorchCall, what: str, k: int = 0) -> None:
    """A module or function that treats dim 0 as the batch (conv, pools, norms) works per sample only when the
    input's batch axis is dim 0."""
    if c.batch_axes[k] != 0:
        raise ShapeError(f"{what} treats dim 0 as the batch, but the batch axis of its input is dim "
                         f"{c.batch_axes[k]}")


def single(v: Any, name: str) -> int:
    """A 1-D module's kernel/stride/padding attribute (``(3,)`` or ``3``) as one integer."""
    if isinstance(v, (tuple, list)):
        if len(v) != 1:
            raise ShapeError(f"{name}={tuple(v)} is not one number")
        v = v[0]
    return int(v)


def sample_dim_arg(c: TorchCall, d: Any, k: int = 0) -> int:
    """A torch dim of input ``k`` as the language writes it: per sample, batch counted as dim 0."""
    if not isinstance(d, int) or isinstance(d, bool):
        raise ShapeError(f"dim {d!r} is not one integer")
    return c.sample_dim(d, k) + 1
