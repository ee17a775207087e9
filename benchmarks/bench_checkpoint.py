"""Checkpoint overhead: what committing checkpoints during an ingest costs.

What is measured
    Wall time of an ingest that commits only its final checkpoint (``checkpoint_every=None,
    checkpoint_seconds=None``) against the same ingest committing a checkpoint every few
    steps, on two workloads:

    * digits: the demo config ``configs/digits.yaml`` (the digits CNN over all 1,797 images,
      7 layers, 22 groups), run in-process with ``ndstream.ingestion.from_config.run_config`` with
      ``loader.batch_size`` 64 (29 steps), final-only against ``checkpoint.every_steps: 1``;
    * VGG16: torchvision's ``vgg16(weights=None)`` over random 32x32 images with labels 0..9
      (1,024 images, ``--quick`` 256; the dataset and model of
      ``bench_ingest_overhead.py``), batch 64, every Conv2d and Linear layer (16), reduction
      max, 10 label groups, with ``ndstream.ingest``; final-only against a checkpoint every
      4 steps (every 2 with ``--quick``).

    Each store goes to a temporary folder, overwritten each repeat. After one warm-up run
    (numba compilation, weights cache), the two variants are timed in interleaved repeats
    (final-only, frequent, final-only, frequent ...; 3 each, 2 with ``--quick``) with
    ``time.perf_counter``; medians are reported. The cost of one checkpoint is
    ``(t_frequent - t_final_only) / n``, with ``n`` the intermediate checkpoints of the
    frequent run (counted, see below). It includes everything a checkpoint does to the run:
    folding in the activations still pending (so sketch updates get smaller batches), the
    merge, writing the snapshot with its fsyncs and the atomic commit.

    ``ndstream.ingest``'s ``write_checkpoint`` is wrapped with a timer during the timed runs
    (about a microsecond per call), which counts the checkpoints and measures the write of
    one directly: the median over the intermediate writes of the frequent runs.

    The overhead at the default interval is one checkpoint's cost per interval of ingest,
    ``cost / (interval + cost)``, from the A/B cost (and, in the table, from the direct write
    time). The default interval is ``checkpoint.every_seconds: 120``, stretched by ingest to
    50 times the last checkpoint's cost when that is longer (checkpoints of a large store).

Run: ``python benchmarks/bench_checkpoint.py [--quick] [--images N] [--repeats R]``. The last
line is the summary.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from _common import interleaved, median, parse_args, print_table
from bench_ingest_overhead import BATCH, LAYERS, make_loader, make_model

import ndstream
from ndstream.config import load_config
from ndstream.ingestion.from_config import run_config
from ndstream.ingestion.run import CheckpointClock

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "digits.yaml"
DEFAULT_SECONDS = 120.0


def default_interval(cost: float) -> float:
    """The time-based interval ingest uses by default after a checkpoint that took ``cost``:
    120 s, stretched so that checkpoints take at most ``CheckpointClock.overhead`` of a run."""
    return max(DEFAULT_SECONDS, cost / CheckpointClock.overhead)


def overhead(cost: float) -> float:
    """Share of ingest time spent on checkpoints at the default interval."""
    return cost / (default_interval(cost) + cost)


DIGITS_BATCH = 64


class WriteTimer:
    """Wraps ``write_checkpoint`` as ``ndstream.ingest`` calls it, timing every call."""

    def __init__(self) -> None:
        self.module = sys.modules["ndstream.ingestion.run"]
        self.original = self.module.write_checkpoint
        self.calls: list[tuple[bool, float]] = []  # (final, seconds)

    def _timed(self, path: Path, meta: Any, *args: Any) -> Any:
        start = time.perf_counter()
        try:
            return self.original(path, meta, *args)
        finally:
            self.calls.append((bool(meta.complete), time.perf_counter() - start))

    def __enter__(self) -> WriteTimer:
        self.module.write_checkpoint = self._timed
        return self

    def __exit__(self, *exc: object) -> None:
        self.module.write_checkpoint = self.original

    def take(self) -> list[tuple[bool, float]]:
        calls, self.calls = self.calls, []
        return calls


@dataclass
class Result:
    """The timed runs of one workload."""

    name: str
    describe: str
    times: dict[str, list[float]] = field(default_factory=dict)
    intermediate: list[int] = field(default_factory=list)  # per frequent run
    writes: list[float] = field(default_factory=list)  # seconds, intermediate writes
    final_writes: list[float] = field(default_factory=list)  # seconds, final commits

    @property
    def n_checkpoints(self) -> int:
        return round(median(self.intermediate))

    @property
    def per_checkpoint(self) -> float:
        """Seconds one checkpoint adds to the run (A/B difference per checkpoint)."""
        return (median(self.times["frequent"]) - median(self.times["final only"])) / max(
            self.n_checkpoints, 1
        )

    @property
    def one_write(self) -> float:
        return median(self.writes)


def measure(
    name: str, describe: str, final_only: Callable[[], object], frequent: Callable[[], object],
    repeats: int,
) -> Result:  # fmt: skip
    """Warm up, then time the two variants interleaved, counting and timing the writes."""
    result = Result(name, describe)
    final_only()  # warm-up: numba compilation, weights cache, file system
    with WriteTimer() as timer:

        def timed_final_only() -> None:
            timer.take()
            final_only()
            result.final_writes += [s for final, s in timer.take() if final]

        def timed_frequent() -> None:
            timer.take()
            frequent()
            calls = timer.take()
            result.intermediate.append(sum(not final for final, _ in calls))
            result.writes += [s for final, s in calls if not final]

        result.times = interleaved(
            {"final only": timed_final_only, "frequent": timed_frequent}, repeats
        )
    return result


def digits(tmp: Path, repeats: int) -> Result:
    store = str(tmp / "digits.zarr")
    loader = {"batch_size": DIGITS_BATCH}

    def run(every_steps: int | None) -> None:
        cfg = load_config(
            CONFIG, store=store, loader=loader,
            checkpoint={"every_steps": every_steps, "every_seconds": None},
        )  # fmt: skip
        run_config(cfg, overwrite=True, progress=False)

    return measure(
        "digits",
        f"digits CNN ({CONFIG.name}), 1797 images, batch {DIGITS_BATCH}, 7 layers; "
        "checkpoint every step vs final only",
        lambda: run(None),
        lambda: run(1),
        repeats,
    )


def vgg16(tmp: Path, n_images: int, every: int, repeats: int) -> Result:
    model = make_model()
    loader = make_loader(n_images)
    store = tmp / "vgg16.zarr"
    n_layers = len(ndstream.resolve_layers(model, LAYERS))

    def run(every_steps: int | None) -> None:
        ndstream.ingest(
            model, loader, store, layers=LAYERS, reduction="max", group_by="label",
            progress=False, overwrite=True, checkpoint_every=every_steps,
            checkpoint_seconds=None,
        )  # fmt: skip

    return measure(
        "VGG16",
        f"VGG16 (random init), {n_images} random 3x32x32 images, batch {BATCH}, {n_layers} "
        f"layers ({LAYERS}), reduction max, 10 label groups; checkpoint every {every} steps "
        "vs final only",
        lambda: run(None),
        lambda: run(every),
        repeats,
    )


def main() -> None:
    def options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--images", type=int, help="VGG16 images per run (default 1024)")
        parser.add_argument("--repeats", type=int, help="timed repeats of each (default 3)")

    args = parse_args(__doc__, options)
    n_images, every, repeats = (256, 2, 2) if args.quick else (1024, 4, 3)
    n_images, repeats = args.images or n_images, args.repeats or repeats
    print(
        f"torch threads {torch.get_num_threads()}; median of {repeats} interleaved repeats "
        "after one warm-up run"
    )
    with tempfile.TemporaryDirectory(prefix="ndstream-bench-") as tmp_name:
        tmp = Path(tmp_name)
        results = [digits(tmp, repeats), vgg16(tmp, n_images, every, repeats)]

    for r in results:
        print()
        print(r.describe)
        print_table(
            ["variant", "checkpoints", "median s", "min s", "max s"],
            [
                (
                    name,
                    f"{r.n_checkpoints} + final" if name == "frequent" else "final",
                    f"{median(ts):.3f}",
                    f"{min(ts):.3f}",
                    f"{max(ts):.3f}",
                )
                for name, ts in r.times.items()
            ],
        )
    print()
    print(
        "cost of one checkpoint: A/B = (frequent - final only) / checkpoints; write = "
        "write_checkpoint timed directly (median); overhead = cost / 120 s"
    )
    print_table(
        [
            "workload",
            "A/B s",
            "write s",
            "final commit s",
            "default interval s",
            "overhead (A/B)",
            "overhead (write)",
        ],
        [
            (
                r.name,
                f"{r.per_checkpoint:.3f}",
                f"{r.one_write:.3f}",
                f"{median(r.final_writes):.3f}",
                f"{default_interval(r.per_checkpoint):.0f}",
                f"{100 * overhead(r.per_checkpoint):.2f}%",
                f"{100 * overhead(r.one_write):.2f}%",
            )
            for r in results
        ],
    )
    d, v = results
    print()
    print(
        f"checkpoint overhead at the default interval (120 s, at least 50x a checkpoint): "
        f"digits {100 * overhead(d.per_checkpoint):.2f}%, "
        f"VGG16 {100 * overhead(v.per_checkpoint):.2f}% "
        f"(one checkpoint: digits {d.one_write:.2f} s, VGG16 {v.one_write:.2f} s)"
    )


if __name__ == "__main__":
    main()
