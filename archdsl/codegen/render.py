"""One generated class: the instances it serves, their differing values as constructor arguments, its text.

A :class:`ClassSpec` collects the :class:`~archdsl.codegen.program.Body` of every unit instance written with
it. :meth:`ClassSpec.finish` turns the literal values that differ between instances into constructor
arguments (and values of optional children into ``bool`` flags) and writes the class. Everything is rendered
through :func:`~archdsl.codegen.names.literal` or checked identifiers.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..ops import MOD, In, Kw, Lit
from ..passes.sizes import SizeContract
from .names import RESERVED_GLOBALS, GenerationError, attr_ok, literal, py_identifier, unique
from .head import RESET_LINEAR_HELPER, HeadInfo, inline_head, split_at_node, with_head_api
from .program import PLAIN_CALL, SEQUENTIAL_SLICE, Body, Ctor, Stmt, UnitCall, holes_of, module_chain

__all__ = ["UnitCall", "ClassSpec", "render_class", "input_guard", "CHECK_INPUT_HELPER", "RESET_LINEAR_HELPER", "render_expr", "unit_call", "NL", "IND", "DED"]

MISSING: Any = object()
NL, IND, DED = "\n", "\x01", "\x02"   # layout pieces: new line, indent one level, dedent


def unit_call(spec: "ClassSpec", body: Body) -> tuple[Any, ...]:
    return (UnitCall(body.unit.path, spec.name),)


def _vkey(v: Any) -> Any:
    """Values compare by type too: 1, 1.0 and True must not share a literal."""
    if isinstance(v, tuple):
        return ("tuple", tuple(_vkey(x) for x in v))
    return (type(v).__name__, v)


def _parse_args(text: str) -> dict[str, Any]:
    """``c=64, stride=2`` (ScopeFrame.args) -> {'c': 64, 'stride': 2}; only plain numbers are kept."""
    out: dict[str, Any] = {}
    for m in re.finditer(r"(?:^|, )([A-Za-z_][A-Za-z0-9_]*)=(-?\d+(?:\.\d+)?)(?=, [A-Za-z_]|$)", text):
        raw = m.group(2)
        out[m.group(1)] = float(raw) if "." in raw else int(raw)
    return out


def _optional_names(big: Body, small: Body) -> set[str] | None:
    """Names N such that ``small`` is ``big`` with the child N replaced by an identity named N, else None."""
    if big.n_in != small.n_in or big.returns != small.returns or len(big.stmts) != len(small.stmts):
        return None
    names: set[str] = set()
    for a, b in zip(big.stmts, small.stmts):
        if a.key() == b.key():
            continue
        if (b.kind == "alias" and a.ins == b.ins and a.outs == b.outs and len(a.ins) == 1 and a.ref == b.name
                and attr_ok(a.ref) and (a.kind == "call" or (a.kind == "op" and a.expr == PLAIN_CALL))):
            names.add(a.ref)
            continue
        return None
    if not names:
        return None
    rest = [c.key() for c in big.ctors if c.path.split(".")[0] not in names]
    if rest != [_ctor_key(c) for c in small.ctors]:
        return None
    return names


def _ctor_key(c: Ctor) -> Any:
    return c.key()


@dataclass
class ClassSpec:
    """A generated class and the unit instances it serves."""

    name: str
    bodies: list[Body]
    base: str = ""
    optional: set[str] = field(default_factory=set)
    text: str = ""
    params: list[tuple[str, list[Any]]] = field(default_factory=list)   # (name, value per instance)
    index: dict[str, int] = field(default_factory=dict)                  # unit path -> instance number
    _hole_param: dict[int, str] = field(default_factory=dict)
    _hole_const: dict[int, Any] = field(default_factory=dict)
    _attrs: list[str] = field(default_factory=list)
    _flags: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for k, b in enumerate(self.bodies):
            self.index[b.unit.path] = k

    @property
    def template(self) -> Body:
        return self.bodies[0]

    def add(self, body: Body) -> None:
        self.index[body.unit.path] = len(self.bodies)
        self.bodies.append(body)

    def try_add_optional(self, body: Body) -> bool:
        """Join when ``body`` is the template with children made optional, or the other way round."""
        if any(b.key() == body.key() for b in self.bodies):
            self.add(body)
            return True
        names = _optional_names(self.template, body)
        if names is not None:
            self.optional |= names
            self.add(body)
            return True
        names = _optional_names(body, self.template)
        if names is not None and all(_optional_names(body, b) is not None or b.key() == self.template.key()
                                     for b in self.bodies):
            self.optional |= names
            self.bodies.insert(0, body)
            self.index = {b.unit.path: k for k, b in enumerate(self.bodies)}
            return True
        return False

    # ---------------------------------------------------------------------------------------- finishing
    def _entries(self, b: Body, expand: Any) -> list[list[Any]]:
        """The holes of ``b`` aligned with the template's entries (MISSING where ``b`` lacks an optional child)."""
        t = self.template
        out: list[list[Any]] = []
        have = {c.path: c for c in b.ctors}
        for c in t.ctors:
            top = c.path.split(".")[0]
            mine = have.get(c.path)
            if mine is None:
                if top not in self.optional:
                    raise GenerationError(f"internal: {b.unit.path} lacks {c.path}")
                out.append([MISSING] * len(holes_of(expand(c.expr, t))))
                continue
            out.append(holes_of(expand(mine.expr, b)))
        for s in b.stmts:
            out.append(holes_of(s.expr))
        return out

    def finish(self, expand: Any = None) -> None:
        """Decide constructor arguments from the instances' values and write the class text."""
        expand = expand or (lambda e, b: e)
        per_inst = [self._entries(b, expand) for b in self.bodies]
        flat = [[h for entry in inst for h in entry] for inst in per_inst]
        n_holes = len(flat[0])
        hints = self._hints(expand)
        vectors: list[list[Any]] = []
        for k in range(n_holes):
            vec = [inst[k] if inst[k] is MISSING else (inst[k].value) for inst in flat]
            vectors.append(vec)
        taken = set(RESERVED_GLOBALS) | {c.path.split(".")[0] for c in self.template.ctors} | {"self"}
        block_args = [_parse_args(b.unit.args) for b in self.bodies]
        in_ch = [b.in_shapes[0][0] if b.in_shapes and b.in_shapes[0] else None for b in self.bodies]
        params: list[tuple[str, list[Any]]] = []
        for k, vec in enumerate(vectors):
            present = [v for v in vec if v is not MISSING]
            if len({_vkey(v) for v in present}) <= 1:
                self._hole_const[k] = present[0] if present else None
                continue
            match = None
            for pname, pvec in params:
                if all(a is MISSING or b is MISSING or _vkey(a) == _vkey(b) for a, b in zip(vec, pvec)):
                    match = pname
                    for i, v in enumerate(vec):
                        if pvec[i] is MISSING:
                            pvec[i] = v
                    break
            if match is None:
                match = self._name_for(vec, block_args, in_ch, hints[k], taken)
                taken.add(match)
                params.append((match, list(vec)))
            self._hole_param[k] = match
        for pname, pvec in params:   # a value no instance needs (its optional child is absent): any one will do
            fill = next(v for v in pvec if v is not MISSING)
            pvec[:] = [fill if v is MISSING else v for v in pvec]
        taken_flags = {p for p, _ in params} | set(RESERVED_GLOBALS)
        for n in sorted(self.optional):
            fname = unique(n if py_identifier(n) and n not in taken_flags else "has_" + n, taken_flags)
            taken_flags.add(fname)
            taken.add(fname)
            self._flags[n] = fname
            params.append((fname, [any(c.path == n for c in b.ctors) for b in self.bodies]))
        self.params = params
        n_ctor = sum(len(holes_of(expand(c.expr, self.template))) for c in self.template.ctors)
        self._attrs = sorted({name for k, name in self._hole_param.items() if k >= n_ctor})

    def _hints(self, expand: Any) -> list[str]:
        out: list[str] = []
        t = self.template
        for c in t.ctors:
            for p in holes_of(expand(c.expr, t)):
                base = (p.name if isinstance(p, Lit) else p.name) or "value"
                out.append(f"{c.path.replace('.', '_')}_{base}")
        for s in t.stmts:
            for p in holes_of(s.expr):
                base = (p.name if isinstance(p, Lit) else p.name) or "value"
                out.append(f"{s.name.replace('.', '_')}_{base}" if s.name else base)
        return out

    def _name_for(self, vec: list[Any], block_args: list[dict[str, Any]], in_ch: list[Any], hint: str,
                  taken: set[str]) -> str:
        present = [(i, v) for i, v in enumerate(vec) if v is not MISSING]
        for name in block_args[0]:
            if name in taken or not attr_ok(name) or name in RESERVED_GLOBALS:
                continue
            if all(name in block_args[i] and _vkey(block_args[i][name]) == _vkey(v) for i, v in present):
                return name
        if "in_channels" not in taken and all(_vkey(in_ch[i]) == _vkey(v) for i, v in present):
            return "in_channels"
        base = re.sub(r"[^A-Za-z0-9_]", "_", hint).strip("_") or "value"
        if not attr_ok(base) or base[0].isdigit():
            base = "arg_" + base
        return unique(base, taken)

    def hole_text(self, k: int, inst: int, fwd: bool) -> str:
        if k in self._hole_param:
            name = self._hole_param[k]
            return f"self.{name}" if fwd else name
        return literal(self._hole_const[k])

    def call_pieces(self, path: str) -> tuple[Any, ...]:
        """``Name(a=1, b=2)`` for the instance at ``path``, its values as Lit pieces."""
        k = self.index[path]
        out: list[Any] = [self.name + "("]
        for j, (pname, vals) in enumerate(self.params):
            out += [", " if j else "", pname + "=", Lit(vals[k], pname)]
        out.append(")")
        return tuple(out)


