"""Summary of a graph, like torchinfo and more: per-layer rows (input and output shapes, kernel, params,
MACs, receptive field, connected-to), per-block totals to any depth of the block hierarchy, the
trainable / non-trainable / buffer split, and an activation-memory estimate for a forward pass.

Everything here reads the IR only (no torch): shapes, counts and the receptive field are static.
"""
from __future__ import annotations

import math
import textwrap
from typing import Any

from ..errors import ArchError
from ..ir import Graph, Node
from ..ops import OPS
from .features import Geometry, receptive_fields, stage_taps
from .sizes import input_contract

__all__ = ["summary_rows", "summary_tree", "summary_dict", "activation_memory", "buffer_count", "dtype_bytes",
           "format_count", "format_bytes", "row_names", "format_table", "format_totals", "op_text"]

_MODULE_KINDS = frozenset({"block", "group"})   # scope frames that are module containers (not combinators)
# ops whose output shares its input's storage (no new activation memory)
_VIEW_OPS = frozenset({"identity", "flatten", "reshape", "narrow", "permute"})
_DTYPE_BYTES = {"float32": 4, "float": 4, "fp32": 4, "float16": 2, "half": 2, "fp16": 2, "bfloat16": 2,
                "bf16": 2, "float64": 8, "double": 8, "fp64": 8, "int8": 1, "uint8": 1}


def dtype_bytes(dtype: str) -> int:
    """Bytes per element of a dtype name ('float32', 'bf16', 'torch.float16', ...)."""
    key = str(dtype).replace("torch.", "")
    if key not in _DTYPE_BYTES:
        raise ArchError(f"unknown dtype '{dtype}'", None,
                        hint="one of: float32, float16, bfloat16, float64, int8")
    return _DTYPE_BYTES[key]


def buffer_count(n: Node) -> int:
    """Elements of the buffers the node's module holds (its op's ``buffers`` in the registry: BatchNorm's
    running statistics, Swin's ``relative_position_index``): state, not parameters."""
    opdef = OPS.get(n.op)
    if opdef is None or n.op in ("input", "identity"):
        return 0
    return int(opdef.buffers([tuple(s) for s in n.in_shapes], dict(n.args)))


def _module_frames(n: Node) -> list[Any]:
    return [f for f in n.scope if f.kind in _MODULE_KINDS and f.path]


def _alias_root(g: Graph) -> dict[int, int]:
    """Each node's storage owner: views and identities share their input's."""
    root: dict[int, int] = {}
    for n in g.nodes():
        root[n.id] = root[n.inputs[0]] if n.op in _VIEW_OPS and n.inputs else n.id
    return root


def _block_outputs(g: Graph) -> dict[int, list[str]]:
    """For each node that is the last node of blocks, those blocks' paths, outermost first."""
    last: dict[str, int] = {}
    for n in g.nodes():
        for f in _module_frames(n):
            last[f.path] = n.id
    ends: dict[int, list[str]] = {}
    for path, nid in last.items():
        ends.setdefault(nid, []).append(path)
    for paths in ends.values():
        paths.sort(key=lambda p: p.count("."))
    return ends


def _source_name(g: Graph, nid: int, reader: Node, ends: dict[int, list[str]],
                 names: dict[int, str] | None = None) -> str:
    """What a reader knows a tensor by: the outermost block it is the output of (not containing the
    reader), e.g. ``inception3a.branch2`` rather than its last ReLU; else the node's own name."""
    inside = {f.path for f in _module_frames(reader)}
    for path in ends.get(nid, []):
        if path not in inside:
            return path
    return (names or {}).get(nid, g.node(nid).name)


def _rf(geo: Geometry) -> list[int]:
    return [geo.rf[0], geo.rf[1]]


