"""Ops over two tensors as archdsl plugin ops: FPN-style feature fusion and cross-attention (see
docs/extending.md, section 8).

Load it with ``archc ... --plugin examples/plugins/fusion.py``; a spec then calls the ops on named tensors,
the way it calls ``matmul(a, b)``: ``p3 = fuse3: fuse(c3, c4, out=32)``.

- ``fuse`` (a fine map and a coarser one -> the fine map's size) gives ``shape``, ``params`` and ``macs``
  functions: checking a spec that uses it never builds the module. Its ``in_shape`` is a tuple of the two
  inputs' shapes, ``((c_fine, h, w), (c_coarse, h2, w2))``.
- ``cross_attention`` (queries attend to another token sequence) gives nothing but the module: archdsl
  builds it on the ``meta`` device and runs its forward once on two empty meta tensors to find its output
  shape and parameter count.

Both ops take two tensors because their modules' ``forward`` takes two (``forward(self, fine, coarse)``,
``forward(self, q, kv)``); the spec passes them in that order.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import archdsl

__all__ = ["Fuse", "CrossAttention"]

Shape = tuple[int, ...]


def _maps(in_shape: tuple[Shape, Shape]) -> tuple[Shape, Shape]:
    fine, coarse = in_shape
    if len(fine) != 3 or len(coarse) != 3:
        raise ValueError(f"fuse takes two feature maps [C, H, W], got {list(fine)} and {list(coarse)}")
    return fine, coarse


def _fuse_shape(in_shape: tuple[Shape, Shape], out: int) -> Shape:
    fine, coarse = _maps(in_shape)
    if coarse[1] > fine[1] or coarse[2] > fine[2]:
        raise ValueError(f"the second map {list(coarse)} must be the coarser one (the first is {list(fine)})")
    return (out, fine[1], fine[2])


def _fuse_params(in_shape: tuple[Shape, Shape], out: int) -> int:
    fine, coarse = _maps(in_shape)
    return (fine[0] + 1) * out + (coarse[0] + 1) * out


def _fuse_macs(in_shape: tuple[Shape, Shape], out_shape: Shape, out: int) -> int:
    (cf, h, w), (cc, h2, w2) = _maps(in_shape)
    return cf * out * h * w + cc * out * h2 * w2   # the two 1x1 convs (the resize and the sum count 0)


@archdsl.register_op("fuse", shape=_fuse_shape, params=_fuse_params, macs=_fuse_macs)
class Fuse(nn.Module):
    """FPN top-down fusion: 1x1 lateral convs, the coarse map resized to the fine one, summed."""

    def __init__(self, in_shape: tuple[Shape, Shape], out: int) -> None:
        super().__init__()
        (cf, _, _), (cc, _, _) = _maps(in_shape)
        self.lateral = nn.Conv2d(cf, out, 1)
        self.top_down = nn.Conv2d(cc, out, 1)

    def forward(self, fine: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        # the size is read at run time, so the model runs at any input size
        up = F.interpolate(self.top_down(coarse), size=fine.shape[-2:], mode="nearest")
        return self.lateral(fine) + up


@archdsl.register_op("cross_attention")
class CrossAttention(nn.Module):
    """Multi-head cross-attention: tokens q [N, D] attend to tokens kv [M, E]; the output is [N, D]."""

    def __init__(self, in_shape: tuple[Shape, Shape], heads: int = 1) -> None:
        super().__init__()
        (_, d), (_, e) = in_shape
        if d % heads:
            raise ValueError(f"the query width {d} does not split into {heads} heads")
        self.heads = heads
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(e, 2 * d)
        self.proj = nn.Linear(d, d)

    def forward(self, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        b, n, d = q.shape
        m = kv.shape[1]
        qh = self.q(q).reshape(b, n, self.heads, d // self.heads).transpose(1, 2)
        k, v = self.kv(kv).reshape(b, m, 2, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(qh, k, v)
        return self.proj(o.transpose(1, 2).reshape(b, n, d))