# --------------------------------------------------------------------------------------------- rendering
class _Holes:
    """Hands out hole texts in template order."""

    def __init__(self, spec: ClassSpec | None, fwd_from: int) -> None:
        self.spec, self.k, self.fwd_from = spec, 0, fwd_from

    def next(self, piece: Any) -> str:
        k = self.k
        self.k += 1
        if self.spec is None:
            return literal(piece.value)
        return self.spec.hole_text(k, 0, k >= self.fwd_from)


def render_expr(expr: tuple[Any, ...], holes: _Holes, ins: list[str] | None = None, mod: str = "",
                indent: str = "") -> str:
    out: list[str] = []
    depth = 0
    for p in expr:
        if isinstance(p, str):
            if p == IND or p == DED:
                depth += 1 if p == IND else -1
            elif p == NL:
                out.append("\n" + indent + "    " * depth)
            else:
                out.append(p)
        elif isinstance(p, Lit):
            out.append(holes.next(p))
        elif isinstance(p, Kw):
            k = holes.k
            text = holes.next(p)
            if holes.spec is None or k not in holes.spec._hole_param:
                value = p.value if holes.spec is None else holes.spec._hole_const[k]
                if _vkey(value) == _vkey(p.default):
                    continue
            out.append(f"{p.sep}{p.name}={text}")
        elif isinstance(p, In):
            assert ins is not None
            out.append(ins[p.k])
        elif p is MOD:
            out.append(mod)
        else:
            raise TypeError(f"internal: unknown piece {p!r}")
    return "".join(out)


