"""Core language semantics: naming, repetition, branches, named values, imports, codegen."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import archdsl
from archdsl import ArchError
from archdsl.lang import ast as A


def build_src(src: str, **params: object) -> torch.nn.Module:
    return archdsl.build(src, **params)


def keys(model: torch.nn.Module) -> list[str]:
    return list(model.state_dict().keys())


def test_unlabelled_items_are_numbered_like_sequential() -> None:
    m = build_src("""
network n():
    input [3, 8, 8]
    features: [conv2d(4, 3, padding=1), relu, conv2d(4, 3), batchnorm]
""")
    assert keys(m)[:4] == ["features.0.weight", "features.0.bias", "features.2.weight", "features.2.bias"]
    # a chain of layers is an nn.Sequential, indexable like torchvision's (relu is a parameter-free module)
    assert isinstance(m.features, torch.nn.Sequential)
    assert isinstance(m.features[2], torch.nn.Conv2d) and isinstance(m.features[3], torch.nn.BatchNorm2d)
    assert m(torch.randn(2, 3, 8, 8)).shape == (2, 4, 6, 6)


def test_repetition_and_comprehension_make_numbered_blocks() -> None:
    m = build_src("""
block B(c, stride=1):
    conv: conv2d(c, 3, stride=stride, padding=1)

network n():
    input [3, 16, 16]
    a: B(4) * 2
    b: [B(8, stride=2 if i == 0 else 1) for i in range(3)]
""")
    ks = keys(m)
    assert "a.1.conv.weight" in ks and "b.2.conv.weight" in ks and "b.3.conv.weight" not in ks
    assert m(torch.randn(1, 3, 16, 16)).shape == (1, 8, 8, 8)
    assert isinstance(m.b, torch.nn.Sequential)
    assert isinstance(m.b[0].conv, torch.nn.Conv2d) and m.b[0].conv.stride == (2, 2)


def test_optional_layer_and_projection_shortcut_chosen_by_in_c() -> None:
    src = """
block Res(c, stride=1):
    add:
        body: [conv2d(c, 3, stride=stride, padding=1), batchnorm]
        proj: conv2d(c, 1, stride=stride) if stride != 1 or in.c != c else identity
    relu

network n():
    input [4, 8, 8]
    r1: Res(4)
    r2: Res(8, stride=2)
"""
    m = build_src(src)
    ks = keys(m)
    assert not any(k.startswith("r1.proj") for k in ks)
    assert "r2.proj.weight" in ks
    x = torch.randn(1, 4, 8, 8)
    m.eval()
    with torch.no_grad():
        y1 = torch.relu(m.r1.body[1](m.r1.body[0](x)) + x)
        assert torch.allclose(m(x), torch.relu(m.r2.body[1](m.r2.body[0](y1)) + m.r2.proj(y1)), atol=1e-6)


def test_named_values_chunk_concat_and_shuffle() -> None:
    m = build_src("""
