"""The batches one rank of an ingest runs, step by step, from where a resumed run starts.

Given a map-style ``Dataset`` (or a ``DataLoader`` over one, whose settings it reuses),
ndstream loads the data itself, in the seeded :class:`~ndstream.ingestion.sample_order.SampleOrder`, split
into steps and ranks by a :class:`~ndstream.ingestion.sample_order.StepPlan`: a resume starts exactly after
the last counted sample, and ``torchrun`` ranks never share one. Any other iterable of
batches is taken as it comes, on one process; a resume then skips the samples already
counted, which is right only if the iterable yields the same order every time.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    IterableDataset,
    RandomSampler,
    SequentialSampler,
)

from ..capture.structure import batch_len, take_rows
from ..errors import ConfigError, DataError
from .sample_order import RankSampler, SampleOrder, StepPlan

__all__ = ["Feed"]

Batch = tuple[Any, Any]


class Feed:
    """Where an ingest's batches come from.

    Parameters
    ----------
    source
        A map-style dataset, a ``DataLoader``, or any iterable of batches.
    batch_size, num_workers
        Loader settings when ndstream builds the loader (ignored for a ready iterable).
    seed
        Seed of the visiting order; ``None`` keeps the dataset order.
    limit
        Visit only the first ``limit`` samples of the order.
    rank, world
        This process's rank and the number of ranks.
    label_key
        The entry of mapping batches that holds the labels (default ``labels``, else
        ``label``).
    """

    def __init__(
        self,
        source: Any,
        *,
        batch_size: int = 128,
        num_workers: int = 0,
        seed: int | None = 0,
        limit: int | None = None,
        rank: int = 0,
        world: int = 1,
        label_key: str | None = None,
    ) -> None:
        self.source = source
        self.label_key = label_key
        self.rank, self.world = rank, world
        self.limit = limit
        self._loader_kwargs: dict[str, Any] = {"num_workers": num_workers}
        dataset = source if _is_map_style(source) else getattr(source, "dataset", None)
        if isinstance(source, DataLoader):
            batch_size = source.batch_size or batch_size
            self._loader_kwargs = _loader_settings(source)
            own = not isinstance(source.sampler, SequentialSampler | RandomSampler)
            # A sampler of the user's own choice: keep the loader as it is.
            reorder = not own and type(source.batch_sampler) is BatchSampler
        else:
            reorder = dataset is source
        self.dataset: Any = dataset
        self.batch_size = batch_size
        self.order: SampleOrder | None = None
        n = _len(dataset)
        if reorder and n is not None and _is_map_style(dataset):
            self.order = SampleOrder(n, seed, limit)
        elif world > 1:
            raise ConfigError(
                "a multi-process ingest needs a map-style dataset (with __len__ and "
                "__getitem__) to split between ranks; pass the Dataset instead of "
                f"a {type(source).__name__}"
            )

    @property
    def total(self) -> int | None:
        """Samples the run visits in all, if known."""
        if self.order is not None:
            return self.order.total
        n = _len(self.dataset)
        return n if self.limit is None or n is None else min(n, self.limit)

    def plan(self, start: int) -> StepPlan | None:
        """The steps left after ``start`` samples (``None`` for a ready iterable)."""
        if self.order is None:
            return None
        return StepPlan(self.order.total, start, self.batch_size, self.world)

    def batches(self, start: int) -> Iterator[Step]:
        """One :class:`Step` for each step after ``start`` samples.

        Errors of the data loading itself are raised as :class:`~ndstream.errors.DataError`.
        """
        plan = self.plan(start)
        if plan is None or self.order is None:
            yield from self._iterable_batches(start)
            return
        order = self.order.indices()
        sampler = RankSampler(order, plan, self.rank)
        loader = DataLoader(
            self.dataset, batch_size=plan.batch_size, sampler=sampler, **self._loader_kwargs
        )
        it = iter(loader)
        for step in range(plan.steps):
            lo, hi = plan.rank_slice(step, self.rank)
            batch = _next(it) if hi > lo else None
            positions = np.arange(lo, hi, dtype=np.int64)
            yield Step(
                split_batch(batch, self.label_key) if batch is not None else None,
                plan.done_after(step + 1),
                positions,
                order[lo:hi],
            )

    def _iterable_batches(self, start: int) -> Iterator[Step]:
        seen = 0  # samples the iterable yielded, the skipped ones included
        it = iter(self.source)
        while self.limit is None or seen < self.limit:
            batch = _next(it)
            if batch is None:
                return
            inputs, targets = split_batch(batch, self.label_key)
            n = batch_len(inputs)
            lo = max(0, start - seen)  # rows counted before a resume
            hi = n if self.limit is None else min(n, self.limit - seen)
            seen += n
            if lo < hi:
                # Positions in the stream stand in for dataset indices.
                positions = np.arange(seen - n + lo, seen - n + hi, dtype=np.int64)
                rows = (take_rows(inputs, lo, hi), take_rows(targets, lo, hi))
                yield Step(rows, seen - n + hi, positions, positions)


class Step(NamedTuple):
    """What one rank runs in one step."""

    batch: Batch | None
    """``(inputs, targets)``, or ``None`` when this rank has no data in the step (the last
    step of a run may not reach every rank)."""
    done_after: int
    """Samples counted, all ranks together, once this step is done."""
    positions: np.ndarray
    """Positions of the batch's rows in the visiting order."""
    indices: np.ndarray
    """Dataset indices of the batch's rows."""


