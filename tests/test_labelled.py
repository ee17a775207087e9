"""The read API's answers are labelled: named dimensions and their coordinates, the same numbers
as the bare sketch queries, one ``group`` parameter, many values per neuron, every group at once."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import ndstream

LAYER = "relu3"


def test_quantiles_carry_neurons_levels_and_groups(digits_store: ndstream.Store) -> None:
    s = digits_store
    n = s.n_neurons(LAYER)
    one = s.quantile(LAYER, 0.5, group="3")
    assert isinstance(one, xr.DataArray) and one.dims == ("neuron",)
    assert one.neuron.values.tolist() == list(range(n)) and float(one["quantile"]) == 0.5
    assert one.attrs == {"layer": LAYER, "group": "3"}
    np.testing.assert_array_equal(one, s.summary(LAYER, "3").quantile(0.5))
    several = s.quantile(LAYER, [0.1, 0.9], group=["3", "8"])
    assert several.dims == ("neuron", "quantile")
    assert several["quantile"].values.tolist() == [0.1, 0.9]
    assert several.attrs["group"] == "3 + 8"
    np.testing.assert_array_equal(several, s.summary(LAYER, ["3", "8"]).quantile([0.1, 0.9]))
    # Every group of the store in one call, each on its own, groupings as a coordinate.
    every = s.quantile(LAYER, [0.25, 0.75], by_group=True)
    assert every.dims == ("neuron", "group", "quantile")
    assert every.group.values.tolist() == s.groups
    assert every.grouping.values.tolist() == s.groupings
    for g in ("0", "pred:7", "incorrect"):
        np.testing.assert_array_equal(every.sel(group=g), s.quantile(LAYER, [0.25, 0.75], group=g))
    chosen = s.quantile(LAYER, 0.5, group=["3", "pred:3"], by_group=True)  # apart: allowed
    assert chosen.group.values.tolist() == ["3", "pred:3"]
    with pytest.raises(ValueError, match="different groupings"):
        s.quantile(LAYER, 0.5, group=["3", "pred:3"])  # pooled: refused


def test_bounds_come_as_a_dataset_of_three_labelled_arrays(digits_store: ndstream.Store) -> None:
    b = digits_store.quantile(LAYER, [0.5, 0.9], group="5", bounds=True)
    assert isinstance(b, xr.Dataset) and set(b.data_vars) == {"estimate", "lower", "upper"}
    plain = digits_store.summary(LAYER, "5").quantile([0.5, 0.9], True)
    for name in ("estimate", "lower", "upper"):
        assert b[name].dims == ("neuron", "quantile")
        np.testing.assert_array_equal(b[name], getattr(plain, name))
    r = digits_store.cdf(LAYER, 1.0, group="5", bounds=True, by_group=False)
    assert np.all((r.lower <= r.estimate) & (r.estimate <= r.upper))


def test_cdf_takes_many_values_per_neuron(digits_store: ndstream.Store) -> None:
    s = digits_store
    n = s.n_neurons(LAYER)
    grid = np.linspace(0, 3, 7)[None, :] * (1 + np.arange(n))[:, None] / n  # [neuron, 7]
    many = s.cdf(LAYER, grid, group="8")
    assert many.dims == ("neuron", "value") and many.shape == (n, 7)
    np.testing.assert_array_equal(many.at, grid)
    for k in range(7):  # the same as one value per neuron, seven times
        np.testing.assert_array_equal(many[:, k], s.cdf(LAYER, grid[:, k], group="8"))
    np.testing.assert_array_equal(s.cdf(LAYER, 0.5), s.cdf(LAYER, np.full(n, 0.5)))
    by_group = s.cdf(LAYER, grid, group=["3", "8"], by_group=True)
    assert by_group.dims == ("neuron", "group", "value")
    np.testing.assert_array_equal(by_group.sel(group="8"), many)
    with pytest.raises(ValueError, match=r"\[64, k\]"):
        s.cdf(LAYER, np.zeros((n + 1, 2)))


def test_histogram_counts_and_bounds_are_labelled(digits_store: ndstream.Store) -> None:
    s = digits_store
    h = s.histogram(LAYER, group=["3", "8"], bins=16, by_group=True)
    assert h.dims == ("neuron", "group", "bin") and h.group.values.tolist() == ["3", "8"]
    edges = np.r_[h.bin_lower.values, h.bin_upper.values[-1]]
    for g in ("3", "8"):  # one shared axis; each group's mass is its own count
        np.testing.assert_array_equal(h.sel(group=g), s.histogram(LAYER, g, bins=edges))
        np.testing.assert_allclose(h.sel(group=g).sum("bin"), s.count(LAYER, g), rtol=1e-9)
    counts = s.counts(LAYER)
    assert counts.dims == ("group",) and counts.group.values.tolist() == s.groups
    assert counts.sel(group="3").item() == s.count(LAYER, "3")
    assert dict(counts.to_series()) == s.group_counts(LAYER)
    bound = s.rank_bound(LAYER, ["3", "8"])
    assert bound.dims == ("neuron", "group") and bound.group.values.tolist() == ["3", "8"]
    assert s.rank_bound(LAYER).dims == ("neuron",)
    pooled, worst = s.worst_rank_bound(LAYER)
    assert pooled == float(np.nanmax(s.rank_bound(LAYER)))
    every = s.rank_bound(LAYER, list(range(len(s.groups))))
    assert worst == float(np.nanmax(every))


def test_a_bad_argument_is_the_callers_error_not_damage(digits_store: ndstream.Store) -> None:
    s = digits_store
    # Each was once raised inside a read and reported as a damaged store.
    with pytest.raises(IndexError, match=rf"pass 0\.\.{len(s.groups) - 1}"):
        s.rank_bound(LAYER, 99)
    with pytest.raises(ValueError, match="group=None for every sample"):
        s.rank_bound(LAYER, [])
    for layer in (None, 0):
        with pytest.raises(ndstream.LayerNotFoundError, match=r"named by a str.*'relu3'"):
            s.quantile(layer, 0.5)  # type: ignore[arg-type]
    for group in (2.0, True, ["3", 2.0]):
        with pytest.raises(TypeError, match=r"by name \(a str.*by index \(an int\)"):
            s.rank_bound(LAYER, group)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="by index"):
            s.quantile(LAYER, 0.5, group)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="by index"):
        s.count(LAYER, True)  # type: ignore[arg-type]


def test_q_is_one_level_or_a_list(digits_store: ndstream.Store) -> None:
    with pytest.raises(ValueError, match="1-D list of levels"):
        digits_store.quantile(LAYER, [[0.1, 0.5]])
    with pytest.raises(ValueError, match="1-D list of levels"):
        digits_store.quantile(LAYER, [[0.5]], by_group=True, bounds=True)
    with pytest.raises(ValueError, match="1-D list of levels"):
        digits_store.summary(LAYER, "3").quantile(np.array([[0.5]]))


def test_histogram_edges_are_finite_and_increasing(digits_store: ndstream.Store) -> None:
    s = digits_store
    for edges in ([0.0, np.nan, 2.0], [-np.inf, 0.0, np.inf]):
        with pytest.raises(ValueError, match="finite"):
            s.histogram(LAYER, "3", bins=np.array(edges))
        with pytest.raises(ValueError, match="finite"):
            s.summary(LAYER, "3").histogram(np.array(edges))
    with pytest.raises(ValueError, match=r"strictly increasing.*sort them"):
        s.histogram(LAYER, "3", bins=[0.0, 2.0, 1.0])
    for bins in (1.7, np.nan, True, "ten"):
        with pytest.raises(ValueError, match="whole number of bins"):
            s.histogram(LAYER, "3", bins=bins)  # type: ignore[arg-type]
