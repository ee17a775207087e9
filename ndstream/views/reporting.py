"""What the dashboard tells a browser when something fails, and what it keeps for the server log.

A page is seen by whoever can open it, so an error shows there as a short text, escaped by the
fragment that shows it, with no traceback and no folder of the server: :func:`public_message`
gives that text and :func:`redact_paths` cuts absolute paths down to their last part. The
details (the exception with its traceback) go to the server log through the ``logging`` logger
``ndstream.views``.
"""

from __future__ import annotations

import logging
import re

from ..errors import NdstreamError

__all__ = ["log", "public_message", "redact_paths"]

log = logging.getLogger("ndstream.views")

# An absolute path's folders: POSIX (/a/b/) or Windows (C:\a\b\), not inside a word or a URL.
_FOLDERS = re.compile(r"""(?<![\w.:/\\~-])(?:/|[A-Za-z]:\\)(?:[^\s/\\'"<>`]+[/\\])+""")
_LONGEST = 400  # characters of a message shown in a page


def redact_paths(text: str) -> str:
    """``text`` with the folders of every absolute path left out.

    Parameters
    ----------
    text
        A message; ``/srv/x/run.zarr`` in it becomes ``run.zarr``, ``C:\\x\\run.zarr`` too.
    """
    return _FOLDERS.sub("", text)


def public_message(exc: BaseException) -> str:
    """What a page may say about ``exc``: plain text, to be escaped where it is shown.

    Parameters
    ----------
    exc
        The exception to describe.

    ndstream's own errors and the operating system's say what went wrong in words meant for
    the user; their paths are cut to the last part. Any other exception is a bug or a
    surprise whose text may hold anything, so only its type is named.
    """
    if isinstance(exc, NdstreamError | OSError):
        text = redact_paths(str(exc)) or type(exc).__name__
    else:
        text = f"an unexpected {type(exc).__name__}"
    return text if len(text) <= _LONGEST else text[: _LONGEST - 1] + "…"
