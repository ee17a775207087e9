"""The server's access log, kept short: a request's path and the length of its query.

Tornado logs every request that fails (a 404, a 403, a 500) as ``STATUS METHOD URI (IP)
TIME`` with the whole URI, so any client can write a query of tens of kilobytes (a long link,
or garbage) into the log per request, control characters included.
"""

from __future__ import annotations

import logging

__all__ = ["ShortRequests", "install", "short_summary"]

_MOST = 200  # characters of a path kept


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text)


def short_summary(summary: str) -> str:
    """Tornado's ``METHOD URI (IP)`` with at most 200 printable characters of the path, the
    query's length instead of the query, and the address as it was."""
    method, _, rest = summary.partition(" ")
    uri, found, address = rest.rpartition(" (")
    if not found:
        uri, address = rest, ""
    path, has_query, query = uri.partition("?")
    shown = _printable(path[:_MOST]) + ("..." if len(path) > _MOST else "")
    if has_query:
        shown += f"?<query of {len(query)} characters>"
    return f"{_printable(method[:16])} {shown}" + (f" ({_printable(address)}" if found else "")


class ShortRequests(logging.Filter):
    """Shortens the request in each record of Tornado's access log (see the module)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 3 and isinstance(args[1], str):
            record.args = (args[0], short_summary(args[1]), args[2])
        return True


def install() -> None:
    """Add :class:`ShortRequests` to Tornado's access log, once per process."""
    log = logging.getLogger("tornado.access")
    if not any(isinstance(f, ShortRequests) for f in log.filters):
        log.addFilter(ShortRequests())
