"""The divergence score against a brute-force computation on the exact activations.

A store is ingested from the first 1,200 digits; the rest are scored against it, each
against its predicted class. The reference computes the same definition with numpy on the
raw activations (plain forward hooks): exact mid-ranks, exact quartiles, exact edges. The
sketch's ``z`` must lie within the bounds it reports, and equal the exact one where every
value is kept exactly. Models at several magnitudes and grids coarse and exact.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import raw_activations
from scipy.special import ndtri
from torch import nn

import ndstream
from ndstream.demo import DigitsDataset

N_REF = 1200


def mlp(scale: float) -> nn.Module:
    torch.manual_seed(5)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 40), nn.ReLU(), nn.Linear(40, 10))
    with torch.no_grad():
        model[1].weight.mul_(scale)
        model[1].bias.mul_(scale)
    return model.eval()


def exact_z(ref: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per neuron: the exact in-range normal score, the distance past an edge, and the exact
    spread (IQR / 1.349, NaN where the IQR is 0), for values ``x[neuron]``."""
    n = ref.shape[0]
    below = (ref < x).sum(0)
    ties = (ref == x).sum(0)
    rank = (below + 0.5 * ties) / n
    floor = 0.5 / n
    z_in = ndtri(np.clip(rank, floor, 1 - floor))
    lo, hi = ref.min(0), ref.max(0)
    past = np.where(x > hi, x - hi, np.where(x < lo, x - lo, 0.0))
    q25, q75 = np.quantile(ref, [0.25, 0.75], axis=0)  # the linear rule, as the sketch
    spread = (q75 - q25) / 1.3489795003921634
    return z_in, past, np.where(spread > 0, spread, np.nan)


@pytest.fixture(scope="module")
def dataset() -> DigitsDataset:
    return DigitsDataset("all")


@pytest.mark.parametrize("scale", [1e-4, 1.0, 1e4])
@pytest.mark.parametrize("bits", [3, 23])
def test_divergence_equals_brute_force_within_its_bound(
    tmp_path: Path, dataset: DigitsDataset, scale: float, bits: int
) -> None:
    model = mlp(scale)
    layers = ["1", "2", "3"]
    exact_store = bits == 23
    grid = ndstream.GridSpec(mantissa_bits=bits, exact_values=None if exact_store else 0)
    store = ndstream.ingest(
        model, dataset, tmp_path / "s.zarr", layers=layers, group_by="label", grid=grid,
        limit=N_REF, seed=None, progress=False, batch_size=200,
    )  # fmt: skip
    raw, logits = raw_activations(model, dataset.images, layers, batch_size=200)
    labels = np.asarray(dataset.targets)
    pred = logits.argmax(1)
    test = np.arange(N_REF, len(labels))
    acts = {layer: raw[layer][test] for layer in layers}
    div = store.divergence(acts, predicted=pred[test])
    assert list(div.groups) == [str(p) for p in pred[test]]

    checked_past = 0
    for layer in layers:
        z, lo, hi = div.neurons[layer], div.lower[layer], div.upper[layer]
        assert not np.isnan(lo).any() and not np.isnan(hi).any() and not np.isnan(z).any()
        assert (lo <= z + 1e-9).all() and (z <= hi + 1e-9).all()
        for row, i in enumerate(test):
            ref = raw[layer][:N_REF][labels[:N_REF] == pred[i]].astype(np.float64)
            x = raw[layer][i].astype(np.float64)
            z_in, past, spread = exact_z(ref, x)
            ok = (past == 0) | np.isfinite(spread)  # spread fallbacks are checked elsewhere
            exact = z_in + np.where(past != 0, past / np.where(ok, spread, 1.0), 0.0)
            tol = 1e-9 * np.maximum(1.0, np.abs(exact))
            assert (lo[row][ok] - tol[ok] <= exact[ok]).all(), (layer, i)
            assert (exact[ok] <= hi[row][ok] + tol[ok]).all(), (layer, i)
            if exact_store:
                np.testing.assert_allclose(z[row][ok], exact[ok], rtol=1e-9, atol=1e-9)
            checked_past += int(((past != 0) & ok).sum())
    assert checked_past > 50, "too few values past a group's edge to test that part"
    if not exact_store:
        widths = np.concatenate([div.upper[name] - div.lower[name] for name in layers], axis=1)
        assert np.nanmax(widths) > 0  # the coarse grid is really binned
    overall = np.mean([np.abs(div.neurons[name]).max(1) for name in layers], axis=0)
    np.testing.assert_allclose(div.overall, overall)


