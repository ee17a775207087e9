"""Zarr v3 stores of finalized sketches: format, writer and reader."""

from __future__ import annotations

from .format import FORMAT_VERSION, LayerMeta, StoreMeta
from .reader import Store, open_store
from .verify import StoreReport, verify
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
