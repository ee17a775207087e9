"""The NeuralDivergence dashboard over one ndstream store.

    panel serve dashboards/neuraldivergence.py --args stores/digits.zarr
    panel serve dashboards/neuraldivergence.py --args stores/digits.zarr stores/digits-one-epoch.zarr

The store paths come from the command line only (``--args``), never from the browser; the
first defaults to the demo store, and a second one is drawn beside it in every neuron's row.
``ndstream serve STORE [--compare STORE_B]`` starts the same app.

A path that is not a store, or any other failure while the page is built, gives an error page
of escaped text, with the details in the server log; an error in a callback is logged and
named in the status line, never sent to the browser as a traceback. The server's log keeps a
failed request's path and the length of its query, not the query.
"""

import sys

import panel as pn

from ndstream.views import access_log
from ndstream.views.dashboard import dashboard
from ndstream.views.error_page import report_exception

pn.extension(notifications=False, exception_handler=report_exception)
access_log.install()  # from the first session on: Tornado logs a failed request's whole URI
store = sys.argv[1] if len(sys.argv) > 1 else "stores/digits.zarr"
compare = sys.argv[2] if len(sys.argv) > 2 else None
dashboard(store, compare).servable(title="ndstream · NeuralDivergence")
