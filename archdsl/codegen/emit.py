"""Graph IR -> readable PyTorch source: one ``nn.Module`` class per block, like hand-written torchvision code.

Every block instantiation of the spec becomes a module with its own ``forward`` (units, see
:mod:`archdsl.codegen.units`), so hooks, ``model.layer4(x)``, activation checkpointing, FSDP per block and
``torch.jit.script`` work as on a hand-written model. Classes are shared by structure:

- instantiations of one block whose code is identical except for literal values (channels, strides, drop
  rates) share one class, and the values that differ become constructor arguments, named after the block's
  own parameter when the values match it (``stride``), ``in_channels`` for the input width, otherwise after
  the layer and argument (``conv3_out_channels``);
- an instantiation where a child module (``downsample``) is replaced by ``identity`` shares the class too:
  the child is optional (``downsample: bool``; ``self.downsample = ... if downsample else None``, and the
  forward tests ``self.downsample is not None``), as in torchvision's ``Bottleneck``;
- any other difference in structure gives another class: ``Bottleneck``, ``Bottleneck_2``, ...

Labelled groups whose items form a chain of modules become ``nn.Sequential`` (``model.layer1[0]``,
``model.layer1(x)``). Module names, and so ``state_dict`` keys, are exactly the spec's labels.
Nothing from the spec is pasted as text: see :mod:`archdsl.codegen.names`.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..ir import Graph
from ..ops import HELPERS
from ..passes.head import head_features
from ..passes.sizes import input_contract
from .head import RESET_HEAD_HELPER
from .names import (RESERVED_GLOBALS, GenerationError, attr_ok, camel, check_child_name, fmt_value, literal,
                    py_identifier, unique)
from .program import PLAIN_CALL, Body, Ctor, Stmt, UnitCall, build_body, holes_of, module_chain
from .render import (CHECK_INPUT_HELPER, DED, IND, NL, RESET_LINEAR_HELPER, ClassSpec, HeadInfo, render_class,
                     unit_call)
from .units import Hierarchy, analyze

__all__ = ["generate", "class_name", "GenerationError"]


def class_name(net: str) -> str:
    """``resnet50`` -> ``Resnet50``; ``vgg16_bn`` -> ``Vgg16Bn``; never a keyword or a name the module uses."""
    name = camel(net, "Net")
    if not py_identifier(name) or name in RESERVED_GLOBALS or not name[0].isalpha():
        name = "Net" + name
    return name


def _resolver(h: Hierarchy) -> tuple[Any, dict[int, int]]:
    alias = {n.id: n.inputs[0] for n in h.order if n.op == "identity"}

    def res(nid: int) -> int:
        while nid in alias:
            nid = alias[nid]
        return nid

    rcons: dict[int, int] = {}
    for n in h.order:
        if n.op == "identity":
            continue
        for i in n.inputs:
            r = res(i)
            rcons[r] = rcons.get(r, 0) + 1
    return res, rcons


def _holder_kinds(h: Hierarchy) -> dict[str, str]:
    """Containers without a forward: ModuleList when their children are 0..n-1, else ModuleDict."""
    names: dict[str, list[str]] = {}
    for n in h.order:
        if n.module:
            parent, _, leaf = n.module.rpartition(".")
            names.setdefault(parent, []).append(leaf)
    for p, u in h.units.items():
        if p:
            names.setdefault(u.parent or "", []).append(p.rpartition(".")[2])
    out: dict[str, str] = {}
    for p, u in h.units.items():
        if p and not u.forward:
            ch = list(dict.fromkeys(names.get(p, [])))
            out[p] = "list" if ch == [str(i) for i in range(len(ch))] else "dict"
    return out


def _sequential(body: Body) -> tuple[Any, ...] | None:
    """The ``nn.Sequential(...)`` constructor of a group whose statements are a chain of modules, else None."""
    u = body.unit
    if u.kind not in ("group", "combinator", "reparam") or body.n_in != 1 or len(body.returns) != 1:
        return None
    prev = 0
    uses: dict[int, int] = {}
    for s in body.stmts:
        for i in s.ins:
            uses[i] = uses.get(i, 0) + 1
    ctor_of = {c.path: c for c in body.ctors}
    if any(c.kind != "module" for c in body.ctors):
        return None
    items: list[tuple[str, tuple[Any, ...]]] = []
    for s in body.stmts:
        if s.ins != (prev,) or len(s.outs) != 1 or uses.get(prev, 0) != 1 or "." in s.name or not s.name:
            return None
        if s.kind == "call" or (s.kind == "op" and s.expr == PLAIN_CALL):
            items.append((s.name, ctor_of[s.ref].expr))
        elif s.kind == "op" and s.module_form is not None and s.module_form != ("<module>",):
            items.append((s.name, s.module_form))
        elif s.kind == "alias":
            items.append((s.name, ("nn.Identity()",)))
        else:
            return None
        prev = s.outs[0]
    if body.returns != (prev,) or not items or len({n for n, _ in items}) != len(items):
        return None
    if len(ctor_of) != sum(1 for s in body.stmts if s.kind != "alias" and s.ref):
        return None
    numbered = [n for n, _ in items] == [str(i) for i in range(len(items))]
    out: list[Any] = ["nn.Sequential(" if numbered else "nn.Sequential(OrderedDict([", IND]
    for k, (name, expr) in enumerate(items):
        out += [NL] if numbered else [NL, "(" + literal(name) + ", "]
        out += list(expr)
        out.append("," if numbered else "),")
    out += [DED, NL, ")" if numbered else "]))"]
    return tuple(out)


def _module_chain_body(body: Body) -> Body:
    """``body`` with its labelled parameter-free ops made child modules (``nn.ReLU()`` at ``'2'``) when that
    makes it a chain of child modules (:func:`~archdsl.codegen.render.module_chain`): its class is then an
    ``nn.Sequential`` whose children are every step, as torchvision's ``Conv2dNormActivation``. No parameter or
    buffer moves, so the state_dict keys stay; any other body is returned unchanged."""
    if body.unit.kind == "root" or body.n_in != 1 or len(body.returns) != 1 or not body.stmts:
        return body
    if any(c.kind != "module" for c in body.ctors):
        return body
    ctor_of = {c.path: c for c in body.ctors}
    ctors: list[Ctor] = []
    stmts: list[Stmt] = []
    for s in body.stmts:
        if s.kind == "call" or (s.kind == "op" and s.expr == PLAIN_CALL):
            c = ctor_of.get(s.ref)
            if c is None:
                return body
            ctors.append(c)
            stmts.append(s)
        elif (s.kind == "op" and not s.ref and s.module_form is not None and s.module_form != ("<module>",)
              and s.name and "." not in s.name and s.name not in ctor_of):
            try:
                check_child_name(s.name, "a step")
            except GenerationError:
                return body
            ctors.append(Ctor(s.name, "module", s.module_form))
            stmts.append(replace(s, expr=PLAIN_CALL, ref=s.name, module_form=("<module>",)))
        else:
            return body
    if len({c.path for c in ctors}) != len(ctors) or len(ctors) != len(body.ctors) + sum(
            1 for s in body.stmts if s.kind == "op" and not s.ref):
        return body
    out = replace(body, ctors=ctors, stmts=stmts)
    out.__dict__.pop("_key", None)
    return out if module_chain(out) else body


def _depth(h: Hierarchy, p: str) -> int:
    d = 0
    while p:
        p = h.units[p].parent or ""
        d += 1
    return d


class _Parts:
    """The classes of one graph before they are written out."""

    def __init__(self, graph: Graph, class_prefix: str, inference: bool = False) -> None:
        h = analyze(graph)
        res, rcons = _resolver(h)
        holders = _holder_kinds(h)
        self.root_name = class_name(class_prefix + graph.name)
        taken = set(RESERVED_GLOBALS) | {self.root_name}
        self.classes: list[ClassSpec] = []
        by_key: dict[tuple[str, Any], ClassSpec] = {}
        unit_exprs: dict[str, tuple[Any, ...]] = {}
        self.helpers: set[str] = set()
        # each unit's program as its forward runs it (``sequential``: an ``nn.Sequential(...)`` of its steps, an
        # identity among them an ``nn.Identity`` child): what archdsl.codegen.fxnames replays
        self.bodies: dict[str, Body] = {}
        self.sequential: set[str] = set()
        # the head container of a classifier (:func:`_classifier_head`): its children where it is an
        # nn.Sequential; else its class gets ``forward_pre_logits`` (its forward without the classifier)
        self.head = head_features(graph)
        self.seq_children: dict[str, tuple[str, ...]] = {}
        self.pre_method = False
        fwd_units = [p for p, u in h.units.items() if p and u.forward]
        fwd_units.sort(key=lambda p: (-_depth(h, p), h.pos[h.units[p].region[0]]))
        for p in fwd_units:
            u = h.units[p]
            body = build_body(h, u, unit_exprs, holders, rcons, res, inference)
            self.helpers |= body.helpers
            seq = _sequential(body)
            if seq is not None:
                unit_exprs[p] = seq
                self.bodies[p] = body
                self.sequential.add(p)
                self.seq_children[p] = tuple(st.name for st in body.stmts)
                continue
            if u.kind == "block":
                body = _module_chain_body(body)
            self.bodies[p] = body
            base = camel(u.name if u.kind == "block" else u.name or "Block", "Block")
            spec = _class_for(body, base, by_key, self.classes, taken)
            unit_exprs[p] = unit_call(spec, body)
        root = build_body(h, h.units[""], unit_exprs, holders, rcons, res, inference)
        self.bodies[""] = root
        self.helpers |= root.helpers
        by_name = {spec.name: spec for spec in self.classes}

        def expand(expr: tuple[Any, ...], body: Body) -> tuple[Any, ...]:
            if not any(isinstance(p, UnitCall) for p in expr):
                return expr
            out: list[Any] = []
            for p in expr:
                out += list(by_name[p.cls].call_pieces(p.path)) if isinstance(p, UnitCall) else [p]
            return tuple(out)

        self.expand = expand
        for spec in self.classes:   # children before parents: a class exists before any instance that uses it
            spec.finish(expand)
            pre = self._pre_logits_class(spec)
            self.pre_method = self.pre_method or pre
            spec.text = render_class(spec, doc=f"Block {spec.base} of the spec ({len(spec.bodies)} instance"
                                     f"{'s' if len(spec.bodies) != 1 else ''} in this network).", expand=expand,
                                     pre_logits_method=pre)
        self.root = ClassSpec(self.root_name, [root])
        self.root.finish(expand)

    def _pre_logits_class(self, spec: ClassSpec) -> bool:
        """``spec`` is the one-instance class of a head container that is no nn.Sequential (torchvision
        ConvNeXt's norm, flatten, linear) whose forward ends in the classifier: it gets ``forward_pre_logits``."""
        h = self.head
        if not h or not h["inline"] or len(spec.bodies) != 1 or spec.template.unit.path != h["inline"]:
            return False
        real = [st for st in spec.template.stmts if st.kind != "alias"]
        return bool(real) and len(h["classifiers"]) == 1 and real[-1].ref == h["classifiers"][0][len(h["inline"]) + 1:] \
            and len(real[-1].ins) == 1 and spec.template.returns == real[-1].outs

    def root_values(self) -> list[Any]:
        """The root's literal values in order (after expanding the children's constructor calls)."""
        t = self.root.template
        out: list[Any] = []
        for c in t.ctors:
            out += [p.value for p in holes_of(self.expand(c.expr, t))]
        for st in t.stmts:
            out += [p.value for p in holes_of(st.expr)]
        return out


def _network_params(parts: _Parts, graph: Graph, variants: dict[str, Graph]) -> None:
    """Make network parameters constructor arguments of the root class where the structure allows.

    ``variants[name]`` is the graph compiled with only parameter ``name`` changed. The parameter becomes an
    argument when every class is unchanged and exactly the root values equal to it changed to its new value
    (e.g. ``num_classes`` in the head's width); otherwise the value stays a literal.
    """
    base_vals = parts.root_values()
    base_key = (parts.root.template.key(), [c.text for c in parts.classes])
    spec = parts.root
    used: list[tuple[str, list[Any]]] = []
    n_ctor = sum(len(holes_of(parts.expand(c.expr, spec.template))) for c in spec.template.ctors)
    for pname, vg in variants.items():
        if not py_identifier(pname) or pname.startswith("__") or pname in RESERVED_GLOBALS or pname == "self":
            continue
        old, new = graph.params_used.get(pname), vg.params_used.get(pname)
        try:
            other = _Parts(vg, "")
        except Exception:   # the variant is only a probe: any failure means "not a constructor argument"
            continue
        if (other.root.template.key(), [c.text for c in other.classes]) != base_key:
            continue
        vals = other.root_values()
        diff = [k for k, (a, b) in enumerate(zip(base_vals, vals)) if _vk(a) != _vk(b)]
        if not diff or any(_vk(base_vals[k]) != _vk(old) or _vk(vals[k]) != _vk(new) for k in diff):
            continue
        if any(k in spec._hole_param for k in diff):
            continue
        if any(k >= n_ctor for k in diff) and not attr_ok(pname):   # read in forward as self.<name>
            continue
        for k in diff:
            spec._hole_param[k] = pname
        used.append((pname, [old]))
    if used:
        spec.params = used
        spec._attrs = sorted({n for k, n in spec._hole_param.items() if k >= n_ctor})


def _vk(v: Any) -> Any:
    return (type(v).__name__, tuple(_vk(x) for x in v) if isinstance(v, (tuple, list)) else v)


def generate(graph: Graph, *, source_note: str = "", class_prefix: str = "",
             memory_format: str = "contiguous", variants: dict[str, Graph] | None = None,
             dtype: str | None = None, inference: bool = False) -> str:
    """Return the Python source of an ``nn.Module`` equivalent to ``graph`` (depends only on torch).

    ``memory_format="channels_last"`` (chosen by the deploy pass) makes ``forward`` convert its input to
    channels-last first; the weights are converted when the module is built. ``dtype`` (``"bfloat16"`` or
    ``"float16"``, a low-precision deploy form) makes it convert a floating input to that dtype first, so
    float32 callers need no change (the outputs are in that dtype). ``source_note`` (the spec
    address) is written into the module docstring as an escaped string, never as raw text. ``variants``
    (network parameter -> the graph compiled with that parameter changed) lets the network class take those
    parameters as constructor arguments where only root values follow them (``Resnet50(num_classes=10)``).
    ``inference=True`` (a deploy form, which is for inference only) lets ops emit faster spellings of the same
    function (a depthwise 1x1 conv as a per-channel multiply-add); the state_dict keys do not change.
    """
    if memory_format not in ("contiguous", "channels_last"):
        raise ValueError(f"memory_format must be 'contiguous' or 'channels_last', got {memory_format!r}")
    if dtype not in (None, "float32", "bfloat16", "float16"):
        raise ValueError(f"dtype must be None, 'float32', 'bfloat16' or 'float16', got {dtype!r}")
    parts = _Parts(graph, class_prefix, inference)
    if variants:
        _network_params(parts, graph, variants)
    outs = {k: list(v) for k, v in graph.output_shapes.items()}
    shown_out = outs if len(outs) > 1 else next(iter(outs.values()))
    params_txt = ", ".join(f"{k}={fmt_value(v)}" for k, v in graph.params_used.items())
    doc = (f"{graph.name}({params_txt}): input {list(graph.input_shape)} -> {shown_out} "
           "(batch dimension first).")
    contract = input_contract(graph)
    extra = [("input_shape", literal(tuple(graph.input_shape))), ("reference", literal(graph.reference))]
    if contract.derived:
        extra.append(("input_sizes", literal(contract.describe())))
    if memory_format != "contiguous":
        extra.append(("memory_format", literal(memory_format)))
    cast = dtype if dtype not in (None, "float32") else None
    root_text = render_class(parts.root, doc=doc, class_attrs=extra, root=True,
                             outputs=[n for n, _ in graph.outputs],
                             channels_last=memory_format == "channels_last" and len(graph.input_shape) == 3,
                             expand=parts.expand, head=_classifier_head(graph, parts), contract=contract, cast=cast,
                             output_list=graph.output_list)
    note = source_note or graph.name
    lines = [
        "# Generated by archc. Do not edit: edit the spec and recompile.",
        literal(f"Generated by archc from {note}."),
    ]
    if "OrderedDict([" in root_text or any("OrderedDict([" in s.text for s in parts.classes):
        lines += ["from collections import OrderedDict", ""]
    lines += ["import torch", "import torch.nn.functional as F", "from torch import nn", ""]
    if "_check_input(" in root_text:
        lines += ["", CHECK_INPUT_HELPER, ""]
    for hname in sorted(parts.helpers):
        lines += ["", HELPERS[hname].strip("\n"), ""]
    if "_reset_linear(self" in root_text:
        lines += ["", RESET_LINEAR_HELPER, ""]
    if "_reset_head(self" in root_text:
        lines += ["", RESET_HEAD_HELPER, ""]
    for spec in parts.classes:
        lines += ["", spec.text, ""]
    lines += ["", root_text, "", "", *_smoke(parts.root_name, graph)]
    return "\n".join(lines)


def _classifier_head(graph: Graph, parts: _Parts) -> HeadInfo | None:
    """timm's head facts (:func:`archdsl.passes.head.head_features`) of a network ending in a classifier. A
    head container to run child by child must have become an nn.Sequential with one child per node (else no
    head API rather than a wrong one)."""
    h = head_features(graph)
    if h is None:
        return None
    children: tuple[str, ...] = ()
    inline, split, pre_method = h["inline"], h["split_node"], False
    if inline:
        body = next((b for c in parts.classes for b in c.bodies if b.unit.path == inline), None)
        if inline in parts.seq_children:    # an nn.Sequential(...) of the network (LeNet's)
            children = parts.seq_children[inline]
        elif body is not None and module_chain(body):
            children = tuple(c.path for c in body.ctors)
        elif parts.pre_method:              # its class has forward_pre_logits: the head calls it whole
            inline, split, pre_method = None, None, True
        else:
            return None
        if inline and len(children) != len(h["inline_nodes"]):
            return None
    return HeadInfo(h["num_features"], h["head_hidden_size"], h["num_classes"], h["global_pool"], h["output_fmt"],
                    h["flatten"], h["head_len"], tuple(h["classifiers"]), tuple(h["layers"]),
                    h["layer_kind"] == "conv", split, inline, children, tuple(h["inline_nodes"]), pre_method)


def _smoke(name: str, graph: Graph) -> list[str]:
    shape = literal((2, *graph.input_shape))
    return [
        'if __name__ == "__main__":',
        "    # smoke check: build the model, run a batch of 2 and print the output shapes and parameter count",
        f"    _model = {name}().eval()",
        "    with torch.no_grad():",
        f"        _out = _model(torch.randn{shape})",
        "    _shapes = {k: tuple(v.shape) for k, v in _out.items()} if isinstance(_out, dict) else tuple(_out.shape)",
        '    print(type(_model).__name__, "output", _shapes, "parameters",'
        " sum(p.numel() for p in _model.parameters()))",
        "",
    ]


def _class_for(body: Body, base: str, by_key: dict[tuple[str, Any], ClassSpec], classes: list[ClassSpec],
               taken: set[str]) -> ClassSpec:
    """The class this instance belongs to: same structure, or the same up to optional children, else new."""
    key = (base, body.key())
    spec = by_key.get(key)
    if spec is not None:
        spec.add(body)
        return spec
    for cand in classes:
        if cand.base == base and cand.try_add_optional(body):
            return cand
    name = unique(base, taken)
    taken.add(name)
    spec = ClassSpec(name, [body], base=base)
    by_key[key] = spec
    classes.append(spec)
    return spec

