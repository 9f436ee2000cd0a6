"""Triton depthwise convolution (forward): a direct multiply-accumulate kernel for large kernels.

Each program computes a tile of ``BLOCK_P`` output pixels x ``BLOCK_C`` channels of one image. It walks the
kernel rows, and within a row takes ``BLOCK_K`` taps at a time: it gathers the ``[BLOCK_P, BLOCK_K, BLOCK_C]``
input window for those taps (masked at the borders, which implements zero padding), multiplies it with the
``[BLOCK_K, BLOCK_C]`` weights and reduces over the taps into an fp32 ``[BLOCK_P, BLOCK_C]`` accumulator.
No ``tl.dot``: a depthwise conv has no reduction over channels, so tensor cores would multiply mostly
zeros; the kernel is bound by loads from L1/L2, which the tap tiling keeps contiguous along the width.

The same kernel serves NCHW and NHWC tensors (it takes strides); only the tile shape differs: NHWC tiles
are wide in channels (contiguous there), NCHW tiles are wide in pixels. The output keeps the input's layout.

Triton is optional: this module is imported only when the ``triton_dw`` backend runs. On a CPU it runs only
under ``TRITON_INTERPRET=1`` (set before this module is first imported), which the tests use on tiny shapes.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

__all__ = ["conv_triton", "dwconv2d", "tile_config"]


@triton.jit
def _dwconv_fwd(x_ptr, w_ptr, b_ptr, y_ptr,
                C, H, W, OH, OW, KH, KW, PH, PW, DH, DW,
                sxn, sxc, sxh, sxw, syn, syc, syh, syw,
                HAS_BIAS: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_C: tl.constexpr):
    pid_p = tl.program_id(0)
    pid_c = tl.program_id(1)
    n = tl.program_id(2).to(tl.int64)
    p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)      # flattened output pixels
    c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)      # channels
    t = tl.arange(0, BLOCK_K)                        # taps along a kernel row
    p_ok = p < OH * OW
    c_ok = c < C
    oh = p // OW
    ow = p % OW
    x_img = x_ptr + n * sxn
    x_ch = (c * sxc)[None, None, :]                  # [1, 1, C]
    w_ch = (c * (KH * KW))[None, :]                  # weights are contiguous (C, 1, KH, KW)
    acc = tl.zeros([BLOCK_P, BLOCK_C], dtype=tl.float32)
    for kh in range(0, KH):
        ih = oh - PH + kh * DH
        row_ok = p_ok & (ih >= 0) & (ih < H)
        row_off = ih * sxh
        for k0 in range(0, KW, BLOCK_K):
            kw = k0 + t
            k_ok = kw < KW
            iw = ow[:, None] - PW + kw[None, :] * DW                        # [P, K]
            ok = row_ok[:, None] & k_ok[None, :] & (iw >= 0) & (iw < W)     # [P, K]
            off = row_off[:, None] + iw * sxw                               # [P, K]
            xv = tl.load(x_img + off[:, :, None] + x_ch, mask=ok[:, :, None] & c_ok[None, None, :], other=0.0)
            wv = tl.load(w_ptr + w_ch + (kh * KW + kw)[:, None], mask=k_ok[:, None] & c_ok[None, :], other=0.0)
            acc += tl.sum(xv.to(tl.float32) * wv.to(tl.float32)[None, :, :], axis=1)
    if HAS_BIAS:
        acc += tl.load(b_ptr + c, mask=c_ok, other=0.0).to(tl.float32)[None, :]
    y_off = n * syn + (oh * syh + ow * syw)[:, None] + (c * syc)[None, :]
    tl.store(y_ptr + y_off, acc.to(y_ptr.dtype.element_ty), mask=p_ok[:, None] & c_ok[None, :])


def _pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def _is_nhwc(x: torch.Tensor) -> bool:
    # an ambiguous tensor (C == 1 or H == W == 1) counts as NCHW, like PyTorch's suggest_memory_format
    return x.dim() == 4 and x.stride(1) == 1 and not x.is_contiguous()


def tile_config(channels: int, kw: int, nhwc: bool, interpret: bool = False) -> tuple[int, int, int, int]:
    """(BLOCK_P, BLOCK_K, BLOCK_C, num_warps): wide in the contiguous dimension, about 4K elements a tile.

    Under the interpreter (numpy, one program at a time) fewer, bigger programs run much faster; the tap
    tile keeps its GPU size there so the masked partial tap blocks are still exercised.
    """
    bk = min(8 if nhwc else 4, _pow2(kw))
    if interpret:
        return 32, bk, min(16, _pow2(channels)), 1
    if nhwc:
        bc = min(32, _pow2(channels))
        return 16, bk, bc, 4
    return 64, bk, min(4, _pow2(channels)), 4


def _out_hw(h: int, w: int, kh: int, kw: int, padding: list[int], dilation: list[int]) -> tuple[int, int]:
    return (h + 2 * padding[0] - dilation[0] * (kh - 1), w + 2 * padding[1] - dilation[1] * (kw - 1))


def _empty_like_layout(x: torch.Tensor, shape: tuple[int, int, int, int]) -> torch.Tensor:
    fmt = torch.channels_last if _is_nhwc(x) else torch.contiguous_format
    return torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=fmt)


@torch.library.custom_op("archdsl::dwconv2d_triton", mutates_args=())
def dwconv2d(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], padding: list[int],
             dilation: list[int]) -> torch.Tensor:
    """Depthwise conv, stride 1: ``weight`` is ``(C, 1, KH, KW)``; output in the input's layout.

    A registered custom op, so torch.compile treats it as one opaque node (with a shape function).
    """
    n, c, h, w = x.shape
    kh, kw = weight.shape[-2:]
    oh, ow = _out_hw(h, w, kh, kw, padding, dilation)
    y = _empty_like_layout(x, (n, c, oh, ow))
    if y.numel() == 0:
        return y
    wt = weight.contiguous()
    bp, bk, bc, warps = tile_config(c, kw, _is_nhwc(x), interpret=x.device.type == "cpu")
    grid = (triton.cdiv(oh * ow, bp), triton.cdiv(c, bc), n)
    _dwconv_fwd[grid](x, wt, bias if bias is not None else wt, y,
                      c, h, w, oh, ow, kh, kw, padding[0], padding[1], dilation[0], dilation[1],
                      *x.stride(), *y.stride(),
                      HAS_BIAS=bias is not None, BLOCK_P=bp, BLOCK_K=bk, BLOCK_C=bc, num_warps=warps)
    return y


@dwconv2d.register_fake
def _dwconv2d_fake(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], padding: list[int],
                   dilation: list[int]) -> torch.Tensor:
    n, c, h, w = x.shape
    oh, ow = _out_hw(h, w, weight.shape[-2], weight.shape[-1], padding, dilation)
    return _empty_like_layout(x, (n, c, oh, ow))


def conv_triton(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: tuple[int, int],
                padding: tuple[int, int], dilation: tuple[int, int], groups: int) -> torch.Tensor:
    """The backend entry point (same signature as the other backends; the registry guarantees stride 1)."""
    if tuple(stride) != (1, 1) or groups != x.shape[1] or weight.shape[0] != x.shape[1]:
        raise ValueError("triton_dw runs depthwise convs with stride 1 only")
    return dwconv2d(x, weight, bias, list(padding), list(dilation))
