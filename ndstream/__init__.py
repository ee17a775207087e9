"""ndstream: compare activation distributions across layers, classes and instances.

Stream a dataset through a PyTorch model, keep a mergeable sketch of every
(layer, neuron, group) activation distribution in a Zarr store, and read it back::

    import ndstream
    store = ndstream.ingest(model, loader, "run.zarr", layers="type:Conv2d,Linear")
    store.quantile("features.28", [0.25, 0.5, 0.75], group="cat")

The public names are imported on first use (PEP 562), so that ``import ndstream``, the
command line's ``--help`` and reading a store pay for neither torch nor Numba: only
:func:`ingest`, :class:`ActivationCapture`, the groupings and the sketches need them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import attach
from ._version import __version__
from .errors import (
    CaptureError,
    CaptureWarning,
    ConfigError,
    GroupNotFoundError,
    LayerNotFoundError,
    NdstreamError,
    SpecMismatchError,
    StoreDamageError,
    StoreDamageWarning,
    StoreError,
)

if TYPE_CHECKING:
    from .capture.groupings import Grouping, custom
    from .capture.hooks import ActivationCapture
    from .capture.selection import resolve_layers
    from .ingestion.run import ingest
    from .sketch import GridSpec, LayerSketch, RankBounds, SketchSpec, Summary
    from .store import Store, StoreReport, open_store, verify
    from .store.instances import InstanceSpec, InstanceTable

__all__ = [
    "ActivationCapture",
    "CaptureError",
    "CaptureWarning",
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

#: Where each lazily imported public name lives (relative to this package).
_LAZY = {
    "ActivationCapture": ".capture",
    "resolve_layers": ".capture",
    "Grouping": ".capture.groupings",
    "custom": ".capture.groupings",
    "ingest": ".ingestion.run",
    "InstanceSpec": ".store.instances",
    "InstanceTable": ".store.instances",
    "GridSpec": ".sketch",
    "LayerSketch": ".sketch",
    "RankBounds": ".sketch",
    "SketchSpec": ".sketch",
    "Summary": ".sketch",
    "Store": ".store",
    "StoreReport": ".store",
    "open_store": ".store",
    "verify": ".store",
}


__getattr__, __dir__ = attach(__name__, _LAZY, globals(), __all__)
