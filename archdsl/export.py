"""Export a built model to ONNX with the spec's names: the input is ``x``, the outputs carry the names the spec
gives them (the keys of a dict-output network such as a backbone's ``c2..c5``), and the batch axis is dynamic.

torch (and, for the default ``dynamo=True`` exporter, ``onnxscript``) is imported only when a model is exported.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import ArchError

__all__ = ["output_names", "to_onnx"]


def output_names(out: Any) -> list[str]:
    """The names the ONNX outputs get for a forward result ``out``: a dict's keys in order (the spec's output
    names), ``output`` for one tensor, ``output_0``, ``output_1``, ... for a tuple/list."""
    if isinstance(out, Mapping):
        return [str(k) for k in out]
    if isinstance(out, (tuple, list)):
        return [f"output_{i}" for i in range(len(out))]
    return ["output"]


def _example(model: Any, example: Any) -> Any:
    import torch
    if example is not None:
        return example
    shape = getattr(model, "input_shape", None)
    if not shape:
        raise ArchError("to_onnx: the model has no 'input_shape' attribute (not built by archdsl?): pass "
                        "example=torch.randn(batch, *shape)", None)
    # batch 2, not 1: an exporter may specialise a size-1 axis to a constant and so lose the dynamic batch
    return torch.randn(2, *shape)


def to_onnx(model: Any, path: str | os.PathLike[str], example: Any = None, *, dynamic_batch: bool = True,
            input_names: Sequence[str] | None = None, names: Sequence[str] | None = None, dynamo: bool = True,
            **kw: Any) -> list[str]:
    """Write ``model`` (in eval mode) as an ONNX file at ``path`` and return its output names.

    ``example`` is the input to trace with (default: a batch of 2 of the model's ``input_shape``). Input names
    default to ``x`` (``x0``, ``x1``, ... for a tuple ``example``); output names come from the model's forward
    result (:func:`output_names`), or ``names``. With ``dynamic_batch`` axis 0 of every input and output is
    dynamic (``batch``). ``dynamo`` picks torch's exporter (``True``: the torch.export one, needs
    ``onnxscript``; ``False``: the TorchScript one). The weights are stored inside the file, which is written
    to a temporary name in the same folder and renamed into place, so a failed export leaves nothing behind
    and never a half-written file; an existing ``path`` that is not a regular file (a device, a FIFO) is
    refused before anything is traced. Other keywords go to :func:`torch.onnx.export` (e.g. ``opset_version``).
    """
    from .fsutil import output_problem
    problem = output_problem(path)
    if problem is not None:   # the rename below would replace a device or FIFO node with a regular file
        raise ArchError(f"to_onnx: '{path}' exists and {problem}; refusing to replace it", None)
    import torch
    if dynamo:
        try:
            import onnxscript  # noqa: F401  (torch's dynamo exporter needs it; say so before tracing)
        except ImportError:
            raise ArchError("to_onnx: torch's default (dynamo) ONNX exporter needs the 'onnxscript' package: "
                            "pip install onnxscript, or pass dynamo=False for the TorchScript exporter",
                            None) from None
    args = _example(model, example)
    args = tuple(args) if isinstance(args, (tuple, list)) else (args,)
    ins = list(input_names) if input_names is not None else (["x"] if len(args) == 1 else
                                                              [f"x{i}" for i in range(len(args))])
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            outs = list(names) if names is not None else output_names(model(*args))
        if dynamic_batch:
            if dynamo:
                batch = torch.export.Dim("batch")
                kw.setdefault("dynamic_shapes", tuple({0: batch} for _ in args))
            else:
                kw.setdefault("dynamic_axes", {n: {0: "batch"} for n in [*ins, *outs]})
        if dynamo:
            kw.setdefault("external_data", False)   # one self-contained file: the rename below moves it all
        dest = Path(path)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        try:
            torch.onnx.export(model, args, str(tmp), input_names=ins, output_names=outs, dynamo=dynamo, **kw)
            os.replace(tmp, dest)
        finally:
            if tmp.exists():
                tmp.unlink()
    finally:
        model.train(was_training)
    return outs
