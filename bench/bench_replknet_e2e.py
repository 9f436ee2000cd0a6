"""End to end: RepLKNet-31B deploy form, PyTorch defaults vs the selected conv backends (img/s).

Builds ``specs/replknet.arch:replknet_31b`` (random weights, random BatchNorm statistics), converts it to its
deploy form with :func:`archdsl.deploy` (large-kernel branches merged, BatchNorms folded) in PyTorch's
default NCHW layout, and times eval-mode forwards at the given batch size:

* ``pytorch-default``: the deploy model as is (every conv through F.conv2d on NCHW tensors);
* ``channels_last``: the same model and input converted to channels_last (the usual manual fix);
* ``selected``: :func:`archdsl.backends.apply` with the chosen method (cost model by default).

Outputs are compared with the default's (max abs difference, relative to the output scale). Warm-up is one
batch-1 forward (it creates the oneDNN primitives); timed forwards use the full batch. If the RepLKNet spec
or deploy is unavailable, ``--stack`` benchmarks RepLKNet-31B-shaped large-kernel blocks defined below.

    .venv/bin/python bench/bench_replknet_e2e.py --batch 8 --threads 1 --out bench/results/replknet_e2e_cpu.md
    python bench/bench_replknet_e2e.py --device cuda --batch 64 --method autotune --reps 10 \
        --out bench/results/replknet_e2e_cuda.md

On CUDA the channels_last variant runs with ``cudnn.benchmark`` on, and warm-up is two full-batch forwards.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import archdsl  # noqa: E402
from archdsl import backends as B  # noqa: E402
from archdsl.backends import impl  # noqa: E402,F401  (load every module now: edits during a run are not seen)
from archdsl.backends.impl import synchronize  # noqa: E402

# RepLKNet-31B's stages in deploy form (one merged large kernel per block), for --stack
STACK = """\
block LKBlock(c, k):
    add:
        seq:
            pw1: conv2d(c, 1)
            relu
            lkb_reparam: conv2d(c, k, padding=k // 2, groups=c)
            relu
            pw2: conv2d(c, 1)
        identity
    add:
        seq:
            ffn_pw1: conv2d(4 * c, 1)
            gelu
            ffn_pw2: conv2d(c, 1)
        identity

network lk_stack_31b:
    input [3, 224, 224]
    stem: conv2d(128, 4, stride=4)
    s0: LKBlock(128, 31) * 2
    t0: conv2d(256, 3, stride=2, padding=1)
    s1: LKBlock(256, 29) * 2
    t1: conv2d(512, 3, stride=2, padding=1)
    s2: LKBlock(512, 27) * 18
    t2: conv2d(1024, 3, stride=2, padding=1)
    s3: LKBlock(1024, 13) * 2
    adaptive_avgpool(1)
    flatten
    head: linear(1000)
"""


def timed(model: Any, x: torch.Tensor, reps: int) -> tuple[float, torch.Tensor]:
    """Median seconds of ``reps`` forwards (after a warm-up: batch 1 on CPU, two full batches on CUDA) and
    the last output."""
    with torch.no_grad():
        for _ in range(2 if x.device.type == "cuda" else 1):
            model(x if x.device.type == "cuda" else x[:1])
        synchronize(x.device)
        times, y = [], None
        for _ in range(reps):
            t0 = time.perf_counter()
            y = model(x)
            synchronize(x.device)
            times.append(time.perf_counter() - t0)
    return statistics.median(times), y  # type: ignore[return-value]


def make_model(stack: bool) -> tuple[Any, str]:
    torch.manual_seed(0)
    if stack:
        m = archdsl.build(STACK)
        m.eval()
        return m, "RepLKNet-31B-shaped stack of deploy-form large-kernel blocks (bench/bench_replknet_e2e.py)"
    m = archdsl.build("specs/replknet.arch:replknet_31b")
    g = torch.Generator().manual_seed(0)
    for mod in m.modules():  # non-trivial BatchNorm statistics so the folded deploy weights are realistic
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.copy_(torch.randn(mod.running_mean.shape, generator=g) * 0.1)
            mod.running_var.copy_(torch.rand(mod.running_var.shape, generator=g) * 0.5 + 0.75)
    m.eval()
    return archdsl.deploy(m, memory_format="contiguous"), "RepLKNet-31B deploy form (specs/replknet.arch, archdsl.deploy)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--reps", type=int, default=2, help="timed forwards for the faster variants")
    ap.add_argument("--baseline-reps", type=int, default=1, help="timed forwards of the (slow) default")
    ap.add_argument("--method", default="auto", help="selection method for archdsl.backends.apply")
    ap.add_argument("--stack", action="store_true", help="benchmark the built-in block stack instead")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--out", default=None, help="write a markdown report here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev, dt = torch.device(args.device), getattr(torch, args.dtype)
    model, what = make_model(args.stack)
    model = model.to(dev, dt)
    x = torch.randn(args.batch, 3, 224, 224, generator=torch.Generator().manual_seed(1)).to(dev, dt)
    res: dict[str, dict[str, Any]] = {}

    t_base, y_base = timed(model, x, args.baseline_reps)
    res["pytorch-default"] = {"s": t_base}
    print(f"pytorch-default: {t_base:.2f} s/batch, {args.batch / t_base:.2f} img/s", flush=True)

    model_cl = model.to(memory_format=torch.channels_last)
    torch.backends.cudnn.benchmark = dev.type == "cuda"
    t_cl, y_cl = timed(model_cl, x.contiguous(memory_format=torch.channels_last), args.reps)
    torch.backends.cudnn.benchmark = False
    res["channels_last" + ("+cudnn.benchmark" if dev.type == "cuda" else "")] = {
        "s": t_cl, "diff": (y_cl - y_base).abs().max().item()}
    model = model_cl.to(memory_format=torch.contiguous_format)
    print(f"channels_last:   {t_cl:.2f} s/batch, {args.batch / t_cl:.2f} img/s", flush=True)

    t0 = time.perf_counter()
    plan = B.apply(model, x, method=args.method)
    t_plan = time.perf_counter() - t0
    t_sel, y_sel = timed(model, x, args.reps)
    res["selected"] = {"s": t_sel, "diff": (y_sel - y_base).abs().max().item(), "plan": plan.counts()}
    if dev.type == "cuda":
        # the Triton kernels are registered custom ops, so the selected model also compiles (inductor fuses
        # the pointwise ops around them)
        comp = torch.compile(model)
        t_c, y_c = timed(comp, x, args.reps)
        res["selected + torch.compile"] = {"s": t_c, "diff": (y_c - y_base).abs().max().item()}
        print(f"selected+compile: {t_c:.3f} s/batch, {args.batch / t_c:.2f} img/s", flush=True)
    print(f"selected:        {t_sel:.2f} s/batch, {args.batch / t_sel:.2f} img/s; plan {plan.counts()} "
          f"(planned in {t_plan:.1f} s; predicted {plan.total_ms / 1e3:.1f} s of convs vs "
          f"{plan.baseline_ms / 1e3:.1f} s default)", flush=True)
    scale = y_base.abs().max().item()
    where = (f"GPU: {torch.cuda.get_device_name(dev)}" if dev.type == "cuda" else
             f"CPU: {B.cache.cpu_device_key(torch.get_num_threads())}")
    lines = [f"# End to end: {what}", "",
             f"{where}, torch {torch.__version__}, "
             f"batch {args.batch} at 224x224, {args.dtype}, eval mode, no_grad. Selection method: `{args.method}` "
             f"(planning took {t_plan:.1f} s). Median of {args.reps} timed forwards "
             f"({args.baseline_reps} for the default) after a batch-1 warm-up.", "",
             "| variant | s/batch | img/s | speed-up | max abs diff vs default (output scale) |",
             "|---|---|---|---|---|"]
    for name, r in res.items():
        diff = f"{r['diff']:.2e} ({scale:.2f})" if "diff" in r else "-"
        lines.append(f"| {name} | {r['s']:.4f} | {args.batch / r['s']:.1f} | {t_base / r['s']:.2f}x | {diff} |")
    lines += ["", f"Selected backends (conv layers): {json.dumps(plan.counts())}", ""]
    if plan.validation:
        lines += ["Whole-model check inside `apply` (ms per forward; the fastest is kept): "
                  + ", ".join(f"{k} {v:.1f}" for k, v in plan.validation["forward_ms"].items())
                  + f" -> kept **{plan.validation['kept']}**.", ""]
    dw = [c for c in plan.layers if c.spec.depthwise and c.spec.kernel[0] > 5]
    if dw:
        seen: set[str] = set()
        lines += ["Large-kernel depthwise layers (one row per distinct shape; ms per layer for every candidate):",
                  "", "| layer | chosen | candidates (ms) |", "|---|---|---|"]
        for c in dw:
            if c.spec.describe() in seen:
                continue
            seen.add(c.spec.describe())
            opts = ", ".join(f"{k} {v:.3f}" for k, v in c.options.items() if v != float("inf"))
            lines.append(f"| {c.spec.describe()} | {c.backend} | {opts} |")
        lines.append("")
    lines += [
              "Reproduce: `.venv/bin/python bench/bench_replknet_e2e.py --batch "
              f"{args.batch} --device {dev.type} --dtype {args.dtype} --reps {args.reps}"
              f"{' --threads ' + str(args.threads) if args.threads else ''}"
              f"{' --stack' if args.stack else ''} --method {args.method}`", ""]
    print("\n".join(lines))
    if args.out:
        Path(args.out).write_text("\n".join(lines))
        Path(args.out).with_suffix(".json").write_text(json.dumps(plan.to_dict(), indent=1))


if __name__ == "__main__":
    main()
