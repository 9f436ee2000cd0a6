"""How many `archc summary` row names (flat, and the tree at depths 1-6) create_feature_extractor does not
take for the built model: a name is taken when it is an eval-mode node name of get_graph_node_names or the
module path of some node (the module's output), as torchvision checks return_nodes.

    PYTHONPATH=$PWD python bench/summary_fx_names.py [spec ...]

Runs on any checkout (a checkout without archdsl.codegen.fxnames gets the IR names, as its archc did).
"""
from __future__ import annotations

import re
import sys
import warnings

import archdsl
from archdsl.passes.summary import summary_dict

try:   # what `archc summary` passes as row names
    from archdsl.cli.commands import _fx_names
except ImportError:
    def _fx_names(g):  # type: ignore[no-redef]
        return None

SPECS = ["resnet18", "mobilenet_v3_large", "convnext_tiny", "vit_base_patch16_224", "swin_t", "efficientnet_b0"]


def main(specs: list[str]) -> None:
    from torchvision.models.feature_extraction import get_graph_node_names
    warnings.filterwarnings("ignore")
    for spec in specs:
        g = archdsl.graph(spec)
        nodes = get_graph_node_names(archdsl.build(spec).eval())[1]
        names = _fx_names(g)

        def taken(n: str, nodes: list[str] = nodes) -> bool:
            return any(re.match(rf"^{re.escape(n)}(\.|$)", x) for x in nodes)

        kw = {"names": names} if names is not None else {}
        flat = [r["name"] for r in summary_dict(g, **kw)["layers"]]
        tree = {r["name"] for d in range(1, 7) for r in summary_dict(g, depth=d, **kw)["tree"]}
        bad_flat = [n for n in flat if n not in nodes and not taken(n)]
        bad_tree = sorted(n for n in tree if n not in nodes and not taken(n))
        print(f"{spec}: flat rows not taken {len(bad_flat)}/{len(flat)}; tree rows (depth 1-6) not taken "
              f"{len(bad_tree)}/{len(tree)}; e.g. {(bad_flat + bad_tree)[:3]}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or SPECS)
