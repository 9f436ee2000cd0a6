"""The pass runner (archdsl.passes.manager) and the IR's well-formedness check (Graph.verify)."""
from __future__ import annotations

import dataclasses
import io
from typing import Any

import pytest

import archdsl
from archdsl.ir import Graph, IRError, Node
from archdsl.passes import CHECK_PASSES, run_checks
from archdsl.passes.deploy import DEPLOY_PASSES, deploy_plan
from archdsl.passes.manager import Pass, format_graph, run_passes
from archdsl.pipeline import resolve

REPVGG = "examples/tiny_repvgg.arch"
TEXT = ("network t():\n    input [4, 8, 8]\n    g: reparam add:\n        [conv2d(4, 3, padding=1), batchnorm]\n"
        "        identity\n    relu\n    dropout(0.1)\n    conv2d(6, 1)\n    batchnorm\n")


def _snapshot(g: Graph) -> list[dict[str, Any]]:
    return [n.model_dump() for n in g.records()]


def _tiny() -> Graph:
    g = Graph("tiny")
    g.add(Node(id=0, op="input", shape=(3, 4, 4)))
    g.add(Node(id=1, op="relu", inputs=[0], in_shapes=[(3, 4, 4)], shape=(3, 4, 4)))
    g.inputs, g.outputs = [0], [("out", 1)]
    return g


class TestVerify:
    def test_every_spec_network_is_well_formed(self) -> None:
        for address in ("specs/resnet.arch:resnet50", "specs/repvgg.arch:repvgg_a0", REPVGG):
            g = archdsl.graph(address)
            assert g.verify() is g and g.problems() == []

    @pytest.mark.parametrize("breakage, message", [
        (lambda g: g.add(Node(id=2, op="relu", inputs=[7], in_shapes=[(3, 4, 4)], shape=(3, 4, 4))),
         "node 2 (relu '') reads node 7, which does not exist"),
        (lambda g: (g.add(Node(id=3, op="relu", inputs=[5], in_shapes=[(3, 4, 4)], shape=(3, 4, 4))),
                    g.add(Node(id=5, op="relu", inputs=[1], in_shapes=[(3, 4, 4)], shape=(3, 4, 4)))),
         "node 3 (relu '') reads node 5, which does not precede it"),
        (lambda g: g.add(Node(id=2, op="relu", inputs=[1], in_shapes=[(3, 2, 2)], shape=(3, 4, 4))),
         "records input shape [3, 2, 2] but node 1 has shape [3, 4, 4]"),
        (lambda g: g.add(Node(id=2, op="relu", inputs=[1], in_shapes=[], shape=(3, 4, 4))),
         "records 0 input shapes for 1 inputs"),
        (lambda g: g.add(Node(id=2, op="relu", inputs=[1], in_shapes=[(3, 4, 4)], shape=())),
         "has no valid shape recorded"),
        (lambda g: setattr(g, "outputs", [("out", 9)]), "output 'out' is node 9, which does not exist"),
        (lambda g: setattr(g, "outputs", []), "the graph has no output"),
        (lambda g: g._recs.__setitem__(4, Node(id=1, op="relu", inputs=[0], in_shapes=[(3, 4, 4)], shape=(3, 4, 4))),
         "is stored under id 4 but says id 1"),
        (lambda g: setattr(g, "fused_nodes", {42}), "fused node 42 does not exist"),
    ])
    def test_verify_names_the_breakage(self, breakage: Any, message: str) -> None:
        g = _tiny()
        g.verify()
        breakage(g)
        with pytest.raises(IRError, match="is not well-formed") as e:
            g.verify()
        assert message in str(e.value)


