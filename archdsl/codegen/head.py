"""timm's head API of a generated classifier (torch-free): ``forward_features`` / ``forward_head``,
``get_classifier`` / ``reset_classifier`` and the ``num_features`` / ``head_hidden_size`` / ``output_fmt`` /
``global_pool`` attributes, written into the network class by :func:`with_head_api`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .names import GenerationError, literal
from .program import Stmt

__all__ = ["HeadInfo", "with_head_api", "inline_head", "split_at_node", "RESET_LINEAR_HELPER", "RESET_HEAD_HELPER"]


@dataclass(frozen=True)
class HeadInfo:
    """timm's facts about a classifier's head: ``num_features`` (channels of what ``forward_features`` returns),
    ``head_hidden_size`` (width of the pre-logits), ``num_classes``, ``global_pool`` ('avg' where the head pools,
    'token' where it selects a token) and ``output_fmt`` of the unpooled features ('NCHW', 'NHWC', 'NLC')."""

    num_features: int
    head_hidden_size: int
    num_classes: int
    global_pool: str
    output_fmt: str
    flatten: bool = False
    head_len: int | None = None   # statements of a head with layers after its pooling (GhostNet's conv_head)
    # the newer head forms (:func:`archdsl.passes.head.head_features`): the modules pre-logits skip and
    # reset_classifier(0) replaces by identity, the classifier layers a positive reset replaces (convs where
    # ``conv``), where forward_features ends (a graph node) and a Sequential container whose children the
    # head runs one by one (its path, its children's names and one graph node per child)
    classifiers: tuple[str, ...] = ()
    layers: tuple[str, ...] = ()
    conv: bool = False
    split_node: int | None = None
    inline: str | None = None
    inline_children: tuple[str, ...] = ()
    inline_nodes: tuple[int, ...] = ()
    pre_method: bool = False   # the head container's class has forward_pre_logits (its forward, classifier left out)


def with_head_api(spec_params: list[tuple[str, Any]], lines: list[str], body: list[str], starts: list[int],
                  real: list[Stmt], split: int, names: dict[int, str], ins: list[str], head: HeadInfo) -> list[str]:
    """The root class with timm's model API: ``forward = forward_head(forward_features(x))``."""
    feat = names[real[split].ins[0]]
    last = real[-1]
    sig = ", ".join(f"{i}: torch.Tensor" for i in ins)
    lines[-1] = f"    def forward_features(self, {sig}) -> torch.Tensor:"
    lines += ["        " + b for b in body[:starts[split]]] + [f"        return {feat}"]
    lines += ["", f"    def forward_head(self, {feat}: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:",
              # global_pool '' (timm's reset_classifier(0, '')): the unpooled features, as timm's models give
              '        if self._pool_type == "":',
              f"            return {feat}"]
    tail = body[starts[split]:]
    skip = [k for k in range(split, len(real)) if _path(real[k]) in head.classifiers]
    if skip and skip != [len(real) - 1]:
        # classifiers with steps after them (SqueezeNet's conv, then ReLU and pooling; DeiT's two heads, then
        # their mean): pre-logits run the head with each classifier an identity, what reset_classifier(0) gives
        for k in range(split, len(real)):
            chunk = body[starts[k]:starts[k + 1] if k + 1 < len(real) else len(body)]
            if k in skip:
                outs, call = chunk[0].split(" = ", 1)
                if outs != names[real[k].outs[0]] or len(real[k].ins) != 1:
                    raise GenerationError(f"classifier '{_path(real[k])}' is not a plain call")
                # (a copy: the steps after the classifier may work in place, which must not reach the features)
                chunk = ["if pre_logits:", f"    {outs} = {names[real[k].ins[0]]}.clone()", "else:",
                         f"    {outs} = {call}", *chunk[1:]]
            lines += ["        " + b for b in chunk]
    else:
        cut = starts[len(real) - 1] - starts[split]
        lines += ["        " + b for b in tail[:cut]]
        pre = names[last.ins[0]]
        # a classifier container that takes a map ([C, 1, 1]: ConvNeXt's norm + flatten + linear) gets a flat
        # pre-logits vector, what the classifier removed by reset_classifier(0) (an nn.Flatten) then gives too
        if head.pre_method:
            pre = f"{'self.' + str(last.ref)}.forward_pre_logits({pre})"
        elif head.flatten:
            pre = f"torch.flatten({pre}, 1)"
        lines += ["        if pre_logits:", f"            return {pre}"]
        lines += ["        " + b for b in tail[cut:]]
    lines += ["", f"    def forward(self, {sig}) -> torch.Tensor:",
              f"        return self.forward_head(self.forward_features({ins[0]}))"]
    if head.classifiers:
        paths = tuple(head.classifiers)
        one = len(paths) == 1
        lines += ["", f"    def get_classifier(self) -> {'nn.Module' if one else 'tuple[nn.Module, ...]'}:",
                  '        """The classifier (timm\'s model API; a tuple where two heads are averaged, as timm\'s DeiT)."""',
                  f"        return self.get_submodule({literal(paths[0])})" if one else
                  "        return (" + ", ".join(f"self.get_submodule({literal(p)})" for p in paths) + ")"]
    if head.classifiers or last.ref:
        reset = (f"_reset_head(self, {literal(tuple(head.classifiers))}, {literal(tuple(head.layers))}, "
                 f"max(int(num_classes), 0), self.head_hidden_size, {head.conv!r})" if head.classifiers else
                 f"_reset_linear(self, {literal(last.ref)}, max(int(num_classes), 0), self.head_hidden_size, "
                 f"{head.flatten!r})")
    if last.ref and not head.classifiers:
        lines += ["", "    def get_classifier(self) -> nn.Module:",
                  '        """The classifier (timm\'s model API)."""',
                  f"        return self.get_submodule({literal(last.ref)})"]
    if head.classifiers or last.ref:
        lines += ["", "    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:",
                  '        """A new classifier with ``num_classes`` outputs; 0 removes it (forward gives the pooled features),',
                  "        and with global_pool='' the pooling too (forward gives forward_features' output). Any number",
                  '        of times, as in timm."""',
                  "        if global_pool is not None:",
                  f"            if global_pool not in ('', {literal(head.global_pool)}):",
                  "                raise ValueError(" + literal(f"global_pool must be {head.global_pool!r} or '' (no pooling), got ")
                  + " + repr(global_pool))",
                  "            if global_pool == '' and num_classes > 0:",
                  "                raise ValueError(\"global_pool='' removes the pooling: only with num_classes=0\")",
                  "            self._set_pool_type(global_pool)",
                  "        elif num_classes > 0 and self._pool_type == '':",
                  f"            self._set_pool_type({literal(head.global_pool)})",
                  "        " + reset,
                  "        self.num_classes = max(int(num_classes), 0)"]
    has_arg = any(k == "num_classes" for k, _ in spec_params)
    at = next(i for i, ln in enumerate(lines) if ln.startswith("    def __init__("))
    attrs = [f"    num_features = {literal(head.num_features)}",
             f"    head_hidden_size = {literal(head.head_hidden_size)}",
             f"    output_fmt = {literal(head.output_fmt)}"]
    if not has_arg:
        attrs.append(f"    num_classes = {literal(head.num_classes)}")
    if lines[at - 1] == "" and lines[at - 2].startswith("    ") and " = " in lines[at - 2]:
        lines[at - 1:at - 1] = attrs     # beside the other class attributes
    else:
        lines[at:at] = attrs + [""]
    end = next(i for i, ln in enumerate(lines) if ln.startswith("    def forward_features("))
    # instance attributes (TorchScript reads them; reset_classifier changes them). The pool type lives in a
    # private attribute: a layer labelled `global_pool` (an imported timm model's head) is a child module of
    # that name, which a string attribute would shadow; timm's `global_pool` string is there only otherwise
    lines.insert(end - 1, f"        self._set_pool_type({literal(head.global_pool)})")
    lines[end + 1:end + 1] = [
        "    def _set_pool_type(self, pool: str) -> None:",
        "        self._pool_type = pool",
        "        if 'global_pool' not in self._modules:   # a child module of that name is the layer itself",
        "            self.global_pool = pool",
        ""]
    if has_arg:   # the constructor argument is the instance's attribute, as in timm
        lines.insert(end - 1, "        self.num_classes = num_classes")
    return lines


