"""Tests for ndstream.capture.

Every expected value comes from an independent path: plain ``register_forward_hook`` hooks that
keep (cloned) raw outputs, reduced with numpy, or values worked out by hand.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from ndstream.capture.hooks import (
    REDUCTIONS,
    ActivationCapture,
    LayerInfo,
    resolve_layers,
)
from ndstream.capture.neuron_axis import convention_axis
from ndstream.errors import CaptureError, LayerNotFoundError

# --------------------------------------------------------------------------- helpers


@contextmanager
def raw_outputs(model: nn.Module, names: Sequence[str]) -> Iterator[dict[str, list[np.ndarray]]]:
    """Plain hooks: every call's first output tensor, cloned (later in-place ops can't touch it)."""
    store: dict[str, list[np.ndarray]] = {n: [] for n in names}
    modules = dict(model.named_modules())

    def make(name: str) -> Callable[[nn.Module, Any, Any], None]:
        def hook(module: nn.Module, args: Any, out: Any) -> None:
            t = out[0] if isinstance(out, tuple | list) else out
            store[name].append(t.detach().clone().to(torch.float64).cpu().numpy())

        return hook

    handles = [modules[n].register_forward_hook(make(n)) for n in names]
    try:
        yield store
    finally:
        for h in handles:
            h.remove()


def np_reduce(raw: np.ndarray, axis: int, reduction: str) -> np.ndarray:
    """Numpy reference: [batch, values, neurons] with neurons taken from ``axis``."""
    moved = np.moveaxis(raw, axis, -1)
    per_pos = moved.reshape(moved.shape[0], -1, moved.shape[-1])
    if reduction == "max":
        return per_pos.max(axis=1, keepdims=True)
    if reduction == "mean":
        return per_pos.mean(axis=1, keepdims=True)
    return per_pos


def no_hooks_left(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


class MyConv(nn.Conv2d):
    """A Conv2d subclass: type selectors must match it through the MRO."""


def small_net() -> nn.Sequential:
    features = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), MyConv(4, 5, 3, padding=1), nn.ReLU()
    )
    return nn.Sequential(
        OrderedDict(
            features=features,
            pool=nn.AdaptiveAvgPool2d(1),
            flat=nn.Flatten(),
            classifier=nn.Linear(5, 2),
        )
    )


class HandNet(nn.Module):
    """conv(1->2, k=2) -> relu -> flatten -> fc(8->3), weights set by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, kernel_size=2)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(8, 3)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[0, 0] = 1.0  # channel 0: sum of the 2x2 window
            self.conv.weight[1, 0, 0, 0], self.conv.weight[1, 0, 1, 1] = 1.0, -1.0
            self.conv.bias.copy_(torch.tensor([0.0, 0.5]))
            self.fc.weight.copy_(torch.arange(24.0).reshape(3, 8) / 10 - 1)
            self.fc.bias.copy_(torch.tensor([1.0, -2.0, 0.25]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.relu(self.conv(x)).flatten(1))


def hand_input() -> torch.Tensor:
    grid = torch.arange(9.0).reshape(1, 3, 3)
    return torch.stack([grid, -grid])  # [2, 1, 3, 3]


# --------------------------------------------------------------------------- exact values


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_hand_weighted_values_match_numpy_on_raw_outputs(reduction: str) -> None:
    model, x = HandNet(), hand_input()
    names = ["conv", "relu", "fc"]
    with (
        raw_outputs(model, names) as raw,
        ActivationCapture(model, names, reduction=reduction) as cap,
    ):
        model(x)
        acts = cap.pop()
    assert list(acts) == names
    for name in names:
        (out,) = raw[name]
        expected = np_reduce(out, 1, reduction)
        assert acts[name].dtype == np.float32 and acts[name].flags.c_contiguous
        np.testing.assert_allclose(acts[name], expected, rtol=1e-6, atol=1e-6)


def test_hand_weighted_values_match_hand_computation() -> None:
    model, x = HandNet(), hand_input()
    # Windows of [[0,1,2],[3,4,5],[6,7,8]] sum to 8, 12, 20, 24; channel 1 is x[i,j]-x[i+1,j+1]+.5.
    conv0 = np.array([[8, 12, 20, 24], [-8, -12, -20, -24]], dtype=np.float64)
    conv1 = np.array([[-3.5] * 4, [4.5] * 4])
    relu_flat = np.maximum(np.stack([conv0, conv1], axis=1), 0).reshape(2, 8)
    fc = relu_flat @ (np.arange(24.0).reshape(3, 8) / 10 - 1).T + [1.0, -2.0, 0.25]
    results = {}
    for reduction in REDUCTIONS:
        with ActivationCapture(model, ["conv", "fc"], reduction=reduction) as cap:
            model(x)
            results[reduction] = cap.pop()
    np.testing.assert_array_equal(results["max"]["conv"][:, 0], [[24, -3.5], [-8, 4.5]])
    np.testing.assert_array_equal(results["mean"]["conv"][:, 0], [[16, -3.5], [-16, 4.5]])
    none = results["none"]["conv"]
    assert none.shape == (2, 4, 2)  # positions in row-major order
    np.testing.assert_array_equal(none[:, :, 0], conv0)
    np.testing.assert_array_equal(none[:, :, 1], conv1)
    for reduction in REDUCTIONS:  # 2-d outputs: [batch, 1, neurons] whatever the reduction
        np.testing.assert_allclose(results[reduction]["fc"][:, 0], fc, rtol=1e-6)


def test_layer_info() -> None:
    model, x = HandNet(), hand_input()
    with ActivationCapture(model, ["conv", "fc"]) as cap:
        assert cap.layers == {}
        model(x)
    assert cap.layers == {
        "conv": LayerInfo("conv", "Conv2d", 1, 2, (2, 2, 2), 1, axis_rule="type"),
        "fc": LayerInfo("fc", "Linear", 1, 3, (3,), 1, axis_rule="only"),
    }


def test_none_reduction_is_not_overwritten_by_later_inplace_op() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(inplace=True))
    x = torch.randn(8, 4)
    with raw_outputs(model, ["0"]) as raw, ActivationCapture(model, ["0"], reduction="none") as cap:
        model(x)
        acts = cap.pop()
    assert (raw["0"][0] < 0).any()  # otherwise the test could not see an in-place overwrite
    np.testing.assert_allclose(acts["0"][:, 0], raw["0"][0], rtol=1e-6)


