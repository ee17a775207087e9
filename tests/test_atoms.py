"""Atoms inside a neuron's range: candidates, exact counts, merges, stores and answers.

The truth is numpy on the raw values (and, for the digits store, on activations taken with
plain forward hooks).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import DIGITS_GROUP_BY, DIGITS_LAYERS, per_neuron
from strategies import assert_summaries_identical, one_pass

import ndstream
from ndstream.ingestion.atom_window import ATOM_ROWS, ATOM_SAMPLES
from ndstream.sketch import GridSpec, LayerSketch, SketchSpec, atom_candidates

Q = np.linspace(0.01, 0.99, 99)


def reference_candidates(x: np.ndarray) -> np.ndarray:
    """Each column's most frequent finite nonzero value occurring twice or more (the smallest
    of those tied), NaN where none: np.unique column by column."""
    out = np.full(x.shape[1], np.nan, dtype=np.float32)
    for j in range(x.shape[1]):
        col = x[:, j]
        col = col[np.isfinite(col) & (col != 0)]
        values, counts = np.unique(col, return_counts=True)
        if counts.size and counts.max() >= 2:
            out[j] = values[np.argmax(counts)]  # the first of the largest: the smallest
    return out


def rank_error(values: np.ndarray, estimate: float, q: float) -> float:
    """The benchmarks' rank error of ``estimate`` for quantile ``q`` (0 inside a tie)."""
    s = np.sort(values)
    lo = np.searchsorted(s, estimate, "left") / s.size
    hi = np.searchsorted(s, estimate, "right") / s.size
    return 0.0 if lo <= q <= hi else min(abs(lo - q), abs(hi - q))


def inner_atom_data(rng: np.random.Generator, rows: int, neurons: int, share: float) -> np.ndarray:
    """Gaussian neurons, each with one exact value inside its range holding ``share`` of the rows."""
    x = rng.normal(0.0, 1.0, (rows, neurons)).astype(np.float32)
    atoms = rng.uniform(-0.5, 0.5, neurons).astype(np.float32)
    hit = rng.random((rows, neurons)) < share
    return np.where(hit, atoms, x).astype(np.float32)


def test_candidates_match_numpy() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(-3, 4, (200, 40)).astype(np.float32) * np.float32(0.25)
    x[rng.random(x.shape) < 0.1] = np.nan
    x[rng.random(x.shape) < 0.05] = np.inf
    x[:, 0] = rng.normal(size=200)  # no value repeats: none
    x[:, 1] = 0.0  # zeros only: none
    x[:, 2] = np.where(np.arange(200) % 2, 1.5, -1.5)  # a tie: the smallest
    np.testing.assert_array_equal(atom_candidates(x), reference_candidates(x))
    assert np.isnan(atom_candidates(x)[[0, 1]]).all() and atom_candidates(x)[2] == -1.5
    assert np.isnan(atom_candidates(x[:1])).all()
    with pytest.raises(ValueError, match=r"\[rows, neuron\]"):
        atom_candidates(x[0])


@pytest.mark.parametrize("groups", [1, 10, 1000])
def test_an_atom_inside_the_range_is_exact_and_read_as_one_value(groups: int) -> None:
    rng = np.random.default_rng(groups)
    x = inner_atom_data(rng, 20000, 16, share=0.12)
    gids = rng.integers(0, groups, 20000)
    spec = SketchSpec(16, tuple(f"g{i}" for i in range(groups)))

    def pooled_errors(sketch: LayerSketch) -> np.ndarray:
        quantiles = sketch.pooled_summary().quantile(Q)
        return np.array(
            [
                max(rank_error(x[:, n], quantiles[n, i], q) for i, q in enumerate(Q))
                for n in range(16)
            ]
        )

    plain = LayerSketch(spec)
    tracked = LayerSketch(spec)
    tracked.track_atoms(atom_candidates(x[:256]))  # the first batch
    for start in range(0, 20000, 256):
        plain.update(x[start : start + 256], gids[start : start + 256])
        tracked.update(x[start : start + 256], gids[start : start + 256])
    summary = tracked.finalize()
    atom = summary.atom
    assert summary.atom_count is not None and atom is not None
    # Exact counts per (neuron, group), against numpy.
    want = np.zeros((16, groups), dtype=np.int64)
    np.add.at(want, (np.nonzero(x == atom)[1], gids[np.nonzero(x == atom)[0]]), 1)
    np.testing.assert_array_equal(summary.atom_count, want)
    assert (want.sum(axis=1) > 0.1 * 20000).all()
    # Quantiles inside the atom are the atom itself; the others are as good as before.
    errors = pooled_errors(tracked)
    assert errors.max() <= 0.005, errors
    assert pooled_errors(plain).max() > 0.01  # spread over its bin, as without atoms
    # Every bound still holds the exact rank.
    bounds = tracked.pooled_summary().quantile(Q, bounds=True)
    for n in range(16):
        s = np.sort(x[:, n])
        below = np.searchsorted(s, bounds.estimate[n], "left") / s.size
        at_or_below = np.searchsorted(s, bounds.estimate[n], "right") / s.size
        assert (bounds.lower[n] <= below + 1e-12).all() and (
            at_or_below <= bounds.upper[n] + 1e-12
        ).all()


