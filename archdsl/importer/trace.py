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

__all__ = ["BATCHES", "Val", "ModuleInfo", "Traced", "is_container", "class_name", "trace_model", "ImportFailure",
           "at_defaults"]

#: the two batch sizes every forward is run at
BATCHES = (2, 3)
#: from this many parameters on, the hooks' pass runs on fake tensors (_record)
FAKE_PARAMS = 30_000_000


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
    single: bool = True             # one positional tensor in, one tensor out, other arguments at their defaults
    inputs: list[Any] = field(default_factory=list)   # the input at each batch size (a meta tensor: its shape)
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
    """What the hooks see of every module at both batch sizes: shapes only, so a large model runs on fake
    tensors (no arithmetic: a 632M-parameter ViT's pass takes seconds, not minutes) where it can, else on
    real ones (a forward that reads a value, ``if x.max() > 0``, or an op without a fake kernel). A small
    model runs on real ones: fake tensors cost more per op than its arithmetic."""
    if sum(p.numel() for p in model.parameters()) < FAKE_PARAMS:
        return _record_run(model, example, None)
    try:
        from torch._subclasses.fake_tensor import FakeTensorMode
        return _record_run(model, example, FakeTensorMode(allow_non_fake_inputs=True))
    except Exception:           # noqa: BLE001 - whatever fails on fake tensors runs on real ones
        return _record_run(model, example, None)