#: Module-level helper of generated classifiers (emitted once when the root class has ``reset_classifier``).
RESET_LINEAR_HELPER = '''def _reset_linear(model: nn.Module, path: str, num_classes: int, in_features: int, flatten: bool) -> None:
    """Replace the last nn.Linear at or under ``model.<path>`` by a new one with ``num_classes`` outputs, as
    timm's reset_classifier does; 0 replaces the whole classifier by nn.Identity (forward gives pre-logits), or
    by nn.Flatten where the classifier takes a map (``flatten``). After that, a positive ``num_classes`` puts a
    new classifier taking ``in_features`` at ``path``: any number of resets, as in timm."""
    head = model.get_submodule(path)
    parent_path, _, name = path.rpartition(".")
    if num_classes <= 0 or isinstance(head, (nn.Identity, nn.Flatten)):
        new: nn.Module = nn.Flatten(1) if flatten else nn.Identity()
        if num_classes > 0:
            new = nn.Sequential(nn.Flatten(1), nn.Linear(in_features, num_classes)) if flatten else \\
                nn.Linear(in_features, num_classes)
        setattr(model.get_submodule(parent_path) if parent_path else model, name, new)
        return
    if not isinstance(head, nn.Linear):
        inner = [n for n, m in head.named_modules() if isinstance(m, nn.Linear)]
        if not inner:
            raise ValueError(f"no nn.Linear classifier under {path!r}")
        path = path + "." + inner[-1]
        head = model.get_submodule(path)
        parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, name, nn.Linear(head.in_features, num_classes, bias=head.bias is not None))'''