def test_a_group_reads_its_own_atom_count() -> None:
    rng = np.random.default_rng(3)
    x = inner_atom_data(rng, 12000, 4, share=0.2)
    gids = rng.integers(0, 3, 12000)
    sk = LayerSketch(SketchSpec(4, ("a", "b", "c")))
    sk.track_atoms(atom_candidates(x[:500]))
    sk.update(x, gids)
    summary = sk.finalize()
    for g in range(3):
        values = x[gids == g]
        got = summary.select([g]).quantile(Q)
        errors = [rank_error(values[:, n], got[n, i], q) for n in range(4) for i, q in enumerate(Q)]
        assert max(errors) <= 0.005


@pytest.mark.parametrize("k", [2, 5])
def test_sketches_with_the_same_atoms_merge_as_one_pass(k: int) -> None:
    rng = np.random.default_rng(k)
    x = inner_atom_data(rng, 9000, 8, share=0.1)
    x[rng.random(x.shape) < 0.01] = np.nan
    gids = np.stack([rng.integers(0, 3, 9000), rng.integers(3, 5, 9000)], axis=1)
    spec = SketchSpec(8, ("a", "b", "c", "x", "y"), groupings=("g", "g", "g", "h", "h"))
    atoms = atom_candidates(x[:300])
    whole = LayerSketch(spec)
    whole.track_atoms(atoms)
    whole.update(x, gids)
    shard = rng.integers(0, k, 9000)
    parts = []
    for i in range(k):
        part = LayerSketch(spec)
        part.track_atoms(atoms)
        rows = np.flatnonzero(shard == i)
        for chunk in np.array_split(rows, 3):  # some stay exact, some fold
            part.update(x[chunk], gids[chunk])
        parts.append(part)
    merged = parts[0]
    for part in parts[1:]:
        merged = part.merge(merged)
    assert_summaries_identical(merged.finalize(), whole.finalize())
    assert_summaries_identical(merged.pooled_summary(), whole.pooled_summary())


def test_sketches_with_other_atoms_merge_without_them() -> None:
    rng = np.random.default_rng(5)
    x = inner_atom_data(rng, 10000, 6, share=0.1)
    spec = SketchSpec(6, ("a",))
    a, b = LayerSketch(spec), LayerSketch(spec)
    atoms = atom_candidates(x[:300])
    other = atoms.copy()
    other[:3] = np.float32(0.123)  # three neurons count another value on one side
    a.track_atoms(atoms)
    b.track_atoms(other)
    a.update(x[:5000], np.zeros(5000, np.intp))
    b.update(x[5000:], np.zeros(5000, np.intp))
    merged = a.merge(b).finalize()
    assert merged.atom is not None and merged.atom_count is not None
    assert np.isnan(merged.atom[:3]).all() and (merged.atom_count[:3] == 0).all()
    np.testing.assert_array_equal(merged.atom[3:], atoms[3:])
    np.testing.assert_array_equal(merged.atom_count[3:, 0], (x[:, 3:] == atoms[3:]).sum(axis=0))
    # The bins still hold every value: the same counts as a sketch without atoms.
    plain = one_pass(spec, x, np.zeros(10000, np.intp))
    np.testing.assert_array_equal(merged.counts, plain.counts)


