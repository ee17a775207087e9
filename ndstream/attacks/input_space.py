"""The space attacks work in: every input coordinate scaled to [0, 1] over its valid range.

Models often take normalised inputs (``(x - mean) / std``) whose valid range is not [0, 1].
An attack that clamps to [0, 1] or measures ε on the model's own scale would then leave the
valid images or mean a different budget per channel. :class:`InputSpace` maps a model's
inputs to the *unit space* (the valid range, per channel, scaled to [0, 1]) and back, and
:class:`UnitModel` is the model seen from the unit space; attacks only ever see the latter,
so ε is a fraction of the valid range (``8/255`` is the usual budget for 8-bit images).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError

__all__ = ["InputSpace", "UnitModel"]


@dataclass(frozen=True)
class InputSpace:
    """The valid range of a model's inputs, and the normalisation applied before the model.

    Parameters
    ----------
    low, high
        Valid range of the raw inputs (before ``mean``/``std``), e.g. 0 and 1 for images.
    mean, std
        Per-channel normalisation the data applies after the range, or empty when the model
        takes raw inputs.
    """

    low: float = 0.0
    high: float = 1.0
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not self.high > self.low:
            raise ConfigError(f"the input range needs low < high, got [{self.low}, {self.high}]")
        if len(self.mean) != len(self.std):
            raise ConfigError(
                f"mean and std need one value per channel each, got {len(self.mean)} and "
                f"{len(self.std)}"
            )
        if any(s <= 0 for s in self.std):
            raise ConfigError(f"std values must be > 0, got {list(self.std)}")

    def _stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.ndim < 2 or x.shape[1] != len(self.mean):
            raise ConfigError(
                f"the normalisation has {len(self.mean)} channels but the inputs have shape "
                f"{list(x.shape)}; give one mean and std per channel (axis 1)"
            )
        shape = (1, -1) + (1,) * (x.ndim - 2)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(shape)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(shape)
        return mean, std

    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        """Model inputs -> unit space."""
        if self.mean:
            mean, std = self._stats(x)
            x = x * std + mean
        return (x - self.low) / (self.high - self.low)

    def from_unit(self, u: torch.Tensor) -> torch.Tensor:
        """Unit space -> model inputs."""
        x = u * (self.high - self.low) + self.low
        if self.mean:
            mean, std = self._stats(x)
            x = (x - mean) / std
        return x

    @classmethod
    def from_lists(
        cls, valid_range: Sequence[float], mean: Sequence[float] = (), std: Sequence[float] = ()
    ) -> InputSpace:
        """Build from config lists (``range: [0, 1]``, ``mean: [...]``, ``std: [...]``)."""
        low, high = (float(v) for v in valid_range)
        return cls(low, high, tuple(float(m) for m in mean), tuple(float(s) for s in std))


class UnitModel(nn.Module):
    """``model`` seen from the unit space: ``UnitModel(model, space)(u) == model(x)``."""

    def __init__(self, model: nn.Module, space: InputSpace) -> None:
        super().__init__()
        self.model = model
        self.space = space

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """Logits of the inputs whose unit-space form is ``u``."""
        out = self.model(self.space.from_unit(u))
        if not isinstance(out, torch.Tensor) or out.ndim != 2:
            raise ConfigError(
                "attacks need a classifier returning logits [batch, classes]; the model "
                f"returned {type(out).__name__}{list(getattr(out, 'shape', []))}"
            )
        return out