def row_names(g: Graph) -> dict[int, str]:
    """The name each node's row goes by when only the IR is known: a layer with a module is its module path
    (``layer1.0.conv1``); a parameter-free op is its block's path, a dot and the op
    (``layer1.0.relu``), ``_1``, ``_2``... for the op's next uses in the same block. The exact fx names of
    the built module (what ``create_feature_extractor`` takes) come from the generated code:
    :func:`archdsl.codegen.fxnames.fx_node_names`, passed to :func:`summary_dict` as ``names``."""
    out: dict[int, str] = {}
    seen: dict[str, int] = {}
    for n in g.nodes():
        if n.op in ("input", "identity"):
            continue
        if n.module:
            out[n.id] = n.module
            continue
        frames = _module_frames(n)
        if not frames and n.label and "." not in n.label:
            # a labelled parameter-free op of the network itself is a child module (``avgpool``), as codegen
            # builds it (archdsl.codegen.program)
            out[n.id] = n.label
            seen[n.label] = seen.get(n.label, 0) + 1
            continue
        base = (frames[-1].path + "." if frames else "") + n.op
        k = seen.get(base, 0)
        seen[base] = k + 1
        out[n.id] = base if k == 0 else f"{base}_{k}"
    return out


#: Ops whose row shows a kernel ([kh, kw], or [kt, kh, kw] on a video or volume).
_KERNEL_OPS = frozenset({"conv2d", "maxpool", "avgpool", "conv3d", "maxpool3d", "avgpool3d", "conv_transpose3d"})


def summary_rows(g: Graph, geo: dict[int, Geometry] | None = None,
                 names: dict[int, str] | None = None) -> list[dict[str, Any]]:
    """One row per node except the input and identities, in execution order.

    Keys: name (``names[node id]``, else :func:`row_names`), node (the IR node's name), module, op, shape
    (output), params, macs, line, inputs (input shapes), kernel ([kh, kw] of windowed ops, [kt, kh, kw] of
    3-D ones, else None), rf (receptive field [h, w] in input pixels; spatial on a video or volume
    [C, T, H, W]), trainable, non_trainable, buffers, connected_to (source names when the node reads several
    tensors, else []), batched (whether the value has the batch axis: a parameter has none).
    """
    geo = geo if geo is not None else receptive_fields(g)
    ends = _block_outputs(g)
    names = {**row_names(g), **(names or {})}
    rows = []
    for n in g.nodes():
        if n.op in ("input", "identity"):
            continue
        ks = n.args.get("kernel_size") if n.op in _KERNEL_OPS else None
        srcs = list(dict.fromkeys(n.inputs))
        rows.append({
            "name": names[n.id],
            "node": n.name,
            "module": n.module,
            "op": n.op,
            "shape": list(n.shape),
            "params": n.params,
            "macs": n.macs,
            "line": f"{n.loc}" if n.loc else None,
            "inputs": [list(s) for s in n.in_shapes],
            "kernel": list(ks) if ks is not None else None,
            "rf": _rf(geo[n.id]),
            "trainable": n.params,
            "non_trainable": 0,
            "buffers": buffer_count(n),
            "connected_to": [_source_name(g, i, n, ends, names) for i in srcs] if len(srcs) > 1 else [],
            "batched": n.batched,
        })
    return rows


def op_text(r: dict[str, Any]) -> str:
    """A row's op column: the op, and for a parameter or buffer its own name where the row's (the fx node
    of its use: ``expand_1`` for ViT's ``pos_embed``) does not say it."""
    if r["op"] in ("parameter", "buffer") and r.get("node") and r["name"].rsplit(".", 1)[-1] != r["node"]:
        return f"{r['op']} {r['node']}"
    return str(r["op"])


def summary_tree(g: Graph, depth: int, geo: dict[int, Geometry] | None = None,
                 names: dict[int, str] | None = None) -> list[dict[str, Any]]:
    """Rows down to ``depth`` levels of the block hierarchy, like torchinfo's ``depth``.

    Top-level layers and blocks are depth 1. A block row (``kind: "block"``) carries the totals of every
    layer inside it (params, MACs, trainable, buffers), the shapes entering it (``inputs``), its output
    shape and receptive field (its last layer's); blocks at ``depth`` are shown collapsed, shallower
    ones are followed by their children (``depth`` + 1). Layer rows are those of :func:`summary_rows`
    (named by ``names``) plus ``kind: "layer"`` and ``depth``; a block row is named by its module path.
    """
    if depth < 0:
        raise ArchError(f"--depth must be 0 or more, got {depth}", None)
    geo = geo if geo is not None else receptive_fields(g)
    by_name = {r["node"]: r for r in summary_rows(g, geo, names)}
    order = list(g.nodes())
    members: dict[str, list[Node]] = {}
    frames: dict[str, Any] = {}
    for n in order:
        for f in _module_frames(n):
            members.setdefault(f.path, []).append(n)
            frames.setdefault(f.path, f)
    rows: list[dict[str, Any]] = []
    shown: set[str] = set()
    ends = _block_outputs(g)
    for n in order:
        mf = _module_frames(n)
        for d, f in enumerate(mf[:depth], start=1):
            if f.path not in shown:
                shown.add(f.path)
                rows.append(_block_row(g, f, d, members[f.path], geo, ends))
        if n.op in ("input", "identity") or len(mf) + 1 > depth:
            continue
        rows.append({**by_name[n.name], "kind": "layer", "depth": len(mf) + 1})
    return rows


