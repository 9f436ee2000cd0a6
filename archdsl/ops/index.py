"""Built-in ops, constant integer indices: Swin's relative position bias (an index buffer and a table lookup).

torchvision's ``ShiftedWindowAttention`` owns a learnable table ``relative_position_bias_table`` of shape
((2w-1)^2, heads) and a constant ``relative_position_index`` of shape (w^4,), a persistent int64 buffer (a
state_dict key, so a spec must own it to load torchvision's weights strictly). The op
``swin_attention_bias`` is applied to the table (a ``parameter(..., batch_dim=false)``); its label names
the index buffer. It returns the additive attention bias of every window: the table gathered by the index,
[heads, N, N] with N = w*w, plus, for shifted windows, the -100 mask torchvision computes in forward from
the feature size, so its per-sample shape is [1, heads, N, N] without a shift and [windows, heads, N, N]
with one. Only validated integers reach the generated code (as repr literals); the index is computed there
from the window size, as torchvision computes it.
"""
from __future__ import annotations

from typing import Any

from .core import (
    MOD,
    REQUIRED,
    ArgSpec,
    EmitArgs,
    Expr,
    In,
    Lit,
    OpDef,
    Shape,
    ShapeError,
    register,
)
from .tensor import HELPERS

__all__ = ["swin_index"]

HELPERS["swin_attention_bias"] = '''
def _swin_relative_position_index(window: int) -> torch.Tensor:
    # torchvision ShiftedWindowAttention.define_relative_position_index, for a square window
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).contiguous()
    rel[:, :, 0] += window - 1
    rel[:, :, 1] += window - 1
    rel[:, :, 0] *= 2 * window - 1
    return rel.sum(-1).flatten()


def _swin_attention_bias(table: torch.Tensor, index: torch.Tensor, window: int, shift_h: int, shift_w: int,
                         height: int, width: int) -> torch.Tensor:
    # the relative position bias [heads, N, N] (torchvision _get_relative_position_bias) and, for shifted
    # windows, the mask of torchvision's shifted_window_attention (-100 between tokens of different regions)
    n = window * window
    bias = table[index].view(n, n, -1).permute(2, 0, 1).contiguous()
    if shift_h + shift_w == 0:
        return bias[None, None]
    mask = table.new_zeros((height, width))
    count = 0
    for h in ((0, -window), (-window, -shift_h), (-shift_h, None)):
        for w in ((0, -window), (-window, -shift_w), (-shift_w, None)):
            mask[h[0]:h[1], w[0]:w[1]] = count
            count += 1
    mask = mask.view(height // window, window, width // window, window).permute(0, 2, 1, 3).reshape(-1, n)
    mask = mask.unsqueeze(1) - mask.unsqueeze(2)
    mask = mask.masked_fill(mask != 0, float(-100.0)).masked_fill(mask == 0, float(0.0))
    return bias[None, None] + mask[None, :, None]


# one leaf call for symbolic tracing (fx cannot follow the mask's item assignment; its sizes are constants)
torch.fx.wrap("_swin_attention_bias")
'''


def swin_index(window: int) -> list[int]:
    """torchvision's ``relative_position_index`` of a ``window`` x ``window`` window (length window**4)."""
    n = window * window
    return [((i // window) - (j // window) + window - 1) * (2 * window - 1) + (i % window) - (j % window)
            + window - 1 for i in range(n) for j in range(n)]


def _norm(shapes: list[Shape], a: dict[str, Any]) -> dict[str, Any]:
    a = dict(a)
    window, shift, size = a["window"], a["shift"], a["size"]
    if not isinstance(window, int) or isinstance(window, bool) or window < 1:
        raise ShapeError(f"swin_attention_bias window={window} must be a positive integer", arg="window")
    if isinstance(shift, int) and not isinstance(shift, bool):
        shift = [shift, shift]
    if (not isinstance(shift, (list, tuple)) or len(shift) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < window for s in shift)):
        raise ShapeError(f"swin_attention_bias shift={shift} must be an integer or [rows, cols] in [0, window)",
                         arg="shift", hint="torchvision shifts by window // 2, and not along a side the window covers")
    a["shift"] = (shift[0], shift[1])
    if (not isinstance(size, (list, tuple)) or len(size) != 2
            or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in size)):
        raise ShapeError(f"swin_attention_bias size={size} must be [height, width] of the feature map",
                         arg="size")
    if size[0] % window or size[1] % window:
        raise ShapeError(f"swin_attention_bias: the map {list(size)} is not a whole number of {window}x{window} "
                         "windows", arg="size", hint="choose an input size whose maps divide by the window")
    a["size"] = (size[0], size[1])
    return a


def _shape(shapes: list[Shape], a: dict[str, Any]) -> Shape:
    table = shapes[0]
    w = a["window"]
    if len(table) != 2 or table[0] != (2 * w - 1) ** 2:
        raise ShapeError(f"swin_attention_bias needs the table [{(2 * w - 1) ** 2}, heads] of a {w}x{w} window, "
                         f"got {list(table)}",
                         hint="relative_position_bias_table = parameter([(2 * w - 1) ** 2, heads], "
                              "batch_dim=false)")
    n = w * w
    windows = (a["size"][0] // w) * (a["size"][1] // w) if sum(a["shift"]) else 1
    return (windows, table[1], n, n)


def _ctor(e: EmitArgs) -> Expr:
    # the persistent int64 buffer, computed as torchvision computes it (state_dict key: the op's label)
    return ("_swin_relative_position_index(", Lit(e.args["window"], "window"), ")")


def _emit(e: EmitArgs) -> Expr:
    a = e.args
    return ("_swin_attention_bias(", In(0), ", ", MOD, ", ", Lit(a["window"], "window"), ", ",
            Lit(a["shift"][0], "shift_h"), ", ", Lit(a["shift"][1], "shift_w"), ", ", Lit(a["size"][0], "height"), ", ", Lit(a["size"][1], "width"), ")")


register(
    OpDef("swin_attention_bias", "parameter",
          [ArgSpec("window", "int", REQUIRED), ArgSpec("shift", "int2", 0), ArgSpec("size", "list", REQUIRED)],
          _shape,
          "Swin's window attention bias: applied to relative_position_bias_table ((2w-1)^2, heads; a parameter "
          "with batch_dim=false), it owns torchvision's relative_position_index, a persistent int64 buffer "
          "named by its label, and gives the table gathered by it, [1, heads, w*w, w*w], plus with a shift "
          "(an int or [rows, cols]) the shifted-window mask of a map of the given size ([windows, heads, w*w, w*w]): the mask argument "
          "of scaled_dot_product_attention.",
          stateful=True, normalize=_norm, key_args=("window", "shift"), ctor=_ctor, emit=_emit,
          # reads the table as stored (no batch axis); its bias carries a batch of one, [1, 1, heads, N, N]
          unbatched_emit=_emit, output_batched=lambda a: True,
          buffers=lambda s, a: a["window"] ** 4,   # relative_position_index: one int64 per (query, key) pair
          traits={"buffer", "layout-sensitive", "finite-values"}, helpers=("swin_attention_bias",)),
)