def _path(s: Stmt) -> str:
    """The module path a root statement runs (an inlined container child: its real path, not ``c.<index>``)."""
    return s.name if s.kind == "call" else s.ref


def inline_head(real: list[Stmt], names: dict[int, str], kinds: dict[str, str],
                head: HeadInfo) -> tuple[list[Stmt], dict[int, int]] | None:
    """``real`` with the call of the Sequential container ``head.inline`` replaced by one call per child
    (``self.<container>[k](x)``, which TorchScript and torch.fx take), so forward_head can stop before the
    classifier inside it; and the value of each child's graph node. None where the root does not call it.
    ``names`` and ``kinds`` (rendering) are updated in place."""
    k = next((i for i, s in enumerate(real) if s.kind == "call" and s.ref == head.inline), None)
    if k is None or not head.inline_children or len(head.inline_children) != len(head.inline_nodes):
        return None
    s = real[k]
    fresh = max([v for t in real for v in (*t.ins, *t.outs)] + list(names)) + 1
    ids = [fresh + i for i in range(len(head.inline_children) - 1)] + [s.outs[0]]
    new, prev = [], s.ins[0]
    for pos, (child, out) in enumerate(zip(head.inline_children, ids)):
        new.append(Stmt("call", (prev,), (out,), (), f"{head.inline}.{pos}", f"{head.inline}.{child}"))
        names[out] = names[s.outs[0]]
        prev = out
    kinds[str(head.inline)] = "list"
    return real[:k] + new + real[k + 1:], dict(zip(head.inline_nodes, ids))


def split_at_node(real: list[Stmt], aliases: dict[int, int], values: dict[int, int], head: HeadInfo) -> int | None:
    """The first head statement where forward_features ends at graph node ``head.split_node`` (``values``: graph
    node -> value): the statement after the one making it, where the rest reads nothing of the body but that
    value and runs every classifier of ``head``; else None (no head API rather than a wrong one)."""
    def canon(v: int) -> int:
        while v in aliases:
            v = aliases[v]
        return v
    feat = values.get(head.split_node) if head.split_node is not None else None
    if feat is None:
        return None
    feat = canon(feat)
    j = next((k + 1 for k, s in enumerate(real) if feat in {canon(o) for o in s.outs}), None)
    if j is None or j >= len(real) or [canon(i) for i in real[j].ins] != [feat]:
        return None
    made = {feat}
    for s in real[j:]:
        if any(canon(i) not in made for i in s.ins):
            return None
        made.update(canon(o) for o in s.outs)
    if not set(head.classifiers) <= {_path(s) for s in real[j:]}:
        return None
    return j


#: Module-level helper of generated classifiers with the newer head forms (two heads, convolutional classifiers,
#: a classifier inside a head container).
RESET_HEAD_HELPER = '''def _reset_head(model: nn.Module, paths: tuple[str, ...], layers: tuple[str, ...], num_classes: int,
                in_features: int, conv: bool) -> None:
    """timm's reset_classifier: 0 replaces each module of ``paths`` by nn.Identity (forward then gives the
    pre-logits); a positive ``num_classes`` replaces each classifier layer of ``layers`` by a new one with that
    many outputs, or puts a new one taking ``in_features`` (a linear, or a 1x1 conv where ``conv``) where a
    path was removed: any number of resets, as in timm."""
    for path in paths:
        parent_path, _, name = path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        if num_classes <= 0:
            setattr(parent, name, nn.Identity())
        elif isinstance(model.get_submodule(path), nn.Identity):
            setattr(parent, name, nn.Conv2d(in_features, num_classes, 1) if conv else nn.Linear(in_features, num_classes))
        else:
            for layer in layers:
                if layer != path and not layer.startswith(path + "."):
                    continue
                old = model.get_submodule(layer)
                owner_path, _, leaf = layer.rpartition(".")
                owner = model.get_submodule(owner_path) if owner_path else model
                if isinstance(old, nn.Conv2d):
                    new: nn.Module = nn.Conv2d(old.in_channels, num_classes, old.kernel_size, old.stride, old.padding,
                                               bias=old.bias is not None)
                else:
                    new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
                setattr(owner, leaf, new)'''
