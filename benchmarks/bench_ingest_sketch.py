"""End-to-end accumulator: ``ndstream.ingest`` on a sketch-bound workload against numpy.

What is measured
    Wall time of ``ndstream.ingest`` over 200 ready-made batches of [256 rows x 512 neurons]
    float32 (half exact zeros, a lognormal tail whose scale differs per neuron: a ReLU
    layer), with labels 0..9, through a model that is one ``nn.Identity``: every value of
    every batch goes into the sketches (``reduction="none"``), 10 label groups. The model
    costs nothing, so the time is ndstream's own: capture, the sketch updates on the worker
    thread, the final checkpoint (finalize, compress, write a Zarr store into a temporary
    folder, overwritten each repeat) and opening the store. The batches are a plain
    iterable of ``(inputs, targets)`` tuples, which ingest takes as they come: no
    DataLoader, no collation. The group names are given by a grouping on the targets (the
    iterable has no ``classes``; without names ingest would make one group per output).

Baseline (same batches, same run)
    numpy: the log-linear bincount path of ``bench_accumulator.py``: keys of 8 bins per
    octave from the float32 bits, clamped to 2**-24 .. 2**48, an exact-zero bin, negatives
    mirrored, a flat ``(neuron, group, bin)`` index and ``np.bincount`` into an int64 state,
    over the key range the data uses. It keeps no min or max and writes nothing.

Both are warmed up once (ingest compiles its kernels), then timed in interleaved repeats
(ingest, numpy, ingest, numpy ...) with ``time.perf_counter``; medians are printed, with
values per second and the ratio. Thread settings are ingest's own (see ``docs/threads.md``);
``--threads N`` passes ``threads=N`` to ingest. Environment variables such as
``OMP_NUM_THREADS`` act as usual.

Run: ``python benchmarks/bench_ingest_sketch.py [--quick] [--threads N] [--repeats R]``.
The last line is the summary.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import interleaved, median, parse_args, print_table
from _relu_workload import CLASSES, NEURONS, ROWS, NumpyHistogram, make_batches

import ndstream
from ndstream.capture.groupings import custom

# -- ndstream ------------------------------------------------------------------------------


class Batches:
    """The ready-made batches as an iterable of ``(inputs, targets)`` tensors.

    Not a list: ingest would take a list for a map-style dataset of samples and batch it.
    """

    def __init__(self, batches: list[tuple[np.ndarray, np.ndarray]]) -> None:
        self.tensors = [(torch.from_numpy(x), torch.from_numpy(g)) for x, g in batches]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return iter(self.tensors)


def by_target(inputs: Any, targets: torch.Tensor, outputs: Any) -> torch.Tensor:
    return targets


def run_ingest(data: Batches, store: Path, threads: int | None) -> None:
    model = torch.nn.Sequential(torch.nn.Identity())
    ndstream.ingest(
        model,
        data,
        store,
        layers=["0"],
        reduction="none",
        group_by=custom(by_target, [str(c) for c in range(CLASSES)], "label"),
        overwrite=True,
        progress=False,
        checkpoint_seconds=None,
        # Only when asked: without it the script also times code from before the budget.
        **({"threads": threads} if threads is not None else {}),
    )


# -- numpy baseline (_relu_workload.py, as in bench_accumulator.py) --------------------------


def run_numpy(batches: list[tuple[np.ndarray, np.ndarray]]) -> None:
    hist = NumpyHistogram(batches[:1])  # a fresh state per run, as ingest starts afresh
    for x, gids in batches:
        hist.update(x, gids)


# -- main ----------------------------------------------------------------------------------


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=None, help="ingest's threads= budget")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved repeats")


def main() -> None:
    args = parse_args(__doc__, _options)
    n_batches, repeats = (20, 3) if args.quick else (200, 9)
    repeats = args.repeats or repeats
    batches = make_batches(n_batches)
    data = Batches(batches)
    n_values = n_batches * ROWS * NEURONS
    env = {v: os.environ.get(v, "-") for v in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS")}
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "sketch.zarr"
        run_ingest(data, store, args.threads)  # warm-up: compiles the kernels
        run_numpy(batches[:4])
        times = interleaved(
            {
                "ingest": lambda: run_ingest(data, store, args.threads),
                "numpy": lambda: run_numpy(batches),
            },
            repeats,
        )
    print(
        f"{n_batches} batches of [{ROWS} x {NEURONS}] float32, {CLASSES} groups, "
        f"reduction none, one nn.Identity; {os.cpu_count()} CPUs, "
        f"OMP_NUM_THREADS={env['OMP_NUM_THREADS']} NUMBA_NUM_THREADS={env['NUMBA_NUM_THREADS']} "
        f"threads={args.threads}; median of {repeats} interleaved repeats"
    )
    rate = {name: n_values / median(ts) / 1e6 for name, ts in times.items()}
    labels = {"ingest": "ndstream.ingest (end to end)", "numpy": "numpy bincount (m=3 grid)"}
    rows = [
        (
            labels[name],
            f"{median(ts) * 1e3:.0f}",
            f"{min(ts) * 1e3:.0f}",
            f"{max(ts) * 1e3:.0f}",
            f"{rate[name]:.0f}",
            f"{rate['ingest'] / rate[name]:.2f}",
        )
        for name, ts in times.items()
    ]
    print()
    print_table(["candidate", "median ms", "min ms", "max ms", "M values/s", "ingest / this"], rows)
    print()
    print(
        f"ingest sketch: ndstream.ingest {rate['ingest']:.0f} M values/s end to end = "
        f"{rate['ingest'] / rate['numpy']:.1f}x numpy ({rate['numpy']:.0f} M values/s)"
    )


if __name__ == "__main__":
    main()
