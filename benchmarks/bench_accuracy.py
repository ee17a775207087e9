"""Quantile accuracy of ndstream's sketch as a matrix of cases, against exact numpy quantiles.

What is measured
    The normalised rank error of the quantiles q = 0.01, 0.02, ..., 0.99 that the sketch
    returns, against the raw values themselves. For a neuron whose N values sort to ``s``, an
    estimate ``v`` of quantile ``q`` has rank error
    ``min(|searchsorted(s, v, 'left')/N - q|, |searchsorted(s, v, 'right')/N - q|)``, and 0 when
    ``q`` lies between those two ranks (ties, atoms, infinities). Every figure is the max over
    the evaluated neurons, the 99 quantiles and (per group) the evaluated groups:

    * pooled: ``LayerSketch.pooled_summary().quantile(q)``, every row of the layer once;
    * per group: ``LayerSketch.finalize().select([g]).quantile(q)`` for each group ``g`` that
      holds at least 50 values (``MIN_GROUP``; smaller groups are not scored, "-" where none
      qualifies), and only when the layer has more than one group.

    The exact ``np.quantile`` (linear interpolation) itself scores up to about 1/N on this
    metric, so that floor is printed beside every figure. Where both neighbours of a quantile
    are the same infinity, linear interpolation gives NaN, and that quantile is taken as the
    infinity itself (``method="lower"``). A cell passes when its error is at most
    ``max(0.5 %, its floor)``, pooled and per group.

    Sketches use the default ``GridSpec()`` (what users get) and are fed in batches, as an
    ingest would feed them: 4,096 rows (synthetic) or 512 rows (real activations), and count
    the atoms of the rows of their first 256 samples (``atom_candidates``), as an ingest
    does.

Baseline, in the same run on the same values
    Apache DataSketches' ``kll_floats_sketch(k)``, one per (neuron, group), at the same memory
    per summary as ndstream: for every cell, k is the candidate (8 to about 30,000) whose
    serialized size (``len(sketch.serialize())``) for that number of values is nearest to
    ndstream's mean bytes per summary of that cell, pooled and per group apart. Per group, KLL
    runs on the first 50 qualifying groups (``KLL_GROUPS``) only, to keep the run short. KLL
    answers with values it holds, so while k keeps every value it scores 0, below the floor of
    np.quantile's interpolation.

How bytes per summary are counted
    For one (neuron, group) summary: the counters between its first and last nonzero bin in
    the finalized ``Summary.counts`` row (``span * counts.itemsize``), which is what a dense
    row costs once the empty bins on either side are cut off; plus 4 bytes per nonzero bin
    when the neuron is at full float32 resolution (23 mantissa bits), where the bins are the
    values themselves (an exact summary lists only the values it holds, with gaps), so each
    value must be stored beside its count. Bin edges are otherwise implied by the grid and a
    few bytes per neuron (offset, resolution), which are not counted; KLL's header bytes are
    counted (they are part of its serialized size). "memory" is ``LayerSketch.nbytes``
    (state arrays as allocated, the pooled sketch included) per (neuron, group with data).

Part 1: synthetic matrix
    Every combination of
    * groups 1, 10, 100, 1,000 (each row gets a group uniformly at random, fixed seed);
    * scale 1e-30, 1e-8, 1, 1e30 (the shape's values times the scale, then cast to float32;
      Cauchy tails times 1e30 overflow to +-Inf, which the sketch counts exactly and which
      the exact reference keeps);
    * shapes: ``relu`` (max(0, N(mu, sigma)), about half exact zeros), ``gaussian``,
      ``lognormal``, ``cauchy``, ``gelu`` (x * Phi(x) of a normal: values pile up near its
      minimum, -0.17), ``const`` (a near-constant neuron, 1 + 1e-6 * N(0, 1), a handful of
      distinct float32 values at every scale), ``atom`` (one exact value holding 0.5-5 % of
      the rows inside a Gaussian spread: a bias reached whenever a unit's input is dead);
    * values per neuron 256, 4,096, 65,536 (over all groups).
    Each neuron draws its own location and scale. One layer of 512 neurons per (values,
    groups) holds all 28 (shape, scale) cells side by side, 18 neurons each (and 8 fillers):
    512 neurons and the group count set the layer's bin budget as in a real layer, and a
    neuron's resolution depends on its own values only, so cells do not interact. The first
    16 neurons of each cell are scored.

Part 2: real activations
    Random-init torchvision ``resnet18``, ``mobilenet_v3_small``, ``regnet_y_400mf`` (6,000
    random normal 48x48 images each: more values per neuron than the exact phase keeps, so
    every layer is read from the grid) and ``vit_b_16`` (32 random normal 224x224 images),
    all ``weights=None`` and seeded. RegNet's squeeze-and-excitation gates give atoms (a
    bias, whenever the gate's ReLU gives all zeros). Plain ``register_forward_hook`` hooks on
    every Conv2d, BatchNorm2d, ReLU, ReLU6, Hardswish, Linear, GELU and Sigmoid copy the
    output at once (ResNet reuses one inplace
    ReLU twice per block, and inplace activations overwrite BatchNorm outputs): a module
    called k times per forward gives k layers, ``name#1`` ... ``name#k``. Spatial outputs are
    reduced by channel max (ndstream's default); ViT token outputs ``[B, T, D]`` keep every
    token as a row (197 rows per image). Two layers, ResNet's ``layer1.1.relu#2`` and
    MobileNet's ``features.4.block.0.2`` (a Hardswish), are also taken with every spatial
    position as a row, over the first 128 images ("all positions"), so that they have many
    values per neuron. Each layer is sketched at its full width with 1, 10, 100 and 1,000
    groups; the groups are random labels per image (every row of an image in its group, so
    1,000 labels over 32 images use at most 32 groups). The first 32 neurons are scored.

Part 3: per group at ImageNet scale (a synthetic stand-in)
    The target: ResNet-50's 27,560 channels x 1,000 groups x 1,300 values each, max rank
    error <= 1 % within <= 16 GiB in memory and <= 1 KB per summary on disk; goal <= 0.5 %
    within 4 GiB. Faithfully and cheaply: a neuron's per-group accuracy depends on its bin
    budget and the values in the group, not on the layer's width, which only sets the budget.
    So 16 neurons x 1,000 groups x 1,300 values per group (rows shuffled across groups) are
    sketched with ``GridSpec(max_bins=B, exact_values=E)``, where B and E are what the default
    grid gives a 2,048-neuron layer with 1,000 groups (``bins_budget(2048, 1000)`` and
    ``exact_budget(2048, 1000)``, ResNet-50's widest layer), and, as a frontier, with B in
    16, 32, 64, 128, 256 beside KLL at the k of the nearest serialized size. Channel-max-like
    shapes, a per-group shift of the location (groups differ, as classes do): relu of the max
    of 49 N(mu, sigma) (mu around 0), the same with mu = -2.5 sigma (about three quarters
    exact zeros, and positive values down to tiny ones), the max of 49 N(mu, sigma) without
    relu, and a lognormal. Every group is scored. The memory column
    extrapolates ``nbytes`` per summary to 27,560 x 1,000 summaries (a real layer's windows
    are shared by more neurons; ``bench_scale.py`` measures the real thing).

Run: ``python benchmarks/bench_accuracy.py [--quick]`` (about 15 minutes and 4.5 GB of memory at
peak on a 2-core machine, most of it ViT's captured layers); ``--quick`` is a smoke test with fewer
cells (256 and 4,096 values; 1, 10 and 1,000 groups; 8 neurons scored per cell), 128 images
(ResNet, MobileNet, RegNet) and 4 (ViT), and 4 neurons on a frontier of 16 and 256 bins besides the
default. The last line is the summary.
"""

