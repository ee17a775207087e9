"""Run a configured attack on a batch of model inputs: the one entry point of the package."""

from __future__ import annotations

import torch
from torch import nn

from ..config import AttackConfig, FgsmAttackConfig, OnePixelAttackConfig
from ..errors import ConfigError
from .gradient import fgsm, pgd
from .input_space import InputSpace, UnitModel
from .one_pixel import one_pixel
from .result import AttackResult

__all__ = ["attack", "attack_name"]

_RANGE_SLACK = 1e-4  # rounding of a normalisation round trip


def attack_name(method: AttackConfig) -> str:
    """The attack's name in conditions (``attacked:<name>``) and reports."""
    return method.name or method.kind


def attack(
    method: AttackConfig,
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    *,
    space: InputSpace | None = None,
    seed: int = 0,
    batch_size: int = 256,
) -> AttackResult:
    """Attack a batch of inputs, given and returned in the model's input space.

    Parameters
    ----------
    method
        What to run (one of the ``attacks.methods`` of a config).
    model
        A classifier returning logits ``[batch, classes]``; it is put in ``eval()`` mode.
    inputs
        ``[batch, ...]`` inputs as the model takes them (images for one-pixel).
    labels
        ``[batch]`` true labels.
    space
        The inputs' valid range and normalisation; ``None``: raw inputs in [0, 1].
    seed
        Seed of the attack's random draws.
    batch_size
        Inputs per gradient batch (FGSM, PGD).

    Returns
    -------
    AttackResult
        With ``adversarial`` in the model's input space.

    Raises
    ------
    ConfigError
        If the inputs lie outside the declared valid range (the config's ``attacks.input``
        then does not describe the data), or the model is not a classifier.
    """
    space = space or InputSpace()
    model.eval()
    unit = space.to_unit(inputs)
    low, high = (float(unit.min()), float(unit.max())) if unit.numel() else (0.0, 1.0)
    if low < -_RANGE_SLACK or high > 1 + _RANGE_SLACK:
        raise ConfigError(
            f"the inputs span [{low:.4g}, {high:.4g}] of the valid range scaled to [0, 1]: "
            "they lie outside the declared input range. Set attacks.input.range (and mean "
            "and std, if the data normalises) to what the data gives the model"
        )
    unit = unit.clamp(0.0, 1.0)
    net = UnitModel(model, space)
    labels = labels.to(inputs.device)
    if isinstance(method, OnePixelAttackConfig):
        target = None if method.target is None else torch.full_like(labels, method.target)
        result = one_pixel(
            net, unit, labels, pixels=method.pixels, target=target,
            population=method.population, iterations=method.iterations, seed=seed,
        )  # fmt: skip
    else:
        parts = []
        for start in range(0, unit.shape[0], batch_size):
            x, y = unit[start : start + batch_size], labels[start : start + batch_size]
            if isinstance(method, FgsmAttackConfig):
                parts.append(fgsm(net, x, y, eps=method.eps))
            else:
                parts.append(
                    pgd(
                        net, x, y, eps=method.eps, steps=method.steps,
                        step_size=method.step_size, random_start=method.random_start,
                        seed=seed + start,
                    )
                )  # fmt: skip
        result = AttackResult.concat(parts)
    return AttackResult(
        space.from_unit(result.adversarial), result.success, result.predicted, result.queries
    )
