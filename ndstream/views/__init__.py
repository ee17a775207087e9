"""The view layer: HoloViews elements and the Panel dashboard, shared with notebooks.

This package is the only part of ndstream that imports Panel or HoloViews. Notebooks call
:func:`activation_panel` on a :class:`~ndstream.explore.LayerFrame` to draw what the
dashboard draws; :class:`NeuralDivergence` is the dashboard itself.
"""

from __future__ import annotations

import holoviews as hv

from .activation import activation_panel, composite
from .palette import group_colours, instance_colours

# HoloViews 1.23 draws with WebGL by default; where WebGL runs in software (headless or
# remote browsers) that is many times slower than canvas for these few glyphs.
hv.renderer("bokeh").webgl = False

__all__ = ["activation_panel", "composite", "group_colours", "instance_colours"]
