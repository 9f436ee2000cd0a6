"""Channel and spatial attention as archdsl plugin ops: ECA and CBAM (see docs/extending.md).

Load it with ``archc ... --plugin examples/plugins/attention.py`` (or ``ARCHDSL_PLUGINS``, or
``archdsl.build(spec, plugins=[...])``); specs then call ``eca(...)`` and ``cbam(...)`` like built-in ops.

- ``eca`` registers only the module: archdsl finds its output shape and parameter count by building it on
  the ``meta`` device and running it once (no memory, no weights).
- ``cbam`` also gives ``shape``, ``params`` and ``macs`` functions, so checking, summarizing and rendering a
  spec that uses it never needs torch.
"""
from __future__ import annotations

import math

import torch
from torch import nn

import archdsl

__all__ = ["ECA", "CBAM", "eca_kernel_size"]


def eca_kernel_size(channels: int, gamma: int = 2, b: int = 1) -> int:
    """ECA-Net's adaptive kernel size: the odd number nearest to (log2(C) + b) / gamma."""
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1


@archdsl.register_op("eca")
class ECA(nn.Module):
    """Efficient Channel Attention (Wang et al., 2020): a 1D conv across the pooled channels, no reduction."""

    def __init__(self, in_shape: tuple[int, ...], k_size: int = 0) -> None:
        super().__init__()
        if len(in_shape) != 3:
            raise ValueError(f"eca expects a feature map [C, H, W], got {list(in_shape)}")
        k = k_size or eca_kernel_size(in_shape[0])
        if k % 2 == 0:
            raise ValueError(f"k_size must be odd, got {k}")
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv1d(1, 1, kernel_size=k, padding=(k - 1) // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.avg_pool(x)                                   # [N, C, 1, 1]
        y = self.conv(y.squeeze(-1).transpose(-1, -2))         # [N, 1, C]: the conv runs across channels
        y = y.transpose(-1, -2).unsqueeze(-1).sigmoid()        # [N, C, 1, 1]
        return x * y


def _cbam_shape(in_shape: tuple[int, ...], reduction: int = 16, kernel_size: int = 7) -> tuple[int, ...]:
    if len(in_shape) != 3:
        raise ValueError(f"cbam expects a feature map [C, H, W], got {list(in_shape)}")
    if in_shape[0] // reduction < 1:
        raise ValueError(f"reduction={reduction} leaves no hidden channel for {in_shape[0]} channels")
    if kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd, got {kernel_size}")
    return in_shape


def _cbam_params(in_shape: tuple[int, ...], reduction: int = 16, kernel_size: int = 7) -> int:
    c = in_shape[0]
    return 2 * c * (c // reduction) + 2 * kernel_size * kernel_size


def _cbam_macs(in_shape: tuple[int, ...], out_shape: tuple[int, ...], reduction: int = 16,
               kernel_size: int = 7) -> int:
    c, h, w = in_shape
    # the shared MLP runs on the avg- and the max-pooled vector; the spatial conv maps 2 channels to 1
    return 2 * 2 * c * (c // reduction) + 2 * kernel_size * kernel_size * h * w


class _ChannelGate(nn.Module):
    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Conv2d(channels, channels // reduction, 1, bias=False), nn.ReLU(inplace=True),
                                 nn.Conv2d(channels // reduction, channels, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.mlp(x.mean(dim=(2, 3), keepdim=True))
        mx = self.mlp(x.amax(dim=(2, 3), keepdim=True))
        return x * (avg + mx).sigmoid()


class _SpatialGate(nn.Module):
    def __init__(self, kernel_size: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * self.conv(pooled).sigmoid()


@archdsl.register_op("cbam", shape=_cbam_shape, params=_cbam_params, macs=_cbam_macs)
class CBAM(nn.Module):
    """Convolutional Block Attention Module (Woo et al., 2018): channel gate, then spatial gate."""

    def __init__(self, in_shape: tuple[int, ...], reduction: int = 16, kernel_size: int = 7) -> None:
        super().__init__()
        _cbam_shape(in_shape, reduction, kernel_size)
        self.channel_gate = _ChannelGate(in_shape[0], reduction)
        self.spatial_gate = _SpatialGate(kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial_gate(self.channel_gate(x))