@pytest.mark.parametrize("rows", [1000, 9000])  # kept exactly, and on the grid
def test_a_sketch_rebuilt_from_its_summary_goes_on_counting_its_atoms(rows: int) -> None:
    rng = np.random.default_rng(rows)
    x = inner_atom_data(rng, rows + 6000, 5, share=0.15)
    gids = rng.integers(0, 2, x.shape[0])
    spec = SketchSpec(5, ("a", "b"))
    first = LayerSketch(spec)
    first.track_atoms(atom_candidates(x[:200]))
    first.update(x[:rows], gids[:rows])
    resumed = LayerSketch.from_summary(first.finalize(), spec)
    resumed.update(x[rows:], gids[rows:])
    first.update(x[rows:], gids[rows:])
    assert_summaries_identical(resumed.finalize(), first.finalize())


def test_atoms_are_chosen_before_the_first_value() -> None:
    sk = LayerSketch(SketchSpec(3, ("a",), GridSpec()))
    with pytest.raises(ValueError, match="one candidate per neuron"):
        sk.track_atoms(np.zeros(2, np.float32))
    with pytest.raises(ValueError, match="finite and nonzero"):
        sk.track_atoms(np.array([1.0, 0.0, np.nan], np.float32))
    with pytest.raises(ValueError, match="finite and nonzero"):
        sk.track_atoms(np.array([1.0, np.inf, np.nan], np.float32))
    sk.update(np.ones((2, 3), np.float32), np.zeros(2, np.intp))
    with pytest.raises(ValueError, match="before the first update"):
        sk.track_atoms(np.ones(3, np.float32))


def test_the_digits_store_counts_the_atoms_of_its_first_samples(
    digits_store: ndstream.Store,
    digits_raw: tuple[dict[str, np.ndarray], np.ndarray],
    digits_targets: np.ndarray,
) -> None:
    raw, _ = digits_raw
    found = 0
    # One row a sample (channel max): the window is the rows of the first ATOM_SAMPLES.
    assert ATOM_SAMPLES <= ATOM_ROWS and len(digits_targets) > ATOM_SAMPLES
    for layer in DIGITS_LAYERS:
        x = per_neuron(raw[layer], "max").astype(np.float32)
        want = atom_candidates(x[:ATOM_SAMPLES])
        np.testing.assert_array_equal(reference_candidates(x[:ATOM_SAMPLES]), want)
        label = digits_store.summary(layer, group=range(10))  # the label grouping
        assert label.atom is not None and label.atom_count is not None
        np.testing.assert_array_equal(label.atom, want)
        for g in range(10):
            np.testing.assert_array_equal(
                label.atom_count[:, g], (x[digits_targets == g] == want).sum(axis=0)
            )
        found += int(np.isfinite(want).sum())
    assert found > 0  # the digits' quantised pixels repeat activations
    assert set(DIGITS_GROUP_BY) == set(digits_store.meta.groupings)


def test_an_atom_next_to_the_max_is_read_at_its_lower_rank() -> None:
    # As in RegNetY-400MF's first squeeze-and-excitation gate: an atom of 12 % of the values
    # next to the max (one value above it), in a range 1/20 of an octave wide. The rest of
    # its bin is shared below and above it, so a bin's count is a fraction, and the middle of
    # the last value below the atom lay past its bin: read by the power law of the distance
    # to the max, the estimate at the atom's lower rank came out above the atom (12 % off).
    rng = np.random.default_rng(16)
    atom, top = np.float32(-0.0514401), np.float32(-0.05125)
    below = rng.uniform(-0.0530, -0.05145, 5280).astype(np.float32)
    x = rng.permutation(np.concatenate([below, np.full(719, atom), [top]]).astype(np.float32))
    sk = LayerSketch(SketchSpec(1, ("a",)))
    sk.track_atoms(atom_candidates(x[:256, None]))
    for start in range(0, x.size, 512):
        sk.update(x[start : start + 512, None], np.zeros(min(512, x.size - start), np.intp))
    got = sk.pooled_summary().quantile(Q)[0]
    errors = [rank_error(x, got[i], q) for i, q in enumerate(Q)]
    assert max(errors) <= 0.005, (max(errors), Q[int(np.argmax(errors))])
