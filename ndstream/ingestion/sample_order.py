"""The order in which ingest visits a dataset, and how ranks and resumes split it.

A run visits ``order.indices()``: a seeded permutation of the dataset (or the dataset order
itself), cut to the run's ``limit``. The order depends on the dataset length, the seed and the
limit alone, so a resumed run, or another number of ranks, visits the same samples. Work goes
in *steps*: step ``s`` covers ``batch_size * world`` consecutive positions of the order, and
rank ``r`` takes the ``r``-th batch of them. After any number of whole steps the samples
counted so far are a prefix of the order, which is all a checkpoint has to record.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from torch.utils.data import Sampler

__all__ = ["SampleOrder", "StepPlan"]


@dataclass(frozen=True)
class SampleOrder:
    """Which samples a run visits, in which order.

    Parameters
    ----------
    n_dataset
        Length of the dataset.
    seed
        Seed of the permutation; ``None`` keeps the dataset order.
    limit
        Visit only the first ``limit`` positions of the order.
    """

    n_dataset: int
    seed: int | None = 0
    limit: int | None = None

    @property
    def total(self) -> int:
        """Samples the run visits."""
        return self.n_dataset if self.limit is None else min(self.n_dataset, self.limit)

    def indices(self) -> np.ndarray:
        """Dataset indices in visiting order, ``[total]``."""
        if self.seed is None:
            return np.arange(self.total, dtype=np.int64)
        # RandomState's stream is frozen by numpy's compatibility policy: the same seed
        # gives the same permutation in every numpy version, so old stores resume.
        perm = np.random.RandomState(self.seed).permutation(self.n_dataset)
        return perm[: self.total].astype(np.int64)

    def to_dict(self) -> dict[str, object]:
        """Plain JSON types, for store attributes."""
        kind = "dataset" if self.seed is None else "permutation"
        return {"kind": kind, "seed": self.seed, "n_dataset": self.n_dataset, "total": self.total}


@dataclass(frozen=True)
class StepPlan:
    """How the positions ``start .. total`` of an order split into steps and ranks.

    Parameters
    ----------
    total
        Positions in the order.
    start
        Positions already counted (a resumed run starts there).
    batch_size
        Samples per rank and step.
    world
        Number of ranks.
    """

    total: int
    start: int
    batch_size: int
    world: int = 1

    @property
    def per_step(self) -> int:
        """Positions one step covers, all ranks together."""
        return self.batch_size * self.world

    @property
    def steps(self) -> int:
        """Steps left to run."""
        return -(-max(0, self.total - self.start) // self.per_step)

    def done_after(self, steps: int) -> int:
        """Positions counted once ``steps`` steps of this plan are done."""
        return min(self.total, self.start + steps * self.per_step)

    def rank_slice(self, step: int, rank: int) -> tuple[int, int]:
        """Positions ``[lo, hi)`` of the order that ``rank`` handles in ``step`` (may be empty)."""
        lo = self.start + step * self.per_step + rank * self.batch_size
        hi = min(lo + self.batch_size, self.total)
        return min(lo, hi), hi

    def has_batch(self, step: int, rank: int) -> bool:
        """Whether ``rank`` has any sample in ``step``."""
        lo, hi = self.rank_slice(step, rank)
        return hi > lo


class RankSampler(Sampler[int]):
    """Dataset indices of one rank's batches, step after step (see :class:`StepPlan`).

    Fed to a ``DataLoader`` with the plan's batch size, each batch it yields is one step's:
    every batch but the last is full.
    """

    def __init__(self, indices: np.ndarray, plan: StepPlan, rank: int) -> None:
        self.indices, self.plan, self.rank = indices, plan, rank

    def __iter__(self) -> Iterator[int]:
        for step in range(self.plan.steps):
            lo, hi = self.plan.rank_slice(step, self.rank)
            yield from (int(i) for i in self.indices[lo:hi])

    def __len__(self) -> int:
        return sum(
            hi - lo
            for lo, hi in (self.plan.rank_slice(s, self.rank) for s in range(self.plan.steps))
        )