@settings(max_examples=40, deadline=None)
@given(
    shape=st.lists(st.integers(1, 4), min_size=2, max_size=5),
    data=st.data(),
    reduction=st.sampled_from(REDUCTIONS),
)
def test_reductions_match_numpy_for_any_shape_and_axis(
    shape: list[int], data: st.DataObject, reduction: str
) -> None:
    axis = data.draw(st.integers(1, len(shape) - 1))
    x = torch.from_numpy(np.random.default_rng(len(shape)).normal(size=shape).astype(np.float32))
    model = nn.Sequential(nn.Identity())
    with ActivationCapture(model, ["0"], reduction=reduction, channel_dim={"0": axis}) as cap:
        model(x)
        acts = cap.pop()
    expected = np_reduce(x.numpy().astype(np.float64), axis, reduction)
    np.testing.assert_allclose(acts["0"], expected, rtol=1e-5, atol=1e-6)
    assert cap.layers["0"].n_neurons == shape[axis]


# --------------------------------------------------------------------------- selection


def test_select_exact_glob_type_and_class() -> None:
    model = small_net()
    assert resolve_layers(model, "features.2") == ["features.2"]
    assert resolve_layers(model, ["features.*"]) == [f"features.{i}" for i in range(4)]
    assert resolve_layers(model, "features.[02]") == ["features.0", "features.2"]
    # type:Conv2d matches the MyConv subclass through its MRO.
    assert resolve_layers(model, "type:Conv2d") == ["features.0", "features.2"]
    both = ["features.0", "features.2", "classifier"]
    assert resolve_layers(model, "type:Conv2d,Linear") == both
    assert resolve_layers(model, "type: Conv2d , Linear") == both
    assert resolve_layers(model, nn.Conv2d) == ["features.0", "features.2"]
    assert resolve_layers(model, [MyConv]) == ["features.2"]


def test_selection_is_unique_and_in_module_order() -> None:
    model = small_net()
    got = resolve_layers(model, ["classifier", nn.ReLU, "features.*", "features.0", "flat"])
    assert got == ["features.0", "features.1", "features.2", "features.3", "flat", "classifier"]


def test_bad_name_suggests_closest() -> None:
    # Six modules come first so that a fallback "first few names" list would miss features.0.
    early = [(f"stage{i}", nn.Identity()) for i in range(6)]
    features = nn.Sequential(nn.Conv2d(1, 1, 1))
    model = nn.Sequential(OrderedDict([*early, ("features", features), ("head", nn.ReLU())]))
    with pytest.raises(LayerNotFoundError) as info:
        resolve_layers(model, ["featurs.0"])
    message = str(info.value)
    assert isinstance(info.value, KeyError)
    assert "'features.0'" in message and not message.startswith('"')
    assert "named_modules()" in message and "features.*" in message and "type:Conv2d" in message
    # A name near none lists the modules, not a list of close ones that are not close.
    with pytest.raises(LayerNotFoundError) as info:
        resolve_layers(model, ["zzzzzz"])
    assert "closest" not in str(info.value)
    assert "; its modules: 'stage0', 'stage1', 'stage2'" in str(info.value)


@pytest.mark.parametrize(
    "selector", ["decoder.*", "type:Conv3d", "type:Conv2d,Linaer", nn.LSTM, ""]
)
def test_selector_matching_nothing_raises(selector: Any) -> None:
    with pytest.raises(LayerNotFoundError) as info:
        resolve_layers(small_net(), selector)
    if "type:" in str(selector) or selector is nn.LSTM:  # lists the types that do exist
        assert "Conv2d" in str(info.value) and "Linear" in str(info.value)


@pytest.mark.parametrize("selector", [[], (), "type:", "type: ,"])
def test_empty_selection_raises_value_error(selector: Any) -> None:
    with pytest.raises(ValueError):
        resolve_layers(small_net(), selector)


