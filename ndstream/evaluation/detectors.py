"""The two detectors neural divergence is compared with, on the same inputs.

- **Feature squeezing** (Xu et al. 2018): the L1 distance between the model's softmax on an
  input and on squeezed versions of it, a 2x2 median filter and a bit-depth reduction (1 bit
  for one-channel images, 5 for colour, the paper's choices for MNIST and CIFAR-10); the
  score is the larger distance.
- **Mahalanobis** (Lee et al. 2018): class-conditional Gaussians with one shared covariance,
  fitted on the spatially averaged features of one layer over the reference inputs; the
  score is the distance to the closest class mean. The paper's input pre-processing and its
  logistic regression over layers need attacked examples to tune, which a detector of unseen
  attacks cannot have, so both are left out (as in its "vanilla" variant).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..attacks import InputSpace

__all__ = ["Mahalanobis", "feature_squeezing", "median_2x2", "reduce_bits"]


def median_2x2(u: torch.Tensor) -> torch.Tensor:
    """2x2 median filter of unit-space images ``[B, C, H, W]`` (edges replicated).

    The median of four values is the mean of the middle two, as in SciPy's ``median_filter``
    up to its tie rule.
    """
    padded = F.pad(u, (0, 1, 0, 1), mode="replicate")
    windows = padded.unfold(2, 2, 1).unfold(3, 2, 1).flatten(-2)  # [B, C, H, W, 4]
    middle = windows.sort(dim=-1).values[..., 1:3]
    return middle.mean(dim=-1)


def reduce_bits(u: torch.Tensor, bits: int) -> torch.Tensor:
    """Unit-space inputs rounded to ``2**bits`` levels."""
    levels = 2**bits - 1
    return torch.round(u * levels) / levels


def feature_squeezing(
    model: nn.Module, inputs: torch.Tensor, space: InputSpace, *, batch_size: int = 256
) -> np.ndarray:
    """``[n]`` feature-squeezing scores of model inputs (images ``[n, C, H, W]``)."""
    bits = 1 if inputs.shape[1] == 1 else 5
    scores = []
    with torch.no_grad():
        for start in range(0, inputs.shape[0], batch_size):
            x = inputs[start : start + batch_size]
            u = space.to_unit(x).clamp(0, 1)
            p = model(x).softmax(-1)
            dist = [
                (model(space.from_unit(s)).softmax(-1) - p).abs().sum(-1)
                for s in (median_2x2(u), reduce_bits(u, bits))
            ]
            scores.append(torch.maximum(*dist).cpu().numpy())
    return np.concatenate(scores) if scores else np.zeros(0)


class Mahalanobis:
    """Class means and a shared covariance of features; scores by the closest class.

    Parameters
    ----------
    features
        ``[n, d]`` reference features.
    labels
        ``[n]`` their true labels.
    """

    def __init__(self, features: np.ndarray, labels: np.ndarray) -> None:
        x = np.asarray(features, dtype=np.float64)
        y = np.asarray(labels, dtype=np.int64)
        self.classes = np.unique(y)
        self.means = np.stack([x[y == c].mean(axis=0) for c in self.classes])
        centred = x - self.means[np.searchsorted(self.classes, y)]
        cov = centred.T @ centred / max(1, len(x))
        # A small ridge keeps dead features (constant 0 after a ReLU) from making the
        # covariance singular; relative to its scale, so units do not matter.
        ridge = 1e-6 * max(float(np.trace(cov)) / max(1, cov.shape[0]), 1e-12)
        self.precision = np.linalg.inv(cov + ridge * np.eye(cov.shape[0]))

    def score(self, features: np.ndarray) -> np.ndarray:
        """``[n]`` squared Mahalanobis distance to the closest class mean."""
        x = np.asarray(features, dtype=np.float64)
        diff = x[:, None, :] - self.means[None]  # [n, class, d]
        dist = np.einsum("ncd,de,nce->nc", diff, self.precision, diff)
        return dist.min(axis=1)
