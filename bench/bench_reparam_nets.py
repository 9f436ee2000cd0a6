"""Benchmark: the re-parameterized mobile nets' deploy form vs timm's train form and timm's own deploy form.

    .venv/bin/python bench/bench_reparam_nets.py [--threads 2] [--rounds 7] [--out bench/results/reparam_nets_cpu.md]

For each net (MobileOne-S1, MobileOne-S4), in one process with the same (BN-randomized) weights: timm's
train form (eval), timm's `reparameterize_model` output, and `archdsl.deploy` of our spec (loaded from
timm's state_dict), at batch 1 and 8 on 3x224x224. Each model is warmed up until two consecutive
forwards agree within 10%; then the three run round-robin, one forward each per round (load changes
on a shared machine hit all alike), and the figure is the median. The machine's fp32 bound (one large
sgemm, as in bench/bench_deploy.py) and the load average before and after are printed with the table.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import archdsl  # noqa: E402
from benchlib import round_robin as _bench_round_robin, sgemm_gflops, warm_up as _warm  # noqa: E402
from helpers import randomize_bn  # noqa: E402

__all__ = ["main"]

NETS = {"MobileOne-S1": ("mobileone.arch", "mobileone_s1"), "MobileOne-S4": ("mobileone.arch", "mobileone_s4")}
NETS["FastViT-SA12"] = ("fastvit.arch", "fastvit_sa12")
NETS["RepViT-M1.1"] = ("repvit.arch", "repvit_m1_1")


def _models(spec: str, name: str, batch: int) -> tuple[Any, Any, Any, float]:
    import timm
    from timm.utils import reparameterize_model
    ref = timm.create_model(name, pretrained=False)
    randomize_bn(ref, seed=0)
    ref.eval()
    # built for the benchmark's 224x224 (FastViT's spec says 256, its default; its attention is sized to the input)
    ours = archdsl.build(str(ROOT / "specs" / spec) + ":" + name, input_shape=(3, 224, 224))
    ours.load_state_dict(ref.state_dict(), strict=True)
    ours.eval()
    dep = archdsl.deploy(ours, memory_format="auto", batch_size=batch)
    tdep = reparameterize_model(timm.create_model(name, pretrained=False).eval())
    tdep.load_state_dict(reparameterize_model(ref, inplace=False).state_dict())
    x = torch.randn(batch, 3, 224, 224)
    with torch.inference_mode():   # relative, as the tests measure it: randomized BNs make large logits
        want = ref(x)
        diff = (dep(x) - want).abs().max().item() / max(1.0, want.abs().max().item())
    return ref, tdep, dep, diff


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--nets", default=",".join(NETS))
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/reparam_nets_cpu.md")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    load0 = os.getloadavg()
    gf = sgemm_gflops(torch.device("cpu"))
    rows = []
    for label in a.nets.split(","):
        spec, name = NETS[label]
        for batch in (1, 8):
            ref, tdep, dep, diff = _models(spec, name, batch)
            x = torch.randn(batch, 3, 224, 224)
            for m in (ref, tdep, dep):
                _warm(m, x)
            t_ref, t_tdep, t_dep = _bench_round_robin([(ref, x), (tdep, x), (dep, x)], a.rounds)
            fmt = dep.deploy_info.get("memory_format", "?")
            row = (f"| {label} | {batch} | {t_ref * 1e3:.1f} | {t_tdep * 1e3:.1f} | {t_dep * 1e3:.1f} ({fmt}) | "
                   f"{t_ref / t_dep:.2f}x | {t_tdep / t_dep:.2f}x | {diff:.1e} |")
            print(row, flush=True)
            rows.append(row)
    load1 = os.getloadavg()
    lines = [
        "# Re-parameterized mobile nets: deploy speed-up (CPU)", "",
        f"`bench/bench_reparam_nets.py --threads {a.threads} --rounds {a.rounds}` on {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}; fp32 sgemm bound {gf:.1f} GFLOP/s; load average before "
        f"{load0[0]:.2f} / after {load1[0]:.2f} (a shared machine: other jobs ran during the timing).", "",
        "Median ms per forward, 3x224x224, the three forms round-robin. `vs train`: timm train form / ours; "
        "`vs timm deploy`: timm `reparameterize_model` / ours (>= 1.00x: ours is not slower).", "",
        "| net | batch | timm train (ms) | timm deploy (ms) | ours deploy (ms) | vs train | vs timm deploy | max diff / max(1, max abs ref) |",
        "|---|---|---|---|---|---|---|---|", *rows, ""]
    a.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
