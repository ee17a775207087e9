"""Compile the sketch kernels before an ingest starts (and the query kernels before
``ndstream serve`` serves), and say so: it takes a while.

The Numba kernels (``ndstream.sketch._kernels``) are compiled on their first call and cached
on disk (``cache=True``): in ``__pycache__`` beside the source, or under ``NUMBA_CACHE_DIR``.
A warm cache loads in a fraction of a second; a cold one (a fresh environment, another CPU, or
a changed kernel source) costs about a second per kernel. Left to the ingest, that compile
happened in silence: the progress bar counted the first batches at once, then stalled.

:func:`warm_up` looks at the cache first. Warm, it does nothing (the ingest loads each kernel
at its first call). Cold, it says so, compiles the kernels by running a tiny sketch through
the ingest's paths (exact form, the fold onto the grid, moving windows, merging, finalizing)
and says how long that took. The compile runs in a child process (``python -m
ndstream.sketch.warmup``) that fills the cache, so that this process does not launch Numba's
threads: an ingest chooses their threading layer and number, which are fixed at the launch.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import numpy as np

__all__ = ["INGEST_KERNELS", "QUERY_KERNELS", "KernelCache", "kernel_cache", "warm_up"]

#: The kernels an ingest calls (their helpers are compiled into them; the span kernels only
#: under a token mask), which :func:`warm_up` loads or compiles; a test checks that this is what it calls. The query kernels (quantiles,
#: ranks, re-binning) are not among them: an ingest never runs a query.
INGEST_KERNELS = (
    "add_pages", "assign_pages", "batch_key_ranges", "bin_edges", "densify", "exact_axes",
    "exact_codes", "exact_counts", "exact_edges", "fold_min_max", "move_windows",
    "new_pages_needed", "occupied_key_ranges", "plan_groups", "span_maxima", "span_sums",
    "undensify", "update_counts", "widest_ranges",
)  # fmt: skip

#: The kernels that reading a store calls (the dashboard, ``ndstream info``, the read API):
#: quantiles, ranks and their bounds, re-binning and the contrasts, which ``python -m
#: ndstream.sketch.warmup queries`` compiles (see :func:`_exercise_queries`).
QUERY_KERNELS = (
    "contrast_curves", "quantile_ranges", "quantiles", "rank_bounds", "ranks", "rebin",
    "widest_bins",
)  # fmt: skip

#: Seconds per kernel of a cold compile of the :data:`INGEST_KERNELS` on the 2-core
#: development machine (14 s for all 17, 2026-12-05): the estimate announced beforehand.
SECONDS_PER_KERNEL = 0.8


@dataclass(frozen=True)
class KernelCache:
    """What the on-disk cache holds for this machine's CPU.

    Attributes
    ----------
    cached
        Names of the kernels with a compiled version for this CPU in the cache.
    cold
        Names of the kernels without one: they will be compiled on first call.
    known
        Whether the cache could be inspected at all (it relies on Numba internals; when it
        cannot, every kernel is counted as ``cold``).
    """

    cached: tuple[str, ...]
    cold: tuple[str, ...]
    known: bool = True

    @property
    def is_cold(self) -> bool:
        """Whether any kernel must be compiled."""
        return bool(self.cold)


def kernel_cache(names: Sequence[str] = INGEST_KERNELS) -> KernelCache:
    """Inspect Numba's on-disk cache of the sketch kernels, without compiling anything.

    A kernel counts as cached when its index file holds an entry for the current source
    (Numba drops the index of a changed source file) and for this CPU and its features.

    Parameters
    ----------
    names
        The kernels to look up (functions of ``ndstream.sketch._kernels``).

    Returns
    -------
    KernelCache
        The cached and the cold kernels among ``names``.
    """
    from . import _kernels

    cached: list[str] = []
    cold: list[str] = []
    try:
        for name in names:
            (cached if _has_entry(getattr(_kernels, name)) else cold).append(name)
    except Exception:  # Numba internals moved: claim nothing that cannot be backed
        return KernelCache((), tuple(names), known=False)
    return KernelCache(tuple(cached), tuple(cold))


def _has_entry(dispatcher: Any) -> bool:
    """Whether ``dispatcher``'s cache index holds a version compiled for this CPU."""
    cache = dispatcher._cache
    index = cache._cache_file._load_index()  # {} when missing, stale or of another Numba
    magic = dispatcher.targetctx.codegen().magic_tuple()  # (triple, CPU name, features)
    return any(key[1] == magic for key in index)


