"""Stream a dataset through a model and write per-(layer, neuron, group) sketches to a store.

The loop is: DataLoader batch -> forward under ``torch.inference_mode()`` with hooks
(:mod:`ndstream.capture.hooks`) -> group ids (:mod:`ndstream.capture.groupings`) -> sketch update
(:mod:`ndstream.sketch`) -> store (:mod:`ndstream.store`). Memory stays bounded by the
sketches, whatever the dataset size: activations are reduced on the model's device and dropped
after each batch.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .._version import __version__
from ..capture.groupings import Grouping, GroupLayout, label_names, resolve_groupings
from ..capture.hooks import (
    CALLS,
    ActivationCapture,
    Calls,
    LayerInfo,
    Reduction,
)
from ..capture.instances import InstanceRecorder
from ..capture.reduce import Reduced, samples_of, sketch_rows
from ..capture.selection import LayerSelector, resolve_layers
from ..capture.structure import OutputField, call_model, move_to
from ..config import check_device
from ..errors import (
    CaptureError,
    ConfigError,
    DataError,
    IngestInterrupted,
    NdstreamError,
    StoreError,
)
from ..sketch import GridSpec, LayerSketch, SketchSpec, update_threads
from ..store import LayerMeta, Store, StoreMeta, open_store
from ..store.instances import InstanceSpec, InstanceTable
from ..store.snapshots import StoreLock, remove_unfinished
from ..store.writer import write_checkpoint
from .atom_window import AtomWindow, candidates, window_samples
from .batches import Feed
from .fingerprint import dataset_fingerprint, model_fingerprint
from .identity import Prior, RunIdentity, prepare
from .mask_source import MaskSource
from .ranks import Ranks
from .worker import SerialWorker, ThreadBudget, calling_thread_budget

__all__ = ["ingest"]


def ingest(
    model: torch.nn.Module,
    loader: Any,
    store: str | os.PathLike[str],
    *,
    layers: LayerSelector | Sequence[LayerSelector],
    reduction: Reduction = "max",
    group_by: str | Grouping | Sequence[str | Grouping] = "label",
    grid: GridSpec | None = None,
    channel_dim: Mapping[str, int] | None = None,
    limit: int | None = None,
    device: str | torch.device | None = None,
    overwrite: bool = False,
    progress: bool = True,
    config: Mapping[str, Any] | None = None,
    batch_size: int = 128,
    num_workers: int = 0,
    seed: int | None = None,
    checkpoint_every: int | None = None,
    checkpoint_seconds: float | None = 120.0,
    instances: InstanceSpec | None = None,
    calls: Calls = "separate",
    threads: int | Mapping[str, int | None] | ThreadBudget | None = None,
    label_key: str | None = None,
    token_mask: str | Callable[[Any], Any] | None = "attention_mask",
    output_field: Mapping[str, OutputField] | None = None,
) -> Store:
    """Summarise the activations of ``model`` over ``loader`` into a store, and open it.

    The store commits a checkpoint every ``checkpoint_every`` steps or ``checkpoint_seconds``
    seconds, and at the end. Calling ``ingest`` again with the same arguments on an
    incomplete store resumes after its last checkpoint, and the finished store is bit for bit
    the one an uninterrupted run writes. Under ``torchrun`` (an initialized default process
    group) each rank runs its share of the samples and rank 0 writes the store.

    Parameters
    ----------
    model
        Any ``torch.nn.Module``; it is put in ``eval()`` mode.
    loader
        A map-style ``Dataset``, or a ``DataLoader`` over one (its batch size, workers and
        collate function are kept): ndstream then visits the samples in a seeded order it
        can resume and split between ranks. Any other iterable of ``(inputs, targets, ...)``
        tuples or bare input tensors is used as it comes, on one process. The dataset's
        ``classes`` name the label groups.
    store
        Folder of the Zarr store to write.
    layers
        Module names, globs (``"features.*"``), ``"type:Conv2d,Linear"`` or module classes.
    reduction
        Per-neuron reduction of outputs with positions: ``"max"``, ``"mean"`` or ``"none"``.
    group_by
        ``"label"``, ``"predicted"``, ``"correct"``, ``"all"``, a custom
        :class:`~ndstream.Grouping`, or a list of them.
    grid
        Binning rule of the sketches; the default suits activations.
    channel_dim
        Per-layer override (name or glob) of the output axis that holds neurons.
    limit
        Visit only the first ``limit`` samples of the order.
    device
        Device to run on: the model and every tensor of each batch are moved there;
        defaults to the model's.
    overwrite
        Start over, replacing an existing store at ``store``.
    progress
        Show a progress bar with throughput and ETA.
    config
        The configuration to record in the store (the CLI passes the validated YAML).
    batch_size, num_workers
        Loader settings when ``loader`` is a ``Dataset``.
    seed
        Seed of the visiting order, a permutation of the dataset (it replaces a
        ``DataLoader``'s own shuffling); ``None`` keeps the dataset order. A shuffled order
        makes a partial store a fair sample of the whole. The CLI's default is 0.
    checkpoint_every
        Commit a checkpoint every this many steps (batches of every rank); ``None``: never
        by count.
    checkpoint_seconds
        Commit a checkpoint when this many seconds passed since the last; ``None``: never by
        time.
    instances
        Single inputs to record in the store with their activations, thumbnails and labels
        (see :class:`~ndstream.store.instances.InstanceSpec`); they never change a distribution.
    calls
        A module that runs k > 1 times per forward pass (torchvision's ``BasicBlock`` calls
        its ``relu`` twice) gives the layers ``<name>@1`` ... ``<name>@k``, one distribution
        per call (``"separate"``), or one layer ``<name>`` whose distribution pools all its
        calls (``"pool"``). The store records it, and a run with the other setting does not
        resume it.
    threads
        How many threads the forward pass (torch's intra-op threads), the sketch updates
        (Numba's) and the store writer get (see :class:`~ndstream.ingestion.worker.ThreadBudget`
        and ``docs/threads.md``): ``None`` keeps the caller's torch threads for the
        forward pass and sizes the others from the cores and the device; a number of
        cores splits them between the sketch and the forward pass, so that no core runs
        two busy threads (the fastest on a small machine when the model is light); a
        mapping of ``forward``, ``sketch`` and ``write`` sets those. The caller's torch
        and Numba settings are restored afterwards. A forward thread count other than the
        caller's may change activations in their last bits (float sums split otherwise).
    label_key
        The entry of mapping batches (dicts, a tokenizer's ``BatchEncoding``) that holds the
        labels; default ``labels``, else ``label``. The other tensors of a mapping batch go
        to the model as keyword arguments.
    token_mask
        Which positions are real tokens: the key of a ``[batch, tokens]`` mask in mapping
        batches (default ``attention_mask``), or a function ``fn(inputs) -> mask`` for
        other layouts, or ``None`` for no mask. Masked positions never enter a distribution
        or an instance's values (see :mod:`ndstream.capture.reduce`). Integer token ids
        without a mask give a warning, since padding would then be counted.
    output_field
        Per-layer (name or glob) field or index of a module output that is not a tensor
        (a ``ModelOutput``, dict or tuple); by default ``last_hidden_state`` or the first
        tensor.

    Returns
    -------
    Store
        The written store, opened for reading.

    Raises
    ------
    StoreError
        If ``store`` holds a store of a different run, or something that is not a store.
    IngestInterrupted
        On Ctrl-C, after committing what was counted so far.
    DataError
        If loading the data fails. When the loader raised it between steps, what was
        counted before is committed first; a DataLoader worker that died leaves the last
        checkpoint as it was.
    """
    path = Path(store)
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be a positive number of samples, got {limit}")
    for name, value in (("checkpoint_every", checkpoint_every), ("batch_size", batch_size)):
        if value is not None and value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value}")
    if checkpoint_seconds is not None and checkpoint_seconds <= 0:
        raise ConfigError(f"checkpoint_seconds must be positive, got {checkpoint_seconds}")
    if calls not in CALLS:
        raise ConfigError(f"calls must be one of {list(CALLS)}, got {calls!r}")
    if device is not None:
        # A device this machine lacks is a config error that lists the ones it has.
        dev = check_device(str(device))
        model.to(dev)
    else:
        dev = _model_device(model)
    mask = MaskSource(token_mask)
    parameters = sum(p.numel() for p in model.parameters())
    budget = ThreadBudget.resolve(threads, dev.type, parameters)
    grid = grid or GridSpec()
    names = resolve_layers(model, layers)
    by_name = _exact_names(model, layers)
    groupings = resolve_groupings(group_by)
    ranks = Ranks.current()
    feed = Feed(
        loader, batch_size=batch_size, num_workers=num_workers, seed=seed, limit=limit,
        rank=ranks.rank, world=ranks.world, label_key=label_key,
    )  # fmt: skip
    model.eval()
    recorded = dict(config) if config is not None else _call_config(names, reduction, groupings)
    instances = instances or InstanceSpec()
    _check_instance_indices(instances, feed.dataset)
    if config is None:
        recorded.update(limit=limit, seed=seed)
        if instances:
            recorded["instances"] = {
                "indices": list(instances.indices),
                "per_class": instances.per_class,
                "misclassified": instances.misclassified,
            }
    identity = RunIdentity(
        config=recorded,
        model_fingerprint=model_fingerprint(model),
        dataset_fingerprint=dataset_fingerprint(feed.dataset) if feed.dataset is not None else "",
        order=feed.order.to_dict() if feed.order is not None else {"kind": "loader"},
        settings={
            # Everything that shapes the sketches, as applied, whatever the caller recorded
            # in `config`: a resume or a merge must not mix two of them.
            "layers": names,
            "reduction": reduction,
            "channel_dim": dict(channel_dim or {}),
            "group_by": [g.name for g in groupings],
            "grid": grid.to_dict(),
            "calls": calls,
            # Settings added later are recorded only when set, so older stores resume.
            **({"output_field": dict(output_field)} if output_field else {}),
            **({"token_mask": mask.describe()} if not mask.is_default else {}),
            **({"label_key": label_key} if label_key else {}),
        },
    )
    run = _Run(path, feed, identity, ranks, grid, reduction, dev, progress, instances, budget, mask)
    # A refused writer raises here, before it could touch the store or its lock.
    lock = StoreLock(path) if ranks.is_main else None
    failed = True
    with calling_thread_budget(budget), lock or contextlib.nullcontext():
        try:
            if lock is not None:
                remove_unfinished(path)  # what a writer that died left behind
            found = run.agree(overwrite)
            if found is not None:
                if progress and ranks.is_main:
                    print(f"{path} is already complete; nothing to do (--overwrite starts over)")
                failed = False
                return found
            with ActivationCapture(
                model,
                names,
                reduction=reduction,
                channel_dim=channel_dim,
                optional=[n for n in names if n not in by_name],
                calls=calls,
                output_field=output_field,
            ) as capture:
                run.stream(
                    model, capture, groupings, CheckpointClock(checkpoint_every, checkpoint_seconds)
                )
            failed = False
        finally:
            run.close(failed)
            if lock is not None:
                lock.discard_uncommitted()  # a run that failed before its first checkpoint
    if capture.skipped:
        warnings.warn(
            f"skipped {len(capture.skipped)} layers that matched the selection but never ran "
            f"(their weights are used without calling the module): {capture.skipped}",
            stacklevel=2,
        )
    if capture.unbatched:
        warnings.warn(
            f"skipped {len(capture.unbatched)} layers that matched the selection but whose "
            "output is not one row per sample (a table the batch shares, such as a "
            f"position-bias MLP): {capture.unbatched}",
            stacklevel=2,
        )
    ranks.broadcast(None)  # the other ranks open the store once rank 0 has committed it
    return open_store(path)


class CheckpointClock:
    """When to commit: every ``every`` steps, or ``seconds`` after the last commit.

    The time-based interval stretches to 50 times the last checkpoint's cost, so that
    checkpoints of a very large store never take more than about 2% of the run.
    """

    overhead = 0.02

    def __init__(self, every: int | None, seconds: float | None) -> None:
        self.every, self.seconds = every, seconds
        self.last = time.monotonic()
        self.cost = 0.0

    def due(self, steps: int) -> bool:
        """Whether a checkpoint is due after ``steps`` steps of this run."""
        if self.every is not None and steps % self.every == 0:
            return True
        if self.seconds is None:
            return False
        return time.monotonic() - self.last >= max(self.seconds, self.cost / self.overhead)

    def committed(self, started: float) -> None:
        """A checkpoint that began at ``started`` (``time.monotonic()``) is committed."""
        self.last = time.monotonic()
        self.cost = self.last - started


class _Run:
    """One rank's side of an ingest: its sketches, its progress and its checkpoints."""

    def __init__(
        self,
        path: Path,
        feed: Feed,
        identity: RunIdentity,
        ranks: Ranks,
        grid: GridSpec,
        reduction: str,
        device: torch.device,
        progress: bool,
        instances: InstanceSpec,
        budget: ThreadBudget,
        mask: MaskSource,
    ) -> None:
        self.path, self.feed, self.identity, self.ranks = path, feed, identity, ranks
        self.budget = budget
        self.grid, self.reduction, self.device = grid, reduction, device
        self.progress = progress
        self.created = _now()
        self.start_at = 0
        self.done = 0
        self.prior_meta: StoreMeta | None = None
        self.sketches: dict[str, LayerSketch] = {}
        self.layout: GroupLayout | None = None
        self.infos: dict[str, LayerInfo] = {}
        self.pending = _PendingBatches()
        self.updates = SerialWorker()  # sketch updates overlap the next forward pass
        # Numba's thread count belongs to the thread that launches the kernels: the worker.
        self.updates.submit(update_threads, budget.sketch)
        self.instance_spec = instances
        self.recorder: InstanceRecorder | None = None
        self.mask = mask
        # Each layer's atom candidates (see atom_window.py), once the ranks agree on them:
        # from the first samples of the order, or from a resumed rank 0's sketches.
        self.atoms: dict[str, np.ndarray] | None = None
        self.window = AtomWindow()

    # -- before the first step ---------------------------------------------------------------

    def agree(self, overwrite: bool) -> Store | None:
        """Rank 0 looks at the store path; every rank learns where to start, or the error.

        Returns the complete store of this same run when there is nothing left to do.
        """
        found: Prior | Store | None = None
        error: NdstreamError | None = None
        if self.ranks.is_main:
            try:
                found = prepare(self.path, self.identity, overwrite=overwrite)
            except NdstreamError as exc:
                error = exc
        start = found.samples_done if isinstance(found, Prior) else 0
        complete = isinstance(found, Store)
        start, complete, message = self.ranks.broadcast(
            (start, complete, str(error) if error else None)
        )
        if message is not None:
            raise error if error is not None else StoreError(f"rank 0 stopped: {message}")
        if complete:
            return found if isinstance(found, Store) else open_store(self.path)
        prior_instances = None
        if isinstance(found, Prior):  # rank 0 alone carries the counts so far
            if found.note:
                print(f"ndstream: {found.note}", file=sys.stderr)
            self.prior_meta = found.store.meta
            self.sketches = found.sketches()
            self.created = found.store.meta.created
            prior_instances = found.store.instances()
        if self.instance_spec:
            self.recorder = InstanceRecorder(self.instance_spec, prior_instances)
        self.start_at = self.done = start
        return None

    def _begin(self, capture: ActivationCapture, groupings: list[Grouping], outputs: Any) -> None:
        """On the first batch: the groups, and a sketch per layer (unless resumed)."""
        dataset = self.feed.dataset
        classes = getattr(dataset, "classes", None)
        labels = label_names(dataset) if classes is None else None
        self.layout = GroupLayout(tuple(g.bind(classes, outputs, labels) for g in groupings))
        self.infos = dict(capture.layers)
        prior = self.prior_meta
        if prior is not None:
            now = {name: info.n_neurons for name, info in self.infos.items()}
            before = {layer.name: layer.n_neurons for layer in prior.layers}
            if now != before or self.layout.names != prior.groups:
                raise StoreError(
                    f"the store at {self.path} was made with other layers or groups than "
                    "this run captures; re-run with --overwrite (overwrite=True) to start over"
                )
            return
        self.sketches = {
            name: LayerSketch(
                SketchSpec(info.n_neurons, self.layout.names, self.grid, self.layout.grouping_of)
            )
            for name, info in self.infos.items()
        }
        self._track_atoms()

    def _agree_atoms(self, done: int, last: bool = False) -> None:
        """Once the window has run, rank 0 tells every rank which value of each neuron its
        sketches count as an atom (see :mod:`.atom_window`).

        Every rank calls this after each step until then (and after the last one): it is a
        collective. A resumed rank 0 gives the candidates its store counts.
        """
        decision: tuple[bool, int] = (False, 0)
        if self.ranks.is_main:
            if self.sketches and all(s.totals.any() for s in self.sketches.values()):
                decision = (True, -1)  # resumed: the store's candidates
            elif self.layout is not None:
                k = window_samples(self.infos, self.feed.total)
                decision = (last or done >= k, k)
            else:
                decision = (last, 0)  # no batch at all
        agree, k = self.ranks.broadcast(decision)
        if not agree:
            return
        rows = self.window.rows(k) if k >= 0 else {}
        self.window = AtomWindow()  # its rows are in the pending batches too
        parts = self.ranks.gather(rows)
        atoms: dict[str, np.ndarray] = {}
        if parts is not None:  # rank 0
            if k < 0:
                atoms = {name: s.atom for name, s in self.sketches.items()}
            else:
                atoms = candidates(parts)
        self.atoms = self.ranks.broadcast(atoms)
        self._track_atoms()

    def _track_atoms(self) -> None:
        """Give the agreed atoms to the sketches that have seen nothing yet."""
        for name, sketch in self.sketches.items():
            if self.atoms and name in self.atoms and not sketch.totals.any():
                sketch.track_atoms(self.atoms[name])

    # -- the steps ---------------------------------------------------------------------------

    def stream(
        self,
        model: torch.nn.Module,
        capture: ActivationCapture,
        groupings: list[Grouping],
        clock: CheckpointClock,
    ) -> None:
        """Run every step of this rank, committing checkpoints on the way and at the end."""
        bar = tqdm(
            total=self.feed.total, initial=self.start_at, unit="img", desc="ingest",
            disable=not self.progress or not self.ranks.is_main, dynamic_ncols=True,
        )  # fmt: skip
        steps = 0
        try:
            with torch.inference_mode(), _StopRequest(self.ranks.world == 1) as stop:
                try:
                    for batch, done_after, positions, indices in self.feed.batches(self.start_at):
                        if batch is not None:
                            inputs, targets = batch
                            moved = move_to(inputs, self.device)
                            capture.mask_next(self.mask.of(moved))
                            outputs = call_model(model, moved)
                            acts = capture.pop()
                            if self.layout is None:  # the first batch: which layers count
                                for name in capture.drop_unbatched(acts, len(positions)):
                                    del acts[name]
                                if not acts and capture.unbatched:
                                    raise CaptureError(
                                        "no selected layer gives one row per sample of the "
                                        f"batch (not {capture.unbatched}); select modules "
                                        "whose output is batch first"
                                    )
                            _check_rows(acts, len(positions))
                            if self.layout is None:
                                self._begin(capture, groupings, outputs)
                            assert self.layout is not None
                            # Checked batch by batch: ids of the right total but the
                            # wrong batches would shift samples between groups.
                            gids = self.layout.ids(
                                inputs, targets, outputs, n_samples=len(positions)
                            )
                            if self.recorder is not None:
                                self.recorder.add(
                                    positions, indices, inputs, targets, outputs, acts
                                )
                            self.pending.add(acts, gids)
                            if self.atoms is None:
                                self.window.add(positions, acts)
                            bar.update(done_after - self.done)
                        if self.atoms is None:  # on every rank, until agreed
                            self._agree_atoms(done_after)
                        if self.atoms is not None and self.pending.full:
                            self.updates.submit(
                                _update_sketches, self.sketches, self.pending.take()
                            )
                        steps, self.done = steps + 1, done_after
                        if not self.ranks.broadcast(clock.due(steps) or stop.requested):
                            continue
                        if self.atoms is None:  # the window has not run: nothing to commit
                            if stop.requested:
                                raise IngestInterrupted(
                                    f"stopped after {self.done} samples, before the first "
                                    "checkpoint (it comes once the samples that the atoms are "
                                    "chosen from have run): nothing was committed; re-run the "
                                    "same command to start over"
                                )
                            continue
                        began = time.monotonic()
                        self.checkpoint(complete=False)
                        clock.committed(began)
                        if stop.requested:
                            raise IngestInterrupted(
                                f"stopped after {self.done} samples, all of them committed "
                                f"to {self.path}; re-run the same command to resume"
                            )
                except DataError:
                    # Raised between steps, where the counts and the sketches agree.
                    if self.ranks.world == 1 and self.sketches and self.atoms is not None:
                        self.checkpoint(complete=False)  # keep what was counted
                    raise
                except RuntimeError as exc:
                    # torch raises a dead worker from its SIGCHLD handler, at any point of
                    # a step: the state may be half a step on, so the last checkpoint stays.
                    if "DataLoader worker" not in str(exc):
                        raise
                    raise DataError(
                        f"a DataLoader worker died ({exc}). The last checkpoint of "
                        f"{self.path} is intact; fix the dataset (or run with fewer "
                        "workers) and re-run the same command to resume"
                    ) from exc
                if self.atoms is None:  # a run shorter than the window
                    self._agree_atoms(self.done, last=True)
                # Still under the Ctrl-C handler: a Ctrl-C now lets the final commit finish.
                self.checkpoint(complete=True)
        finally:
            bar.close()

    # -- checkpoints -------------------------------------------------------------------------

    def checkpoint(self, *, complete: bool) -> None:
        """Fold in what is pending, merge the ranks' sketches on rank 0, and commit them."""
        if self.pending.rows:
            self.updates.submit(_update_sketches, self.sketches, self.pending.take())
        self.updates.wait()
        shapes = self._value_shapes()
        recorded = self.recorder.table(shapes) if self.recorder else None
        parts = self.ranks.gather((self.sketches, recorded))
        if not self.ranks.is_main or parts is None:
            return
        merged = _merge_ranks([sketches for sketches, _ in parts])
        meta = self._meta(complete)
        if meta is None:
            raise ConfigError("the loader yielded no batches; check the dataset and `limit`")
        instances = None
        if self.recorder is not None:
            tables = [t for _, t in parts if t is not None and t.values.keys() == shapes.keys()]
            first = tables[0] if tables else InstanceTable.empty(shapes)
            instances = first.merge(tables[1:], self.recorder.spec)
        summaries = {name: merged[name] for name in meta.layer_names}
        write_checkpoint(self.path, meta, summaries, instances)

    def _layers(self) -> tuple[LayerMeta, ...] | None:
        """This run's layers: from capture once a batch ran, else from the resumed store."""
        if self.layout is not None:
            return tuple(_layer_meta(info) for info in self.infos.values())
        return self.prior_meta.layers if self.prior_meta is not None else None

    def _value_shapes(self) -> dict[str, tuple[int, int]]:
        """Each layer's (values per sample, neurons), as instance values hold them."""
        # Where tokens vary (0 values per sample) an instance keeps its largest value.
        return {m.name: (max(1, m.values_per_sample), m.n_neurons) for m in self._layers() or ()}

    def _meta(self, complete: bool) -> StoreMeta | None:
        layers = self._layers()
        if layers is None:
            return None
        if self.layout is not None:
            groups, groupings = self.layout.names, self.layout.grouping_of
        else:  # resumed with nothing left to run
            assert self.prior_meta is not None
            groups, groupings = self.prior_meta.groups, self.prior_meta.groupings
        total = self.feed.total
        return StoreMeta(
            layers=layers,
            groups=groups,
            groupings=groupings,
            reduction=self.reduction,
            grid=self.grid.to_dict(),
            model_fingerprint=self.identity.model_fingerprint,
            dataset_fingerprint=self.identity.dataset_fingerprint,
            samples_done=self.done,
            samples_total=total if total is not None else (self.done if complete else None),
            complete=complete,
            config=dict(self.identity.config),
            order=dict(self.identity.order),
            settings=dict(self.identity.settings),
            ndstream_version=__version__,
            created=self.created,
            updated=_now(),
        )

    def close(self, failed: bool) -> None:
        """Stop the update thread; after a failure, drop what is still queued."""
        if failed:
            self.updates.__exit__(RuntimeError, None, None)
        else:
            self.updates.close()


def _merge_ranks(parts: Sequence[Mapping[str, LayerSketch]]) -> dict[str, LayerSketch]:
    """Each layer's sketches of all ranks, merged (exact: integer addition, min and max)."""
    merged = dict(parts[0])
    for part in parts[1:]:
        for name, sketch in part.items():
            merged[name] = merged[name].merge(sketch) if name in merged else sketch
    return merged


class _StopRequest:
    """Turns the first Ctrl-C into a request to stop at the end of the current step.

    Stopping between steps keeps the count of samples and the sketches in step, so ingest
    can commit them before it exits; a second Ctrl-C stops at once.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.requested = False
        self._previous: Any = None

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, self._previous)
        print("\nstopping after this batch; Ctrl-C again to stop at once", file=sys.stderr)

    def __enter__(self) -> _StopRequest:
        if self.enabled:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled and not self.requested:
            signal.signal(signal.SIGINT, self._previous)


class _PendingBatches:
    """Batches of reduced activations held back to be folded into the sketches together.

    A sketch update pays per (neuron, group), per window re-placement and for bringing the
    sketch state back into cache after the forward passes, whatever its number of rows: 512
    samples per update cost about half as much per sample as one batch of 64 at a time. The
    byte bound keeps the gathered copy under about 32 MB, which the allocator reuses from
    one update to the next; larger buffers are mapped afresh each time and page-faulted in.
    """

    rows_per_update = 512
    max_bytes = 32 << 20

    def __init__(self) -> None:
        self.batches: list[tuple[Mapping[str, Reduced], np.ndarray]] = []
        self.rows = 0
        self.nbytes = 0

    def add(self, acts: Mapping[str, Reduced], gids: np.ndarray) -> None:
        self.batches.append((acts, gids))
        self.rows += gids.shape[0]
        self.nbytes += sum(a.nbytes for a in acts.values())

    @property
    def full(self) -> bool:
        return self.rows >= self.rows_per_update or self.nbytes >= self.max_bytes

    def take(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The batches held, gathered per layer as ``(values [rows, neurons], group ids)``
        (see :func:`sketch_rows`), and forgotten.

        Gathered on the calling thread, the one that runs the forward passes: on a run bound
        by the sketch it waits on the worker anyway, and the copy was a tenth of the worker's
        time (17 of 151 ms on ``bench_ingest_sketch.py``'s workload).
        """
        batches, self.batches, self.rows, self.nbytes = self.batches, [], 0, 0
        gathered = {}
        for name in batches[0][0]:
            parts = [sketch_rows(acts[name], gids) for acts, gids in batches]
            if len(parts) == 1:
                gathered[name] = parts[0]
            else:
                values = np.concatenate([v for v, _ in parts])
                gathered[name] = values, np.concatenate([r for _, r in parts])
        return gathered


def _check_instance_indices(instances: InstanceSpec, dataset: Any) -> None:
    """Instances asked for by an index the dataset does not have would never be recorded,
    without a word: refuse them before the run."""
    try:
        n = len(dataset)
    except TypeError:  # an iterable without a length: its indices are known as they come
        return
    past = sorted(i for i in instances.indices if i >= n)
    if past:
        raise ConfigError(
            f"instance indices {past} are past the dataset's {n} samples (indices 0 to "
            f"{n - 1}); drop them from instances.indices"
        )


def _check_rows(acts: Mapping[str, Reduced], n_samples: int) -> None:
    """Every layer gave one row per sample of the batch; say which did not, before its
    values are counted against the wrong samples' groups."""
    for name, values in acts.items():
        rows = samples_of(values)
        if rows != n_samples:
            raise CaptureError(
                f"layer {name!r} gave {rows} row(s) for a batch of {n_samples} samples: "
                "ndstream reads the first axis of a layer's output as the batch. Select a "
                "module whose output is one row per sample (batch first)"
            )


def _update_sketches(
    sketches: Mapping[str, LayerSketch], gathered: Mapping[str, tuple[np.ndarray, np.ndarray]]
) -> None:
    """Fold each layer's gathered rows (see :meth:`_PendingBatches.take`) into its sketch."""
    for name, (values, rows) in gathered.items():
        sketches[name].update(values, rows)


def _exact_names(
    model: torch.nn.Module, layers: LayerSelector | Sequence[LayerSelector]
) -> set[str]:
    """The layers asked for by exact name: those must run, unlike glob or type matches."""
    items = [layers] if isinstance(layers, str | type) else list(layers)
    modules = {n for n, _ in model.named_modules()}
    return {s for s in items if isinstance(s, str) and s in modules}


def _layer_meta(info: LayerInfo) -> LayerMeta:
    """The store's metadata of a captured layer (a module, or one call of it).

    Capture counted the values per sample as it reduced them (positions, and pooled calls
    of different shapes, included).
    """
    return LayerMeta(
        name=info.name,
        module_type=info.module_type,
        n_neurons=info.n_neurons,
        channel_dim=info.channel_dim,
        output_shape=info.output_shape,
        values_per_sample=info.values_per_sample,
        axis_rule=info.axis_rule,
    )


def _call_config(names: list[str], reduction: str, groupings: list[Grouping]) -> dict[str, Any]:
    """The config a Python-API run records in its store (the CLI records its YAML)."""
    return {"layers": names, "reduction": reduction, "group_by": [g.name for g in groupings]}


def _model_device(model: torch.nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
