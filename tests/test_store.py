"""The on-disk store: xarray view, read API, refusal of non-stores, and a write/read round trip."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
import zarr
from conftest import DIGITS_LAYERS, per_neuron
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import assert_summaries_identical

import ndstream
from ndstream.sketch import GridSpec, LayerSketch, SketchSpec
from ndstream.store import FORMAT_VERSION, LayerMeta, StoreMeta, snapshots, write_store, zarr_v3
from ndstream.store.integrity import MANIFEST

SUMMARY_ARRAYS = {
    "counts": "counts",
    "min": "mins",
    "max": "maxs",
    "nan_count": "nan",
    "posinf_count": "posinf",
    "neginf_count": "neginf",
    "count": "totals",
}


# -- xarray ------------------------------------------------------------------------------------


@pytest.mark.parametrize("layer", DIGITS_LAYERS)
def test_xarray_opens_every_layer_without_warnings(layer, digits_store_path, digits_store) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = xr.open_zarr(digits_store_path, group=layer)
        ds.load()
    n = digits_store.n_neurons(layer)
    summary = digits_store.summary(layer, list(range(len(digits_store.groups))))
    n_bins = summary.counts.shape[2]
    sizes = {"neuron": n, "group": len(digits_store.groups), "bin": n_bins}
    if summary.fine is not None:  # past the exact form, with few groups (see docs)
        sizes.update(extreme=2, fine_bin=summary.fine.shape[2])
        assert ds["fine_counts"].dims == ("neuron", "extreme", "fine_bin")
        np.testing.assert_array_equal(ds["fine_counts"].values, summary.fine)
    assert dict(ds.sizes) == sizes
    assert ds["counts"].dims == ("neuron", "group", "bin")
    for name in ("min", "max", "nan_count", "posinf_count", "neginf_count"):
        assert ds[name].dims == ("neuron", "group")
    assert ds["count"].dims == ("group",)
    for coord in ("neuron", "group", "bin", "bin_lower", "bin_upper", "grouping"):
        assert coord in ds.coords, coord
    np.testing.assert_array_equal(ds["neuron"].values, np.arange(n))
    np.testing.assert_array_equal(ds["bin"].values, np.arange(n_bins))
    assert [str(g) for g in ds["group"].values] == digits_store.groups
    assert [str(g) for g in ds["grouping"].values] == digits_store.groupings
    # every neuron has its own bin edges: 2-d coordinates, NaN-padded to the widest neuron
    assert ds["bin_lower"].dims == ds["bin_upper"].dims == ("neuron", "bin")
    assert ds["bin_lower"].shape == (n, n_bins) and ds["bin_lower"].dtype == np.float32
    assert ds["bin_upper"].dtype == np.float32
    np.testing.assert_array_equal(ds["bin_lower"].values, summary.lower)
    np.testing.assert_array_equal(ds["bin_upper"].values, summary.upper)
    assert summary.lower.shape == (n, n_bins)
    padding = np.isnan(summary.lower)
    np.testing.assert_array_equal(np.isnan(summary.upper), padding)
    assert not summary.counts[np.broadcast_to(padding[:, None, :], summary.counts.shape)].any()
    # each neuron's resolution is an int8 array along the neuron axis; the group's attributes
    # hold the layer metadata only
    assert ds["resolution"].dims == ("neuron",) and ds["resolution"].dtype == np.int8
    np.testing.assert_array_equal(ds["resolution"].values, summary.resolution)
    np.testing.assert_array_equal(digits_store.resolution(layer), summary.resolution)
    assert ds.attrs["ndstream"] == {"layer": digits_store.layer_meta(layer).to_dict()}
    for var, attr in SUMMARY_ARRAYS.items():
        expected = getattr(summary, attr)
        assert ds[var].dtype == expected.dtype, var
        np.testing.assert_array_equal(ds[var].values, expected, err_msg=var)
    # Selecting by group name works through the coordinate.
    np.testing.assert_array_equal(
        ds["counts"].sel(group="pred:4").values,
        digits_store.summary(layer, "pred:4").counts[:, 0],
    )


def test_to_xarray_equals_open_zarr(digits_store_path, digits_store) -> None:
    for layer in ["conv1", "fc2"]:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            ours = digits_store.to_xarray(layer).load()
        xr.testing.assert_identical(ours, xr.open_zarr(digits_store_path, group=layer).load())
    with pytest.raises(ndstream.LayerNotFoundError):
        digits_store.to_xarray("conv9")


# -- read API --------------------------------------------------------------------------------------


def test_layers_groups_neurons(digits_store, digits_raw) -> None:
    assert digits_store.layers == DIGITS_LAYERS
    assert len(digits_store.groups) == 22
    assert digits_store.groups[:3] == ["0", "1", "2"]
    assert digits_store.groups[-2:] == ["correct", "incorrect"]
    for layer in DIGITS_LAYERS:
        assert digits_store.n_neurons(layer) == digits_raw[0][layer].shape[1]
    assert "1797 samples" in repr(digits_store)


def test_count_selectors(digits_store, digits_targets, digits_predicted) -> None:
    layer = "relu2"
    n = len(digits_targets)
    label = np.bincount(digits_targets, minlength=10)
    pred = np.bincount(digits_predicted, minlength=10)
    assert digits_store.count(layer) == n
    assert digits_store.count(layer, None) == n
    assert digits_store.count(layer, "3") == label[3]
    assert digits_store.count(layer, 3) == label[3]
    assert digits_store.count(layer, np.int64(13)) == pred[3]
    assert digits_store.count(layer, "pred:3") == pred[3]
    assert digits_store.count(layer, -1) == int((digits_predicted != digits_targets).sum())
    # A sample counts once in each grouping: pooling across them would count it twice.
    for pooled in (
        lambda g: digits_store.count(layer, g),
        lambda g: digits_store.quantile(layer, 0.5, g),
        lambda g: digits_store.cdf(layer, np.zeros(digits_store.n_neurons(layer)), g),
        lambda g: digits_store.histogram(layer, g),
    ):
        with pytest.raises(ValueError, match=r"different groupings \(label, predicted\)"):
            pooled(["3", "pred:3"])
    assert digits_store.summary(layer, ["3", "pred:3"]).groups == ("3", "pred:3")
    assert digits_store.count(layer, [0, 1, "2"]) == label[:3].sum()
    assert digits_store.count(layer, [str(c) for c in range(10)]) == n
    with pytest.raises(IndexError):
        digits_store.count(layer, 22)
    with pytest.raises(ValueError):
        digits_store.count(layer, [])
    # A group named twice (by name, by index, or both) would count its samples twice.
    for twice in (["3", "3"], [3, "3"], [0, -22]):
        with pytest.raises(ValueError, match="more than once"):
            digits_store.count(layer, twice)
        with pytest.raises(ValueError, match="more than once"):
            digits_store.quantile(layer, 0.5, twice)


def test_unknown_names_list_close_ones(digits_store) -> None:
    with pytest.raises(ndstream.LayerNotFoundError) as info:
        digits_store.count("relu_2")
    assert "'relu2'" in str(info.value)
    with pytest.raises(ndstream.LayerNotFoundError) as info:
        digits_store.quantile("fc3", 0.5)
    assert "'fc2'" in str(info.value) or "'fc1'" in str(info.value)
    with pytest.raises(ndstream.GroupNotFoundError) as info:
        digits_store.count("conv1", "pred:11")
    assert isinstance(info.value, KeyError)  # still a KeyError, for code that catches that
    assert "'pred:1'" in str(info.value)
    assert str(info.value).startswith("no group 'pred:11'")  # the message, not its repr
    with pytest.raises(ndstream.GroupNotFoundError) as info:
        digits_store.quantile("conv1", 0.5, group="corect")
    assert "'correct'" in str(info.value)
    with pytest.raises(ndstream.GroupNotFoundError):
        digits_store.summary("conv1", ["3", "three"])
    # A name near none lists the store's layers as such, not as close ones.
    with pytest.raises(ndstream.LayerNotFoundError) as info:
        digits_store.count("zzzzzz")
    assert "closest" not in str(info.value)
    assert f"; its layers: {', '.join(map(repr, digits_store.layers))}" in str(info.value)


def test_quantile_shapes_and_monotonicity(digits_store, digits_raw) -> None:
    layer = "conv2"
    n = digits_store.n_neurons(layer)
    median = digits_store.quantile(layer, 0.5)
    assert median.shape == (n,)
    qs = [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0]
    several = digits_store.quantile(layer, qs)
    assert several.shape == (n, len(qs))
    assert digits_store.quantile(layer, np.array(qs), group="7").shape == (n, len(qs))
    np.testing.assert_array_equal(several[:, 3], median)
    assert np.all(np.diff(several, axis=1) >= 0)
    values = per_neuron(digits_raw[0][layer], "max")
    np.testing.assert_array_equal(several[:, 0], values.min(axis=0))
    np.testing.assert_array_equal(several[:, -1], values.max(axis=0))
    for bad in (1.5, -0.1, [0.5, float("nan")]):
        with pytest.raises(ValueError):
            digits_store.quantile(layer, bad)


def test_cdf(digits_store, digits_raw) -> None:
    layer = "fc1"
    values = per_neuron(digits_raw[0][layer], "max").astype(np.float64)
    n_neurons = values.shape[1]
    lo, hi = values.min(axis=0), values.max(axis=0)
    np.testing.assert_array_equal(digits_store.cdf(layer, lo - 1.0), np.zeros(n_neurons))
    np.testing.assert_array_equal(digits_store.cdf(layer, hi + 1.0), np.ones(n_neurons))
    median = np.median(values, axis=0)
    ranks = digits_store.cdf(layer, median)
    assert ranks.shape == (n_neurons,)
    # Within the mass of the bin holding each median (plus one value) of 0.5.
    bins = digits_store.summary(layer).pooled().counts
    bound = bins.max(axis=1) / values.shape[0] + 1.0 / values.shape[0]
    assert np.all(np.abs(ranks - 0.5) <= bound)
    # A scalar broadcasts to every neuron.
    assert digits_store.cdf(layer, 0.0).shape == (n_neurons,)
    with pytest.raises(ValueError, match=str(n_neurons)):
        digits_store.cdf(layer, np.zeros(n_neurons + 1))


def test_histogram(digits_store, digits_raw) -> None:
    layer = "relu3"
    values = per_neuron(digits_raw[0][layer], "max")
    finite = np.isfinite(values).sum(axis=0)
    hist = digits_store.histogram(layer, bins=64)
    counts, edges = np.asarray(hist), np.r_[hist.bin_lower.values, hist.bin_upper.values[-1]]
    assert hist.dims == ("neuron", "bin") and list(hist.neuron.values) == list(range(64))
    np.testing.assert_array_equal(hist.bin_lower.values[1:], hist.bin_upper.values[:-1])
    assert counts.shape == (values.shape[1], 64) and edges.shape == (65,)
    assert edges[0] == values.min() and edges[-1] == values.max()  # the layer's finite range
    np.testing.assert_allclose(counts.sum(axis=1), finite, rtol=1e-9)
    assert np.all(counts >= 0)

    wide = np.linspace(float(values.min()) - 1.0, float(values.max()) + 1.0, 11)
    counts_wide = digits_store.histogram(layer, bins=wide)
    np.testing.assert_array_equal(counts_wide.bin_lower, wide[:-1])
    np.testing.assert_array_equal(counts_wide.bin_upper, wide[1:])
    np.testing.assert_allclose(counts_wide.sum(axis=1), finite, rtol=1e-9)

    # Edges covering part of the range: never more mass than the data has, nor than lies
    # in the bins the edges touch.
    part = np.linspace(0.5, 2.0, 7)
    counts_part = digits_store.histogram(layer, bins=part)
    assert np.all(counts_part.sum(axis=1) <= finite + 1e-9)
    in_range = ((values >= 0.5) & (values <= 2.0)).sum(axis=0)
    summary = digits_store.summary(layer).pooled()
    touching = (summary.upper > 0.5) & (summary.lower <= 2.0)  # [neuron, bin]; NaN never
    upper_bound = (summary.counts * touching).sum(axis=1)
    assert np.all(counts_part.sum(axis=1) <= upper_bound + 1e-9)
    assert np.all(upper_bound >= in_range)

    one = digits_store.histogram(layer, group="5", bins=16)
    np.testing.assert_allclose(one.sum(axis=1), digits_store.count(layer, "5"), rtol=1e-9)
    assert one.attrs == {"layer": layer, "group": "5"}
    with pytest.raises(ValueError):
        digits_store.histogram(layer, bins=np.array([1.0, 0.5, 2.0]))
    with pytest.raises(ValueError):
        digits_store.histogram(layer, bins=0)


# -- refusing what is not a store ------------------------------------------------------------------


def test_open_missing_path(tmp_path) -> None:
    with pytest.raises(ndstream.StoreError, match="does not exist"):
        ndstream.open_store(tmp_path / "nothing-here")


def test_open_plain_folder(tmp_path) -> None:
    (tmp_path / "notes.txt").write_text("not a store")
    with pytest.raises(ndstream.StoreError) as info:
        ndstream.open_store(tmp_path)
    assert "not a Zarr v3 store" in str(info.value)
    assert "ndstream ingest" in str(info.value)


def test_open_other_zarr_group(tmp_path) -> None:
    group = zarr.open_group(tmp_path / "other.zarr", mode="w", zarr_format=3)
    group.attrs["creator"] = "someone else"
    group.create_array("x", shape=(3,), dtype="f4")
    with pytest.raises(ndstream.StoreError) as info:
        ndstream.open_store(tmp_path / "other.zarr")
    assert "not an ndstream store" in str(info.value)


def _edit_root_attrs(path: Path, edit) -> None:
    meta_file = path / "zarr.json"
    doc = json.loads(meta_file.read_text())
    edit(doc["attributes"]["ndstream"])
    meta_file.write_text(json.dumps(doc))


def test_open_unsupported_format_version(tmp_path, digits_store_path) -> None:
    path = tmp_path / "future.zarr"
    shutil.copytree(digits_store_path, path)
    _edit_root_attrs(path, lambda a: a.update(format_version=999))
    with pytest.raises(ndstream.StoreError) as info:
        ndstream.open_store(path)
    message = str(info.value)
    assert "999" in message and f"version {FORMAT_VERSION}" in message and "upgrade" in message
    ndstream.open_store(digits_store_path)  # the original is untouched and still opens


@pytest.mark.parametrize(
    "edit",
    [
        lambda a: a.pop("layers"),
        lambda a: a.update(written_by_a_newer_minor_version=True),
        lambda a: a["grid"].update(kind="t-digest"),
        lambda a: a["grid"].update(bins_per_octave=8),
        lambda a: a["grid"].update(mantissa_bits=0),
        lambda a: a["layers"][0].pop("n_neurons"),
    ],
    ids=[
        "missing-field",
        "unknown-field",
        "unknown-grid",
        "unknown-grid-field",
        "invalid-grid",
        "missing-layer-field",
    ],
)
def test_open_damaged_root_attributes_raises_store_error(tmp_path, digits_store_path, edit) -> None:
    path = tmp_path / "damaged.zarr"
    shutil.copytree(digits_store_path, path)
    _edit_root_attrs(path, edit)
    with pytest.raises(ndstream.StoreError):
        ndstream.open_store(path)


@pytest.mark.parametrize(
    "consolidated", [True, False], ids=["as-written", "without-consolidated-metadata"]
)
def test_open_store_missing_a_layer_folder(tmp_path, digits_store_path, consolidated) -> None:
    path = tmp_path / "no-relu2.zarr"
    shutil.copytree(digits_store_path, path)
    shutil.rmtree(path / "relu2")
    if not consolidated:
        meta_file = path / "zarr.json"
        doc = json.loads(meta_file.read_text())
        assert doc.pop("consolidated_metadata", None) is not None
        meta_file.write_text(json.dumps(doc))
    with pytest.raises(ndstream.StoreError) as info:
        ndstream.open_store(path)
    message = str(info.value)
    assert "relu2" in message and "overwrite" in message
    assert "conv1" not in message  # only the missing layer is named


# -- write/read round trip -------------------------------------------------------------------------

_SPECIAL = [0.0, -0.0, np.nan, np.inf, -np.inf, 1e-40, -1e-44, 3.4e38, -3.4e38, 1e-30, 1.0]


@st.composite
def _layer_data(draw, groups: tuple[str, ...]) -> tuple[int, np.ndarray, np.ndarray]:
    n_neurons = draw(st.integers(1, 5))
    n_rows = draw(st.integers(0, 60))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    scale = draw(st.sampled_from([1e-3, 1.0, 1e3]))
    x = rng.standard_normal((n_rows, n_neurons)) * scale
    x = x * np.exp(rng.uniform(-6, 6, size=x.shape))
    pick = rng.random(x.shape) < draw(st.sampled_from([0.0, 0.2, 1.0]))
    x[pick] = rng.choice(_SPECIAL, size=int(pick.sum()))
    gids = rng.integers(0, len(groups), size=n_rows)
    return n_neurons, x.astype(np.float32), gids


_layer_names = st.lists(
    st.sampled_from(["conv1", "features.0", "blocks.3.mlp.fc2", "head", "layer4.1.relu"]),
    min_size=1,
    max_size=3,
    unique=True,
)
_group_names = st.lists(
    st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), min_size=1, max_size=8),
    min_size=1,
    max_size=4,
    unique=True,
)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
@given(data=st.data(), layers=_layer_names, groups=_group_names)
def test_write_read_round_trip_is_bit_exact(data, layers, groups) -> None:
    groups_t = tuple(groups)
    grid = data.draw(
        st.sampled_from(
            [
                GridSpec(),
                GridSpec(mantissa_bits=5),
                GridSpec(mantissa_bits=1, exact_values=0),
                GridSpec(mantissa_bits=8, min_mantissa_bits=2, max_bins=16),  # coarsens
                GridSpec(max_bins=8),  # every neuron coarsens from exact float32 on its own
            ]
        )
    )
    summaries, sources, metas, raw = {}, {}, [], {}
    for name in layers:
        n_neurons, x, gids = data.draw(_layer_data(groups_t))
        raw[name] = (SketchSpec(n_neurons, groups_t, grid), x, gids)
        sketch = LayerSketch(raw[name][0])
        for chunk in np.array_split(np.arange(x.shape[0]), 3):
            sketch.update(x[chunk], gids[chunk])
        summaries[name] = sketch.finalize()
        # the writer takes a finalized Summary or the sketch itself (finalized block-wise)
        sources[name] = data.draw(st.sampled_from([summaries[name], sketch]))
        metas.append(
            LayerMeta(
                name=name,
                module_type="Linear",
                n_neurons=n_neurons,
                channel_dim=1,
                output_shape=(n_neurons,),
                values_per_sample=1,
            )
        )
    meta = StoreMeta(
        layers=tuple(metas),
        groups=groups_t,
        groupings=("custom",) * len(groups_t),
        reduction="max",
        grid=grid.to_dict(),
        model_fingerprint="m" * 32,
        dataset_fingerprint="",
        samples_done=0,
        samples_total=None,
        complete=True,
        config={"layers": list(layers)},
        ndstream_version=ndstream.__version__,
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rt.zarr"
        write_store(path, meta, sources)
        store = ndstream.open_store(path)
        assert store.meta == meta
        assert store.grid == grid
        assert store.layers == list(layers)
        assert store.groups == list(groups)
        for name, expected in summaries.items():
            got = store.summary(name, list(range(len(groups))))
            assert got.groups == expected.groups
            np.testing.assert_array_equal(got.resolution, expected.resolution)
            np.testing.assert_array_equal(store.resolution(name), expected.resolution)
            assert got.grid == expected.grid == grid
            for attr in ("counts", "lower", "upper", "mins", "maxs", "nan", "posinf", "neginf"):
                a, b = getattr(got, attr), getattr(expected, attr)
                assert a.dtype == b.dtype and a.shape == b.shape, (name, attr)
                assert a.tobytes() == b.tobytes(), (name, attr)
            assert got.totals.tobytes() == expected.totals.tobytes()
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                ds = xr.open_zarr(path, group=name).load()
            assert ds["counts"].values.tobytes() == expected.counts.tobytes()
            assert ds["bin_lower"].dims == ds["bin_upper"].dims == ("neuron", "bin")
            assert ds["bin_lower"].values.tobytes() == expected.lower.tobytes()
            assert ds["bin_upper"].values.tobytes() == expected.upper.tobytes()
            assert ds["resolution"].dims == ("neuron",) and ds["resolution"].dtype == np.int8
            np.testing.assert_array_equal(ds["resolution"].values, expected.resolution)
            assert ds.attrs["ndstream"] == {"layer": store.layer_meta(name).to_dict()}
            assert [str(g) for g in ds["group"].values] == list(groups)
            # A sketch restored from the store goes on as if it had never stopped.
            spec, x, gids = raw[name]
            restored = LayerSketch.from_summary(got, spec)
            restored.update(x[::-1] * 0.5, gids[::-1])
            both = LayerSketch(spec)
            both.update(np.concatenate([x, x[::-1] * 0.5]), np.concatenate([gids, gids[::-1]]))
            assert_summaries_identical(restored.finalize(), both.finalize())
        with pytest.raises(ndstream.StoreError, match="exists"):
            write_store(path, meta, sources)


# -- layout on disk ---------------------------------------------------------------------------------


def test_chunks_compression_and_dtypes_on_disk(tmp_path) -> None:
    """docs/store-format.md: up to 1,024 neurons a chunk, Blosc lz4, narrowest count type."""
    n, groups = 2500, ("a", "b", "c")
    grid = GridSpec(max_bins=16)  # a few dozen bins per neuron at most
    rng = np.random.default_rng(50)
    # neuron j spreads over up to 0.01 + 4 j / n octaves: resolutions from 10 bits down to 2
    spread = np.linspace(0.01, 4.0, n)
    x = np.exp2(rng.uniform(0, 1, (300, n)) * spread + rng.uniform(-8, 8, n))
    x = (x * rng.choice([-1.0, 1.0], x.shape)).astype(np.float32)
    x[rng.random(x.shape) < 0.3] = 0.0
    gids = rng.integers(0, 3, 300)
    sketch = LayerSketch(SketchSpec(n, groups, grid))
    sketch.update(x, gids)
    summary = sketch.finalize()
    assert summary.counts.dtype == np.uint16  # 300 values at most per group
    layer = LayerMeta(
        name="wide", module_type="Linear", n_neurons=n, channel_dim=1, output_shape=(n,),
        values_per_sample=1,
    )  # fmt: skip
    meta = StoreMeta(
        layers=(layer,),
        groups=groups,
        groupings=("custom",) * 3,
        reduction="max",
        grid=grid.to_dict(),
        model_fingerprint="m" * 32,
        dataset_fingerprint="",
        samples_done=300,
        samples_total=300,
        complete=True,
    )
    for i, source in enumerate((summary, sketch)):
        path = tmp_path / f"s{i}.zarr"
        write_store(path, meta, {"wide": source})
        root = zarr.open_group(path, mode="r", zarr_format=3)
        n_bins = summary.counts.shape[2]
        counts = root["wide/counts"]
        assert counts.dtype == np.uint16
        # all 3 groups of 1,024 neurons fit in 4 MB of counts: one chunk of groups
        assert counts.chunks == (1024, 3, n_bins)
        assert root["wide/bin_lower"].chunks == root["wide/bin_upper"].chunks == (1024, n_bins)
        assert root["wide/bin_lower"].dtype == root["wide/bin_upper"].dtype == np.float32
        for name in ("min", "max", "nan_count", "posinf_count", "neginf_count"):
            assert root[f"wide/{name}"].chunks == (1024, 3), name
        assert root["wide/resolution"].dtype == np.int8
        assert root["wide/resolution"].metadata.dimension_names == ("neuron",)
        for name in ("counts", "bin_lower", "min", "count", "resolution"):
            codec, checksum = root[f"wide/{name}"].compressors
            assert codec.cname.value == "lz4" and codec.clevel == 5, name
            assert codec.shuffle.value == "shuffle", name
            assert isinstance(checksum, zarr.codecs.Crc32cCodec), name
        assert root["wide"].attrs["ndstream"] == {"layer": layer.to_dict()}
        # the chunk boundaries at neurons 1,024 and 2,048 lose nothing
        got = ndstream.open_store(path).summary("wide", [0, 1, 2])
        for attr in ("counts", "lower", "upper", "mins", "maxs", "nan", "posinf", "neginf"):
            a, b = getattr(got, attr), getattr(summary, attr)
            assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), attr
        np.testing.assert_array_equal(got.resolution, summary.resolution)
        assert len(set(summary.resolution.tolist())) > 1  # neurons at different resolutions


# -- the writer's Zarr v3 documents and chunks ----------------------------------------------

# Arrays as a store holds them: edge chunks on every axis, NaN, one-byte types, strings, and
# an empty array (no chunks at all).
_ZARR_CASES = {
    "counts": (np.arange(5 * 3 * 7, dtype=np.uint16).reshape(5, 3, 7) % 5, (2, 2, 7)),
    "min": (np.array([[np.nan, -1.5], [2.0, np.inf], [0.0, -0.0]], np.float32), (2, 2)),
    "count": (np.array([3, 0, 2**40], np.int64), (3,)),
    "resolution": (np.array([23, 1, -3], np.int8), (3,)),
    "flag": (np.array([True, False, True]), (2,)),
    "half": (np.array([[1.5, -2.0]], np.float16).byteswap().view(">f2"), (1, 2)),
    "thumbnail": (np.arange(2 * 3 * 4 * 1, dtype=np.uint8).reshape(2, 3, 4, 1), (2, 3, 4, 1)),
    "group": (np.array(["cat", "dög", ""], dtype=str), (3,)),
    # what zarr-python reads string arrays back as (a resumed run writes them again)
    "condition": (np.array(["benign", "attacked"], dtype=np.dtypes.StringDType()), (2,)),
    "empty": (np.zeros((0, 4), np.float32), (1, 4)),
}


def test_zarr_v3_writes_what_zarr_python_writes(tmp_path) -> None:
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    group = zarr.open_group(theirs, mode="w", zarr_format=3, attributes={"a": [1, "b"]})
    documents = {}
    for name, (data, chunks) in _ZARR_CASES.items():
        dims = tuple(f"d{i}" for i in range(data.ndim))
        attrs = {"coordinates": "x"} if name == "counts" else None
        is_str = data.dtype.kind in "UT"
        array = group.create_array(
            name, shape=data.shape, chunks=chunks, dtype=str if is_str else data.dtype,
            compressors=[zarr.codecs.Crc32cCodec()] if is_str else [
                zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),
                zarr.codecs.Crc32cCodec(),
            ],
            dimension_names=dims, fill_value="" if is_str else 0, attributes=attrs,
            config={"write_empty_chunks": True},
            chunk_key_encoding={"name": "default", "separator": "."},
        )  # fmt: skip
        array[...] = data
        documents[name] = zarr_v3.array_document(data.shape, data.dtype, chunks, dims, attrs)
        (ours / name).mkdir(parents=True)
        (ours / name / "zarr.json").write_bytes(zarr_v3.to_json(documents[name]))
        for key, part in zarr_v3.chunk_parts(data, chunks):
            (ours / name / key).write_bytes(zarr_v3.encode_chunk(part, chunks))
    (ours / "zarr.json").write_bytes(
        zarr_v3.to_json(zarr_v3.group_document({"a": [1, "b"]}, documents))
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        zarr.consolidate_metadata(theirs, zarr_format=3)
    files = sorted(p.relative_to(theirs) for p in theirs.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(ours) for p in ours.rglob("*") if p.is_file())
    assert Path("empty/zarr.json") in files and not list((theirs / "empty").glob("c*"))
    for rel in files:
        a, b = (theirs / rel).read_bytes(), (ours / rel).read_bytes()
        if rel.name == "zarr.json":
            assert json.loads(a) == json.loads(b), rel
        else:
            assert a == b, rel
    # and zarr-python reads ours back, through the consolidated metadata
    back = zarr.open_group(ours, mode="r", zarr_format=3, use_consolidated=True)
    for name, (data, _) in _ZARR_CASES.items():
        np.testing.assert_array_equal(back[name][...], data)


def test_zarr_v3_chunks_of_a_part_start_at_its_origin() -> None:
    data = np.ones((4, 2, 3), np.uint16)
    keys = [key for key, _ in zarr_v3.chunk_parts(data, (2, 2, 3), origin=(0, 6, 0))]
    assert keys == ["c.0.3.0", "c.1.3.0"]
    with pytest.raises(ValueError, match="chunk grid"):
        list(zarr_v3.chunk_parts(data, (2, 2, 3), origin=(0, 1, 0)))


# -- layer names that are not store paths ---------------------------------------------------------


class _OddNames(torch.nn.Module):
    """Module names a store cannot use as they are: its own `instances` group, a `/`, and a
    leading `__` (reserved by Zarr)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.add_module("instances", torch.nn.Linear(4, 3))
        self.add_module("a/b", torch.nn.ReLU())
        self.add_module("__x", torch.nn.Linear(3, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self, "__x")(getattr(self, "a/b")(self.instances(x)))


def test_layer_names_that_are_not_store_paths(tmp_path) -> None:
    model = _OddNames().eval()
    x = torch.randn(40, 4, generator=torch.Generator().manual_seed(2))
    y = torch.arange(40) % 2
    data = torch.utils.data.TensorDataset(x, y)
    path = tmp_path / "odd.zarr"
    store = ndstream.ingest(
        model, data, path, layers=["instances", "a/b", "__x"], progress=False,
        instances=ndstream.InstanceSpec(per_class=1),
    )  # fmt: skip
    assert store.layers == ["instances", "a/b", "__x"]
    assert [store.node(n) for n in store.layers] == ["%69nstances", "a%2Fb", "%5F_x"]
    assert ndstream.verify(path).ok
    # Each layer's numbers are its own (numpy on plain hooks), the instances group is intact.
    outputs = {}
    hooks = [
        m.register_forward_hook(lambda m, a, out, n=n: outputs.__setitem__(n, out.numpy()))
        for n, m in model.named_children()
    ]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    for name in store.layers:
        np.testing.assert_array_equal(
            store.quantile(name, 0.5), np.quantile(outputs[name].astype(np.float64), 0.5, axis=0)
        )
        ds = xr.open_zarr(path, group=store.node(name))
        assert int(ds["count"].sum()) == 40
    table = store.instances()
    assert table is not None and len(table) == 2
    assert set(table.values) == set(store.layers)


def test_unfinished_and_superseded_snapshots_go_whole(tmp_path: Path) -> None:
    """What a dead writer left (``tmp-``) and what a commit superseded (``trash-``) is deleted
    with every folder and file below it; committed snapshots and the links stay."""
    from ndstream.store import snapshots

    store = tmp_path / "s.zarr"
    folder = store / snapshots.SNAPSHOTS
    for name in ("tmp-dead", "trash-old", "000001"):
        for layer in ("conv1", "fc"):
            for array in ("counts", "min"):
                chunks = folder / name / layer / array
                chunks.mkdir(parents=True)
                for key in ("zarr.json", "c.0.0", "c.1.0"):
                    (chunks / key).write_bytes(b"x" * 64)
        (folder / name / "zarr.json").write_bytes(b"{}")
    (store / snapshots.CURRENT).symlink_to(Path(snapshots.SNAPSHOTS) / "000001")
    (store / ".current.tmp-dead").symlink_to(Path(snapshots.SNAPSHOTS) / "tmp-dead")

    snapshots.remove_unfinished(store)

    assert sorted(p.name for p in folder.iterdir()) == ["000001"]
    assert len(list((folder / "000001").rglob("*"))) == 2 * 2 * 4 + 2 + 1
    assert snapshots.current(store) == folder / "000001"
    assert not (store / ".current.tmp-dead").is_symlink()
    snapshots.remove_unfinished(store)  # nothing left to remove: no error


def test_a_blank_store_path_is_refused_not_read_as_here() -> None:
    for blank in ("", "  "):
        with pytest.raises(ndstream.StoreError, match="no store path given"):
            ndstream.open_store(blank)


def test_a_checkpoint_is_flushed_with_or_without_syncfs(
    tmp_path: Path, digits_store: ndstream.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Linux flushes a snapshot with one syncfs(2) of its file system; elsewhere, or where the
    # libc lacks it, every file and folder is flushed one by one. Both write the same store.
    everything = range(len(digits_store.groups))
    summaries = {name: digits_store.summary(name, group=everything) for name in digits_store.layers}
    if sys.platform.startswith("linux"):
        assert snapshots._libc_syncfs() is not None
        assert snapshots._syncfs(tmp_path)
    flushed: list[str] = []
    fsync_file = snapshots._fsync_file
    monkeypatch.setattr(snapshots, "_libc_syncfs", lambda: None)
    monkeypatch.setattr(snapshots, "_fsync_file", lambda f: (flushed.append(f), fsync_file(f)))
    path = write_store(tmp_path / "file-by-file.zarr", digits_store.meta, summaries)
    snapshot = snapshots.current(path)
    files = {str(p.relative_to(snapshot)) for p in snapshot.rglob("*") if p.is_file()}
    # flushed before the commit renamed the snapshot's folder: paths inside it compare
    inside = {f.split(f"/{snapshots.SNAPSHOTS}/", 1)[1].split("/", 1)[1] for f in flushed}
    assert MANIFEST in files and files == inside
    monkeypatch.undo()
    again = write_store(tmp_path / "syncfs.zarr", digits_store.meta, summaries)
    a, b = ndstream.open_store(path), ndstream.open_store(again)
    for name in digits_store.layers:
        np.testing.assert_array_equal(a.summary(name).counts, b.summary(name).counts)
