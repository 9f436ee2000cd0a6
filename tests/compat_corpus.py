"""The compatibility corpus (tests/compat/): which networks it holds and the fingerprint each must keep.

A network's fingerprint is what a user's trained checkpoint and results depend on:

* the state_dict: its sorted ``key: shape`` lines, kept as a count, an element count and a SHA-256 digest;
* its function: every floating-point state_dict entry filled by :func:`fill_deterministic` (values drawn from
  a generator seeded by the entry's *key*, so neither the order in which modules are created nor torch's
  default initializers can change them), then one eval-mode forward in float64 on a seeded input at a small
  size the network accepts; the output's shape, a few statistics and a few sampled values are kept.

Outputs are compared with a tolerance relative to the output's own scale (:data:`RTOL` x max |output|), so
CPUs whose kernels round differently (AVX2 vs AVX-512, other thread counts) agree while a changed function
(another key order in a concat, a missing scale, a changed default) does not.

``scripts/compat_manifest.py`` records fingerprints into tests/compat/manifest.json for networks not yet in it;
``tests/test_compat.py`` rebuilds every network and compares.
"""
from __future__ import annotations

import hashlib
import json
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "compat"
MANIFEST = CORPUS / "manifest.json"
FORMAT = 1
# |ours - recorded| <= RTOL x max(|recorded output|): float32 forwards of the same function on two CPUs
# differ by ~1e-6 of the scale for these (well-conditioned, fan-in scaled) weights; a changed function by
# far more than 1e-3 of it.
RTOL = 1e-3
# the input sides tried, smallest first: the first one the network's input contract accepts is used
SIDES = (64, 96, 128, 160, 192, 224, 256)
N_SAMPLES = 8

__all__ = ["CORPUS", "MANIFEST", "RTOL", "compare", "corpus_networks", "fill_deterministic", "fingerprint",
           "load_manifest", "state_dict_signature"]

_NETWORK = re.compile(r"^network\s+([A-Za-z_]\w*)", re.MULTILINE)
# a spec that needs a plugin says so in its header, as the examples do: "archc check ... --plugin examples/plugins/x.py"
_PLUGIN = re.compile(r"--plugin\s+examples/plugins/(\w+\.py)")


def corpus_networks() -> list[str]:
    """Every ``path.arch:network`` of the corpus, the path relative to tests/compat, sorted."""
    out = []
    for f in sorted(CORPUS.rglob("*.arch")):
        rel = f.relative_to(CORPUS).as_posix()
        out.extend(f"{rel}:{name}" for name in _NETWORK.findall(f.read_text()))
    return out


def plugins_of(address: str) -> list[Path]:
    """The frozen plugin files a corpus network is built with (named in its spec's header comments)."""
    path = address.rpartition(":")[0]
    return [CORPUS / "examples" / "plugins" / n for n in _PLUGIN.findall((CORPUS / path).read_text())]


def load_manifest() -> dict[str, Any]:
    return json.loads(MANIFEST.read_text()) if MANIFEST.exists() else {"format": FORMAT, "networks": {}}


