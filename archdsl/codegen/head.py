"""timm's head API of a generated classifier (torch-free): ``forward_features`` / ``forward_head``,
``get_classifier`` / ``reset_classifier`` and the ``num_features`` / ``head_hidden_size`` / ``output_fmt`` /
``global_pool`` attributes, written into the network class by :func:`with_head_api`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .names import literal
from .program import Stmt

__all__ = ["HeadInfo", "with_head_api", "RESET_LINEAR_HELPER"]


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
    cut = starts[len(real) - 1] - starts[split]
    lines += ["        " + b for b in tail[:cut]]
    pre = names[last.ins[0]]
    # a classifier container that takes a map ([C, 1, 1]: ConvNeXt's norm + flatten + linear) gets a flat
    # pre-logits vector, what the classifier removed by reset_classifier(0) (an nn.Flatten) then gives too
    lines += ["        if pre_logits:", f"            return {f'torch.flatten({pre}, 1)' if head.flatten else pre}"]
    lines += ["        " + b for b in tail[cut:]]
    lines += ["", f"    def forward(self, {sig}) -> torch.Tensor:",
              f"        return self.forward_head(self.forward_features({ins[0]}))"]
    if last.ref:
        lines += ["", "    def get_classifier(self) -> nn.Module:",
                  '        """The classifier (timm\'s model API)."""',
                  f"        return self.get_submodule({literal(last.ref)})",
                  "", "    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:",
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
                  f"        _reset_linear(self, {literal(last.ref)}, max(int(num_classes), 0), self.head_hidden_size, "
                  f"{head.flatten!r})",
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
