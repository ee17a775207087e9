"""End-to-end ingest tests against independent numpy computations on raw activations.

References are taken with plain ``register_forward_hook`` hooks (see ``conftest.py``), never
with ndstream's capture, and compared with what the written Zarr store holds.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import importlib
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from conftest import (
    DIGITS_GROUP_BY,
    DIGITS_LAYERS,
    digits_loader,
    per_neuron,
    raw_activations,
)
from strategies import expected_resolution
from torch import nn

import ndstream
from ndstream.demo import DigitsDataset
from ndstream.store import FORMAT_VERSION

RELU_LAYERS = ["relu1", "relu2", "pool", "relu3"]  # pool is a max over ReLU outputs
QS = np.linspace(0.0, 1.0, 201)


# -- helpers ------------------------------------------------------------------------------------


def group_masks(targets: np.ndarray, predicted: np.ndarray) -> dict[str, np.ndarray]:
    """Membership of every digits group, computed from labels and logits alone."""
    masks = {str(c): targets == c for c in range(10)}
    masks |= {f"pred:{c}": predicted == c for c in range(10)}
    masks["correct"] = predicted == targets
    masks["incorrect"] = predicted != targets
    return masks


def rank_errors(sorted_values: np.ndarray, estimates: np.ndarray, qs: np.ndarray) -> np.ndarray:
    """How far (in rank / N) each estimate lies from the rank interval of its quantile."""
    n = sorted_values.size
    lo = np.searchsorted(sorted_values, estimates, side="left") / n
    hi = np.searchsorted(sorted_values, estimates, side="right") / n
    return np.maximum(0.0, np.maximum(lo - qs, qs - hi))


def bits(a: np.ndarray) -> np.ndarray:
    """The float32 bit patterns, so that equality is bit equality (NaN payload included)."""
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def nan_min_max(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column min and max of the finite values, NaN where a column has none."""
    finite = np.where(np.isfinite(x), x, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return (
            np.nanmin(finite, axis=0).astype(np.float32),
            np.nanmax(finite, axis=0).astype(np.float32),
        )


def zero_bin(summary: ndstream.Summary) -> np.ndarray:
    """Index of each neuron's zero bin ``[0, 0]`` on its own bin axis."""
    is_zero = (summary.lower == 0) & (summary.upper == 0)
    assert np.all(is_zero.sum(axis=1) == 1)
    return is_zero.argmax(axis=1)


#: The arrays of a layer group, as docs/store-format.md lists them.
# A layer group's arrays. These layers are narrow enough that their groups keep the full
# bin budget, so they keep no pooled sketch and have no pooled subgroup (see all_arrays).
LAYER_ARRAYS = {
    "counts", "min", "max", "min_count", "max_count", "atom", "atom_count", "nan_count", "posinf_count",
    "neginf_count", "count", "rank_bound",
    "neuron", "group", "grouping", "bin", "bin_lower", "bin_upper", "resolution",
}  # fmt: skip
FINE = "/fine_counts"  # and fine counts, in a layer past the exact form with few groups


def all_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of every layer group of a store, its pooled subgroup's as
    ``layer/pooled.name``, read with zarr directly."""
    root = zarr.open_group(path, mode="r", zarr_format=3)
    out = {}
    for layer_name, group in root.groups():
        for array_name, array in group.arrays():
            out[f"{layer_name}/{array_name}"] = array[...]
        for sub_name, sub in group.groups():
            for array_name, array in sub.arrays():
                out[f"{layer_name}/{sub_name}.{array_name}"] = array[...]
    return out


def tree_digest(path: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``path``."""
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def assert_summary_matches(
    summary: ndstream.Summary, values: np.ndarray, masks: list[np.ndarray], exact: bool = True
) -> None:
    """Totals, non-finite counts, zero counts and min/max of each group vs numpy.

    ``values`` are ``[rows, neuron]``; ``masks[g]`` selects the rows of group ``g``.
    """
    zb = zero_bin(summary)
    for g, mask in enumerate(masks):
        x = values[mask]
        n_rows = int(mask.sum())
        assert summary.totals[g] == n_rows
        binned = summary.counts[:, g].sum(axis=1, dtype=np.int64)
        np.testing.assert_array_equal(np.isnan(x).sum(axis=0), summary.nan[:, g])
        np.testing.assert_array_equal(np.isposinf(x).sum(axis=0), summary.posinf[:, g])
        np.testing.assert_array_equal(np.isneginf(x).sum(axis=0), summary.neginf[:, g])
        np.testing.assert_array_equal(np.isfinite(x).sum(axis=0), binned)
        np.testing.assert_array_equal(
            binned + summary.nan[:, g] + summary.posinf[:, g] + summary.neginf[:, g],
            np.full(x.shape[1], n_rows),
        )
        np.testing.assert_array_equal(
            (x == 0).sum(axis=0), summary.counts[np.arange(x.shape[1]), g, zb]
        )
        if n_rows == 0:
            assert np.isnan(summary.mins[:, g]).all() and np.isnan(summary.maxs[:, g]).all()
            continue
        lo, hi = nan_min_max(x)
        if exact:
            np.testing.assert_array_equal(bits(summary.mins[:, g]), bits(lo))
            np.testing.assert_array_equal(bits(summary.maxs[:, g]), bits(hi))
            np.testing.assert_array_equal(summary.min_count[:, g], (x == lo).sum(axis=0))
            np.testing.assert_array_equal(summary.max_count[:, g], (x == hi).sum(axis=0))
        else:
            np.testing.assert_allclose(summary.mins[:, g], lo, rtol=2e-6, atol=1e-6)
            np.testing.assert_allclose(summary.maxs[:, g], hi, rtol=2e-6, atol=1e-6)


# -- exactness on the digits CNN (max reduction, three groupings) ------------------------------


def test_store_layout_and_group_order(digits_store, digits_targets, digits_predicted) -> None:
    assert digits_store.layers == DIGITS_LAYERS
    assert digits_store.groups == list(group_masks(digits_targets, digits_predicted))
    assert digits_store.groupings == ["label"] * 10 + ["predicted"] * 10 + ["correct"] * 2


@pytest.mark.parametrize("layer", DIGITS_LAYERS)
def test_counts_min_max_zeros_exact_per_group(
    layer, digits_store, digits_raw, digits_targets, digits_predicted
) -> None:
    values = per_neuron(digits_raw[0][layer], "max")
    masks = group_masks(digits_targets, digits_predicted)
    summary = digits_store.summary(layer, group=list(range(len(digits_store.groups))))
    assert summary.groups == tuple(masks)
    assert summary.counts.shape[:2] == (values.shape[1], len(masks))
    assert_summary_matches(summary, values, list(masks.values()))


@pytest.mark.parametrize("layer", DIGITS_LAYERS)
def test_quantiles_within_bin_mass_bound(
    layer, digits_store, digits_raw, digits_targets, digits_predicted
) -> None:
    values = per_neuron(digits_raw[0][layer], "max").astype(np.float64)
    masks = group_masks(digits_targets, digits_predicted)
    selections: list[tuple[object, np.ndarray]] = [
        (None, np.ones(len(digits_targets), dtype=bool)),
        ("3", masks["3"]),
        ("pred:7", masks["pred:7"]),
        ("incorrect", masks["incorrect"]),
        (["0", "1"], masks["0"] | masks["1"]),
    ]
    for group, mask in selections:
        n = int(mask.sum())
        est = digits_store.quantile(layer, QS, group=group)
        assert est.shape == (values.shape[1], QS.size)
        pooled_bins = digits_store.summary(layer, group).pooled().counts
        for j in range(values.shape[1]):
            data = np.sort(values[mask, j])
            bound = pooled_bins[j].max() / n + 1.0 / n
            err = rank_errors(data, est[j], QS)
            assert err.max() <= bound + 1e-12, (layer, group, j, err.max(), bound)
            # The ends are exact: the sketch keeps each neuron's min and max.
            assert est[j, 0] == data[0] and est[j, -1] == data[-1]


def _continuous_relu_net() -> nn.Module:
    torch.manual_seed(1234)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 8 * 8, 10),
    ).eval()


