"""Mergeable per-(neuron, group) distribution sketches on a log-linear float32 grid."""

from __future__ import annotations

from .accumulator import LayerSketch, SketchSpec, update_threads
from .grid import GridSpec
from .summary import Pooled, Summary

__all__ = ["GridSpec", "LayerSketch", "Pooled", "SketchSpec", "Summary", "update_threads"]
