"""What a ``get_attr`` node of a traced body reads: a parameter or buffer of the module, or of a submodule.

A body reads tensors that no call hands it: its own parameters and buffers (``self.gamma``), and those of its
submodules (``self.qkv.weight`` passed to ``F.linear``, ``self.blocks[0].gamma_1`` where a block called with
two tensors is traced through as part of its parent, ``self.rel_pos.rel_coords_log`` in a method of a
child). Each becomes a ``parameter(...)`` or ``buffer(...)`` labelled with its path from the body's module —
a dotted label (``"blocks.0.gamma_1"``) for a submodule's — so the spec's state_dict key is the source
model's and the strict load holds.

A read used only for its metadata (``self.proj.weight.device``, ``.dtype``, ``.shape``) is no tensor of the
spec: it writes nothing.

It needs no torch: the module answers what it registered (``named_parameters``, ``named_buffers``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .tables import buffer_args
from .trace import ImportFailure

__all__ = ["AttrRead", "read_attr", "param_name"]

# attributes of a tensor that are known at trace time: reading them makes no tensor of the spec
_META = frozenset({"device", "dtype", "shape", "ndim", "is_cuda", "requires_grad", "layout"})


@dataclass(frozen=True)
class AttrRead:
    """One ``get_attr``: ``kind`` "param" (a parameter, by ``label`` and ``shape``), "buffer" (``args`` of
    ``buffer(...)``), "const" (a tensor fx lifted as a constant) or "meta" (only its device, dtype or shape
    are read)."""

    kind: str
    label: str
    shape: tuple[int, ...] = ()
    args: dict[str, Any] = field(default_factory=dict)


def read_attr(module: Any, target: str, users: list[Any]) -> AttrRead:
    """What ``module.<target>`` (a dotted path) is to the body of ``module``; ``users`` are the fx nodes
    that read it. A tensor that is neither a parameter nor a registered buffer is kind "const": a constant
    fx lifted out of the code (``self.periods[None, None, :]`` computed while tracing, a plain tensor
    attribute), whose traced values the converter writes as a non-persistent buffer."""
    owner, _, name = target.rpartition(".")
    try:
        sub = module.get_submodule(owner) if owner else module
    except AttributeError:
        sub = None                  # a tensor attribute of a non-module object: a constant, refused below
    if users and all(_meta_read(u) for u in users):
        return AttrRead("meta", target)
    params = dict(sub.named_parameters(recurse=False)) if sub is not None else {}
    if name in params:
        if params[name].dim() == 0:     # (its key holds a 0-d tensor: no spec parameter has that shape)
            raise ImportFailure(f"a 0-d parameter {target} (the language's parameters have at least one dimension)")
        return AttrRead("param", target, tuple(params[name].shape))
    buffers = dict(sub.named_buffers(recurse=False)) if sub is not None else {}
    if name in buffers and buffers[name] is not None:
        obj = buffers[name]
        return AttrRead("buffer", target, tuple(obj.shape), buffer_args(sub, name, obj))
    return AttrRead("const", target)


def _meta_read(node: Any) -> bool:
    """``getattr(t, "device")`` and the like: fx records ``t.device`` as a call of the builtin getattr."""
    import builtins
    return (node.op == "call_function" and node.target is builtins.getattr and len(node.args) >= 2
            and node.args[1] in _META)


def param_name(label: str) -> str:
    """The name a parameter or buffer's value gets in the spec: its label, or for a dotted label
    (``blocks.0.gamma_1``, a submodule's) the parts joined by underscores (``blocks_0_gamma_1``)."""
    if "." not in label:
        return label
    name = label.replace(".", "_")
    return name if not name[:1].isdigit() else "p_" + name
