"""The NeuralDivergence dashboard over one ndstream store.

    panel serve dashboards/neuraldivergence.py --args stores/digits.zarr

The store path comes from the command line only (``--args``), never from the browser; it
defaults to the demo store. ``ndstream serve STORE`` starts the same app.
"""

import sys

import panel as pn

from ndstream.views.dashboard import dashboard

pn.extension(notifications=False)
store = sys.argv[1] if len(sys.argv) > 1 else "stores/digits.zarr"
dashboard(store).servable(title="ndstream · NeuralDivergence")
