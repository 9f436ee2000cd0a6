"""Stage 3: graph IR -> readable PyTorch source (an nn.Module with a straight-line forward).

The generated file depends only on torch. Submodules are nested exactly as the spec's labels say,
so ``state_dict()`` keys are the spec's names; ``forward`` is a flat sequence of calls with no
interpretation of the graph at run time.
"""
from __future__ import annotations

import keyword
import re
from typing import Any

from ..ir import Graph, Node

__all__ = ["generate", "class_name", "STATEFUL_CTORS", "PARAMETER_OPS"]

# Producers whose backward does not need their output, so a following ReLU/add may work in place.
_INPLACE_SAFE_PRODUCERS = {"conv2d", "batchnorm", "linear", "add"}


def class_name(net: str) -> str:
    """``resnet50`` -> ``Resnet50``; ``vgg16_bn`` -> ``Vgg16Bn``."""
    parts = re.split(r"[^A-Za-z0-9]+", net)
    name = "".join(p[:1].upper() + p[1:] for p in parts if p)
    if not name or not name[0].isalpha():
        name = "Net" + name
    return name


def _tuple_or_int(v: Any) -> str:
    if isinstance(v, (tuple, list)):
        if len(set(v)) == 1:
            return str(v[0])
        return "(" + ", ".join(str(x) for x in v) + ")"
    return repr(v)


def _ctor(n: Node) -> str:
    a = n.args
    if n.op == "conv2d":
        cin = n.in_shapes[0][0]
        parts = [str(cin), str(a["out_channels"]), _tuple_or_int(a["kernel_size"])]
        if tuple(a["stride"]) != (1, 1):
            parts.append(f"stride={_tuple_or_int(a['stride'])}")
        if tuple(a["padding"]) != (0, 0):
            parts.append(f"padding={_tuple_or_int(a['padding'])}")
        if tuple(a["dilation"]) != (1, 1):
            parts.append(f"dilation={_tuple_or_int(a['dilation'])}")
        if a["groups"] != 1:
            parts.append(f"groups={a['groups']}")
        if not a["bias"]:
            parts.append("bias=False")
        if a["padding_mode"] != "zeros":
            parts.append(f"padding_mode={a['padding_mode']!r}")
        return f"nn.Conv2d({', '.join(parts)})"
    if n.op == "linear":
        extra = "" if a["bias"] else ", bias=False"
        return f"nn.Linear({n.in_shapes[0][-1]}, {a['out_features']}{extra})"
    if n.op == "batchnorm":
        cls = "BatchNorm2d" if len(n.shape) == 3 else "BatchNorm1d"
        parts = [str(n.shape[0])]
        if a["eps"] != 1e-5:
            parts.append(f"eps={a['eps']!r}")
        if a["momentum"] != 0.1:
            parts.append(f"momentum={a['momentum']!r}")
        if not a["affine"]:
            parts.append("affine=False")
        if not a["track_running_stats"]:
            parts.append("track_running_stats=False")
        return f"nn.{cls}({', '.join(parts)})"
    if n.op == "layernorm":
        parts = [str(a["normalized"])]
        if a["eps"] != 1e-5:
            parts.append(f"eps={a['eps']!r}")
        if not a["affine"]:
            parts.append("elementwise_affine=False")
        return f"nn.LayerNorm({', '.join(parts)})"
    if n.op == "layer_scale":
        from ..ops import layer_scale_shape
        shape = layer_scale_shape(n.in_shapes[0], a["dim"])
        return f"nn.Parameter(torch.full({shape!r}, {float(a['init'])!r}))"
    raise KeyError(n.op)  # every stateful op in ops.py has a constructor above


STATEFUL_CTORS = {"conv2d", "linear", "batchnorm"}
# Stateful ops that are a bare nn.Parameter rather than a module (registered with register_parameter).
PARAMETER_OPS = {"layer_scale"}