def _ref(path: str, kinds: dict[str, str], tensors: frozenset[str] | set[str] = frozenset()) -> str:
    """A Python expression for the module (or, for a path in ``tensors``, the parameter or buffer) at relative
    ``path`` from ``self``."""
    ref = "self"
    parts = path.split(".")
    for k, name in enumerate(parts):
        parent = ".".join(parts[:k])
        kind = kinds.get(parent, "class") if parent else "class"
        if k == len(parts) - 1 and path in tensors and kind in ("list", "dict"):
            # a parameter inside a holder ('"layer_scale.gamma": layer_scale(...)'): ModuleDict['gamma'] and
            # ModuleList[i] index modules only; attribute access reaches the holder's own parameters
            ref = f"getattr({ref}, {literal(name)})"
        elif kind == "list":
            ref += f"[{int(name)}]"
        elif kind == "dict":
            ref += f"[{literal(name)}]"
        elif attr_ok(name):
            ref += f".{name}"
        else:
            ref = f"getattr({ref}, {literal(name)})"
    return ref


def _assign(path: str, value: str, kinds: dict[str, str], param: bool = False, buffer: bool = False,
            persistent: bool = True) -> str:
    parent, _, name = path.rpartition(".")
    owner = _ref(parent, kinds) if parent else "self"
    if buffer:   # a plain tensor attribute would not be registered (nor be a state_dict key)
        tail = "" if persistent else ", persistent=False"
        return f"{owner}.register_buffer({literal(name)}, {value}{tail})"
    if param and parent and kinds.get(parent) in ("list", "dict"):   # add_module refuses a Parameter
        return f"{owner}.register_parameter({literal(name)}, {value})"
    if parent and kinds.get(parent) in ("list", "dict"):
        return f"{owner}.add_module({literal(name)}, {value})"
    if attr_ok(name):
        return f"{owner}.{name} = {value}"
    if param:
        return f"{owner}.register_parameter({literal(name)}, {value})"
    return f"{owner}.add_module({literal(name)}, {value})"


