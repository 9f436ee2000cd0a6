"""Train the U-Net of examples/unet.arch for a few steps at two input sizes with one built model.

    .venv/bin/python examples/unet_train.py [--steps 4] [--base 8] [--transposed]

The model is built once (for its declared 256x256 input) and trained alternately on 64x64 and 96x80
crops: the spec upsamples by a factor (bilinear, or a 2x2 stride-2 transposed conv with --transposed),
so the decoder follows whatever size arrives, as long as H and W are multiples of 16. The task is
synthetic (segment the pixels brighter than their image's mean), so this runs anywhere.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from torch import nn

import archdsl

__all__ = ["main"]

SPEC = str(Path(__file__).resolve().parent / "unet.arch")
SIZES = ((64, 64), (96, 80))


def _synthetic_batch(gen: torch.Generator, batch: int, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random images; a pixel's class is whether its channel mean exceeds the image's mean."""
    x = torch.randn(batch, 3, h, w, generator=gen)
    lum = x.mean(dim=1)
    y = (lum > lum.mean(dim=(1, 2), keepdim=True)).long()
    return x, y


def main(steps: int = 4, base: int = 8, bilinear: bool = True, batch: int = 2, seed: int = 0,
         verbose: bool = False) -> dict[str, Any]:
    """Run ``steps`` SGD steps per input size; return the losses (by size) and the model."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = archdsl.build(SPEC, base=base, bilinear=bilinear)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    losses: dict[tuple[int, int], list[float]] = {s: [] for s in SIZES}
    for step in range(steps):
        for h, w in SIZES:
            x, y = _synthetic_batch(gen, batch, h, w)
            loss = loss_fn(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses[(h, w)].append(loss.item())
            if verbose:
                print(f"step {step}  {h}x{w}  loss {loss.item():.4f}")
    return {"losses": losses, "model": model}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--base", type=int, default=8, help="width of the first level (64 in the paper)")
    ap.add_argument("--transposed", action="store_true", help="learned transposed-conv upsampling")
    args = ap.parse_args()
    main(steps=args.steps, base=args.base, bilinear=not args.transposed, verbose=True)