def _call(n: Node, ins: list[str], mod: str, inplace: bool) -> str:
    a = n.args
    x = ins[0] if ins else "x"
    op = n.op
    if op in STATEFUL_CTORS:
        return f"{mod}({x})"
    if op == "relu":
        return f"F.relu({x}, inplace=True)" if inplace else f"F.relu({x})"
    if op == "relu6":
        return f"F.relu6({x}, inplace=True)" if inplace else f"F.relu6({x})"
    if op == "sigmoid":
        return f"torch.sigmoid({x})"
    if op == "tanh":
        return f"torch.tanh({x})"
    if op == "gelu":
        return f"F.gelu({x})" if a["approximate"] == "none" else f"F.gelu({x}, approximate={a['approximate']!r})"
    if op == "silu":
        return f"F.silu({x})"
    if op == "hardswish":
        return f"F.hardswish({x})"
    if op == "hardsigmoid":
        return f"F.hardsigmoid({x})"
    if op == "leaky_relu":
        return f"F.leaky_relu({x}, {a['negative_slope']!r})"
    if op == "maxpool":
        extra = ", ceil_mode=True" if a["ceil_mode"] else ""
        dil = f", dilation={_tuple_or_int(a['dilation'])}" if tuple(a["dilation"]) != (1, 1) else ""
        return (f"F.max_pool2d({x}, {_tuple_or_int(a['kernel_size'])}, {_tuple_or_int(a['stride'])}, "
                f"{_tuple_or_int(a['padding'])}{dil}{extra})")
    if op == "avgpool":
        extra = ", ceil_mode=True" if a["ceil_mode"] else ""
        if not a["count_include_pad"]:
            extra += ", count_include_pad=False"
        return (f"F.avg_pool2d({x}, {_tuple_or_int(a['kernel_size'])}, {_tuple_or_int(a['stride'])}, "
                f"{_tuple_or_int(a['padding'])}{extra})")
    if op == "adaptive_avgpool":
        return f"F.adaptive_avg_pool2d({x}, {_tuple_or_int(a['output_size'])})"
    if op == "adaptive_maxpool":
        return f"F.adaptive_max_pool2d({x}, {_tuple_or_int(a['output_size'])})"
    if op == "dropout":
        return f"F.dropout({x}, {a['p']!r}, self.training)"
    if op == "flatten":
        return f"torch.flatten({x}, 1)"
    if op == "channel_shuffle":
        return f"_channel_shuffle({x}, {a['groups']})"
    if op == "add":
        if inplace:
            return f"{ins[0]}.add_({' + '.join(ins[1:])})"
        return " + ".join(ins)
    if op == "mul":
        return " * ".join(ins)
    if op == "concat":
        return f"torch.cat([{', '.join(ins)}], {a['dim']})"
    if op == "stack":
        return f"torch.stack([{', '.join(ins)}], {a['dim']})"
    if op == "layernorm":
        if a["dim"] != len(n.shape):
            # torchvision's LayerNorm2d: normalize the channels of [C, H, W] in channels-last layout
            return f"{mod}({x}.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)"
        return f"{mod}({x})"
    if op == "layer_scale":
        return f"{mod} * {x}"
    if op == "permute":
        return f"{x}.permute{tuple(a['dims'])!r}"
    if op == "drop_path":
        if a["p"] == 0.0:
            return x
        return f"_stochastic_depth({x}, {a['p']!r}, {a['mode']!r}, self.training)"
    if op == "softmax":
        return f"torch.softmax({x}, {a['dim']})"
    if op in ("mean", "reduce_sum"):
        fn = "mean" if op == "mean" else "sum"
        dims = _tuple_or_int(a["dim"]) if not isinstance(a["dim"], tuple) or len(a["dim"]) == 1 else repr(a["dim"])
        return f"{x}.{fn}({dims}, keepdim=True)" if a["keepdim"] else f"{x}.{fn}({dims})"
    if op == "reshape":
        # the target as written (a -1 stays inferred at run time); the batch size is read from the input
        return f"{x}.reshape({x}.shape[0], {', '.join(str(d) for d in a.get('written', a['shape']))})"
    if op == "scale":
        return f"{x} * {a['factor']!r}"
    if op == "narrow":
        if a["dim"] == 1:
            return f"{x}[:, {a['start']}:{a['start'] + a['length']}]"
        return f"{x}.narrow({a['dim']}, {a['start']}, {a['length']})"
    raise KeyError(op)