def test_non_selector_raises_type_error() -> None:
    with pytest.raises(TypeError):
        resolve_layers(small_net(), [3])  # type: ignore[list-item]


def test_bad_arguments_to_capture() -> None:
    model = small_net()
    with pytest.raises(ValueError) as info:
        ActivationCapture(model, ["classifier"], reduction="median")  # type: ignore[arg-type]
    assert all(r in str(info.value) for r in REDUCTIONS)
    with pytest.raises(LayerNotFoundError):
        ActivationCapture(model, ["clasifier"])
    with pytest.raises(ValueError, match="decoder"):
        ActivationCapture(model, ["classifier"], channel_dim={"decoder.*": 1})
    with pytest.raises(ValueError, match=r"features\.0"):  # a real module, but not selected
        ActivationCapture(model, ["classifier"], channel_dim={"features.0": 1})
    with pytest.raises(ValueError, match="different axes"):
        ActivationCapture(model, ["features.0"], channel_dim={"features.*": 1, "*.0": -1})
    with pytest.raises(ValueError):
        ActivationCapture(model, ["features.0"], channel_dim={"features.0": 1.0})  # type: ignore[dict-item]


# --------------------------------------------------------------------------- hook lifetime


def test_hooks_removed_after_exit_and_exit_twice_is_safe() -> None:
    model = small_net()
    cap = ActivationCapture(model, ["type:Conv2d,Linear"])
    with cap:
        assert not no_hooks_left(model)
        with pytest.raises(RuntimeError):
            cap.__enter__()  # already active
    assert no_hooks_left(model)
    cap.__exit__(None, None, None)
    assert no_hooks_left(model)


class Boom(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom")


def test_hooks_removed_when_forward_raises() -> None:
    model = nn.Sequential(nn.Linear(2, 2), Boom())
    cap = ActivationCapture(model, ["0", "1"])
    with pytest.raises(RuntimeError, match="boom"), cap:
        model(torch.ones(1, 2))
    assert no_hooks_left(model)
    assert cap.pop() == {}  # the pass that raised left nothing behind
    with pytest.raises(CaptureError, match="outside"), cap:  # re-entered: no stale pass open
        model[0](torch.ones(1, 2))
    assert no_hooks_left(model)


def test_failed_enter_removes_registered_hooks(monkeypatch: pytest.MonkeyPatch) -> None:
    model = small_net()

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("cannot hook")

    monkeypatch.setattr(model.classifier, "register_forward_hook", refuse)
    cap = ActivationCapture(model, ["features.0", "classifier"])
    with pytest.raises(RuntimeError, match="cannot hook"):
        cap.__enter__()
    assert no_hooks_left(model)


# --------------------------------------------------------------------------- output types


class Wrap(nn.Module):
    """Calls ``inner`` through ``call`` so tuple-returning modules can sit in a model."""

    def __init__(self, inner: nn.Module, call: Callable[[nn.Module, torch.Tensor], Any]) -> None:
        super().__init__()
        self.inner, self.call = inner, call

    def forward(self, x: torch.Tensor) -> Any:
        return self.call(self.inner, x)


@pytest.mark.parametrize(
    ("inner", "call"),
    [
        (nn.LSTM(3, 5, batch_first=True), lambda m, x: m(x)[0]),
        (nn.MultiheadAttention(3, 1, batch_first=True), lambda m, x: m(x, x, x)[0]),
    ],
    ids=["lstm", "mha"],
)
def test_tuple_output_uses_first_element(inner: nn.Module, call: Any) -> None:
    torch.manual_seed(0)
    model, x = Wrap(inner, call), torch.randn(2, 4, 3)  # [batch, tokens, features]
    with (
        raw_outputs(model, ["inner"]) as raw,
        ActivationCapture(model, ["inner"], reduction="mean") as cap,
    ):
        model(x)
        acts = cap.pop()
    (out,) = raw["inner"]
    np.testing.assert_allclose(acts["inner"], np_reduce(out, -1, "mean"), rtol=1e-5, atol=1e-6)
    assert cap.layers["inner"].output_shape == out.shape[1:]


@pytest.mark.parametrize(
    ("call", "type_name"),
    [
        (lambda m, x: {"out": None}, "dict"),
        (lambda m, x: (None, "text"), "tuple"),
        (lambda m, x: None, "NoneType"),
        (lambda m, x: (), "tuple"),
    ],
)
def test_unsupported_output_raises_capture_error(call: Any, type_name: str) -> None:
    model = nn.Sequential(OrderedDict(block=Wrap(nn.Identity(), call)))
    with pytest.raises(CaptureError) as info, ActivationCapture(model, ["block"]):
        model(torch.ones(2, 3))
    assert "'block'" in str(info.value) and type_name in str(info.value)
    assert "submodule" in str(info.value)
    assert no_hooks_left(model)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_nan_and_inf_propagate(reduction: str) -> None:
    x = torch.zeros(2, 3, 2, 2)
    x[0, 1, 0, 0] = float("nan")
    x[1, 2, 1, 1] = float("inf")
    x[1, 0, 0, 1] = float("-inf")
    model = nn.Sequential(nn.Identity())
    with ActivationCapture(model, ["0"], reduction=reduction) as cap:
        model(x)
        acts = cap.pop()["0"]
    expected = np_reduce(x.numpy(), 1, reduction)
    np.testing.assert_array_equal(acts, expected)  # treats NaN == NaN
    assert np.isnan(acts[0, :, 1]).any() and np.isposinf(acts[1, :, 2]).any()
    assert np.isfinite(acts[0, :, [0, 2]]).all()  # NaN stays in its own neuron and sample
    if reduction != "max":
        assert np.isneginf(acts[1, :, 0]).any()


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_dtypes_are_cast_to_float32(reduction: str) -> None:
    x = torch.tensor([[1.0, -2.0, 3.0], [60000.0, 60000.0, -1.0]]).reshape(2, 3, 1)
    x = torch.cat([x, x / 2, -x], dim=2)  # [batch 2, neurons 3, positions 3]
    cases: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "as_bool": lambda t: t > 0,
        "as_int": lambda t: t.to(torch.int64),
        "as_half": lambda t: t.to(torch.float16),
        "as_double": lambda t: t.to(torch.float64),
    }
    for name, convert in cases.items():
        model = nn.Sequential(
            OrderedDict([(name, Wrap(nn.Identity(), lambda m, t, f=convert: f(m(t))))])
        )
        with ActivationCapture(model, [name], reduction=reduction, channel_dim={name: 1}) as cap:
            model(x)
            acts = cap.pop()[name]
        expected = np_reduce(convert(x).to(torch.float64).numpy(), 1, reduction)
        assert acts.dtype == np.float32
        np.testing.assert_allclose(acts, expected, rtol=1e-6)  # half: no overflow past 65504


