"""Ingest overhead: ``ndstream.ingest`` against a bare forward loop over the same loader.

What is measured
    Wall time of ``ndstream.ingest(model, loader, tmp_store, layers="type:Conv2d,Linear",
    reduction="max", group_by="label")`` on torchvision's ``vgg16(weights=None)`` (random init,
    nothing downloaded) over random 32x32 images with labels 0..9 (a ``TensorDataset`` with a
    ``classes`` attribute, so there are 10 groups), batch 64, divided by the wall time of a bare
    ``torch.inference_mode()`` forward loop over the same DataLoader. Every Conv2d and Linear
    layer is sketched (16 layers). The ingest time includes hooks, reductions, sketch updates,
    finalize and writing the Zarr store into a temporary folder (overwritten each repeat).

    Both are warmed up once, then timed in interleaved rounds (bare, ingest, bare, ingest ...)
    with ``time.perf_counter``. Each round gives one ratio, its ingest over its own bare loop,
    and the headline is the median of those ratios: the machine's speed drifts by ±10 % from
    one minute to the next, and a pair run back to back shares the drift that medians taken
    apart would mix in. The medians of each column and the ratio of the fastest runs are
    printed too.

    A breakdown per phase comes from timers wrapped around ndstream's functions during the
    timed ingest runs (about a microsecond per call): the hooks' reductions, capture ``pop``,
    ``LayerSketch.update`` (on ingest's worker thread, overlapping the next forward pass, so
    listed apart), and the fixed end-of-run costs (model and dataset fingerprints,
    ``finalize``, ``write_store``, ``open_store``); the rest is the forward pass and the loop.
    Fixed costs do not grow with the dataset, so the ratio without them is what a long run
    approaches; both are printed.

Run: ``python benchmarks/bench_ingest_overhead.py [--quick] [--images N] [--repeats R]``.
The last line is the summary. The default, 10,000 images, is the size of CIFAR-10's test set,
the paper's setting; with fewer images the once-per-run costs (a few seconds) weigh more, with
more they weigh less, which is what a long ingest sees.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import torch
import torchvision
from _common import interleaved, median, parse_args, print_table

import ndstream
from ndstream import ActivationCapture, LayerSketch

LAYERS = "type:Conv2d,Linear"
BATCH = 64


class LabelledImages(torch.utils.data.TensorDataset):
    """Random images with labels 0..9; ``classes`` names the 10 label groups for ndstream."""

    classes: ClassVar[list[str]] = [str(c) for c in range(10)]


def make_loader(n_images: int, seed: int = 0) -> torch.utils.data.DataLoader:
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n_images, 3, 32, 32, generator=g)
    labels = torch.randint(0, 10, (n_images,), generator=g)
    return torch.utils.data.DataLoader(LabelledImages(images, labels), batch_size=BATCH)


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torchvision.models.vgg16(weights=None).eval()


def bare_loop(model: torch.nn.Module, loader: torch.utils.data.DataLoader) -> None:
    with torch.inference_mode():
        for inputs, _ in loader:
            model(inputs)


def run_ingest(model: torch.nn.Module, loader: torch.utils.data.DataLoader, path: Path) -> None:
    ndstream.ingest(
        model, loader, path, layers=LAYERS, reduction="max", group_by="label",
        progress=False, overwrite=True,
    )  # fmt: skip


# -- breakdown -----------------------------------------------------------------------------

# Phases after the last batch; they cost the same whatever the dataset size.
FIXED = ("model fingerprint", "dataset fingerprint", "sketch finalize", "store write", "store open")
OVERLAPPED = " (worker thread, overlaps the forward)"


class Timers:
    """Exclusive seconds per label, filled by wrapping functions in place.

    Time spent in a wrapped function called from another wrapped one (``finalize`` inside
    ``write_store``) counts for the inner label only, so the main thread's labels add up to
    its wall time. Calls on other threads (ingest's sketch updates run on a worker thread,
    overlapping the forward pass) are kept apart, under the label with ``OVERLAPPED`` added.
    A wrapper costs about a microsecond per call (a few hundred calls per ingest), so the
    timed ingest runs stay instrumented.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._undo: list[Callable[[], None]] = []
        self._local = threading.local()  # per thread: time spent in nested wrapped calls
        self._lock = threading.Lock()

    def wrap(self, owner: object, attr: str, label: str) -> None:
        original = getattr(owner, attr)

        def timed(*args: object, **kwargs: object) -> object:
            inner = self._local.__dict__.setdefault("inner", [])
            start = time.perf_counter()
            inner.append(0.0)
            try:
                return original(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                main = threading.current_thread() is threading.main_thread()
                with self._lock:
                    self.seconds[label if main else label + OVERLAPPED] += elapsed - inner.pop()
                if inner:
                    inner[-1] += elapsed

        setattr(owner, attr, timed)
        self._undo.append(lambda: setattr(owner, attr, original))

    def take(self) -> dict[str, float]:
        with self._lock:
            out, self.seconds = dict(self.seconds), defaultdict(float)
        return out

    def restore(self) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()


def instrument() -> Timers:
    """Wrap the phases of ``ndstream.ingest`` with timers."""
    ingest_module = sys.modules["ndstream.ingestion.run"]
    timers = Timers()
    timers.wrap(sys.modules["ndstream.capture.hooks"], "reduce_output", "hook reductions")
    timers.wrap(ActivationCapture, "pop", "capture pop")
    timers.wrap(LayerSketch, "update", "sketch update")
    timers.wrap(ingest_module, "model_fingerprint", "model fingerprint")
    timers.wrap(ingest_module, "dataset_fingerprint", "dataset fingerprint")
    timers.wrap(LayerSketch, "finalize", "sketch finalize")
    timers.wrap(ingest_module, "write_checkpoint", "store write")
    timers.wrap(ingest_module, "open_store", "store open")
    return timers


def phase_table(runs: list[dict[str, float]], totals: list[float]) -> dict[str, float]:
    """Median seconds per phase over the timed ingest runs; the rest is forward + loop.

    Phases on the worker thread overlap the main thread's, so they are not subtracted.
    """
    labels = sorted({label for r in runs for label in r}, key=lambda s: s.endswith(OVERLAPPED))
    main = [label for label in labels if not label.endswith(OVERLAPPED)]
    rest = [t - sum(r.get(k, 0.0) for k in main) for r, t in zip(runs, totals, strict=True)]
    phases = {label: median([r.get(label, 0.0) for r in runs]) for label in labels}
    phases["forward pass (no hooks) + loop"] = median(rest)
    phases["total"] = median(totals)
    return phases


# -- main ----------------------------------------------------------------------------------


def main() -> None:
    def options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--images", type=int, help="images per run (default 10000, CIFAR-10's test set)"
        )
        parser.add_argument("--repeats", type=int, help="timed rounds (default 5)")

    args = parse_args(__doc__, options)
    n_images, repeats = (128, 3) if args.quick else (10_000, 5)
    n_images, repeats = args.images or n_images, args.repeats or repeats
    model = make_model()
    loader = make_loader(n_images)
    n_layers = len(ndstream.resolve_layers(model, LAYERS))
    print(
        f"VGG16 (random init), {n_images} random 3x32x32 images, batch {BATCH}, "
        f"{n_layers} layers ({LAYERS}), reduction max, 10 label groups; "
        f"torch threads {torch.get_num_threads()}; {repeats} interleaved rounds"
    )
    with tempfile.TemporaryDirectory(prefix="ndstream-bench-") as tmp:
        path = Path(tmp) / "run.zarr"
        bare_loop(model, loader)  # warm-up
        run_ingest(model, loader, path)  # warm-up (also JIT compile)
        timers = instrument()
        runs: list[dict[str, float]] = []

        def timed_ingest() -> None:
            timers.take()
            run_ingest(model, loader, path)
            runs.append(timers.take())

        try:
            times = interleaved(
                {"bare": lambda: bare_loop(model, loader), "ingest": timed_ingest}, repeats
            )
        finally:
            timers.restore()
        phases = phase_table(runs, times["ingest"])

    bare, ing = median(times["bare"]), median(times["ingest"])
    # One ratio per round, each against the bare loop run just before it.
    ratio = median([i / b for i, b in zip(times["ingest"], times["bare"], strict=True)])
    print()
    print_table(
        ["loop", "median s", "min s", "max s", "images/s", "vs bare"],
        [
            (
                name,
                f"{median(ts):.3f}",
                f"{min(ts):.3f}",
                f"{max(ts):.3f}",
                f"{n_images / median(ts):.0f}",
                f"{median(ts) / bare:.3f}",
            )
            for name, ts in (
                ("bare forward loop", times["bare"]),
                ("ndstream.ingest", times["ingest"]),
            )
        ],
    )
    print()
    print(
        "ingest breakdown (median per phase over the timed runs; * = fixed end-of-run cost; "
        "worker-thread phases overlap the others and are not part of the total):"
    )
    total = phases["total"]
    print_table(
        ["phase", "seconds", "share"],
        [
            (f"{k} *" if k in FIXED else k, f"{v:.3f}", f"{100 * v / total:.1f}%")
            for k, v in phases.items()
        ],
    )
    fixed = sum(phases[k] for k in FIXED if k in phases)
    streaming = ratio - fixed / bare
    print()
    print(
        "per-round ratios (ingest over the bare loop of the same round): "
        + ", ".join(f"{i / b:.3f}" for i, b in zip(times["ingest"], times["bare"], strict=True))
    )
    print(
        f"ratio of the medians: {ing / bare:.3f}; of the fastest runs: "
        f"{min(times['ingest']) / min(times['bare']):.3f}"
    )
    print(
        f"fixed end-of-run costs: {fixed:.2f} s; without them the median ratio is "
        f"{streaming:.2f}x (what a long run approaches)"
    )
    print(
        f"ingest overhead: {ratio:.2f}x the bare forward loop, median of {repeats} rounds "
        f"(VGG16, 32x32, {n_layers} layers, {n_images} images; "
        f"{streaming:.2f}x without the fixed {fixed:.1f} s)"
    )


if __name__ == "__main__":
    main()