_HELPERS = {
    "channel_shuffle": '''
def _channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)
''',
    "drop_path": '''
def _stochastic_depth(x: torch.Tensor, p: float, mode: str, training: bool) -> torch.Tensor:
    # torchvision.ops.stochastic_depth: keep each sample ('row') or the whole batch with prob 1 - p
    if not training or p == 0.0:
        return x
    keep = 1.0 - p
    size = [x.shape[0]] + [1] * (x.ndim - 1) if mode == "row" else [1] * x.ndim
    noise = torch.empty(size, dtype=x.dtype, device=x.device).bernoulli_(keep)
    if keep > 0.0:
        noise.div_(keep)
    return x * noise
''',
}


class _ModuleTree:
    """Containers and leaves by dotted path, and how to reach each from ``self``.

    A container whose children are exactly ``0..n-1`` becomes an ``nn.Sequential`` (indexable like
    torchvision's); any other container is a plain ``nn.Module``.
    """

    def __init__(self, leaves: list[str]) -> None:
        self.children: dict[str, list[str]] = {"": []}
        for path in leaves:
            parts = path.split(".")
            for i in range(len(parts)):
                parent, name = ".".join(parts[:i]), parts[i]
                here = ".".join(parts[: i + 1])
                if here not in self.children or i == len(parts) - 1:
                    if name not in self.children[parent]:
                        self.children[parent].append(name)
                if i < len(parts) - 1:
                    self.children.setdefault(here, [])
        self.sequential = {p for p, ch in self.children.items()
                           if p and ch == [str(i) for i in range(len(ch))]}
        self.emitted: set[str] = {""}

    def emit_leaf(self, path: str, ctor: str, lines: list[str]) -> None:
        parent = path.rpartition(".")[0]
        self._ensure(parent, lines)
        lines.append(self._assign(path, ctor))

    def _ensure(self, path: str, lines: list[str]) -> None:
        if path in self.emitted:
            return
        self._ensure(path.rpartition(".")[0], lines)
        self.emitted.add(path)
        lines.append(self._assign(path, "nn.Sequential()" if path in self.sequential else "nn.Module()"))

    def emit_param(self, path: str, ctor: str, lines: list[str]) -> None:
        """Register a bare parameter (e.g. layer_scale) under ``path``; its parent stays a module."""
        parent, _, name = path.rpartition(".")
        self._ensure(parent, lines)
        lines.append(f"{self.ref(parent)}.register_parameter({name!r}, {ctor})")

    def param_ref(self, path: str) -> str:
        """A Python expression for the parameter at ``path`` (never indexed: Sequential holds modules only)."""
        parent, _, name = path.rpartition(".")
        owner = self.ref(parent)
        if name.isidentifier() and not keyword.iskeyword(name):
            return f"{owner}.{name}"
        return f"getattr({owner}, {name!r})"

    def _assign(self, path: str, value: str) -> str:
        parent, _, name = path.rpartition(".")
        owner = self.ref(parent)
        if name.isidentifier() and not keyword.iskeyword(name):
            return f"{owner}.{name} = {value}"
        return f"{owner}.add_module({name!r}, {value})"

    def ref(self, path: str) -> str:
        """A Python expression for the module at ``path``."""
        if not path:
            return "self"
        parent, _, name = path.rpartition(".")
        owner = self.ref(parent)
        if name.isidentifier() and not keyword.iskeyword(name):
            return f"{owner}.{name}"
        if parent in self.sequential:
            return f"{owner}[{name}]"
        return f"getattr({owner}, {name!r})"