def _record_run(model: Any, example: Any, mode: Any) -> dict[int, ModuleInfo]:
    import contextlib

    import torch
    infos: dict[int, ModuleInfo] = {}
    for path, m in model.named_modules(remove_duplicate=False):
        if id(m) in infos:
            infos[id(m)].calls = -1000      # shared: reached under two paths
            continue
        infos[id(m)] = ModuleInfo(path, m)
    handles = []
    run = [0]
    shapes: dict[int, list[tuple[tuple[int, ...], Any]]] = {}

    def pre(m: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        info = infos[id(m)]
        if run[0] == 0:
            info.calls += 1
        ok = len(args) >= 1 and isinstance(args[0], torch.Tensor) and at_defaults(m, args[1:], kwargs)
        info.single = info.single and ok
        seen = shapes.setdefault(id(m), [])
        if ok and len(seen) == run[0]:
            seen.append((tuple(int(d) for d in args[0].shape), args[0].dtype))

    def post(m: Any, args: tuple[Any, ...], out: Any) -> None:
        if not isinstance(out, torch.Tensor):
            infos[id(m)].single = False
        else:
            infos[id(m)].out_shape = tuple(int(d) for d in out.shape[1:])

    for info in infos.values():
        handles.append(info.module.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(info.module.register_forward_hook(post))
    try:
        inputs = [_batched(example, b) for b in BATCHES]
        with torch.no_grad(), mode if mode is not None else contextlib.nullcontext():
            for i, x in enumerate(inputs):
                run[0] = i
                try:
                    model(x)
                except Exception as e:  # noqa: BLE001 - the model's own check (its input size): no archc bug
                    raise ArchError(f"the model ({class_name(model)}) fails on an input of shape "
                                    f"{list(x.shape)}: {type(e).__name__}: {e}", None,
                                    hint="give --input a shape the model takes (timm: --arg img_size=N builds "
                                         "it for another size)") from None
    finally:
        for h in handles:
            h.remove()
    # the inputs' shapes as meta tensors (no data: the bodies are run again inside their parents, trace_model)
    for key, seen in shapes.items():
        infos[key].inputs = [torch.empty(shape, dtype=dtype, device="meta") for shape, dtype in seen]
    return infos


def at_defaults(m: Any, rest: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """A call of ``m`` that passes, besides its first tensor, only values equal to ``m.forward``'s defaults
    (``blk(x, shared_rel_pos_bias=None)``): the same as ``m(x)``, so ``m`` is traced as a block of its own
    (at those defaults) rather than through, as part of its caller."""
    if not rest and not kwargs:
        return True
    try:
        params = list(inspect.signature(m.forward).parameters.values())
    except (TypeError, ValueError):
        return False
    if len(rest) > len(params) - 1 or any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params[:len(rest) + 1]):
        return False
    named = {p.name: p for p in params[1:]}
    given = [(p, v) for p, v in zip(params[1:], rest)] + [(named.get(k), v) for k, v in kwargs.items()]
    return all(p is not None and _same_default(p.default, v) for p, v in given)


def _same_default(default: Any, v: Any) -> bool:
    if v is None or default is None:
        return v is None and default is None
    return type(v) in (bool, int, float) and type(v) is type(default) and v == default


def _batched(example: Any, b: int) -> Any:
    """The example (one sample, with a batch axis of 1) repeated to batch ``b`` with distinct samples."""
    import torch
    g = torch.Generator().manual_seed(b)
    return torch.randn((b, *example.shape[1:]), generator=g, dtype=example.dtype)


class _Runs:
    """The model run at each batch size with every body's graph interpreted inside its parent's (so every
    forward runs once per batch size; running each body on its own recorded input ran a deep model once per
    level of nesting), the value of each body's nodes kept: the first run's, then the :class:`Val` of both."""

    def __init__(self, graphs: dict[int, Any]) -> None:
        self.graphs = graphs
        self.first: dict[int, dict[str, Any]] = {}      # id(module) -> node -> value at BATCHES[0]
        self.vals: dict[int, dict[str, Val] | str] = {}  # id(module) -> node values, or why they are not
        self.failed: dict[int, str] = {}                # id(module) -> why its graph does not run

    def run(self, model: Any, example: Any) -> None:
        import torch
        for k, b in enumerate(BATCHES):
            with torch.no_grad():
                self.body(model, (_batched(example, b),), {}, k)

    def body(self, m: Any, args: tuple[Any, ...], kwargs: dict[str, Any], k: int) -> Any:
        import torch.fx as fx
        runs = self
        seen: dict[str, Any] = {}

        class Interp(fx.Interpreter):   # type: ignore[misc]
            def run_node(self, n: Any) -> Any:
                out = super().run_node(n)
                seen[n.name] = out
                return out

            def call_module(self, target: Any, a: tuple[Any, ...], kw: dict[str, Any]) -> Any:
                sub = self.fetch_attr(target)
                # a body was traced with its other arguments at their defaults (at_defaults): run on its tensor
                if id(sub) in runs.graphs and id(sub) not in runs.failed and a and at_defaults(sub, a[1:], kw):
                    return runs.body(sub, a[:1], {}, k)
                return super().call_module(target, a, kw)
        try:
            out = Interp(self.graphs[id(m)]).run(*args, **kwargs)
        except Exception as e:     # the graph fails where the module ran (fx's view of it differs)
            self.failed[id(m)] = _why(e)
            return m(*args, **kwargs)
        if k == 0:
            self.first[id(m)] = seen
            return out
        first = self.first.pop(id(m), None)
        if first is not None:
            try:
                self.vals[id(m)] = {name: _val(first[name], seen[name]) for name in first if name in seen}
            except ImportFailure as e:
                self.vals[id(m)] = str(e)
        return out


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

    from .fallback import Where, mark_node, note_module, where_traced
    model.eval()
    infos = _record(model, example)
    root = infos[id(model)]
    if not root.single:
        raise ArchError(f"the model's forward must take one tensor and return one tensor ({class_name(model)})",
                        None, hint="wrap it in a module whose forward does")

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

    # every body's graph (symbolic tracing is cheap), breadth first: a body's children after it
    graphs: dict[int, Any] = {}
    failed: dict[int, tuple[str, Any]] = {}     # id(module) -> (why, where)
    order: list[tuple[Any, Any]] = []     # (module, its parent body or None)
    pending: list[tuple[Any, Any]] = [(model, None)]
    while pending:
        m, parent = pending.pop(0)
        info = infos[id(m)]
        if info.calls == 0:
            continue
        order.append((m, parent))
        try:
            sig = inspect.signature(m.forward)
            concrete = {k: p.default for i, (k, p) in enumerate(sig.parameters.items())
                        if i > 0 and p.default is not inspect.Parameter.empty}
            try:
                graph = _trace(Tracer, m, concrete)
            except Exception:   # noqa: BLE001 - control flow on sizes: trace again at the real shapes
                graph = _trace_concrete(Tracer, m, info.inputs, concrete)
            graphs[id(m)] = fx.GraphModule(m, graph)
        except ImportFailure as e:
            failed[id(m)] = (e.args[0] if e.args else str(e), where_traced(e).under(info.path, class_name(m)))
            continue
        except Exception as e:     # fx's TraceError, a TypeError from a Proxy in control flow, ...
            failed[id(m)] = (_why(e), where_traced(e).under(info.path, class_name(m)))
            continue
        for n in graph.nodes:
            if n.op == "call_module":
                sub = graphs[id(m)].get_submodule(n.target)
                if not leaf(sub):
                    pending.append((sub, m))
    runs = _Runs(graphs)
    runs.run(model, example)
    # the bodies in the same order; a module inside one that failed is not reported (its parent is kept)
    bodies: dict[str, Traced] = {}
    done: set[int] = set()
    for m, parent in order:
        if parent is not None and id(parent) not in done:
            continue
        info = infos[id(m)]
        if id(m) in failed:
            on_fail(info.path, m, *failed[id(m)])
            continue
        vals = runs.vals.get(id(m), "the module was not run by its parent's graph")
        why = runs.failed.get(id(m)) or (vals if isinstance(vals, str) else None)
        if why is not None or isinstance(vals, str):
            on_fail(info.path, m, why or str(vals), Where(info.path, class_name(m)))
            continue
        bodies[info.path] = Traced(info.path, m, graphs[id(m)], vals, tuple(info.inputs[0].shape[1:]))
        done.add(id(m))
    return infos, bodies


def _trace(tracer: Any, m: Any, concrete: dict[str, Any]) -> Any:
    """``m``'s graph with its buffers read as ``get_attr`` nodes (``self.index.view(-1)`` a call on the buffer,
    not a tensor constant computed at trace time that no spec value could name); a forward whose control
    flow reads a buffer is traced again with buffers as the tensors they hold."""
    t = tracer()
    t.proxy_buffer_attributes = True
    try:
        return t.trace(m, concrete_args=concrete or None)
    except Exception:       # control flow on a buffer: the plain trace (its failure is the one reported)
        return tracer().trace(m, concrete_args=concrete or None)


def _trace_concrete(tracer: type, m: Any, inputs: list[Any], concrete: dict[str, Any]) -> Any:
    """The graph of ``m`` traced on real inputs of its recorded shapes (:mod:`.concrete`: conditions on sizes
    take the branch the run takes) at both batch sizes, which must give the same graph. The recorded inputs
    are shapes only (meta tensors); a condition on values is refused whatever the values, so random ones do."""
    import torch

    from .concrete import DataDependent, concrete_tracer
    from .fallback import locate, where_traced
    graphs = []
    for k, x in enumerate(inputs):
        g = torch.Generator().manual_seed(k)
        real = (torch.randn(x.shape, generator=g, dtype=x.dtype) if x.dtype.is_floating_point
                else torch.zeros(x.shape, dtype=x.dtype))
        try:
            graphs.append(concrete_tracer(tracer, m, real, concrete).trace(m, concrete_args=concrete or None))
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
