"""The one identifier rule: which spec names may become names in the generated Python module.

A label becomes a submodule name (``self.<label>`` or ``add_module("<label>", ...)``), a network name a
class name, a parameter a constructor argument. A name that Python or ``nn.Module`` reads differently
from the spec breaks the model *silently* (an attribute of ``nn.Module`` shadowed, ``__x`` mangled to
``_Net__x``, ``ﬁ`` read as ``fi``, a class ``F`` hiding ``torch.nn.functional``), so lowering checks every
name with :func:`check_identifier` at ``archc check`` time, and the code generator may call it again
before it emits one. This module imports neither torch nor anything of archdsl: the reserved lists are
frozen here and a test (``tests/test_hostile_eval.py``) checks they cover ``dir(torch.nn.Module())`` and
the generated model's own attributes.
"""
from __future__ import annotations

import builtins
import functools
import keyword
import re
import unicodedata
from dataclasses import dataclass
from typing import Literal

__all__ = ["NameProblem", "NameKind", "check_identifier", "binding_problem", "CONSTANT_NAMES", "class_name", "NN_MODULE_ATTRS", "GENERATED_ATTRS",
           "GENERATED_GLOBALS", "RESERVED_ATTRS"]

NameKind = Literal["label", "class", "param"]

# dir(torch.nn.Module()) | dir(torch.nn.Sequential()) with torch 2.x: every attribute and method a submodule
# name would shadow (assigning a module to ``self.forward`` or ``self.to`` breaks the model without an error).
NN_MODULE_ATTRS: frozenset[str] = frozenset("""
T_destination __add__ __annotations__ __call__ __class__ __delattr__ __delitem__ __dict__ __dir__ __doc__
__eq__ __format__ __ge__ __getattr__ __getattribute__ __getitem__ __getstate__ __gt__ __hash__ __iadd__
__imul__ __init__ __init_subclass__ __iter__ __le__ __len__ __lt__ __module__ __mul__ __ne__ __new__
__reduce__ __reduce_ex__ __repr__ __rmul__ __setattr__ __setitem__ __setstate__ __sizeof__ __str__
__subclasshook__ __weakref__ _apply _backward_hooks _backward_pre_hooks _buffers _call_impl
_compiled_call_impl _forward_hooks _forward_hooks_always_called _forward_hooks_with_kwargs _forward_pre_hooks
_forward_pre_hooks_with_kwargs _get_backward_hooks _get_backward_pre_hooks _get_item_by_idx _get_name
_is_full_backward_hook _load_from_state_dict _load_state_dict_post_hooks _load_state_dict_pre_hooks
_maybe_warn_non_full_backward_hook _modules _named_members _non_persistent_buffers_set _parameters
_register_load_state_dict_pre_hook _register_state_dict_hook _replicate_for_data_parallel _save_to_state_dict
_slow_forward _state_dict_hooks _state_dict_pre_hooks _version _wrapped_call_impl add_module append apply
bfloat16 buffers call_super_init children compile cpu cuda double dump_patches eval extend extra_repr float
forward get_buffer get_extra_state get_parameter get_submodule half insert ipu load_state_dict modules mtia
named_buffers named_children named_modules named_parameters parameters pop register_backward_hook
register_buffer register_forward_hook register_forward_pre_hook register_full_backward_hook
register_full_backward_pre_hook register_load_state_dict_post_hook register_load_state_dict_pre_hook
register_module register_parameter register_state_dict_post_hook register_state_dict_pre_hook
requires_grad_ set_extra_state set_submodule share_memory state_dict to to_empty train training type xpu
zero_grad
""".split())

# What archdsl puts on the generated class and its instances (codegen/emit.py, codegen/build.py,
# codegen/deploy.py, persist.py), and the model API names the timm/torchvision interface uses (issue 13).
GENERATED_ATTRS: frozenset[str] = frozenset({
    "input_shape", "input_sizes", "reference", "memory_format", "arch_graph", "deploy_info", "__archdsl_source__",
    "__archdsl_recipe__", "__archdsl_plugins__", "__archdsl_pickle__",   # pickling by spec (archdsl.persist)
    "__deepcopy__",                                                       # copy.deepcopy (codegen/build.py)
    "forward_features", "forward_head", "reset_classifier", "get_classifier", "num_features", "num_classes",
    "pretrained_cfg", "default_cfg", "feature_info",
    # timm's model API on built networks (archdsl.codegen.model_api)
    "forward_intermediates", "group_matcher", "set_grad_checkpointing",
    "_repr_svg_", "_repr_html_", "_repr_png_", "_ipython_display_",   # notebook display (archdsl.notebook)
})

RESERVED_ATTRS: frozenset[str] = NN_MODULE_ATTRS | GENERATED_ATTRS

# Names the generated module defines or imports at top level: a class of that name would hide them.
GENERATED_GLOBALS: frozenset[str] = frozenset({"torch", "nn", "F", "math", "Any", "Optional", "Tensor"})


