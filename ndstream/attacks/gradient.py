"""FGSM and PGD under an L∞ budget, from torchattacks.

torchattacks' implementations are the reference ones and already batched, so ndstream uses
them as they are, on the unit-space model (:class:`~ndstream.attacks.UnitModel`): ε and the
step size are fractions of the valid range, and every step is clamped to it. Their random
start draws from torch's global generator, so the call runs under a forked, seeded one.
"""

from __future__ import annotations

import torch
from torch import nn

from .result import AttackResult

__all__ = ["fgsm", "pgd"]


def fgsm(
    model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, *, eps: float
) -> AttackResult:
    """The fast gradient sign method (Goodfellow et al. 2015), untargeted.

    Parameters
    ----------
    model
        Classifier of unit-space inputs.
    inputs
        Unit-space inputs in [0, 1].
    labels
        ``[batch]`` true labels.
    eps
        L∞ budget, as a fraction of the valid range.

    Returns
    -------
    AttackResult
        One query (a forward and backward pass) per input.
    """
    import torchattacks

    adversarial = torchattacks.FGSM(model, eps=eps)(inputs, labels)
    return _result(model, adversarial, labels, queries=1)


def pgd(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    *,
    eps: float,
    steps: int = 10,
    step_size: float | None = None,
    random_start: bool = True,
    seed: int = 0,
) -> AttackResult:
    """Projected gradient descent (Madry et al. 2018), untargeted, L∞.

    Parameters
    ----------
    model
        Classifier of unit-space inputs.
    inputs
        Unit-space inputs in [0, 1].
    labels
        ``[batch]`` true labels.
    eps
        L∞ budget, as a fraction of the valid range.
    steps
        Gradient steps.
    step_size
        Size of each step; ``None`` takes ``2.5 * eps / steps`` (Madry et al.).
    random_start
        Start from a uniform point of the ε-ball.
    seed
        Seed of the random start.

    Returns
    -------
    AttackResult
        ``steps`` queries per input.
    """
    import torchattacks

    alpha = 2.5 * eps / steps if step_size is None else step_size
    attack = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=random_start)
    devices = [inputs.device] if inputs.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        adversarial = attack(inputs, labels)
    return _result(model, adversarial, labels, queries=steps)


def _result(
    model: nn.Module, adversarial: torch.Tensor, labels: torch.Tensor, queries: int
) -> AttackResult:
    with torch.no_grad():
        predicted = model(adversarial).argmax(-1)
    n = labels.shape[0]
    return AttackResult(
        adversarial.detach(),
        predicted != labels.to(predicted.device),
        predicted,
        torch.full((n,), queries, dtype=torch.long, device=predicted.device),
    )