def _block_row(g: Graph, frame: Any, depth: int, nodes: list[Node], geo: dict[int, Geometry],
               ends: dict[int, list[str]]) -> dict[str, Any]:
    inside = {n.id for n in nodes}
    entering = list(dict.fromkeys(i for n in nodes for i in n.inputs if i not in inside))
    last = nodes[-1]
    return {
        "name": frame.path, "module": frame.path, "op": frame.name, "kind": "block", "depth": depth,
        "args": frame.args,
        "inputs": [list(g.node(i).shape) for i in entering],
        "shape": list(last.shape),
        "params": sum(n.params for n in nodes),
        "macs": sum(n.macs for n in nodes),
        "trainable": sum(n.params for n in nodes),
        "non_trainable": 0,
        "buffers": sum(buffer_count(n) for n in nodes),
        "kernel": None,
        "rf": _rf(geo[last.id]),
        "layers": sum(1 for n in nodes if n.op not in ("input", "identity")),
        "connected_to": [_source_name(g, i, nodes[0], ends) for i in entering] if len(entering) > 1 else [],
        "line": f"{frame.loc}" if frame.loc else None,
        "batched": last.batched,
    }


def activation_memory(g: Graph, batch: int = 1, dtype: str = "float32") -> dict[str, Any]:
    """Memory for the tensors of one forward pass at ``batch`` samples of ``dtype``.

    ``activations``: the sum of every layer's output (what a training step keeps for backward, roughly;
    views and identities allocate nothing). ``peak``: the most bytes alive at once in an inference pass
    that frees each tensor after its last reader (input and outputs included; in-place activations and
    framework workspace are not modelled, so it is an estimate). ``input``: the input batch itself.
    """
    if batch < 1:
        raise ArchError(f"batch must be at least 1, got {batch}", None)
    item = dtype_bytes(dtype)
    root = _alias_root(g)
    order = list(g.nodes())
    pos = {n.id: k for k, n in enumerate(order)}
    # a value without the batch axis (a buffer, a computed weight) exists once, whatever the batch
    size = {n.id: math.prod(n.shape) * (batch if n.batched else 1) * item for n in order}
    last_use: dict[int, int] = {}
    for n in order:
        for i in n.inputs:
            r = root[i]
            last_use[r] = max(last_use.get(r, -1), pos[n.id])
    keep = {root[nid] for _, nid in g.outputs}
    total = sum(size[n.id] for n in order if n.op != "input" and root[n.id] == n.id)
    live = 0
    peak = 0
    alive: set[int] = set()
    for n in order:
        if root[n.id] == n.id:
            live += size[n.id]
            alive.add(n.id)
        peak = max(peak, live)
        for r in [r for r in alive if r not in keep and last_use.get(r, -1) <= pos[n.id]]:
            alive.discard(r)
            live -= size[r]
    return {"batch": batch, "dtype": str(dtype).replace("torch.", ""), "bytes_per_element": item,
            "input": size[g.inputs[0]], "activations": total, "peak": peak}


