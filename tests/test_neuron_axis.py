"""The neuron axis comes from the module: channels-last networks (ConvNeXt, Swin) against
plain hooks, the rules one by one, and a clear error where no rule decides."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from test_capture import np_reduce, raw_outputs
from torch import nn

from ndstream.capture.hooks import ActivationCapture, resolve_layers
from ndstream.errors import CaptureError


def _check_against_hooks(
    model: nn.Module, x: torch.Tensor, names: list[str], truth: dict[str, int]
) -> dict[str, str]:
    """Every reduction of every layer equals numpy on the plain hooks' output, with neurons
    on the axis ``truth`` gives (negative: from the end). Returns the rule of each layer."""
    rules = {}
    for reduction in ("max", "mean", "none"):
        with (
            raw_outputs(model, names) as raw,
            ActivationCapture(model, names, reduction=reduction, optional=names) as cap,
        ):
            model(x)
            acts = cap.pop()
        for name, info in cap.layers.items():
            out = raw[info.module][max(0, info.call - 1)]  # a module's calls are layers @k
            axis = truth[info.module] % out.ndim
            assert info.channel_dim == axis, (name, info)
            assert info.n_neurons == out.shape[axis], name
            expected = np_reduce(out, axis, reduction)
            np.testing.assert_allclose(acts[name], expected, rtol=2e-5, atol=2e-5, err_msg=name)
            rules[name] = info.axis_rule
    return rules


@pytest.mark.slow
def test_convnext_channels_last_blocks_against_plain_hooks() -> None:
    torch.manual_seed(0)
    model = torchvision.models.convnext_tiny().eval()
    x = torch.randn(2, 3, 64, 64)
    names = resolve_layers(model, ["features.0.*", "features.1.*", "features.2.*"])
    # Inside a CNBlock, block.1 permutes to [B, H, W, C] and block.6 back: block.2 to
    # block.5 (LayerNorm, Linear, GELU, Linear) have their channels last.
    truth = {n: -1 if n.split(".")[-2:-1] == ["block"] and n[-1] in "2345" else 1 for n in names}
    rules = _check_against_hooks(model, x, names, truth)
    assert rules["features.1.0.block.3"] == "type"  # Linear(96, 384): 384 neurons, not 16 rows
    assert rules["features.1.0.block.4"] in ("input", "output")  # the GELU follows the Linear
    assert rules["features.0.1"] == "parameters"  # LayerNorm2d overrides LayerNorm.forward
    assert rules["features.1.0"] in ("output", "parameters")  # CNBlock: layer_scale [C, 1, 1]
    assert {"features.1.0.block.2", "features.1.0.block.5", "features.2.1"} <= set(rules)


@pytest.mark.slow
def test_swin_channels_last_throughout_against_plain_hooks() -> None:
    torch.manual_seed(0)
    model = torchvision.models.swin_t().eval()
    x = torch.randn(2, 3, 64, 64)
    names = resolve_layers(model, ["features.1.*", "features.2.*", "features.3.0.*"])
    # Swin works in [B, H, W, C] after its stem: every module's neurons are its channels.
    rules = _check_against_hooks(model, x, names, dict.fromkeys(names, -1))
    assert rules["features.1.0.mlp.0"] == "type" and rules["features.1.0.norm1"] == "type"
    assert rules["features.1.0.mlp.1"] in ("input", "output")  # GELU
    assert rules["features.1.0"] in ("input", "output")  # the block
    assert "features.2.reduction" in rules  # PatchMerging's Linear
    assert "features.1.0.attn" in rules


class Scale(nn.Module):
    """A custom module with a [C] parameter applied channels-last."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.linspace(0.5, 1.5, c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gain


class Square(nn.Module):
    """A custom module with a [C, C] parameter: every axis of size C matches it."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(c, c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w


class ChannelsLast(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.act = inner, nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.inner(x.permute(0, 2, 3, 1)))


def test_parameters_decide_a_custom_module_and_its_activation_follows() -> None:
    model = ChannelsLast(Scale(6)).eval()
    x = torch.randn(2, 6, 4, 5)
    with ActivationCapture(model, ["inner", "act"]) as cap:
        model(x)
    assert cap.layers["inner"].channel_dim == 3 and cap.layers["inner"].axis_rule == "parameters"
    assert cap.layers["act"].channel_dim == 3 and cap.layers["act"].axis_rule == "input"
    assert cap.layers["act"].n_neurons == 6


def test_undecidable_axis_asks_for_channel_dim_and_the_override_works() -> None:
    model = ChannelsLast(Square(4)).eval()
    x = torch.randn(2, 4, 4, 4)  # [B, H, W, C] = [2, 4, 4, 4]: every axis matches the [4, 4] weight
    with (
        pytest.raises(CaptureError, match=r"channel_dim: \{'inner': -1\}"),
        ActivationCapture(model, ["inner"]),
    ):
        model(x)
    with (
        raw_outputs(model, ["inner"]) as raw,
        ActivationCapture(model, ["inner", "act"], channel_dim={"inner": -1}) as cap,
    ):
        model(x)
        acts = cap.pop()
    assert cap.layers["inner"].axis_rule == "override"
    assert cap.layers["act"].channel_dim == 3  # follows the overridden axis of its input
    np.testing.assert_allclose(acts["inner"], np_reduce(raw["inner"][0], 3, "max"), rtol=1e-6)


def test_axis_is_kept_after_the_first_pass() -> None:
    """Later passes use the first pass's axis, even where sizes would now be ambiguous."""
    model = ChannelsLast(Scale(6)).eval()
    with ActivationCapture(model, ["act"], reduction="mean") as cap:
        model(torch.randn(2, 6, 3, 5))
        first = dict(cap.layers)
        model(torch.randn(3, 6, 6, 6))  # now H == W == C
        acts = cap.pop()
    assert cap.layers == first and acts["act"].shape == (5, 1, 6)