class TestRunner:
    def test_a_pass_that_breaks_the_graph_is_named(self) -> None:
        def bad(g: Graph, ctx: Any) -> Graph:
            out = g.derive()
            for n in g.records():
                out.add(n.model_copy(update={"inputs": [99]} if n.op != "input" else {}))
            return out
        with pytest.raises(IRError, match=r"(?s)after pass 'bad'.*reads node 99, which does not exist"):
            run_passes(_tiny(), [Pass("ok", lambda g, c: g), Pass("bad", bad)], None)
        # without verification the runner trusts the passes
        assert run_passes(_tiny(), [Pass("bad", bad)], None, verify=False).node(1).inputs == [99]

    def test_print_after_dumps_the_ir_of_that_pass_only(self) -> None:
        buf = io.StringIO()
        seen: list[str] = []
        passes = [Pass(name, lambda g, c, name=name: seen.append(name) or g) for name in ("a", "b", "c")]
        run_passes(_tiny(), passes, None, print_after="b", out=buf)
        assert seen == ["a", "b", "c"]
        text = buf.getvalue()
        assert text.startswith("// IR after b\ngraph tiny") and "// IR after a" not in text
        assert "%1 = relu(%0) {} : [3, 4, 4]" in text
        with pytest.raises(ValueError, match="print_after names no pass"):
            run_passes(_tiny(), passes, None, print_after="nope")

    def test_print_after_from_the_environment(self, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
        monkeypatch.setenv("ARCHDSL_PRINT_AFTER", "fold_bn")
        plan = deploy_plan(archdsl.graph(TEXT))
        err = capsys.readouterr().err
        assert err.count("// IR after ") == 1 and "// IR after fold_bn" in err
        assert format_graph(plan.graph).splitlines()[1:] == err.strip().splitlines()[2:]

    def test_pass_names(self) -> None:
        assert [p.name for p in DEPLOY_PASSES] == ["fuse_reparam", "drop_eval_identities", "fold_bn", "fold_scales",
                                                  "fuse_mul_add", "fuse_linear_pointwise"]
        assert [p.name for p in CHECK_PASSES] == ["reparam_proof", "lint"]


class TestNoMutation:
    @pytest.mark.parametrize("fold_bn", [True, False])
    def test_deploy_passes_leave_their_input_alone(self, fold_bn: bool) -> None:
        for spec in (TEXT, REPVGG):
            g = archdsl.graph(spec)
            before = _snapshot(g)
            groups = {p: dataclasses.replace(i) for p, i in g.reparam_groups.items()}
            plan = deploy_plan(g, fold_bn=fold_bn)
            assert _snapshot(g) == before and g.reparam_groups == groups and not g.fused_nodes
            shared = {id(n) for n in g.records()} & {id(n) for n in plan.graph.records()}
            assert not shared, "the deploy graph reuses train-graph node objects"
            assert plan.graph.fused_nodes == {i.output for i in g.reparam_groups.values()}
            assert len(plan.graph) <= len(g)

    def test_deploy_rewrites(self) -> None:
        plan = deploy_plan(archdsl.graph(TEXT))
        ops = [n.op for n in plan.graph.records()]
        assert "batchnorm" not in ops and "dropout" not in ops
        assert plan.fused_groups == ["g"] and plan.folded_bn == 1 and not plan.notes


class TestChecks:
    def test_run_checks_reports_lint_warnings(self) -> None:
        text = "network t():\n    input [3, 8, 8]\n    unused = 3\n    conv2d(4, 3)\n"
        r = resolve(text)
        diags = run_checks(archdsl.graph(text), r.program, r.network)
        assert [(d.severity, d.message) for d in diags] == [("warning", "'unused' is assigned but never used")]

    def test_run_checks_proves_reparam_groups_at_their_line(self) -> None:
        r = resolve(TEXT)
        g = archdsl.graph(TEXT)
        assert run_checks(g, r.program, r.network) == [] or all(d.severity == "warning" for d in
                                                                 run_checks(g, r.program, r.network))
        g.reparam_groups["g"] = dataclasses.replace(g.reparam_groups["g"], kind="concat")
        errors = [d for d in run_checks(g, r.program, r.network) if d.severity == "error"]
        assert len(errors) == 1
        d = errors[0]
        assert d.message == "reparam group cannot be fused into one conv: only 'reparam add:' groups fuse, not 'concat'"
        assert d.span is not None and (d.span.line, d.span.col) == (3, 5)
