"""Hostile inputs to deploy (issue 11): exactness, checkpoints, output paths.

Every case runs the real command line in-process (``archdsl.cli.app`` through typer's CliRunner) and
asserts the exact outcome: the exit status, the one-line message, and that nothing was written.
"""
from __future__ import annotations

import hashlib
import io
import os
import time
import warnings
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

import archdsl
from archdsl.cli import app
from helpers import ROOT, randomize_bn

TINY = "examples/tiny_repvgg.arch"


def archc(*args: str) -> Any:
    """Run ``archc args`` in-process; ``.exit_code``, ``.stdout``, ``.stderr``."""
    return CliRunner().invoke(app, list(args))


def _files(d: Path) -> set[str]:
    return {p.name for p in d.iterdir()}


def _clean(res: Any) -> None:
    """The failure contract: exit 1, no traceback, no 'internal error', never torch's unpickling advice."""
    text = res.stdout + res.stderr
    assert res.exit_code == 1, text
    assert "Traceback" not in text and "internal error" not in text
    assert "weights_only=False" not in text and "weights_only" not in text


@pytest.fixture(scope="module")
def tiny_sd() -> dict[str, torch.Tensor]:
    model = archdsl.build(TINY)
    randomize_bn(model, seed=4)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _save(tmp: Path, name: str, obj: Any) -> Path:
    p = tmp / name
    torch.save(obj, p)
    return p


