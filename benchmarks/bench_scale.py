"""Scale: sketch state for ResNet-50 (27,560 output channels) x 1,000 groups (ImageNet classes).

What is measured
    * Memory. For each of ResNet-50's 54 Conv2d and Linear layers (channel counts read from
      ``torchvision.models.resnet50(weights=None)``; 27,560 in all) a ``LayerSketch`` with
      1,000 groups is fed 4 synthetic batches of 256 rows (ReLU-like: 50 % exact zeros, a
      lognormal tail with a per-neuron scale). Class ids are a shuffled ``arange(1024) % 1000``
      so every (neuron, group) sees at least one value, as in a real ImageNet run where every
      page is allocated. Two rows per layer are set to the 1/1.28M and 1 - 1/1.28M lognormal
      quantiles, so each neuron's window spans what a full ImageNet pass (1.28M images) would
      reach. Layers are processed one at a time but every sketch is kept alive, as during a
      real ingest. Reported: the sum of ``sketch.nbytes``, bytes per (neuron, group) summary,
      the peak RSS of the process (``ru_maxrss``) and its growth over the start.
    * Checkpoint. ``write_store`` of all 54 layers into a temporary folder: wall time and bytes
      on disk (``du``) per summary. With ~1 value per summary the counts compress to almost
      nothing, so the disk size is also measured at ImageNet density: one layer of 256
      neurons x 1,000 groups fed 1,300 values per group.
    * Read. ``open_store(path).summary(layer, [g1, g2, g3])`` on a 2,048-neuron layer, and a
      quantile on it (median of repeats).

Baseline (same run): the size of dense int32 counts with 774 bins per (neuron, group) for the
same 27.56M summaries (computed: 85 GB), and the time to write that many bytes uncompressed,
extrapolated from a measured 1 GiB ``tofile`` + ``fsync`` into the same temporary folder.

Memory guard: if the process RSS passes 18 GiB while building, the run stops and reports.

Run: ``python benchmarks/bench_scale.py [--quick]`` (``--quick``: the first 10 layers and 100
groups). The last line is the summary.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import torch
import torchvision
from _common import (
    apparent_bytes,
    current_rss_bytes,
    du_bytes,
    gib,
    median,
    parse_args,
    peak_rss_bytes,
)

from ndstream import GridSpec, LayerSketch, SketchSpec, Summary, open_store
from ndstream.store import LayerMeta, StoreMeta, write_store

ROWS, BATCHES = 256, 4
DENSE_BINS, DENSE_ITEMSIZE = 774, 4  # the dense int32 reference
IMAGENET_TRAIN = 1_281_167
PER_CLASS = 1_300  # ImageNet training images per class
RSS_LIMIT = 18 * 2**30
READ_FRACTIONS = (0.017, 0.503, 0.998)  # three groups spread over the group axis


def resnet50_layers() -> list[tuple[str, int]]:
    """(name, output channels) of every Conv2d and Linear of ResNet-50, in module order."""
    model = torchvision.models.resnet50(weights=None)
    out = []
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Conv2d):
            out.append((name, m.out_channels))
        elif isinstance(m, torch.nn.Linear):
            out.append((name, m.out_features))
    return out


# -- synthetic activations -----------------------------------------------------------------


def relu_batch(rng: np.random.Generator, scale: np.ndarray, rows: int) -> np.ndarray:
    """``[rows, neurons]``: half exact zeros, lognormal(0, 1) magnitudes times ``scale``."""
    x = rng.lognormal(0.0, 1.0, (rows, scale.size)).astype(np.float32) * scale
    x[rng.random(x.shape) < 0.5] = 0.0
    return x


def extreme_quantile_z(n: int) -> float:
    """z of the 1/n normal quantile (about 4.9 for ImageNet), by bisection on erfc."""
    from math import erfc, sqrt

    lo, hi = 0.0, 10.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if 0.5 * erfc(mid / sqrt(2)) > 1 / n else (lo, mid)
    return lo


def build_layer(
    rng: np.random.Generator, n: int, groups: tuple[str, ...], z_ext: float
) -> LayerSketch:
    """A sketch of one layer fed BATCHES x ROWS rows covering every group at least once."""
    n_groups = len(groups)
    scale = np.exp(rng.normal(0.0, 0.5, n)).astype(np.float32)
    gids = rng.permutation(np.arange(BATCHES * ROWS) % n_groups)
    sketch = LayerSketch(SketchSpec(n, groups))
    for b in range(BATCHES):
        x = relu_batch(rng, scale, ROWS)
        if b == 0:  # the range a full ImageNet pass would reach
            x[0] = np.exp(-z_ext) * scale
            x[1] = np.exp(z_ext) * scale
        sketch.update(x, gids[b * ROWS : (b + 1) * ROWS])
    return sketch


def build_all(
    layers: list[tuple[str, int]], groups: tuple[str, ...]
) -> tuple[dict[str, LayerSketch], float] | None:
    """All layers' sketches, kept alive; None if the RSS guard trips."""
    rng = np.random.default_rng(0)
    z_ext = extreme_quantile_z(IMAGENET_TRAIN)
    sketches: dict[str, LayerSketch] = {}
    start = time.perf_counter()
    for i, (name, n) in enumerate(layers):
        sketches[name] = build_layer(rng, n, groups, z_ext)
        rss = current_rss_bytes()
        if rss > RSS_LIMIT:
            print(f"STOP: RSS {gib(rss):.1f} GiB after {i + 1} layers passes the 18 GiB guard")
            return None
    return sketches, time.perf_counter() - start


