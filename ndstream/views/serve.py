"""``ndstream serve``: the dashboard on a local Panel server."""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence

import panel as pn

from ..errors import NdstreamError
from ..store import open_store
from .dashboard import dashboard

__all__ = ["serve"]


def serve(
    store: str | os.PathLike[str],
    *,
    port: int = 5006,
    address: str = "127.0.0.1",
    show: bool = False,
    origins: Sequence[str] = (),
) -> None:
    """Serve the NeuralDivergence dashboard for ``store`` until interrupted.

    Parameters
    ----------
    store
        The store to show; the browser cannot choose another.
    port, address
        Where to listen: localhost by default, so only this machine can connect.
    show
        Open a browser tab.
    origins
        Extra ``host:port`` origins allowed to open the websocket (needed behind a proxy or
        when listening on another address).

    Raises
    ------
    StoreError
        If ``store`` is not an ndstream store (checked before the server starts).
    NdstreamError
        If the server cannot listen on ``address:port``.
    """
    open_store(store)  # a bad path fails here, with a clear message, not in the browser
    pn.extension(notifications=False)
    allowed = [f"{address}:{port}", f"localhost:{port}", f"127.0.0.1:{port}", *origins]
    _check_free(address, port)
    print(f"ndstream: dashboard of {store} at http://{address}:{port}/ (Ctrl-C to stop)")
    pn.serve(
        lambda: dashboard(store),
        port=port,
        address=address,
        show=show,
        allow_websocket_origin=sorted(set(allowed)),
        title="ndstream · NeuralDivergence",
        print_url=False,
    )


def _check_free(address: str, port: int) -> None:
    """Fail with a clear message, before the server starts, if it could not listen."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET) as probe:
            probe.bind((address, port))
    except OSError as exc:  # the port is taken, or the address is not this machine's
        raise NdstreamError(
            f"cannot listen on {address}:{port} ({exc.strerror or exc}); pass another --port "
            "or --address"
        ) from exc