def warm_up(*, stream: TextIO | None = None, queries: bool = False) -> float:
    """Compile the kernels an ingest calls if the cache lacks them, reporting on ``stream``.

    When the cache is cold, one line before (with an estimate) and one after (the time it
    took) go to ``stream``; with a warm cache nothing is done and nothing is said.

    Parameters
    ----------
    stream
        Where to report a compile; ``None`` (the default) reports nothing, e.g. under
        ``--quiet``.
    queries
        Compile the kernels that reading a store calls (:data:`QUERY_KERNELS`) instead:
        ``ndstream serve`` does, so that the first page is not the one that waits.

    Returns
    -------
    float
        Seconds spent compiling (0 with a warm cache).
    """
    names, user = (QUERY_KERNELS, "the first page") if queries else (INGEST_KERNELS, "the ingest")
    state = kernel_cache(names)
    if not state.is_cold:
        return 0.0
    start = time.perf_counter()
    if stream is not None:
        estimate = max(1, round(len(state.cold) * SECONDS_PER_KERNEL))
        what = "first run on this machine" if state.known else "their cache could not be read"
        kind = "query" if queries else "sketch"
        print(f"ndstream: compiling the {kind} kernels ({what}, about {estimate} s)…",
              file=stream, flush=True)  # fmt: skip
    child = subprocess.run(
        [sys.executable, "-m", __name__, *(["queries"] if queries else [])],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    took = time.perf_counter() - start
    if stream is not None:
        if child.returncode != 0:
            last = (child.stderr.strip().splitlines() or ["no message"])[-1]
            print(f"ndstream: compiling the kernels apart failed ({last}); {user} "
                  "compiles them as it goes", file=stream, flush=True)  # fmt: skip
        elif kernel_cache(names).is_cold:
            print(f"ndstream: compiled in {took:.1f} s, but Numba could not cache them (set "
                  f"NUMBA_CACHE_DIR to a writable folder); {user} compiles them again",
                  file=stream, flush=True)  # fmt: skip
        else:
            print(f"ndstream: compiled in {took:.1f} s; later runs load them from the cache",
                  file=stream, flush=True)  # fmt: skip
    return took


def _exercise() -> None:
    """Call the kernels an ingest calls, with the argument types an ingest passes."""
    from . import _kernels
    from .accumulator import LayerSketch, SketchSpec
    from .grid import GridSpec

    rng = np.random.default_rng(0)
    groups, groupings = ("a", "b", "x", "y"), ("g", "g", "h", "h")
    # The values kept exactly are few here, so that little data takes the grid's paths too:
    # the argument types, which decide what is compiled, are those of any grid.
    tiny = GridSpec(exact_values=32)

    def batches(n: int, scale: float) -> Iterable[tuple[np.ndarray, np.ndarray]]:
        # As ingest passes them: float32 activations, int64 group ids [rows, groupings].
        for _ in range(n):
            x = (rng.standard_normal((64, 8)) * scale).astype(np.float32)
            x[::7] = 0.0  # exact zeros, as after a ReLU
            x[3, 0], x[5, 1], x[6, 2] = np.nan, np.inf, -np.inf
            gids = np.stack([rng.integers(0, 2, 64), rng.integers(2, 4, 64)], axis=1)
            yield x, gids.astype(np.int64)

    exact = LayerSketch(SketchSpec(8, groups, groupings=groupings))  # kept exactly
    for x, gids in batches(1, 1.0):
        exact.update(x, gids)
    spec = SketchSpec(8, groups, tiny, groupings)
    grid = LayerSketch(spec)  # folded onto the grid, then its windows moved
    for x, gids in [*batches(2, 1.0), *batches(1, 1e6)]:
        grid.update(x, gids)
    for sketch in (exact, grid, exact.merge(exact), grid.merge(grid)):
        summary = sketch.finalize()
        sketch.pooled_summary()
        # The writer's rank bounds: by the kernel for the layers too large for NumPy.
        zero_bin = np.argmax((summary.lower == 0) & (summary.upper == 0), axis=1)
        fine = np.asarray(summary.resolution) >= 23
        _kernels.widest_ranges(
            summary.counts, summary.lower, summary.upper, zero_bin, fine, summary.mins,
            summary.maxs, summary.min_count, summary.max_count,
        )  # fmt: skip
        # A resumed run rebuilds its sketches from the stored summaries.
        LayerSketch.from_summary(summary, sketch.spec, sketch.pooled_summary())
    # Capture's masked max and mean: [batch, tokens, neurons] float32, each sample's run.
    tokens = rng.standard_normal((2, 3, 4)).astype(np.float32)
    starts, stops = np.array([0, 1], dtype=np.int64), np.array([3, 2], dtype=np.int64)
    _kernels.span_maxima(tokens, starts, stops, np.empty((2, 4), dtype=np.float32))
    _kernels.span_sums(tokens, starts, stops, np.empty((2, 4), dtype=np.float64))


def _exercise_queries() -> None:
    """Call the kernels that reading a store calls, with the argument types a store gives.

    Distributions made from values, not from a sketch: a server compiles none of the update's
    kernels. ``refine`` needs a sketch's fine counts, and compiles on its first use."""
    from .contrast import METRICS, contrast
    from .summary import Pooled

    rng = np.random.default_rng(0)
    a, b = (Pooled.from_values(rng.lognormal(0.0, 1.0, (64, 4))) for _ in range(2))
    a.quantile([0.1, 0.5, 0.9], bounds=True)
    a.cdf(np.ones((4, 2)), bounds=True)
    a.rank_bound()
    a.histogram(np.linspace(0.0, 8.0, 9))
    for metric in METRICS:
        contrast(a, b, metric)


if __name__ == "__main__":  # the child of warm_up: compile, filling the cache, and exit
    _exercise_queries() if sys.argv[1:] == ["queries"] else _exercise()
