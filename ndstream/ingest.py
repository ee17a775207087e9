"""Stream a dataset through a model and write per-(layer, neuron, group) sketches to a store.

The loop is: DataLoader batch -> forward under ``torch.inference_mode()`` with hooks
(:mod:`ndstream.capture`) -> group ids (:mod:`ndstream.groups`) -> sketch update
(:mod:`ndstream.sketch`) -> store (:mod:`ndstream.store`). Memory stays bounded by the
sketches, whatever the dataset size: activations are reduced on the model's device and dropped
after each batch.
"""

from __future__ import annotations

import datetime as dt
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ._version import __version__
from .background import SerialWorker
from .capture import ActivationCapture, LayerInfo, LayerSelector, Reduction, resolve_layers
from .errors import ConfigError, StoreError
from .fingerprint import dataset_fingerprint, model_fingerprint
from .groups import Grouping, GroupLayout, resolve_groupings
from .sketch import GridSpec, LayerSketch, SketchSpec
from .store import LayerMeta, Store, StoreMeta, open_store, write_store

__all__ = ["ingest"]


def ingest(
    model: torch.nn.Module,
    loader: Iterable[Any],
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
) -> Store:
    """Summarise the activations of ``model`` over ``loader`` into a store, and open it.

    Parameters
    ----------
    model
        Any ``torch.nn.Module``; it is put in ``eval()`` mode.
    loader
        Yields ``(inputs, targets, ...)`` tuples or bare input tensors, usually a
        ``torch.utils.data.DataLoader``. ``loader.dataset.classes`` names the label groups.
    store
        Folder of the Zarr store to write.
    layers
        Module names, globs (``"features.*"``), ``"type:Conv2d,Linear"`` or module classes.
    reduction
        Per-neuron reduction of outputs with positions: ``"max"``, ``"mean"`` or ``"none"``.
    group_by
        ``"label"``, ``"predicted"``, ``"correct"``, ``"all"``, a custom
        :class:`~ndstream.groups.Grouping`, or a list of them.
    grid
        Binning rule of the sketches; the default suits activations.
    channel_dim
        Per-layer override (name or glob) of the output axis that holds neurons.
    limit
        Stop after this many samples.
    device
        Device for the inputs; defaults to the model's.
    overwrite
        Replace an existing store at ``store``.
    progress
        Show a progress bar with throughput and ETA.
    config
        The configuration to record in the store (the CLI passes the validated YAML).

    Returns
    -------
    Store
        The written store, opened for reading.
    """
    path = Path(store)
    if path.exists() and not overwrite:
        raise StoreError(
            f"{path} already exists; choose another path or pass overwrite=True (--overwrite)"
        )
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be a positive number of samples, got {limit}")
    grid = grid or GridSpec()
    names = resolve_layers(model, layers)
    by_name = _exact_names(model, layers)
    groupings = resolve_groupings(group_by)
    dev = torch.device(device) if device is not None else _model_device(model)
    dataset = getattr(loader, "dataset", None)
    classes = getattr(dataset, "classes", None)
    total = _total(loader, dataset, limit)
    created = _now()

    model.eval()
    sketches: dict[str, LayerSketch] = {}
    layout: GroupLayout | None = None
    pending = _PendingBatches()
    done = 0
    bar = tqdm(total=total, unit="img", disable=not progress, desc="ingest", dynamic_ncols=True)
    with (
        torch.inference_mode(),
        ActivationCapture(
            model,
            names,
            reduction=reduction,
            channel_dim=channel_dim,
            optional=[n for n in names if n not in by_name],
        ) as capture,
        SerialWorker() as updates,  # sketch updates overlap the next forward pass
    ):
        for batch in loader:
            inputs, targets = _split_batch(batch)
            if limit is not None and done + _batch_len(inputs) > limit:
                keep = limit - done
                inputs, targets = _head(inputs, keep), _head(targets, keep)
            outputs = model(_to(inputs, dev))
            acts = capture.pop()
            if layout is None:
                layout = GroupLayout(tuple(g.bind(classes, outputs) for g in groupings))
                sketches = {
                    name: LayerSketch(SketchSpec(info.n_neurons, layout.names, grid))
                    for name, info in capture.layers.items()
                }
            gids = layout.ids(inputs, targets, outputs)
            pending.add(acts, gids)
            if pending.full:
                updates.submit(_update_sketches, sketches, pending.take())
            done += gids.shape[0]
            bar.update(gids.shape[0])
            if limit is not None and done >= limit:
                break
        if pending.rows:
            updates.submit(_update_sketches, sketches, pending.take())
    bar.close()
    if layout is None:
        raise ConfigError("the loader yielded no batches; check the dataset and `limit`")
    if capture.skipped:
        warnings.warn(
            f"skipped {len(capture.skipped)} layers that matched the selection but never ran "
            f"(their weights are used without calling the module): {capture.skipped}",
            stacklevel=2,
        )
        names = [n for n in names if n not in capture.skipped]

    infos = capture.layers
    meta = StoreMeta(
        layers=tuple(_layer_meta(infos[name], reduction) for name in names),
        groups=layout.names,
        groupings=layout.grouping_of,
        reduction=reduction,
        grid=grid.to_dict(),
        model_fingerprint=model_fingerprint(model),
        dataset_fingerprint=dataset_fingerprint(dataset) if dataset is not None else "",
        samples_done=done,
        samples_total=total if total is not None else done,
        complete=True,
        config=dict(config) if config is not None else _call_config(names, reduction, groupings),
        ndstream_version=__version__,
        created=created,
        updated=_now(),
    )
    write_store(path, meta, {name: sketches[name] for name in names}, overwrite=overwrite)
    return open_store(path)


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
        self.batches: list[tuple[Mapping[str, np.ndarray], np.ndarray]] = []
        self.rows = 0
        self.nbytes = 0

    def add(self, acts: Mapping[str, np.ndarray], gids: np.ndarray) -> None:
        self.batches.append((acts, gids))
        self.rows += gids.shape[0]
        self.nbytes += sum(a.nbytes for a in acts.values())

    @property
    def full(self) -> bool:
        return self.rows >= self.rows_per_update or self.nbytes >= self.max_bytes

    def take(self) -> list[tuple[Mapping[str, np.ndarray], np.ndarray]]:
        batches, self.batches, self.rows, self.nbytes = self.batches, [], 0, 0
        return batches


