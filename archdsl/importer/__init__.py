"""The importer: a PyTorch model in, a readable ``.arch`` spec out (``archc import``, ``archdsl.import_module``),
and the round trip that proves a spec is its model.

:mod:`.trace` runs fx per module class and finds the batch axis of every value, :mod:`.convert` maps each
call to a registry op through its ``torch_forms``, :mod:`.blocks` makes one block per class with parameters
for the literals that differ, :mod:`.emit` builds the AST that the language's printer writes, :mod:`.plugin`
keeps classes whole as plugin ops, and :mod:`.api` ties them together. :mod:`.roundtrip` (check -> build -> strict load -> equal eval
outputs, constants randomized first) proves the result. torch is imported lazily.
"""
from __future__ import annotations

from .api import TOLERANCE, ImportResult, import_model, import_module, verify
from .plugin import recording_inits
from .roundtrip import STAGES, RoundTrip, randomize_bn, randomize_constants, roundtrip

__all__ = ["TOLERANCE", "ImportResult", "import_model", "import_module", "verify", "recording_inits",
           "RoundTrip", "STAGES", "roundtrip", "randomize_constants", "randomize_bn"]
