"""Instances: single inputs recorded beside the distributions, checked against plain hooks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr
from conftest import DIGITS_BATCH, DIGITS_LAYERS, per_neuron
from runs import arrays

import ndstream
from ndstream.errors import DataError
from ndstream.store.instances import InstanceSpec

LAYERS = ["conv1", "relu2", "fc1", "fc2"]


def ingest(model, data, path: Path, **kwargs) -> ndstream.Store:
    options = dict(layers=LAYERS, group_by=["label", "predicted"], batch_size=DIGITS_BATCH,
                   progress=False)  # fmt: skip
    options.update(kwargs)
    return ndstream.ingest(model, data, path, **options)


def test_instance_values_equal_plain_hooks(tmp_path, digits_model, digits_dataset, digits_raw):
    raw, logits = digits_raw  # dataset order, batches of 64: the same batches as below
    spec = InstanceSpec(indices=(0, 100, 1796), per_class=1)
    store = ingest(digits_model, digits_dataset, tmp_path / "s.zarr", instances=spec)
    table = store.instances()
    assert table is not None
    targets = np.asarray(digits_dataset.targets)
    # Dataset order (seed None): the first sample of each label, and the listed indices.
    first = sorted({int(np.flatnonzero(targets == c)[0]) for c in range(10)} | {0, 100, 1796})
    assert table.index.tolist() == first
    assert table.position.tolist() == first
    np.testing.assert_array_equal(table.label, targets[first])
    np.testing.assert_array_equal(table.predicted, logits[first].argmax(axis=1))
    assert (table.condition == "").all() and (table.pair == -1).all()
    for layer in LAYERS:
        expected = per_neuron(raw[layer], "max")[first]
        np.testing.assert_array_equal(table.values[layer][:, 0, :], expected, strict=True)
        np.testing.assert_array_equal(store.instance_values(layer), table.values[layer])
    # Thumbnails: the 8x8 digits, stretched to 0..255 each.
    images = digits_dataset.images[first].numpy()[:, 0]
    lo = images.min(axis=(1, 2), keepdims=True)
    hi = images.max(axis=(1, 2), keepdims=True)
    want = np.round((images - lo) / (hi - lo) * 255).astype(np.uint8)
    np.testing.assert_array_equal(table.thumbnail[..., 0], want)


def test_instances_never_change_the_distributions(tmp_path, digits_model, digits_dataset):
    plain = ingest(digits_model, digits_dataset, tmp_path / "plain.zarr", seed=0)
    spec = InstanceSpec(indices=(3,), per_class=5)
    with_instances = ingest(digits_model, digits_dataset, tmp_path / "inst.zarr", seed=0,
                            instances=spec)  # fmt: skip
    a, b = arrays(plain.path), arrays(with_instances.path)
    assert plain.instances() is None
    assert {k for k in b if not k.startswith("instances/")} == a.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key, strict=True)


def test_per_class_follows_the_seeded_order(tmp_path, digits_model, digits_dataset):
    store = ingest(digits_model, digits_dataset, tmp_path / "s.zarr", seed=7,
                   instances=InstanceSpec(per_class=3))  # fmt: skip
    table = store.instances()
    assert table is not None
    order = np.random.RandomState(7).permutation(len(digits_dataset))
    targets = np.asarray(digits_dataset.targets)[order]
    expected = sorted(int(p) for c in range(10) for p in np.flatnonzero(targets == c)[:3])
    assert table.position.tolist() == expected
    assert table.index.tolist() == order[expected].tolist()
    assert np.bincount(table.label, minlength=10).tolist() == [3] * 10


def test_misclassified_follows_the_seeded_order(
    tmp_path, digits_model, digits_dataset, digits_predicted
):
    store = ingest(digits_model, digits_dataset, tmp_path / "s.zarr", seed=3,
                   instances=InstanceSpec(misclassified=4))  # fmt: skip
    table = store.instances()
    assert table is not None
    order = np.random.RandomState(3).permutation(len(digits_dataset))
    wrong = np.asarray(digits_dataset.targets)[order] != digits_predicted[order]
    expected = np.flatnonzero(wrong)[:4].tolist()
    assert len(expected) == 4  # the demo CNN gets 17 of 1,797 wrong
    assert table.position.tolist() == expected
    assert (table.label != table.predicted).all()


def test_no_reduction_keeps_every_position(tmp_path, digits_model, digits_dataset, digits_raw):
    raw, _ = digits_raw
    store = ingest(digits_model, digits_dataset, tmp_path / "s.zarr", layers=["conv1", "fc2"],
                   reduction="none", instances=InstanceSpec(indices=(7, 9)))  # fmt: skip
    values = store.instance_values("conv1")
    assert values.shape == (2, 64, 16)  # 8x8 positions of 16 channels
    expected = raw["conv1"][[7, 9]].reshape(2, 16, 64).transpose(0, 2, 1)
    np.testing.assert_array_equal(values, expected, strict=True)


def test_instances_survive_a_resume(tmp_path, digits_model, digits_dataset):
    from test_resume import FailingData

    spec = InstanceSpec(indices=(5, 1500), per_class=2, misclassified=6)
    opts = dict(seed=0, checkpoint_every=2, instances=spec)
    ref = ingest(digits_model, FailingData(digits_dataset, None), tmp_path / "ref.zarr", **opts)
    path = tmp_path / "resumed.zarr"
    bad = int(np.random.RandomState(0).permutation(len(digits_dataset))[900])
    with pytest.raises(DataError):
        ingest(digits_model, FailingData(digits_dataset, bad), path, **opts)
    partial = ndstream.open_store(path).instances()
    assert partial is not None and len(partial) > 0
    ingest(digits_model, FailingData(digits_dataset, None), path, **opts)
    table = ndstream.open_store(path).instances()
    assert table is not None and (table.label != table.predicted).sum() >= 6
    a, b = arrays(ref.path), arrays(path)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key, strict=True)


def test_instances_open_with_xarray(tmp_path, digits_model, digits_dataset):
    store = ingest(digits_model, digits_dataset, tmp_path / "s.zarr", layers=DIGITS_LAYERS[:2],
                   instances=InstanceSpec(indices=(1, 2)))  # fmt: skip
    ds = xr.open_zarr(store.path, group="instances")
    assert ds["thumbnail"].dims == ("instance", "y", "x", "channel")
    assert ds["index"].values.tolist() == [1, 2]
    layer = xr.open_zarr(store.path, group="conv1")
    assert layer["instance_values"].dims == ("instance", "value", "neuron")


def test_instance_values_are_one_chunk(tmp_path, digits_model, digits_dataset):
    # More instances than a chunk has neurons (conv1: 16): still one chunk, as documented.
    store = ingest(digits_model, digits_dataset, tmp_path / "s.zarr", layers=DIGITS_LAYERS[:1],
                   instances=InstanceSpec(indices=tuple(range(20))))  # fmt: skip
    values = zarr.open_group(store.path, mode="r", zarr_format=3)["conv1/instance_values"]
    assert values.shape[0] == 20 and values.chunks == values.shape


def test_an_index_the_dataset_does_not_have_is_refused(tmp_path, digits_model, digits_dataset):
    # Recorded as the samples stream by, index 1,797 of 1,797 samples would never come: the
    # run refuses it before it starts instead of leaving it out without a word.
    spec = InstanceSpec(indices=(5, 1797, 10**9))
    with pytest.raises(ndstream.ConfigError, match=r"\[1797, 1000000000\] are past the dataset's"):
        ingest(digits_model, digits_dataset, tmp_path / "s.zarr", instances=spec)
    assert not (tmp_path / "s.zarr").exists()
    store = ingest(digits_model, digits_dataset, tmp_path / "s.zarr",
                   instances=InstanceSpec(indices=(1796,)))  # fmt: skip
    assert store.instances().index.tolist() == [1796]