def test_relu_rank_error_below_half_percent_on_wide_distributions(tmp_path) -> None:
    """ReLU activations of a random conv net on Gaussian inputs, every position kept."""
    model = _continuous_relu_net()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1000, 3, 8, 8, generator=gen)
    y = torch.randint(0, 10, (1000,), generator=gen)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=250)
    store = ndstream.ingest(
        model, loader, tmp_path / "s.zarr", layers=["1", "3"], reduction="none", progress=False
    )
    raw, _ = raw_activations(model, x, ["1", "3"])
    for layer in ["1", "3"]:
        values = per_neuron(raw[layer], "none").astype(np.float64)
        est = store.quantile(layer, QS)
        worst = max(
            rank_errors(np.sort(values[:, j]), est[j], QS).max() for j in range(values.shape[1])
        )
        assert worst < 0.005, (layer, worst)


def test_digits_relu_rank_error_below_half_percent(digits_store, digits_raw) -> None:
    """The max-reduced digits ReLU layers, on the default grid: < 0.5 % max rank error.

    Pre-ReLU layers (conv*, fc*) pile up at one value (a bias) and are not held to this.
    """
    assert digits_store.grid == ndstream.GridSpec()  # the default grid
    for layer in RELU_LAYERS:
        values = per_neuron(digits_raw[0][layer], "max").astype(np.float64)
        est = digits_store.quantile(layer, QS)
        assert est.shape == (values.shape[1], QS.size)
        for j in range(values.shape[1]):
            assert rank_errors(np.sort(values[:, j]), est[j], QS).max() < 0.005, (layer, j)