# -- store ---------------------------------------------------------------------------------


def _layer_meta(name: str, n: int) -> LayerMeta:
    kind = "Linear" if name == "fc" else "Conv2d"
    return LayerMeta(
        name=name,
        module_type=kind,
        n_neurons=n,
        channel_dim=1,
        output_shape=(n,),
        values_per_sample=1,
    )


def make_meta(layers: list[tuple[str, int]], groups: tuple[str, ...], samples: int) -> StoreMeta:
    """Store metadata in the shape ``ndstream.ingest`` writes it (see ndstream/ingestion/run.py)."""
    return StoreMeta(
        layers=tuple(_layer_meta(name, n) for name, n in layers),
        groups=groups,
        groupings=("label",) * len(groups),
        reduction="max",
        grid=GridSpec().to_dict(),
        model_fingerprint="",
        dataset_fingerprint="",
        samples_done=samples,
        samples_total=samples,
        complete=True,
        config={"benchmark": "bench_scale"},
    )


class FinalizeOnRead(Mapping):
    """name -> ``sketch.finalize()`` computed on access, for a ``write_store`` that wants
    Summaries: only one layer's finalized form is alive at a time."""

    def __init__(self, sketches: dict[str, LayerSketch]) -> None:
        self._sketches = sketches

    def __getitem__(self, name: str) -> Summary:
        return self._sketches[name].finalize()

    def __iter__(self) -> Iterator[str]:
        return iter(self._sketches)

    def __len__(self) -> int:
        return len(self._sketches)


def checkpoint(path: Path, meta: StoreMeta, sketches: dict[str, LayerSketch]) -> float:
    """Seconds to write every sketch to a store at ``path``."""
    start = time.perf_counter()
    try:  # newer write_store takes sketches and finalizes them a block of groups at a time
        write_store(path, meta, sketches, overwrite=True)
    except (TypeError, AttributeError):
        write_store(path, meta, FinalizeOnRead(sketches), overwrite=True)
    return time.perf_counter() - start


def time_read(
    path: Path, layer: str, groups: list[int], repeats: int = 7
) -> tuple[float, float, tuple[int, ...]]:
    """Median seconds of open_store + summary of 3 groups, and of a quantile on that summary."""
    read, quant, shape = [], [], ()
    for _ in range(repeats):
        t0 = time.perf_counter()
        summary = open_store(path).summary(layer, groups)
        t1 = time.perf_counter()
        summary.quantile([0.25, 0.5, 0.75])
        t2 = time.perf_counter()
        read.append(t1 - t0)
        quant.append(t2 - t1)
        shape = summary.counts.shape
    return median(read), median(quant), shape


def dense_density_disk(tmp: Path, n: int, n_groups: int) -> tuple[float, float]:
    """Bytes on disk per summary of one layer fed PER_CLASS values per group, and its RSS use."""
    rng = np.random.default_rng(1)
    groups = tuple(str(g) for g in range(n_groups))
    scale = np.exp(rng.normal(0.0, 0.5, n)).astype(np.float32)
    sketch = LayerSketch(SketchSpec(n, groups))
    gids = rng.permutation(np.repeat(np.arange(n_groups), PER_CLASS))
    for start in range(0, gids.size, 4096):
        rows = gids[start : start + 4096]
        sketch.update(relu_batch(rng, scale, rows.size), rows)
    path = tmp / "dense.zarr"
    checkpoint(path, make_meta([("layer", n)], groups, gids.size), {"layer": sketch})
    return du_bytes(path) / (n * n_groups), sketch.nbytes / (n * n_groups)


