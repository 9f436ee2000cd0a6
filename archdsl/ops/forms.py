"""Small readers the ops' :class:`~archdsl.ops.core.TorchForm` functions share: a call's argument by position
or name, the checks that a call works per sample (its batch axis where the module expects it), kernel sizes
and dims as a spec writes them, and the forms several families use (two tensors, a reduction, no arguments).

Each op's forms are declared in its own registry entry (``torch_forms=`` of its :class:`OpDef`); only the
readers they share live here. A form returns None when the call is not this op (e.g. a ``mul`` by a number
rather than a tensor) and raises ShapeError to say why it cannot be.
Nothing here imports torch: a module instance is read through its attributes only.
"""
from __future__ import annotations

from typing import Any, Callable

from .core import REQUIRED, ShapeError, TensorArg, TorchCall, TorchForm

__all__ = ["call_arg", "need_batch_first", "single", "sample_dim_arg", "plain_value", "Form", "NN", "FN",
           "module_form", "function_form", "method_form", "tensor_count", "is_number", "spec_size", "has_rank",
           "spec_dims", "no_args", "two_tensors", "binary_operands", "reduce_form"]

#: what a form's ``args`` function is
Form = Callable[[TorchCall], "dict[str, Any] | None"]
#: the qualified-name prefixes of torch.nn modules and torch.nn.functional functions
NN = "torch.nn."
FN = "torch.nn.functional."


def module_form(target: str, fn: Form) -> TorchForm:
    """The form of an ``nn.Module`` class (``target`` its qualified name)."""
    return TorchForm("module", target, fn)


def function_form(target: str, fn: Form) -> TorchForm:
    """The form of a function (``target`` its qualified name: "torch.cat", "operator.add")."""
    return TorchForm("function", target, fn)


def method_form(target: str, fn: Form) -> TorchForm:
    """The form of a Tensor method (``target`` its name: "permute")."""
    return TorchForm("method", target, fn)


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


def tensor_count(call: TorchCall) -> int:
    """How many tensor arguments the call has (a list of tensors counts each)."""
    n = 0
    for a in (*call.args, *call.kwargs.values()):
        if isinstance(a, TensorArg):
            n += 1
        elif isinstance(a, (list, tuple)):
            n += sum(isinstance(v, TensorArg) for v in a)
    return n


def is_number(v: Any) -> bool:
    """Whether ``v`` is a plain number (not a bool, not a tensor)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def spec_size(v: Any) -> Any:
    """(3, 3) -> 3, (1, 3) -> [1, 3]: a kernel/stride/padding as a spec writes it."""
    if isinstance(v, (tuple, list)):
        v = list(v)
        return v[0] if len(set(v)) == 1 else v
    return v


def has_rank(call: TorchCall, *ranks: int) -> bool:
    """Whether the call's first input has one of these per-sample ranks (3: [C, H, W])."""
    return bool(call.in_shapes) and len(call.in_shapes[0]) in ranks


def spec_dims(call: TorchCall, dims: Any) -> Any:
    """A torch dim or list of dims of input 0 in the spec's convention (batch is dim 0)."""
    if isinstance(dims, (list, tuple)):
        return [call.spec_dim(d) for d in dims]
    return call.spec_dim(dims)


def no_args(call: TorchCall) -> dict[str, Any] | None:
    """The form of an op without arguments (ReLU, torch.exp, x.contiguous()): every call is the op."""
    return {}


def binary_operands(call: TorchCall) -> tuple[Any, Any]:
    """The two operands of a binary call (``a + b``, ``torch.mul(a, b)``, ``a.div(b)``)."""
    return call.arg(0, "input"), call.arg(1, "other")


def two_tensors(call: TorchCall) -> dict[str, Any] | None:
    """A binary op between two tensors (add, mul, sub, div, matmul); a number operand or an ``alpha`` is not
    this op."""
    a, b = binary_operands(call)
    if not (isinstance(a, TensorArg) and isinstance(b, TensorArg)) or call.kwargs.get("alpha", 1) != 1:
        return None
    return {}


def reduce_form(call: TorchCall) -> dict[str, Any] | None:
    """x.mean/sum/amax/amin(dim, keepdim) and their torch functions: a reduction over given dims (a reduction
    over everything, the batch included, or with a dtype, is not the op)."""
    dim = call.arg(1, "dim", None)
    if dim is None or call.kwargs.get("dtype") is not None:
        return None
    return {"dim": spec_dims(call, dim), "keepdim": bool(call.arg(2, "keepdim", False))}
