"""Mergeable per-(neuron, group) distribution sketches on a log-linear float32 grid."""

from __future__ import annotations

from .accumulator import POOLED_GROUP, LayerSketch, SketchSpec, update_threads
from .grid import GridSpec
from .summary import Pooled, RankBounds, Summary

__all__ = [
    "POOLED_GROUP",
    "GridSpec",
    "LayerSketch",
    "Pooled",
    "RankBounds",
    "SketchSpec",
    "Summary",
    "update_threads",
]
