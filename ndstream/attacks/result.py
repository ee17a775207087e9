"""What an attack returns, whichever attack it was."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["AttackResult"]


@dataclass(frozen=True)
class AttackResult:
    """The attacked inputs of a batch, with what the attack achieved on each.

    Attributes
    ----------
    adversarial
        ``[batch, ...]`` attacked inputs, in the space the attack was given (unit space when
        called directly, the model's input space from :func:`~ndstream.attacks.attack`).
    success
        ``[batch]`` bool: the prediction moved off the true label (untargeted) or onto the
        target (targeted).
    predicted
        ``[batch]`` int64 prediction on the attacked input.
    queries
        ``[batch]`` int64 model evaluations spent on each input (forward passes for
        one-pixel; forward and backward passes, counted once each step, for FGSM and PGD).
    """

    adversarial: torch.Tensor
    success: torch.Tensor
    predicted: torch.Tensor
    queries: torch.Tensor

    def __len__(self) -> int:
        return int(self.success.shape[0])

    @property
    def success_rate(self) -> float:
        """Share of the inputs the attack succeeded on (NaN for an empty batch)."""
        return float(self.success.float().mean()) if len(self) else float("nan")

    @property
    def mean_queries(self) -> float:
        """Mean model evaluations per input (NaN for an empty batch)."""
        return float(self.queries.double().mean()) if len(self) else float("nan")

    @staticmethod
    def concat(parts: list[AttackResult]) -> AttackResult:
        """The results of several batches, in order."""
        return AttackResult(
            torch.cat([p.adversarial for p in parts]),
            torch.cat([p.success for p in parts]),
            torch.cat([p.predicted for p in parts]),
            torch.cat([p.queries for p in parts]),
        )
