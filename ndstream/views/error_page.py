"""What a page shows when something fails: an escaped error page instead of a dashboard that
cannot be built or drawn, and Panel's exception handler, which reports a failed callback in
its own session's page. No traceback and no server folder reach the browser; the details go
to the server log (see :mod:`.reporting`)."""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import panel as pn

from .fragments import error_html
from .reporting import log, public_message

__all__ = ["GuardedLayout", "error_page", "register_session", "report_exception"]

# Each Bokeh document's reporter (its dashboard's), for errors Panel reports without saying
# whose.
_SESSIONS: weakref.WeakKeyDictionary[Any, Callable[[str, BaseException], None]] = (
    weakref.WeakKeyDictionary()
)


def register_session(doc: Any, report: Callable[[str, BaseException], None]) -> None:
    """Let :func:`report_exception` tell the page of Bokeh document ``doc`` what failed, with
    ``report(action, exc)``."""
    _SESSIONS[doc] = report


def report_exception(exc: BaseException) -> None:
    """Panel's ``exception_handler``: log an exception a callback raised, and say so in the
    page of its session; Panel would otherwise pass it on to Bokeh, which sends the traceback
    to the browser.

    Install it with ``pn.extension(exception_handler=report_exception)``.

    Parameters
    ----------
    exc
        What a callback of the current session raised.
    """
    report = _SESSIONS.get(pn.state.curdoc) if pn.state.curdoc is not None else None
    if report is not None:
        report("an action in the page", exc)
    else:
        log.error("ndstream dashboard: a callback failed", exc_info=exc)


def error_page(store: str | os.PathLike[str], exc: BaseException) -> pn.pane.HTML:
    """The page shown instead of the dashboard when it cannot be built, as escaped text: what
    went wrong (no traceback, no folder of the server) and what to do.

    Parameters
    ----------
    store
        The store's path, named by its last part only.
    exc
        What went wrong (see :func:`~ndstream.views.reporting.public_message`).
    """
    name = Path(store).name or str(store)
    return pn.pane.HTML(
        error_html(
            f"ndstream cannot show {name}",
            public_message(exc),
            "Start the dashboard on a store that ndstream ingest wrote, e.g. "
            "ndstream serve stores/digits.zarr. The server log has the details.",
        ),
        css_classes=["nd-error"], sizing_mode="stretch_width",
    )  # fmt: skip


class GuardedLayout(pn.Row):
    """A dashboard's layout, which turns a failure while it is rendered into a Bokeh
    document (the plots draw then) into the error page."""

    def __init__(self, *objects: Any, store: str | os.PathLike[str], **params: Any) -> None:
        super().__init__(*objects, **params)
        self._store = store

    def get_root(self, doc: Any = None, comm: Any = None, preprocess: bool = True) -> Any:
        """The layout's Bokeh model, or the error page's if rendering the layout fails."""
        try:
            return super().get_root(doc, comm, preprocess)
        except Exception as exc:
            log.error("ndstream dashboard of %s: drawing the page failed", self._store,
                      exc_info=exc)  # fmt: skip
            return error_page(self._store, exc).get_root(doc, comm, preprocess)
