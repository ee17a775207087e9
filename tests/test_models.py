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


@pytest.mark.slow
def test_swin_v2_linear_layers_without_the_position_bias_tables(tmp_path) -> None:
    """``type:Linear`` on Swin V2 also picks the MLP that computes each attention's
    continuous position bias from a table the batch shares (one row, not one per sample).
    Ingest leaves those out with a warning, and counts every other Linear as plain hooks see
    it; named outright, such a module is still refused."""
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.swin_v2_t(num_classes=10).eval()
    x = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    linear = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    outputs: dict[str, list[torch.Tensor]] = {n: [] for n in linear}
    modules = dict(model.named_modules())
    handles = [
        modules[n].register_forward_hook(
            lambda m, a, out, n=n: outputs[n].append(out.detach().clone())
        )
        for n in linear
    ]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    # The attention's qkv and proj weights are used without calling their modules.
    ran = [n for n in linear if outputs[n]]
    assert all(len(outputs[n]) == 1 for n in ran)
    shared = sorted(n for n in ran if outputs[n][0].shape[0] != len(x))
    assert shared and all("cpb_mlp" in n for n in shared)  # what the test is about
    data = torch.utils.data.TensorDataset(x, torch.arange(len(x)) % 3)
    with pytest.warns(UserWarning, match="not one row per sample") as caught:
        store = ndstream.ingest(
            model, data, tmp_path / "swin.zarr", layers="type:Linear", reduction="max",
            group_by="label", progress=False,
        )  # fmt: skip
    assert any(str(shared) in str(w.message) for w in caught)
    assert store.layers == [n for n in ran if n not in shared]
    for name in store.layers:
        out = outputs[name][0]  # [B, ..., C]: a Linear's neurons are its last axis
        want = out.reshape(len(x), -1, out.shape[-1]).amax(dim=1).numpy()
        summary = store.summary(name)
        np.testing.assert_allclose(summary.mins[:, 0], want.min(axis=0), rtol=1e-6, err_msg=name)
        np.testing.assert_allclose(summary.maxs[:, 0], want.max(axis=0), rtol=1e-6, err_msg=name)
        assert store.count(name) == len(x)
    with pytest.raises(ndstream.CaptureError, match="one row per sample"):
        ndstream.ingest(
            model, data, tmp_path / "named.zarr", layers=[shared[0]], progress=False,
        )  # fmt: skip
