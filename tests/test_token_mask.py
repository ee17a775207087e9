"""Masked reductions on synthetic outputs, against numpy over the real positions only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ndstream.capture.reduce import TokenMask, TokenRows, per_sample, reduce_output, sketch_rows


def _mask(lengths: list[int], t: int, left: bool = False) -> TokenMask:
    rows = [[1] * n + [0] * (t - n) for n in lengths]
    m = torch.tensor(rows, dtype=torch.long)
    return TokenMask.of(m.flip(1) if left else m)


MASKS = {
    "right": [[1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [1, 1, 1, 0, 0]],
    "left": [[1, 1, 1, 1, 1], [0, 0, 0, 0, 1], [0, 0, 1, 1, 1]],
    "holes": [[1, 0, 1, 0, 1], [1, 1, 0, 0, 1], [0, 1, 1, 1, 0]],  # the general path
}


@pytest.mark.parametrize("layout", list(MASKS))
def test_tokens_last_dim_every_reduction(layout: str) -> None:
    g = torch.Generator().manual_seed(0)
    mask = TokenMask.of(torch.tensor(MASKS[layout]))
    assert (mask.spans is None) == (layout == "holes")
    x = torch.randn(3, 5, 4, generator=g)
    x[~mask.real] = float("nan")  # padded positions hold garbage; none of it may leak
    real = [x[i][mask.real[i]].numpy() for i in range(3)]
    got_max = reduce_output(x, 2, "max", mask)
    got_mean = reduce_output(x, 2, "mean", mask)
    got_none = reduce_output(x, 2, "none", mask)
    np.testing.assert_array_equal(got_max[:, 0], np.stack([r.max(0) for r in real]))
    np.testing.assert_allclose(got_mean[:, 0], np.stack([r.mean(0) for r in real]), rtol=1e-6)
    assert isinstance(got_none, TokenRows) and got_none.n_samples == 3
    np.testing.assert_array_equal(got_none.values, np.concatenate(real))
    np.testing.assert_array_equal(got_none.sample, np.repeat([0, 1, 2], [len(r) for r in real]))
    np.testing.assert_array_equal(per_sample(got_none)[:, 0], got_max[:, 0])
    # Neurons before the tokens ([B, C, T], a Conv1d over tokens): the same values.
    turned = reduce_output(x.transpose(1, 2).contiguous(), 1, "mean", mask)
    np.testing.assert_allclose(turned, got_mean, rtol=1e-6)


def test_two_token_axes_keep_only_real_pairs() -> None:
    """Attention weights [B, heads, T, T]: a value counts when query and key are both real."""
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 4, 4, generator=g)
    mask = _mask([4, 2], 4)
    got = reduce_output(x, 1, "none", mask)
    assert isinstance(got, TokenRows)
    want = [x[i, :, :n, :n].permute(1, 2, 0).reshape(-1, 3).numpy() for i, n in enumerate([4, 2])]
    np.testing.assert_array_equal(got.values, np.concatenate(want))
    mean = reduce_output(x, 1, "mean", mask)
    np.testing.assert_allclose(mean[:, 0], np.stack([w.mean(0) for w in want]), rtol=1e-6)


def test_a_sample_without_real_tokens_is_nan_not_dropped() -> None:
    x = torch.randn(2, 3, 2)
    mask = _mask([3, 0], 3)
    for reduction in ("max", "mean"):
        out = reduce_output(x, 2, reduction, mask)
        assert out.shape == (2, 1, 2) and np.isnan(out[1]).all() and np.isfinite(out[0]).all()
    rows = reduce_output(x, 2, "none", mask)
    assert isinstance(rows, TokenRows) and rows.values.shape == (3, 2)
    assert np.isnan(rows.largest()[1]).all()


def test_nan_and_inf_on_real_tokens_propagate() -> None:
    x = torch.zeros(1, 3, 2)
    x[0, 0, 0] = float("nan")
    x[0, 1, 1] = float("inf")
    mask = _mask([2], 3)
    out = reduce_output(x, 2, "max", mask)
    assert np.isnan(out[0, 0, 0]) and out[0, 0, 1] == np.inf
    rows = reduce_output(x, 2, "none", mask)
    assert isinstance(rows, TokenRows)
    assert np.isnan(rows.largest()[0, 0, 0]) and rows.largest()[0, 0, 1] == np.inf


def test_sketch_rows_repeat_group_ids_per_real_token() -> None:
    rows = TokenRows(np.arange(10, dtype=np.float32).reshape(5, 2), np.array([0, 0, 2, 2, 2]), 3)
    gids = np.array([[7], [8], [9]])
    values, groups = sketch_rows(rows, gids)
    np.testing.assert_array_equal(groups[:, 0], [7, 7, 9, 9, 9])
    assert values.shape == (5, 2)
    stacked = TokenRows.stack([rows, rows])
    np.testing.assert_array_equal(stacked.sample, [0, 0, 2, 2, 2, 3, 3, 5, 5, 5])
    assert stacked.n_samples == 6


def test_without_a_token_axis_the_mask_changes_nothing() -> None:
    x = torch.randn(4, 6)  # a pooler's [batch, dim]
    mask = _mask([1, 2, 3, 3], 3)
    np.testing.assert_array_equal(reduce_output(x, 1, "none", mask), reduce_output(x, 1, "none"))
