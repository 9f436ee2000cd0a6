"""archdsl.hub: state-dict loading with one clear error, pretrained weights (offline: a fast, clean error;
cached: loaded without network), pretrained_cfg from the reference, and timm.create_model entries."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import torch

import archdsl
from archdsl import hub
from archdsl.errors import ArchError

LENET = "specs/lenet.arch:lenet"


@pytest.fixture(scope="module")
def lenet_sd() -> dict[str, Any]:
    torch.manual_seed(0)
    return archdsl.build(LENET).state_dict()


def _same(model: Any, sd: dict[str, Any]) -> bool:
    return all(torch.equal(v, sd[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("wrap", ["raw", "state_dict", "model", "module_prefix"])
def test_load_weights_reads_raw_and_wrapped_files(tmp_path: Path, lenet_sd: dict[str, Any], wrap: str) -> None:
    obj: Any = {"raw": lenet_sd, "state_dict": {"state_dict": lenet_sd, "epoch": 3},
                "model": {"model": lenet_sd, "optimizer": {}},
                "module_prefix": {f"module.{k}": v for k, v in lenet_sd.items()}}[wrap]
    torch.save(obj, tmp_path / "w.pt")
    model = hub.load_weights(archdsl.build(LENET), tmp_path / "w.pt")
    assert _same(model, lenet_sd)


def test_mismatches_are_one_error_listing_the_keys(tmp_path: Path, lenet_sd: dict[str, Any]) -> None:
    sd = dict(lenet_sd)
    dropped = next(iter(sd))
    del sd[dropped]
    sd["extra.weight"] = torch.zeros(3)
    key, val = next((k, v) for k, v in sd.items() if v.dim() == 2)
    sd[key] = torch.zeros(val.shape[0] + 1, val.shape[1])
    with pytest.raises(ArchError) as e:
        hub.load_weights(archdsl.build(LENET), sd)
    text = e.value.format()
    assert len(e.value.diagnostics) == 1
    assert f"1 missing keys (in the model, not in the file):\n      {dropped}" in text
    assert "1 unexpected keys (in the file, not in the model):\n      extra.weight" in text
    assert f"1 mis-shaped keys:\n      {key}: [{val.shape[0] + 1}, {val.shape[1]}] in the file" in text
    # strict=False forgives missing/unexpected keys but never a wrong shape
    with pytest.raises(ArchError, match="mis-shaped"):
        hub.load_weights(archdsl.build(LENET), sd, strict=False)
    sd[key] = val
    model = hub.load_weights(archdsl.build(LENET), sd, strict=False)
    assert torch.equal(model.state_dict()[key], val)


def test_long_key_lists_are_capped(lenet_sd: dict[str, Any]) -> None:
    rn = archdsl.build("specs/resnet.arch:resnet18")
    with pytest.raises(ArchError) as e:
        hub.load_weights(rn, lenet_sd)
    text = e.value.format()
    n = len(rn.state_dict())
    assert f"{n} missing keys" in text and f"... and {n - hub.SHOW} more" in text
    assert text.count("\n") < 40


@pytest.mark.parametrize("content", ["garbage", "list", "missing", "directory"])
def test_unreadable_files_are_clean_errors(tmp_path: Path, content: str) -> None:
    p = tmp_path / "w.pt"
    if content == "garbage":
        p.write_bytes(b"not a checkpoint")
    elif content == "list":
        torch.save([torch.zeros(1)], p)
    elif content == "directory":
        p.mkdir()
    with pytest.raises(ArchError) as e:
        hub.load_weights(archdsl.build(LENET), p)
    msg = e.value.format()
    assert {"garbage": "cannot read weights from", "list": "holds a list, not a state_dict",
            "missing": "no such weights file", "directory": "is a directory"}[content] in msg
    assert "Traceback" not in msg and msg.count("\n") < 4


def test_pretrained_cfg_comes_from_the_reference() -> None:
    tv = hub.pretrained_cfg(archdsl.graph("specs/inception.arch:inception_v3"))
    assert tv["source"] == "torchvision" and tv["input_size"] == (3, 299, 299)
    assert tv["mean"] == hub.IMAGENET_MEAN and tv["crop_pct"] == round(299 / 342, 4)
    assert tv["url"].endswith(".pth") and tv["num_classes"] == 1000
    tm = hub.pretrained_cfg(archdsl.graph("specs/xception.arch:legacy_xception"))
    assert tm["source"] == "timm" and tm["mean"] == (0.5, 0.5, 0.5) and tm["interpolation"] == "bicubic"
    plain = hub.pretrained_cfg(archdsl.build(LENET))
    assert plain["source"] == "default" and plain["input_size"] == (1, 32, 32) and plain["mean"] == (0.5,)


@pytest.mark.parametrize("spec", ["specs/resnet.arch:resnet18", "specs/repvgg.arch:repvgg_a0"])
def test_pretrained_offline_is_a_fast_clean_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  spec: str) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = archdsl.build(spec)
    t = time.perf_counter()
    with pytest.raises(ArchError) as e:
        hub.load_pretrained(model)
    assert time.perf_counter() - t < 5
    msg = e.value.format()
    assert "could not download the pretrained weights of" in msg and "weights=PATH" in msg
    assert str(tmp_path / "torch") in msg or "huggingface-cli download timm/repvgg_a0" in msg


def test_pretrained_weights_in_the_cache_load_without_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    """A file at TORCH_HOME's checkpoint path is used as is; a 10-class head keeps its own weights."""
    import torchvision
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("ARCHDSL_OFFLINE", "1")
    url = hub.pretrained_cfg(archdsl.graph("specs/resnet.arch:resnet18"))["url"]
    ref = torchvision.models.resnet18(weights=None).state_dict()
    ckpt = tmp_path / "torch" / "hub" / "checkpoints" / url.rsplit("/", 1)[-1]
    ckpt.parent.mkdir(parents=True)
    torch.save(ref, ckpt)
    model = hub.load_pretrained(archdsl.build("specs/resnet.arch:resnet18"))
    assert _same(model, ref)
    small = archdsl.build("specs/resnet.arch:resnet18", num_classes=10)
    fc = small.state_dict()["fc.weight"].clone()
    hub.load_pretrained(small)
    assert torch.equal(small.state_dict()["fc.weight"], fc)
    assert torch.equal(small.state_dict()["layer4.1.conv2.weight"], ref["layer4.1.conv2.weight"])


