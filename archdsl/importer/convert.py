"""From one traced module (an fx graph and its values) to a body of spec-level nodes.

Each fx node becomes zero or more :class:`SNode`: a registry op found by its PyTorch spelling
(``OpDef.torch_forms``, looked up by kind and target), the use of a child block or group, a plugin op, or a
free parameter. Sizes read from shapes are numbers at trace time and leave no node. The tensors of the spec
keep the batch first, the traced ones may not (a permute that moves it): the :class:`TorchCall` handed to a
form says where each input's batch is, the form writes the per-sample op, and every op's per-sample output
shape is checked against the traced one, so a wrong mapping fails here rather than in the round trip.
"""
from __future__ import annotations

import operator
from typing import Any, Callable

from ..ops import OPS, MULTI_OUTPUT_OPS
from ..ops.core import REQUIRED, ShapeError, TensorArg, TorchCall
from .attrs import read_attr
from .bound import bound_call
from .fallback import finite, locate, where_node
from .formindex import fn_names, form_index
from .tables import (VALUES_INDICES, NoValue, constant_buffer, is_batchnorm_act, stale_alias, unbatched_op,
                     wrapped_function)
from .snodes import Body, Const as _Const, Param as _Param, Ref, SNode, has_tensor as _has_tensor, hoist_params
from .snodes import plain as _plain
from .trace import ImportFailure, Traced, Val, at_defaults, class_name, is_container

__all__ = ["Ref", "SNode", "Body", "convert"]

# ops that read the batch's position through TorchCall.sample_dim: any other op needs it first
#: calls that treat dim 0 as the batch: on a value without one whose dim 0 is 1, the op is applied to its sample
_BATCH_FIRST = {("function", "torch.nn.functional.interpolate")}
_MOVED_OK = {"permute", "chunk", "split", "softmax", "mean", "reduce_sum", "amax", "amin", "concat", "stack", "roll",
             "identity"}


def _dtype(v: Val) -> str:
    """The traced dtype of a tensor value ("float32"), "" when the trace kept none."""
    return str(getattr(v.value, "dtype", "")).removeprefix("torch.")