def raw_write_rate(tmp: Path, n_bytes: int = 1 << 30) -> float:
    """Bytes per second of an uncompressed ``tofile`` + ``fsync`` of ``n_bytes``."""
    data = np.ones(n_bytes // 4, dtype=np.int32)
    path = tmp / "raw.bin"
    start = time.perf_counter()
    with open(path, "wb") as fh:
        data.tofile(fh)
        fh.flush()
        os.fsync(fh.fileno())
    seconds = time.perf_counter() - start
    path.unlink()
    return n_bytes / seconds


# -- main ----------------------------------------------------------------------------------


def main() -> int:
    args = parse_args(__doc__)
    all_layers = resnet50_layers()
    layers = all_layers[:10] if args.quick else all_layers
    n_groups = 100 if args.quick else 1000
    groups = tuple(f"class{g:04d}" for g in range(n_groups))
    read_groups = [int(f * n_groups) for f in READ_FRACTIONS]
    neurons = sum(n for _, n in layers)
    summaries = neurons * n_groups
    print(
        f"ResNet-50 Conv2d+Linear: {len(all_layers)} layers, "
        f"{sum(n for _, n in all_layers):,} channels; using {len(layers)} layers, "
        f"{neurons:,} neurons x {n_groups:,} groups = {summaries / 1e6:.2f}M summaries; "
        f"{BATCHES} batches x {ROWS} rows per layer"
    )
    rss0 = current_rss_bytes()
    built = build_all(layers, groups)
    if built is None:
        return 1
    sketches, build_s = built
    state = sum(s.nbytes for s in sketches.values())
    peak_build = peak_rss_bytes()

    read_layer = next((name for name, n in layers if n == 2048), max(layers, key=lambda x: x[1])[0])
    tmp = Path(tempfile.mkdtemp(prefix="ndstream-bench-scale-"))
    try:
        path = tmp / "resnet50.zarr"
        meta = make_meta(layers, groups, BATCHES * ROWS)
        write_s = checkpoint(path, meta, sketches)
        peak_write = peak_rss_bytes()
        disk, files = du_bytes(path), apparent_bytes(path)
        n_files = sum(1 for p in path.rglob("*") if p.is_file())
        read_s, quant_s, read_shape = time_read(path, read_layer, read_groups)
        del sketches
        dd_n, dd_g = (64, 100) if args.quick else (256, 1000)
        dense_disk, dense_mem = dense_density_disk(tmp, dd_n, dd_g)
        rate = raw_write_rate(tmp, (256 << 20) if args.quick else (1 << 30))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    dense_bytes = summaries * DENSE_BINS * DENSE_ITEMSIZE
    print()
    rows = [
        ("build sketches (s)", f"{build_s:.1f}", ""),
        ("sketch state, sum of nbytes", f"{gib(state):.2f} GiB", f"{state / summaries:.0f} B/summary"),
        ("RSS at start", f"{gib(rss0):.2f} GiB", ""),
        ("peak RSS after build", f"{gib(peak_build):.2f} GiB",
         f"+{gib(peak_build - rss0):.2f} GiB over start"),
        ("peak RSS after checkpoint", f"{gib(peak_write):.2f} GiB",
         f"+{gib(peak_write - peak_build):.2f} GiB for the write"),
        ("checkpoint write_store (s)", f"{write_s:.1f}", ""),
        ("store on disk, du (~1 value/summary)", f"{disk / 2**20:.0f} MiB",
         f"{disk / summaries:.1f} B/summary"),
        ("  sum of file sizes", f"{files / 2**20:.0f} MiB",
         f"{files / summaries:.1f} B/summary in {n_files:,} files"),
        (f"disk at ImageNet density ({PER_CLASS} values/summary, {dd_n}x{dd_g})",
         f"{dense_disk:.0f} B/summary", f"memory {dense_mem:.0f} B/summary"),
        (f"read {read_layer} {read_shape[0]}x{len(read_groups)} (open + summary)",
         f"{read_s * 1e3:.1f} ms", f"counts {list(read_shape)}"),
        ("quantile x3 on that summary", f"{quant_s * 1e3:.1f} ms", ""),
        (f"dense int32 {DENSE_BINS}-bin reference", f"{dense_bytes / 1e9:.1f} GB",
         f"{DENSE_BINS * DENSE_ITEMSIZE} B/summary"),
        ("  dense / ndstream, memory", f"{dense_bytes / state:.1f}x", ""),
        ("  dense / ndstream, disk at ImageNet density",
         f"{DENSE_BINS * DENSE_ITEMSIZE / dense_disk:.1f}x", ""),
        ("raw uncompressed write rate (measured)", f"{rate / 1e6:.0f} MB/s", ""),
        ("  dense write at that rate (extrapolated)", f"{dense_bytes / rate:.0f} s",
         f"{dense_bytes / rate / write_s:.1f}x the checkpoint"),
    ]  # fmt: skip
    width = max(len(r[0]) for r in rows)
    for label, value, note in rows:
        print(f"{label.ljust(width)}  {value:>16}  {note}")
    print()
    print(
        f"scale: {neurons:,} neurons x {n_groups:,} groups: {gib(state):.2f} GiB in memory "
        f"({state / summaries:.0f} B/summary; peak RSS {gib(peak_write):.1f} GiB), "
        f"{dense_disk / 1e3:.2f} KB/summary on disk at ImageNet density "
        f"({disk / summaries / 1e3:.3f} KB sparse), checkpoint {write_s:.0f} s, "
        f"read {read_shape[0]}x{len(read_groups)} in {read_s:.2f} s "
        f"(dense int32: {dense_bytes / 1e9:.1f} GB)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