def generate(graph: Graph, *, source_note: str = "", class_prefix: str = "",
             memory_format: str = "contiguous") -> str:
    """Return the Python source of an ``nn.Module`` equivalent to ``graph``.

    ``memory_format="channels_last"`` (chosen by the deploy pass) makes ``forward`` convert its input to
    channels-last first; the weights are converted when the module is built.
    """
    nodes = list(graph.nodes())
    # identity nodes vanish: consumers read the identity's input directly
    alias: dict[int, int] = {}

    def res(nid: int) -> int:
        while nid in alias:
            nid = alias[nid]
        return nid

    for n in nodes:
        if n.op == "identity":
            alias[n.id] = n.inputs[0]
    live = [n for n in nodes if n.op != "identity"]
    consumers: dict[int, list[int]] = {n.id: [] for n in live}
    for n in live:
        for i in n.inputs:
            consumers[res(i)].append(n.id)
    out_ids = {res(nid) for _, nid in graph.outputs}
    order = {n.id: k for k, n in enumerate(live)}
    by_id = {n.id: n for n in live}

    var: dict[int, str] = {}
    for k, n in enumerate(live):
        cs = consumers[n.id]
        nxt = live[k + 1].id if k + 1 < len(live) else None
        if n.id not in out_ids and len(cs) == 1 and cs[0] == nxt:
            var[n.id] = "x"
        elif n.op == "input":
            var[n.id] = "x_in"
        else:
            var[n.id] = f"x{n.id}"

    last_use = {nid: max((order[c] for c in cs), default=-1) for nid, cs in consumers.items()}

    init: list[str] = []
    tree = _ModuleTree([n.module for n in live if n.module])
    helpers: set[str] = set()
    fwd: list[str] = []
    for k, n in enumerate(live):
        if n.op == "input":
            if var[n.id] != "x":
                fwd.append(f"{var[n.id]} = x")
            continue
        ins = [var[res(i)] for i in n.inputs]
        mod = ""
        if n.module and n.op in PARAMETER_OPS:
            tree.emit_param(n.module, _ctor(n), init)
            mod = tree.param_ref(n.module)
        elif n.module:
            tree.emit_leaf(n.module, _ctor(n), init)
            mod = tree.ref(n.module)
        inplace = False
        if n.op in ("relu", "relu6") or (n.op == "add" and all(s == n.shape for s in n.in_shapes)):
            src = by_id[res(n.inputs[0])]
            inplace = (src.op in _INPLACE_SAFE_PRODUCERS and len(consumers[src.id]) == 1
                       and src.id not in out_ids)
        if n.op in _HELPERS:
            helpers.add(n.op)
        comment = f"  # {n.name}" if not n.module and n.name and n.op not in ("add", "concat", "mul") else ""
        shape = list(n.shape)
        fwd.append(f"{var[n.id]} = {_call(n, ins, mod, inplace)}  # {shape}" + (f" {n.name}" if comment else ""))
        # free long-lived intermediates at their last use, as hand-written code lets them go out of scope
        dead = sorted({res(i) for i in n.inputs if var[res(i)] != "x" and res(i) not in out_ids
                       and last_use[res(i)] == k}, key=lambda i: order[i])
        if dead:
            fwd.append("del " + ", ".join(var[i] for i in dead))
    if len(graph.outputs) == 1:
        fwd.append(f"return {var[res(graph.outputs[0][1])]}")
    else:
        items = ", ".join(f"{name!r}: {var[res(nid)]}" for name, nid in graph.outputs)
        fwd.append(f"return {{{items}}}")

    cname = class_prefix + class_name(graph.name)
    in_shape = list(graph.input_shape)
    outs = {k: list(v) for k, v in graph.output_shapes.items()}
    params_txt = ", ".join(f"{k}={v!r}" for k, v in graph.params_used.items())
    lines = [
        f"# Generated by archc from {source_note or graph.name}. Do not edit: edit the spec and recompile.",
        "import torch",
        "from torch import nn",
        "import torch.nn.functional as F",
        "",
    ]
    for h in sorted(helpers):
        lines.append(_HELPERS[h].strip("\n"))
        lines.append("")
    lines += [
        "",
        f"class {cname}(nn.Module):",
        f'    """{graph.name}({params_txt}): input {in_shape} -> {outs if len(outs) > 1 else next(iter(outs.values()))}'
        f' (batch dimension first)."""',
        "",
        f"    input_shape = {tuple(in_shape)!r}",
        f"    reference = {graph.reference!r}",
        *([f"    memory_format = {memory_format!r}"] if memory_format != "contiguous" else []),
        "",
        "    def __init__(self) -> None:",
        "        super().__init__()",
    ]
    lines += ["        " + s for s in init]
    if memory_format == "channels_last" and len(graph.input_shape) == 3:
        fwd.insert(0, "x = x.contiguous(memory_format=torch.channels_last)  # chosen by the deploy pass")
    lines += ["", "    def forward(self, x: torch.Tensor):"]
    lines += ["        " + s for s in fwd]
    lines.append("")
    return "\n".join(lines)
