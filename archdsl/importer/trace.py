"""Tracing a PyTorch model for the importer: which modules become blocks, one fx graph per block, and the
value of every graph node at two batch sizes.

The language is per sample, PyTorch code is batched. Every module's forward is run at batch sizes 2 and 3
(:data:`BATCHES`); a tensor's batch axis is the one axis whose size differs between the runs, as ``2k`` and
``3k`` (``k > 1``: the batch is folded into that axis, e.g. windows ``B * nW``), and an integer read from a
shape that differs is a multiple of the batch size (:class:`~archdsl.ops.core.BatchSize`). So a permute
that moves the batch off dim 0 (``qkv.permute(2, 0, 3, 1, 4)``) needs no language change: the importer
knows where the batch is and writes the per-sample op (see :mod:`.convert`).

torch is imported inside the functions only.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import ArchError
from ..ops.core import BatchSize

__all__ = ["BATCHES", "Val", "ModuleInfo", "Traced", "is_container", "class_name", "trace_model", "ImportFailure"]

#: the two batch sizes every forward is run at
BATCHES = (2, 3)


class ImportFailure(Exception):
    """A module the importer cannot express: the enclosing class becomes a plugin or the import fails with
    ``message`` (the module path and class are added by the caller; the source line, when the failure was
    located by :func:`.fallback.locate`, ends the text)."""

    def __str__(self) -> str:
        where = getattr(self, "_archdsl_where", None)
        return super().__str__() + (where.text() if where is not None else "")


@dataclass
class Val:
    """A traced value: a tensor (its batched shape at the first batch size, the batch axis or None for a
    tensor without one, and the fold factor), a number, or a tuple/list of values."""

    kind: str                       # "tensor", "int", "float", "bool", "none", "seq", "other"
    shape: tuple[int, ...] = ()
    batch: int | None = None
    fold: int = 1
    value: Any = None               # a number, a BatchSize, or the first run's object
    items: list["Val"] = field(default_factory=list)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """The per-sample shape (batch axis removed)."""
        if self.batch is None:
            return self.shape
        return self.shape[:self.batch] + self.shape[self.batch + 1:]


def class_name(obj: Any) -> str:
    """The public qualified name of ``obj``'s class: ``torch.nn.Conv2d`` for ``torch.nn.modules.conv.Conv2d``."""
    cls = obj if isinstance(obj, type) else type(obj)
    mod = cls.__module__
    if mod.startswith("torch.nn.modules."):
        import torch.nn as nn
        if getattr(nn, cls.__name__, None) is cls:
            return "torch.nn." + cls.__name__
    return f"{mod}.{cls.__qualname__}"


def is_container(m: Any) -> bool:
    """nn.Sequential itself (not a subclass): a labelled group, not a block."""
    import torch.nn as nn
    return type(m) is nn.Sequential


