"""Run work on one background thread, in order, so it overlaps the caller's own work.

Ingest hands each batch's sketch updates to a :class:`SerialWorker` and goes on with the next
forward pass. The Numba kernels release the GIL, so the updates use CPU time the forward pass
leaves idle (and, on a GPU, all of the host's). One thread and a FIFO queue keep the updates
in submission order, so nothing about the result depends on the overlap.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

__all__ = ["SerialWorker"]

_STOP = object()


class SerialWorker:
    """Calls submitted functions one at a time, in order, on a daemon thread.

    Parameters
    ----------
    max_pending
        Submissions that may wait before :meth:`submit` blocks; it bounds the memory held
        by queued arguments (a batch of activations each, in ingest).

    Notes
    -----
    The first exception a job raises is re-raised in the caller by the next :meth:`submit`
    or by :meth:`close`; the jobs queued after it are skipped. Use it as a context manager:
    leaving the block waits for the queued jobs, and if the block itself raised, skips them.
    """

    def __init__(self, max_pending: int = 2) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(max_pending)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="ndstream-worker", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., object], *args: object) -> None:
        """Queue ``fn(*args)``; raises the exception of an earlier job, if one failed."""
        self._raise_pending()
        self._queue.put((fn, args))

    def wait(self) -> None:
        """Block until every job queued so far has run; raise a job's exception if any."""
        done = threading.Event()
        self.submit(done.set)
        while not done.wait(0.1):
            if self._error is not None:
                break  # a job failed: the rest, ours included, is skipped
        self._raise_pending()

    def close(self) -> None:
        """Wait for every queued job, stop the thread, and raise a job's exception if any."""
        self._stop()
        self._raise_pending()

    def _stop(self) -> None:
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()

    def _raise_pending(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _run(self) -> None:
        failed = False
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            if failed:
                continue  # drain, so a blocked submit() can go on to see the error
            fn, args = item
            try:
                fn(*args)
            except BaseException as exc:  # handed to the caller's thread, which re-raises it
                self._error, failed = exc, True

    def __enter__(self) -> SerialWorker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
            return
        # The caller failed: skip what is queued, stop the thread, keep the caller's error.
        self._skip_queued()
        self._stop()

    def _skip_queued(self) -> None:
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return
