"""Quantile accuracy of ndstream's sketch on real activations, against exact numpy quantiles.

What is measured
    The normalised rank error of the quantiles q = 0.01, 0.02, ..., 0.99 that
    ``LayerSketch(...).finalize().quantile(q)`` returns, against the raw values themselves.
    For a neuron whose N values sort to ``s``, an estimate ``v`` of quantile ``q`` has rank error
    ``min(|searchsorted(s, v, 'left')/N - q|, |searchsorted(s, v, 'right')/N - q|)``, and 0 when
    ``q`` lies between those two ranks (ties). The tables give the max (and mean) over neurons
    and q, per layer and per group selection.

    The exact ``np.quantile`` itself scores up to about 1/N on this metric (it interpolates
    between order statistics), so that floor is printed next to every figure.

    The baseline, in the same run on the same values, is Apache DataSketches'
    ``kll_floats_sketch(200)``, one per (neuron, group).

Data (activations captured with plain ``register_forward_hook`` hooks, reduced with numpy)
    1. digits: ndstream's built-in digits CNN over all 1797 images; every layer (conv1, relu1,
       conv2, relu2, fc1, relu3, fc2); spatial outputs reduced by channel max. Per class (each
       of the 10 groups on its own) and pooled (all groups).
    2. VGG16: torchvision ``vgg16(weights=None)`` (random init) on random 32x32 images; every
       ReLU, channel max over spatial dims; one group. Twice: over the first 1,024 images,
       which the default sketch keeps exactly (at most 4,096 values per neuron here, see
       ``GridSpec.exact_values``), and over 6,144 images, which it folds onto the grid.
    3. GELU: torchvision ``vit_b_16(weights=None, image_size=32)``; the MLP GELU of encoder
       layers 0 and 11 with no reduction (each of the 5 tokens is one more value of its
       neuron). Over 256 images (1,280 values per neuron, kept exactly) and over 1,024
       (5,120 values, on the grid). GELU piles many distinct values up against its minimum (about -0.17) inside a
       few grid bins: the known weak case of a log-linear grid.

    The sketch runs with the default ``GridSpec()`` (printed). Every figure is also given for
    the same grid with nothing kept exactly (``GridSpec(exact_values=0)``, "grid only"): what
    the bins alone achieve at that number of values, where a few values per bin make the even
    spread assumed inside a bin a poor guess. And for a coarse fixed grid
    (``GridSpec(mantissa_bits=3)``, 8 bins per octave) for comparison:
    channel-max activations often span less than one octave across samples, so a coarse grid
    puts a neuron's whole distribution in two or three bins, where the even spread assumed
    inside a bin is far from the truth. A point mass (many samples with the very same value,
    such as a bias when the input patch is blank) is the other weak case at any resolution:
    an estimate a hair away from the atom's value is off by the atom's whole mass in rank.

Run: ``python benchmarks/bench_accuracy.py [--quick]``. The last line is the summary.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torchvision
from _common import parse_args, print_table

from ndstream import GridSpec, LayerSketch, SketchSpec
from ndstream.builtin import DigitsDataset, load_digits_cnn

QS = np.round(np.arange(1, 100) / 100, 2)
KLL_K = 200
ALT_GRID = GridSpec(mantissa_bits=3)  # a coarse fixed grid, 8 bins per octave, for comparison
GRID_ONLY = GridSpec(exact_values=0)  # the default grid with nothing kept exactly


# -- capture -------------------------------------------------------------------------------


def channel_values(output: torch.Tensor, reduce: str) -> np.ndarray:
    """Per-neuron values ``[rows, neurons]`` of one output: channel max or every position."""
    x = output.detach().float().cpu().numpy()
    if x.ndim == 4:  # [B, C, H, W]
        return x.reshape(*x.shape[:2], -1).max(axis=2) if reduce == "max" else _positions(x)
    if x.ndim == 3:  # [B, tokens, dim]: tokens are positions of the dim neurons
        return x.reshape(-1, x.shape[2]) if reduce == "none" else x.max(axis=1)
    return x.reshape(x.shape[0], -1)


def _positions(x: np.ndarray) -> np.ndarray:
    return np.moveaxis(x, 1, -1).reshape(-1, x.shape[1])


def capture(
    model: torch.nn.Module, batches: Iterable[torch.Tensor], layers: list[str], reduce: str
) -> dict[str, np.ndarray]:
    """Raw per-neuron values of ``layers`` over all batches, from plain forward hooks."""
    modules = dict(model.named_modules())
    chunks: dict[str, list[np.ndarray]] = {name: [] for name in layers}

    def hook(name: str) -> Callable[..., None]:
        return lambda module, args, output: chunks[name].append(channel_values(output, reduce))

    handles = [modules[name].register_forward_hook(hook(name)) for name in layers]
    try:
        with torch.inference_mode():
            for x in batches:
                model(x)
    finally:
        for h in handles:
            h.remove()
    return {name: np.concatenate(c, axis=0).astype(np.float32) for name, c in chunks.items()}


# -- estimators ----------------------------------------------------------------------------


def sketch_quantiles(
    values: np.ndarray, gids: np.ndarray, selections: dict[str, list[int]], grid: GridSpec
) -> dict[str, np.ndarray]:
    """ndstream quantiles ``[neuron, q]`` for each selection of groups, from one sketch."""
    n_groups = int(gids.max()) + 1
    sketch = LayerSketch(SketchSpec(values.shape[1], tuple(map(str, range(n_groups))), grid))
    for start in range(0, values.shape[0], 256):  # batches, as ingest would feed them
        sketch.update(values[start : start + 256], gids[start : start + 256])
    summary = sketch.finalize()
    return {sel: summary.select(groups).quantile(QS) for sel, groups in selections.items()}


def kll_quantiles(values: np.ndarray) -> np.ndarray:
    """KLL (k=200) quantiles ``[neuron, q]``, one sketch per neuron."""
    from datasketches import kll_floats_sketch

    out = np.empty((values.shape[1], QS.size))
    cols = np.ascontiguousarray(values.T)
    for n in range(cols.shape[0]):
        sk = kll_floats_sketch(KLL_K)
        sk.update(cols[n])
        out[n] = sk.get_quantiles(QS)
    return out


# -- error ---------------------------------------------------------------------------------


def rank_errors(values: np.ndarray, estimates: np.ndarray) -> np.ndarray:
    """Normalised rank errors ``[neuron, q]`` of ``estimates[neuron, q]`` against ``values``."""
    s = np.sort(values, axis=0)
    n = s.shape[0]
    err = np.empty(estimates.shape)
    for j in range(s.shape[1]):
        lo = np.searchsorted(s[:, j], estimates[j], side="left") / n
        hi = np.searchsorted(s[:, j], estimates[j], side="right") / n
        inside = (lo <= QS) & (hi >= QS)
        err[j] = np.where(inside, 0.0, np.minimum(np.abs(lo - QS), np.abs(hi - QS)))
    return err


@dataclass
class Row:
    model: str
    layer: str
    kind: str  # "ReLU", "GELU" or "other"
    selection: str
    n_values: int
    neurons: int
    floor: float
    nd: np.ndarray
    kll: np.ndarray
    alt: np.ndarray  # ndstream with ALT_GRID
    grid: np.ndarray  # ndstream with GRID_ONLY

    def cells(self) -> tuple[object, ...]:
        return (
            f"{self.model}/{self.layer}",
            self.kind,
            self.selection,
            self.n_values,
            self.neurons,
            f"{self.nd.max():.4f}",
            f"{self.nd.mean():.5f}",
            f"{self.grid.max():.4f}",
            f"{self.kll.max():.4f}",
            f"{self.floor:.4f}",
            f"{self.alt.max():.4f}",
        )


HEADERS = (
    "model/layer", "kind", "groups", "N/neuron", "neurons", "ndstream max", "ndstream mean",
    "grid only max", "KLL max", "exact floor", "ndstream m=3 max",
)  # fmt: skip


def evaluate(
    model: str,
    layer: str,
    kind: str,
    values: np.ndarray,
    gids: np.ndarray,
    selections: dict[str, list[int]],
) -> list[Row]:
    """Rank errors of ndstream, KLL and exact numpy for each group selection of one layer."""
    est = sketch_quantiles(values, gids, selections, GridSpec())
    est_alt = sketch_quantiles(values, gids, selections, ALT_GRID)
    est_grid = sketch_quantiles(values, gids, selections, GRID_ONLY)
    rows = []
    for sel, groups in selections.items():
        v = values[np.isin(gids, groups)]
        exact = np.quantile(v, QS, axis=0).T
        rows.append(
            Row(
                model, layer, kind, sel, v.shape[0], v.shape[1],
                float(rank_errors(v, exact).max()),
                rank_errors(v, est[sel]),
                rank_errors(v, kll_quantiles(v)),
                rank_errors(v, est_alt[sel]),
                rank_errors(v, est_grid[sel]),
            )
        )  # fmt: skip
    return rows


# -- the three models ----------------------------------------------------------------------


def digits_rows() -> list[Row]:
    data = DigitsDataset("all")
    model = load_digits_cnn().eval()  # trained offline on first use, then cached
    labels = np.asarray(data.targets)
    layers = ["conv1", "relu1", "conv2", "relu2", "fc1", "relu3", "fc2"]
    acts = capture(model, torch.split(data.images, 256), layers, "max")
    selections = {f"class {c}": [c] for c in range(10)}
    selections["pooled"] = list(range(10))
    rows = []
    for name in layers:
        kind = "ReLU" if name.startswith("relu") else "other"
        per_sel = evaluate("digits", name, kind, acts[name], labels, selections)
        per_class = [r for r in per_sel if r.selection.startswith("class")]
        rows.append(_worst(per_class, "worst class"))
        rows.extend(r for r in per_sel if r.selection == "pooled")
    return rows


def _worst(rows: list[Row], label: str) -> Row:
    """One row with the max over several selections (the mean is over all of them)."""
    first = rows[0]
    return Row(
        first.model, first.layer, first.kind, label, min(r.n_values for r in rows),
        first.neurons, max(r.floor for r in rows),
        np.concatenate([r.nd for r in rows]), np.concatenate([r.kll for r in rows]),
        np.concatenate([r.alt for r in rows]), np.concatenate([r.grid for r in rows]),
    )  # fmt: skip


def random_images(n: int, batch: int = 64, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return list(torch.split(torch.randn(n, 3, 32, 32, generator=g), batch))


def vgg_rows(sizes: tuple[int, ...]) -> list[Row]:
    """Rows of every ReLU over the first ``n`` images, for each ``n`` in ``sizes``."""
    torch.manual_seed(0)
    model = torchvision.models.vgg16(weights=None).eval()
    layers = [n for n, m in model.named_modules() if isinstance(m, torch.nn.ReLU)]
    acts = capture(model, random_images(max(sizes)), layers, "max")
    rows = []
    for n in sizes:
        zeros = np.zeros(n, dtype=np.int64)
        for name in layers:
            rows.extend(evaluate("vgg16", name, "ReLU", acts[name][:n], zeros, {"all": [0]}))
    return rows


def gelu_rows(sizes: tuple[int, ...]) -> list[Row]:
    """Rows of two GELUs (every token) over the first ``n`` images, for each ``n`` in ``sizes``."""
    torch.manual_seed(0)
    model = torchvision.models.vit_b_16(weights=None, image_size=32).eval()
    gelus = [n for n, m in model.named_modules() if isinstance(m, torch.nn.GELU)]
    layers = [gelus[0], gelus[-1]]  # encoder layers 0 and 11
    acts = capture(model, random_images(max(sizes), batch=32, seed=1), layers, "none")
    per_image = acts[layers[0]].shape[0] // max(sizes)  # tokens: values per image and neuron
    rows = []
    for n in sizes:
        for name in layers:
            values = acts[name][: n * per_image]
            gids = np.zeros(values.shape[0], dtype=np.int64)
            rows.extend(evaluate("vit_b_16", name, "GELU", values, gids, {"all": [0]}))
    return rows


# -- main ----------------------------------------------------------------------------------


def main() -> None:
    args = parse_args(__doc__)
    n_vgg, n_vit = ((128, 640), (64, 128)) if args.quick else ((1024, 6144), (256, 1024))
    print(
        f"rank error of quantiles q = 0.01..0.99 (step 0.01) against the raw values; "
        f"ndstream default grid {GridSpec()} vs KLL k={KLL_K}; "
        f"'exact floor' = the score of exact np.quantile on the same metric; "
        f"'grid only' = ndstream with {GRID_ONLY}; 'm=3' = ndstream with {ALT_GRID}"
    )
    start = time.perf_counter()
    rows = digits_rows() + vgg_rows(n_vgg) + gelu_rows(n_vit)
    vgg, vit = (" and ".join(map(str, n)) for n in (n_vgg, n_vit))
    print(f"({vgg} VGG16 images, {vit} ViT images; {time.perf_counter() - start:.0f} s)")
    print()
    print_table(HEADERS, [r.cells() for r in rows])

    # Per class, with ~174 values, exact np.quantile itself scores 0.5 %: those rows are
    # summarised apart, with that floor beside them.
    def pick(kind: str, per_class: bool) -> list[Row]:
        return [r for r in rows if r.kind == kind and (r.selection == "worst class") == per_class]

    def worst(picked: list[Row], attr: str) -> float:
        return max(float(getattr(r, attr).max()) for r in picked)

    print()
    summary = [("ReLU", False), ("ReLU", True), ("other", False), ("other", True), ("GELU", False)]
    table = []
    for kind, per_class in summary:
        picked = pick(kind, per_class)
        table.append(
            (
                kind,
                "worst class" if per_class else "all samples",
                f"{min(r.n_values for r in picked)}..{max(r.n_values for r in picked)}",
                *(f"{worst(picked, a):.4f}" for a in ("nd", "grid", "kll")),
                f"{max(r.floor for r in picked):.4f}",
                f"{worst(picked, 'alt'):.4f}",
            )
        )
    print_table(
        ["kind", "groups", "N/neuron", "ndstream max", "grid only max", "KLL max", "exact floor",
         "ndstream m=3 max"],
        table,
    )  # fmt: skip
    relu, relu_class, gelu = pick("ReLU", False), pick("ReLU", True), pick("GELU", False)
    print()
    print(
        f"accuracy: max rank error ReLU {worst(relu, 'nd'):.4f} over all samples "
        f"(KLL {worst(relu, 'kll'):.4f}, grid only {worst(relu, 'grid'):.4f}), "
        f"{worst(relu_class, 'nd'):.4f} per class (exact np.quantile "
        f"{max(r.floor for r in relu_class):.4f}); "
        f"GELU {worst(gelu, 'nd'):.4f} (KLL {worst(gelu, 'kll'):.4f})"
    )


if __name__ == "__main__":
    main()