from __future__ import annotations

import dataclasses
import functools
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torchvision
from _common import parse_args, print_table

from ndstream import GridSpec, LayerSketch, SketchSpec, Summary
from ndstream.ingestion.atom_window import ATOM_ROWS, ATOM_SAMPLES
from ndstream.sketch import atom_candidates

QS = np.round(np.arange(1, 100) / 100, 2)
TOLERANCE = 0.005  # a cell passes if its error <= max(TOLERANCE, its exact floor)
MIN_GROUP = 50  # per-group errors only over groups with at least this many values
KLL_GROUPS = 50  # per-group KLL on the first groups that qualify, at most this many
KLL_KS = tuple(sorted({int(8 * 1.25**i) for i in range(38)}))  # candidate k: 8 .. ~30,000
FULL_RES = 23  # mantissa bits at which every float32 is its own bin

SCALES = (1e-30, 1e-8, 1.0, 1e30)
WIDTH = 512  # neurons of a synthetic layer
PER_CELL = 18  # neurons per (shape, scale) cell in a synthetic layer: 28 * 18 = 504

REAL_EVAL = 32  # neurons scored per real layer
HOOKED = (
    torch.nn.Conv2d, torch.nn.BatchNorm2d, torch.nn.ReLU, torch.nn.ReLU6, torch.nn.Hardswish,
    torch.nn.Linear, torch.nn.GELU, torch.nn.Sigmoid,
)  # fmt: skip
POSITION_LAYERS = {"resnet18": "layer1.1.relu#2", "mobilenet_v3_small": "features.4.block.0.2"}

IMAGENET = (2048, 1000, 1300)  # widest ResNet-50 layer, groups, values per group
IMAGENET_NEURONS = 27_560


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def margin(error: float | None, floor: float | None) -> float:
    """How far ``error`` lies above what passes: the larger of the tolerance and the floor."""
    if error is None:
        return -np.inf
    return error - max(TOLERANCE, floor or 0.0)


# -- rank error ----------------------------------------------------------------------------


