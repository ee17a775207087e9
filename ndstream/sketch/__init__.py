"""Mergeable per-(neuron, group) distribution sketches on a log-linear float32 grid.

The grid and the finalized :class:`Summary` are plain NumPy and imported at once; the
accumulator (:class:`LayerSketch`, :class:`SketchSpec`), which needs the Numba kernels, is
imported on first use, so that reading a store does not import or compile them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import attach
from .atoms import atom_candidates
from .grid import GridSpec
from .summary import POOLED_GROUP, Pooled, RankBounds, Summary

if TYPE_CHECKING:
    from .accumulator import LayerSketch, SketchSpec, update_threads

__all__ = [
    "POOLED_GROUP",
    "GridSpec",
    "LayerSketch",
    "Pooled",
    "RankBounds",
    "SketchSpec",
    "Summary",
    "atom_candidates",
    "update_threads",
]

_LAZY = {
    "LayerSketch": ".accumulator",
    "SketchSpec": ".accumulator",
    "update_threads": ".accumulator",
}


__getattr__, __dir__ = attach(__name__, _LAZY, globals(), __all__)
