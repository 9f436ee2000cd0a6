"""``archc import SOURCE -o OUT.arch``: a PyTorch model (timm, torchvision or the user's own file) as a spec.

SOURCE is ``timm:NAME``, ``torchvision:NAME`` or ``FILE.py:FACTORY_OR_CLASS``; the model is built with
``--arg`` values (literals only), traced at ``--input`` and written with one block per class; the round trip
(strict state_dict load, equal outputs) is checked before anything is written. torch, timm and torchvision
are imported only when the command runs.
"""
from __future__ import annotations

import difflib
import importlib.util
import sys
from pathlib import Path
from typing import Any, List, Optional

import typer

from ..errors import ArchError
from ..pipeline import parse_set
from ..source import printable
from .common import _check_destination, _guard, _parse_shape, _write_output, app, out

__all__: list[str] = []   # the command registers itself on ``app``

# torchvision builders whose defaults add modules the eval forward never calls (auxiliary heads) or run a
_PY_WORDS: dict[str, Any] = {"True": True, "False": False, "None": None}
# slow initialization: the import turns them off unless --arg says otherwise
_TV_DEFAULTS: dict[str, dict[str, Any]] = {"googlenet": {"aux_logits": False, "init_weights": False},
                                           "inception_v3": {"aux_logits": False, "init_weights": False}}
_TV_INPUT = {"inception_v3": (3, 299, 299)}


def _did_you_mean(name: str, choices: list[str]) -> str | None:
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.6)
    return "did you mean " + ", ".join(close) + "?" if close else None


def _build(kind: str, name: str, args: dict[str, Any]) -> tuple[Any, tuple[int, ...] | None, dict[str, str]]:
    """The model, its default input shape (None: unknown) and the folders of user modules (for plugins); how
    it was built is remembered for the plugin (a kept class it cannot rebuild is taken from such a model)."""
    from ..importer.plugin import remember_source
    if kind == "timm":
        import timm
        if not timm.is_model(name):
            raise ArchError(f"timm has no model '{name}'", None, hint=_did_you_mean(name, timm.list_models()))
        model = timm.create_model(name, pretrained=False, **args)
        remember_source(model, "timm", name, args)
        cfg: Any = getattr(model, "pretrained_cfg", None) or {}
        size = tuple(cfg.get("input_size", (3, 224, 224)))
        return model, size, {}
    if kind == "torchvision":
        import torchvision
        names = torchvision.models.list_models(module=torchvision.models)
        if name not in names:
            raise ArchError(f"torchvision has no classification model '{name}'", None,
                            hint=_did_you_mean(name, names) or "archc import takes torchvision's classification builders")
        full = {**_TV_DEFAULTS.get(name, {}), **args}
        model = torchvision.models.get_model(name, weights=None, **full)
        remember_source(model, "torchvision", name, full)
        return model, _TV_INPUT.get(name, (3, 224, 224)), {}
    path = Path(kind)
    if not path.is_file():
        raise ArchError(f"model file '{printable(kind)}' does not exist", None)
    mod_name = path.stem
    if not mod_name.isidentifier():
        raise ArchError(f"model file '{printable(kind)}': '{mod_name}' is not a module name", None,
                        hint="the plugin of a kept class imports it by its file name; rename the file")
    spec = importlib.util.spec_from_file_location(mod_name, path.resolve())
    if spec is None or spec.loader is None:
        raise ArchError(f"model file '{printable(kind)}' cannot be imported", None)
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    folder = str(path.resolve().parent)
    try:
        sys.path.insert(0, folder)
        spec.loader.exec_module(module)
    except Exception as e:
        raise ArchError(f"model file '{printable(kind)}' raised {type(e).__name__} while loading: {e}", None) from None
    finally:
        sys.path.remove(folder)
    factory = getattr(module, name, None)
    if factory is None or not callable(factory):
        found = [k for k, v in vars(module).items() if callable(v) and not k.startswith("_")]
        raise ArchError(f"model file '{printable(kind)}' has no class or function '{name}'", None,
                        hint=_did_you_mean(name, found))
    try:
        model = factory(**args)
    except TypeError as e:
        raise ArchError(f"{name}(**{args}) failed: {e}", None, hint="check the --arg names") from None
    import torch.nn as nn
    if not isinstance(model, nn.Module):
        raise ArchError(f"{name}(...) gave a {type(model).__name__}, not an nn.Module", None)
    remember_source(model, mod_name, name, args)
    return model, None, {mod_name: folder}


