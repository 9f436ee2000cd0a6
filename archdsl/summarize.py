"""``archdsl.summary``: the summary of a spec or of any ``nn.Module`` (a torchvision, timm or modified model).

The module is traced with torch.fx and run once on a zero batch (shape propagation). Each call of the traced
graph is a row, named as torchvision's ``create_feature_extractor`` names the step: a leaf module by its
path (``layer1.0.conv1``), any other call by its module's path, a dot and the function (``layer1.0.relu``,
``_1``... for the next uses in the same module). Counts come from the module itself: parameters (trainable or
not) and buffers (``model.buffers()``); MACs are counted as fvcore counts them (convolutions, linear layers,
matrix products, attention), for the whole batch. A spec is built first and summarized the same way, so the
rows of ``archdsl.summary("resnet50")`` are the built model's. ``archc summary`` (torch-free) reads the IR
instead: see :mod:`archdsl.passes.summary`.
"""
from __future__ import annotations

import json
import math
import re
import textwrap
from dataclasses import dataclass, field
from typing import Any, Sequence

from .errors import ArchError
from .passes.summary import dtype_bytes, format_count, format_mb

__all__ = ["Summary", "summary"]


@dataclass
class Summary:
    """What :func:`summary` returns: ``rows`` (one dict per step), ``totals``, ``str(s)`` / :meth:`table`,
    :meth:`to_json`."""

    title: str
    input_size: list[int]
    rows: list[dict[str, Any]]
    totals: dict[str, Any]
    depth: int | None = None
    columns: int | None = 80
    memory: dict[str, Any] = field(default_factory=dict)

    def table(self, columns: int | None = None) -> str:
        """The table as plain text no wider than ``columns`` (default: the summary's; None: unlimited)."""
        return _table(self, self.columns if columns is None else columns)

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.title, "input_size": self.input_size, "depth": self.depth, "rows": self.rows,
                "totals": self.totals, "memory": self.memory}

    def to_json(self, indent: int | None = 2) -> str:
        """The summary as JSON (exact integers)."""
        return json.dumps(self.to_dict(), indent=indent)

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        t = self.totals
        return (f"<Summary {self.title}: {t['params']:,} params, {t['macs']:,} MACs, {len(self.rows)} rows; "
                "print() it for the table>")

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:   # IPython shows the table
        p.text(self.table())


def _qualname(scope: str, node: Any, taken: list[str]) -> str:
    """torchvision's feature-extraction name of an fx node (its NodePathTracer rule)."""
    if node.op == "call_module":
        name = str(node.target)
    else:
        name = (scope + "." if scope else "") + str(node.name)
        if re.match(r".+_[0-9]+$", name) is not None:   # fx's global suffix: made local to the module below
            name = name.rsplit("_", 1)[0]
    for prev in reversed(taken):
        if re.match(re.escape(name) + r"(_[0-9]+)?$", prev) is not None:
            post = prev[len(name):]
            name += f"_{int(post[1:]) + 1 if post else 1}"
            break
    return name


def _trace(model: Any) -> tuple[Any, dict[Any, str]]:
    import torch.fx

    class Tracer(torch.fx.Tracer):
        def __init__(self) -> None:
            super().__init__()
            self.cur = ""
            self.names: dict[Any, str] = {}

        def is_leaf_module(self, m: Any, qualname: str) -> bool:
            # torch.nn's modules, and any module without children (torchvision's Permute, timm's
            # LayerScale): one row each, as torchinfo has, named by its path
            return super().is_leaf_module(m, qualname) or (m is not model and next(m.children(), None) is None)

        def call_module(self, m: Any, forward: Any, args: Any, kwargs: Any) -> Any:
            old = self.cur
            self.cur = self.path_of_module(m)
            try:
                return super().call_module(m, forward, args, kwargs)
            finally:
                self.cur = old

        def create_node(self, *args: Any, **kwargs: Any) -> Any:
            node = super().create_node(*args, **kwargs)
            if node.op in ("call_module", "call_function", "call_method"):
                self.names[node] = _qualname(self.cur, node, list(self.names.values()))
            return node

    tracer = Tracer()
    try:
        graph = tracer.trace(model)
    except Exception as e:   # a module fx cannot trace (data-dependent control flow): say so
        raise ArchError(f"cannot trace {type(model).__name__} with torch.fx: {type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''}", None,
                        hint="summarize a traceable module (or its traceable parts)") from None
    gm = torch.fx.GraphModule(tracer.root, graph)
    return gm, tracer.names


def _shape(v: Any) -> list[int] | None:
    meta = getattr(v, "meta", {}).get("tensor_meta") if hasattr(v, "meta") else None
    if meta is None or not hasattr(meta, "shape"):
        return None
    return [int(d) for d in meta.shape]