def summary_dict(g: Graph, *, depth: int | None = None, batch: int = 1, dtype: str = "float32",
                 names: dict[int, str] | None = None) -> dict[str, Any]:
    """Everything ``archc summary --json`` prints: network facts, flat ``layers``, ``tree`` (with a
    depth), ``totals`` (params split, buffers, MACs per sample and for the batch, layers), ``memory`` and
    ``receptive_field``. Each row also has ``output_size``: its output shape with the batch axis first (a
    value without one, such as a parameter, as it is: ``batched`` says which), and
    ``macs_batch``: its MACs for the whole batch. ``names``: node id -> row name (the built module's fx
    names, :func:`archdsl.codegen.fxnames.fx_node_names`); :func:`row_names` for the others."""
    geo = receptive_fields(g)
    rows = summary_rows(g, geo, names)
    mem = activation_memory(g, batch, dtype)
    buffers = sum(buffer_count(n) for n in g.nodes())
    for r in rows:
        r["output_size"] = [batch, *r["shape"]] if r["batched"] else list(r["shape"])
        r["macs_batch"] = r["macs"] * batch
    item = mem["bytes_per_element"]
    param_bytes = g.total_params * item
    buffer_bytes = sum(_buffer_bytes(n, item) for n in g.nodes())
    mem.update({"params": param_bytes, "buffers": buffer_bytes,
                # torchinfo's "estimated total size": input, every layer output, parameters and buffers
                "total": mem["input"] + mem["activations"] + param_bytes + buffer_bytes})
    out: dict[str, Any] = {
        "network": g.name,
        "spec": getattr(g, "address", g.name),
        "reference": g.reference,
        "input": list(g.input_shape),
        "batch": batch,
        "outputs": {k: list(v) for k, v in g.output_shapes.items()},
        "parameters": {k: v for k, v in g.params_used.items() if isinstance(v, (int, float, str, bool, list))},
        "layers": rows,
        "totals": {"params": g.total_params, "macs": g.total_macs, "macs_batch": g.total_macs * batch,
                   "layers": len(rows), "trainable": g.total_params, "non_trainable": 0, "buffers": buffers,
                   "param_bytes": param_bytes},
        "memory": mem,
        "receptive_field": _final_rf(g, geo),
        "input_sizes": _sizes(g),
    }
    if depth is not None:
        out["depth"] = depth
        out["tree"] = summary_tree(g, depth, geo, names)
        for r in out["tree"]:
            r["output_size"] = [batch, *r["shape"]] if r["batched"] else list(r["shape"])
            r["macs_batch"] = r["macs"] * batch
    return out


def _buffer_bytes(n: Node, item: int) -> int:
    """Bytes of the node's buffers: BatchNorm's statistics in the model's dtype (its counter an int64),
    Swin's relative_position_index int64, a ``buffer`` by its dtype."""
    count = buffer_count(n)
    if not count:
        return 0
    if n.op == "batchnorm":
        return (count - 1) * item + 8
    if n.op == "buffer":   # a buffer of floats follows the model's dtype; int64 indexes and bool masks do not
        return count * {"int64": 8, "bool": 1}.get(n.args.get("dtype", "float32"), item)
    return count * 8


def _sizes(g: Graph) -> dict[str, Any]:
    """The input-size contract as data: its description and one rule per varying axis."""
    c = input_contract(g)
    return {"describe": c.describe(), "derived": c.derived,
            "rules": [{"axis": r.name, "fixed": r.fixed, "multiple": r.multiple, "minimum": r.minimum,
                       "maximum": r.maximum} for r in c.rules]}


def _final_rf(g: Graph, geo: dict[int, Geometry]) -> dict[str, Any] | None:
    """Receptive field of the last feature map before the head (where a detector would read it)."""
    taps = stage_taps(g, geo)
    if not taps:
        return None
    t = taps[-1]
    return {"module": t["module"], "rf": _rf(geo[t["node"]]), "stride": t["reduction"]}