def _val(a: Any, b: Any) -> Val:
    import torch
    if isinstance(a, torch.Tensor):
        if not isinstance(b, torch.Tensor) or a.dim() != b.dim():
            raise ImportFailure("a tensor changes rank with the batch size")
        diff = [i for i, (x, y) in enumerate(zip(a.shape, b.shape)) if x != y]
        if not diff:
            return Val("tensor", tuple(a.shape), None, value=a)
        if len(diff) == 1:
            i = diff[0]
            x, y = a.shape[i], b.shape[i]
            if x % BATCHES[0] == 0 and y % BATCHES[1] == 0 and x // BATCHES[0] == y // BATCHES[1]:
                return Val("tensor", tuple(a.shape), i, x // BATCHES[0], value=a)
        raise ImportFailure(f"cannot tell the batch axis of a tensor of shape {list(a.shape)}")
    if isinstance(a, bool):
        return Val("bool", value=a)
    if isinstance(a, int):
        if a == b:
            return Val("int", value=a)
        if isinstance(b, int) and a % BATCHES[0] == 0 and b % BATCHES[1] == 0 and a // BATCHES[0] == b // BATCHES[1]:
            return Val("int", value=BatchSize(a // BATCHES[0]))
        raise ImportFailure(f"a size ({a} at batch {BATCHES[0]}, {b} at batch {BATCHES[1]}) is not a multiple "
                            "of the batch")
    if isinstance(a, float):
        return Val("float", value=a)
    if a is None:
        return Val("none")
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)) and len(a) == len(b):
        return Val("seq", items=[_val(x, y) for x, y in zip(a, b)], value=type(a))
    return Val("other", value=a)


@dataclass
class ModuleInfo:
    """What the hooks saw of one module: calls, whether it takes and gives one tensor, its first inputs."""

    path: str
    module: Any
    calls: int = 0
    single: bool = True             # one positional tensor in, one tensor out, no other arguments
    inputs: list[Any] = field(default_factory=list)   # the input tensor at each batch size
    out_shape: tuple[int, ...] | None = None          # the per-sample output shape (one tensor out)


@dataclass
class Traced:
    """One module traced as a block body: its fx graph module and the value of every node."""

    path: str
    module: Any
    gm: Any
    vals: dict[str, Val]
    in_shape: tuple[int, ...]


def _record(model: Any, example: Any) -> dict[int, ModuleInfo]:
    import torch
    infos: dict[int, ModuleInfo] = {}
    for path, m in model.named_modules(remove_duplicate=False):
        if id(m) in infos:
            infos[id(m)].calls = -1000      # shared: reached under two paths
            continue
        infos[id(m)] = ModuleInfo(path, m)
    handles = []
    run = [0]

    def pre(m: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        info = infos[id(m)]
        if run[0] == 0:
            info.calls += 1
        ok = (len(args) == 1 and isinstance(args[0], torch.Tensor)
              and all(v is None or isinstance(v, (bool, int, float)) for v in kwargs.values()) and not kwargs)
        info.single = info.single and ok
        if ok and len(info.inputs) == run[0]:
            info.inputs.append(args[0].detach().clone())

    def post(m: Any, args: tuple[Any, ...], out: Any) -> None:
        if not isinstance(out, torch.Tensor):
            infos[id(m)].single = False
        else:
            infos[id(m)].out_shape = tuple(out.shape[1:])

    for info in infos.values():
        handles.append(info.module.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(info.module.register_forward_hook(post))
    try:
        with torch.no_grad():
            for i, b in enumerate(BATCHES):
                run[0] = i
                model(_batched(example, b))
    finally:
        for h in handles:
            h.remove()
    return infos


def _batched(example: Any, b: int) -> Any:
    """The example (one sample, with a batch axis of 1) repeated to batch ``b`` with distinct samples."""
    import torch
    g = torch.Generator().manual_seed(b)
    return torch.randn((b, *example.shape[1:]), generator=g, dtype=example.dtype)


class _Recorder:
    """Runs a graph module on an input and keeps every node's output."""

    def __init__(self, gm: Any) -> None:
        import torch.fx as fx

        class Interp(fx.Interpreter):   # type: ignore[misc]
            def __init__(self, gm: Any) -> None:
                super().__init__(gm)
                self.seen: dict[str, Any] = {}

            def run_node(self, n: Any) -> Any:
                out = super().run_node(n)
                self.seen[n.name] = out
                return out
        self.interp = Interp(gm)

    def run(self, x: Any) -> dict[str, Any]:
        import torch
        self.interp.seen = {}
        with torch.no_grad():
            self.interp.run(x)
        return dict(self.interp.seen)


def trace_model(model: Any, example: Any, *, leaf: Callable[[Any], bool],
                on_fail: Callable[[str, Any, str, Any], None]) -> tuple[dict[int, ModuleInfo], dict[str, Traced]]:
    """Trace every module of ``model`` that becomes a block or group body.

    ``leaf(m)`` says whether a module is an op or a plugin (never traced into). A non-leaf module called
    with one tensor that gives one tensor is traced on its own; any other is traced through as part of
    its parent. ``on_fail(path, module, why, where)`` is told of a module fx cannot trace (the caller keeps
    it as a plugin or reports it; ``where``: the :class:`~.fallback.Where` of the failing code). Returns the
    hook records and the traced bodies by module path.
    """
    import torch.fx as fx

    from .fallback import mark_node, note_module, where_traced
    model.eval()
    infos = _record(model, example)
    root = infos[id(model)]
    if not root.single:
        raise ArchError(f"the model's forward must take one tensor and return one tensor ({class_name(model)})",
                        None, hint="wrap it in a module whose forward does")
    bodies: dict[str, Traced] = {}

    def inline(m: Any) -> bool:
        info = infos.get(id(m))
        return info is not None and not leaf(m) and not (info.single and info.calls == 1)

    class Tracer(fx.Tracer):    # type: ignore[misc]
        def is_leaf_module(self, m: Any, qualname: str) -> bool:
            return not inline(m)

        def call_module(self, m: Any, forward: Any, args: Any, kwargs: Any) -> Any:
            try:
                return super().call_module(m, forward, args, kwargs)
            except Exception as e:      # the innermost module traced through names the failure
                note_module(e, self.path_of_module(m), class_name(m))
                raise

        def create_node(self, *args: Any, **kwargs: Any) -> Any:
            node = super().create_node(*args, **kwargs)
            mark_node(node)
            return node

    pending = [model]
    while pending:
        m = pending.pop(0)
        info = infos[id(m)]
        if info.calls == 0:
            continue
        try:
            sig = inspect.signature(m.forward)
            concrete = {k: p.default for i, (k, p) in enumerate(sig.parameters.items())
                        if i > 0 and p.default is not inspect.Parameter.empty}
            try:
                graph = Tracer().trace(m, concrete_args=concrete or None)
            except Exception:   # noqa: BLE001 - control flow on sizes: trace again at the real shapes
                graph = _trace_concrete(Tracer, m, info.inputs, concrete)
            gm = fx.GraphModule(m, graph)
            rec = _Recorder(gm)
            runs = [rec.run(x) for x in info.inputs]
            vals = {n.name: _val(runs[0][n.name], runs[1][n.name]) for n in graph.nodes if n.name in runs[0]}
        except ImportFailure as e:
            on_fail(info.path, m, e.args[0] if e.args else str(e), where_traced(e).under(info.path, class_name(m)))
            continue
        except Exception as e:     # fx's TraceError, a TypeError from a Proxy in control flow, ...
            on_fail(info.path, m, _why(e), where_traced(e).under(info.path, class_name(m)))
            continue
        bodies[info.path] = Traced(info.path, m, gm, vals, tuple(info.inputs[0].shape[1:]))
        for n in graph.nodes:
            if n.op == "call_module":
                sub = gm.get_submodule(n.target)
                if not leaf(sub):
                    pending.append(sub)
    return infos, bodies


def _trace_concrete(tracer: type, m: Any, inputs: list[Any], concrete: dict[str, Any]) -> Any:
    """The graph of ``m`` traced on its real inputs (:mod:`.concrete`: conditions on sizes take the branch
    the run takes) at both batch sizes, which must give the same graph."""
    from .concrete import DataDependent, concrete_tracer
    from .fallback import locate, where_traced
    graphs = []
    for x in inputs:
        try:
            graphs.append(concrete_tracer(tracer, m, x, concrete).trace(m, concrete_args=concrete or None))
        except DataDependent as e:
            raise locate(ImportFailure(str(e)), where_traced(e)) from None
    if len(graphs) > 1 and str(graphs[0]) != str(graphs[1]):
        raise ImportFailure("data-dependent control flow (the forward takes other branches at batch sizes "
                            f"{BATCHES[0]} and {BATCHES[1]})")
    return graphs[0]


def _why(e: Exception) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if "control flow" in text or "iterate" in text or "bool" in text.lower():
        return f"data-dependent control flow ({text})"
    return text
