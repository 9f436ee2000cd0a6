"""archdsl: a declarative language for neural-network architectures, and its compiler.

Python API::

    import archdsl
    model = archdsl.build("specs/resnet.arch:resnet50", num_classes=10)   # a torch.nn.Module
    graph = archdsl.graph("specs/resnet.arch:resnet50")                  # the shape-checked IR
    print(archdsl.source("specs/resnet.arch:resnet50"))                  # the generated PyTorch code
    fast = archdsl.deploy(model)       # inference form: reparam groups fused, BatchNorms folded
"""
from __future__ import annotations

import os
from typing import Any, Sequence

from .errors import ArchError, Diagnostic
from .ir import Graph
from .limits import Limits
from .persist import remember, remember_deploy
from .pipeline import compile_graph, resolve, source_with_params
from . import notebook as _notebook  # noqa: F401  (Jupyter display of graphs)
from .notebook import show
from .plugins import load_plugins, register_op, verifying_shapes

__all__ = ["build", "graph", "source", "deploy", "summary", "show", "register_op", "load_plugins", "ArchError",
           "Diagnostic", "Graph", "Limits", "__version__", "LANGUAGE_VERSION", "import_module"]
from ._version import LANGUAGE_VERSION, __version__


def graph(spec: str, *, input_shape: tuple[int, ...] | None = None, limits: Limits | None = None,
          plugins: list[str] | None = None, **params: Any) -> Graph:
    """Parse, expand and shape-check ``spec``; return the annotated graph IR (no torch needed).

    ``plugins``: modules or ``.py`` files defining ops (:func:`register_op`) to load first."""
    load_plugins(plugins or (), env=False)
    return compile_graph(spec, params, input_shape=input_shape, limits=limits)


def source(spec: str, *, plugins: list[str] | None = None, **params: Any) -> str:
    """The generated PyTorch source for ``spec`` (depends only on torch); ``plugins`` are loaded first."""
    load_plugins(plugins or (), env=False)
    with verifying_shapes():   # plugin ops' declared shapes are compared with their modules (meta device)
        g = compile_graph(spec, params)
        return source_with_params(spec, params, g, None, None)


def deploy(module: Any, **kwargs: Any) -> Any:
    """The inference form of a compiled train-form module: reparam groups fused into one conv each,
    BatchNorms folded, identities/dropout/drop-path removed; same outputs in eval mode.

    See :func:`archdsl.codegen.deploy.deploy` for the options (``fold_bn``, ``memory_format``, ...).
    """
    from .codegen.deploy import deploy as _deploy  # torch is imported only when a module is deployed
    return remember_deploy(_deploy(module, **kwargs), module)   # it pickles by spec, as the trained model


def import_module(model: Any, example_input: Any, *, name: str | None = None, keep: Sequence[str] = (),
                  plugin_path: str | os.PathLike[str] | None = None, check: bool = True) -> str:
    """The ``.arch`` text of a PyTorch model traced on ``example_input`` (a batched tensor or a per-sample
    shape): one block per module class, labels equal to the module paths so its state_dict loads strictly,
    proven by a round trip (see docs/import.md). Classes named in ``keep`` (and classes the language cannot
    express) become plugin ops written to ``plugin_path``."""
    from .importer import import_module as _import   # torch is imported only when a model is imported
    return _import(model, example_input, name=name, keep=keep, plugin_path=plugin_path, check=check)


def summary(obj: Any, input_size: Sequence[int] | None = None, *, depth: int | None = None, batch: int = 1,
            dtype: str = "float32", columns: int | None = 80, **params: Any) -> Any:
    """The summary of a spec or of any ``nn.Module``: rows named as ``create_feature_extractor`` names the
    steps, output shapes with the batch axis, params / trainable / buffers counted on the module, MACs for
    the batch, parameter size and memory; ``print()`` it for the table (see :mod:`archdsl.summarize`)."""
    from .summarize import summary as _summary   # torch is imported only when something is summarized
    return _summary(obj, input_size, depth=depth, batch=batch, dtype=dtype, columns=columns, **params)


def build(spec: str, *, input_shape: tuple[int, ...] | None = None, limits: Limits | None = None,
          backends: str | None = None, batch: int = 1, plugins: list[str] | None = None,
          features_only: bool = False, out_indices: Sequence[int] | None = None,
          feature_labels: Sequence[str] | None = None, feature_cls: str = "dict",
          weights: str | os.PathLike[str] | None = None,
          pretrained: bool = False, **params: Any) -> Any:
    """Compile ``spec`` (a path, ``path:network``, or spec text) into a ``torch.nn.Module``.

    Keyword arguments override the network's parameters, e.g. ``num_classes=10``; ``scale="b1"`` builds that
    variant of the network's ``scales`` table (a family; see docs/design-space.md).
    ``backends`` (``"auto"``, ``"autotune"`` or a backend name) swaps every conv for the selected kernel
    backend, chosen for a CPU float32 input of ``batch`` samples (see :mod:`archdsl.backends`; for another
    device or dtype call ``archdsl.backends.apply`` on the moved model instead).
    ``plugins`` (modules or ``.py`` files that register ops, see docs/extending.md) are loaded first.

    Like timm's ``create_model``: ``features_only=True`` returns a backbone whose forward gives a dict of
    feature maps (the output of each stage where the resolution drops, or the nodes named by
    ``feature_labels``; ``out_indices`` picks among the levels, negative ones counted from the end) and whose
    ``feature_info`` is timm's ``FeatureInfo`` (``channels()``, ``reduction()``, ``module_name()``; see
    :func:`archdsl.passes.features.feature_taps`); the levels are timm's where the spec's reference is a timm
    model. ``feature_cls="list"`` returns the maps as a list, as timm's ``features_only`` does.
    ``weights=PATH`` loads a state_dict file (missing, unexpected or mis-shaped keys are one clear
    :class:`ArchError`); ``pretrained=True`` loads the reference library's published weights, or says
    clearly why they cannot be had (see :mod:`archdsl.hub`).
    Raises :class:`ArchError` with every problem found if the spec is invalid.
    """
    load_plugins(plugins or (), env=False)
    with verifying_shapes():   # plugin ops' declared shapes are compared with their modules (meta device)
        resolved = resolve(spec, limits=limits)
        g = compile_graph(resolved, params, input_shape=input_shape, limits=limits)
    from .codegen.build import instantiate  # torch is imported only when a module is built
    if features_only or out_indices is not None or feature_labels is not None:
        if not features_only:
            raise ArchError("out_indices / feature_labels select feature maps: pass features_only=True too", None)
        from .codegen.model_api import features_model
        as_list = feature_cls == "list"
        model = features_model(g, out_indices=out_indices, labels=feature_labels, as_list=as_list)
        model = remember(model, resolved, model.arch_graph, params=params, input_shape=input_shape,
                         form="features-list" if as_list else "features", out_indices=out_indices,
                         labels=feature_labels)
    else:
        with verifying_shapes():
            model = instantiate(g, source_with_params(resolved, params, g, input_shape, limits))
        remember(model, resolved, g, params=params, input_shape=input_shape)   # it pickles by spec
    if pretrained or weights is not None:
        from . import hub
        if pretrained:
            hub.load_pretrained(model)
        if weights is not None:
            hub.load_weights(model, weights)
    if backends is not None:
        import torch

        from .backends import apply
        apply(model, torch.zeros((batch, *g.input_shape)), method=backends)
    return model
