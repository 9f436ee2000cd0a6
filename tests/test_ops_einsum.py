"""einsum (archdsl/ops/einsum.py): a per-sample equation, a batch letter added by codegen.

Values against torch.einsum on the batched equation, shapes from the equation, MACs equal to fvcore's count of
the built model (the replicated numpy path search included: chains of 3 and 4 operands, a rounded count), the
errors located with hints, and the torch_form turning a traced batched call into the per-sample equation.
"""
from __future__ import annotations

import math

import pytest
import torch
from helpers import error_of, fvcore_macs
from hypothesis import given, settings
from hypothesis import strategies as st
from op_forms import call, form

import archdsl
from archdsl.ops import ShapeError
from archdsl.ops.core import TensorArg
from archdsl.ops.einsum import fvcore_einsum_macs

GRID = settings(max_examples=12, deadline=None)


def _spec(eq: str, shapes: list[list[int]]) -> str:
    """A network taking one flat input, cut into one operand per shape, returning their einsum."""
    flat = sum(math.prod(s) for s in shapes)
    body, off = "", 0
    for k, s in enumerate(shapes):
        body += f"    t{k} = x -> slice(1, {off}, {off + math.prod(s)}) -> reshape({s})\n"
        off += math.prod(s)
    names = ", ".join(f"t{k}" for k in range(len(shapes)))
    return f"network n():\n    input [{flat}]\n{body}    einsum({names}, equation=\"{eq}\")\n"


def _operands(x: torch.Tensor, shapes: list[list[int]]) -> list[torch.Tensor]:
    out, off = [], 0
    for s in shapes:
        out.append(x[:, off:off + math.prod(s)].reshape(x.shape[0], *s))
        off += math.prod(s)
    return out


CASES = [
    ("nc,mc->nm", [[5, 8], [7, 8]], "bnc,bmc->bnm"),              # token similarity
    ("chw,dc->dhw", [[4, 3, 5], [6, 4]], "bchw,bdc->bdhw"),       # a 1x1 conv written as einsum
    ("hnd,hmd->hnm", [[2, 5, 3], [2, 6, 3]], "bhnd,bhmd->bhnm"),  # attention scores per head
    ("ij,jk,kl->il", [[3, 4], [4, 5], [5, 2]], "bij,bjk,bkl->bil"),
    ("ij,jk,kl,lm->im", [[30, 4], [4, 50], [50, 2], [2, 70]], "bij,bjk,bkl,blm->bim"),   # a rounded count
    ("ii->i", [[4, 4]], "bii->bi"),                                 # a diagonal
    ("nc->cn", [[3, 5]], "bnc->bcn"),                               # a transpose (fvcore counts it)
    ("ij,ij->j", [[3, 123], [3, 123]], "bij,bij->bj"),
    ("bij,jk->bik", [[3, 4, 7], [7, 5]], "abij,ajk->abik"),       # "b" taken: the batch is "a"
    ("ij,jk", [[3, 4], [4, 5]], "bij,bjk->bik"),                    # implicit output: the letters seen once
    ("ba,ca", [[3, 4], [5, 4]], "dba,dca->dbc"),
]


@pytest.mark.parametrize("eq, shapes, batched", CASES)
def test_einsum_equals_torch_and_counts_like_fvcore(eq: str, shapes: list[list[int]], batched: str) -> None:
    spec = _spec(eq, shapes)
    g = archdsl.graph(spec)
    model = archdsl.build(spec).eval()
    assert f"torch.einsum({batched!r}" in archdsl.source(spec)
    x = torch.randn(2, sum(math.prod(s) for s in shapes))
    with torch.no_grad():
        y = model(x)
    # the spec's equation is per sample: torch.einsum on each sample's operands (implicit outputs included)
    want = torch.stack([torch.einsum(eq, *[o[0] for o in _operands(x[i:i + 1], shapes)]) for i in range(2)])
    torch.testing.assert_close(y, want)
    assert g.output_shapes["out"] == tuple(want.shape[1:])
    assert g.total_macs == fvcore_macs(model, x[:1])


