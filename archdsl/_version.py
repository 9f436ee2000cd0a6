"""The package and language versions, in a leaf module so that any stage can read them without importing
the package.

``__version__`` is the archdsl package (the compiler, the Python API). ``LANGUAGE_VERSION`` is the ``.arch``
language: ``MAJOR.MINOR``. A minor version adds forms (new ops, built-ins, syntax) and may deprecate one (a
warning that names the new spelling); only a major version may refuse a form, and only one that was deprecated
for at least one minor version. Every spec written against an earlier version keeps building with the same
state_dict keys, shapes and outputs (docs/compat.md; tests/compat/ holds the corpus that proves it).
CHANGELOG.md records every change of either version.
"""
__all__ = ["__version__", "LANGUAGE_VERSION"]
__version__ = "0.1.0"
LANGUAGE_VERSION = "1.0"