class _Conv:
    """Converts the graph of one traced module."""

    def __init__(self, t: Traced, bodies: dict[str, Traced], kept: Callable[[Any], bool],
                 cache: dict[str, Body], fallback: Callable[[str, Any, str], bool]) -> None:
        self.t, self.bodies, self.kept, self.cache, self.fallback = t, bodies, kept, cache, fallback
        self.body = Body(t.path, class_name(t.module), t.module, t.in_shape, container=is_container(t.module))
        self.env: dict[str, Any] = {}           # node name -> Ref, a tuple of Refs, or a constant
        self.vals: dict[Ref, Val] = {}          # the traced value of each spec tensor
        self.params: dict[str, int] = {}        # get_attr node -> index of its param SNode
        self.labels: set[str] = set()
        self.index = form_index()
        self.cur: Any = None                    # the fx node being converted (where a failure is)

    def fail(self, n: Any, why: str) -> ImportFailure:
        e = ImportFailure(f"{why} (at `{n.format_node()}`)" if hasattr(n, "format_node") else why)
        return locate(e, where_node(n).under(self.t.path, self.body.cls)) if hasattr(n, "meta") else e

    def add(self, node: SNode, val: Val | list[Val]) -> Ref:
        if not finite(node.args):   # (MaxPool2dSame pads with -inf): the class is kept whole instead
            raise self.fail(self.cur, f"{node.op} with a non-finite number, which a spec cannot write")
        self.body.nodes.append(node)
        i = len(self.body.nodes) - 1
        vals = val if isinstance(val, list) else [val]
        for k, v in enumerate(vals):
            self.vals[Ref(i, k)] = v
        if node.label is not None:
            if node.label in self.labels:
                if node.kind == "op" and not OPS[node.op].stateful:
                    node.label = None       # a parameter-free module called again (ResNet's self.relu)
                else:
                    raise self.fail(self.cur, f"module {node.label} is called twice (shared weights)")
            else:
                self.labels.add(node.label)
        return Ref(i, 0)

    # ---- arguments ----------------------------------------------------------------------------------
    def call_args(self, n: Any) -> tuple[tuple[Any, ...], dict[str, Any], list[Ref]]:
        import torch.fx as fx
        tensors: list[Ref] = []

        def conv(a: Any) -> Any:
            if isinstance(a, fx.Node):
                v = self.env.get(a.name)
                if isinstance(v, Ref):
                    tensors.append(v)
                    return TensorArg(len(tensors) - 1)
                if isinstance(v, tuple) and v and all(isinstance(r, Ref) for r in v):
                    return [conv_ref(r) for r in v]
                if isinstance(v, (_Const,)):
                    return v.value
                if isinstance(v, _Param):
                    return v
                raise self.fail(n, f"{v.what} cannot be expressed" if isinstance(v, NoValue)
                                else f"an argument {a.name} the importer cannot express")
            if isinstance(a, (list, tuple)):
                return type(a)(conv(x) for x in a)
            if isinstance(a, dict):
                return {k: conv(v) for k, v in a.items()}
            return a

        def conv_ref(r: Ref) -> TensorArg:
            tensors.append(r)
            return TensorArg(len(tensors) - 1)
        args = tuple(conv(a) for a in n.args)
        kwargs = {k: conv(v) for k, v in n.kwargs.items()}
        return args, kwargs, tensors

    def shapes(self, refs: list[Ref]) -> tuple[list[tuple[int, ...]], list[int]]:
        shapes, axes = [], []
        for r in refs:
            v = self.vals[r]
            if v.fold != 1:
                raise ImportFailure("a reshape folds the batch into another axis (e.g. windows as B * nW): not "
                                    "expressible per sample")
            shapes.append(v.sample_shape)
            axes.append(v.batch if v.batch is not None else -1)     # -1: no batch axis (TorchCall)
        return shapes, axes

    # ---- nodes -----------------------------------------------------------------------------------
    def run(self) -> Body:
        first = True
        for n in self.t.gm.graph.nodes:
            self.cur = n
            val = self.t.vals.get(n.name)
            if n.op == "placeholder":
                if not first:
                    # an optional argument traced at its default (attn_mask=None): fx checks it, nothing uses it
                    self.env[n.name] = _Const(n.args[0] if n.args else None)
                    continue
                first = False
                self.env[n.name] = Ref(-1)
                self.vals[Ref(-1)] = val if val is not None else Val("tensor")
                continue
            if n.op == "output":
                out = self.env.get(n.args[0].name) if hasattr(n.args[0], "name") else None
                if not isinstance(out, Ref):
                    raise self.fail(n, "the output is not a tensor")
                self.body.out = out
                continue
            if val is None:
                continue
            if n.op == "get_attr":
                self.get_attr(n, val)
            elif val.kind not in ("tensor", "seq") or (val.kind == "seq" and not _has_tensor(val)):
                self.env[n.name] = _Const(_plain(val))    # a size, a shape, an assert: known at trace time
            elif n.op == "call_module":
                self.call_module(n, val)
            else:
                self.call(n, val)
        hoist_params(self.body)
        return self.body

    def get_attr(self, n: Any, val: Val) -> None:
        try:
            got = read_attr(self.t.module, n.target, list(n.users))    # a submodule's: a dotted label
        except ImportFailure as e:
            raise self.fail(n, str(e)) from None
        if got.kind == "meta":
            self.env[n.name] = _Const(None)
        elif got.kind == "param":
            self.env[n.name] = _Param(got.label, got.shape, val.value)
        elif got.kind == "const":       # fx lifted it out of the code: its traced values
            try:
                node = constant_buffer(f"the tensor constant {n.target}", val.value)
            except ImportFailure as e:
                raise self.fail(n, str(e)) from None
            self.env[n.name] = self.add(node, Val("tensor", tuple(val.shape), None, value=val.value))
        else:
            self.env[n.name] = self.add(SNode("param", "buffer", got.args, got.label, []),
                                        Val("tensor", got.shape, None, value=val.value))

    def param_ref(self, p: "_Param", batched: bool) -> Ref:
        key = (p.name, batched)
        idx = self.params.get(str(key))
        if idx is not None:
            return Ref(idx)
        shape = list(p.shape[1:]) if batched else list(p.shape)
        node = SNode("param", "parameter", {"shape": shape, "batch_dim": batched}, p.name, [])
        r = self.add(node, Val("tensor", (1, *shape) if batched else tuple(shape), 0 if batched else None,
                               value=p.value))
        self.params[str(key)] = r.node
        return r

    def call_module(self, n: Any, val: Val) -> None:
        sub = self.t.gm.get_submodule(n.target)
        label = n.target
        args, kwargs, refs = self.call_args(n)
        path = f"{self.t.path}.{n.target}" if self.t.path else n.target
        if is_batchnorm_act(sub):
            self.env[n.name] = self.batchnorm_act(n, sub, refs, val, label)
            return
        single = len(refs) == 1 and args[:1] == (TensorArg(0),) and at_defaults(sub, args[1:], kwargs)
        if self.kept(sub) and (val.kind == "seq" or not single):
            self.env[n.name] = bound_call(self, n, sub, args, kwargs, refs, val, label)
            return
        if not single:
            if ("module", class_name(sub)) in self.index and not self.kept(sub):
                self.env[n.name] = self.module_call(n, sub, args, kwargs, refs, val, label)
                return
            raise self.fail(n, "a module called with more than one tensor")
        child = None
        if path in self.bodies and not self.kept(sub):
            child = self.cache.get(path)
            if child is None:
                try:
                    child = _Conv(self.bodies[path], self.bodies, self.kept, self.cache, self.fallback).run()
                    self.cache[path] = child
                except ImportFailure as e:
                    if not self.fallback(path, sub, str(e)):
                        raise
                    child = None
        if child is not None:
            kind = "group" if child.container else "use"
            self.env[n.name] = self.add(SNode(kind, child.cls, {}, label, refs, child=child, module=sub), val)
            return
        if self.kept(sub) or path in self.bodies:
            self.env[n.name] = self.add(SNode("plugin", class_name(sub), {}, label, refs, module=sub), val)
            return
        self.env[n.name] = self.apply(n, ("module", class_name(sub)), sub, args, kwargs, refs, val, label)

    def batchnorm_act(self, n: Any, sub: Any, refs: list[Ref], val: Val, label: str) -> Ref:
        """timm's BatchNormAct2d: batchnorm labelled with its path (its keys), then drop and act (no keys)."""
        import torch.nn as nn
        r = self.apply(n, ("module", "torch.nn.BatchNorm2d"), sub, (TensorArg(0),), {}, refs, val, label)
        for m in (sub.drop, sub.act):
            if type(m) is nn.Identity:
                continue
            key = ("module", class_name(m))
            if key not in self.index:
                raise self.fail(n, f"BatchNormAct2d with {class_name(m)}")
            r = self.apply(n, key, m, (TensorArg(0),), {}, [r], val, None)
        return r

    def module_call(self, n: Any, sub: Any, args: tuple[Any, ...], kwargs: dict[str, Any], refs: list[Ref],
                    val: Val, label: str) -> Any:
        """A module op called with its tensor more than once or with options (``mha(x, x, x,
        need_weights=False)``); a tuple result's first item is the op (the rest must be None)."""
        uniq: list[Ref] = []
        for r in refs:
            if r not in uniq:
                uniq.append(r)

        def remap(a: Any) -> Any:
            if isinstance(a, TensorArg):
                return TensorArg(uniq.index(refs[a.k]))
            if isinstance(a, (list, tuple)):
                return type(a)(remap(x) for x in a)
            return a
        args, kwargs = tuple(remap(a) for a in args), {k: remap(v) for k, v in kwargs.items()}
        if val.kind == "seq":
            first, rest = val.items[0], val.items[1:]
            if first.kind != "tensor" or any(i.kind != "none" for i in rest):
                raise self.fail(n, "a module op whose result holds more than one tensor")
            r = self.apply(n, ("module", class_name(sub)), sub, args, kwargs, uniq, first, label)
            return (r, *[_Const(None)] * len(rest))
        return self.apply(n, ("module", class_name(sub)), sub, args, kwargs, uniq, val, label)

    def call(self, n: Any, val: Val) -> None:
        kind = "method" if n.op == "call_method" else "function"
        target = n.target
        if n.op != "call_method":
            names = fn_names(n.target)
            target = next((t for t in names if (kind, t) in self.index), names[0])
        if n.op == "call_function" and n.target is operator.getitem:
            return self.getitem(n, val)
        if target in ("torch.cat", "torch.concat") and n.args and isinstance(n.args[0], (list, tuple)):
            rest = [self.env.get(a.name) for a in n.args[0] if not _empty(self.env.get(getattr(a, "name", "")))]
            if len(rest) == 1 < len(n.args[0]) and isinstance(rest[0], Ref):
                self.env[n.name] = rest[0]      # cat([x[:, :0], y]) is y (EVA-02 with no class token)
                return
        args, kwargs, refs = self.call_args(n)
        if kind == "method" and target in ("expand", "expand_as") and isinstance(self.env.get(n.args[0].name), _Param):
            p = self.env[n.args[0].name]
            if p.shape[0] != 1 or val.batch != 0:
                raise self.fail(n, "a parameter expanded other than over the batch")
            self.env[n.name] = self.param_ref(p, True)
            return
        if val.kind == "seq" and target in VALUES_INDICES:     # x.max(dim) is (values, indices): values only
            r = self.apply(n, (kind, target), None, args, kwargs, refs, val.items[0], None)
            self.env[n.name] = (r, NoValue(f"the indices of {target} (an integer tensor)"))
            return
        if target in ("unbind", "torch.unbind"):
            return self.unbind(n, val, args, kwargs, refs)
        if kind == "method" and target.endswith("_") and (kind, target) not in self.index \
                and (kind, target[:-1]) in self.index and refs:
            # x.add_(y), its result unused (NaFlexViT's position embedding): the op, read by x's later uses
            stale = stale_alias(self.t.gm.graph, n, self.t.vals)
            if stale is not None:
                raise self.fail(n, f"the in-place {target} also changes {stale}, which shares its storage")
            r = self.apply(n, (kind, target[:-1]), None, args, kwargs, refs, val, None)
            self.env[n.name] = self.env[n.args[0].name] = r
            return
        self.env[n.name] = self.apply(n, (kind, target), None, args, kwargs, refs, val, None)

    def _resolve_params(self, n: Any, args: tuple[Any, ...], kwargs: dict[str, Any], refs: list[Ref],
                        val: Val) -> tuple[tuple[Any, ...], dict[str, Any], list[Ref]]:
        """Parameters used in math: batch_dim when they carry a leading 1 of the batched operand's rank."""
        out_rank = len(val.shape) if val.kind == "tensor" else 0

        def fix(a: Any) -> Any:
            if isinstance(a, _Param):
                batched = len(a.shape) == out_rank and a.shape[0] == 1 and val.batch == 0
                refs.append(self.param_ref(a, batched))
                return TensorArg(len(refs) - 1)
            if isinstance(a, (list, tuple)):
                return type(a)(fix(x) for x in a)
            return a
        args, kwargs = tuple(fix(a) for a in args), {k: fix(v) for k, v in kwargs.items()}
        # the op's inputs in the order the call names them (F.linear(x, weight, bias) with a parameter weight)
        order: list[int] = []

        def seen(a: Any) -> None:
            if isinstance(a, TensorArg):
                if a.k not in order:
                    order.append(a.k)
            elif isinstance(a, (list, tuple)):
                for x in a:
                    seen(x)
        for a in (*args, *kwargs.values()):
            seen(a)
        order += [k for k in range(len(refs)) if k not in order]
        if order == list(range(len(refs))):
            return args, kwargs, refs

        def renum(a: Any) -> Any:
            if isinstance(a, TensorArg):
                return TensorArg(order.index(a.k))
            if isinstance(a, (list, tuple)):
                return type(a)(renum(x) for x in a)
            return a
        return (tuple(renum(a) for a in args), {k: renum(v) for k, v in kwargs.items()},
                [refs[k] for k in order])

    def layer_scale(self, key: tuple[str, str], args: tuple[Any, ...], refs: list[Ref], val: Val) -> Ref | None:
        """``gamma * x`` with a per-channel parameter ((C, 1, 1) over [C, H, W], (C,) over the last dim) is the
        ``layer_scale`` op labelled with the parameter's name (ConvNeXt, CaiT, ...)."""
        if key not in (("function", "operator.mul"), ("method", "mul"), ("function", "torch.mul")) or len(args) != 2:
            return None
        ps = [a for a in args if isinstance(a, _Param)]
        ts = [a for a in args if isinstance(a, TensorArg)]
        if len(ps) != 1 or len(ts) != 1 or len(refs) != 1 or "layer_scale" not in OPS:
            return None
        p, v = ps[0], self.vals[refs[0]]
        shape = v.sample_shape
        if v.batch != 0 or v.fold != 1:
            return None
        dim: int | None
        if len(shape) == 3 and p.shape == (shape[0], 1, 1):
            dim = 1
        elif p.shape == (shape[-1],):
            dim = -1 if len(shape) == 3 else None
        else:
            return None
        a: dict[str, Any] = {} if dim is None else {"dim": dim}
        return self.add(SNode("op", "layer_scale", a, p.name, refs), val)

    def apply(self, n: Any, key: tuple[str, str], module: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
              refs: list[Ref], val: Val, label: str | None) -> Any:
        ls = self.layer_scale(key, args, refs, val)
        if ls is not None:
            return ls
        args, kwargs, refs = self._resolve_params(n, args, kwargs, refs, val)
        what = f"{key[0]} {key[1]}"
        if not refs and val.kind == "tensor" and val.batch is None and val.value is not None \
                and n.op == "call_function" and wrapped_function(n.target):
            try:    # a tensor an fx-wrapped function computed from constants alone: its traced values
                return self.add(constant_buffer(what, val.value), val)
            except ImportFailure as e:
                raise self.fail(n, str(e)) from None
        unb = [self.vals[r].batch is None for r in refs]
        if refs and all(unb) and val.kind == "tensor":
            got_u = unbatched_op(key[0], key[1], args, kwargs, [self.vals[r].shape for r in refs], val.shape)
            if got_u is not None:
                if got_u[0] == "identity":
                    self.vals[refs[0]] = val
                    return refs[0]
                return self.add(SNode("op", got_u[0], got_u[1], label, refs), val)
        if any(unb) and not all(unb):
            refs = [self.unbatched_operand(r, refs) if u else r for r, u in zip(refs, unb)]
        one = self.vals[refs[0]].shape if refs and all(unb) and key in _BATCH_FIRST else ()
        if len(one) == 4 and one[0] == 1 and val.kind == "tensor" and val.shape[:1] == (1,):
            # F.interpolate of a parameter (1, C, H, W): the op on its one sample, the leading 1 put back after
            r = self.reshape_to(refs[0], Val("tensor", one[1:], None))
            r = self.apply(n, key, module, args, kwargs, [r], Val("tensor", val.shape[1:], None), label)
            return self.reshape_to(r, val)
        forms = self.index.get(key)
        if not forms:
            raise self.fail(n, f"no op of the language is written as the {what}")
        if not refs:
            raise self.fail(n, f"computation on parameters or constants ({what})")
        shapes, axes = self.shapes(refs)
        outs = val.items if val.kind == "seq" else [val]
        call = TorchCall(module, args, kwargs, shapes, axes, [o.sample_shape for o in outs],
                         [o.batch if o.batch is not None else -1 for o in outs],
                         [_dtype(self.vals[r]) for r in refs], [_dtype(o) for o in outs])
        why = ""
        for op, form in forms:
            try:
                got = form.args(call)
            except (ShapeError, KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
                why = getattr(e, "message", str(e))
                continue
            if got is None:
                continue
            if op not in _MOVED_OK and any(a not in (0, -1) for a in axes):
                why = f"the batch is at dim {max(axes)} here"
                continue
            if op in ("concat", "stack", "add", "mul") and len(refs) == 1 and op != "stack":
                op, got = "identity", {}            # torch.cat([x], 1): DenseNet's first layer
            if op == "identity" and len(refs) > 1:  # x.type_as(y): y only lends its dtype
                refs, shapes = refs[:1], shapes[:1]
            if op in MULTI_OUTPUT_OPS:
                node = SNode("op", op, got, label, refs, n_out=len(outs))
                r = self.add(node, outs)
                return tuple(Ref(r.node, k) for k in range(len(outs)))
            try:
                self.check(op, got, shapes, val)
            except (ShapeError, ImportFailure) as e:
                why = getattr(e, "message", str(e))
                continue
            return self.add(SNode("op", op, got, label, refs), val)
        raise self.fail(n, f"the {what} is not expressible" + (f": {why}" if why else ""))

    def unbatched_operand(self, r: Ref, refs: list[Ref]) -> Ref:
        """A value without the batch axis meeting batched ones: torch lines it up from the right with the
        batch, so a leading 1 of the batched operands' whole rank (``gamma.reshape(1, -1, 1, 1)``) is dropped,
        in the reshape that made it when it was the node just before."""
        v = self.vals[r]
        rank = max(len(self.vals[q].shape) for q in refs if self.vals[q].batch is not None)
        if len(v.shape) != rank or v.shape[0] != 1:
            return r
        nv = Val("tensor", v.shape[1:], None)
        node = self.body.nodes[r.node] if r.node >= 0 else None
        if node is not None and r.node == len(self.body.nodes) - 1 and node.op == "reshape" and r.k == 0:
            node.args = {"shape": list(nv.shape)}
            self.vals[r] = nv
            return r
        return self.add(SNode("op", "reshape", {"shape": list(nv.shape)}, None, [r]), nv)

    def check(self, op: str, args: dict[str, Any], shapes: list[tuple[int, ...]], val: Val) -> None:
        d = OPS[op]
        full = {a.name: a.default for a in d.args}
        full.update(args)
        missing = [k for k, v in full.items() if v is REQUIRED]
        if missing:
            raise ImportFailure(f"{op} lacks {missing}")
        a = d.normalize(shapes, full) if d.normalize else full
        got = tuple(d.shape(shapes, a))
        if val.kind != "tensor" or got != val.sample_shape:
            raise ImportFailure(f"{op} gives {list(got)} where the model has {list(val.sample_shape)}")

    def reshape_to(self, r: Ref, val: Val) -> Ref:
        if val.batch is None and val.kind == "tensor" and not val.shape:
            val = Val("tensor", (1,), None)     # a 0-d value (weights[i]) as [1]: it broadcasts the same
        if self.vals[r].sample_shape == val.sample_shape:
            self.vals[r] = val
            return r
        return self.add(SNode("op", "reshape", {"shape": list(val.sample_shape)}, None, [r]), val)

    def unbind(self, n: Any, val: Val, args: tuple[Any, ...], kwargs: dict[str, Any], refs: list[Ref]) -> None:
        # unbind(d) is chunk(size, d) then a reshape of each piece that drops the dim
        shapes, axes = self.shapes(refs)
        call = TorchCall(None, args, kwargs, shapes, axes)
        d = call.sample_dim(call.arg(1, "dim", 0))
        size = shapes[0][d]
        node = SNode("op", "chunk", {"chunks": size, "dim": d + 1}, None, refs, n_out=size)
        piece = list(shapes[0])
        piece[d] = 1
        r = self.add(node, [Val("tensor", (1, *piece), 0)] * size)
        self.env[n.name] = tuple(self.reshape_to(Ref(r.node, k), item) for k, item in enumerate(val.items))

    def getitem(self, n: Any, val: Val) -> None:
        src = self.env.get(n.args[0].name)
        idx = n.args[1]
        if isinstance(src, tuple):         # an output of chunk/split/unbind
            self.env[n.name] = src[idx]
            return
        if isinstance(src, _Param):
            src = self.param_ref(src, False)
        if not isinstance(src, Ref):
            raise self.fail(n, "indexing a value the importer cannot express")
        ix = self.env.get(idx.name) if hasattr(idx, "name") else None
        if isinstance(ix, Ref):             # table[index]: the rows picked by an integer tensor
            iv = self.vals[ix]
            if self.vals[src].batch is not None or iv.fold != 1:
                raise self.fail(n, "indexing a batched tensor with a tensor")
            self.env[n.name] = self.add(SNode("op", "gather_rows", {}, None, [src, ix]), val)
            return
        sv = self.vals[src]
        idx = _consts(idx, self.env)        # x[:, :n] with n = t.shape[1]: a size known at trace time
        items = list(idx) if isinstance(idx, tuple) else [idx]
        items = [i for i in items if i is not None]     # a new axis (x[:, None]): the reshape below adds it
        if Ellipsis in items:
            e = items.index(Ellipsis)
            items = items[:e] + [slice(None)] * (len(sv.shape) - len(items) + 1) + items[e + 1:]
        r = src
        for dim, it in enumerate(items):
            if isinstance(it, slice) and it == slice(None):
                continue
            if dim == sv.batch:
                raise self.fail(n, "indexing along the batch")
            size = sv.shape[dim]
            if isinstance(it, int):
                it = it % size
                it = slice(it, it + 1, 1)
            if not isinstance(it, slice) or not all(v is None or isinstance(v, int) for v in
                                                    (it.start, it.stop, it.step)):
                raise self.fail(n, "indexing with a tensor or a size read at run time")
            start, stop, step = it.indices(size)
            if not range(start, stop, step):   # nothing: left out where it is concatenated, refused elsewhere
                self.env[n.name] = NoValue(_EMPTY)
                return
            sdim = dim - 1 if sv.batch is not None and dim > sv.batch else dim
            cur = self.vals[r]
            shape = list(cur.sample_shape)
            shape[sdim] = len(range(start, stop, step))
            args = {"dim": sdim + 1, "start": start, "end": stop, "step": step}
            r = self.add(SNode("op", "slice", args, None, [r]), Val("tensor", (1, *shape), 0))
        self.env[n.name] = self.reshape_to(r, val)


_EMPTY = "an empty slice (x[:, :0])"


def _empty(v: Any) -> bool:
    return isinstance(v, NoValue) and v.what == _EMPTY


def _consts(a: Any, env: dict[str, Any]) -> Any:
    if isinstance(a, (slice, tuple)):
        got = tuple(_consts(v, env) for v in ((a.start, a.stop, a.step) if isinstance(a, slice) else a))
        return slice(*got) if isinstance(a, slice) else got
    c = env.get(a.name) if hasattr(a, "name") and hasattr(a, "op") else None
    return c.value if isinstance(c, _Const) and isinstance(c.value, int) else a


def convert(root: Traced, bodies: dict[str, Traced], kept: Callable[[Any], bool],
            fallback: Callable[[str, Any, str], bool]) -> Body:
    """The body of ``root`` with every child body converted. A child that cannot be is handed to
    ``fallback(path, module, why)``: True keeps it as a plugin op (``kept`` must then say so), False
    re-raises the ImportFailure."""
    return _Conv(root, bodies, kept, {}, fallback).run()