def test_past_the_edge_does_not_saturate(digits_store: ndstream.Store) -> None:
    """Values further past the maximum score strictly higher, continuously from inside."""
    layer, group = "fc1", "3"
    maxs = digits_store.summary(layer, group).maxs[:, 0].astype(np.float64)
    span = maxs - digits_store.summary(layer, group).mins[:, 0]
    steps = np.array([-1e-3, 0.0, 1e-3, 0.1, 1.0, 10.0])
    rows = maxs[None, :] + steps[:, None] * span[None, :]
    div = digits_store.divergence({layer: rows}, group=group, layers=[layer])
    z = div.neurons[layer]
    assert (np.diff(z[2:], axis=0) > 0).all()  # past the edge: strictly increasing
    assert (z[1] >= z[0]).all()
    # No jump at the edge: just inside and just past are close, far past is far.
    assert np.nanmax(np.abs(z[2] - z[1])) < 0.1
    assert (z[-1] > z[1] + 5).all()
    assert len(set(np.round(np.abs(z[-1]), 6))) > 1  # no ties at a saturation value


@pytest.fixture(scope="module")
def with_instances(
    tmp_path_factory: pytest.TempPathFactory, digits_model: nn.Module, dataset: DigitsDataset
) -> ndstream.Store:
    """The demo CNN's store, grouped by label and predicted class, with 2 instances a class."""
    return ndstream.ingest(
        digits_model, dataset, tmp_path_factory.mktemp("div") / "s.zarr",
        layers=["conv2", "fc1", "fc2"], group_by=["label", "predicted"],
        instances=ndstream.InstanceSpec(per_class=2), progress=False,
    )  # fmt: skip


def test_groups_nan_and_inf(with_instances: ndstream.Store) -> None:
    digits_store = with_instances
    layer = "fc1"
    inst = digits_store.instances()
    assert inst is not None and len(inst) == 20
    acts = {layer: inst.values[layer][:, 0, :].astype(np.float64)}
    acts[layer][0, 5] = np.nan
    acts[layer][1, 7] = np.inf
    div = digits_store.divergence(acts, layers=[layer], predicted=inst.predicted)
    assert div.nan_neurons[0, 0] == 1 and div.nan_neurons[1:, 0].sum() == 0
    assert np.isfinite(div.per_layer[0, 0])  # the other neurons still score
    assert np.isnan(div.neurons[layer][0, 5])
    assert np.isposinf(div.per_layer[1, 0]) and np.isposinf(div.overall[1])
    # One group for all, or one per input; each instance against its own class by default.
    by_label = digits_store.divergence(inst, group=[str(c) for c in inst.predicted])
    default = digits_store.divergence()
    np.testing.assert_array_equal(by_label.overall, default.overall)
    other = digits_store.divergence(inst, group="pred:0")
    assert set(other.groups) == {"pred:0"}
    assert np.median(other.overall) > np.median(default.overall)  # wrong class: further away
    with pytest.raises(ndstream.GroupNotFoundError):
        digits_store.divergence(inst, group="nope")
    with pytest.raises(ValueError, match="predicted"):
        digits_store.divergence({layer: acts[layer]}, layers=[layer])
    with pytest.raises(ValueError, match="one group per input"):
        digits_store.divergence(inst, group=["0"])
    with pytest.raises(ValueError, match=r"\[inputs, 64\]"):
        digits_store.divergence({layer: acts[layer][:, :3]}, layers=[layer], group="0")


def test_bad_arguments_get_clear_errors_not_wrong_scores(with_instances: ndstream.Store) -> None:
    """Predictions of the wrong length, unknown or missing layers and odd groups are refused
    with a message that says what to give; nothing is scored against the wrong group."""
    store = with_instances
    inst = store.instances()
    assert inst is not None
    acts = {"fc1": inst.values["fc1"][:, 0, :].astype(np.float64)}
    n = len(inst)
    for predicted in (inst.predicted[:-1], np.append(inst.predicted, 0)):
        with pytest.raises(ValueError, match=f"one predicted class per input.*{n} inputs"):
            store.divergence(acts, predicted=predicted)
    with pytest.raises(ValueError, match="whole numbers"):
        store.divergence(acts, predicted=inst.predicted + 0.5)
    with pytest.raises(ndstream.LayerNotFoundError, match="nope"):
        store.divergence(acts, group="0", layers=["nope"])
    with pytest.raises(ValueError, match=r"no activations for layers \['fc2'\]"):
        store.divergence(acts, group="0", layers=["fc1", "fc2"])
    with pytest.raises(TypeError, match="group names a group"):
        store.divergence(acts, group=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="0 rows"):
        store.divergence({"fc1": acts["fc1"][:0]}, group="0")
    # A layer by name alone, and the layers of the activations by default, as with a list.
    one = store.divergence(acts, group="0", layers="fc1")
    default = store.divergence(acts, group="0")
    listed = store.divergence(acts, group="0", layers=["fc1"])
    assert one.layers == default.layers == ("fc1",)
    np.testing.assert_array_equal(one.overall, listed.overall)
    np.testing.assert_array_equal(default.overall, listed.overall)
    with pytest.raises(ndstream.LayerNotFoundError, match="not scored"):
        one.contribution("fc2")
