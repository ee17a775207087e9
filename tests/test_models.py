"""Ingest through real torchvision architectures (random weights, nothing downloaded).

Expectations come from plain forward hooks on the resolved modules: which ones run, how often
per forward pass, and their output shapes.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import ndstream

N_IMAGES, BATCH = 8, 4

CASES = {
    # The ReLU modules of a ResNet block run twice per forward: a layer per call.
    "resnet18": "type:Conv2d,Linear,ReLU",
    "vgg16": "type:Conv2d,Linear",
    "mobilenet_v3_small": "type:Conv2d,Linear",
    # MultiheadAttention.out_proj is a Linear whose weights are used without calling it.
    "vit_b_16": "type:Conv2d,Linear,GELU",
}


def _observe(model: nn.Module, names: list[str], x: torch.Tensor) -> dict[str, list[tuple]]:
    """Output shapes of every call of each module in one forward pass, by plain hooks."""
    modules = dict(model.named_modules())
    seen: dict[str, list[tuple]] = {n: [] for n in names}
    handles = [
        modules[n].register_forward_hook(
            lambda m, a, out, n=n: seen[n].append(
                tuple((out[0] if isinstance(out, tuple) else out).shape)
            )
        )
        for n in names
    ]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return seen


def _expected_neurons(module: nn.Module, shape: tuple) -> int:
    if isinstance(module, nn.Conv2d):
        return module.out_channels
    if isinstance(module, nn.Linear):
        return module.out_features
    return shape[-1] if len(shape) == 3 else shape[1]  # [B, tokens, dim] or [B, C, ...]


@pytest.mark.slow
@pytest.mark.parametrize("arch", list(CASES))
def test_torchvision_model(arch, tmp_path, torchvision_model) -> None:
    selector = CASES[arch]
    model = torchvision_model(arch)  # built once per session (conftest.TORCHVISION)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(N_IMAGES, 3, 32, 32, generator=gen)
    y = torch.randint(0, 10, (N_IMAGES,), generator=gen)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=BATCH)

    resolved = ndstream.resolve_layers(model, selector)
    calls = _observe(model, resolved, x[:BATCH])
    ran = [n for n in resolved if calls[n]]
    never_ran = [n for n in resolved if not calls[n]]
    if arch == "vit_b_16":
        assert never_ran and all(n.endswith("self_attention.out_proj") for n in never_ran)
    else:
        assert never_ran == []

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        store = ndstream.ingest(
            model, loader, tmp_path / f"{arch}.zarr", layers=selector, group_by="predicted",
            progress=False,
        )  # fmt: skip
    # A module called k > 1 times per forward pass gives a layer per call, <name>@1 .. @k.
    layers = {
        (n if len(calls[n]) == 1 else f"{n}@{i + 1}"): (n, shape)
        for n in ran
        for i, shape in enumerate(calls[n])
    }
    assert store.layers == list(layers)
    if never_ran:  # dropping layers is announced, naming them
        text = " ".join(str(w.message) for w in caught)
        assert all(n in text for n in never_ran)

    modules = dict(model.named_modules())
    with torch.no_grad():
        predicted = model(x).argmax(dim=1).numpy()
    assert store.groups == [f"pred:{c}" for c in range(10)]
    for name, (module, shape) in layers.items():
        meta = store.layer_meta(name)
        assert meta.n_neurons == store.n_neurons(name) == _expected_neurons(modules[module], shape)
        assert meta.module_type == type(modules[module]).__name__
        assert meta.output_shape == shape[1:]
        assert meta.values_per_sample == 1  # max reduction, one call
        assert store.count(name) == N_IMAGES
        counts = [store.count(name, g) for g in store.groups]
        np.testing.assert_array_equal(counts, np.bincount(predicted, minlength=10))
        summary = store.summary(name)
        finite = summary.counts.sum(axis=(1, 2))
        specials = (summary.nan + summary.posinf + summary.neginf).sum(axis=1)
        np.testing.assert_array_equal(finite + specials, N_IMAGES)
    if arch == "resnet18":
        assert {"layer1.0.relu@1", "layer1.0.relu@2", "relu"} <= set(store.layers)
        assert "layer1.0.relu" not in store.layers