def test_build_model_features_only() -> None:
    model = hub.build_model("specs/resnet.arch:resnet18", {"num_classes": 10}, features_only=True, out_indices=[-1])
    assert model.feature_info == [{"num_chs": 512, "reduction": 32, "module": "layer4"}]
    with pytest.raises(ArchError, match="pass features_only=True too"):
        hub.build_model("specs/resnet.arch:resnet18", out_indices=[1])


def test_no_reference_no_pretrained() -> None:
    with pytest.raises(ArchError, match="no reference with published weights"):
        hub.load_pretrained(archdsl.build(LENET))


@pytest.fixture(scope="module")
def timm_names() -> list[str]:
    return hub.register_timm()


def test_timm_create_model(timm_names: list[str]) -> None:
    import timm
    assert "archdsl_resnet18" in timm_names and len(timm_names) >= 60
    assert "archdsl_resnet18" in timm.list_models("archdsl_*")
    model = timm.create_model("archdsl_resnet18", num_classes=10, drop_rate=0.0).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 96, 96)).shape == (2, 10)
    cfg = model.pretrained_cfg
    assert cfg["mean"] == hub.IMAGENET_MEAN and cfg["std"] == hub.IMAGENET_STD
    assert cfg["architecture"] == "archdsl_resnet18" and cfg["input_size"] == (3, 224, 224)
    assert timm.models.get_pretrained_cfg("archdsl_resnet18").mean == hub.IMAGENET_MEAN
    gray = timm.create_model("archdsl_resnet18", in_chans=1)
    assert gray.state_dict()["conv1.weight"].shape[1] == 1


def test_timm_features_only(timm_names: list[str]) -> None:
    import timm
    model = timm.create_model("archdsl_resnet50", features_only=True, out_indices=(1, 2, 3, 4)).eval()
    assert [i["module"] for i in model.feature_info] == ["layer1", "layer2", "layer3", "layer4"]
    with torch.no_grad():
        out = model(torch.randn(1, 3, 128, 128))   # a list, as timm's features_only gives
    assert [tuple(v.shape) for v in out] == [(1, c, 128 // r, 128 // r) for c, r in
                                             zip(model.feature_info.channels(), model.feature_info.reduction())]
    assert not any(k.startswith("fc.") for k in model.state_dict())
    by_name = timm.create_model("archdsl_resnet50", features_only=True, out_indices=(-2, -1), feature_cls="dict")
    with torch.no_grad():
        assert list(by_name(torch.randn(1, 3, 64, 64))) == ["layer3", "layer4"]


def test_timm_rejects_what_the_spec_cannot_take(timm_names: list[str], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import timm
    with pytest.raises(ArchError) as e:
        timm.create_model("archdsl_resnet18", global_pool="max", drop_path_rate=0.1, widht=2)
    msg = e.value.format()
    assert "global_pool='max'" in msg and "drop_path_rate=0.1" in msg and "widht=2" in msg
    assert "its parameters: num_classes" in msg
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("ARCHDSL_OFFLINE", "1")
    with pytest.raises(ArchError, match="could not download the pretrained weights of torchvision.resnet18"):
        timm.create_model("archdsl_resnet18", pretrained=True)
