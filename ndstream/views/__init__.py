"""The view layer: HoloViews elements and the Panel dashboard, shared with notebooks.

This package is the only part of ndstream that imports Panel or HoloViews. Notebooks call
``Store.plot`` (or :func:`activation_panel` on a :func:`layer_page` plan) to draw what the
dashboard draws; :class:`NeuralDivergence` is the dashboard itself.
"""

from __future__ import annotations

import holoviews as hv

from .activation import activation_panel
from .layer_page import LayerPage, composite, layer_page
from .palette import group_colours, instance_colours

# HoloViews 1.23 draws with WebGL by default; where WebGL runs in software (headless or
# remote browsers) that is many times slower than canvas for these few glyphs.
hv.renderer("bokeh").webgl = False

__all__ = [
    "LayerPage",
    "activation_panel",
    "composite",
    "group_colours",
    "instance_colours",
    "layer_page",
]