def test_einsum_of_one_named_tensor() -> None:
    spec = "network n():\n    input [3, 4, 5]\n    einsum(x, equation=\"chw->hwc\")\n"
    g = archdsl.graph(spec)
    x = torch.randn(2, 3, 4, 5)
    with torch.no_grad():
        torch.testing.assert_close(archdsl.build(spec).eval()(x), x.permute(0, 2, 3, 1))
    assert g.output_shapes["out"] == (4, 5, 3)


@GRID
@given(n=st.integers(1, 6), k=st.integers(1, 6), m=st.integers(1, 6), h=st.integers(1, 3), p=st.integers(1, 40))
def test_fvcore_count_replica_equals_fvcore(n: int, k: int, m: int, h: int, p: int) -> None:
    # the count itself, equation by equation, against fvcore on the torch call (batch 1 and 2)
    for eq, shapes in (("bhnk,bhkm->bhnm", [[h, n, k], [h, k, m]]), ("bnk,bkm,bmp->bnp", [[n, k], [k, m], [m, p]]),
                       ("bnk,bnk->bn", [[n, k], [n, k]]), ("bnk,bkm->bmn", [[n, k], [k, m]])):
        for batch in (1, 2):
            full = [(batch, *s) for s in shapes]

            class M(torch.nn.Module):
                def forward(self, *ts: torch.Tensor) -> torch.Tensor:
                    return torch.einsum(eq, *ts)   # noqa: B023
            want = fvcore_macs(M(), tuple(torch.zeros(s) for s in full))
            assert fvcore_einsum_macs(eq, full) == want, (eq, full)


@pytest.mark.parametrize("eq, shapes, message, hint", [
    ("...c,dc->...d", [[4, 3], [5, 3]], "an ellipsis (...) is not supported", "name every per-sample dim"),
    ("nc,mc->nm", [[4, 3], [5, 2]], "einsum letter 'c' of \"nc,mc->nm\" is 3 in one operand and 2", ""),
    ("nc->cn", [[4, 3], [5, 3]], "names 1 operand(s) but 2 tensor(s) are given", "one comma-separated term"),
    ("nc,mc->nk", [[4, 3], [5, 3]], "einsum output letter 'k' does not occur", ""),
    ("nc,mc->nn", [[4, 3], [5, 3]], "einsum output letter 'n' occurs twice", ""),
    ("ncd,mc->nm", [[4, 3], [5, 3]], "einsum term 'ncd' has 3 letter(s) for operand 0 of shape [4, 3]",
     "leave the batch out"),
    ("nc,nc->", [[4, 3], [4, 3]], "sums every per-sample dim away", "keep a dim"),
    ("n1,m1->nm", [[4, 3], [5, 3]], "has characters other than letters", ""),
])
def test_einsum_errors_are_located_with_hints(eq: str, shapes: list[list[int]], message: str, hint: str) -> None:
    err = error_of(_spec(eq, shapes))
    line = 3 + len(shapes)
    assert message in err and f"<spec>:{line}:" in err and hint in err, err


def test_einsum_torch_form_gives_the_per_sample_equation() -> None:
    f = form("einsum", "function", "torch.einsum")
    a, b = TensorArg(0), TensorArg(1)
    # batch first everywhere: the batch letter drops out
    assert f.args(call([(5, 8), (7, 8)], args=("bnc,bmc->bnm", a, b))) == {"equation": "nc,mc->nm"}
    # operands as one list, the batch on another axis of the second operand (after a batch-moving permute)
    got = f.args(call([(5, 8), (8, 7)], args=("znc, mzc -> znm", [a, b]), batch_axes=[0, 1]))
    assert got == {"equation": "nc,mc->nm"}
    # the built op computes what the traced call did
    spec = _spec(got["equation"], [[5, 8], [7, 8]])
    x = torch.randn(2, 5 * 8 + 7 * 8)
    p, q = _operands(x, [[5, 8], [7, 8]])
    with torch.no_grad():
        torch.testing.assert_close(archdsl.build(spec).eval()(x), torch.einsum("znc,mzc->znm", p, q.transpose(0, 1)))
    for bad in ("bnc,bmc->nm", "bnc,bmc->nbm", "bnc,cmb->bnm"):   # the batch summed, moved, or not one letter
        with pytest.raises(ShapeError):
            f.args(call([(5, 8), (7, 8)], args=(bad, a, b)))