def test_digits_resolution_is_the_finest_that_fits(digits_store, digits_raw) -> None:
    """Each neuron's resolution, recomputed from the raw activations with numpy."""
    grid = digits_store.grid
    n_groups = len(digits_store.groups)
    differ = 0
    for layer in DIGITS_LAYERS:
        values = per_neuron(digits_raw[0][layer], "max")
        budget = grid.bins_budget(values.shape[1], n_groups)
        want = expected_resolution(values, grid, budget)
        got = digits_store.resolution(layer)
        assert got.shape == (values.shape[1],), layer
        np.testing.assert_array_equal(got, want, err_msg=layer)
        np.testing.assert_array_equal(digits_store.summary(layer).resolution, want, err_msg=layer)
        differ += len(set(want.tolist())) > 1
    assert differ > 0  # somewhere in the net, neurons of one layer sit at different resolutions


# -- reductions ---------------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_reduction_counts_and_extremes(
    reduction, tmp_path, digits_model, digits_dataset, digits_raw, digits_targets
) -> None:
    layers = ["conv1", "relu2", "pool", "fc1"]
    store = ndstream.ingest(
        digits_model,
        digits_loader(digits_dataset),
        tmp_path / "s.zarr",
        layers=layers,
        reduction=reduction,
        group_by="label",
        progress=False,
    )
    assert store.meta.reduction == reduction
    n = len(digits_targets)
    for layer in layers:
        raw = digits_raw[0][layer]
        positions = int(np.prod(raw.shape[2:])) if raw.ndim > 2 else 1
        per_sample = positions if reduction == "none" else 1
        assert store.layer_meta(layer).values_per_sample == per_sample
        assert store.count(layer) == n * per_sample
        values = per_neuron(raw, reduction)
        rows_label = np.repeat(digits_targets, per_sample)
        masks = [rows_label == c for c in range(10)]
        for c in range(10):
            assert store.count(layer, str(c)) == int((digits_targets == c).sum()) * per_sample
        summary = store.summary(layer, list(range(10)))
        # "none" keeps raw values (bit-exact); "mean" is float32 arithmetic in torch.
        assert_summary_matches(summary, values, masks, exact=reduction == "none")


# -- groupings -----------------------------------------------------------------------------------