def _out_shape(node: Any) -> Any:
    meta = node.meta.get("tensor_meta")
    if meta is None:
        return None
    if hasattr(meta, "shape"):
        return [int(d) for d in meta.shape]
    if isinstance(meta, (tuple, list)):   # several outputs: their shapes
        return [[int(d) for d in m.shape] for m in meta if hasattr(m, "shape")]
    return None


def _macs(node: Any, mod: Any) -> int:
    """MACs of one fx node as fvcore counts them (conv, linear, matmul/bmm, scaled_dot_product_attention)."""
    import operator

    import torch
    import torch.nn.functional as F
    out = _out_shape(node)
    if not out or not isinstance(out[0], int):
        return 0
    n_out = math.prod(out)
    ins = [_shape(a) for a in node.args]
    if node.op == "call_module":
        if isinstance(mod, torch.nn.modules.conv._ConvNd):
            k = math.prod(mod.kernel_size)
            if mod.transposed:
                return math.prod(ins[0] or [0]) * mod.out_channels // mod.groups * k
            return n_out * (mod.in_channels // mod.groups) * k
        if isinstance(mod, torch.nn.Linear):
            return n_out * mod.in_features
        return 0
    target = node.target
    if target in (torch.matmul, operator.matmul, torch.bmm, torch.mm, "matmul", "bmm", "mm", "__matmul__"):
        a = ins[0] if ins else None
        return n_out * a[-1] if a else 0
    if target is F.linear and ins and ins[0]:
        return n_out * ins[0][-1]
    if target in (F.conv1d, F.conv2d, F.conv3d) and len(ins) > 1 and ins[1]:
        w = ins[1]
        return n_out * math.prod(w[1:])
    if target is F.scaled_dot_product_attention and len(ins) >= 3 and ins[0] and ins[1]:
        q, key = ins[0], ins[1]
        return math.prod(out[:-2]) * q[-2] * key[-2] * (q[-1] + out[-1])
    return 0


def _kind(node: Any, mod: Any) -> str:
    if node.op == "call_module":
        return type(mod).__name__
    t = node.target
    return t if isinstance(t, str) else getattr(t, "__name__", str(t))


def summary(obj: Any, input_size: Sequence[int] | None = None, *, depth: int | None = None, batch: int = 1,
            dtype: str = "float32", columns: int | None = 80, **params: Any) -> Summary:
    """Summarize ``obj``: a spec (``"resnet50"``, ``"file.arch:net"``, spec text) or any ``nn.Module``.

    ``input_size``: one sample's shape (``(3, 224, 224)``; a spec's default is its input), run at ``batch``
    samples. ``depth``: rows down to that many levels of the module tree (deeper steps folded into their
    module's row, with its totals); None: every step. ``columns``: the width of the text table (80: the
    narrow layout). ``params`` override a spec's parameters (``num_classes=10``).
    Returns a :class:`Summary` (``print(s)``, ``s.rows``, ``s.totals``, ``s.to_json()``)."""
    import torch
    from torch.fx.passes.shape_prop import ShapeProp
    if batch < 1:
        raise ArchError(f"batch must be at least 1, got {batch}", None)
    item = dtype_bytes(dtype)
    title = type(obj).__name__
    if isinstance(obj, str):
        from .codegen.build import instantiate
        from .pipeline import compile_graph
        g = compile_graph(obj, params, input_shape=tuple(input_size) if input_size is not None else None)
        title, input_size = (obj if "\n" not in obj else g.name), list(g.input_shape)
        obj = instantiate(g)
    elif params:
        raise ArchError(f"parameters {sorted(params)} apply to a spec, not to an nn.Module", None)
    if not isinstance(obj, torch.nn.Module):
        raise ArchError(f"summary takes a spec or an nn.Module, not {type(obj).__name__}", None)
    if input_size is None:
        input_size = getattr(obj, "input_shape", None)
        if input_size is None:
            raise ArchError(f"say the input size of {title}: summary(model, input_size=(3, 224, 224))", None)
    gm, names = _trace(obj)
    p = next(obj.parameters(), None)
    x = torch.zeros((batch, *input_size), dtype=p.dtype if p is not None and p.is_floating_point() else torch.float32,
                    device=p.device if p is not None else "cpu")
    was = obj.training
    gm.eval()
    with torch.no_grad():
        ShapeProp(gm).propagate(x)
    gm.train(was)
    mods = dict(obj.named_modules())
    rows: list[dict[str, Any]] = []
    for node in gm.graph.nodes:
        if node not in names or _out_shape(node) is None:   # no tensor out (the input guard): not a step
            continue
        mod = mods.get(str(node.target)) if node.op == "call_module" else None
        own = list(mod.parameters()) if mod is not None else []
        rows.append({"name": names[node], "type": _kind(node, mod), "output_size": _out_shape(node),
                     "params": sum(t.numel() for t in own),
                     "trainable": sum(t.numel() for t in own if t.requires_grad),
                     "buffers": sum(b.numel() for b in mod.buffers()) if mod is not None else 0,
                     "macs": _macs(node, mod), "depth": names[node].count(".") + 1})
    total = sum(t.numel() for t in obj.parameters())
    trainable = sum(t.numel() for t in obj.parameters() if t.requires_grad)
    buffers = list(obj.buffers())
    macs = sum(r["macs"] for r in rows)
    param_bytes = sum(t.numel() * t.element_size() for t in obj.parameters())
    buffer_bytes = sum(b.numel() * b.element_size() for b in buffers)
    acts = sum(math.prod(r["output_size"]) * item for r in rows
               if r["output_size"] and isinstance(r["output_size"][0], int))
    memory = {"dtype": dtype, "input": batch * math.prod(input_size) * item, "activations": acts,
              "params": param_bytes, "buffers": buffer_bytes}
    memory["total"] = sum(memory[k] for k in ("input", "activations", "params", "buffers"))
    totals = {"params": total, "trainable": trainable, "non_trainable": total - trainable,
              "buffers": sum(b.numel() for b in buffers), "macs": macs, "macs_per_sample": macs // batch,
              "rows": len(rows), "param_bytes": param_bytes}
    if depth is not None:
        rows = _fold(rows, depth, {k: type(v).__name__ for k, v in mods.items()})
    return Summary(title, [batch, *input_size], rows, totals, depth, columns, memory)


def _fold(rows: list[dict[str, Any]], depth: int, types: dict[str, str]) -> list[dict[str, Any]]:
    """Rows deeper than ``depth`` summed into the row of their ancestor at ``depth`` (its last output)."""
    if depth < 1:
        raise ArchError(f"depth must be 1 or more, got {depth}", None)
    out: list[dict[str, Any]] = []
    index: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r["depth"] <= depth:
            out.append(dict(r))
            continue
        key = ".".join(r["name"].split(".")[:depth])
        agg = index.get(key)
        if agg is None:
            agg = index[key] = {"name": key, "type": types.get(key, "(module)"), "output_size": None, "params": 0, "trainable": 0,
                                "buffers": 0, "macs": 0, "depth": depth}
            out.append(agg)
        for k in ("params", "trainable", "buffers", "macs"):
            agg[k] += r[k]
        agg["output_size"] = r["output_size"]
    return out


def _table(s: Summary, columns: int | None) -> str:
    heads = ["type", "output", "params", "MACs"]

    def shape(v: Any) -> str:
        if not v:
            return ""
        if isinstance(v[0], list):
            return ", ".join("x".join(map(str, x)) for x in v)
        return "x".join(map(str, v))

    body = [[r["type"], shape(r["output_size"]), f"{r['params']:,}" if r["params"] else "",
             format_count(r["macs"]) if r["macs"] else ""] for r in s.rows]
    widths = [max([len(h)] + [len(b[k]) for b in body]) for k, h in enumerate(heads)]
    rest = sum(widths) + 2 * len(widths)
    name_w = max([len("layer")] + [len(r["name"]) for r in s.rows])
    if columns is not None:
        name_w = max(len("layer"), min(name_w, columns - rest))

    def line(name: str, vals: list[str]) -> str:
        parts = [name.ljust(name_w), vals[0].ljust(widths[0])] + [v.rjust(w) for v, w in zip(vals[1:], widths[1:])]
        return "  ".join(parts).rstrip()

    out = [f"{s.title}  input {s.input_size}", line("layer", heads), line("-" * name_w, ["-" * w for w in widths])]
    for r, b in zip(s.rows, body):
        name = r["name"]
        if len(name) > name_w:   # a name wider than its column: on a line of its own, the values below it
            out.append(name)
            name = ""
        out.append(line(name, b))
    t, m = s.totals, s.memory
    out += [f"params: {t['params']:,} ({format_count(t['params'])}): {t['trainable']:,} trainable, "
            f"{t['non_trainable']:,} non-trainable; size {format_mb(t['param_bytes'])}",
            f"buffers: {t['buffers']:,} ({format_mb(m['buffers'])})",
            f"MACs: {t['macs']:,} ({format_count(t['macs'])}) for the batch of {s.input_size[0]}, "
            f"{format_count(t['macs_per_sample'])} per sample",
            f"memory ({m['dtype']}): input {format_mb(m['input'])}, activations {format_mb(m['activations'])} "
            f"(sum of step outputs), params {format_mb(m['params'])}, buffers {format_mb(m['buffers'])}",
            f"total memory: {format_mb(m['total'])}"]
    if columns is not None:   # the title and totals wrap at the width too, continued lines indented
        out = [w for t in out for w in (textwrap.wrap(t, columns, subsequent_indent="  ", break_on_hyphens=False)
                                        if len(t) > columns else [t])]
    return "\n".join(out)