def test_complex_output_raises() -> None:
    model = nn.Sequential(OrderedDict(c=Wrap(nn.Identity(), lambda m, t: m(t).to(torch.complex64))))
    with pytest.raises(CaptureError, match="complex"), ActivationCapture(model, ["c"]):
        model(torch.ones(2, 3))


def test_hooked_module_called_outside_model_forward_raises() -> None:
    model = small_net()
    with pytest.raises(CaptureError, match="outside"), ActivationCapture(model, ["classifier"]):
        model.classifier(torch.ones(1, 5))


def test_output_requiring_grad_is_captured_and_graph_survives() -> None:
    torch.manual_seed(0)
    model = small_net().train()
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    with ActivationCapture(model, ["type:Conv2d,Linear"]) as cap:
        out = model(x)
        acts = cap.pop()
    out.sum().backward()
    assert x.grad is not None and acts["classifier"].shape == (2, 1, 2)


# --------------------------------------------------------------------------- channel dim


@pytest.mark.parametrize(
    ("module", "ndim", "expected"),
    [
        (nn.Linear(2, 2), 1, 1),
        (nn.Linear(2, 2), 2, 1),
        (nn.Linear(2, 2), 3, -1),
        (nn.GELU(), 3, -1),
        (nn.Conv1d(2, 2, 1), 3, 1),
        (nn.ConvTranspose1d(2, 2, 1), 3, 1),
        (nn.MaxPool1d(2), 3, 1),
        (nn.AdaptiveAvgPool1d(1), 3, 1),
        (nn.BatchNorm1d(2), 3, 1),
        (nn.InstanceNorm1d(2), 3, 1),
        (nn.LazyConv1d(2, 1), 3, 1),
        (type("MyConv1d", (nn.Conv1d,), {})(2, 2, 1), 3, 1),
        (nn.Conv2d(2, 2, 1), 4, 1),
        (nn.Conv3d(2, 2, 1), 5, 1),
        (nn.Identity(), 4, 1),
    ],
)
def test_convention_axis(module: nn.Module, ndim: int, expected: int) -> None:
    assert convention_axis(module, ndim) == expected


def test_channel_dim_for_rejects_zero_dim() -> None:
    with pytest.raises(ValueError):
        convention_axis(nn.Identity(), 0)


class TokenNet(nn.Module):
    """[B, T, 8] -> Linear(8->16) -> LayerNorm; and [B, 4, L] -> Conv1d -> BatchNorm1d -> MaxPool1d."""

    def __init__(self) -> None:
        super().__init__()
        self.proj, self.norm = nn.Linear(8, 16), nn.LayerNorm(16)
        self.conv, self.bn, self.pool = nn.Conv1d(4, 6, 3), nn.BatchNorm1d(6), nn.MaxPool1d(2)

    def forward(self, tokens: torch.Tensor, signal: torch.Tensor) -> torch.Tensor:
        a = self.norm(self.proj(tokens))
        b = self.pool(self.bn(self.conv(signal)))
        return a.sum() + b.sum()