def _names(body: Body) -> dict[int, str]:
    """Variable names: ``x`` for a value read once by the next statement, ``x<k>`` otherwise."""
    uses: dict[int, list[int]] = {}
    alias: dict[int, int] = {}
    for si, s in enumerate(body.stmts):
        if s.kind == "alias":
            alias[s.outs[0]] = s.ins[0]
    canon = {}

    def c(v: int) -> int:
        while v in alias:
            v = alias[v]
        return v
    real = [s for s in body.stmts if s.kind != "alias"]
    for si, s in enumerate(real):
        for i in s.ins:
            uses.setdefault(c(i), []).append(si)
    returned = {c(v) for v in body.returns}
    names: dict[int, str] = {}
    for v in range(body.n_in):
        us = uses.get(v, [])
        names[v] = "x" if body.n_in == 1 and us == [0] and v not in returned else (
            "x_in" if body.n_in == 1 else f"x_in{v}")
    for si, s in enumerate(real):
        for o in s.outs:
            us = uses.get(o, [])
            chained = us == [si + 1] and o not in returned
            last_out = si == len(real) - 1 and not us and body.returns == (o,)
            names[o] = "x" if len(s.outs) == 1 and (chained or last_out) else f"x{o}"
    for v in list(alias):
        canon[v] = c(v)
    for v, t in canon.items():
        names[v] = names[t]
    return names


def _stateless_module(s: Stmt) -> bool:
    """A parameter-free op emitted as a child module (a labelled ``avgpool`` of the network)."""
    return s.module_form is not None and s.module_form != ("<module>",)