def test_builtin_grouping_counts(digits_store, digits_targets, digits_predicted) -> None:
    n = len(digits_targets)
    for layer in digits_store.layers:
        label_counts = [digits_store.count(layer, str(c)) for c in range(10)]
        pred_counts = [digits_store.count(layer, f"pred:{c}") for c in range(10)]
        np.testing.assert_array_equal(label_counts, np.bincount(digits_targets, minlength=10))
        np.testing.assert_array_equal(pred_counts, np.bincount(digits_predicted, minlength=10))
        correct = int((digits_predicted == digits_targets).sum())
        assert digits_store.count(layer, "correct") == correct
        assert digits_store.count(layer, "incorrect") == n - correct
        assert digits_store.count(layer, ["correct", "incorrect"]) == n
        # group=None pools the first grouping only: each sample once, not three times.
        assert digits_store.count(layer) == n
        # All groups at once, from one read, agree with numpy too.
        every = digits_store.group_counts(layer)
        assert list(every) == digits_store.groups
        np.testing.assert_array_equal(
            [every[str(c)] for c in range(10)], np.bincount(digits_targets, minlength=10)
        )
        np.testing.assert_array_equal(
            [every[f"pred:{c}"] for c in range(10)], np.bincount(digits_predicted, minlength=10)
        )
        assert (every["correct"], every["incorrect"]) == (correct, n - correct)
    assert 0 < n - correct < n  # both correctness groups are populated


def test_group_none_pools_first_grouping_only(digits_store) -> None:
    for layer in ["conv1", "fc2"]:
        pooled = digits_store.quantile(layer, QS)
        labels = digits_store.quantile(layer, QS, group=[str(c) for c in range(10)])
        np.testing.assert_array_equal(pooled, labels)
        everything = digits_store.summary(layer, list(range(len(digits_store.groups))))
        assert int(everything.totals.sum()) == 3 * digits_store.count(layer)


def test_custom_grouping(
    tmp_path, digits_model, digits_dataset, digits_raw, digits_targets
) -> None:
    def ink(inputs, targets, outputs):
        return (inputs.flatten(1).mean(dim=1) > 0.3).long()  # bright vs dark images

    grouping = ndstream.custom(ink, ["dark", "bright"], name="ink")
    store = ndstream.ingest(
        digits_model,
        digits_loader(digits_dataset),
        tmp_path / "s.zarr",
        layers=["relu1", "fc2"],
        group_by=[grouping, "label"],
        progress=False,
    )
    assert store.groups == ["dark", "bright", *[str(c) for c in range(10)]]
    assert store.groupings == ["ink", "ink"] + ["label"] * 10
    bright = digits_dataset.images.flatten(1).mean(dim=1).numpy() > 0.3
    assert 0 < bright.sum() < len(bright)
    assert store.count("fc2", "bright") == int(bright.sum())
    assert store.count("fc2", "dark") == int((~bright).sum())
    assert store.count("fc2") == len(bright)  # first grouping pooled
    for layer in ["relu1", "fc2"]:
        values = per_neuron(digits_raw[0][layer], "max")
        summary = store.summary(layer, ["dark", "bright", "7"])
        assert_summary_matches(summary, values, [~bright, bright, digits_targets == 7])


def test_unknown_grouping_is_a_config_error(tmp_path, digits_model, digits_dataset) -> None:
    with pytest.raises(ndstream.ConfigError, match="label"):
        ndstream.ingest(
            digits_model,
            digits_loader(digits_dataset),
            tmp_path / "s.zarr",
            layers=["fc2"],
            group_by="colour",
            progress=False,
        )
    assert not (tmp_path / "s.zarr").exists()


