"""Accumulator throughput on one thread: ndstream's LayerSketch.update against numpy and KLL.

What is measured
    Values folded into per-(neuron, class) distributions per second, on batches of
    [256 rows x 512 neurons] float32 with 10 classes: 50 % exact zeros and a lognormal tail
    whose scale differs per neuron (a ReLU layer). 32 distinct batches are generated up front
    and cycled, so the data is not all in cache.

Candidates (all in this run, same data)
    ndstream  ``LayerSketch.update(x, class_ids)`` (Numba kernel), after a warm-up pass that
              compiles the kernel and lets the windows settle.
    numpy     Log-linear grid keys computed from the float32 bits with numpy
              (``(bits & 0x7fffffff) >> (23 - 3)``: 8 bins per octave, clamped to the key
              window of 2**-24 .. 2**48, an exact-zero bin, negatives mirrored), a flat index ``(neuron*G + group)*n_bins + bin`` and
              ``np.bincount(minlength=...)`` added into an int64 state. ``n_bins`` is only the
              key range the data uses, so numpy is not penalised by a large grid. It keeps no
              min/max, which ndstream also tracks.
    KLL       ``datasketches.kll_floats_sketch(200)``, one per (neuron, class), updated with the
              vectorised ``update(ndarray)`` once per (neuron, class) per batch (rows pre-sorted
              by class, inside the timing). It is slow, so it runs on fewer batches.

Timing: ``time.perf_counter``, medians of repeats interleaved ndstream / numpy / KLL so machine
drift hits all of them. ``NUMBA_NUM_THREADS=1``; torch is not involved.

Run: ``python benchmarks/bench_accumulator.py [--quick]``. The last line is the summary.
"""

from __future__ import annotations

import os

os.environ["NUMBA_NUM_THREADS"] = "1"  # before numba is imported
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
from _common import interleaved, median, parse_args, print_table  # noqa: E402
from _relu_workload import (  # noqa: E402
    CLASSES,
    NEURONS,
    ROWS,
    NumpyHistogram,
    make_batches,
)

from ndstream import GridSpec, LayerSketch, SketchSpec  # noqa: E402

# -- ndstream ------------------------------------------------------------------------------


def ndstream_sketch(batches: list[tuple[np.ndarray, np.ndarray]]) -> LayerSketch:
    """A sketch that has already seen every batch once (JIT compiled, windows settled)."""
    sketch = LayerSketch(SketchSpec(NEURONS, tuple(str(c) for c in range(CLASSES)), GridSpec()))
    for x, gids in batches:
        sketch.update(x, gids)
    return sketch


def run_ndstream(sketch: LayerSketch, batches: list[tuple[np.ndarray, np.ndarray]]) -> None:
    for x, gids in batches:
        sketch.update(x, gids)


# -- numpy baseline ------------------------------------------------------------------------


def run_numpy(hist: NumpyHistogram, batches: list[tuple[np.ndarray, np.ndarray]]) -> None:
    for x, gids in batches:
        hist.update(x, gids)


# -- KLL baseline --------------------------------------------------------------------------


def kll_sketches(k: int = 200) -> list[list[object]]:
    from datasketches import kll_floats_sketch

    return [[kll_floats_sketch(k) for _ in range(CLASSES)] for _ in range(NEURONS)]


def run_kll(sketches: list[list[object]], batches: list[tuple[np.ndarray, np.ndarray]]) -> None:
    for x, gids in batches:
        order = np.argsort(gids, kind="stable")
        cols = np.ascontiguousarray(x[order].T)  # [neuron, rows sorted by class]
        bounds = np.searchsorted(gids[order], np.arange(CLASSES + 1))
        for n in range(NEURONS):
            row, per_class = cols[n], sketches[n]
            for c in range(CLASSES):
                lo, hi = bounds[c], bounds[c + 1]
                if hi > lo:
                    per_class[c].update(row[lo:hi])


# -- main ----------------------------------------------------------------------------------


def main() -> None:
    args = parse_args(__doc__)
    n_batches, n_kll_batches, repeats = (8, 1, 3) if args.quick else (32, 4, 9)
    passes = 2 if args.quick else 4  # passes over the batches per ndstream / numpy repeat
    batches = make_batches(n_batches)
    kll_batches = batches[:n_kll_batches]
    values = ROWS * NEURONS

    sketch = ndstream_sketch(batches)  # warm-up: compiles and settles the windows
    hist = NumpyHistogram(batches)
    run_numpy(hist, batches[:2])  # warm-up
    kll = kll_sketches()
    run_kll(kll, kll_batches[:1])  # warm-up

    print(
        f"one thread; batches of [{ROWS} x {NEURONS}] float32, {CLASSES} classes, "
        f"50% zeros + lognormal; {n_batches} distinct batches cycled ({n_kll_batches} for KLL); "
        f"median of {repeats} interleaved repeats"
    )
    print(f"ndstream grid: {GridSpec()}")
    print(
        f"ndstream state: {sketch.nbytes / NEURONS / CLASSES:.0f} B per (neuron, class); "
        f"numpy bins: {hist.n_bins} (used key range at m=3), {hist.state.nbytes / NEURONS / CLASSES:.0f} "
        "B per (neuron, class)"
    )
    times = interleaved(
        {
            "ndstream": lambda: run_ndstream(sketch, batches * passes),
            "numpy": lambda: run_numpy(hist, batches * passes),
            "kll": lambda: run_kll(kll, kll_batches),
        },
        repeats,
    )
    n_values = {"ndstream": values * n_batches * passes, "numpy": values * n_batches * passes}
    n_values["kll"] = values * n_kll_batches
    rate = {name: n_values[name] / median(ts) / 1e6 for name, ts in times.items()}
    labels = {
        "ndstream": "ndstream LayerSketch.update",
        "numpy": "numpy bincount (m=3 grid)",
        "kll": "datasketches KLL k=200",
    }
    rows = [
        (
            labels[name],
            n_values[name] // values,
            f"{median(ts) * 1e3:.1f}",
            f"{min(ts) * 1e3:.1f}",
            f"{rate[name]:.1f}",
            f"{rate['ndstream'] / rate[name]:.2f}",
        )
        for name, ts in times.items()
    ]
    print()
    print_table(
        ["candidate", "batches", "median ms", "min ms", "M values/s", "ndstream / this"], rows
    )
    print()
    print(
        f"accumulator: ndstream {rate['ndstream']:.0f} M values/s = "
        f"{rate['ndstream'] / rate['numpy']:.1f}x numpy, "
        f"{rate['ndstream'] / rate['kll']:.0f}x KLL (one thread)"
    )


if __name__ == "__main__":
    main()