def _source(text: str) -> tuple[str, str]:
    kind, sep, name = text.partition(":")
    if text.startswith(("timm:", "torchvision:")) or (kind.endswith(".py") and sep):
        if not name:
            raise ArchError(f"SOURCE '{printable(text)}' names no model", None,
                            hint="e.g. timm:resnet50, torchvision:mobilenet_v3_large or model.py:Net")
        return kind, name
    raise ArchError(f"SOURCE '{printable(text)}' is not timm:NAME, torchvision:NAME or FILE.py:NAME", None,
                    hint="e.g. timm:resnet50, torchvision:mobilenet_v3_large or model.py:Net")


@app.command("import")
def import_(source: str = typer.Argument(..., help="timm:NAME, torchvision:NAME or FILE.py:FACTORY_OR_CLASS"),
            output: Path = typer.Option(..., "-o", "--output", help="the spec to write (OUT.arch)"),
            input_: Optional[str] = typer.Option(None, "--input", help="the per-sample input shape, e.g. 3,224,224"),
            name: Optional[str] = typer.Option(None, "--name", help="the network's name (default: the model's)"),
            arg: List[str] = typer.Option([], "--arg", help="a constructor argument: --arg num_classes=10 "
                                          "(repeatable; literal values only)"),
            keep: List[str] = typer.Option([], "--keep", help="keep a class whole as a plugin op (repeatable; its "
                                           "name or qualified name)"),
            auto_keep: bool = typer.Option(True, "--auto-keep/--no-auto-keep",
                                           help="keep a class the importer cannot see through whole as a plugin "
                                                "op (default), or stop with a located error")) -> None:
    """Import a PyTorch model as a readable spec: one block per module class, labels equal to the module
    paths (its state_dict loads strictly); the round trip is checked before the spec is written. Classes
    kept whole go to NAME_plugins.py beside the spec (load it with --plugin)."""
    def run() -> int:
        kind, model_name = _source(source)
        # constructor arguments are Python's: True / False / None as well as the spec's true / false / none
        args = {k: _PY_WORDS.get(v, v) if isinstance(v, str) else v for k, v in parse_set(arg).items()}
        shape = _parse_shape(input_)
        if output.suffix != ".arch":
            raise ArchError(f"output '{printable(str(output))}' should end in .arch", None)
        _check_destination(output, "output")
        from ..importer import import_model
        from ..importer.plugin import recording_inits
        with recording_inits():
            model, default, paths = _build(kind, model_name, args)
        shape = shape or default or (3, 224, 224)
        net = name or "".join(ch if ch.isalnum() else "_" for ch in model_name).lower()
        if not net[:1].isalpha():
            net = "net_" + net
        r = import_model(model, shape, name=net, keep=keep, source=source, paths=paths, auto_keep=auto_keep)
        _write_output(output, r.spec)
        msg = f"wrote {output} ({len(r.spec.splitlines())} lines); round trip: max |diff| {r.max_diff:.2g}"
        if r.plugin is not None:
            plugin = output.parent / f"{net}_plugins.py"
            _write_output(plugin, r.plugin)
            msg += f"; classes kept whole in {plugin}:"
            for path, why in r.kept.items():
                msg += f"\n  kept whole: {path} ({r.kept_classes.get(path, '?')}): {why}"
        out.print(msg, markup=False)
        return 0
    _guard(run)