# -- limit ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("limit", "batch_size"), [(300, 64), (128, 64), (1, 64), (5000, 64)])
def test_limit(limit, batch_size, tmp_path, digits_model, digits_dataset, digits_targets) -> None:
    n = min(limit, len(digits_targets))
    store = ndstream.ingest(
        digits_model,
        digits_loader(digits_dataset, batch_size),
        tmp_path / "s.zarr",
        layers=["conv2", "fc2"],
        group_by="label",
        limit=limit,
        progress=False,
    )
    assert store.meta.samples_done == n
    assert store.meta.samples_total == n
    # The reference sees the same batches: full ones, then the head of the last one.
    raw, _ = raw_activations(digits_model, digits_dataset.images[:n], ["conv2", "fc2"], batch_size)
    for layer in ["conv2", "fc2"]:
        assert store.count(layer) == n
        counts = [store.count(layer, str(c)) for c in range(10)]
        np.testing.assert_array_equal(counts, np.bincount(digits_targets[:n], minlength=10))
        values = per_neuron(raw[layer], "max")
        summary = store.summary(layer)
        np.testing.assert_array_equal(bits(np.nanmin(summary.mins, axis=1)), bits(values.min(0)))
        np.testing.assert_array_equal(bits(np.nanmax(summary.maxs, axis=1)), bits(values.max(0)))


def test_limit_must_be_positive(tmp_path, digits_model, digits_dataset) -> None:
    with pytest.raises(ndstream.ConfigError, match="limit"):
        ndstream.ingest(
            digits_model,
            digits_loader(digits_dataset),
            tmp_path / "s.zarr",
            layers=["fc2"],
            limit=0,
            progress=False,
        )


# -- batch-size invariance -----------------------------------------------------------------------


def test_batch_size_invariance_digits(tmp_path, digits_model, digits_dataset) -> None:
    sizes, n = [7, 64, 500], 700  # 700 is no multiple of 64 or 500: the limit cuts a batch
    stores, raws, preds = {}, {}, {}
    for bs in sizes:
        path = tmp_path / f"bs{bs}.zarr"
        ndstream.ingest(
            digits_model,
            digits_loader(digits_dataset, bs),
            path,
            layers=DIGITS_LAYERS,
            group_by=DIGITS_GROUP_BY,
            limit=n,
            progress=False,
        )
        stores[bs] = all_arrays(path)
        images = digits_dataset.images[:n]
        raw, logits = raw_activations(digits_model, images, DIGITS_LAYERS, bs)
        raws[bs], preds[bs] = raw, logits.argmax(axis=1)
    # torch itself is not batch-size invariant for every op (GEMM blocking may change the last
    # bit of a Linear output); ndstream must add no variation of its own. Layers whose raw
    # activations are bit-identical across batch sizes must give bit-identical arrays.
    invariant = [
        layer
        for layer in DIGITS_LAYERS
        if all(np.array_equal(raws[sizes[0]][layer], raws[bs][layer]) for bs in sizes[1:])
    ]
    if not invariant:
        pytest.skip("torch gives no batch-size-invariant layer on this platform")
    assert all(np.array_equal(preds[sizes[0]], preds[bs]) for bs in sizes[1:])
    first = stores[sizes[0]]
    assert {k for k in first if not k.endswith(FINE)} == {
        f"{layer}/{a}" for layer in DIGITS_LAYERS for a in LAYER_ARRAYS
    }
    # The atoms come from the first samples, whatever the batches: some layer has some.
    assert any(np.isfinite(first[f"{layer}/atom"]).any() for layer in invariant)
    for bs in sizes[1:]:
        assert stores[bs].keys() == first.keys()
        for key, array in first.items():
            layer, name = key.split("/")
            if layer in invariant or name in ("count", "group", "grouping", "neuron"):
                assert stores[bs][key].dtype == array.dtype, key
                np.testing.assert_array_equal(stores[bs][key], array, err_msg=f"{key} bs={bs}")