@dataclass(frozen=True)
class NameProblem:
    """Why a name cannot be used: a message (naming the name) and a hint (what to write instead)."""

    message: str
    hint: str


def _bad_char(name: str) -> str | None:
    for ch in name:
        cat = unicodedata.category(ch)
        if cat[0] in "CZ":   # control, format, surrogate, private, unassigned; spaces and separators
            return ch
    return None


@functools.lru_cache(maxsize=8192)   # pure, and called for every label of every layer
def check_identifier(name: str, kind: NameKind = "label") -> NameProblem | None:
    """None when ``name`` is safe as a ``kind`` in generated Python, otherwise why it is not.

    ``label``: one part of a module path (an attribute of an ``nn.Module`` or a ``Sequential`` index):
    non-empty, no ``.``, no control or space characters, in Unicode NFKC form (Python reads identifiers in
    that form), not starting with ``__`` (name mangling), not an attribute of ``nn.Module`` or of the
    generated model. Non-identifier labels (``block1-0``) are fine: they are registered with
    ``add_module`` and reached with ``getattr``.
    ``class``: a Python identifier, ASCII, not a keyword, builtin or global of the generated module.
    ``param``: an identifier that :func:`binding_problem` accepts as a parameter (a Python keyword, ``self``
    or ``__x`` is fine: the generated code keeps such a parameter's value a literal).
    """
    shown = ascii(name)[1:-1] if not name.isprintable() else name
    if not name:
        return NameProblem("an empty name", "give it a name made of letters, digits and '_'")
    ch = _bad_char(name)
    if ch is not None:
        return NameProblem(f"the name '{shown}' contains the character {ascii(ch)}",
                           "names are letters, digits and '_' (no control characters or spaces)")
    norm = unicodedata.normalize("NFKC", name)
    if norm != name:
        return NameProblem(f"the name '{shown}' is read by Python as '{ascii(norm)[1:-1]}' (Unicode NFKC form)",
                           f"write '{ascii(norm)[1:-1]}' (two names that look different would be one module)")
    if name.startswith("__"):
        return NameProblem(f"the name '{shown}' starts with '__', which Python mangles inside a class",
                           f"drop a leading underscore: '{name[1:]}'")
    if kind == "label":
        if "." in name:
            return NameProblem(f"the label '{shown}' contains '.'", "a label is one module name; "
                               'for a nested module path write a quoted label like "convs.0"')
        if name in RESERVED_ATTRS:
            return NameProblem(f"the label '{name}' is an attribute of the generated nn.Module "
                               "(it would shadow it and break the model)",
                               f"choose another label, e.g. '{name.strip('_')}_'")
        return None
    if not name.isidentifier():
        return NameProblem(f"'{shown}' is not a Python identifier", "use letters, digits and '_' only")
    if kind == "param":
        # a parameter is a spec name first: the code generator makes it a constructor argument only where it is
        # a plain Python name (codegen.names.py_identifier), and keeps its value a literal otherwise
        return binding_problem(name, param=True)
    # soft keywords (match, case, type, _) are fine as names; a class name is capitalised anyway
    if keyword.iskeyword(name):
        return NameProblem(f"'{name}' is a Python keyword", f"choose another name, e.g. '{name}_'")
    if kind == "class":
        if not name.isascii():
            return NameProblem(f"the class name '{shown}' is not ASCII", "use ASCII letters and digits")
        if name in GENERATED_GLOBALS or hasattr(builtins, name):
            return NameProblem(f"the class name '{name}' would hide the name '{name}' the generated module uses",
                               "rename the network")
        return None
    return None


# The names a spec cannot rebind: the constants (``true = 0`` would change every condition after it).
CONSTANT_NAMES: frozenset[str] = frozenset({"true", "false", "none"})


def binding_problem(name: str, param: bool = False) -> NameProblem | None:
    """None when ``name`` may be bound by ``name = ...`` (or, ``param``, be a block or network parameter).

    The rule is Python's: any identifier that is not a keyword (the grammar refuses those) may be bound, and a
    binding shadows an op, a block or a built-in function of that name for the rest of its block, so a
    built-in added in a later version never breaks a spec. Only the constants are fixed, and a parameter
    cannot be called ``x``: inside a block ``x`` is the block's input, which would hide the parameter.
    """
    if name in CONSTANT_NAMES:
        return NameProblem(f"'{name}' is a constant" + ("" if param else " and cannot be reassigned"),
                           f"choose another name, e.g. '{name}_'")
    if param and name == "x":
        return NameProblem("inside a block 'x' is the block's input, which would hide the parameter",
                           "choose another name, e.g. 'x_'")
    return None


def class_name(net: str) -> str:
    """The generated class's name: ``resnet50`` -> ``Resnet50``; ``vgg16_bn`` -> ``Vgg16Bn``."""
    parts = re.split(r"[^A-Za-z0-9]+", net)
    name = "".join(p[:1].upper() + p[1:] for p in parts if p)
    if not name or not name[0].isalpha():
        name = "Net" + name
    return name
