"""Layer frames and neuron orders, checked against the store's own queries, plain numpy, and
raw activations taken with plain forward hooks.

A tiny CNN over random 6x6 inputs keeps the store small: three true labels among eight label
groups (the label groups are named after the model's eight outputs, so five are empty), and a
custom grouping with an always-empty group. Channels 0 and 4 of the convolution have a large
negative bias, so their ReLU is always 0: neurons whose values are all equal, and ties between
neurons.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import per_neuron, raw_activations
from torch import nn

import ndstream
from ndstream.capture.groupings import custom
from ndstream.errors import GroupNotFoundError
from ndstream.explore import (
    SORTS,
    TOOLTIP_QUANTILES,
    LayerFrame,
    SortSpec,
    instance_ids,
    item,
    neuron_order,
    sort_key,
)
from ndstream.store.instances import InstanceTable

LAYERS = ["conv", "relu", "fc"]
N_SAMPLES = 150
# Labels 0, 1 and 4 (the dataset has no class names): label groups "0" to "4", from the
# labels, not one per output of the model (8); "2" and "3" never see a sample.
LABELS = (0, 1, 4)
BATCH = 32
POPULATED = ["0", "1", "4", "zero", "nonzero"]
EMPTY = ["3", "never"]
INDEX = 7  # an instance listed by index, besides the first two of each label


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 10, 3)
        self.relu = nn.ReLU()
        self.flat = nn.Flatten()
        self.fc = nn.Linear(10 * 4 * 4, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flat(self.relu(self.conv(x))))


def _half(inputs, targets, outputs):
    return (targets != 0).long()  # 0: "zero", 1: "nonzero"; "never" gets nothing


@pytest.fixture(scope="module")
def tiny() -> dict:
    torch.manual_seed(1234)
    model = Tiny().eval()
    with torch.no_grad():
        model.conv.bias[[0, 4]] = -100.0  # dead ReLU channels: always exactly 0
    x = torch.randn(N_SAMPLES, 1, 6, 6)
    y = torch.tensor(LABELS)[torch.arange(N_SAMPLES) % len(LABELS)]
    return {"model": model, "x": x, "y": y.numpy(), "data": torch.utils.data.TensorDataset(x, y)}


@pytest.fixture(scope="module")
def tiny_raw(tiny) -> dict[str, np.ndarray]:
    """``[sample, neuron]`` max-reduced outputs of every layer, from plain forward hooks."""
    raw, _ = raw_activations(tiny["model"], tiny["x"], LAYERS, batch_size=BATCH)
    return {name: per_neuron(out, "max").astype(np.float64) for name, out in raw.items()}


def _ingest(tiny, path: Path, **kwargs) -> Path:
    ndstream.ingest(
        tiny["model"],
        tiny["data"],
        path,
        layers=LAYERS,
        group_by=["label", custom(_half, ["zero", "nonzero", "never"], name="half")],
        instances=ndstream.InstanceSpec(indices=(INDEX,), per_class=2),
        batch_size=BATCH,
        progress=False,
        **kwargs,
    )
    return path


@pytest.fixture(scope="module")
def store_path(tiny, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _ingest(tiny, tmp_path_factory.mktemp("ordering") / "tiny.zarr")


@pytest.fixture(scope="module")
def store(store_path: Path) -> ndstream.Store:
    return ndstream.open_store(store_path)


@pytest.fixture(scope="module")
def frames(store: ndstream.Store) -> dict[str, LayerFrame]:
    return {layer: LayerFrame(store, layer) for layer in LAYERS}


def reference_values(store_path: Path, layer: str) -> tuple[list[str], np.ndarray]:
    """Instance ids and ``[instance, neuron]`` values, read afresh through the store API."""
    fresh = ndstream.open_store(store_path)
    table = fresh.instances()
    assert table is not None
    values = fresh.instance_values(layer)
    assert values.shape[1] == 1  # max reduction: one value per instance and neuron
    return [str(i) for i in table.index.tolist()], values[:, 0, :].astype(np.float64)


def expected_order(key: np.ndarray, descending: bool, exclude=()) -> list[int]:
    """Reference order in plain Python: NaN last, by key (either way), ties by id."""
    key = np.asarray(key, dtype=np.float64)
    drop = set(exclude)

    def rank(i: int) -> tuple:
        k = float(key[i])
        if np.isnan(k):
            return (1, 0.0, i)
        return (0, -k if descending else k, i)

    return sorted((i for i in range(key.size) if i not in drop), key=rank)


def _members(tiny, group: str) -> np.ndarray:
    y = tiny["y"]
    if group == "zero":
        return y == 0
    if group == "nonzero":
        return y != 0
    if group == "never":
        return np.zeros_like(y, dtype=bool)
    return y == int(group)


def check_order(frame: LayerFrame, spec: SortSpec, expected_key: np.ndarray) -> None:
    key = sort_key(frame, spec)
    assert key.dtype == np.float64 and key.shape == (frame.n_neurons,)
    np.testing.assert_array_equal(key, expected_key)
    for descending in (False, True):
        got = neuron_order(key, descending=descending)
        assert got.tolist() == expected_order(expected_key, descending)


# -- the store itself ---------------------------------------------------------------------


def test_fixture_store_has_what_the_tests_rely_on(store, tiny, tiny_raw):
    table = store.instances()
    assert table is not None
    y = tiny["y"]
    first_two = {int(i) for c in LABELS for i in np.flatnonzero(y == c)[:2]}
    assert store.groups[:5] == ["0", "1", "2", "3", "4"]  # from the labels
    assert sorted(table.index.tolist()) == sorted(first_two | {INDEX})
    for group in EMPTY:
        assert store.count("relu", group) == 0
    # The dead channels: every ReLU value is 0, so instances tie on them.
    assert (tiny_raw["relu"][:, [0, 4]] == 0).all()
    # Instance values are the hooked activations of those dataset indices.
    for layer in LAYERS:
        np.testing.assert_allclose(
            store.instance_values(layer)[:, 0, :], tiny_raw[layer][table.index], rtol=1e-6
        )


# -- LayerFrame ---------------------------------------------------------------------------


@pytest.mark.parametrize("layer", LAYERS)
def test_frame_instances_match_the_store(frames, store_path, layer):
    frame = frames[layer]
    ids, values = reference_values(store_path, layer)
    assert frame.instance_ids == ids
    assert frame.instance_values.dtype == np.float64
    np.testing.assert_array_equal(frame.instance_values, values)
    for row, name in enumerate(ids):
        assert frame.instance_row(name) == row


def test_instance_row_unknown_id_raises_key_error(frames):
    frame = frames["relu"]
    with pytest.raises(KeyError, match="no instance '99999'"):
        frame.instance_row("99999")
    with pytest.raises(KeyError, match="no instance"):
        frame.instance_row(str(INDEX) + "-attacked")  # right index, wrong condition
    with pytest.raises(KeyError):
        frame.ranks("99999", "0")


def test_instance_ids_with_conditions():
    table = InstanceTable(
        index=np.array([12, 12, 3]),
        position=np.array([0, 1, 2]),
        label=np.array([1, 1, 0]),
        predicted=np.array([1, 0, 0]),
        condition=np.array(["benign", "attacked", ""]),
        pair=np.array([1, 0, -1]),
        thumbnail=np.zeros((0, 0, 0, 0), dtype=np.uint8),
        values={},
    )
    assert instance_ids(table) == ["12-benign", "12-attacked", "3"]
    assert instance_ids(None) == []


def test_frame_with_given_instances_uses_them(store):
    n = store.n_neurons("fc")
    values = np.arange(2 * n, dtype=np.float32).reshape(2, 1, n)
    values[1, 0, 3] = np.nan
    table = InstanceTable(
        index=np.array([4, 4]),
        position=np.array([0, 1]),
        label=np.array([1, 1]),
        predicted=np.array([1, 2]),
        condition=np.array(["benign", "attacked"]),
        pair=np.array([1, 0]),
        thumbnail=np.zeros((0, 0, 0, 0), dtype=np.uint8),
        values={"fc": values},
    )
    frame = LayerFrame(store, "fc", instances=table)
    assert frame.instance_ids == ["4-benign", "4-attacked"]
    assert frame.instance_row("4-attacked") == 1
    np.testing.assert_array_equal(frame.instance_values, values[:, 0, :].astype(np.float64))
    # Edges grow to cover the given instances too (their largest value is above the data).
    assert np.nanmax(values) > store.extent("fc")[1]
    assert frame.edges[-1] == np.nanmax(values)
    # A NaN activation gives a NaN key, which sorts last either way.
    key = sort_key(frame, SortSpec("instance", a="instance:4-attacked"))
    assert np.isnan(key[3]) and np.isnan(key).sum() == 1
    for descending in (False, True):
        assert neuron_order(key, descending)[-1] == 3


def test_frame_instance_values_take_the_max_over_positions(tiny, tmp_path):
    path = _ingest(tiny, tmp_path / "none.zarr", reduction="none")
    fresh = ndstream.open_store(path)
    raw, _ = raw_activations(tiny["model"], tiny["x"], ["conv"], batch_size=BATCH)
    table = fresh.instances()
    assert table is not None
    stored = fresh.instance_values("conv")
    assert stored.shape[1] == 16  # 4x4 positions kept
    frame = LayerFrame(fresh, "conv")
    np.testing.assert_array_equal(frame.instance_values, stored.max(axis=1).astype(np.float64))
    want = raw["conv"][table.index].reshape(len(table), 10, -1).max(axis=2)
    np.testing.assert_allclose(frame.instance_values, want, rtol=1e-6)


def test_frame_on_a_store_without_instances(tiny, tmp_path):
    path = tmp_path / "plain.zarr"
    ndstream.ingest(tiny["model"], tiny["data"], path, layers=["fc"], batch_size=BATCH,
                    progress=False)  # fmt: skip
    frame = LayerFrame(ndstream.open_store(path), "fc")
    assert frame.instance_ids == []
    assert frame.instance_values.shape == (0, 8)
    lo, hi = ndstream.open_store(path).extent("fc")
    assert (frame.edges[0], frame.edges[-1]) == (lo, hi)
    with pytest.raises(KeyError):
        frame.instance_row("0")


def test_frame_rejects_no_bins(store):
    with pytest.raises(ValueError, match="bins"):
        LayerFrame(store, "fc", bins=0)


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("bins", [64, 7])
def test_frame_edges_cover_extent_and_instances(store, store_path, layer, bins):
    frame = LayerFrame(store, layer, bins=bins)
    edges = frame.edges
    assert edges.shape == (bins + 1,)
    widths = np.diff(edges)
    assert (widths > 0).all()
    np.testing.assert_allclose(widths, widths[0], rtol=1e-9)
    lo, hi = store.extent(layer)
    _, values = reference_values(store_path, layer)
    assert edges[0] == min(lo, values.min())
    assert edges[-1] == max(hi, values.max())


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("group", POPULATED + EMPTY)
def test_frame_group_count_and_quantiles_match_the_store(frames, store, tiny, layer, group):
    stats = frames[layer].group(group)
    assert stats.count == store.count(layer, group)
    expected = store.quantile(layer, list(TOOLTIP_QUANTILES), group)
    assert stats.quantiles.shape == (store.n_neurons(layer), len(TOOLTIP_QUANTILES))
    np.testing.assert_array_equal(stats.quantiles, expected)
    np.testing.assert_array_equal(stats.median, store.quantile(layer, 0.5, group))
    q25, q75 = store.quantile(layer, [0.25, 0.75], group).T
    np.testing.assert_array_equal(stats.iqr, q75 - q25)
    # Counted independently: one value per sample (max reduction) of the group.
    assert stats.count == int(_members(tiny, group).sum())
    if stats.count == 0:
        assert np.isnan(stats.quantiles).all()


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("group", POPULATED)
def test_frame_quantiles_near_numpy_of_hooked_activations(frames, store, tiny, tiny_raw, layer,
                                                          group):  # fmt: skip
    """Independent: the sketch's quantiles lie within a bin of numpy's order statistics."""
    raw = tiny_raw[layer][_members(tiny, group)]
    stats = frames[layer].group(group)
    # A value's bin spans a relative width of 2**-resolution of it.
    rel = 2.0 ** -store.resolution(layer).astype(np.float64)
    for j, q in enumerate(TOOLTIP_QUANTILES):
        lower = np.quantile(raw, q, axis=0, method="lower")
        higher = np.quantile(raw, q, axis=0, method="higher")
        got = stats.quantiles[:, j]
        slack_lo = rel * np.abs(lower) + 1e-6
        slack_hi = rel * np.abs(higher) + 1e-6
        assert (got >= lower - slack_lo).all(), (q, got, lower)
        assert (got <= higher + slack_hi).all(), (q, got, higher)


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("group", POPULATED + EMPTY)
def test_frame_density(frames, store, tiny, tiny_raw, layer, group):
    frame = frames[layer]
    density = frame.density(group).bars
    assert density.shape == (frame.n_neurons, frame.bins)
    assert density.dtype == np.float32
    assert (density >= 0).all() and (density <= 1).all()
    counts = store.count(layer, group)
    if counts == 0:
        assert (density == 0).all()
        return
    # Every neuron has values here (no NaN in this data), so its densest bin is exactly 1.
    np.testing.assert_array_equal(density.max(axis=1), np.ones(frame.n_neurons))
    # Matches the store's own histogram on the frame's edges, normalised per neuron.
    hist = np.asarray(store.histogram(layer, group, bins=frame.edges))
    np.testing.assert_allclose(density, hist / hist.max(axis=1, keepdims=True), rtol=1e-6)
    # Independent: no density outside the display bins that the neuron's raw values reach,
    # allowing for one sketch bin (relative width 2**-resolution) either side.
    raw = tiny_raw[layer][_members(tiny, group)]
    rel = 2.0 ** -store.resolution(layer).astype(np.float64)
    lo = raw.min(axis=0) - rel * np.abs(raw.min(axis=0))
    hi = raw.max(axis=0) + rel * np.abs(raw.max(axis=0))
    edges = frame.edges
    for n in range(frame.n_neurons):
        used = np.flatnonzero(density[n] > 0)
        assert edges[used[0] + 1] >= lo[n] - 1e-9, (n, used, lo[n])
        assert edges[used[-1]] <= hi[n] + 1e-9, (n, used, hi[n])


def test_frame_density_of_a_constant_neuron(frames, tiny_raw):
    """The dead ReLU channels are always 0: all their mass is in the display bin holding 0."""
    frame = frames["relu"]
    edges = frame.edges
    holding_zero = np.flatnonzero((edges[:-1] <= 0) & (edges[1:] >= 0))
    for neuron in (0, 4):
        density = frame.density("0").bars[neuron]
        assert density.max() == 1
        assert set(np.flatnonzero(density > 0).tolist()) <= set(holding_zero.tolist())


@pytest.mark.parametrize("layer", LAYERS)
def test_frame_ranks_match_store_cdf_and_numpy(frames, store, store_path, tiny, tiny_raw, layer):
    frame = frames[layer]
    ids, values = reference_values(store_path, layer)
    rel = 2.0 ** (1 - store.resolution(layer).astype(np.float64))
    for row, name in enumerate(ids):
        for group in ["1", "nonzero"]:
            got = frame.ranks(name, group)
            np.testing.assert_array_equal(got, store.cdf(layer, values[row], group))
            assert ((got >= 0) & (got <= 1)).all()
            # Independent: mid-rank of the value among the hooked activations, up to the mass
            # of values close enough to share a sketch bin with it.
            raw = tiny_raw[layer][_members(tiny, group)]
            x = values[row]
            n = raw.shape[0]
            empirical = ((raw < x).sum(axis=0) + 0.5 * (raw == x).sum(axis=0)) / n
            near = (np.abs(raw - x) <= rel * np.abs(x) + 1e-6).sum(axis=0) / n
            assert (np.abs(got - empirical) <= near + 1e-9).all(), (name, group)
        assert np.isnan(frame.ranks(name, "never")).all()


def test_frame_unknown_group(frames):
    with pytest.raises(GroupNotFoundError):
        frames["fc"].group("cat")


# -- sort keys against numpy ----------------------------------------------------------------


@pytest.mark.parametrize("layer", LAYERS)
def test_sort_by_instance(frames, store_path, layer):
    frame = frames[layer]
    ids, values = reference_values(store_path, layer)
    for row, name in enumerate(ids):
        key = sort_key(frame, SortSpec("instance", a=f"instance:{name}"))
        np.testing.assert_array_equal(key, values[row])
        # numpy's stable argsort keeps equal keys in id order, as the spec wants.
        up = np.argsort(values[row], kind="stable")
        down = np.argsort(-values[row], kind="stable")
        np.testing.assert_array_equal(neuron_order(key, descending=False), up)
        np.testing.assert_array_equal(neuron_order(key, descending=True), down)


def test_sort_by_instance_breaks_ties_by_id(frames, store_path):
    """In the ReLU layer every instance is 0 on channels 0 and 4 (and maybe more): ties."""
    frame = frames["relu"]
    ids, values = reference_values(store_path, "relu")
    tied = [row for row in range(len(ids)) if (values[row] == 0).sum() >= 2]
    assert tied, "the fixture should give an instance with ties"
    for row in tied:
        key = sort_key(frame, SortSpec("instance", a=f"instance:{ids[row]}"))
        zeros = np.flatnonzero(values[row] == 0).tolist()
        for descending in (False, True):
            order = neuron_order(key, descending).tolist()
            positions = [order.index(z) for z in zeros]
            assert positions == sorted(positions)  # the tied ids keep ascending order
            assert positions == list(range(positions[0], positions[0] + len(zeros)))
        assert neuron_order(key)[: len(zeros)].tolist() == zeros  # 0 is the ReLU minimum


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("group", POPULATED + EMPTY)
def test_sort_by_median(frames, store, layer, group):
    expected = store.quantile(layer, 0.5, group)
    check_order(frames[layer], SortSpec("median", a=f"group:{group}"), expected)
    if group in POPULATED and not np.isnan(expected).any():
        key = sort_key(frames[layer], SortSpec("median", a=f"group:{group}"))
        np.testing.assert_array_equal(neuron_order(key), np.argsort(expected, kind="stable"))


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("group", POPULATED + EMPTY)
def test_sort_by_iqr(frames, store, layer, group):
    q25, q75 = store.quantile(layer, [0.25, 0.75], group).T
    check_order(frames[layer], SortSpec("iqr", a=f"group:{group}"), q75 - q25)


def test_sort_by_index(frames):
    frame = frames["conv"]
    key = sort_key(frame, SortSpec("index"))
    np.testing.assert_array_equal(key, np.arange(frame.n_neurons, dtype=np.float64))
    assert neuron_order(key).tolist() == list(range(frame.n_neurons))
    assert neuron_order(key, descending=True).tolist() == list(range(frame.n_neurons))[::-1]


@pytest.mark.parametrize("layer", LAYERS)
def test_sort_by_difference(frames, store, store_path, layer):
    frame = frames[layer]
    ids, values = reference_values(store_path, layer)
    med0 = store.quantile(layer, 0.5, "0")
    med2 = store.quantile(layer, 0.5, "2")
    inst = f"instance:{INDEX}"
    row = ids.index(str(INDEX))
    other = (row + 1) % len(ids)
    cases = [
        (SortSpec("difference", a="group:0", b=inst), med0 - values[row]),
        (SortSpec("difference", a=inst, b="group:0"), values[row] - med0),
        (SortSpec("difference", a=inst, b=f"instance:{ids[other]}"), values[row] - values[other]),
        (SortSpec("difference", a="group:0", b="group:2"), med0 - med2),
        (SortSpec("difference", a="group:never", b=inst), np.full(frame.n_neurons, np.nan)),
    ]
    for spec, expected in cases:
        check_order(frame, spec, expected)


@pytest.mark.parametrize("layer", LAYERS)
def test_sort_by_divergence(frames, store, store_path, layer):
    frame = frames[layer]
    ids, values = reference_values(store_path, layer)
    for row, name in enumerate(ids):
        for group in ["0", "nonzero", *EMPTY]:
            spec = SortSpec("divergence", a=f"instance:{name}", b=f"group:{group}")
            if group in EMPTY:
                assert np.isnan(sort_key(frame, spec)).all()
                continue
            scored = store.divergence({layer: values[row][None]}, group=group, layers=[layer])
            expected = scored.contribution(layer)[0]
            assert (expected >= 0).all()
            check_order(frame, spec, expected)


def test_sort_key_unknown_items(frames):
    frame = frames["fc"]
    with pytest.raises(KeyError, match="99999"):
        sort_key(frame, SortSpec("instance", a="instance:99999"))
    with pytest.raises(GroupNotFoundError):
        sort_key(frame, SortSpec("median", a="group:cat"))


# -- neuron_order on hand-made keys ---------------------------------------------------------


def test_neuron_order_nan_last_in_both_directions():
    key = np.array([np.nan, 3.0, -1.0, np.nan, 2.0, np.inf, -np.inf])
    assert neuron_order(key).tolist() == [6, 2, 4, 1, 5, 0, 3]
    assert neuron_order(key, descending=True).tolist() == [5, 1, 4, 2, 6, 0, 3]


def test_neuron_order_ties_by_id():
    key = np.array([2.0, 1.0, 2.0, 1.0, 2.0, 0.0, -0.0])
    assert neuron_order(key).tolist() == [5, 6, 1, 3, 0, 2, 4]
    assert neuron_order(key, descending=True).tolist() == [0, 2, 4, 1, 3, 5, 6]


def test_neuron_order_exclude():
    key = np.array([5.0, np.nan, 1.0, 4.0, 1.0, 0.5])
    assert neuron_order(key, exclude=[0, 4]).tolist() == [5, 2, 3, 1]
    assert neuron_order(key, True, exclude={1, 3}).tolist() == [0, 2, 4, 5]
    assert neuron_order(key, exclude=iter(range(6))).tolist() == []
    assert neuron_order(key, exclude=np.array([2])).tolist() == [5, 4, 3, 0, 1]


@pytest.mark.parametrize("seed", range(5))
def test_neuron_order_random_keys_match_reference(seed):
    rng = np.random.default_rng(seed)
    n = 200
    key = rng.integers(-5, 6, size=n).astype(np.float64)  # many ties
    key[rng.random(n) < 0.1] = np.nan
    key[rng.random(n) < 0.03] = np.inf
    key[rng.random(n) < 0.03] = -np.inf
    exclude = rng.choice(n, size=20, replace=False).tolist()
    for descending in (False, True):
        got = neuron_order(key, descending, exclude)
        assert got.tolist() == expected_order(key, descending, exclude)
        assert got.dtype.kind == "i"


def test_neuron_order_empty():
    assert neuron_order(np.zeros(0)).tolist() == []


# -- SortSpec validation --------------------------------------------------------------------


def test_sortspec_rejects_unknown_sort():
    with pytest.raises(ValueError, match="unknown sort 'mean'"):
        SortSpec("mean", a="group:0")


@pytest.mark.parametrize(
    ("by", "a", "b", "message"),
    [
        ("median", "instance:7", "", "sort 'median' takes a group item"),
        ("iqr", "instance:7", "", "sort 'iqr' takes a group item"),
        ("instance", "group:0", "", "sort 'instance' takes a instance item"),
        ("divergence", "group:0", "instance:7", "sort 'divergence' takes a instance item"),
        ("divergence", "instance:7", "instance:8", "sort 'divergence' takes a group item"),
    ],
)
def test_sortspec_rejects_wrong_item_kinds(by, a, b, message):
    with pytest.raises(ValueError, match=message):
        SortSpec(by, a=a, b=b)


@pytest.mark.parametrize("bad", ["", "group", "group:", "neuron:3", "instance", ":7", "Group:0"])
@pytest.mark.parametrize("by", ["median", "instance", "difference", "iqr"])
def test_sortspec_rejects_malformed_items(by, bad):
    with pytest.raises(ValueError, match="an item is 'group:<name>', 'instance:<id>' or "):
        SortSpec(by, a=bad, b="group:0")


@pytest.mark.parametrize("by", ["median", "iqr", "divergence", "instance"])
def test_a_compared_item_only_fills_a_slot_that_takes_any_item(by):
    with pytest.raises(ValueError, match="takes a"):
        SortSpec(by, a="compared:0", b="group:0")


def test_sortspec_difference_needs_both_items():
    with pytest.raises(ValueError):
        SortSpec("difference", a="group:0")
    with pytest.raises(ValueError):
        SortSpec("divergence", a="instance:7")


def test_sortspec_accepts_valid_specs_and_lists_items():
    assert SortSpec().by == "index" and SortSpec().items == ()
    assert SortSpec("index", a="whatever").items == ()  # unused items are ignored
    assert SortSpec("median", a="group:0", b="junk").items == ("group:0",)
    assert SortSpec("difference", a="instance:7", b="group:0").items == ("instance:7", "group:0")
    assert SortSpec("divergence", a="instance:7-attacked", b="group:a:b").items == (
        "instance:7-attacked",
        "group:a:b",
    )
    paper = {"index", "median", "instance", "difference", "divergence", "iqr"}
    contrasts = {"abs_difference", "effect", "abs_effect", "ks", "wasserstein", "auroc"}
    assert set(SORTS) == paper | contrasts | {"abs_auroc"}
    assert all(SORTS[name] == ("any", "any") for name in contrasts | {"abs_auroc"})


def test_item():
    assert item("group", "cat") == "group:cat"
    assert item("instance", "12-benign") == "instance:12-benign"
    assert item("compared", "cat") == "compared:cat"
    with pytest.raises(ValueError, match="a 'group', an 'instance' or a 'compared' group"):
        item("neuron", "3")