def _score(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Rank error for ranks ``lo`` (values below) and ``hi`` (values at most), both over N."""
    inside = (lo <= QS) & (hi >= QS)
    return np.where(inside, 0.0, np.minimum(np.abs(lo - QS), np.abs(hi - QS)))


def exact_quantiles(values: np.ndarray) -> np.ndarray:
    """``np.quantile`` ``[neuron, q]`` of ``values[rows, neuron]``, infinities kept."""
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # inf - inf between two infinities
        out = np.quantile(values, QS, axis=0)
    bad = np.isnan(out)
    if bad.any():  # both neighbours the same infinity: the quantile is that infinity
        out[bad] = np.quantile(values, QS, axis=0, method="lower")[bad]
    return out.T


class Truth:
    """The raw values of the scored neurons, sorted once, to score estimates pooled and per group.

    Per group, a value's rank is counted through its position in the pooled sort: ``x < v``
    exactly when ``searchsorted(s, x) < searchsorted(s, v)``, so one sorted array of keys
    ``group * (N + 1) + searchsorted(s, x)`` per neuron answers every group at once.
    """

    def __init__(self, values: np.ndarray, gids: np.ndarray, n_groups: int) -> None:
        self.values = values
        self.gids = gids
        self.n = values.shape[0]
        self.sorted = np.sort(values, axis=0)
        self.sizes = np.bincount(gids, minlength=n_groups)
        self._order = np.argsort(gids, kind="stable")
        self._starts = np.concatenate([[0], np.cumsum(self.sizes)])
        self._keys: np.ndarray | None = None

    def rows(self, g: int) -> np.ndarray:
        """Values ``[rows, neuron]`` of group ``g``."""
        return self.values[self._order[self._starts[g] : self._starts[g + 1]]]

    def qualifying(self) -> np.ndarray:
        """Groups with at least :data:`MIN_GROUP` values."""
        return np.flatnonzero(self.sizes >= MIN_GROUP)

    def pooled_errors(self, est: np.ndarray, cols: slice = slice(None)) -> np.ndarray:
        """Rank errors ``[neuron, q]`` of pooled estimates ``est[neuron, q]`` of neurons ``cols``."""
        lo, hi = np.empty(est.shape), np.empty(est.shape)
        for i, j in enumerate(range(self.values.shape[1])[cols]):
            lo[i] = np.searchsorted(self.sorted[:, j], est[i], side="left")
            hi[i] = np.searchsorted(self.sorted[:, j], est[i], side="right")
        return _score(lo / self.n, hi / self.n)

    def group_errors(
        self, est: np.ndarray, groups: np.ndarray, cols: slice = slice(None)
    ) -> np.ndarray:
        """Rank errors ``[group, neuron, q]`` of estimates ``est[group, neuron, q]``."""
        keys = self._group_keys()
        base = (groups.astype(np.int64) * (self.n + 1))[:, None]
        lo, hi = np.empty(est.shape), np.empty(est.shape)
        for i, j in enumerate(range(self.values.shape[1])[cols]):
            s, kj = self.sorted[:, j], keys[:, j]
            start = np.searchsorted(kj, base)
            lo[:, i] = np.searchsorted(kj, base + np.searchsorted(s, est[:, i], "left")) - start
            hi[:, i] = np.searchsorted(kj, base + np.searchsorted(s, est[:, i], "right")) - start
        size = self.sizes[groups][:, None, None]
        return _score(lo / size, hi / size)

    def _group_keys(self) -> np.ndarray:
        if self._keys is None:
            self._keys = np.empty(self.values.shape, dtype=np.int64)
            offset = self.gids.astype(np.int64) * (self.n + 1)
            for j in range(self.values.shape[1]):
                rank = np.searchsorted(self.sorted[:, j], self.values[:, j], side="left")
                self._keys[:, j] = np.sort(offset + rank)
        return self._keys

    def pooled_floor(self) -> np.ndarray:
        """What exact ``np.quantile`` scores pooled, ``[neuron, q]``."""
        return self.pooled_errors(exact_quantiles(self.values))

    def group_floor(self, groups: np.ndarray) -> np.ndarray:
        """What exact ``np.quantile`` scores per group, ``[group, neuron, q]``."""
        est = np.stack([exact_quantiles(self.rows(g)) for g in groups])
        return self.group_errors(est, groups)


# -- ndstream ------------------------------------------------------------------------------


def sketch(
    x: np.ndarray, gids: np.ndarray, n_groups: int, grid: GridSpec, batch: int
) -> LayerSketch:
    """A sketch of ``x[rows, neuron]`` in groups ``gids``, fed ``batch`` rows at a time,
    counting the atoms of its first 256 rows (an ingest takes those of its first 256
    samples, up to 4,096 rows: as many or more; see atom_window.py)."""
    sk = LayerSketch(SketchSpec(x.shape[1], tuple(f"g{i}" for i in range(n_groups)), grid))
    sk.track_atoms(atom_candidates(x[: min(ATOM_SAMPLES, ATOM_ROWS)]))
    for start in range(0, x.shape[0], batch):
        sk.update(x[start : start + batch], gids[start : start + batch])
    return sk


def neurons(summary: Summary, idx: np.ndarray) -> Summary:
    """``summary`` restricted to the neurons ``idx`` (every per-neuron array sliced)."""
    changes = {
        f.name: getattr(summary, f.name)[idx]
        for f in dataclasses.fields(summary)
        if f.name != "totals" and isinstance(getattr(summary, f.name), np.ndarray)
    }
    return dataclasses.replace(summary, **changes)


def summary_bytes(summary: Summary) -> np.ndarray:
    """Bytes ``[neuron, group]`` of each summary, counted as in the module docstring."""
    nz = summary.counts != 0
    first = nz.argmax(axis=2)
    last = nz.shape[2] - 1 - nz[:, :, ::-1].argmax(axis=2)
    span = np.where(nz.any(axis=2), last - first + 1, 0)
    values = np.where(np.asarray(summary.resolution)[:, None] >= FULL_RES, nz.sum(axis=2), 0)
    return span * summary.counts.itemsize + 4 * values


def group_quantiles(summary: Summary) -> np.ndarray:
    """Quantiles ``[group, neuron, q]`` of each group of ``summary`` on its own."""
    return np.stack([summary.select([i]).quantile(QS) for i in range(len(summary.groups))])


# -- KLL -----------------------------------------------------------------------------------


@functools.cache
def kll_bytes(k: int, n: int) -> int:
    """Serialized bytes of a KLL sketch with parameter ``k`` after ``n`` values."""
    from datasketches import kll_floats_sketch

    sk = kll_floats_sketch(k)
    sk.update(np.arange(n, dtype=np.float32))  # the size depends on k and n, not the values
    return len(sk.serialize())


def kll_k(target: float, n: int) -> int:
    """The candidate k whose KLL serialized size after ``n`` values is nearest ``target``."""
    return min(KLL_KS, key=lambda k: (abs(kll_bytes(k, n) - target), k))


def kll_quantiles(values: np.ndarray, k: int) -> np.ndarray:
    """KLL quantiles ``[neuron, q]``, one sketch per neuron of ``values[rows, neuron]``."""
    from datasketches import kll_floats_sketch

    cols = np.ascontiguousarray(values.T)
    out = np.empty((cols.shape[0], QS.size))
    for j in range(cols.shape[0]):
        sk = kll_floats_sketch(k)
        sk.update(cols[j])
        out[j] = sk.get_quantiles(QS)
    return out


# -- one layer: ndstream and KLL against the truth -----------------------------------------


@dataclass
class Score:
    """Max rank errors of one block of neurons (a synthetic cell or a real layer), one sketch."""

    n_values: int
    pooled: float
    pooled_floor: float
    pooled_kll: float
    pooled_bytes: float  # mean over the block
    kll_k: int
    memory: float  # LayerSketch.nbytes per (neuron, group with data), whole layer
    group: float | None = None
    group_floor: float | None = None
    group_kll: float | None = None
    group_bytes: float | None = None
    n_groups_scored: int = 0

    @property
    def passed(self) -> bool:
        """The bar is on pooled answers; per-group errors are reported beside it (only the
        ImageNet-scale part sets a per-group bar, on its own table)."""
        return self.pooled <= max(TOLERANCE, self.pooled_floor)


def measure(
    x: np.ndarray, gids: np.ndarray, n_groups: int, blocks: list[np.ndarray], batch: int
) -> list[Score]:
    """Score each block of neurons (indices into ``x``'s columns) from one sketch of ``x``."""
    sk = sketch(x, gids, n_groups, GridSpec(), batch)
    scored = np.concatenate(blocks)
    truth = Truth(np.ascontiguousarray(x[:, scored]), gids, n_groups)
    pooled = neurons(sk.pooled_summary(), scored)
    err = truth.pooled_errors(pooled.quantile(QS))
    floor = truth.pooled_floor()
    pbytes = summary_bytes(pooled)[:, 0]
    memory = sk.nbytes / (x.shape[1] * max(1, int(np.count_nonzero(truth.sizes))))

    groups = truth.qualifying() if n_groups > 1 else np.empty(0, dtype=np.intp)
    if groups.size:
        per_group = neurons(sk.finalize(groups), scored)
        gerr = truth.group_errors(group_quantiles(per_group), groups)
        gfloor = truth.group_floor(groups)
        gbytes = summary_bytes(per_group)  # [neuron, group]
        kll_groups = groups[:KLL_GROUPS]
        kll_rows = [truth.rows(g) for g in kll_groups]
        kll_n = int(np.median(truth.sizes[kll_groups]))

    scores, at = [], 0
    for block in blocks:
        cols = slice(at, at + block.size)
        at += block.size
        k = kll_k(float(pbytes[cols].mean()), truth.n)
        kll = truth.pooled_errors(kll_quantiles(truth.values[:, cols], k), cols)
        score = Score(
            n_values=truth.n,
            pooled=float(err[cols].max()),
            pooled_floor=float(floor[cols].max()),
            pooled_kll=float(kll.max()),
            pooled_bytes=float(pbytes[cols].mean()),
            kll_k=k,
            memory=memory,
        )
        if groups.size:
            gk = kll_k(float(gbytes[cols].mean()), kll_n)
            est = np.stack([kll_quantiles(rows[:, cols], gk) for rows in kll_rows])
            gkll = truth.group_errors(est, kll_groups, cols)
            score.group = float(gerr[:, cols].max())
            score.group_floor = float(gfloor[:, cols].max())
            score.group_kll = float(gkll.max())
            score.group_bytes = float(gbytes[cols].mean())
            score.n_groups_scored = int(groups.size)
        scores.append(score)
    return scores


# -- part 1: synthetic matrix --------------------------------------------------------------

Shape = Callable[[np.random.Generator, int, int], np.ndarray]


def _phi(z: np.ndarray) -> np.ndarray:
    """Standard normal CDF."""
    return torch.special.ndtr(torch.from_numpy(z)).numpy()


def _relu(rng: np.random.Generator, n: int, w: int) -> np.ndarray:
    loc, scale = rng.uniform(-0.3, 0.3, w), rng.uniform(0.5, 2.0, w)
    return np.maximum(0.0, loc + scale * rng.standard_normal((n, w)))


def _gaussian(rng: np.random.Generator, n: int, w: int) -> np.ndarray:
    return rng.normal(0.0, 1.0, w) + rng.lognormal(0.0, 1.0, w) * rng.standard_normal((n, w))


def _lognormal(rng: np.random.Generator, n: int, w: int) -> np.ndarray:
    return np.exp(
        rng.uniform(-2.0, 2.0, w) + rng.uniform(0.5, 2.0, w) * rng.standard_normal((n, w))
    )


def _cauchy(rng: np.random.Generator, n: int, w: int) -> np.ndarray:
    return rng.normal(0.0, 1.0, w) + rng.uniform(0.5, 2.0, w) * rng.standard_cauchy((n, w))


def _gelu(rng: np.random.Generator, n: int, w: int) -> np.ndarray:
    z = rng.uniform(-0.5, 0.5, w) + rng.uniform(0.8, 1.2, w) * rng.standard_normal((n, w))
    return z * _phi(z)


def _const(rng: np.random.Generator, n: int, w: int) -> np.ndarray:
    return 1.0 + 1e-6 * rng.standard_normal((n, w))


def _atom(rng: np.random.Generator, n: int, w: int) -> np.ndarray:
    # A bias reached whenever a unit's input is dead (a squeeze-and-excitation gate whose
    # ReLU gave all zeros): one exact value, 0.5-5 % of the rows, inside a Gaussian spread.
    loc, scale = rng.normal(0.0, 1.0, w), rng.uniform(0.5, 2.0, w)
    x = loc + scale * rng.standard_normal((n, w))
    atom = loc + scale * rng.uniform(-1.5, 1.5, w)
    on = rng.random((n, w)) < rng.uniform(0.005, 0.05, w)
    return np.where(on, atom, x)


SHAPES: dict[str, Shape] = {
    "relu": _relu, "gaussian": _gaussian, "lognormal": _lognormal, "cauchy": _cauchy,
    "gelu": _gelu, "const": _const, "atom": _atom,
}  # fmt: skip


@dataclass
class Cell:
    shape: str
    scale: float
    n_groups: int
    score: Score

    def where(self) -> str:
        plural = "s" if self.n_groups > 1 else ""
        return f"{self.shape} x{self.scale:.0e}, {self.n_groups} group{plural}"

    def cells(self) -> tuple[object, ...]:
        s = self.score
        return (
            self.shape, f"{self.scale:.0e}", self.n_groups, s.n_values,
            pct(s.pooled), pct(s.pooled_floor), pct(s.pooled_kll), f"{s.pooled_bytes:.0f}",
            s.kll_k, pct(s.group), pct(s.group_floor), pct(s.group_kll),
            "-" if s.group_bytes is None else f"{s.group_bytes:.0f}",
            s.n_groups_scored or "-", f"{s.memory:.0f}", "yes" if s.passed else "NO",
        )  # fmt: skip


CELL_HEADERS = (
    "shape", "scale", "groups", "N/neuron", "pooled %", "floor %", "KLL %", "B/summ",
    "KLL k", "per group %", "floor %", "KLL %", "B/summ", "groups scored", "memory B",
    "pooled pass",
)  # fmt: skip


def synthetic_layer(n_values: int, seed: int) -> tuple[np.ndarray, list[tuple[str, float]]]:
    """A ``[n_values, WIDTH]`` float32 layer: one block of PER_CELL neurons per (shape, scale)."""
    rng = np.random.default_rng(seed)
    x = np.empty((n_values, WIDTH), dtype=np.float32)
    cells, at = [], 0
    for name, shape in SHAPES.items():
        base = shape(rng, n_values, PER_CELL)
        for scale in SCALES:
            with np.errstate(over="ignore"):  # Cauchy tails times 1e30 overflow to +-Inf
                x[:, at : at + PER_CELL] = base * scale
            cells.append((name, scale))
            at += PER_CELL
    x[:, at:] = x[:, : WIDTH - at]  # fillers: copies of the first neurons, not scored
    return x, cells


def synthetic_part(sizes: Iterable[int], group_counts: Iterable[int], scored: int) -> list[Cell]:
    """Every (shape, scale, groups, values) cell, one sketch per (values, groups)."""
    out = []
    for n_values in sizes:
        x, cells = synthetic_layer(n_values, seed=n_values)
        blocks = [np.arange(i * PER_CELL, i * PER_CELL + scored) for i in range(len(cells))]
        for n_groups in group_counts:
            gids = np.random.default_rng(n_groups).integers(0, n_groups, n_values)
            scores = measure(x, gids, n_groups, blocks, batch=4096)
            out.extend(Cell(n, s, n_groups, sc) for (n, s), sc in zip(cells, scores, strict=True))
    order = {name: i for i, name in enumerate(SHAPES)}
    return sorted(out, key=lambda c: (order[c.shape], c.scale, c.score.n_values, c.n_groups))


# -- part 2: real activations --------------------------------------------------------------


def channel_values(output: torch.Tensor, reduce: str) -> np.ndarray:
    """Per-neuron values ``[rows, neurons]`` of one output, copied (outputs may be inplace)."""
    x = output.detach().float().cpu().numpy()
    if x.ndim == 4:  # [B, C, H, W]: channel max, or every position a row
        if reduce == "max":
            x = x.reshape(*x.shape[:2], -1).max(axis=2)
        else:
            x = np.moveaxis(x, 1, -1).reshape(-1, x.shape[1])
    elif x.ndim == 3:  # [B, tokens, dim]: every token a row
        x = x.reshape(-1, x.shape[2])
    else:
        x = x.reshape(x.shape[0], -1)
    return np.array(x, dtype=np.float32, copy=True)


def capture(
    model: torch.nn.Module,
    images: torch.Tensor,
    batch: int,
    reduce: str,
    only: set[str] | None = None,
) -> dict[str, tuple[str, np.ndarray]]:
    """Raw values (and module kind) of every hooked call site, in the order they first run.

    A module called k times per forward gives k layers, ``name#1`` ... ``name#k``.
    """
    chunks: dict[str, tuple[str, list[np.ndarray]]] = {}
    calls: dict[str, int] = {}

    def hook(name: str) -> Callable[..., None]:
        def record(module: torch.nn.Module, args: object, output: torch.Tensor) -> None:
            calls[name] = calls.get(name, 0) + 1
            site = f"{name}#{calls[name]}"
            chunks.setdefault(site, (type(module).__name__, []))[1].append(
                channel_values(output, reduce)
            )

        return record

    handles = [
        m.register_forward_hook(hook(n))
        for n, m in model.named_modules()
        if isinstance(m, HOOKED) and (only is None or n in only)
    ]
    try:
        with torch.inference_mode():
            for x in torch.split(images, batch):
                calls.clear()
                model(x)
    finally:
        for h in handles:
            h.remove()
    repeated = {site.rsplit("#", 1)[0] for site in chunks if not site.endswith("#1")}
    out = {}
    for site in list(chunks):  # in run order; each layer's batches freed once joined
        kind, parts = chunks.pop(site)
        name = site.rsplit("#", 1)[0]
        out[site if name in repeated else name] = (kind, np.concatenate(parts))
    return out


@dataclass
class LayerRow:
    model: str
    layer: str
    kind: str
    scores: dict[int, Score]  # by group count

    def cells(self, group_counts: tuple[int, ...]) -> tuple[object, ...]:
        one = self.scores[group_counts[0]]
        floors = [s.group_floor for s in self.scores.values() if s.group_floor is not None]
        many = self.scores[group_counts[1]]
        return (
            f"{self.model}/{self.layer}", self.kind, one.n_values,
            *(pct(self.scores[g].pooled) for g in group_counts),
            pct(max(s.pooled_floor for s in self.scores.values())), pct(one.pooled_kll),
            f"{one.pooled_bytes:.0f}",
            *(pct(self.scores[g].group) for g in group_counts[1:]),
            pct(max(floors)) if floors else "-", pct(many.group_kll),
            "yes" if self.passed else "NO",
        )  # fmt: skip

    @property
    def passed(self) -> bool:
        return all(s.passed for s in self.scores.values())


def layer_headers(group_counts: tuple[int, ...]) -> tuple[str, ...]:
    return (
        "model/layer", "kind", "N/neuron",
        *(f"pooled % G={g}" for g in group_counts), "floor %", f"KLL % G={group_counts[0]}",
        "B/summ", *(f"per group % G={g}" for g in group_counts[1:]), "floor %",
        f"KLL per group % G={group_counts[1]}", "pooled pass",
    )  # fmt: skip


def real_part(
    specs: tuple[tuple[str, int, int], ...],
    group_counts: tuple[int, ...],
    position_images: int,
) -> list[LayerRow]:
    """Every hooked layer of each (model, resolution, images), sketched per group count."""
    rows = []
    for model_name, res, n_images in specs:
        torch.manual_seed(0)
        model = getattr(torchvision.models, model_name)(weights=None).eval()
        gen = torch.Generator().manual_seed(1)
        images = torch.randn(n_images, 3, res, res, generator=gen)
        batch = 16 if model_name.startswith("vit") else 128
        layers = {
            name: (kind, x, n_images)
            for name, (kind, x) in capture(model, images, batch, "max").items()
        }
        extra = POSITION_LAYERS.get(model_name)
        if extra is not None:
            module = extra.split("#")[0]
            sites = capture(model, images[:position_images], batch, "none", only={module})
            layers[f"{extra} (all positions)"] = (*sites[extra], position_images)
        del images
        for name in list(layers):
            kind, x, n_img = layers.pop(name)  # free each layer once scored (ViT's are large)
            per_image = x.shape[0] // n_img
            scored = [np.arange(min(REAL_EVAL, x.shape[1]))]
            scores = {}
            for g in group_counts:
                labels = np.random.default_rng(g).integers(0, g, n_img)
                gids = np.repeat(labels, per_image)
                scores[g] = measure(x, gids, g, scored, batch=512)[0]
            rows.append(LayerRow(model_name, name, kind, scores))
    return rows


# -- part 3: per group at ImageNet scale ---------------------------------------------------


def channel_max_stand_in(
    n_neurons: int, n_groups: int, per_group: int
) -> tuple[np.ndarray, np.ndarray]:
    """``[rows, neuron]`` channel-max-like values, ``per_group`` rows per group, shuffled."""
    rng = np.random.default_rng(2)
    gids = rng.permutation(np.repeat(np.arange(n_groups), per_group))
    u = rng.random((gids.size, n_neurons))
    x = np.empty(u.shape, dtype=np.float32)
    for j in range(n_neurons):
        kind = j % 4
        sigma = rng.uniform(0.5, 2.0)
        mu = (rng.normal(0.0, 0.5), -2.5 * sigma, rng.normal(0.0, 0.5), rng.uniform(-2, 2))[kind]
        loc = mu + 0.3 * sigma * rng.standard_normal(n_groups)  # classes differ
        if kind == 3:  # lognormal
            z = torch.special.ndtri(torch.from_numpy(u[:, j])).numpy()
            x[:, j] = np.exp(loc[gids] + sigma * z)
        else:  # the max of 49 N(loc, sigma), through the inverse CDF of a max: Phi**49
            z = torch.special.ndtri(torch.from_numpy(u[:, j] ** (1 / 49))).numpy()
            v = loc[gids] + sigma * z
            x[:, j] = np.maximum(v, 0.0) if kind < 2 else v
    return x, gids


@dataclass
class Frontier:
    max_bins: int
    default: bool
    error: float
    mean: float
    floor: float
    disk: float  # mean bytes per summary
    disk_max: float
    memory: float  # LayerSketch.nbytes per summary
    kll_k: int
    kll_bytes: int
    kll: float
    kll_mean: float

    def cells(self) -> tuple[object, ...]:
        total = self.memory * IMAGENET_NEURONS * IMAGENET[1] / 2**30
        return (
            f"{self.max_bins}{' (default)' if self.default else ''}",
            pct(self.error), f"{100 * self.mean:.3f}", pct(self.floor),
            f"{self.disk:.0f}", f"{self.disk_max:.0f}", f"{self.memory:.0f}", f"{total:.1f}",
            self.kll_k, self.kll_bytes, pct(self.kll), f"{100 * self.kll_mean:.3f}",
        )  # fmt: skip


FRONTIER_HEADERS = (
    "max_bins", "per group max %", "mean %", "floor %", "B/summ", "B/summ max",
    "memory B/summ", "ResNet-50 GiB", "KLL k", "KLL B", "KLL max %", "KLL mean %",
)  # fmt: skip


def imagenet_part(n_neurons: int, bins: tuple[int, ...]) -> list[Frontier]:
    """Per-group errors at 1,000 groups x 1,300 values, at the default budget and a frontier."""
    width, n_groups, per_group = IMAGENET
    default = GridSpec()
    default_bins = default.bins_budget(width, n_groups)
    exact = default.exact_budget(width, n_groups)
    x, gids = channel_max_stand_in(n_neurons, n_groups, per_group)
    truth = Truth(x, gids, n_groups)
    groups = np.arange(n_groups)
    floor = float(truth.group_floor(groups).max())
    kll_groups = groups[:KLL_GROUPS]
    out = []
    for b in sorted({*bins, default_bins}):
        sk = sketch(x, gids, n_groups, GridSpec(max_bins=b, exact_values=exact), batch=4096)
        summary = sk.finalize()
        err = truth.group_errors(group_quantiles(summary), groups)
        disk = summary_bytes(summary)
        k = kll_k(float(disk.mean()), per_group)
        est = np.stack([kll_quantiles(truth.rows(g), k) for g in kll_groups])
        kll = truth.group_errors(est, kll_groups)
        out.append(
            Frontier(
                b, b == default_bins, float(err.max()), float(err.mean()), floor,
                float(disk.mean()), float(disk.max()), sk.nbytes / (n_neurons * n_groups),
                k, kll_bytes(k, per_group), float(kll.max()), float(kll.mean()),
            )
        )  # fmt: skip
    return out


# -- main ----------------------------------------------------------------------------------


def main() -> None:
    args = parse_args(__doc__)
    if args.quick:
        sizes, groups, scored = (256, 4096), (1, 10, 1000), 8
        models = (
            ("resnet18", 48, 128), ("mobilenet_v3_small", 48, 128),
            ("regnet_y_400mf", 48, 128), ("vit_b_16", 224, 4),
        )  # fmt: skip
        real_groups, position_images, imagenet_neurons, bins = (1, 10, 1000), 16, 4, (16, 256)
    else:
        sizes, groups, scored = (256, 4096, 65536), (1, 10, 100, 1000), 16
        models = (
            ("resnet18", 48, 6000), ("mobilenet_v3_small", 48, 6000),
            ("regnet_y_400mf", 48, 6000), ("vit_b_16", 224, 32),
        )  # fmt: skip
        real_groups, position_images, imagenet_neurons = (1, 10, 100, 1000), 128, 16
        bins = (16, 32, 64, 128, 256)
    print(
        f"max normalised rank error of quantiles q = 0.01..0.99 against the raw values, in %; "
        f"ndstream {GridSpec()} vs KLL at the same bytes per summary; 'floor' = what exact "
        f"np.quantile scores; per group over groups with >= {MIN_GROUP} values (KLL: the first "
        f"{KLL_GROUPS}); pooled pass = pooled error <= max({100 * TOLERANCE:.1f} %, floor)"
    )

    start = time.perf_counter()
    cells = synthetic_part(sizes, groups, scored)
    print()
    print(
        f"1. synthetic: {WIDTH}-neuron layers, {len(SHAPES)} shapes x {len(SCALES)} scales, "
        f"{scored} neurons scored per cell ({time.perf_counter() - start:.0f} s)"
    )
    print_table(CELL_HEADERS, [c.cells() for c in cells])

    start = time.perf_counter()
    layers = real_part(models, real_groups, position_images)
    print()
    described = ", ".join(f"{m} ({n} images {r}x{r})" for m, r, n in models)
    print(
        f"2. real activations, random init: {described}; first {REAL_EVAL} neurons scored "
        f"({time.perf_counter() - start:.0f} s)"
    )
    print_table(layer_headers(real_groups), [r.cells(real_groups) for r in layers])

    start = time.perf_counter()
    frontier = imagenet_part(imagenet_neurons, bins)
    width, n_groups, per_group = IMAGENET
    print()
    print(
        f"3. per group at ImageNet scale (stand-in): {imagenet_neurons} neurons x {n_groups} "
        f"groups x {per_group} values, budget of a {width}-neuron layer; ResNet-50 GiB = "
        f"memory B/summ x {IMAGENET_NEURONS} x {n_groups} ({time.perf_counter() - start:.0f} s)"
    )
    print_table(FRONTIER_HEADERS, [f.cells() for f in frontier])

    def meets(f: Frontier, error: float, gib_max: float) -> bool:
        total = f.memory * IMAGENET_NEURONS * n_groups / 2**30
        return f.error <= error and total <= gib_max and f.disk_max <= 1000

    must = [f.max_bins for f in frontier if meets(f, 0.01, 16)]
    goal = [f.max_bins for f in frontier if meets(f, 0.005, 4)]
    print(
        f"must (<= 1 % per group, <= 16 GiB, <= 1 KB per summary) met at max_bins: "
        f"{must or 'none'}; goal (<= 0.5 %, <= 4 GiB) met at: {goal or 'none'}"
    )

    # "worst": furthest above what passes (the larger of the tolerance and the floor)
    worst = max(cells, key=lambda c: margin(c.score.pooled, c.score.pooled_floor))
    grouped = [c for c in cells if c.score.group is not None]
    worst_group = max(grouped, key=lambda c: margin(c.score.group, c.score.group_floor))
    kll_group = max(c.score.group_kll or 0.0 for c in grouped)
    scores = [(r, s) for r in layers for s in r.scores.values()]
    layer, pooled = max(scores, key=lambda rs: margin(rs[1].pooled, rs[1].pooled_floor))
    in_groups = [rs for rs in scores if rs[1].group is not None]
    group_layer, group = max(in_groups, key=lambda rs: margin(rs[1].group, rs[1].group_floor))
    default = next(f for f in frontier if f.default)
    print()
    print(
        f"worst cell: pooled {pct(worst.score.pooled)} % (floor {pct(worst.score.pooled_floor)} "
        f"%) at {worst.where()}, {worst.score.n_values} values; per group "
        f"{pct(worst_group.score.group)} % (floor {pct(worst_group.score.group_floor)} %) at "
        f"{worst_group.where()}, {worst_group.score.n_values} values; KLL at same memory: "
        f"pooled up to {pct(max(c.score.pooled_kll for c in cells))} %, per group up to "
        f"{pct(kll_group)} %; cells passing (pooled) {sum(c.score.passed for c in cells)}/{len(cells)}; "
        f"real layers: pooled {pct(pooled.pooled)} % (floor {pct(pooled.pooled_floor)} %) at "
        f"{layer.model}/{layer.layer}, per group {pct(group.group)} % (floor "
        f"{pct(group.group_floor)} %) at {group_layer.model}/{group_layer.layer}, passing (pooled) "
        f"{sum(r.passed for r in layers)}/{len(layers)}; ImageNet-scale per group "
        f"{pct(default.error)} % at {default.max_bins} bins (~{default.disk:.0f} B/summary, "
        f"{default.memory * IMAGENET_NEURONS * n_groups / 2**30:.1f} GiB for ResNet-50)"
    )


if __name__ == "__main__":
    main()
