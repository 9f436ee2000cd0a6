"""Weights and model-zoo glue: state-dict files, the reference library's pretrained weights and
preprocessing metadata, and ``timm.create_model`` entries for every spec network.

    from archdsl import hub
    model = hub.load_weights(archdsl.build("specs/resnet.arch:resnet50"), "resnet50.pt")
    hub.pretrained_cfg(model)      # {'input_size': (3, 224, 224), 'mean': ..., 'crop_pct': ..., ...}
    hub.load_pretrained(model)     # the reference's published weights (torchvision / timm), or a clear error
    hub.register_timm()            # timm.create_model("archdsl_resnet50", num_classes=10) now works

Everything that goes wrong is one :class:`ArchError` (no traceback): a missing or foreign file, keys
that do not match (listed), weights that cannot be downloaded (where to put them instead).
"""
from __future__ import annotations

import os
import sys
import threading
import types
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence
from urllib.parse import urlparse

from .errors import ArchError, Diagnostic
from .ir import Graph
from .library import library_dir

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "TIMM_PREFIX", "read_state_dict", "load_weights", "pretrained_cfg",
           "load_pretrained", "build_model", "register_timm", "resample_pos_embed",
           "resample_pos_embed_to"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TIMM_PREFIX = "archdsl_"
SHOW = 8                      # keys listed per kind of mismatch; the rest are counted
_TIMM_MODULE = "archdsl_timm_models"   # the module timm's registry files our entries under