def _seed_of(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & (2**63 - 1)


def fill_deterministic(model: Any) -> None:
    """Overwrite every floating-point state_dict entry with values that depend only on its key and shape
    (uniform draws from a generator seeded by the key): BatchNorm running variances in [0.5, 1.5), other
    vectors and scalars near 1 (``weight``) or near 0, and every matrix or kernel with variance
    ``2 / fan_in`` (fan_in: the elements per output row), so deep networks keep a steady scale."""
    import torch
    sd = model.state_dict()
    with torch.no_grad():
        for key in sorted(sd):   # sorted: a tensor shared by two keys gets the same values every time
            t = sd[key]
            if not t.is_floating_point():
                continue
            g = torch.Generator().manual_seed(_seed_of(key))
            leaf = key.rsplit(".", 1)[-1]
            if leaf == "running_var":
                lo, hi = 0.5, 1.5
            elif t.dim() >= 2:
                a = (6.0 / max(1, t[0].numel())) ** 0.5
                lo, hi = -a, a
            elif leaf == "weight":
                lo, hi = 0.8, 1.2
            else:
                lo, hi = -0.2, 0.2
            t.uniform_(lo, hi, generator=g)


@contextmanager
def _no_default_init() -> Iterator[None]:
    """Construct modules without torch's default initializers (every value is overwritten by
    :func:`fill_deterministic`; the initializers were most of a large network's build time)."""
    import torch
    saved = {n: f for n, f in vars(torch.nn.init).items() if n.endswith("_") and not n.startswith("_")
             and callable(f)}
    for n in saved:
        setattr(torch.nn.init, n, lambda tensor, *a, **k: tensor)
    try:
        yield
    finally:
        for n, f in saved.items():
            setattr(torch.nn.init, n, f)


def state_dict_signature(model: Any) -> dict[str, Any]:
    """The state_dict's sorted ``key: shape`` lines as a count, a total element count and a digest."""
    sd = model.state_dict()
    lines = [f"{k}: {list(sd[k].shape)}" for k in sorted(sd)]
    return {"keys": len(lines), "numel": sum(int(v.numel()) for v in sd.values()),
            "digest": hashlib.sha256("\n".join(lines).encode()).hexdigest()}


def build(address: str) -> Any:
    """Build a corpus network (``path.arch:network`` relative to tests/compat) as a user would: the
    network's defaults, imports resolved relative to the spec (examples import ``../specs``)."""
    from archdsl.codegen.build import instantiate
    from archdsl.pipeline import compile_graph
    from archdsl.plugins import load_plugins
    load_plugins([str(p) for p in plugins_of(address)], env=False)
    path, _, name = address.rpartition(":")
    g = compile_graph(f"{CORPUS / path}:{name}", None, allow_outside=True)
    with _no_default_init():
        return instantiate(g)


def pick_input(model: Any) -> list[int]:
    """The smallest square input side in :data:`SIDES` the network accepts (its declared size otherwise),
    as a batch-1 shape; a video clip [C, T, H, W] also at most 4 frames."""
    from archdsl.passes.sizes import input_contract
    g = model.arch_graph
    declared = tuple(g.input_shape)
    if len(declared) in (3, 4):
        contract = input_contract(g)
        for side in SIDES:
            # a video clip [C, T, H, W]: at most 4 frames
            shape = (declared[0], side, side) if len(declared) == 3 else (declared[0], min(declared[1], 4), side, side)
            if side <= max(declared[-2:]) and contract.accepts(shape):
                return [1, *shape]
    return [1, *declared]


def _flat_outputs(y: Any) -> list[Any]:
    if isinstance(y, dict):
        return [t for k in sorted(y) for t in _flat_outputs(y[k])]
    if isinstance(y, (list, tuple)):
        return [t for v in y for t in _flat_outputs(v)]
    return [y]


def run(model: Any, input_shape: list[int]) -> list[Any]:
    """The eval-mode outputs (flattened in order) on the seeded input of ``input_shape``."""
    import torch
    fill_deterministic(model)
    model.eval()
    x = torch.randn(input_shape, generator=torch.Generator().manual_seed(20))
    # in float64: a network whose activations grow large at these weights (EfficientNetV2-S: |y| ~ 2e6)
    # amplifies float32 rounding, which differs between CPUs (AVX2 / AVX-512), past any useful tolerance
    model.double()
    x = x.double()
    with torch.no_grad():
        return [t.detach().double() for t in _flat_outputs(model(x))]


def fingerprint(address: str) -> dict[str, Any]:
    """The manifest entry of one corpus network."""
    import torch
    model = build(address)
    entry: dict[str, Any] = {"state_dict": state_dict_signature(model)}
    shape = pick_input(model)
    outs = []
    for y in run(model, shape):
        flat = y.flatten()
        if not torch.isfinite(flat).all():
            raise ValueError(f"{address}: non-finite output; cannot fingerprint it")
        g = torch.Generator().manual_seed(7)
        idx = sorted(set(torch.randint(0, flat.numel(), (N_SAMPLES,), generator=g).tolist()))
        outs.append({"shape": list(y.shape), "absmax": flat.abs().max().item(), "mean": flat.mean().item(),
                     "std": flat.std().item() if flat.numel() > 1 else 0.0,
                     "samples": [[i, flat[i].item()] for i in idx]})
    entry["input"] = shape
    entry["outputs"] = outs
    return entry


def compare(address: str, want: dict[str, Any]) -> list[str]:
    """What differs between the network built now and its recorded entry (empty: compatible)."""
    model = build(address)
    problems = []
    sig = state_dict_signature(model)
    if sig != want["state_dict"]:
        problems.append(f"state_dict keys/shapes changed: now {sig['keys']} keys, {sig['numel']} elements "
                        f"(recorded {want['state_dict']['keys']} keys, {want['state_dict']['numel']} elements), "
                        f"digest {sig['digest'][:12]} != {want['state_dict']['digest'][:12]}")
    outs = run(model, want["input"])
    if len(outs) != len(want["outputs"]):
        return problems + [f"{len(outs)} outputs, recorded {len(want['outputs'])}"]
    for k, (y, w) in enumerate(zip(outs, want["outputs"])):
        if list(y.shape) != w["shape"]:
            problems.append(f"output {k}: shape {list(y.shape)}, recorded {w['shape']}")
            continue
        flat = y.flatten()
        tol = RTOL * max(w["absmax"], 1e-12)
        got = {"absmax": flat.abs().max().item(), "mean": flat.mean().item(),
               "std": flat.std().item() if flat.numel() > 1 else 0.0}
        for stat, v in got.items():
            if not abs(v - w[stat]) <= tol:
                problems.append(f"output {k}: {stat} {v:.6g}, recorded {w[stat]:.6g} (tolerance {tol:.3g})")
        for i, v in w["samples"]:
            if not abs(flat[i].item() - v) <= tol:
                problems.append(f"output {k}: value [{i}] {flat[i].item():.6g}, recorded {v:.6g} "
                                f"(tolerance {tol:.3g})")
    return problems


def main(argv: list[str]) -> int:
    """``python tests/compat_corpus.py compare ADDRESS``: the problems of one network as a JSON list (a
    network built with plugins is compared in its own process: a plugin module name is loaded only once)."""
    if len(argv) != 2 or argv[0] != "compare":
        print("usage: compat_corpus.py compare PATH.arch:NETWORK", file=sys.stderr)
        return 2
    import torch
    torch.set_num_threads(1)
    print(json.dumps(compare(argv[1], load_manifest()["networks"][argv[1]])))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main(sys.argv[1:]))