def _update_sketches(
    sketches: Mapping[str, LayerSketch],
    batches: Sequence[tuple[Mapping[str, np.ndarray], np.ndarray]],
) -> None:
    """Fold batches of reduced activations ``[batch, values_per_sample, neuron]`` in."""
    gids = np.concatenate([g for _, g in batches])
    for name in batches[0][0]:
        values = np.concatenate([acts[name] for acts, _ in batches])
        b, per_sample, n = values.shape
        rows = np.repeat(gids, per_sample, axis=0) if per_sample > 1 else gids
        # Forward passes ran since this layer's last update and evicted its sketch state.
        sketches[name].update(values.reshape(b * per_sample, n), rows, cold=True)


def _exact_names(
    model: torch.nn.Module, layers: LayerSelector | Sequence[LayerSelector]
) -> set[str]:
    """The layers asked for by exact name: those must run, unlike glob or type matches."""
    items = [layers] if isinstance(layers, str | type) else list(layers)
    modules = {n for n, _ in model.named_modules()}
    return {s for s in items if isinstance(s, str) and s in modules}


def _layer_meta(info: LayerInfo, reduction: str) -> LayerMeta:
    per_call = 1 if reduction != "none" else _positions(info)
    return LayerMeta(
        name=info.name,
        module_type=info.module_type,
        n_neurons=info.n_neurons,
        channel_dim=info.channel_dim,
        output_shape=info.output_shape,
        values_per_sample=per_call * info.calls_per_forward,
    )


def _positions(info: LayerInfo) -> int:
    return int(np.prod(info.output_shape)) // max(info.n_neurons, 1)


def _call_config(names: list[str], reduction: str, groupings: list[Grouping]) -> dict[str, Any]:
    return {"layers": names, "reduction": reduction, "group_by": [g.name for g in groupings]}


def _split_batch(batch: Any) -> tuple[Any, Any]:
    if isinstance(batch, tuple | list):
        if not batch:
            raise ConfigError("the loader yielded an empty batch")
        return batch[0], batch[1] if len(batch) > 1 else None
    if isinstance(batch, torch.Tensor):
        return batch, None
    raise ConfigError(
        f"the loader yielded a {type(batch).__name__}; ndstream expects (inputs, targets) "
        "tuples or bare input tensors. Wrap the dataset so it yields those."
    )


def _batch_len(inputs: Any) -> int:
    if isinstance(inputs, torch.Tensor):
        return int(inputs.shape[0])
    if isinstance(inputs, tuple | list) and inputs:
        return _batch_len(inputs[0])
    raise ConfigError(f"cannot tell the batch size of inputs of type {type(inputs).__name__}")


def _head(x: Any, n: int) -> Any:
    if x is None:
        return None
    if isinstance(x, tuple | list):
        return type(x)(_head(v, n) for v in x)
    return x[:n]


def _to(x: Any, device: torch.device) -> Any:
    if isinstance(x, torch.Tensor):
        return x.to(device, non_blocking=True)
    if isinstance(x, tuple | list):
        return type(x)(_to(v, device) for v in x)
    return x


def _model_device(model: torch.nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _total(loader: Any, dataset: Any, limit: int | None) -> int | None:
    n: int | None
    try:
        n = len(dataset) if dataset is not None else None
    except TypeError:
        n = None
    if n is not None and getattr(loader, "drop_last", False):
        batch_size = getattr(loader, "batch_size", None) or 1
        n = n // batch_size * batch_size
    if limit is not None:
        return min(n, limit) if n is not None else limit
    return n


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
