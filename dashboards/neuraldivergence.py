"""The NeuralDivergence dashboard over one ndstream store.

    panel serve dashboards/neuraldivergence.py --args stores/digits.zarr

The store path comes from the command line only (``--args``), never from the browser; it
defaults to the demo store. ``ndstream serve STORE`` starts the same app.

A path that is not a store, or any other failure while the page is built, gives an error page
of escaped text, with the details in the server log; an error in a callback is logged and
named in the status line, never sent to the browser as a traceback.
"""

import sys

import panel as pn

from ndstream.views.dashboard import dashboard, report_exception

pn.extension(notifications=False, exception_handler=report_exception)
store = sys.argv[1] if len(sys.argv) > 1 else "stores/digits.zarr"
dashboard(store).servable(title="ndstream · NeuralDivergence")