def format_count(n: int) -> str:
    """1234567 -> '1.23M' (for humans; JSON keeps exact integers)."""
    for unit, div in (("G", 10**9), ("M", 10**6), ("K", 10**3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)


def format_bytes(n: int) -> str:
    """1536 -> '1.50 KiB'."""
    for unit, div in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= div:
            return f"{n / div:.2f} {unit}"
    return f"{n} B"


def format_mb(n: int) -> str:
    """Bytes as torchinfo writes them: decimal megabytes, two decimals."""
    return f"{n / 1e6:,.2f} MB"


def _dims(s: list[int] | None) -> str:
    return "x".join(str(v) for v in s) if s else ""


def _square(s: list[int] | None) -> str:
    """A kernel or receptive field: ``7`` when square, ``1x7`` otherwise."""
    return (str(s[0]) if len(set(s)) == 1 else _dims(s)) if s else ""


def format_table(data: dict[str, Any], columns: int | None = None) -> str:
    """The summary table as plain text no wider than ``columns`` (None: as wide as the rows need).

    The wide layout has every column (layer, op, input, output, kernel, params, MACs, RF, connected to);
    when it does not fit, the narrow layout keeps layer, op, output (batch axis first), params and MACs
    (for the batch), and a layer name too long for its column gets a line of its own. Rows are named by
    module path or fx node name (as :func:`summary_dict` named them), indented by depth with ``depth``."""
    tree = data.get("tree")
    rows = tree if tree is not None else data["layers"]
    batch = data.get("batch", 1)

    def name_of(r: dict[str, Any]) -> str:
        return ("  " * (r["depth"] - 1) + r["name"]) if tree is not None else r["name"]

    def cells(r: dict[str, Any], wide: bool) -> list[str]:
        out = [op_text(r), _dims(r["output_size"]), f"{r['params']:,}" if r["params"] else "",
               format_count(r["macs"] * batch) if r["macs"] else ""]
        if wide:
            ins = ", ".join(dict.fromkeys(_dims([batch, *s]) for s in r["inputs"]))
            out = [out[0], ins, out[1], _square(r["kernel"]), out[2], out[3], _square(r["rf"]), ", ".join(r["connected_to"])]
        return out

    layouts = [(True, ["op", "input", "output", "kernel", "params", "MACs", "RF", "connected to"],
                "<><>>>><"), (False, ["op", "output", "params", "MACs"], "<>>>")]
    names = [name_of(r) for r in rows]
    for wide, heads, align in layouts:
        body = [cells(r, wide) for r in rows]
        widths = [max([len(h)] + [len(b[k]) for b in body]) for k, h in enumerate(heads)]
        rest = sum(widths) + 2 * len(widths)
        name_w = max([len("layer")] + [len(n) for n in names])
        if columns is None or rest + name_w <= columns or not wide:
            break
    if columns is not None:
        name_w = max(len("layer"), min(name_w, columns - rest))

    def line(name: str, vals: list[str]) -> str:
        parts = [name.ljust(name_w)]
        for v, w, a in zip(vals, widths, align):
            parts.append(v.ljust(w) if a == "<" else v.rjust(w))
        return "  ".join(parts).rstrip()

    title = f"{data['spec']}  input {[batch, *data['input']]}"
    out = [title, line("layer", heads), line("-" * name_w, ["-" * w for w in widths])]
    for n, b in zip(names, body):
        if len(n) > name_w:   # a name wider than its column: on a line of its own, the values below it
            out.append(n)
            n = ""
        out.append(line(n, b))
    tail = format_totals(data)
    if columns is not None:   # the totals wrap at the width too, continued lines indented
        tail = [w for t in tail for w in textwrap.wrap(t, columns, subsequent_indent="  ", break_on_hyphens=False)]
    return "\n".join(out + tail)


def format_totals(data: dict[str, Any]) -> list[str]:
    """The lines under the table: totals, the parameter split and size, buffers, MACs, memory."""
    tot, mem = data["totals"], data["memory"]
    batch = data.get("batch", 1)
    outs = data["outputs"]
    lines = [f"total: {tot['params']:,} params ({format_count(tot['params'])}), {tot['macs']:,} MACs "
             f"({format_count(tot['macs'])}) per sample, {tot['layers']} layers; "
             f"output {next(iter(outs.values())) if len(outs) == 1 else outs}"]
    if batch > 1:
        lines.append(f"MACs for the batch of {batch}: {tot['macs_batch']:,} ({format_count(tot['macs_batch'])})")
    lines.append(f"params: {tot['trainable']:,} trainable, {tot['non_trainable']:,} non-trainable; "
                 f"size {format_mb(mem['params'])} ({mem['dtype']}); buffers: {tot['buffers']:,} "
                 f"({format_mb(mem['buffers'])})")
    lines.append(f"memory at batch {batch}, {mem['dtype']}: input {format_mb(mem['input'])}, "
                 f"activations {format_mb(mem['activations'])} (sum of layer outputs), "
                 f"peak ~{format_mb(mem['peak'])} (inference, tensors freed after last use)")
    lines.append(f"total memory: {format_mb(mem['total'])} (input + activations + params + buffers)")
    rf = data.get("receptive_field")
    if rf:
        lines.append(f"receptive field: {_square(rf['rf'])} px at {rf['module']} (stride {rf['stride']})")
    sizes = data.get("input_sizes")
    if sizes:
        lines.append(f"input sizes: {sizes['describe']}" + ("" if sizes["derived"] else
                     " (not derived: only the declared size is known to work)"))
    return lines