# ---- state-dict files ---------------------------------------------------------------------------------
def read_state_dict(path: str | os.PathLike[str], *, budget: int | None = None,
                    want: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Read a ``torch.save``'d (or ``.safetensors``) state_dict through archdsl's one checkpoint reader
    (:func:`archdsl.codegen.checkpoint.load_checkpoint`, the same checks as ``archc deploy --weights``):
    tensors only (``weights_only=True``, nothing in the file runs), no compressed entries, declared sizes
    within ``budget`` bytes (None: the file's size) before any data is read, handled dtypes only (``want``:
    the model's dtype per key), finite values.

    Accepts a raw state_dict, or a checkpoint dict wrapping one under ``state_dict`` / ``model`` / ...;
    a ``module.`` prefix on every key (DataParallel / DDP) is removed.
    """
    from .codegen.checkpoint import load_checkpoint
    return load_checkpoint(path, budget=budget, want=want)


def _unwrap(obj: Any, where: str) -> dict[str, Any]:
    """An in-memory state_dict (or a checkpoint dict wrapping one), unwrapped as the reader does for a file."""
    from .codegen.checkpoint import _unwrap as unwrap
    return unwrap(obj, where)


def _model_budget(model: Any, slack: int = 1) -> tuple[int, dict[str, Any]]:
    """The byte budget of a checkpoint for ``model`` and the model's dtype per state_dict key."""
    from .codegen.checkpoint import budget_for
    sd = model.state_dict()
    return budget_for({k: v.numel() for k, v in sd.items()}, slack=slack), {k: v.dtype for k, v in sd.items()}


def _listing(title: str, items: list[str]) -> str:
    shown = "\n".join(f"      {k}" for k in items[:SHOW])
    more = f"\n      ... and {len(items) - SHOW} more" if len(items) > SHOW else ""
    return f"{len(items)} {title}:\n{shown}{more}"


def load_weights(model: Any, weights: str | os.PathLike[str] | Mapping[str, Any], *, strict: bool = True,
                 resample_pos_embed: bool = False) -> Any:
    """Load ``weights`` (a file path or a state_dict) into ``model`` and return the model.

    With ``strict`` every key of the model must be present and no other key may be; shapes must match
    either way. All mismatches are reported together, as one :class:`ArchError` listing the missing,
    unexpected and mis-shaped keys (the first few of each, the rest counted) -- never a traceback.
    ``resample_pos_embed``: a ViT's ``pos_embed`` trained at another input size is first resampled to the
    model's patch grid (:func:`resample_pos_embed`; the grid is the model's input over the kernel of
    ``patch_embed.proj``, as timm derives it when loading a checkpoint).
    """
    from .codegen.checkpoint import check_bn_vars, check_finite_values, check_tensors
    where = str(weights) if not isinstance(weights, Mapping) else "the state_dict"
    # strict: the checkpoint of exactly this network; otherwise extra keys (a larger head) may come along
    budget, dtypes = _model_budget(model, 1 if strict else 4)
    sd = read_state_dict(weights, budget=budget, want=dtypes) if not isinstance(weights, Mapping) else \
        _unwrap(weights, where)
    check_tensors(sd, where, dtypes)            # the same dtype rule for a file and an in-memory state_dict
    check_finite_values(sd, where, dtypes)      # NaN refused; a float64 value overflowing float32 too
    check_bn_vars(sd, where, {k for k in dtypes if k.endswith("running_var")})
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if resample_pos_embed and "pos_embed" in sd and "pos_embed" in want and tuple(sd["pos_embed"].shape) != want[
            "pos_embed"]:
        sd = resample_pos_embed_to(model, sd)
    missing = [k for k in want if k not in sd]
    unexpected = [k for k in sd if k not in want]
    wrong = [f"{k}: {list(sd[k].shape)} in the file, {list(s)} in the model" for k, s in want.items()
             if k in sd and tuple(sd[k].shape) != s]
    problems = ([_listing("mis-shaped keys", wrong)] if wrong else []) + (
        ([_listing("missing keys (in the model, not in the file)", missing)] if missing else [])
        + ([_listing("unexpected keys (in the file, not in the model)", unexpected)] if unexpected else [])
        if strict else [])
    if problems:
        name = getattr(getattr(model, "arch_graph", None), "name", type(model).__name__)
        raise ArchError(Diagnostic(
            f"the weights in {where} do not fit {name}:\n  " + "\n  ".join(problems), None,
            hint="pass resample_pos_embed=True to resample a ViT position embedding trained at another input size"
            if any(w.startswith("pos_embed:") for w in wrong) else
            "build the model with the parameters the weights were trained with (e.g. num_classes), "
            "or pass strict=False to skip missing and unexpected keys"))
    model.load_state_dict({k: v for k, v in sd.items() if k in want}, strict=strict)
    return model


def resample_pos_embed(state_dict: Mapping[str, Any], grid: int | Sequence[int], *, old_grid: Sequence[int] | None = None,
                       num_prefix_tokens: int | None = None, key: str = "pos_embed", interpolation: str = "bicubic",
                       antialias: bool = True) -> dict[str, Any]:
    """A copy of a ViT ``state_dict`` whose absolute position embedding fits a patch grid of ``grid``.

    Does what timm does when it loads a checkpoint into a model of another ``img_size``
    (``timm.layers.resample_abs_pos_embed`` via the ViT checkpoint filter): the prefix rows (class token,
    DeiT's distillation token) are kept, the patch rows are viewed as an ``old_grid`` image (square when
    not given) and resized with ``F.interpolate(mode=interpolation, antialias=antialias)`` in float32.
    ``grid`` is ``(rows, cols)`` of patches (or one int for a square): 160 // 16 = 10 for a 160x160 input.
    ``num_prefix_tokens`` defaults to the number of ``cls_token`` / ``dist_token`` entries present.
    A state_dict already on that grid is returned unchanged (copied)::

        model = archdsl.build("specs/vit.arch:vit_tiny_patch16_224", input_shape=(3, 160, 160))
        hub.load_weights(model, hub.resample_pos_embed(timm_state_dict, 10))
    """
    import torch
    import torch.nn.functional as F
    out = dict(state_dict)
    pe = out.get(key)
    if not isinstance(pe, torch.Tensor) or pe.dim() != 3 or pe.shape[0] != 1:
        raise ArchError(f"the state_dict has no position embedding '{key}' of shape (1, tokens, dim)", None,
                        hint="pass key= the name of the position embedding (timm and specs/vit.arch: 'pos_embed')")
    new = (grid, grid) if isinstance(grid, int) else tuple(grid)
    if len(new) != 2 or not all(isinstance(v, int) and v > 0 for v in new):
        raise ArchError(f"grid must be a positive int or (rows, cols), got {grid!r}", None,
                        hint="the patch grid of the new input: (H // patch, W // patch)")
    prefix = num_prefix_tokens if num_prefix_tokens is not None else sum(
        k in out for k in ("cls_token", "dist_token"))
    n = pe.shape[1] - prefix
    old = tuple(old_grid) if old_grid is not None else (int(n ** 0.5), int(n ** 0.5))
    if len(old) != 2 or old[0] * old[1] != n:
        raise ArchError(f"'{key}' has {n} patch rows (after {prefix} prefix tokens), not a "
                        f"{old[0]}x{old[1]} grid", None, hint="pass old_grid=(rows, cols) for a non-square grid")
    if old == new:
        return out
    rows = pe[:, prefix:].float().reshape(1, old[0], old[1], -1).permute(0, 3, 1, 2)
    rows = F.interpolate(rows, size=new, mode=interpolation, antialias=antialias)
    rows = rows.permute(0, 2, 3, 1).reshape(1, new[0] * new[1], -1).to(pe.dtype)
    out[key] = torch.cat([pe[:, :prefix], rows], dim=1)
    return out


def resample_pos_embed_to(model: Any, state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`resample_pos_embed` to the patch grid of ``model`` (built by archdsl with timm's ViT keys)."""
    kernel = model.state_dict().get("patch_embed.proj.weight")
    shape = getattr(getattr(model, "arch_graph", None), "input_shape", None)
    if kernel is None or shape is None or len(shape) != 3:
        raise ArchError("cannot tell the patch grid of this model: it has no patch_embed.proj conv or no "
                        "[C, H, W] input", None, hint="call hub.resample_pos_embed(state_dict, (rows, cols)) yourself")
    grid = (shape[1] // kernel.shape[-2], shape[2] // kernel.shape[-1])
    return resample_pos_embed(state_dict, grid)


# ---- preprocessing metadata -----------------------------------------------------------------------------
def _graph_of(obj: Any) -> Graph:
    g = obj if isinstance(obj, Graph) else getattr(obj, "arch_graph", None)
    if not isinstance(g, Graph):
        raise ArchError(f"{type(obj).__name__} is neither an archdsl graph nor a model built by archdsl", None,
                        hint="pass archdsl.graph(spec) or the module archdsl.build(spec) returned")
    return g


def _num_classes(g: Graph) -> int | None:
    shapes = list(g.output_shapes.values())
    return shapes[0][0] if len(shapes) == 1 and len(shapes[0]) == 1 else None


def _torchvision_weights(name: str) -> Any:
    import torchvision
    try:
        return torchvision.models.get_model_weights(name).DEFAULT
    except (ValueError, KeyError, AttributeError):
        return None


def _reference_cfg(reference: str | None, input_shape: tuple[int, ...], num_classes: int | None) -> dict[str, Any]:
    """The preprocessing the reference's published weights expect (no download needed)."""
    chans = input_shape[0] if input_shape else 3
    cfg: dict[str, Any] = {
        "input_size": tuple(input_shape), "num_classes": num_classes, "interpolation": "bilinear",
        "crop_pct": 0.875, "crop_mode": "center",
        "mean": IMAGENET_MEAN if chans == 3 else (0.5,) * chans,
        "std": IMAGENET_STD if chans == 3 else (0.5,) * chans,
        "reference": reference, "source": "default", "url": None, "hf_hub_id": None,
    }
    family, _, name = (reference or "").partition(".")
    if family == "timm":
        import timm.models
        try:
            tc = timm.models.get_pretrained_cfg(name)
        except RuntimeError:
            tc = None
        if tc is not None:
            # every key timm's cfg sets (classifier, first_conv, test_input_size, pool_size, ...), then ours
            cfg.update({k: tuple(v) if isinstance(v, list) else v
                        for k, v in tc.to_dict(remove_source=True, remove_null=True).items()})
            cfg.update(input_size=tuple(tc.input_size), mean=tuple(tc.mean), std=tuple(tc.std),
                       crop_pct=tc.crop_pct, crop_mode=tc.crop_mode, interpolation=tc.interpolation,
                       num_classes=tc.num_classes, url=tc.url or None, hf_hub_id=tc.hf_hub_id,
                       hf_hub_filename=tc.hf_hub_filename, tag=tc.tag, source="timm")
    elif family == "torchvision":
        w = _torchvision_weights(name)
        if w is not None:
            kw = dict(getattr(w.transforms, "keywords", {}) or {})
            if len(input_shape) == 4:   # a video preset (r3d_18): (h, w) crop and resize, Kinetics' statistics
                t = w.transforms()
                kw.update(crop_size=t.crop_size[0], resize_size=t.resize_size[0], mean=t.mean, std=t.std)
            crop = int(kw.get("crop_size", input_shape[-1] if input_shape else 224))
            resize = int(kw.get("resize_size", round(crop / 0.875)))
            interp = kw.get("interpolation")
            cfg.update(input_size=(chans, *input_shape[1:-2], crop, crop), crop_pct=round(crop / resize, 4),
                       mean=tuple(kw.get("mean", IMAGENET_MEAN)), std=tuple(kw.get("std", IMAGENET_STD)),
                       interpolation=getattr(interp, "value", interp or "bilinear"),
                       num_classes=len(w.meta.get("categories") or []) or num_classes,
                       url=w.url, tag=str(w).rsplit(".", 1)[-1], source="torchvision")
    return cfg


def pretrained_cfg(obj: Any) -> dict[str, Any]:
    """timm-style ``pretrained_cfg`` for a graph or built model: ``input_size``, ``mean``, ``std``,
    ``crop_pct``, ``crop_mode``, ``interpolation``, ``num_classes``, plus where the weights live (``url``,
    ``hf_hub_id``) and ``source`` ('timm', 'torchvision' or 'default': ImageNet statistics and the spec's
    input size when the spec names no reference with published weights).

    The values are the reference library's own: timm's registered cfg for ``reference = "timm.X"``, the
    DEFAULT weights' transforms of torchvision for ``"torchvision.X"``.
    """
    from .codegen.model_api import graph_cfg
    g = _graph_of(obj)
    cfg = _reference_cfg(g.reference, g.input_shape, _num_classes(g))
    cfg.update(graph_cfg(g, tuple(cfg["input_size"])))
    return cfg


# ---- published weights ------------------------------------------------------------------------------------
def _reachable(url: str, timeout: float) -> str | None:
    """None when a TCP connection to the URL's host opens within ``timeout`` s, else the reason.

    Run in a daemon thread: name resolution has no timeout of its own and must not hang the caller.
    """
    import socket
    host = urlparse(url).hostname or url
    result: list[str | None] = []

    def probe() -> None:
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            result.append(None)
        except OSError as e:
            result.append(f"{type(e).__name__}: {e}")

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout + 0.5)
    return result[0] if result else f"no answer from {host} within {timeout:g} s"


def _offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "ARCHDSL_OFFLINE"))


def _unavailable(what: str, where: str, why: str, cache: str) -> ArchError:
    return ArchError(Diagnostic(
        f"could not download the pretrained weights of {what} from {where}: {why}", None,
        hint=f"download the file on a machine with network access and either put it at {cache} "
             f"or pass it explicitly: archdsl.build(spec, weights=PATH) / archdsl.hub.load_weights(model, PATH)"))


def _fetch_url(url: str, what: str, timeout: float, budget: int | None = None) -> dict[str, Any]:
    import torch
    cache = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)
    if not cache.is_file():
        why = "offline mode is set (HF_HUB_OFFLINE / ARCHDSL_OFFLINE)" if _offline() else _reachable(url, timeout)
        if why:
            raise _unavailable(what, url, why, str(cache))
        import socket
        old = socket.getdefaulttimeout()
        socket.setdefaulttimeout(timeout)
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(url, str(cache), progress=sys.stderr.isatty())
        except Exception as e:
            raise _unavailable(what, url, f"{type(e).__name__}: {e}", str(cache)) from None
        finally:
            socket.setdefaulttimeout(old)
    return read_state_dict(cache, budget=budget)


def _fetch_hf(repo: str, filename: str | None, what: str, timeout: float, budget: int | None = None
              ) -> dict[str, Any]:
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    names = [filename] if filename else ["model.safetensors", "pytorch_model.bin"]
    for name in names:
        hit = try_to_load_from_cache(repo, name)
        if isinstance(hit, str):
            return read_state_dict(hit, budget=budget)
    url = f"https://huggingface.co/{repo}"
    why = "offline mode is set (HF_HUB_OFFLINE / ARCHDSL_OFFLINE)" if _offline() else _reachable(url, timeout)
    from huggingface_hub.constants import HF_HUB_CACHE
    if why:
        raise _unavailable(what, url, why, f"the Hugging Face cache ({HF_HUB_CACHE}, via "
                                           f"'huggingface-cli download {repo}')")
    try:
        return read_state_dict(hf_hub_download(repo, names[0], etag_timeout=timeout), budget=budget)
    except ArchError:
        raise
    except Exception as e:
        raise _unavailable(what, url, f"{type(e).__name__}: {e}", HF_HUB_CACHE) from None


def load_pretrained(model: Any, *, strict: bool = True, timeout: float = 10.0) -> Any:
    """Load the published weights of the spec's ``reference`` into ``model`` (built by archdsl) and
    return it: torchvision's DEFAULT weights for ``torchvision.X``, timm's default pretrained tag for
    ``timm.X``. Files already in the caches (``TORCH_HOME`` / the Hugging Face cache) are used without any
    network access; ``HF_HUB_OFFLINE=1`` (or ``ARCHDSL_OFFLINE=1``) forbids downloading. A download that
    cannot happen is one :class:`ArchError` within ``timeout`` seconds, saying where to put the file.

    A classifier whose size differs from the weights' (``num_classes=10``) keeps its fresh initialisation,
    as in timm; auxiliary heads of the reference (GoogLeNet, Inception v3) are ignored.
    """
    g = _graph_of(model)
    ref = g.reference
    family, _, name = (ref or "").partition(".")
    if family not in ("torchvision", "timm"):
        raise ArchError(f"{g.name} has no reference with published weights (reference: {ref or 'none'})", None,
                        hint="load your own weights with archdsl.build(spec, weights=PATH)")
    cfg = _reference_cfg(ref, g.input_shape, _num_classes(g))
    what = f"{ref} ({cfg.get('tag') or 'default'})"
    # the published file may carry more than this model (a 1000-class head, auxiliary heads): 4x slack
    budget, _ = _model_budget(model, 4)
    if cfg.get("hf_hub_id"):
        sd = _fetch_hf(cfg["hf_hub_id"], cfg.get("hf_hub_filename"), what, timeout, budget)
    elif cfg.get("url"):
        sd = _fetch_url(cfg["url"], what, timeout, budget)
    else:
        raise ArchError(f"{ref} lists no published weights", None,
                        hint="load your own weights with archdsl.build(spec, weights=PATH)")
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    sd = {k: v for k, v in sd.items() if k in want or not k.split(".")[0].lower().startswith("aux")}
    head = _head_keys(g)
    for k in head:   # a new classifier size: keep the model's own (timm's behaviour for num_classes != 1000)
        if k in sd and k in want and tuple(sd[k].shape) != want[k]:
            sd[k] = model.state_dict()[k]
    return load_weights(model, sd, strict=strict)


def _head_keys(g: Graph) -> list[str]:
    """State-dict keys of the layer producing the (single) classifier output."""
    if len(g.outputs) != 1:
        return []
    n = g.node(g.outputs[0][1])
    while n.op != "linear" and n.op != "conv2d" and n.inputs and n.params == 0:
        n = g.node(n.inputs[0])
    return [f"{n.module}.weight", f"{n.module}.bias"] if n.module else []


# ---- timm registration -------------------------------------------------------------------------------------
_DROP_RATE = ("drop_rate", "dropout", "dropout_p", "dropout_rate", "p_dropout")
_DROP_PATH = ("drop_path_rate", "stochastic_depth_prob", "drop_path", "sd")
# timm's own keywords (handled here, never passed to the spec)
_TIMM_KWARGS = ("pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "cache_dir", "features_only",
                "out_indices", "drop_rate", "drop_path_rate", "global_pool", "in_chans", "img_size",
                "num_classes", "device", "dtype", "feature_cls", "output_stride", "scriptable", "exportable",
                "no_jit")


def _timm_module() -> types.ModuleType:
    mod = sys.modules.get(_TIMM_MODULE)
    if mod is None:
        mod = types.ModuleType(_TIMM_MODULE, "timm entries for archdsl spec networks (archdsl.hub.register_timm)")
        mod.__all__ = []  # type: ignore[attr-defined]
        mod.default_cfgs = {}  # type: ignore[attr-defined]
        sys.modules[_TIMM_MODULE] = mod
    return mod


def _build_kwargs(entry: dict[str, Any], kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split timm's keywords into (spec parameters, build options), rejecting what the spec cannot take."""
    accepted = set(entry["params"])
    params: dict[str, Any] = {}
    opts: dict[str, Any] = {}
    shape = list(entry["input"])
    bad: list[str] = []
    for k, v in kwargs.items():
        if k == "num_classes":
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                bad.append(f"num_classes={v!r} (a count of classes, 0 for none)")
            elif v == 0 and entry.get("num_classes"):
                opts["num_classes"] = 0          # built as is, then reset_classifier(0) as timm does
            elif entry.get("headless"):
                opts["num_classes"] = v          # a backbone: timm's pooled classifier on its last map
            elif "num_classes" in accepted:
                params["num_classes"] = v
            elif v != entry.get("num_classes"):
                bad.append(f"num_classes={v!r} (the network has no num_classes parameter)")
        elif k in ("drop_rate", "drop_path_rate"):
            names = _DROP_RATE if k == "drop_rate" else _DROP_PATH
            target = next((n for n in names if n in accepted), None)
            if target is not None:
                params[target] = v
            elif v:
                bad.append(f"{k}={v!r} (the network has no {' / '.join(names[:3])} parameter)")
        elif k == "global_pool":
            if v not in ("", "avg", "token", None):
                bad.append(f"global_pool={v!r} (the spec's head pools as it is written: use 'avg', or '' for "
                           "no pooling)")
            else:
                opts["global_pool"] = v
        elif k == "in_chans":
            shape[0] = int(v)
        elif k == "img_size":
            hw = (v, v) if isinstance(v, int) else tuple(v)
            shape[1:] = list(hw)
        elif k in ("features_only", "out_indices", "device", "dtype"):
            opts[k] = v
        elif k == "feature_cls" and v not in (None, "list", "dict", "getter", "hook"):
            bad.append(f"feature_cls={v!r} ('list', or 'dict' for outputs by module path)")
        elif k in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir", "feature_cls", "scriptable",
                   "exportable", "no_jit", "output_fmt"):
            opts[k] = v
        elif k == "output_stride":
            if v not in (None, 32):
                bad.append(f"output_stride={v!r} (dilated variants are separate specs)")
        elif k in accepted:
            params[k] = v
        else:
            bad.append(f"{k}={v!r}")
    if bad:
        raise ArchError(f"timm.create_model('{TIMM_PREFIX}{entry['name']}'): the spec {entry['spec']} cannot take "
                        + ", ".join(bad), None,
                        hint="its parameters: " + (", ".join(sorted(accepted)) or "none")
                             + "; timm options understood: num_classes, in_chans, img_size, drop_rate, "
                               "drop_path_rate, features_only, out_indices, pretrained")
    if shape != list(entry["input"]):
        opts["input_shape"] = tuple(shape)
    return params, opts


def build_model(spec: str, params: Mapping[str, Any] | None = None, *, input_shape: tuple[int, ...] | None = None,
                features_only: bool = False, out_indices: Sequence[int] | None = None,
                labels: Sequence[str] | None = None, feature_cls: str | None = None) -> Any:
    """Compile and instantiate ``spec`` (what ``archdsl.build`` does), or with ``features_only`` its
    feature-taps graph (:func:`archdsl.passes.features.feature_taps`: the head dropped, one output per
    tap), which then carries ``feature_info`` (a :class:`~archdsl.passes.features.FeatureInfo`) and
    ``output_fmt``. The levels are timm's where the spec's reference is a timm model (same module paths),
    else the stage taps. Several maps come as a list, as timm's features_only gives them, or a dict by module
    path with ``feature_cls="dict"``. Built from the layers below (pipeline, passes, codegen):
    ``archdsl.build`` sits above this module and may call it, not the other way round.
    """
    from .codegen.build import instantiate
    from .codegen.model_api import features_model
    from .pipeline import compile_graph
    from .persist import remember
    from .pipeline import resolve
    from .plugins import verifying_shapes
    with verifying_shapes():   # plugin ops' declared shapes are compared with their modules (meta device)
        resolved = resolve(spec)
        g = compile_graph(resolved, dict(params or {}), input_shape=input_shape)
    if not features_only:
        if out_indices is not None or labels is not None:
            raise ArchError("out_indices / labels select feature taps: pass features_only=True too", None)
        return remember(instantiate(g), resolved, g, params=params, input_shape=input_shape, form="plain")
    as_list = feature_cls != "dict"
    model = features_model(g, out_indices=out_indices, labels=labels, as_list=as_list)
    return remember(model, resolved, model.arch_graph, params=params, input_shape=input_shape,
                    form="features-list" if as_list else "features", out_indices=out_indices, labels=labels)


def _headless_model(entry: dict[str, Any], params: dict[str, Any], input_shape: tuple[int, ...] | None,
                    num_classes: int) -> Any:
    """A backbone (feature maps out, no classifier) as a timm model: pooled features of its last map, and a
    ``head`` classifier when ``num_classes`` > 0 (:func:`archdsl.passes.head.with_classifier`)."""
    from .codegen.build import instantiate
    from .passes.head import with_classifier
    from .pipeline import compile_graph
    g = compile_graph(entry["spec"], dict(params), input_shape=input_shape)
    model = instantiate(with_classifier(g, max(num_classes, 1)))
    if num_classes == 0:
        model.reset_classifier(0)
    return model


def _entrypoint(entry: dict[str, Any]) -> Any:
    name = TIMM_PREFIX + entry["name"]

    def create(pretrained: bool = False, **kwargs: Any) -> Any:
        params, opts = _build_kwargs(entry, {k: v for k, v in kwargs.items() if v is not None})
        features = bool(opts.get("features_only"))
        pool = opts.get("global_pool")
        n = opts.get("num_classes")
        if features:
            model = build_model(entry["spec"], params, input_shape=opts.get("input_shape"), features_only=True,
                                out_indices=opts.get("out_indices"), feature_cls=opts.get("feature_cls"))
        elif entry.get("headless"):
            model = _headless_model(entry, params, opts.get("input_shape"), n or 0)
        else:
            model = build_model(entry["spec"], params, input_shape=opts.get("input_shape"))
        if not features and (n == 0 or pool == "") and hasattr(model, "reset_classifier"):
            if pool == "" and n != 0 and getattr(model, "num_classes", 0):
                raise ArchError(f"timm.create_model('{name}', global_pool=''): no pooling needs num_classes=0",
                                None, hint="pass num_classes=0 too (forward then gives the unpooled features)")
            model.reset_classifier(0, pool)
        cfg = pretrained_cfg(model)
        overlay = opts.get("pretrained_cfg_overlay")
        if isinstance(opts.get("pretrained_cfg"), Mapping):
            cfg.update(opts["pretrained_cfg"])
        if isinstance(overlay, Mapping):
            cfg.update(overlay)
        cfg["architecture"] = name
        if not features:   # the classes of this model (after num_classes=0, a reset classifier)
            cfg["num_classes"] = int(getattr(model, "num_classes", cfg.get("num_classes") or 0))
        if pretrained:
            load_pretrained(model, strict=not opts.get("features_only"))
        model.pretrained_cfg = cfg
        model.default_cfg = cfg
        if not hasattr(model, "num_classes") and not features:
            model.num_classes = _num_classes(model.arch_graph) or 0
        if opts.get("device") is not None or opts.get("dtype") is not None:
            model = model.to(device=opts.get("device"), dtype=opts.get("dtype"))
        return model

    create.__name__ = create.__qualname__ = name
    create.__module__ = _TIMM_MODULE
    create.__doc__ = f"archdsl spec {entry['spec']} (reference: {entry['reference'] or 'none'})."
    return create


def register_timm(spec_paths: Iterable[str | os.PathLike[str]] = (), *, library: bool = True) -> list[str]:
    """Register every network of the library shipped with archdsl (:mod:`archdsl.library`; ``library=False``
    leaves it out) and of the specs under ``spec_paths`` (your own folders or files) as a timm model
    ``archdsl_<name>`` (each variant of a
    family's scales table as ``archdsl_<network>_<scale>``), from any working directory.

    Afterwards ``timm.create_model("archdsl_resnet50", num_classes=10)`` builds the spec as
    ``archdsl.build`` does (:func:`build_model`); timm's keywords are mapped onto what the spec takes
    (``num_classes``, ``in_chans`` and ``img_size`` -> the input shape, ``drop_rate`` / ``drop_path_rate`` -> the spec's dropout or
    stochastic-depth parameter, ``features_only`` + ``out_indices`` -> the feature taps of
    :func:`archdsl.passes.features.feature_taps`, ``pretrained`` -> :func:`load_pretrained`) and anything
    else the spec has no parameter for is one clear :class:`ArchError`. Each model carries
    ``pretrained_cfg`` (:func:`pretrained_cfg`). Returns the registered names; registering again replaces
    the earlier entries (a spec that does not compile is left out).
    """
    import warnings

    from timm.models import register_model
    from timm.models._registry import _model_entrypoints  # noqa: F401  (fails early on an incompatible timm)

    from .pipeline import list_networks
    mod = _timm_module()
    names: list[str] = []
    paths = [*([library_dir()] if library else []), *spec_paths]
    for path in paths:
        if not Path(path).exists():
            raise ArchError(f"no such file or directory: '{path}'", None)
        for net in list_networks(str(path), contracts=True):
            if net.get("error") or not net.get("input"):
                continue
            if TIMM_PREFIX + net["name"] in names:   # a family's variant named like a network: the network wins
                continue
            outs = list((net.get("outputs") or {}).values())
            entry = {**net, "num_classes": outs[0][0] if len(outs) == 1 and len(outs[0]) == 1 else None,
                     # feature maps out (a backbone): timm's pooled classifier is added on request
                     "headless": bool(outs) and len(outs[-1]) == 3 and len(net["input"]) == 3}
            fn = _entrypoint(entry)
            cfg = _reference_cfg(net["reference"], tuple(net["input"]), entry["num_classes"])
            cfg["fixed_input_size"] = bool(net.get("fixed_input_size"))
            if net.get("min_input_size"):   # (timm's tests then run at a size the spec takes)
                cfg["min_input_size"] = tuple(net["min_input_size"])
            if entry["headless"]:
                cfg["num_classes"] = 0
            mod.default_cfgs[fn.__name__] = {  # type: ignore[attr-defined]
                k: cfg[k] for k in ("input_size", "mean", "std", "crop_pct", "crop_mode", "interpolation",
                                    "num_classes", "fixed_input_size", "test_input_size", "first_conv",
                                    "classifier", "pool_size", "min_input_size") if cfg.get(k) is not None}
            with warnings.catch_warnings():   # re-registering replaces the old entry on purpose
                warnings.simplefilter("ignore")
                register_model(fn)
            setattr(mod, fn.__name__, fn)
            names.append(fn.__name__)
    return names
