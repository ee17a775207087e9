"""Attacks: one-pixel changes at most k pixels and flips the prediction when it succeeds;
FGSM and PGD stay within ε and the valid range, in the unit space of any normalisation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ndstream.attacks import InputSpace, UnitModel, attack, one_pixel
from ndstream.config import AttacksConfig, parse_config
from ndstream.demo import DigitsCNN, DigitsDataset
from ndstream.errors import ConfigError


def _methods(*methods: dict) -> list:
    return AttacksConfig.model_validate({"methods": list(methods)}).methods


@pytest.fixture(scope="module")
def correct(digits_model: DigitsCNN, digits_dataset: DigitsDataset):
    """48 inputs the demo CNN classifies correctly, and their labels."""
    x = digits_dataset.images[:64]
    y = torch.as_tensor(digits_dataset.targets[:64])
    with torch.no_grad():
        keep = digits_model(x).argmax(1) == y
    return x[keep][:48], y[keep][:48]


class Normalised(nn.Module):
    """The demo CNN behind a normalisation: it takes ``(x - mean) / std``."""

    def __init__(self, model: nn.Module, mean: float, std: float) -> None:
        super().__init__()
        self.model, self.mean, self.std = model, mean, std

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.model(z * self.std + self.mean)


@pytest.mark.parametrize("pixels", [1, 3, 5])
def test_one_pixel_changes_at_most_k_pixels_and_flips_when_it_succeeds(
    digits_model: DigitsCNN, correct, pixels: int
) -> None:
    x, y = correct
    result = one_pixel(digits_model, x, y, pixels=pixels, population=40, iterations=15, seed=3)
    changed = (result.adversarial != x).flatten(1).sum(1)
    assert int(changed.max()) <= pixels
    assert result.success.any(), "not one success: the attack searches nothing"
    with torch.no_grad():
        again = digits_model(result.adversarial).argmax(1)
    assert torch.equal(again, result.predicted)
    assert torch.equal(result.success, again != y)
    assert (result.adversarial >= 0).all() and (result.adversarial <= 1).all()
    # Early stopping: successes spend fewer queries than the full budget.
    budget = 40 * 16
    assert (result.queries <= budget).all()
    assert float(result.queries[result.success].double().mean()) < budget


def test_one_pixel_targeted_reaches_its_target(digits_model: DigitsCNN, correct) -> None:
    x, y = correct
    target = (y + 1) % 10
    result = one_pixel(digits_model, x, y, pixels=5, target=target, population=60, iterations=30)
    assert result.success.any()
    assert torch.equal(result.success, result.predicted == target)


def test_attacks_are_seeded(digits_model: DigitsCNN, correct) -> None:
    x, y = correct
    for method in _methods(
        {"kind": "one_pixel", "population": 20, "iterations": 5}, {"kind": "pgd", "eps": 0.1}
    ):
        a = attack(method, digits_model, x, y, seed=7)
        b = attack(method, digits_model, x, y, seed=7)
        c = attack(method, digits_model, x, y, seed=8)
        assert torch.equal(a.adversarial, b.adversarial)
        assert not torch.equal(a.adversarial, c.adversarial)


@pytest.mark.parametrize("kind", ["fgsm", "pgd"])
@pytest.mark.parametrize("eps", [0.03, 0.2])
def test_gradient_attacks_stay_within_eps_and_the_valid_range(
    digits_model: DigitsCNN, correct, kind: str, eps: float
) -> None:
    x, y = correct
    (method,) = _methods({"kind": kind, "eps": eps})
    result = attack(method, digits_model, x, y, batch_size=20)  # batches of 20, 20 and 8
    delta = (result.adversarial - x).abs()
    assert float(delta.max()) <= eps + 1e-6
    assert float(delta.max()) > eps / 2  # it moved
    assert (result.adversarial >= 0).all() and (result.adversarial <= 1).all()
    assert result.success.shape == (len(y),) and bool((result.queries >= 1).all())
    if eps == 0.2:
        assert result.success_rate > 0.5


@pytest.mark.parametrize("kind", ["one_pixel", "fgsm", "pgd"])
def test_normalised_inputs_are_attacked_in_their_valid_range(
    digits_model: DigitsCNN, correct, kind: str
) -> None:
    """A model behind a normalisation: ε is a fraction of the valid range, and the attacked
    inputs, mapped back, stay inside it."""
    x, y = correct
    mean, std = 0.3, 0.25
    space = InputSpace(0.0, 1.0, (mean,), (std,))
    model = Normalised(digits_model, mean, std)
    z = (x - mean) / std
    (method,) = _methods(
        {
            "kind": kind,
            **({"eps": 0.1} if kind != "one_pixel" else {"population": 20, "iterations": 5}),
        }
    )
    result = attack(method, model, z, y, space=space)
    raw = result.adversarial * std + mean
    assert float(raw.min()) >= -1e-5 and float(raw.max()) <= 1 + 1e-5
    if kind != "one_pixel":
        assert float((raw - x).abs().max()) <= 0.1 + 1e-5
    with torch.no_grad():
        assert torch.equal(model(result.adversarial).argmax(1), result.predicted)


def test_inputs_outside_the_declared_range_are_refused(digits_model: DigitsCNN, correct) -> None:
    x, y = correct
    (method,) = _methods({"kind": "fgsm"})
    with pytest.raises(ConfigError, match="outside the declared input range"):
        attack(method, digits_model, x * 4 - 1, y)


def test_unit_model_needs_a_classifier() -> None:
    net = UnitModel(nn.Identity(), InputSpace())
    with pytest.raises(ConfigError, match="logits"):
        net(torch.zeros(2, 1, 4, 4))


def test_attack_config_is_checked() -> None:
    base = {
        "model": {"kind": "builtin"},
        "data": {"kind": "builtin"},
        "layers": ["fc1"],
        "store": "s",
    }
    cfg = parse_config(base)
    assert cfg.attacks is None
    with pytest.raises(ConfigError, match=r"attacks\.methods\.0"):
        parse_config({**base, "attacks": {"methods": [{"kind": "fgsm", "eps": 2}]}})
    with pytest.raises(ConfigError, match="unique"):
        parse_config({**base, "attacks": {"methods": [{"kind": "fgsm"}, {"kind": "fgsm"}]}})
    with pytest.raises(ConfigError, match="mean and std"):
        InputSpace(0, 1, (0.5,), ())


def test_the_attack_space_follows_the_built_in_data() -> None:
    from ndstream.ingestion.sources import input_space

    base = {"model": {"kind": "builtin"}, "layers": ["fc1"], "store": "s"}
    digits = parse_config({**base, "data": {"kind": "builtin"}})
    assert input_space(digits) == InputSpace()
    cifar = parse_config({**base, "data": {"kind": "cifar10", "root": "/nowhere"}})
    space = input_space(cifar)
    assert space.mean == pytest.approx((0.4914, 0.4822, 0.4465)) and len(space.std) == 3
    own = parse_config(
        {**base, "data": {"kind": "cifar10", "root": "/nowhere"},
         "attacks": {"input": {"range": [-1, 1], "mean": [], "std": []}}}
    )  # fmt: skip
    assert input_space(own) == InputSpace(-1.0, 1.0)
    x = torch.rand(2, 3, 4, 4)
    torch.testing.assert_close(space.from_unit(space.to_unit(x)), x)


class OnePixelSwitch(nn.Module):
    """Class 0 when the top-left pixel is above 0.5, else class 1: any candidate that writes
    a bright top-left pixel succeeds."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x[:, 0, 0, 0]
        return torch.stack([10 * v, torch.full_like(v, 5.0)], dim=1)


def test_one_pixel_stops_when_every_input_succeeded() -> None:
    x = torch.zeros(6, 1, 2, 2)
    y = torch.ones(6, dtype=torch.long)
    result = one_pixel(OnePixelSwitch(), x, y, population=20, iterations=50, seed=1)
    assert bool(result.success.all())
    assert (result.adversarial[:, 0, 0, 0] > 0.5).all()
    assert int(result.queries.max()) < 20 * 51  # every input stopped early