def test_transformer_and_conv1d_outputs() -> None:
    torch.manual_seed(0)
    model = TokenNet().eval()
    tokens, signal = torch.randn(2, 5, 8), torch.randn(2, 4, 11)
    names = ["proj", "norm", "conv", "bn", "pool"]
    with raw_outputs(model, names) as raw, ActivationCapture(model, names, reduction="none") as cap:
        model(tokens, signal)
        acts = cap.pop()
    expected = {"proj": (-1, 16), "norm": (-1, 16), "conv": (1, 6), "bn": (1, 6), "pool": (1, 6)}
    for name, (axis, n) in expected.items():
        (out,) = raw[name]
        assert cap.layers[name].n_neurons == n
        assert cap.layers[name].channel_dim == axis % out.ndim
        np.testing.assert_allclose(acts[name], np_reduce(out, axis, "none"), rtol=1e-5, atol=1e-6)
    assert acts["proj"].shape == (2, 5, 16)  # tokens are positions
    assert acts["conv"].shape == (2, 9, 6)


def test_channel_dim_override_by_name_glob_and_negative_axis() -> None:
    torch.manual_seed(0)
    model = TokenNet().eval()
    tokens, signal = torch.randn(2, 5, 8), torch.randn(2, 4, 11)
    overrides = {"proj": 1, "norm": -2, "*o*v": -1}  # "*o*v" matches "conv" only
    names = ["proj", "norm", "conv"]
    with (
        raw_outputs(model, names) as raw,
        ActivationCapture(model, names, channel_dim=overrides) as cap,
    ):
        model(tokens, signal)
        acts = cap.pop()
    for name, axis in [("proj", 1), ("norm", 1), ("conv", 2)]:
        (out,) = raw[name]
        assert cap.layers[name].channel_dim == axis
        np.testing.assert_allclose(acts[name], np_reduce(out, axis, "max"), rtol=1e-6)
    assert acts["proj"].shape == (2, 1, 5) and acts["conv"].shape == (2, 1, 9)


@pytest.mark.parametrize("axis", [0, 3, -3])
def test_channel_dim_override_out_of_range_raises(axis: int) -> None:
    model = nn.Sequential(nn.Identity())
    with (
        pytest.raises(CaptureError, match="channel_dim"),
        ActivationCapture(model, ["0"], channel_dim={"0": axis}),
    ):
        model(torch.ones(2, 3, 4))
    assert no_hooks_left(model)


def test_batch_only_output_is_one_neuron() -> None:
    model = nn.Sequential(OrderedDict(total=Wrap(nn.Identity(), lambda m, t: m(t).sum(dim=1))))
    x = torch.tensor([[1.0, 2.0], [3.0, -7.0]])
    for reduction in REDUCTIONS:
        with ActivationCapture(model, ["total"], reduction=reduction) as cap:
            model(x)
            np.testing.assert_array_equal(cap.pop()["total"], [[[3.0]], [[-4.0]]])
    assert cap.layers["total"] == LayerInfo("total", "Wrap", 1, 1, (), 1, axis_rule="only")


# --------------------------------------------------------------------------- calls and passes


class Reuse(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2, self.act = nn.Conv2d(2, 3, 1), nn.Conv2d(3, 3, 1), nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.act(self.conv1(x))))


def test_pooled_module_called_with_different_neuron_counts_raises() -> None:
    model = nn.Sequential(OrderedDict(block=Wrap(nn.ReLU(), lambda m, x: (m(x), m(x[:, :2])))))
    with (
        pytest.raises(CaptureError, match=r"block\.inner.*neurons"),
        ActivationCapture(model, ["block.inner"], calls="pool"),
    ):
        model(torch.ones(2, 3))
    assert no_hooks_left(model)


class Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem, self.branch = nn.Linear(2, 3), nn.Linear(3, 3)

    def forward(self, x: torch.Tensor, take: bool = False, fail: bool = False) -> torch.Tensor:
        y = self.stem(x)
        if fail:
            raise RuntimeError("late failure")
        return self.branch(y) if take else y


def test_layer_that_did_not_run_raises_and_pop_clears() -> None:
    model = Branchy()
    with ActivationCapture(model, ["stem", "branch"]) as cap:
        assert cap.pop() == {}  # no forward yet
        model(torch.ones(2, 2))
        with pytest.raises(CaptureError, match="branch") as info:
            cap.pop()
        assert "stem" not in str(info.value)
        assert cap.pop() == {}  # the failed pop cleared the stored pass
        model(torch.ones(2, 2), take=True)
        assert set(cap.pop()) == {"stem", "branch"}


def test_several_passes_stack_along_batch() -> None:
    torch.manual_seed(0)
    model = Branchy()
    x1, x2 = torch.randn(2, 2), torch.randn(3, 2)
    with raw_outputs(model, ["stem"]) as raw, ActivationCapture(model, ["stem"]) as cap:
        model(x1)
        model(x2)
        acts = cap.pop()["stem"]
    expected = np.concatenate([np_reduce(out, 1, "max") for out in raw["stem"]], axis=0)
    np.testing.assert_allclose(acts, expected, rtol=1e-6)
    assert acts.shape == (5, 1, 3)


