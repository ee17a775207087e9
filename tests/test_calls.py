"""Modules called more than once per forward pass: one layer per call, or pooled on request.

torchvision's ``BasicBlock`` calls its ``relu`` after ``bn1`` and again after the residual
sum. Every expected value comes from plain ``register_forward_hook`` hooks on the same model
and inputs, reduced with numpy.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from torch import nn

import ndstream
from ndstream.config import load_config

N_SAMPLES, BATCH = 12, 4


def call_outputs(
    model: nn.Module, x: torch.Tensor, names: list[str], batch: int = BATCH
) -> dict[str, list[np.ndarray]]:
    """Each module's outputs, one ``[N, ...]`` array per call of a forward pass, from plain
    forward hooks (batches as ingest runs them, so the arithmetic is the same)."""
    modules = dict(model.named_modules())
    per_pass: dict[str, list[list[np.ndarray]]] = {n: [] for n in names}

    def make(name: str) -> Callable[[nn.Module, Any, Any], None]:
        def hook(module: nn.Module, args: Any, out: torch.Tensor) -> None:
            per_pass[name][-1].append(out.detach().clone().cpu().numpy())

        return hook

    handles = [modules[n].register_forward_hook(make(n)) for n in names]
    try:
        with torch.inference_mode():
            for start in range(0, x.shape[0], batch):
                for n in names:
                    per_pass[n].append([])
                model(x[start : start + batch])
    finally:
        for h in handles:
            h.remove()
    out = {}
    for n, passes in per_pass.items():
        calls = len(passes[0])
        assert all(len(p) == calls for p in passes)
        out[n] = [np.concatenate([p[c] for p in passes]) for c in range(calls)]
    return out


def reduce(raw: np.ndarray, reduction: str) -> np.ndarray:
    """``[N, values_per_sample, C]`` of an output ``[N, C, ...]``, as the store counts them."""
    flat = raw.reshape(raw.shape[0], raw.shape[1], -1)
    if reduction == "max":
        return flat.max(axis=2)[:, None, :]
    return flat.transpose(0, 2, 1)  # "none": every position is a value


def bin_counts(values: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """How many of ``values`` fall in each of a neuron's bins, by the store format's rules."""
    counts = np.zeros(lower.shape, dtype=np.int64)
    for b, (lo, hi) in enumerate(zip(lower, upper, strict=True)):
        if np.isnan(lo):
            continue  # padding
        if lo == hi == 0:
            counts[b] = np.count_nonzero(values == 0)
        elif lo >= 0:
            counts[b] = np.count_nonzero((values >= lo) & (values < hi))
        else:
            counts[b] = np.count_nonzero((values > lo) & (values <= hi))
    return counts


def assert_layer_matches(store: ndstream.Store, layer: str, values: np.ndarray) -> None:
    """The store's counts, bins and extremes of ``layer`` are those of ``values`` [N, v, C]
    (one group holding every sample)."""
    summary = store.summary(layer, group="all")
    n, per_sample, n_neurons = values.shape
    assert store.layer_meta(layer).values_per_sample == per_sample
    assert store.n_neurons(layer) == n_neurons
    assert int(summary.totals[0]) == n * per_sample
    flat = values.reshape(n * per_sample, n_neurons)
    for j in range(n_neurons):
        want = bin_counts(flat[:, j], summary.lower[j], summary.upper[j])
        np.testing.assert_array_equal(summary.counts[j, 0], want, err_msg=f"{layer} neuron {j}")
    np.testing.assert_array_equal(summary.mins[:, 0], flat.min(axis=0))
    np.testing.assert_array_equal(summary.maxs[:, 0], flat.max(axis=0))


@pytest.fixture(scope="module")
def resnet(
    torchvision_model: Callable[[str], nn.Module],
) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    model = torchvision_model("resnet18")  # built once per session (conftest.TORCHVISION)
    x = torch.randn(N_SAMPLES, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    y = torch.arange(N_SAMPLES) % 10
    return model, x, y


BLOCK_RELUS = ["layer1.0.relu", "layer2.1.relu"]


@pytest.mark.slow
@pytest.mark.parametrize("reduction", ["max", "none"])
def test_resnet18_each_relu_call_is_a_layer(resnet, reduction, tmp_path) -> None:
    model, x, y = resnet
    store = ndstream.ingest(
        model,
        torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=BATCH),
        tmp_path / "s.zarr",
        layers=["relu", *BLOCK_RELUS],
        reduction=reduction,
        group_by="all",
        instances=ndstream.InstanceSpec(indices=(1, 6)),
        progress=False,
    )
    raw = call_outputs(model, x, ["relu", *BLOCK_RELUS])
    assert [len(raw[n]) for n in ["relu", *BLOCK_RELUS]] == [1, 2, 2]
    # The stem's relu runs once and keeps its name; a block's two calls are two layers.
    expected = {"relu": reduce(raw["relu"][0], reduction)}
    for name in BLOCK_RELUS:
        for call, out in enumerate(raw[name], start=1):
            expected[f"{name}@{call}"] = reduce(out, reduction)
    assert store.layers == list(expected)
    for layer, values in expected.items():
        assert store.layer_meta(layer).module_type == "ReLU"
        assert_layer_matches(store, layer, values)
        # Instances carry each call's values too, under the same layer names.
        np.testing.assert_array_equal(store.instance_values(layer), values[[1, 6]])
    # The two calls are different quantities: after bn1, and after the residual sum.
    assert not np.array_equal(expected["layer1.0.relu@1"], expected["layer1.0.relu@2"])


@pytest.mark.slow
def test_resnet18_pooled_calls_reproduce_one_distribution_per_module(resnet, tmp_path) -> None:
    model, x, y = resnet
    store = ndstream.ingest(
        model,
        torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=BATCH),
        tmp_path / "s.zarr",
        layers=BLOCK_RELUS,
        group_by="all",
        calls="pool",
        progress=False,
    )
    raw = call_outputs(model, x, BLOCK_RELUS)
    assert store.layers == BLOCK_RELUS
    assert store.meta.settings["calls"] == "pool"
    for name in BLOCK_RELUS:
        # Both calls' channel maxima, one after the other for each sample.
        pooled = np.concatenate([reduce(out, "max") for out in raw[name]], axis=1)
        assert pooled.shape[1] == 2
        assert_layer_matches(store, name, pooled)


class Twice(nn.Module):
    """A small net whose ``act`` runs twice per forward pass."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.fc2, self.act = nn.Linear(4, 3), nn.Linear(3, 3), nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.fc2(self.act(self.fc1(x))))