def _head_start(real: list[Stmt], n_in: int, returns: tuple[int, ...], head_len: int | None = None) -> int | None:
    """Where the classification head of a root forward begins (the ``forward_features`` / ``forward_head``
    split, as in timm), or None when the forward has no such head.

    The head is the trailing chain that ends with the statement producing the one output and is, before
    that last statement, made only of parameter-free ops (pooling, flatten, dropout): ResNet's
    ``avgpool, flatten, fc``. The split is kept only where the chain's input is the one value alive at that
    point, so ``forward_features`` returns exactly what ``forward_head`` needs.

    ``head_len``: the head is the last ``head_len`` statements, a chain that pools first and then runs
    layers of its own (GhostNet's ``pool, conv_head, act, flatten, classifier``, where timm's
    ``forward_features`` ends before the pool); kept only where those statements are such a chain.
    """
    if n_in != 1 or len(returns) != 1 or not real or real[-1].outs != returns or len(real[-1].ins) != 1:
        return None
    if head_len is not None and 0 < head_len < len(real):
        j = len(real) - head_len
        if all(len(real[k].ins) == 1 and set(real[k].ins) <= set(real[k - 1].outs) for k in range(j + 1, len(real))):
            return _reads_only_features(real, j)
    j = len(real) - 1
    read = {i for s in real for i in s.ins} | set(returns)

    def dead(s: Stmt) -> bool:   # an unused result (ViT's patch tokens beside the class token) is no step
        return s.kind == "op" and not s.ref and not (set(s.outs) & read)

    while j > 0:
        k = j - 1
        while k > 0 and dead(real[k]):
            k -= 1
        prev = real[k]
        # (a multi-output op such as a split counts as a step when the chain reads one of its outputs)
        if not (set(real[j].ins) <= set(prev.outs) and len(prev.ins) == 1 and prev.kind == "op"
                and (not prev.ref or _stateless_module(prev))):
            break
        j = k
    return _reads_only_features(real, j)


def _reads_only_features(real: list[Stmt], j: int) -> int | None:
    """``j`` where the statements from ``j`` on read nothing from the body but the one features value."""
    if j == 0 or len(real[j].ins) != 1:
        return None
    feat = real[j].ins[0]
    for si in range(j, len(real)):        # the head reads nothing from the body but the features
        if any(i != feat and not any(i in real[k].outs for k in range(j, si)) for i in real[si].ins):
            return None
    return j