def test_forward_that_raises_midway_contributes_nothing() -> None:
    torch.manual_seed(0)
    model = Branchy()
    with ActivationCapture(model, ["stem"]) as cap:
        with pytest.raises(RuntimeError, match="late failure"):
            model(torch.randn(4, 2), fail=True)  # "stem" ran before the failure
        model(torch.ones(1, 2))
        assert cap.pop()["stem"].shape == (1, 1, 3)


def test_passes_with_different_positions_are_refused_at_once() -> None:
    """Without a token mask, 'none' needs the same positions in every pass: the pass that
    changes them raises, saying how to count inputs of varying length."""
    model = nn.Sequential(nn.Conv2d(1, 2, 1))
    with ActivationCapture(model, ["0"], reduction="none") as cap:
        model(torch.ones(1, 1, 2, 2))
        with pytest.raises(CaptureError, match=r"\[9\] value\(s\) per sample.*token mask"):
            model(torch.ones(1, 1, 3, 3))
        assert cap.pop()["0"].shape == (1, 4, 2)  # the first pass is kept


# --------------------------------------------------------------------------- torchvision


def expected_neurons(module: nn.Module, name: str) -> int:
    if isinstance(module, nn.Conv2d):
        return module.out_channels
    if isinstance(module, nn.Linear):
        return module.out_features
    assert isinstance(module, nn.GELU), name
    return 3072  # ViT-B/16 MLP dim


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["resnet18", "vgg16", "mobilenet_v3_small", "vit_b_16"])
def test_torchvision_models(arch: str, torchvision_model: Callable[[str], nn.Module]) -> None:
    is_vit = arch == "vit_b_16"
    model = torchvision_model(arch)  # built once per session (conftest.TORCHVISION)
    modules = dict(model.named_modules())
    names = resolve_layers(model, ["type:Conv2d,Linear"] + (["type:GELU"] if is_vit else []))
    # nn.MultiheadAttention uses out_proj's weights without calling it, so its hook never fires.
    skipped = [n for n in names if n.endswith("self_attention.out_proj")]
    assert len(skipped) == (12 if is_vit else 0)
    ran = [n for n in names if n not in skipped]
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with (
        torch.inference_mode(),
        raw_outputs(model, ran) as raw,
        ActivationCapture(model, ran) as cap,
        ActivationCapture(model, names) as cap_all,
    ):
        model(x)
        acts = cap.pop()
        with pytest.raises(CaptureError, match="out_proj") if is_vit else nullcontext():
            cap_all.pop()
    assert list(acts) == ran
    for name in ran:
        n = expected_neurons(modules[name], name)
        (out,) = raw[name]
        assert acts[name].shape == (2, 1, n), name
        assert cap.layers[name].n_neurons == n and cap.layers[name].calls_per_forward == 1
        axis = -1 if out.ndim == 3 else 1  # ViT token outputs are [batch, tokens, dim]
        np.testing.assert_allclose(acts[name], np_reduce(out, axis, "max"), rtol=1e-5, atol=1e-5)
    assert no_hooks_left(model)


