"""Did-you-mean by meaning: the op a name from PyTorch, timm or papers stands for.

Spelling distance alone proposes ``scale`` for ``upsample`` and ``mul`` for ``matmul``; a user who types
``deconv`` or ``bmm`` means a specific op whose name looks nothing like it. :func:`meaning_hint` is
consulted before spelling distance; it only proposes ops that exist (plugins may add names, never remove).
"""
from __future__ import annotations

from typing import Iterable

__all__ = ["SYNONYMS", "meaning_hint"]

# key: a name with case and underscores dropped (so 'Conv_Transpose2d', 'convtranspose2d' meet);
# value: the ops it may mean, best first
SYNONYMS: dict[str, tuple[str, ...]] = {
    "deconv": ("conv_transpose2d",), "deconv2d": ("conv_transpose2d",), "convtranspose": ("conv_transpose2d",),
    "convtranspose2d": ("conv_transpose2d",), "upconv": ("conv_transpose2d",),
    "transposedconv": ("conv_transpose2d",),
    "upsampling": ("upsample", "interpolate"), "upsample2d": ("upsample", "interpolate"),
    "upsamplebilinear": ("upsample", "interpolate"), "upsamplenearest": ("upsample", "interpolate"),
    "upsamplingbilinear2d": ("upsample", "interpolate"), "upsamplingnearest2d": ("upsample", "interpolate"),
    "resize": ("interpolate", "resize_as"), "interp": ("interpolate",), "imresize": ("interpolate",),
    "depthtospace": ("pixel_shuffle",), "spacetodepth": ("pixel_unshuffle",),
    "bmm": ("matmul",), "mm": ("matmul",), "dot": ("matmul",),
    "attention": ("scaled_dot_product_attention",), "attn": ("scaled_dot_product_attention",),
    "selfattention": ("multihead_attention", "scaled_dot_product_attention"),
    "conv": ("conv2d",), "bn": ("batchnorm",), "batchnorm2d": ("batchnorm",), "ln": ("layernorm",),
    "fc": ("linear",), "dense": ("linear",),
    "cat": ("concat",), "concatenate": ("concat",),
    "subtract": ("sub",), "minus": ("sub",), "divide": ("div",), "multiply": ("mul",), "power": ("pow",),
    "clip": ("clamp",), "swapaxes": ("swapdims", "transpose"), "squeeze": ("reshape",),
    "unsqueeze": ("reshape",),
    "avgpool2d": ("avgpool",), "maxpool2d": ("maxpool",), "gap": ("adaptive_avgpool",),
    "globalavgpool": ("adaptive_avgpool",), "adaptiveavgpool2d": ("adaptive_avgpool",),
    "hswish": ("hardswish",), "hsigmoid": ("hardsigmoid",), "droppath": ("drop_path",),
    "clstoken": ("parameter",), "posembed": ("parameter",), "nnparameter": ("parameter",),
    "gn": ("groupnorm",), "groupnorm1": ("groupnorm",), "rms": ("rmsnorm",), "batchnorm1d": ("batchnorm",),
    "l2normalize": ("normalize",), "l2norm": ("normalize", "norm"), "im2col": ("unfold",), "col2im": ("fold",),
    "unstack": ("unbind",), "repeat": ("repeat_interleave",),
    "registerbuffer": ("buffer",), "constant": ("buffer",), "mask": ("buffer",),
    "indexselect": ("gather_rows",), "gather": ("gather_rows",), "take": ("gather_rows",),
    "embedding": ("gather_rows",), "flinear": ("linear_fn",), "fconv2d": ("conv2d_fn",),
    "zeroslike": ("zeros_like",),
}


def _key(name: str) -> str:
    return name.lower().replace("_", "")


def meaning_hint(name: str, available: Iterable[str]) -> str | None:
    """"did you mean 'x'?" for a name that means an existing op (by the table, or the same name
    up to case and underscores: ``batch_norm`` for ``batchnorm``); None when nothing fits."""
    pool = set(available)
    same = sorted(c for c in pool if _key(c) == _key(name) and c != name)
    found = [*same, *(c for c in SYNONYMS.get(_key(name), ()) if c in pool and c not in same)]
    if not found:
        return None
    if len(found) == 1:
        return f"did you mean '{found[0]}'?"
    return "did you mean " + ", ".join(f"'{c}'" for c in found[:-1]) + f" or '{found[-1]}'?"
