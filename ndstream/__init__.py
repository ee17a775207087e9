"""ndstream: compare activation distributions across layers, classes and instances.

Stream a dataset through a PyTorch model, keep a mergeable sketch of every
(layer, neuron, group) activation distribution in a Zarr store, and read it back::

    import ndstream
    store = ndstream.ingest(model, loader, "run.zarr", layers="type:Conv2d,Linear")
    store.quantile("features.28", [0.25, 0.5, 0.75], group="cat")
"""

from __future__ import annotations

from ._version import __version__
from .capture import ActivationCapture, resolve_layers
from .errors import (
    CaptureError,
    ConfigError,
    GroupNotFoundError,
    LayerNotFoundError,
    NdstreamError,
    SpecMismatchError,
    StoreDamageError,
    StoreDamageWarning,
    StoreError,
)
from .groups import Grouping, custom
from .ingest import ingest
from .instances import InstanceSpec, InstanceTable
from .sketch import GridSpec, LayerSketch, RankBounds, SketchSpec, Summary
from .store import Store, StoreReport, open_store, verify

__all__ = [
    "ActivationCapture",
    "CaptureError",
    "ConfigError",
    "GridSpec",
    "GroupNotFoundError",
    "Grouping",
    "InstanceSpec",
    "InstanceTable",
    "LayerNotFoundError",
    "LayerSketch",
    "NdstreamError",
    "RankBounds",
    "SketchSpec",
    "SpecMismatchError",
    "Store",
    "StoreDamageError",
    "StoreDamageWarning",
    "StoreError",
    "StoreReport",
    "Summary",
    "__version__",
    "custom",
    "ingest",
    "open_store",
    "resolve_layers",
    "verify",
]
