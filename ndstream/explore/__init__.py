"""Exploring a store with numpy alone: layer frames, neuron orders and pages.

What the dashboard and the notebooks share below the drawing: a
:class:`~ndstream.explore.frame.LayerFrame` holds what is shown of one layer of a checkpoint,
:mod:`~ndstream.explore.neuron_order` sorts its neurons, and :mod:`~ndstream.explore.pages`
cuts the order into pages. Nothing here imports Panel or HoloViews.
"""

from __future__ import annotations

from .frame import TOOLTIP_QUANTILES, GroupStats, LayerFrame, instance_ids
from .neuron_order import SORTS, SortSpec, describe, item, neuron_order, sort_key
from .pages import SortedLayers, page_of, page_start, shared_frame

__all__ = [
    "SORTS",
    "TOOLTIP_QUANTILES",
    "GroupStats",
    "LayerFrame",
    "SortSpec",
    "SortedLayers",
    "describe",
    "instance_ids",
    "item",
    "neuron_order",
    "page_of",
    "page_start",
    "shared_frame",
    "sort_key",
]
