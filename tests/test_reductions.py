"""The ``mean`` reduction in a store: accumulated in float64, so a mean of float32 values is
finite whenever the values are, however large their sum."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

import ndstream


def test_mean_of_a_map_near_float32_max_is_stored_finite(tmp_path) -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(3.0e38, 3.4e38, size=(10, 2, 8, 8)).astype(np.float32)
    x[:, 1] *= -1
    y = np.arange(10) % 2
    store = ndstream.ingest(
        nn.Sequential(nn.Identity()),
        torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)),
        tmp_path / "s.zarr",
        layers=["0"],
        reduction="mean",
        group_by="all",
        batch_size=4,
        progress=False,
    )
    # numpy in float64, then float32 as stored: every value is finite and representable.
    means = x.reshape(10, 2, -1).mean(axis=2, dtype=np.float64).astype(np.float32)
    summary = store.summary("0", "all")
    np.testing.assert_array_equal(summary.posinf[:, 0], [0, 0])
    np.testing.assert_array_equal(summary.neginf[:, 0], [0, 0])
    np.testing.assert_allclose(summary.mins[:, 0], means.min(axis=0), rtol=1e-6)
    np.testing.assert_allclose(summary.maxs[:, 0], means.max(axis=0), rtol=1e-6)