class _Affine(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 3.0 - 1.0


class _ElementwiseNet(nn.Module):
    """Only elementwise ops: its outputs are bit-identical for any batching."""

    def __init__(self) -> None:
        super().__init__()
        self.affine = _Affine()
        self.relu = nn.ReLU()
        self.tanh = nn.Tanh()
        self.flatten = nn.Flatten()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.affine(x)
        self.tanh(a)
        return self.flatten(self.relu(a))[:, :6]


def _awkward_values(n: int, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Lognormal magnitudes of both signs over many octaves, with zeros, NaN and ±Inf."""
    rng = np.random.default_rng(seed)
    x = rng.lognormal(0.0, 4.0, size=(n, *shape)) * rng.choice([-1.0, 1.0], size=(n, *shape))
    special = rng.random(size=x.shape)
    x[special < 0.05] = 0.0
    x[(special >= 0.05) & (special < 0.06)] = np.nan
    x[(special >= 0.06) & (special < 0.07)] = np.inf
    x[(special >= 0.07) & (special < 0.08)] = -np.inf
    x[(special >= 0.08) & (special < 0.09)] = rng.uniform(-1e-40, 1e-40)  # subnormals
    return torch.from_numpy(x.astype(np.float32))


@pytest.mark.parametrize("reduction", ["max", "none"])
def test_batch_size_invariance_bit_identical(reduction, tmp_path, monkeypatch) -> None:
    model = _ElementwiseNet()
    x = _awkward_values(600, (3, 2, 2), seed=1)
    y = torch.from_numpy(np.random.default_rng(2).integers(0, 6, size=600))
    dataset = torch.utils.data.TensorDataset(x, y)
    pending = importlib.import_module("ndstream.ingestion.run")._PendingBatches
    arrays = []
    # Batch sizes, and how many samples ingest gathers before a sketch update: every batch
    # on its own, the default, or all of them in one update at the end.
    for bs, per_update in [(1, 512), (7, 1), (7, 10**9), (64, 512), (500, 512)]:
        monkeypatch.setattr(pending, "rows_per_update", per_update)
        path = tmp_path / f"bs{bs}-{per_update}.zarr"
        ndstream.ingest(
            model,
            torch.utils.data.DataLoader(dataset, batch_size=bs),
            path,
            layers=["affine", "relu", "tanh"],
            reduction=reduction,
            group_by=["label", "predicted"],
            progress=False,
        )
        arrays.append(all_arrays(path))
    assert {k for k in arrays[0] if not k.endswith(FINE)} == {
        f"{layer}/{a}" for layer in ("affine", "relu", "tanh") for a in LAYER_ARRAYS
    }
    if reduction == "none":  # 2,400 values a neuron: past the exact form
        assert {k for k in arrays[0] if k.endswith(FINE)} == {
            f"{layer}{FINE}" for layer in ("affine", "relu", "tanh")
        }
    for other in arrays[1:]:
        assert other.keys() == arrays[0].keys()
        for key, array in arrays[0].items():
            assert other[key].dtype == array.dtype, key
            np.testing.assert_array_equal(other[key], array, err_msg=key)


# -- NaN and ±Inf --------------------------------------------------------------------------------


class _Log(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(x)  # 0 -> -inf, negative -> nan


class _DivZero(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / 0.0  # positive -> +inf, negative -> -inf, 0 -> nan


class _NonFiniteNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.log = _Log()
        self.div = _DivZero()
        self.logmap = _Log()
        self.head = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, 8]
        self.log(x)
        self.div(x)
        self.logmap(x.view(-1, 2, 2, 2))  # [B, 2 neurons, 2, 2]: max over 4 positions
        return self.head(x[:, :4])  # finite logits, 4 classes


def _non_finite_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(7)
    choices = np.array([0.0, -0.0, -1.5, 2.0, 1e-40, -3e-42, 7.0, 0.25], dtype=np.float32)
    x = rng.choice(choices, size=(203, 8)).astype(np.float32)
    x[:40] *= rng.lognormal(0, 2, size=(40, 8)).astype(np.float32)
    x[50] = 0.0  # a row of zeros: log -> all -inf, div -> all nan
    x[51] = -1.0  # all negative: log -> all nan, div -> all -inf
    y = rng.integers(0, 4, size=203)
    return torch.from_numpy(x), torch.from_numpy(y)


@pytest.mark.parametrize("reduction", ["max", "none"])
def test_nan_and_inf_are_counted_exactly(reduction, tmp_path) -> None:
    model = _NonFiniteNet()
    x, y = _non_finite_inputs()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    layers = ["log", "div", "logmap"]
    store = ndstream.ingest(
        model,
        loader,
        tmp_path / "s.zarr",
        layers=layers,
        reduction=reduction,
        group_by=["label", "all"],
        progress=False,
    )
    raw, _ = raw_activations(model, x, layers)
    labels = y.numpy()
    assert store.groups == ["0", "1", "2", "3", "all"]
    for layer in layers:
        values = per_neuron(raw[layer], reduction)
        per_sample = values.shape[0] // len(labels)
        assert store.count(layer) == len(labels) * per_sample
        rows = np.repeat(labels, per_sample)
        masks = [rows == c for c in range(4)] + [np.ones(rows.size, dtype=bool)]
        summary = store.summary(layer, list(range(5)))
        assert_summary_matches(summary, values, masks)
        total_special = summary.nan[:, 4] + summary.posinf[:, 4] + summary.neginf[:, 4]
        assert total_special.sum() > 0, layer  # the test data does exercise non-finite values
        # ±Inf sit at the ends of the distribution.
        q = store.quantile(layer, [0.0, 1.0], group="all")
        has_neg, has_pos = np.isneginf(values).any(0), np.isposinf(values).any(0)
        assert np.all(np.isneginf(q[has_neg, 0]))
        assert np.all(np.isposinf(q[has_pos, 1]))
    assert np.isnan(raw["div"]).any() and np.isposinf(raw["div"]).any()
    assert np.isneginf(raw["log"]).any() and np.isnan(raw["log"]).any()


# -- existing stores and bad layers --------------------------------------------------------------


def test_existing_store_is_kept_without_overwrite_and_replaced_with_it(
    tmp_path, digits_model, digits_dataset
) -> None:
    path = tmp_path / "s.zarr"

    def run(**kwargs):
        return ndstream.ingest(
            digits_model,
            digits_loader(digits_dataset),
            path,
            layers=["fc2"],
            progress=False,
            **kwargs,
        )

    run(limit=200)
    before = tree_digest(path)
    with pytest.raises(ndstream.StoreError, match="overwrite"):
        run(limit=100)
    assert tree_digest(path) == before
    assert ndstream.open_store(path).meta.samples_done == 200

    store = run(limit=100, overwrite=True)
    assert store.meta.samples_done == 100
    assert ndstream.open_store(path).count("fc2") == 100
    assert tree_digest(path) != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr"]  # no temp or old folders


def test_existing_plain_folder_is_not_touched_without_overwrite(
    tmp_path, digits_model, digits_dataset
) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(ndstream.StoreError):
        ndstream.ingest(
            digits_model, digits_loader(digits_dataset), folder, layers=["fc2"], progress=False
        )
    assert (folder / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize(
    ("layers", "expected"),
    [
        (["conv1", "relu_2"], "relu2"),
        (["fcc1"], "fc1"),
        ("conv*x", "conv1"),
    ],
)
def test_bad_layer_name(layers, expected, tmp_path, digits_model, digits_dataset) -> None:
    path = tmp_path / "s.zarr"
    with pytest.raises(ndstream.LayerNotFoundError) as info:
        ndstream.ingest(
            digits_model, digits_loader(digits_dataset), path, layers=layers, progress=False
        )
    assert repr(expected) in str(info.value)
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def test_bad_layer_type(tmp_path, digits_model, digits_dataset) -> None:
    with pytest.raises(ndstream.LayerNotFoundError, match="Conv2d"):
        ndstream.ingest(
            digits_model,
            digits_loader(digits_dataset),
            tmp_path / "s.zarr",
            layers="type:Conv3d",
            progress=False,
        )
    assert list(tmp_path.iterdir()) == []


# -- attributes ----------------------------------------------------------------------------------


def test_attributes(digits_store_path, digits_store, digits_raw) -> None:
    root = zarr.open_group(digits_store_path, mode="r", zarr_format=3)
    attrs = root.attrs["ndstream"]
    assert attrs["format"] == "ndstream"
    assert attrs["format_version"] == FORMAT_VERSION == 8
    assert attrs["ndstream_version"] == ndstream.__version__
    assert attrs["reduction"] == "max"
    assert attrs["samples_done"] == attrs["samples_total"] == 1797
    assert attrs["complete"] is True
    assert attrs["config"] == {
        "layers": DIGITS_LAYERS,
        "reduction": "max",
        "group_by": DIGITS_GROUP_BY,
        "limit": None,
        "seed": None,
    }
    assert attrs["order"] == {"kind": "dataset", "seed": None, "n_dataset": 1797, "total": 1797}
    assert attrs["settings"] == {
        "layers": DIGITS_LAYERS,
        "reduction": "max",
        "channel_dim": {},
        "group_by": DIGITS_GROUP_BY,
        "grid": attrs["grid"],
        "calls": "separate",
    }
    assert attrs["grid"]["kind"] == "log-linear-float32"
    assert attrs["groups"] == digits_store.groups
    for stamp in (attrs["created"], attrs["updated"]):
        assert dt.datetime.fromisoformat(stamp).tzinfo is not None
    assert attrs["created"] <= attrs["updated"]
    assert len(attrs["model_fingerprint"]) == 32
    assert len(attrs["dataset_fingerprint"]) == 32
    assert [layer["name"] for layer in attrs["layers"]] == DIGITS_LAYERS
    for layer in attrs["layers"]:
        raw = digits_raw[0][layer["name"]]
        assert layer["output_shape"] == list(raw.shape[1:])
        assert layer["n_neurons"] == raw.shape[1]
        assert layer["values_per_sample"] == 1
        assert layer["node"] == layer["name"]  # these names are store paths as they are
        # the layer group's attributes hold the layer metadata only; resolutions are an array
        assert root[layer["name"]].attrs["ndstream"] == {"layer": layer}
        res = root[layer["name"]]["resolution"]
        assert res.dtype == np.int8 and res.shape == (raw.shape[1],)
        assert res.metadata.dimension_names == ("neuron",)
        assert np.all(attrs["grid"]["min_mantissa_bits"] <= res[...])
        assert np.all(res[...] <= attrs["grid"]["mantissa_bits"])
        np.testing.assert_array_equal(res[...], digits_store.summary(layer["name"]).resolution)
    types = {layer["name"]: layer["module_type"] for layer in attrs["layers"]}
    assert types["conv1"] == "Conv2d" and types["relu1"] == "ReLU" and types["fc2"] == "Linear"


def test_fingerprints_and_recorded_config(tmp_path, digits_model, digits_dataset) -> None:
    def run(name, model, dataset, **kwargs):
        return ndstream.ingest(
            model,
            digits_loader(dataset),
            tmp_path / name,
            layers=["fc2"],
            progress=False,
            limit=50,
            **kwargs,
        ).meta

    config = {"note": "recorded as given", "layers": ["fc2"], "nested": {"a": [1, 2]}}
    same_a = run("a.zarr", digits_model, digits_dataset, config=config)
    same_b = run("b.zarr", copy.deepcopy(digits_model), DigitsDataset("all"))
    assert same_a.config == config
    assert same_a.model_fingerprint == same_b.model_fingerprint
    assert same_a.dataset_fingerprint == same_b.dataset_fingerprint

    changed = copy.deepcopy(digits_model)
    with torch.no_grad():
        changed.conv2.weight[3, 2, 1, 1] += 1e-3  # one weight of a layer not even captured
    other_model = run("c.zarr", changed, digits_dataset)
    assert other_model.model_fingerprint != same_a.model_fingerprint
    assert other_model.dataset_fingerprint == same_a.dataset_fingerprint

    other_data = run("d.zarr", digits_model, DigitsDataset("test"))
    assert other_data.dataset_fingerprint != same_a.dataset_fingerprint
    assert other_data.model_fingerprint == same_a.model_fingerprint