def _twice_data() -> torch.utils.data.TensorDataset:
    gen = torch.Generator().manual_seed(1)
    return torch.utils.data.TensorDataset(
        torch.randn(40, 4, generator=gen), torch.randint(0, 3, (40,), generator=gen)
    )


@pytest.mark.parametrize(("first", "then"), [("pool", "separate"), ("separate", "pool")])
def test_resume_with_another_calls_setting_is_refused(first, then, tmp_path) -> None:
    path = tmp_path / "s.zarr"

    def run(calls: str, **kwargs: Any) -> ndstream.Store:
        return ndstream.ingest(
            Twice(), _twice_data(), path, layers=["act"], calls=calls, progress=False,
            batch_size=8, **kwargs,
        )  # fmt: skip

    store = run(first, checkpoint_every=1, limit=16)
    names = ["act"] if first == "pool" else ["act@1", "act@2"]
    assert store.layers == names
    with pytest.raises(ndstream.StoreError, match="calls") as info:
        run(then, checkpoint_every=1, limit=16)
    assert "--overwrite" in str(info.value)
    assert ndstream.open_store(path).layers == names  # untouched


def test_bad_calls_setting_is_a_config_error(tmp_path) -> None:
    with pytest.raises(ndstream.ConfigError, match="'separate'"):
        ndstream.ingest(
            Twice(), _twice_data(), tmp_path / "s.zarr", layers=["act"], calls="both",
            progress=False,
        )  # fmt: skip
    assert not (tmp_path / "s.zarr").exists()


def test_yaml_calls_option(tmp_path: Path) -> None:
    raw = yaml.safe_load((Path(__file__).parents[1] / "configs" / "digits.yaml").read_text())
    assert load_config(_write(tmp_path, raw)).calls == "separate"
    assert load_config(_write(tmp_path, raw | {"calls": "pool"})).calls == "pool"
    path = _write(tmp_path, raw | {"calls": "merge"})
    with pytest.raises(ndstream.ConfigError) as info:
        load_config(path)
    assert "calls" in str(info.value) and "'pool'" in str(info.value)


def _write(folder: Path, raw: dict) -> Path:
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path