def render_class(spec: ClassSpec, *, doc: str, class_attrs: list[tuple[str, str]] | None = None, root: bool = False,
                 outputs: list[str] | None = None, channels_last: bool = False, expand: Any = None,
                 head: HeadInfo | None = None, contract: SizeContract | None = None,
                 cast: str | None = None, output_list: bool = False, pre_logits_method: bool = False) -> str:
    """The class text. ``output_list``: several outputs are returned as a list (else a dict by name). ``contract`` (the root): the forward first checks its input against it
    (:func:`input_guard`). ``head`` (the root of a classifier: ``(num_features, num_classes)``) adds timm's model
    API where the forward has a classification head (see :func:`_head_start`): ``forward_features``,
    ``forward_head(x, pre_logits=False)``, ``get_classifier``, ``reset_classifier`` and the
    ``num_features``/``head_hidden_size``/``num_classes``/``global_pool``/``output_fmt`` attributes."""
    expand = expand or (lambda e, b: e)
    t = spec.template
    kinds = {c.path: c.kind for c in t.ctors if c.kind in ("list", "dict")}
    tensors = {c.path for c in t.ctors if c.kind in ("param", "buffer", "buffer-np")}
    n_ctor_holes = sum(len(holes_of(expand(c.expr, t))) for c in t.ctors)
    holes = _Holes(spec, n_ctor_holes)
    # a block that only chains its children is an nn.Sequential, as torchvision's stages are (``layer4[-1]``,
    # ``len``, iteration, slicing); its forward is nn.Sequential's, running the children in order
    sequential = not root and not spec.optional and all(module_chain(b) for b in spec.bodies)
    base = "nn.Sequential" if sequential else "nn.Module"
    lines = [f"class {spec.name}({base}):", "    " + literal(doc), ""]
    for k, v in class_attrs or []:
        lines.append(f"    {k} = {v}")
    if class_attrs:
        lines.append("")
    sig = []
    for pname, vals in spec.params:
        types = {type(v) for v in vals}
        ann = {int: "int", float: "float", bool: "bool", str: "str"}.get(types.pop()) if len(types) == 1 else None
        sig.append(f"{pname}: {ann}" if ann else pname)
    if root:
        sig = [f"{s} = {literal(v[0])}" for s, (_, v) in zip(sig, spec.params)]
    lines.append(f"    def __init__({', '.join(['self', *sig])}) -> None:")
    lines.append("        super().__init__()")
    for c in t.ctors:
        if c.kind in ("list", "dict"):
            lines.append("        " + _assign(c.path, "nn.ModuleList()" if c.kind == "list" else "nn.ModuleDict()",
                                             kinds))
            continue
        value = render_expr(expand(c.expr, t), holes, indent="        ")
        if c.path in spec.optional:
            value = f"{value} if {spec._flags[c.path]} else None"
        lines.append("        " + _assign(c.path, value, kinds, param=c.kind == "param",
                                         buffer=c.kind in ("buffer", "buffer-np"), persistent=c.kind == "buffer"))
    for a in spec._attrs:
        lines.append(f"        self.{a} = {a}")
    if sequential:
        return "\n".join(lines) + "\n" + SEQUENTIAL_SLICE.strip("\n").join(["\n", ""])
    names = _names(t)
    ins = [names[v] for v in range(t.n_in)]
    ann = "torch.Tensor"
    if root and outputs is not None and len(outputs) > 1:
        ann = "list[torch.Tensor]" if output_list else "dict[str, torch.Tensor]"
    elif len(t.returns) > 1:
        ann = "tuple[" + ", ".join(["torch.Tensor"] * len(t.returns)) + "]"
    # the network's forward always takes ``x`` (as torchvision's do: torch.export's dynamic_shapes={"x": ...}
    # and hooks see one name), also when its body keeps the input as ``x_in``
    params = ["x"] if root and len(ins) == 1 else ins
    lines += ["", f"    def forward(self, {', '.join(f'{i}: torch.Tensor' for i in params)}) -> {ann}:"]
    body: list[str] = []
    if contract is not None:
        body += input_guard(contract, params[0], spec.name)
    if params != ins:
        body.append(f"{ins[0]} = {params[0]}")
    if cast is not None:   # a low-precision deploy form takes float32 inputs too (emit.generate checked the name)
        body.append(f"{ins[0]} = {ins[0]}.to(torch.{cast}) if {ins[0]}.is_floating_point() else {ins[0]}")
    if channels_last:
        body.append(f"{ins[0]} = {ins[0]}.contiguous(memory_format=torch.channels_last)  # chosen by the deploy pass")
    real = [s for s in t.stmts if s.kind != "alias"]
    values = dict(t.node_vals)
    if head is not None and head.inline and not channels_last:   # (a head container run child by child)
        kinds = dict(kinds)
        inlined = inline_head(real, names, kinds, head)
        head = None if inlined is None else head
        real, values = (real, values) if inlined is None else (inlined[0], {**values, **inlined[1]})
    last: dict[str, int] = {}
    for si, s in enumerate(real):
        for i in s.ins:
            last[names_key(names, i)] = si
    returned = {names[v] for v in t.returns}
    comments = len(spec.bodies) == 1
    split = _head_start(real, t.n_in, t.returns, head.head_len) if head is not None and not channels_last else None
    if head is not None and head.split_node is not None and not channels_last:   # the newer forms: by graph node
        split = split_at_node(real, {a.outs[0]: a.ins[0] for a in t.stmts if a.kind == "alias"}, values, head)
    starts: list[int] = []
    for si, s in enumerate(real):
        starts.append(len(body))
        invars = [names[i] for i in s.ins]
        outs = ", ".join(names[o] for o in s.outs)
        if s.kind == "call":
            call = f"{_ref(s.ref, kinds)}({', '.join(invars)})"
            if s.ref in spec.optional:
                ref = _ref(s.ref, kinds)
                body += [f"if {ref} is not None:", f"    {outs} = {call}", "else:", f"    {outs} = {invars[0]}"]
            else:
                body.append(f"{outs} = {call}")
        else:
            text = render_expr(s.expr, holes, invars, _ref(s.ref, kinds, tensors) if s.ref else "")
            if s.ref in spec.optional and s.expr == PLAIN_CALL:
                ref = _ref(s.ref, kinds)
                body += [f"if {ref} is not None:", f"    {outs} = {text}", "else:", f"    {outs} = {invars[0]}"]
            else:
                body.append(f"{outs} = {text}" + (f"  # {s.note}" if comments and s.note else ""))
        dead = sorted({names[i] for i in s.ins if names[i] != "x" and names[i] not in returned
                       and last.get(names_key(names, i)) == si})
        if dead:
            body.append("del " + ", ".join(dead))
    rets = [names[v] for v in t.returns]
    if root and outputs is not None and len(outputs) > 1 and output_list:
        body.append("return [" + ", ".join(rets) + "]")
    elif root and outputs is not None and len(outputs) > 1:
        body.append("return {" + ", ".join(f"{literal(n)}: {v}" for n, v in zip(outputs, rets)) + "}")
    else:
        body.append("return " + ", ".join(rets))
    if split is None or head is None:
        lines += ["        " + b for b in body]
        if pre_logits_method:   # a head container: its forward without the classifier, its last statement
            lines += ["", f"    def forward_pre_logits(self, {', '.join(f'{i}: torch.Tensor' for i in params)}) -> {ann}:",
                      '        """timm\'s pre-logits: the forward without its last layer, the classifier."""']
            lines += ["        " + b for b in body[:starts[-1]]] + [f"        return {names[real[-1].ins[0]]}"]
        return "\n".join(lines)
    return "\n".join(with_head_api(spec.params, lines, body, starts, real, split, names, params, head))


