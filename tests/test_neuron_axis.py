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
    # Inside a CNBlock, block.1 permutes to [B, H, W, C] and block.6 back: block.1 to
    # block.5 (Permute, LayerNorm, Linear, GELU, Linear) have their channels last.
    truth = {n: -1 if n.split(".")[-2:-1] == ["block"] and n[-1] in "12345" else 1 for n in names}
    rules = _check_against_hooks(model, x, names, truth)
    assert rules["features.1.0.block.3"] == "type"  # Linear(96, 384): 384 neurons, not 16 rows
    assert rules["features.1.0.block.1"] == "input"  # the Permute: where the channels went
    assert rules["features.1.0.block.4"] in ("input", "output")  # the GELU follows the Linear
    assert rules["features.0.1"] != "type"  # LayerNorm2d overrides LayerNorm.forward: axis 1
    assert rules["features.1.0"] in ("output", "parameters")  # CNBlock: layer_scale [C, 1, 1]
    assert {"features.1.0.block.2", "features.1.0.block.5", "features.2.1"} <= set(rules)


@pytest.mark.slow
@pytest.mark.parametrize("size", [(64, 64), (48, 64)])  # 48: stage 3 is 6 high, with 6 heads
def test_swin_channels_last_throughout_against_plain_hooks(size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    model = torchvision.models.swin_t().eval()
    x = torch.randn(2, 3, *size)
    names = resolve_layers(model, ["features.0.*", "features.1.*", "features.2.*", "features.3.*"])
    # Swin works in [B, H, W, C] after its stem's convolution (features.0.1 permutes):
    # every other module's neurons are its channels.
    truth = {n: 1 if n == "features.0.0" else -1 for n in names}
    rules = _check_against_hooks(model, x, names, truth)
    assert rules["features.0.1"] == "input"  # the Permute
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
        pytest.raises(CaptureError, match=r"channel_dim: \{'inner': <axis>\}"),
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


class Norms(nn.Module):
    """Channels-first modules fed tensors no module made (so nothing tracks their layout)."""

    def __init__(self) -> None:
        super().__init__()
        self.bn, self.pad = nn.BatchNorm2d(8), nn.ReflectionPad1d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(torch.cat([x, x], dim=1))  # [B, 8, 8, 8]: H == W == C
        return self.pad(y.flatten(2)[:, :, :5]).sum() + y.sum()


def test_batch_norm_and_padding_are_channel_first_by_type() -> None:
    model = Norms().eval()
    with ActivationCapture(model, ["bn", "pad"]) as cap:
        model(torch.randn(2, 4, 8, 8))
    assert (cap.layers["bn"].channel_dim, cap.layers["bn"].axis_rule) == (1, "type")
    assert (cap.layers["pad"].channel_dim, cap.layers["pad"].axis_rule) == (1, "type")


class Permute(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1)


def test_a_reshape_that_hides_where_the_neurons_went_asks_for_channel_dim() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 1), Permute()).eval()
    with ActivationCapture(model, ["1"]) as cap:
        model(torch.randn(2, 3, 5, 6))  # [B, 5, 6, 4]: the 4 channels went last
    assert (cap.layers["1"].channel_dim, cap.layers["1"].axis_rule) == (3, "input")
    with (
        pytest.raises(CaptureError, match=r"any of the axes \[1, 3\]"),
        ActivationCapture(model, ["1"]),
    ):
        model(torch.randn(2, 3, 4, 5))  # [B, 4, 5, 4]: the channels at axis 1 or 3


def test_what_follows_an_undecided_layout_is_undecided_too() -> None:
    """A ReLU after an ambiguous rearrangement asks too, rather than taking axis 1."""
    model = nn.Sequential(nn.Conv2d(3, 4, 1), Permute(), nn.ReLU()).eval()
    with (
        pytest.raises(CaptureError, match=r"layer '2'.*could not be told either"),
        ActivationCapture(model, ["2"]),
    ):
        model(torch.randn(2, 3, 4, 5))
    with ActivationCapture(model, ["1", "2"], channel_dim={"1": 3}) as cap:
        model(torch.randn(2, 3, 4, 5))
    assert (cap.layers["2"].channel_dim, cap.layers["2"].axis_rule) == (3, "input")


def test_a_neuron_axis_that_changes_length_is_refused() -> None:
    """Neurons set on an axis of positions (here by a wrong override): the next input of
    another size says so, instead of a numpy error in the sketches."""
    model = nn.Sequential(nn.Conv2d(3, 4, 1)).eval()
    with ActivationCapture(model, ["0"], channel_dim={"0": 2}) as cap:
        model(torch.randn(2, 3, 5, 5))
        with pytest.raises(CaptureError, match=r"\[6\] neuron\(s\).*\[5\] in the first"):
            model(torch.randn(2, 3, 6, 6))
    assert cap.layers["0"].n_neurons == 5
