"""``ndstream serve``: the dashboard on a local Panel server.

Who can open the page
    The server listens on ``address`` (loopback by default). On any other address, every host
    that can reach it on the port can connect, and :func:`serve` says so on start.

    A browser is served the page and its websocket only under the origins of the address
    served (``address:port``, ``localhost:port``, ``127.0.0.1:port``, ``[::1]:port``) and those
    given as ``origins`` (``--allow-websocket-origin``). Bokeh's ``allow_websocket_origin``
    alone does not do this: since Tornado 6.5 a websocket whose ``Origin`` is the page's own
    host (``Sec-Fetch-Site: same-origin``) never reaches Bokeh's origin check, so a page
    opened as ``http://<any name of this machine>:port/`` drew. :class:`OriginGuard` checks
    the ``Host`` and ``Origin`` headers of every request instead, through Bokeh's
    authentication hook; that also keeps out pages of another site whose name resolves to
    this machine (DNS rebinding). A client other than a browser can send any ``Host``: the
    guard is no access control, and the warning says so.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO
from urllib.parse import urlsplit

import panel as pn
from bokeh.server.auth_provider import AuthProvider
from bokeh.server.util import check_allowlist
from tornado.web import RequestHandler

from ..errors import NdstreamError
from ..sketch.warmup import warm_up
from ..store import open_store
from . import access_log
from .dashboard import check_comparable, dashboard
from .error_page import report_exception

__all__ = ["OriginGuard", "allowed_origins", "exposure_warning", "serve"]

_REFUSED_PATH = "/ndstream-refused"


def _host_port(host: str, port: int) -> str:
    """``host:port`` as a ``Host`` header writes it (IPv6 addresses in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def allowed_origins(address: str, port: int, origins: Sequence[str] = ()) -> list[str]:
    """The ``host:port`` a browser may open the dashboard under.

    Parameters
    ----------
    address, port
        Where the server listens; ``address:port`` is allowed, and so are this machine's
        loopback names on ``port``.
    origins
        More, as ``--allow-websocket-origin`` takes them: ``host[:port]`` (port 80 if left
        out), with ``*`` wildcards as Bokeh allows.
    """
    names = [address, "localhost", "127.0.0.1", "::1"]
    allowed = [_host_port(name, port) for name in names]
    for origin in origins:
        origin = origin.strip().lower()
        if origin:
            allowed.append(origin if _split(origin)[1] is not None or "*" in origin
                           else f"{origin}:80")  # fmt: skip
    return sorted(set(allowed))


def _split(host: str) -> tuple[str, int | None]:
    """``(name, port)`` of a ``Host`` header or an origin's ``host:port``."""
    try:
        parts = urlsplit(f"//{host}")
        return (parts.hostname or "", parts.port)
    except ValueError:  # a malformed port
        return ("", None)


def _allows(host: str, allowed: Sequence[str]) -> bool:
    """Whether ``host`` (a ``Host`` header, or an origin's netloc) is among ``allowed``."""
    host = host.strip().lower()
    if not host:
        return False
    name, port = _split(host)
    if not name:
        return False
    if port is None:
        host = _host_port(name, 80)
    if host in allowed:
        return True
    # Patterns with wildcards, as Bokeh matches them (IPv4 and names only).
    return ":" not in name and check_allowlist(host, [a for a in allowed if "*" in a])


class _Refused(RequestHandler):
    """The answer to a request under an origin that is not allowed: 403, as plain text."""

    def get(self) -> None:
        guard = self.application.auth_provider  # type: ignore[attr-defined]
        self.set_status(403)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.write(
            "ndstream: this dashboard is served only under "
            + ", ".join(f"http://{a}/" for a in guard.allowed)
            + ". To open it under another name, restart `ndstream serve` with "
            "--allow-websocket-origin HOST:PORT.\n"
        )


class OriginGuard(AuthProvider):
    """Bokeh's authentication hook, used to serve browsers only under allowed origins.

    A request whose ``Host`` header, or ``Origin`` header if it has one, is not among
    ``allowed`` (see :func:`allowed_origins`) gets no user: Bokeh then redirects a page to
    ``/ndstream-refused`` (a 403 that says why) and Panel refuses the websocket with 403.

    Parameters
    ----------
    allowed
        ``host:port`` entries, from :func:`allowed_origins`.
    """

    def __init__(self, allowed: Sequence[str]) -> None:
        self.allowed = list(allowed)
        super().__init__()

    @property
    def get_user(self) -> Callable[[Any], Any]:
        """The "user" of a request: ``"browser"`` if its origin is allowed, else ``None``.

        Bokeh and Panel call it with the request handler (Bokeh's annotation says request).
        """

        def user(handler: Any) -> str | None:
            request = handler.request
            if not _allows(request.headers.get("Host", ""), self.allowed):
                return None
            origin = request.headers.get("Origin")
            if origin is not None and not _allows(urlsplit(origin).netloc, self.allowed):
                return None
            return "browser"

        return user

    @property
    def login_url(self) -> str:
        """Where a refused page is sent."""
        return _REFUSED_PATH

    @property
    def login_handler(self) -> type[RequestHandler]:
        """The 403 page of refused requests."""
        return _Refused


def _loopback(address: str) -> bool:
    """Whether ``address`` (an IP or a name) is this machine's loopback only."""
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(address, None)
    except OSError:
        return False
    return bool(infos) and all(
        ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback for info in infos
    )


def exposure_warning(address: str, port: int, origins: Sequence[str] = ()) -> str | None:
    """The warning ``serve`` prints for a non-loopback ``address``, or ``None`` on loopback.

    Parameters
    ----------
    address, port
        Where the server listens.
    origins
        The extra origins allowed (see :func:`allowed_origins`).
    """
    if _loopback(address):
        return None
    try:
        unspecified = ipaddress.ip_address(address).is_unspecified
    except ValueError:
        unspecified = False
    who = (
        f"every host that can reach this machine on port {port}"
        if unspecified
        else f"every host that can reach {address} on port {port}"
    )
    names = ", ".join(allowed_origins(address, port, origins))
    return (
        f"ndstream serve: warning: listening on {address}: {who} can open the dashboard and "
        f"read the store's statistics. Browsers are served only under {names} (add others "
        "with --allow-websocket-origin HOST:PORT), but a client can send any Host header, so "
        "this is no access control. To reach it from another machine, prefer an SSH tunnel "
        f"(ssh -L {port}:localhost:{port} HOST) to listening on a public address."
    )


def serve(
    store: str | os.PathLike[str],
    *,
    compare: str | os.PathLike[str] | None = None,
    port: int = 5006,
    address: str = "127.0.0.1",
    show: bool = False,
    origins: Sequence[str] = (),
    stderr: TextIO | None = None,
) -> None:
    """Serve the NeuralDivergence dashboard for ``store`` until interrupted.

    Parameters
    ----------
    store
        The store to show; the browser cannot choose another.
    compare
        A second store of the same layers, drawn under the first in every row.
    port, address
        Where to listen: localhost by default, so only this machine can connect. Any other
        address prints a warning naming who can reach the page.
    show
        Open a browser tab.
    origins
        Extra ``host:port`` a browser may open the page under (``--allow-websocket-origin``;
        needed behind a proxy, or to open it by another name of this machine). Without them,
        only the address served and this machine's loopback names are served.
    stderr
        Where the warning goes (``sys.stderr`` by default).

    Raises
    ------
    StoreError
        If ``store`` is not an ndstream store (checked before the server starts).
    NdstreamError
        If the server cannot listen on ``address:port``.
    """
    # A bad path, or stores that cannot be drawn together, fail here with a clear message,
    # not in the browser.
    first = open_store(store)
    if compare is not None:
        check_comparable(first, open_store(compare))
    _check_free(address, port)
    # After the refusals: a cold cache would make the first page wait for the queries'
    # compile, in silence.
    warm_up(stream=stderr or sys.stderr, queries=True)
    # Errors in callbacks are logged and shown escaped, not sent to the browser by Bokeh.
    pn.extension(notifications=False, exception_handler=report_exception)
    access_log.install()
    allowed = allowed_origins(address, port, origins)
    warning = exposure_warning(address, port, origins)
    if warning:
        print(warning, file=stderr or sys.stderr, flush=True)
    # A wildcard address is no name to open a page under: this machine's loopback is.
    try:
        host = "127.0.0.1" if ipaddress.ip_address(address).is_unspecified else address
    except ValueError:
        host = address
    url = f"http://{_host_port(host, port)}/"
    what = f"{store} beside {compare}" if compare is not None else f"{store}"
    print(f"ndstream: dashboard of {what} at {url} (Ctrl-C to stop)", flush=True)
    pn.serve(
        lambda: dashboard(store, compare),
        port=port,
        address=address,
        show=show,
        # Bokeh's own check, for cross-origin websockets; it takes no IPv6 addresses.
        allow_websocket_origin=[a for a in allowed if a.count(":") == 1],
        auth_provider=OriginGuard(allowed),
        title="ndstream · NeuralDivergence",
        print_url=False,
    )


def _check_free(address: str, port: int) -> None:
    """Fail with a clear message, before the server starts, if it could not listen."""
    if not 0 < port < 65536:  # bind() raises OverflowError, not OSError, for these
        raise NdstreamError(f"cannot listen on port {port}: pass a --port from 1 to 65535")
    try:
        with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET) as probe:
            probe.bind((address, port))
    except OSError as exc:  # the port is taken, or the address is not this machine's
        raise NdstreamError(
            f"cannot listen on {address}:{port} ({exc.strerror or exc}); pass another --port "
            "or --address"
        ) from exc