block Unit(c):
    a, b = x -> chunk(2)
    b2 = b -> branch: conv2d(c // 2, 1) -> relu
    concat(a, b2) -> channel_shuffle(2)

network n():
    input [8, 4, 4]
    u: Unit(8)
""")
    x = torch.randn(1, 8, 4, 4)
    a, b = x.chunk(2, 1)
    y = torch.cat([a, torch.relu(m.u.branch(b))], 1)
    y = y.view(1, 2, 4, 4, 4).transpose(1, 2).reshape(1, 8, 4, 4)
    assert torch.allclose(m(x), y)


def test_if_statement_and_parameters_from_api() -> None:
    src = """
network n(num_classes=10, deep=false):
    input [3, 8, 8]
    conv2d(4, 3)
    if deep:
        extra: conv2d(4, 3)
    elif num_classes > 100:
        relu
    else:
        sigmoid
    flatten
    fc: linear(num_classes)
"""
    assert archdsl.graph(src).total_params == (3 * 9 * 4 + 4) + (4 * 36 * 10 + 10)
    g = archdsl.graph(src, deep=True, num_classes=5)
    assert g.output_shapes == {"out": (5,)}
    assert [n.op for n in g.nodes()][:4] == ["input", "conv2d", "conv2d", "flatten"]


def test_imports_resolve_relative_to_the_importing_file(tmp_path: Path) -> None:
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "blocks.arch").write_text("block CB(c):\n    conv: conv2d(c, 3, padding=1)\n    bn: batchnorm\n")
    (tmp_path / "net.arch").write_text('from "lib/blocks.arch" import CB\n\nnetwork n():\n    input [3, 8, 8]\n'
                                       "    stem: CB(16)\n")
    g = archdsl.graph(str(tmp_path / "net.arch"))
    assert g.output_shapes["out"] == (16, 8, 8)


def test_network_outputs_return_a_dict() -> None:
    m = build_src("""
network n():
    input [3, 16, 16]
    c1 = x -> s1: conv2d(8, 3, stride=2, padding=1)
    c2 = c1 -> s2: conv2d(16, 3, stride=2, padding=1)
    output c1, c2
""")
    out = m(torch.randn(1, 3, 16, 16))
    assert set(out) == {"c1", "c2"} and out["c2"].shape == (1, 16, 4, 4)


def test_mul_broadcasts_for_squeeze_excitation() -> None:
    g = archdsl.graph("""
block SE(r=4):
    mul:
        identity
        seq:
            adaptive_avgpool(1)
            fc1: conv2d(in.c // r, 1)
            relu
            fc2: conv2d(in.c, 1)
            sigmoid

network n():
    input [16, 8, 8]
    se: SE()
""")
    assert g.output_shapes["out"] == (16, 8, 8)
    assert g.total_params == (16 * 4 + 4) + (4 * 16 + 16)


def test_generated_source_is_plain_torch_and_runs_from_disk(tmp_path: Path) -> None:
    src = archdsl.source("specs/resnet.arch:resnet50", num_classes=7)
    assert "archdsl" not in "\n".join(l for l in src.splitlines() if l.startswith(("import", "from")))
    path = tmp_path / "gen.py"
    path.write_text(src)
    ns: dict[str, object] = {}
    exec(compile(path.read_text(), str(path), "exec"), ns)
    model = ns["Resnet50"]()
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 7)


def test_duplicate_names_are_an_error() -> None:
    with pytest.raises(ArchError) as e:
        archdsl.graph("network n():\n    input [3, 8, 8]\n    a: conv2d(4, 1)\n    a: conv2d(4, 1)\n")
    assert "two layers would be named 'a'" in str(e.value)
    assert e.value.diagnostics[0].span.line == 4


def test_parse_cache_returns_fresh_equal_asts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from archdsl.lang import astcache, parser
    from archdsl.source import Source
    monkeypatch.setenv("ARCHDSL_CACHE_DIR", str(tmp_path / "cache"))
    astcache._MEMO.clear()
    src = Source("network n():\n    input [3, 8, 8]\n    c: conv2d(4, 3)\n", "cached.arch")
    first = parser.parse(src)
    entries = [p for p in (tmp_path / "cache" / "ast").rglob("*") if p.is_file() and p.name != ".secret"]
    assert len(entries) == 1, "nothing was written to the disk cache"
    assert json.loads(entries[0].read_bytes().split(b"\n", 1)[1])["n"] == "SpecFile"      # JSON, not a pickle
    assert (tmp_path / "cache" / "ast").stat().st_mode & 0o777 == 0o700
    astcache._MEMO.clear()                    # the next parse comes from disk
    second = parser.parse(src)
    assert second is not first and second == first and second.networks["n"].body[1].span.line == 3
    assert second.networks["n"].body[1].span.source is src
    changed = parser.parse(Source(src.text.replace("conv2d(4", "conv2d(5"), "cached.arch"))
    assert changed.networks["n"].body[1].value.items[0].expr.args[0].value == 5
    monkeypatch.setenv("ARCHDSL_NO_CACHE", "1")
    astcache._MEMO.clear()
    before = sorted((tmp_path / "cache" / "ast").rglob("*"))
    assert parser.parse(Source(src.text + "\n", "other.arch")).networks["n"].name == "n"
    assert sorted((tmp_path / "cache" / "ast").rglob("*")) == before, "ARCHDSL_NO_CACHE still wrote a file"


def test_ast_cache_round_trips_every_spec_exactly() -> None:
    """encode/decode is lossless on the whole library (every node class and field type occurs there)."""
    from archdsl.lang import astcache, parser
    from archdsl.lang.loader import find_specs
    from archdsl.source import Source
    seen: set[str] = set()
    for f in find_specs("specs") + find_specs("examples"):
        src = Source.from_file(f)
        spec = parser._parse_uncached(src)
        back = astcache.decode(astcache.encode(spec), src)
        assert back == spec, f
        seen |= {type(n).__name__ for n, _ in A.walk(spec)}
    assert {"BinOp", "ListComp", "IfStmt", "CombinatorStmt", "Kwarg", "Ternary", "NetworkDef"} <= seen


def test_ast_cache_decoder_refuses_anything_but_ast_nodes() -> None:
    from archdsl.lang import astcache, parser
    from archdsl.source import Source
    src = Source("network n():\n    input [3, 8, 8]\n    conv2d(4, 3)\n", "x.arch")
    good = json.loads(astcache.encode(parser._parse_uncached(src)))
    bad_entries = [
        {"n": "SpecFile", "f": ["x.arch", [], [], [{"n": "Popen", "f": []}]]},           # not an AST class
        {"n": "SpecFile", "f": ["x.arch", [], [], [{"n": "Num", "f": [{"s": [1, 1, None, None]}, 3]}]]},  # wrong place
        {"n": "SpecFile", "f": ["x.arch", [{"n": "Import", "f": [{"s": [1, 1, None, None]}, 7, None]}], [], []]},
        {"n": "SpecFile", "f": good["f"][:3]},                                              # a field missing
        {"n": "SpecFile", "f": good["f"], "extra": 1},                                      # an unknown key
        [1, 2, 3], "text", None,
    ]
    for entry in bad_entries:
        with pytest.raises(ValueError, match="not a valid AST cache entry"):
            astcache.decode(json.dumps(entry), src)
    with pytest.raises(ValueError):
        astcache.decode("[" * 100_000 + "]" * 100_000, src)                                # deep JSON: a miss
    with pytest.raises(ValueError):
        astcache.decode("\x80garbage", src)


def test_keywords_come_from_the_grammar() -> None:
    import re

    from lark.lexer import PatternRE, PatternStr

    from archdsl.lang.parser import KEYWORDS, _parser
    assert KEYWORDS == {"block", "network", "scales", "import", "from", "reference", "input", "output", "seq",
                        "reparam",
                        "add", "concat", "mul", "stack", "if", "elif", "else", "for", "in", "and", "or", "not"}
    # the same words as the built parser's terminals: identifier literals and `(a|b)(?![A-Za-z0-9_])` regexes
    from_lark: set[str] = set()
    for term in _parser().terminals:
        pat = term.pattern
        if isinstance(pat, PatternStr) and pat.value.isidentifier():
            from_lark.add(pat.value)
        elif isinstance(pat, PatternRE):
            m = re.fullmatch(r"\(?([a-z|]+)\)?\(\?!\[A-Za-z0-9_\]\)", pat.value)
            if m:
                from_lark.update(m.group(1).split("|"))
    assert KEYWORDS == from_lark


def test_ast_children_and_walk() -> None:
    from archdsl.lang import parser
    from archdsl.source import Source
    spec = parser.parse(Source("network n(k=3):\n    input [3, 8, 8]\n    if k > 1:\n        conv2d(4, k)\n", "w.arch"))
    net = spec.networks["n"]
    assert [type(c).__name__ for c in net.children()] == ["Param", "InputStmt", "IfStmt"]
    kinds = [(type(n).__name__, d) for n, d in A.walk(spec)]
    assert kinds[:3] == [("NetworkDef", 1), ("Param", 2), ("Num", 3)]
    assert ("Compare", 3) in kinds and max(d for _, d in kinds) == max(d for n, d in A.walk(net)) + 1


def test_parameterless_blocks_and_networks_need_no_parentheses() -> None:
    src = ("block Stem:\n    conv2d(8, 3, padding=1)\n    relu\n"
           "network tiny:\n    input [3, 8, 8]\n    stem: Stem\n    head: Stem()\n")
    with_parens = src.replace("block Stem:", "block Stem():").replace("network tiny:", "network tiny():")
    assert keys(build_src(src)) == keys(build_src(with_parens)) == [
        "stem.0.weight", "stem.0.bias", "head.0.weight", "head.0.bias"]
    # a parameter list still needs its parentheses
    with pytest.raises(ArchError, match="unexpected"):
        build_src("network tiny c=3:\n    input [3, 8, 8]\n    conv2d(c, 3)\n")