def _next(it: Iterator[Any]) -> Any:
    try:
        return next(it)
    except StopIteration:
        return None
    except (ConnectionError, EOFError) as exc:
        # What the main process reads when a DataLoader worker dies while it sends a batch,
        # instead of torch's "DataLoader worker ... exited unexpectedly", now and then.
        raise DataError(
            f"loading the data failed ({type(exc).__name__}: {exc}; a DataLoader worker that "
            "dies mid-batch shows as this too). The samples counted before are kept; fix the "
            "dataset or loader (or run with fewer workers) and re-run the same command to resume"
        ) from exc
    except Exception as exc:
        raise DataError(
            f"loading the data failed ({type(exc).__name__}: {exc}). The samples counted "
            "before are kept; fix the dataset or loader and re-run the same command to resume"
        ) from exc


def _is_map_style(dataset: Any) -> bool:
    if dataset is None or isinstance(dataset, IterableDataset):
        return False
    return hasattr(dataset, "__getitem__") and _len(dataset) is not None


def _len(obj: Any) -> int | None:
    try:
        return len(obj)
    except TypeError:
        return None


def _loader_settings(loader: DataLoader[Any]) -> dict[str, Any]:
    """The settings of a user's DataLoader that ndstream keeps when it re-batches."""
    out: dict[str, Any] = {
        "num_workers": loader.num_workers,
        "collate_fn": loader.collate_fn,
        "pin_memory": loader.pin_memory,
        "worker_init_fn": loader.worker_init_fn,
    }
    if loader.num_workers > 0:
        out["prefetch_factor"] = loader.prefetch_factor
        out["persistent_workers"] = False
    return out


LABEL_KEYS = ("labels", "label")  # where a mapping batch holds its labels, by default


def split_batch(batch: Any, label_key: str | None = None) -> Batch:
    """``(inputs, targets)`` of a batch: a tuple or list, a bare input tensor, or a mapping.

    A mapping batch (a ``dict`` or a tokenizer's ``BatchEncoding``) holds its targets under
    ``label_key`` (by default ``labels``, else ``label``, else none), and its inputs are the
    other entries: the model gets them as keyword arguments.
    """
    if isinstance(batch, Mapping):
        keys = (label_key,) if label_key else LABEL_KEYS
        found = next((k for k in keys if k in batch), None)
        if label_key and found is None:
            raise ConfigError(
                f"the batches have no {label_key!r} entry to read labels from; their keys are "
                f"{sorted(map(str, batch))}. Name one of them as the label key"
            )
        inputs = {k: v for k, v in batch.items() if k != found}
        return inputs, batch[found] if found is not None else None
    if isinstance(batch, tuple | list):
        if not batch:
            raise ConfigError("the loader yielded an empty batch")
        return batch[0], batch[1] if len(batch) > 1 else None
    if isinstance(batch, torch.Tensor):
        return batch, None
    raise ConfigError(
        f"the loader yielded a {type(batch).__name__}; ndstream expects (inputs, targets) "
        "tuples, bare input tensors or mappings (dicts, a tokenizer's BatchEncoding). Wrap "
        "the dataset or give the loader a collate function that yields those."
    )
