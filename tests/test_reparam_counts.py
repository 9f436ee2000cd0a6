"""Parameter and MAC counts of the modern re-parameterized nets (issue 15), in both forms, against the
committed reference data (tests/data/reference-counts.json, measured from timm with fvcore's
conv/linear/matmul count; the deploy form is `timm.utils.reparameterize_model`'s, which keeps the BatchNorms
that no reparam group owns, i.e. archdsl's deploy with ``fold_bn=False``). No weights are built here:
the graph's counts are compile-time facts.
"""
from __future__ import annotations

import pytest
from helpers import reference_counts

import archdsl
from archdsl.passes.deploy import deploy_graph

NETS = [("mobileone", "mobileone_s1"), ("mobileone", "mobileone_s4"), ("repvit", "repvit_m1_1"),
        ("fastvit", "fastvit_sa12")]


@pytest.mark.parametrize("spec,name", NETS)
def test_train_and_deploy_counts_equal_timm(spec: str, name: str) -> None:
    counts = reference_counts()[f"timm.{name}"]
    g = archdsl.graph(f"specs/{spec}.arch:{name}")
    assert [1, *g.input_shape] == counts["input"] and [1, *g.output_shapes["out"]] == counts["output"]
    assert (g.total_params, g.total_macs) == (counts["params"], counts["macs"])
    dg = deploy_graph(g, fold_bn=False)
    assert (dg.total_params, dg.total_macs) == (counts["params_deploy"], counts["macs_deploy"])
    # folding the remaining BatchNorms too never adds parameters
    assert deploy_graph(g).total_params <= counts["params_deploy"]