def input_guard(contract: SizeContract, var: str, cls: str) -> list[str]:
    """The first line of a root forward: :data:`CHECK_INPUT_HELPER` raises a ``ValueError`` naming the accepted
    input sizes when ``var`` is not one of them (a torch error from deep inside the model would not say what
    sizes work). Every number is an int from the contract and the message a checked literal."""
    if not contract.derived:
        return []
    varying = {r.axis: r for r in contract.rules if not r.fixed}
    low, high, step = [], [], []
    for i, d in enumerate(contract.declared):
        r = varying.get(i)
        if r is None:
            low.append(int(d))
            high.append(int(d))
            step.append(1)
        else:
            low.append(int(r.minimum))
            high.append(-1 if r.maximum is None else int(r.maximum))
            step.append(int(r.multiple))
    msg = f"{cls} takes a batch of {contract.describe()}"
    if contract.fixed:
        msg += " (build the spec for another size: archdsl.build(spec, input_shape=...))"
    return [f"_check_input({var}, {low!r}, {high!r}, {step!r}, {literal(msg + '; got ')})"]


#: Module-level helper of every generated root forward with an input contract (see :func:`input_guard`).
#: ``torch.fx.wrap`` makes it one leaf call for symbolic tracing (torchvision's feature extraction), which
#: cannot branch on sizes; TorchScript compiles it, torch.compile and export trace through it.
CHECK_INPUT_HELPER = '''def _check_input(x: torch.Tensor, low: list[int], high: list[int], step: list[int], message: str) -> None:
    """Raise ValueError(message + shape) unless ``x`` is a batch whose per-sample sizes are low + k * step,
    at most high (-1: no bound). Skipped under torch.jit.trace (ONNX export), whose sizes are traced values."""
    if torch.jit.is_tracing():
        return
    ok = x.dim() == len(low) + 1
    if ok:
        for i in range(len(low)):
            d = x.shape[i + 1]
            if d < low[i] or (high[i] >= 0 and d > high[i]) or (d - low[i]) % step[i] != 0:
                ok = False
    if not ok:
        raise ValueError(message + str(list(x.shape)))


torch.fx.wrap("_check_input")'''


def names_key(names: dict[int, str], v: int) -> str:
    return names[v]
