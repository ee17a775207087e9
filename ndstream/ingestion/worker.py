"""Run work on one background thread, in order, so it overlaps the caller's own work.

Ingest hands each batch's sketch updates to a :class:`SerialWorker` and goes on with the next
forward pass. The Numba kernels release the GIL, so the updates use CPU time the forward pass
leaves idle (and, on a GPU, all of the host's). One thread and a FIFO queue keep the updates
in submission order, so nothing about the result depends on the overlap.

:class:`ThreadBudget` says how many threads the forward pass, those updates and the store
writer get, so that torch's OpenMP team, Numba's threads and the worker do not compete for
the same cores (see ``docs/threads.md``).
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from ..errors import ConfigError

__all__ = ["SerialWorker", "ThreadBudget", "available_cores", "calling_thread_budget"]

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


# -- the thread budget of an ingest -----------------------------------------------------------


#: Parameters below which a model counts as light: its run is bound by the sketch, not by
#: its forward pass (the digits CNN has 38 thousand; MobileNetV3-small 2.5 million).
LIGHT_MODEL = 1_000_000


@dataclass(frozen=True)
class ThreadBudget:
    """How many threads each part of an ingest gets.

    Parameters
    ----------
    forward
        torch's intra-op threads for the forward passes (``torch.set_num_threads``).
    sketch
        Numba threads of the sketch updates, on ingest's worker thread.
    write
        Threads that compress and write a checkpoint's files (the forward passes and the
        updates are paused meanwhile).
    """

    forward: int
    sketch: int
    write: int

    def __post_init__(self) -> None:
        for name in ("forward", "sketch", "write"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"threads.{name} must be a positive integer, got {value!r}")

    @classmethod
    def default(
        cls,
        device_type: str,
        cores: int | None = None,
        forward: int | None = None,
        parameters: int = 0,
    ) -> ThreadBudget:
        """The budget for a model of ``parameters`` parameters on ``device_type`` with
        ``cores`` cores (default: this process's).

        The sketch worker gets an eighth of the cores on a CPU, from 1 to 8 (a layer's
        update runs on blocks of 32 neurons, and its serial parts do not scale), and all
        but one, up to 16, beside a GPU, whose host threads only feed it. A light model on a
        CPU (fewer than :data:`LIGHT_MODEL` parameters), whose run is bound by the sketch,
        gives its forward pass the other cores (at least one), so that torch's OpenMP team
        never waits on the worker's core; a heavier one, whose forward pass is the run, and
        a model beside a GPU keep the caller's ``torch.get_num_threads()``. ``forward``
        fixes it instead. The budget depends on the cores and the model alone, never on
        timings: the last bits of a matrix product depend on its thread count, and a resume
        must compute those of the run it resumes. Checkpoints pause the forward passes and
        the updates, so the writer gets every core.
        """
        n = cores if cores is not None else available_cores()
        sketch = min(8, max(1, n // 8)) if device_type == "cpu" else max(1, min(16, n - 1))
        if forward is None:
            if device_type == "cpu" and parameters < LIGHT_MODEL:
                forward = max(1, n - sketch)
            else:
                import torch  # here: this module is imported without torch

                forward = torch.get_num_threads()
        return cls(forward=forward, sketch=sketch, write=n)

    @classmethod
    def resolve(
        cls,
        threads: int | Mapping[str, int | None] | ThreadBudget | None,
        device_type: str,
        parameters: int = 0,
    ) -> ThreadBudget:
        """The budget ``threads`` asks for: ``None`` for the default, a number of cores to
        split between the sketch (as the default) and the forward pass (the rest), a mapping of some of ``forward``, ``sketch`` and
        ``write`` (the rest as the default), or a budget.

        Raises
        ------
        ConfigError
            If a count is not a positive integer, or the mapping has another key.
        """
        if isinstance(threads, ThreadBudget):
            return threads
        if threads is None:
            return cls.default(device_type, parameters=parameters)
        if isinstance(threads, bool) or not isinstance(threads, int | Mapping):
            raise ConfigError(
                "threads must be a number of cores, or a mapping of forward, sketch and "
                f"write thread counts; got {threads!r}"
            )
        if isinstance(threads, int):
            if threads < 1:
                raise ConfigError(f"threads must be a positive number of cores, got {threads}")
            # Cores given outright: none of them runs two busy threads (see the docs).
            split = cls.default(device_type, threads, forward=1)
            return cls(forward=max(1, threads - split.sketch), sketch=split.sketch, write=threads)
        unknown = set(threads) - {"forward", "sketch", "write"}
        if unknown:
            raise ConfigError(
                f"threads has unknown keys {sorted(unknown)}; it takes forward, sketch and write"
            )
        base = cls.default(device_type, parameters=parameters)
        given = {k: v for k, v in threads.items() if v is not None}
        return cls(
            forward=given.get("forward", base.forward),
            sketch=given.get("sketch", base.sketch),
            write=given.get("write", base.write),
        )


def available_cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


@contextlib.contextmanager
def calling_thread_budget(budget: ThreadBudget) -> Iterator[None]:
    """Apply ``budget`` to the calling thread (torch intra-op threads, Numba threads, the
    writer's pool) for the block, and restore the caller's settings after it, also on error.
    """
    # Imported here: torch and Numba are heavy, and this module is imported without them.
    import torch

    from ..sketch import update_threads
    from ..store.writer import write_threads

    numba_before = _numba_threads()
    torch_before = torch.get_num_threads()
    token = write_threads.set(budget.write)
    try:
        torch.set_num_threads(budget.forward)
        yield
    finally:
        write_threads.reset(token)
        torch.set_num_threads(torch_before)
        if numba_before is not None:
            update_threads(numba_before)


def _numba_threads() -> int | None:
    import numba

    try:
        return int(numba.get_num_threads())
    except Exception:  # pragma: no cover - a Numba without a threading layer
        return None