@pytest.mark.slow
def test_resnet18_reused_relu(torchvision_model: Callable[[str], nn.Module]) -> None:
    # BasicBlock calls its relu after bn1 and again after the residual sum.
    model = torchvision_model("resnet18")
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with (
        torch.inference_mode(),
        raw_outputs(model, ["layer1.0.relu"]) as raw,
        ActivationCapture(model, ["layer1.0.relu"]) as cap,
        ActivationCapture(model, ["layer1.0.relu"], calls="pool") as pooled,
    ):
        model(x)
        acts = cap.pop()
        pooled_acts = pooled.pop()["layer1.0.relu"]
    assert len(raw["layer1.0.relu"]) == 2
    per_call = [np_reduce(out, 1, "max") for out in raw["layer1.0.relu"]]
    assert list(acts) == ["layer1.0.relu@1", "layer1.0.relu@2"]
    for call, expected in enumerate(per_call, start=1):
        assert acts[f"layer1.0.relu@{call}"].shape == (2, 1, 64)
        np.testing.assert_allclose(acts[f"layer1.0.relu@{call}"], expected, rtol=1e-6)
    assert pooled.layers["layer1.0.relu"].calls_per_forward == 2
    assert pooled_acts.shape == (2, 2, 64)
    np.testing.assert_allclose(pooled_acts, np.concatenate(per_call, axis=1), rtol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_outputs_match_cpu() -> None:
    torch.manual_seed(0)
    model, x = small_net().eval(), torch.randn(2, 3, 5, 5)
    results = []
    for device in ("cpu", "cuda"):
        model.to(device)
        with ActivationCapture(model, ["type:Conv2d,Linear"], reduction="mean") as cap:
            model(x.to(device))
            results.append(cap.pop())
    for name, value in results[0].items():
        np.testing.assert_allclose(results[1][name], value, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- mean accumulation


def test_mean_of_values_near_float32_max_is_finite() -> None:
    # A float32 sum of 16 values near 3e38 overflows to +Inf; their mean is finite.
    rng = np.random.default_rng(3)
    x = rng.uniform(2.9e38, 3.3e38, size=(2, 3, 4, 4)).astype(np.float32)
    x[1, 2] *= -1  # and the mirror image for the negative side
    model = nn.Sequential(nn.Identity())
    with ActivationCapture(model, ["0"], reduction="mean") as cap:
        model(torch.from_numpy(x))
        acts = cap.pop()["0"]
    expected = np_reduce(x.astype(np.float64), 1, "mean")
    assert np.isfinite(acts).all(), acts
    np.testing.assert_allclose(acts, expected, rtol=1e-6)


def test_mean_taken_a_slice_of_rows_at_a_time_is_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    x = torch.randn(7, 3, 5, 5) * 1e3
    model = nn.Sequential(nn.Identity())
    results = []
    for limit in (1 << 30, 1, 3 * 25 * 8 * 2):  # everything at once, row by row, 2 rows
        monkeypatch.setattr("ndstream.capture.reduce._MEAN_SLICE_BYTES", {"cpu": limit})
        with ActivationCapture(model, ["0"], reduction="mean") as cap:
            model(x)
            results.append(cap.pop()["0"])
    expected = np_reduce(x.numpy().astype(np.float64), 1, "mean")
    np.testing.assert_allclose(results[0], expected, rtol=1e-6)
    for sliced in results[1:]:
        np.testing.assert_array_equal(sliced, results[0])


# --------------------------------------------------------------------------- one layer per call


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_each_call_of_a_reused_module_is_its_own_layer(reduction: str) -> None:
    torch.manual_seed(0)
    model, x = Reuse(), torch.randn(2, 2, 3, 3)
    names = ["conv1", "act"]
    with (
        raw_outputs(model, names) as raw,
        ActivationCapture(model, names, reduction=reduction) as cap,
    ):
        model(x)
        acts = cap.pop()
    assert list(acts) == ["conv1", "act@1", "act@2"]
    assert list(cap.layers) == ["conv1", "act@1", "act@2"]
    np.testing.assert_allclose(acts["conv1"], np_reduce(raw["conv1"][0], 1, reduction), rtol=1e-6)
    for call, out in enumerate(raw["act"], start=1):
        np.testing.assert_allclose(acts[f"act@{call}"], np_reduce(out, 1, reduction), rtol=1e-6)
        info = cap.layers[f"act@{call}"]
        assert (info.name, info.module, info.call) == (f"act@{call}", "act", call)
        assert info.calls_per_forward == 1 and info.n_neurons == 3
        assert info.values_per_sample == acts[f"act@{call}"].shape[1]
    assert cap.layers["conv1"].call == 0 and cap.layers["conv1"].module == "conv1"


def test_per_call_layers_may_differ_in_shape() -> None:
    # One activation module applied to a 3-channel map, then to a 2-neuron vector.
    model = nn.Sequential(
        OrderedDict(block=Wrap(nn.ReLU(), lambda m, x: (m(x), m(x[:, :2, 0, 0]))))
    )
    x = torch.randn(4, 3, 2, 2)
    with (
        raw_outputs(model, ["block.inner"]) as raw,
        ActivationCapture(model, ["block.inner"], reduction="none") as cap,
    ):
        model(x)
        acts = cap.pop()
    first, second = raw["block.inner"]
    np.testing.assert_array_equal(acts["block.inner@1"], np_reduce(first, 1, "none"))
    np.testing.assert_array_equal(acts["block.inner@2"], np_reduce(second, 1, "none"))
    assert cap.layers["block.inner@1"].n_neurons == 3
    assert cap.layers["block.inner@1"].values_per_sample == 4
    assert cap.layers["block.inner@2"].n_neurons == 2
    assert cap.layers["block.inner@2"].values_per_sample == 1


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_pooled_calls_concatenate_as_more_values(reduction: str) -> None:
    torch.manual_seed(0)
    model, x = Reuse(), torch.randn(2, 2, 3, 3)
    with (
        raw_outputs(model, ["act"]) as raw,
        ActivationCapture(model, ["act"], reduction=reduction, calls="pool") as cap,
    ):
        model(x)
        acts = cap.pop()
    assert list(acts) == ["act"]
    first, second = (np_reduce(out, 1, reduction) for out in raw["act"])
    np.testing.assert_allclose(acts["act"], np.concatenate([first, second], axis=1), rtol=1e-6)
    info = cap.layers["act"]
    per_sample = 2 if reduction != "none" else 18  # 9 positions a call
    assert (info.calls_per_forward, info.call, info.values_per_sample) == (2, 0, per_sample)
    assert acts["act"].shape[1] == per_sample


class Loop(nn.Module):
    """Runs ``act`` as many times as the forward pass is told to."""

    def __init__(self) -> None:
        super().__init__()
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor, times: int) -> torch.Tensor:
        for _ in range(times):
            x = self.act(x - 0.5)
        return x


@pytest.mark.parametrize("calls", ["separate", "pool"])
def test_a_different_number_of_calls_in_a_later_pass_raises(calls: str) -> None:
    model = Loop()
    with ActivationCapture(model, ["act"], calls=calls) as cap:  # type: ignore[arg-type]
        model(torch.ones(2, 3), 2)
        cap.pop()
        with pytest.raises(CaptureError) as info:
            model(torch.ones(2, 3), 3)
    message = str(info.value)
    assert "'act'" in message and "3" in message and "2" in message
    if calls == "separate":
        assert "act@1" in message and "pool" in message
    assert no_hooks_left(model)


def test_unknown_calls_mode_raises() -> None:
    with pytest.raises(ValueError, match="separate"):
        ActivationCapture(small_net(), ["classifier"], calls="split")  # type: ignore[arg-type]


# -- held-out models: other dtypes and layouts ---------------------------------------------


class _Times(nn.Module):
    """``x * 1``: the input itself as a layer's output, in the input's dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 1


def _plain_hook_values(model: nn.Module, name: str, x: torch.Tensor) -> np.ndarray:
    got: list[torch.Tensor] = []
    handle = dict(model.named_modules())[name].register_forward_hook(
        lambda m, a, out: got.append(out.detach().float())
    )
    with torch.no_grad():
        model(x)
    handle.remove()
    return got[0].numpy()


def test_a_bfloat16_dataset_ingests_and_matches_plain_hooks(tmp_path: Any) -> None:
    import ndstream

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 4)).bfloat16().eval()
    x, y = torch.randn(100, 8).bfloat16(), torch.randint(0, 4, (100,))
    store = ndstream.ingest(
        model, torch.utils.data.TensorDataset(x, y), tmp_path / "s.zarr", layers=["0"],
        group_by="all", progress=False,
    )  # fmt: skip
    raw = _plain_hook_values(model, "0", x)
    summary = store.summary("0")
    np.testing.assert_array_equal(summary.mins[:, 0], raw.min(axis=0))
    np.testing.assert_array_equal(summary.maxs[:, 0], raw.max(axis=0))
    assert store.count("0") == 100


def test_float64_values_beyond_float32_are_said_and_counted(tmp_path: Any) -> None:
    import ndstream

    x = torch.randn(100, 3, dtype=torch.float64)
    x[:10, 0] = 1e300  # past float32 max: +Inf as float32
    x[:7, 1] = 1e-50  # nonzero, below float32's smallest subnormal: 0 as float32
    y = torch.zeros(100, dtype=torch.long)
    model = nn.Sequential(_Times()).double()
    with pytest.warns(ndstream.CaptureWarning, match=r"10 beyond .* 7 nonzero below"):
        store = ndstream.ingest(
            model, torch.utils.data.TensorDataset(x, y), tmp_path / "s.zarr", layers=["0"],
            group_by="all", progress=False, batch_size=100,
        )  # fmt: skip
    summary = store.summary("0")
    assert summary.posinf[0, 0] == 10  # counted where the warning says, not dropped
    assert summary.posinf[1, 0] == 0 and summary.posinf[2, 0] == 0
    assert store.count("0") == 100


def test_outputs_without_the_batch_first_are_refused_by_name(tmp_path: Any) -> None:
    import ndstream

    class Recurrent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(5, 7)  # batch_first=False: [time, batch, hidden]
            self.halved = _Times()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out, _ = self.lstm(x.transpose(0, 1))
            return self.halved(out[-1][: len(x) // 2])  # half the batch

    # Time steps == batch size: read batch-first, each "sample" would be a time step.
    x, y = torch.randn(40, 20, 5), torch.arange(40) % 2
    data = torch.utils.data.TensorDataset(x, y)
    with pytest.raises(CaptureError, match=r"'lstm' is a LSTM with batch_first=False"):
        ndstream.ingest(Recurrent(), data, tmp_path / "a.zarr", layers=["lstm"], batch_size=20,
                        progress=False)  # fmt: skip
    with pytest.raises(CaptureError, match=r"'halved' gave 10 row\(s\) for a batch of 20"):
        ndstream.ingest(Recurrent(), data, tmp_path / "b.zarr", layers=["halved"], batch_size=20,
                        progress=False)  # fmt: skip
    with pytest.raises(CaptureError, match=r"'0' returned shape \(20, 0\).*no neurons"):
        ndstream.ingest(nn.Sequential(nn.Linear(5, 0)), torch.utils.data.TensorDataset(
            torch.randn(20, 5), torch.zeros(20, dtype=torch.long)), tmp_path / "c.zarr",
            layers=["0"], progress=False)  # fmt: skip
    for name in ("a.zarr", "b.zarr", "c.zarr"):  # nothing was committed
        assert not (tmp_path / name / ".current").exists()


def test_nan_class_scores_are_said_when_grouping_by_prediction(tmp_path: Any) -> None:
    import ndstream

    class NaNScores(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.fc(x)
            return torch.where(x[:, :1] > 0, out, torch.nan)  # NaN where the first input <= 0

    x, y = torch.randn(60, 4), torch.arange(60) % 3
    with pytest.warns(ndstream.CaptureWarning, match="NaN class scores"):
        store = ndstream.ingest(
            NaNScores(), torch.utils.data.TensorDataset(x, y), tmp_path / "s.zarr",
            layers=["fc"], group_by=["predicted", "correct"], progress=False,
        )  # fmt: skip
    assert store.count("fc") == 60  # every sample is still counted once per grouping
