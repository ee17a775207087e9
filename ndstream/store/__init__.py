"""Zarr v3 stores of finalized sketches: format, writer and reader.

The reader and :func:`verify` are imported at once; the writer, which needs the sketch
accumulator and so the Numba kernels, on first use of :func:`write_store`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import attach
from .format import FORMAT_VERSION, LayerMeta, StoreMeta
from .reader import Store, open_store
from .verify import StoreReport, verify

if TYPE_CHECKING:
    from .writer import write_store

__all__ = [
    "FORMAT_VERSION",
    "LayerMeta",
    "Store",
    "StoreMeta",
    "StoreReport",
    "open_store",
    "verify",
    "write_store",
]


__getattr__, __dir__ = attach(__name__, {"write_store": ".writer"}, globals(), __all__)