def _eval_deployed(tmp: Path, spec: str, weights: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Deploy through the CLI (weights + source), load both, and return (train output, deploy output)."""
    res = archc("deploy", spec, "-w", str(weights), "-o", str(tmp / "d.pt"), "--source", str(tmp / "d.py"))
    assert res.exit_code == 0, res.stdout + res.stderr
    ns: dict[str, Any] = {}
    exec(compile((tmp / "d.py").read_text(), "d.py", "exec"), ns)
    cls = next(v for k, v in ns.items() if isinstance(v, type) and issubclass(v, torch.nn.Module)
               and v is not torch.nn.Module and k.endswith("Deploy"))
    dep = cls()
    dep.load_state_dict(torch.load(tmp / "d.pt", weights_only=True))
    train = archdsl.build(spec)
    train.load_state_dict(torch.load(weights, weights_only=True))
    x = torch.randn(2, *train.arch_graph.input_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return train.eval()(x), dep.eval()(x)


# ------------------------------------------------------------------------------------------ exactness
class TestDeployExactness:
    """BatchNorm is folded only across layers acting on its channel axis; oversized deploy forms are refused."""

    @pytest.mark.parametrize("body", [
        "    conv2d(4, 3, padding=1)\n    relu\n    batchnorm\n    linear(6)\n",      # BN -> linear on [C, H, W]
        "    conv2d(4, 3, padding=1)\n    linear(8)\n    batchnorm\n    relu\n",      # linear on [C, H, W] -> BN
    ])
    def test_batchnorm_beside_linear_on_a_feature_map_stays_exact(self, tmp_path: Path, body: str) -> None:
        spec = tmp_path / "lin.arch"
        spec.write_text(f"network lin():\n    input [4, 8, 8]\n{body}")
        model = archdsl.build(str(spec))
        randomize_bn(model, seed=7)
        w = _save(tmp_path, "w.pt", model.state_dict())
        res = archc("deploy", str(spec), "-w", str(w), "-o", str(tmp_path / "d.pt"))
        assert res.exit_code == 0, res.stderr
        assert "note: batchnorm" in res.stderr and "acts on the last dimension" in res.stderr
        a, b = _eval_deployed(tmp_path, str(spec), w)
        assert (a - b).abs().max().item() <= 1e-5 * max(1.0, a.abs().max().item())
        dep = archdsl.deploy(model.eval(), memory_format="contiguous")
        assert dep.deploy_info["notes"] and dep.deploy_info["bn_as_conv"] == 1

    def test_1d_batchnorm_before_a_linear_on_a_vector_still_folds(self) -> None:
        text = "network v():\n    input [4, 4, 4]\n    flatten\n    batchnorm\n    linear(3)\n"
        model = archdsl.build(text)
        randomize_bn(model)
        dep = archdsl.deploy(model.eval(), memory_format="contiguous")
        assert dep.deploy_info["folded_bn"] == 1 and not dep.deploy_info["notes"]

    GROWTH = ("network grow():\n    input [64, 32, 32]\n    g: reparam add:\n"
              "        conv2d(64, 31, padding=15, groups=64)\n        conv2d(64, 1)\n    relu\n")

    def test_exploding_group_is_refused_at_its_line_by_compile(self, tmp_path: Path) -> None:
        spec = tmp_path / "grow.arch"
        spec.write_text(self.GROWTH)
        assert archdsl.graph(str(spec)).total_params < 70_000      # the train form is small and valid
        res = archc("compile", "--deploy", str(spec), "-o", str(tmp_path / "d.py"))
        _clean(res)
        assert f"{spec}:3:5: error: the deploy form of reparam group 'g' would be a 31x31 conv with groups=1 " \
               "and 3,936,320 parameters" in res.stderr
        assert "same groups" in res.stderr
        assert _files(tmp_path) == {"grow.arch"}

    def test_exploding_group_is_refused_by_deploy_before_the_weights_are_read(self, tmp_path: Path) -> None:
        spec = tmp_path / "grow.arch"
        spec.write_text(self.GROWTH)
        res = archc("deploy", str(spec), "-w", str(tmp_path / "absent.pt"), "-o", str(tmp_path / "d.pt"))
        _clean(res)
        assert "would be a 31x31 conv" in res.stderr and "absent.pt" not in res.stderr
        assert _files(tmp_path) == {"grow.arch"}

    def test_overflowing_fold_is_never_written(self, tmp_path: Path, tiny_sd: dict[str, torch.Tensor]) -> None:
        sd = dict(tiny_sd)
        bn = next(k[: -len(".running_var")] for k in sd if k.endswith("running_var"))
        sd[bn + ".weight"] = torch.full_like(sd[bn + ".weight"], 3e38)
        sd[bn + ".running_var"] = torch.zeros_like(sd[bn + ".running_var"])   # scale 3e38 / sqrt(eps): inf
        w = _save(tmp_path, "w.pt", sd)
        res = archc("deploy", TINY, "-w", str(w), "-o", str(tmp_path / "d.pt"))
        _clean(res)
        assert "error: the deploy weights hold NaN or infinite values" in res.stderr
        assert _files(tmp_path) == {"w.pt"}


# ------------------------------------------------------------------------------------------ checkpoints
class TestCheckpoints:
    """``archc deploy --weights``: everything is checked before a model is built; clean one-line errors."""

    def _deploy(self, tmp: Path, weights: Path, *extra: str) -> Any:
        res = archc("deploy", TINY, "-w", str(weights), "-o", str(tmp / "out.pt"), *extra)
        _clean(res)
        assert not (tmp / "out.pt").exists()
        return res

    def test_non_tensor_value(self, tmp_path: Path, tiny_sd: dict[str, torch.Tensor]) -> None:
        key = next(iter(tiny_sd))
        res = self._deploy(tmp_path, _save(tmp_path, "w.pt", {**tiny_sd, key: 3}))
        assert f"'{key}' holds a value of type int, not a tensor" in res.stderr

    def test_meta_tensor(self, tmp_path: Path, tiny_sd: dict[str, torch.Tensor]) -> None:
        key = next(iter(tiny_sd))
        res = self._deploy(tmp_path, _save(tmp_path, "w.pt", {**tiny_sd, key: tiny_sd[key].to("meta")}))
        assert f"'{key}' is a meta tensor (it has no data)" in res.stderr

    def test_sparse_tensor(self, tmp_path: Path, tiny_sd: dict[str, torch.Tensor]) -> None:
        key = next(k for k, v in tiny_sd.items() if v.dim() == 4)
        res = self._deploy(tmp_path, _save(tmp_path, "w.pt", {**tiny_sd, key: tiny_sd[key].to_sparse()}))
        assert f"'{key}' is a sparse tensor" in res.stderr

    def test_quantized_tensor(self, tmp_path: Path, tiny_sd: dict[str, torch.Tensor]) -> None:
        key = next(k for k, v in tiny_sd.items() if v.dim() == 4)
        with warnings.catch_warnings():   # quantized tensors are deprecated in torch, not yet gone from files
            warnings.simplefilter("ignore")
            q = torch.quantize_per_tensor(tiny_sd[key], 0.1, 0, torch.qint8)
        res = self._deploy(tmp_path, _save(tmp_path, "w.pt", {**tiny_sd, key: q}))
        assert f"'{key}' is a quantized tensor; archdsl loads float weights" in res.stderr

    def test_nan_values(self, tmp_path: Path, tiny_sd: dict[str, torch.Tensor]) -> None:
        key = next(k for k, v in tiny_sd.items() if v.dim() == 4)
        bad = tiny_sd[key].clone()
        bad.view(-1)[0] = float("nan")
        res = self._deploy(tmp_path, _save(tmp_path, "w.pt", {**tiny_sd, key: bad}))
        assert f"holds NaN or infinite values in {key}" in res.stderr

    def test_negative_running_variance(self, tmp_path: Path, tiny_sd: dict[str, torch.Tensor]) -> None:
        key = next(k for k in tiny_sd if k.endswith("running_var"))
        res = self._deploy(tmp_path, _save(tmp_path, "w.pt", {**tiny_sd, key: -tiny_sd[key]}))
        assert f"BatchNorm running variance is negative in {key}" in res.stderr

    def test_integer_weights(self, tmp_path: Path, tiny_sd: dict[str, torch.Tensor]) -> None:
        key = next(k for k, v in tiny_sd.items() if v.dim() == 4)
        res = self._deploy(tmp_path, _save(tmp_path, "w.pt", {**tiny_sd, key: tiny_sd[key].long()}))
        assert f"'{key}' has dtype torch.int64; weights must be floating point" in res.stderr

    def test_missing_and_unexpected_keys_are_listed_and_capped(self, tmp_path: Path,
                                                                tiny_sd: dict[str, torch.Tensor]) -> None:
        keys = list(tiny_sd)
        sd = {k: v for k, v in tiny_sd.items() if k not in keys[:7]}
        sd["extra.weight"] = torch.zeros(1)
        res = self._deploy(tmp_path, _save(tmp_path, "w.pt", sd))
        assert "7 missing keys: " + ", ".join(keys[:5]) + " (and 2 more)" in res.stderr
        assert "1 unexpected keys: extra.weight" in res.stderr

    def test_shapes_from_other_parameters(self, tmp_path: Path, tiny_sd: dict[str, torch.Tensor]) -> None:
        res = self._deploy(tmp_path, _save(tmp_path, "w.pt", tiny_sd), "--set", "num_classes=7")
        assert "1 shapes differ" in res.stderr or "shapes differ" in res.stderr
        assert "(expected [7, " in res.stderr

    def test_empty_file(self, tmp_path: Path) -> None:
        (tmp_path / "w.pt").write_bytes(b"")
        res = self._deploy(tmp_path, tmp_path / "w.pt")
        assert f"weights file '{tmp_path / 'w.pt'}' is empty" in res.stderr

    def test_truncated_file(self, tmp_path: Path, tiny_sd: dict[str, torch.Tensor]) -> None:
        data = _save(tmp_path, "full.pt", tiny_sd).read_bytes()
        (tmp_path / "w.pt").write_bytes(data[: len(data) // 2])
        res = self._deploy(tmp_path, tmp_path / "w.pt")
        assert "the file is truncated or not a torch checkpoint" in res.stderr

    def test_truncated_legacy_file(self, tmp_path: Path, tiny_sd: dict[str, torch.Tensor]) -> None:
        buf = io.BytesIO()
        torch.save(tiny_sd, buf, _use_new_zipfile_serialization=False)
        (tmp_path / "w.pt").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
        res = self._deploy(tmp_path, tmp_path / "w.pt")
        assert f"cannot read weights from '{tmp_path / 'w.pt'}': the file is truncated" in res.stderr

    def test_text_file(self, tmp_path: Path) -> None:
        (tmp_path / "w.pt").write_text("hello, not a checkpoint")
        res = self._deploy(tmp_path, tmp_path / "w.pt")
        assert "not a torch checkpoint (torch.save format)" in res.stderr

    def test_pickled_code_is_never_run_and_torch_advice_never_shown(self, tmp_path: Path,
                                                                    tiny_sd: dict[str, torch.Tensor]) -> None:
        marker = tmp_path / "pwned"

        class Evil:
            def __reduce__(self) -> Any:
                return (os.system, (f"touch {marker}",))
        w = _save(tmp_path, "w.pt", {**tiny_sd, "x": Evil()})
        res = self._deploy(tmp_path, w)
        assert "cannot read weights from" in res.stderr and "GLOBAL posix.system" in res.stderr
        assert not marker.exists()

    def test_compressed_bomb_is_refused_before_inflating(self, tmp_path: Path,
                                                         tiny_sd: dict[str, torch.Tensor]) -> None:
        """A torch-like zip whose deflated entry inflates to 256 MB: refused from the directory alone."""
        good = _save(tmp_path, "good.pt", tiny_sd)
        bomb = tmp_path / "w.pt"
        with zipfile.ZipFile(good) as src, zipfile.ZipFile(bomb, "w") as dst:
            for info in src.infolist():
                dst.writestr(info, src.read(info))
            with dst.open(zipfile.ZipInfo("good/data/99"), "w", force_zip64=True) as fh:
                pass
            zi = zipfile.ZipInfo("good/data/100")
            zi.compress_type = zipfile.ZIP_DEFLATED
            with dst.open(zi, "w", force_zip64=True) as fh:
                chunk = bytes(1 << 24)
                for _ in range(16):
                    fh.write(chunk)
        assert bomb.stat().st_size < 2_000_000
        t = time.perf_counter()
        res = self._deploy(tmp_path, bomb)
        assert time.perf_counter() - t < 10
        assert "holds compressed entries (good/data/100)" in res.stderr

    def test_oversized_file(self, tmp_path: Path) -> None:
        (tmp_path / "w.pt").write_bytes(os.urandom(3_000_000))
        res = self._deploy(tmp_path, tmp_path / "w.pt")
        assert "is 3,000,000 bytes; a state_dict of this network takes at most" in res.stderr

    def test_not_a_state_dict(self, tmp_path: Path) -> None:
        res = self._deploy(tmp_path, _save(tmp_path, "w.pt", [torch.zeros(2)]))
        assert "holds a list, not a state_dict" in res.stderr

    def test_wrapped_state_dict_is_accepted(self, tmp_path: Path, tiny_sd: dict[str, torch.Tensor]) -> None:
        w = _save(tmp_path, "w.pt", {"state_dict": tiny_sd, "epoch": 3})
        res = archc("deploy", TINY, "-w", str(w), "-o", str(tmp_path / "out.pt"))
        assert res.exit_code == 0, res.stderr
        assert (tmp_path / "out.pt").is_file()


# ------------------------------------------------------------------------------------------ paths
class TestPaths:
    """Output paths are checked before anything is computed or written."""

    def test_deploy_output_is_a_directory(self, tmp_path: Path, tiny_sd: dict[str, torch.Tensor]) -> None:
        w = _save(tmp_path, "w.pt", tiny_sd)
        (tmp_path / "out").mkdir()
        res = archc("deploy", TINY, "-w", str(w), "-o", str(tmp_path / "out"))
        _clean(res)
        assert f"error: output '{tmp_path / 'out'}' is a directory" in res.stderr
        assert not any((tmp_path / "out").iterdir())

    def test_deploy_source_directory_is_refused_before_output_is_written(self, tmp_path: Path,
                                                                         tiny_sd: dict[str, torch.Tensor]) -> None:
        w = _save(tmp_path, "w.pt", tiny_sd)
        (tmp_path / "src").mkdir()
        res = archc("deploy", TINY, "-w", str(w), "-o", str(tmp_path / "d.pt"), "--source", str(tmp_path / "src"))
        _clean(res)
        assert f"error: --source '{tmp_path / 'src'}' is a directory" in res.stderr
        assert _files(tmp_path) == {"w.pt", "src"} and not any((tmp_path / "src").iterdir())

    def test_deploy_output_onto_the_weights_is_refused(self, tmp_path: Path, tiny_sd: dict[str, torch.Tensor]) -> None:
        w = _save(tmp_path, "w.pt", tiny_sd)
        before = hashlib.sha256(w.read_bytes()).hexdigest()
        res = archc("deploy", TINY, "-w", str(w), "-o", str(w))
        _clean(res)
        assert f"is the input file '{w}'; refusing to overwrite it" in res.stderr
        assert hashlib.sha256(w.read_bytes()).hexdigest() == before

    def test_deploy_source_and_output_the_same_file(self, tmp_path: Path, tiny_sd: dict[str, torch.Tensor]) -> None:
        w = _save(tmp_path, "w.pt", tiny_sd)
        same = str(tmp_path / "d.pt")
        res = archc("deploy", TINY, "-w", str(w), "-o", same, "--source", same)
        _clean(res)
        assert "are the same file" in res.stderr and _files(tmp_path) == {"w.pt"}

    def test_compile_output_onto_the_spec_is_refused(self, tmp_path: Path) -> None:
        spec = tmp_path / "net.arch"
        text = (ROOT / TINY).read_text()
        spec.write_text(text)
        for args in ([], ["--deploy"]):
            res = archc("compile", *args, f"{spec}:tiny_repvgg", "-o", str(spec))
            _clean(res)
            assert f"error: output '{spec}' is the input file '{spec}'; refusing to overwrite it" in res.stderr
            assert spec.read_text() == text and _files(tmp_path) == {"net.arch"}

    def test_compile_output_is_a_directory(self, tmp_path: Path) -> None:
        res = archc("compile", TINY, "-o", str(tmp_path))
        _clean(res)
        assert "is a directory" in res.stderr and not any(tmp_path.iterdir())
