"""Train a small re-parameterizable network for a few steps, deploy it, and check both forms agree.

    .venv/bin/python examples/train_reparam.py [--steps 20] [--batch 32]

The spec (examples/tiny_repvgg.arch) uses RepVGG blocks: three summed linear branches in a
``reparam add:`` group. Training runs the multi-branch form; ``archdsl.deploy`` folds every BatchNorm
and fuses each group into a single 3x3 conv, giving a plain conv network with the same eval outputs.
Data is synthetic (random images, labels from a fixed random linear rule), so this runs anywhere.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

import archdsl

__all__ = ["main"]

SPEC = str(Path(__file__).resolve().parent / "tiny_repvgg.arch")


def _synthetic_batch(gen: torch.Generator, rule: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random 3x32x32 images; the label is the argmax of a fixed linear map of the pooled colours."""
    x = torch.randn(batch, 3, 32, 32, generator=gen)
    y = (x.mean(dim=(2, 3)) @ rule).argmax(dim=1)
    return x, y


def main(steps: int = 20, batch: int = 32, seed: int = 0, verbose: bool = False) -> dict[str, Any]:
    """Train ``steps`` SGD steps, deploy, compare on held-out inputs; return the figures."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    rule = torch.randn(3, 10, generator=gen)
    model = archdsl.build(SPEC, num_classes=10)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    losses = []
    for step in range(steps):
        x, y = _synthetic_batch(gen, rule, batch)
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if verbose and (step % 5 == 0 or step == steps - 1):
            print(f"step {step:3d}  loss {loss.item():.4f}")

    model.eval()   # BatchNorm running statistics now come from training: deploy folds them
    t = time.perf_counter()
    deployed = archdsl.deploy(model, memory_format="contiguous")
    deploy_s = time.perf_counter() - t
    x, _ = _synthetic_batch(gen, rule, 16)
    with torch.no_grad():
        a, b = model(x), deployed(x)
    result = {
        "first_loss": losses[0] if losses else float("nan"),
        "last_loss": losses[-1] if losses else float("nan"),
        "max_abs_diff": (a - b).abs().max().item(),
        "output_scale": a.abs().max().item(),
        "train_convs": sum(isinstance(m, nn.Conv2d) for m in model.modules()),
        "deploy_convs": sum(isinstance(m, nn.Conv2d) for m in deployed.modules()),
        "train_bn": sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()),
        "deploy_bn": sum(isinstance(m, nn.BatchNorm2d) for m in deployed.modules()),
        "deploy_s": deploy_s,
        "deploy_notes": list(deployed.deploy_info["notes"]),   # BatchNorms that could not fold exactly, and why
    }
    if verbose:
        print(f"train form:  {result['train_convs']} convs, {result['train_bn']} BatchNorms")
        print(f"deploy form: {result['deploy_convs']} convs, {result['deploy_bn']} BatchNorms "
              f"(deployed in {deploy_s:.2f}s)")
        print(f"max |train - deploy| = {result['max_abs_diff']:.2e} (outputs up to {result['output_scale']:.3f})")
        for note in result["deploy_notes"]:
            print(f"note: {note}")
        print("\n".join(deployed.__archdsl_source__.splitlines()[:24]))
    return result


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()
    main(args.steps, args.batch, verbose=True)
