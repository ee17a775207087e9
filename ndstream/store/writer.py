"""Write finalized sketches to a Zarr v3 store, one atomic checkpoint at a time.

Each checkpoint is a whole Zarr store written into a new snapshot folder and committed by
one atomic rename (see :mod:`ndstream.store.snapshots`), so the store path holds either the
previous checkpoint or the new one, never a half-written mix.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import warnings
from collections.abc import Awaitable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import zarr
import zarr.api.asynchronous as zarr_async
from zarr.codecs import BloscCodec
from zarr.core.array import AsyncArray
from zarr.core.buffer import Buffer
from zarr.core.sync import sync
from zarr.storage import MemoryStore

from ..errors import StoreError
from ..instances import InstanceTable
from ..sketch import LayerSketch, Summary
from . import format as fmt
from . import snapshots

__all__ = ["check_replaceable", "write_checkpoint", "write_store"]

# Byte-shuffled lz4: most counters are small or zero, so their high bytes compress to nothing,
# at several GB/s; zstd with bit shuffle packs a quarter tighter but writes six times slower.
_COMPRESSOR = BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")


def write_store(
    path: str | os.PathLike[str],
    meta: fmt.StoreMeta,
    summaries: Mapping[str, Summary | LayerSketch],
    *,
    overwrite: bool = False,
) -> Path:
    """Write a complete store at ``path``.

    Parameters
    ----------
    path
        Folder of the store.
    meta
        Root metadata; its layers must match ``summaries``.
    summaries
        Each layer's sketch, finalized or not. A :class:`LayerSketch` is finalized a block of
        groups at a time, so a layer with many groups never exists densely in memory.
    overwrite
        Replace an existing ndstream store; without it an existing path raises
        :class:`StoreError`. A folder that is not an ndstream store is never replaced.
    """
    path = Path(path)
    if path.exists():
        if not overwrite:
            raise StoreError(
                f"{path} already exists; pass overwrite=True (--overwrite) to replace it"
            )
        check_replaceable(path)
    write_checkpoint(path, meta, summaries)
    return path


def write_checkpoint(
    path: Path,
    meta: fmt.StoreMeta,
    summaries: Mapping[str, Summary | LayerSketch],
    instances: InstanceTable | None = None,
) -> Path:
    """Commit ``summaries`` as the store's next checkpoint, atomically (see ``snapshots``).

    ``instances``, if given, go in the root group ``instances`` and, per layer, the array
    ``instance_values``. Returns the committed snapshot folder. On any failure the previous
    checkpoint is intact and what was written of this one is removed.
    """
    missing = [name for name in meta.layer_names if name not in summaries]
    if missing:
        raise StoreError(f"no summary for layers {missing}")
    tmp: Path | None = None
    # zarr builds the store in memory and each layer's chunks go to disk as soon as they are
    # written: zarr's local store costs a thread hand-off per file operation, several times
    # its in-memory speed. Only the small metadata documents stay in memory, to consolidate.
    entries: dict[str, Buffer] = {}
    staging = MemoryStore(entries)
    try:
        tmp = snapshots.new_snapshot(path)
        root = zarr.open_group(staging, mode="w-", zarr_format=3)
        root.attrs[fmt.ROOT_ATTR] = meta.to_dict()
        for layer, src in _prepared(meta.layers, summaries):
            values = instances.values[layer.name] if instances is not None else None
            _write_layer(root, layer, src, meta, values)
            _spill(entries, tmp, keep_metadata=True)
        groups = list(meta.layer_names)
        if instances is not None:
            _write_instances(root, instances)
            groups.append(fmt.INSTANCES)
        _consolidate(staging, groups)
        _spill(entries, tmp)
        committed = snapshots.commit(path, tmp, ["zarr.json", *groups], final=meta.complete)
        tmp = None
        return committed
    except OSError as exc:
        raise StoreError(
            f"could not write a checkpoint of {path} ({exc}); the previous checkpoint, if "
            "any, is intact. Free disk space or fix the path, then re-run the same command "
            "to resume from it"
        ) from exc
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def check_replaceable(path: Path) -> None:
    """Refuse to replace ``path`` unless it is empty or an ndstream store (never user data)."""
    if not path.is_dir():
        raise StoreError(f"{path} exists and is not a folder; choose another store path")
    if not any(path.iterdir()):
        return
    data = snapshots.current(path) / "zarr.json"
    try:
        is_store = fmt.ROOT_ATTR in json.loads(data.read_text()).get("attributes", {})
    except (OSError, ValueError, AttributeError):
        is_store = False
    if not is_store and not (path / snapshots.SNAPSHOTS).is_dir():
        raise StoreError(
            f"{path} exists and is not an ndstream store; refusing to replace it. Choose "
            "another store path"
        )


def _spill(entries: dict[str, Buffer], folder: Path, keep_metadata: bool = False) -> None:
    """Write the staged ``entries`` as files under ``folder`` and drop them from memory;
    with ``keep_metadata``, the ``zarr.json`` documents stay (consolidation reads them)."""
    for key in list(entries):
        if keep_metadata and key.rsplit("/", 1)[-1] == "zarr.json":
            continue
        file = folder / key
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(entries.pop(key).to_bytes())


def _consolidate(store: MemoryStore, layers: list[str]) -> None:
    """Consolidate the metadata of the root and of each layer group.

    xarray then opens a layer in one read and without warnings. It cannot go stale, because
    a store is never modified in place. zarr-python marks it ``must_understand: false``, so
    other readers may ignore it; zarr-python warns that it is not in the v3 spec, which we know.
    """

    async def consolidate() -> None:
        await asyncio.gather(
            *(zarr_async.consolidate_metadata(store, path=name, zarr_format=3) for name in layers)
        )
        await zarr_async.consolidate_metadata(store, zarr_format=3)

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        sync(consolidate())


class _Source:
    """What the writer needs of a layer, from a finalized :class:`Summary` or a live
    :class:`LayerSketch` (finalized a block of groups at a time, never densely at once)."""

    def __init__(self, source: Summary | LayerSketch) -> None:
        self._source = source
        if isinstance(source, LayerSketch):
            self.lower, self.upper = source.bin_edges()
            self.count_dtype = source.count_dtype
            self.resolution = source.res
        else:
            self.lower, self.upper = source.lower, source.upper
            self.count_dtype = source.counts.dtype
            self.resolution = source.resolution
        self.has_data = np.asarray(source.totals > 0)

    def blocks(self, block: int) -> Iterator[tuple[int, Summary]]:
        """Finalized blocks of groups; blocks whose groups saw no data are skipped."""
        n_groups = self.has_data.size
        for g0 in range(0, n_groups, block):
            if not self.has_data[g0 : g0 + block].any():
                continue  # nothing to write: missing chunks read as the fill value, zero
            groups = list(range(g0, min(g0 + block, n_groups)))
            if isinstance(self._source, LayerSketch):
                yield g0, self._source.finalize(groups)
            else:
                yield g0, self._source.select(groups)


def _prepared(
    layers: Iterable[fmt.LayerMeta], summaries: Mapping[str, Summary | LayerSketch]
) -> Iterator[tuple[fmt.LayerMeta, _Source]]:
    """Each layer with its :class:`_Source`, the next one prepared while this one is written.

    Preparing a sketch computes its bin axes (Numba and numpy's sort, which release the
    GIL), and writing compresses on zarr's threads: overlapped, they use both of a small
    machine's cores. One layer ahead keeps at most two layers' axes in memory.
    """
    layers = list(layers)
    with ThreadPoolExecutor(1, thread_name_prefix="ndstream-finalize") as ahead:
        upcoming = [ahead.submit(_Source, summaries[layer.name]) for layer in layers[:1]]
        for i, layer in enumerate(layers):
            src = upcoming.pop().result()
            if i + 1 < len(layers):
                upcoming.append(ahead.submit(_Source, summaries[layers[i + 1].name]))
            yield layer, src


def _write_instances(root: zarr.Group, table: InstanceTable) -> None:
    data = {name: np.asarray(getattr(table, name)) for name in fmt.INSTANCE_DIMS}
    specs: dict[str, _ArrayShape] = {
        name: (a.shape, a.dtype, a.shape, None) for name, a in data.items()
    }
    sync(_fill(root, fmt.INSTANCES, {}, specs, fmt.INSTANCE_DIMS, data))


def _write_layer(
    root: zarr.Group,
    layer: fmt.LayerMeta,
    src: _Source,
    meta: fmt.StoreMeta,
    instance_values: np.ndarray | None,
) -> None:
    lower, upper, count_dtype = src.lower, src.upper, src.count_dtype
    n, n_groups = layer.n_neurons, len(meta.groups)
    n_bins = lower.shape[1]
    neuron_chunk = min(n, fmt.NEURON_CHUNK)
    # Few groups per chunk, so a view of a few groups reads little; but not one chunk per
    # group, because each chunk is a file and 1,000 small files cost more than they save.
    per_group = neuron_chunk * n_bins * np.dtype(count_dtype).itemsize
    group_chunk = max(1, min(n_groups, fmt.CHUNK_BYTES // max(1, per_group)))
    data: dict[str, np.ndarray] = {
        "neuron": np.arange(n, dtype=np.int64),
        "group": np.array(meta.groups, dtype=str),
        "grouping": np.array(meta.groupings, dtype=str),
        "bin": np.arange(n_bins, dtype=np.int64),
        "bin_lower": lower,
        "bin_upper": upper,
        "resolution": src.resolution.astype(np.int8),
        "count": np.zeros(n_groups, dtype=np.int64),
        # NaN is what min and max hold for a group without data.
        "min": np.full((n, n_groups), np.nan, dtype=np.float32),
        "max": np.full((n, n_groups), np.nan, dtype=np.float32),
        "nan_count": np.zeros((n, n_groups), dtype=np.int64),
        "posinf_count": np.zeros((n, n_groups), dtype=np.int64),
        "neginf_count": np.zeros((n, n_groups), dtype=np.int64),
    }
    chunks = {name: (neuron_chunk, *a.shape[1:]) for name, a in data.items() if a.ndim == 2}
    if instance_values is not None:
        data["instance_values"] = instance_values.astype(np.float32, copy=False)
    specs: dict[str, _ArrayShape] = {
        name: (a.shape, a.dtype, chunks.get(name, a.shape), None) for name, a in data.items()
    }
    # xarray reads the CF "coordinates" attribute to attach the extra coordinates.
    specs["counts"] = (
        (n, n_groups, n_bins),
        np.dtype(count_dtype),
        (neuron_chunk, group_chunk, n_bins),
        {"coordinates": "grouping bin_lower bin_upper"},
    )
    block = group_chunk * max(1, (64 << 20) // max(1, n * n_bins * 8 * group_chunk))
    attributes = {fmt.ROOT_ATTR: {"layer": layer.to_dict()}}
    sync(_fill(root, layer.name, attributes, specs, fmt.DIMS, data, src, block))


async def _fill(
    root: zarr.Group,
    name: str,
    attributes: dict[str, Any],
    specs: Mapping[str, _ArrayShape],
    dims: Mapping[str, tuple[str, ...]],
    data: dict[str, np.ndarray],
    src: _Source | None = None,
    block: int = 0,
) -> None:
    """Create a group's arrays and write them, all in one call into zarr's event loop (each
    synchronous zarr call waits on a thread hand-off; a layer's finalizing runs there too).

    A layer's counts (``src``) go a block of whole chunks of groups at a time, so a block
    stays near 64 MB however many groups there are. The other arrays are written once at
    the end, because rewriting their chunks block by block would recompress them each time.
    """
    arrays = await _create_arrays(root, name, attributes, specs, dims)
    for g0, s in src.blocks(block) if src is not None else ():
        sel = (slice(None), slice(g0, g0 + len(s.groups)))
        if s.counts.shape[2]:
            await arrays["counts"].setitem(sel, s.counts)
        data["min"][sel] = s.mins
        data["max"][sel] = s.maxs
        data["nan_count"][sel] = s.nan
        data["posinf_count"][sel] = s.posinf
        data["neginf_count"][sel] = s.neginf
        data["count"][g0 : g0 + len(s.groups)] = s.totals
    await _gather(arrays[array].setitem(Ellipsis, a) for array, a in data.items())


_ArrayShape = tuple[tuple[int, ...], np.dtype[Any], tuple[int, ...], dict[str, Any] | None]


async def _create_arrays(
    root: zarr.Group,
    name: str,
    attributes: dict[str, Any],
    specs: Mapping[str, _ArrayShape],
    dims: Mapping[str, tuple[str, ...]],
) -> dict[str, AsyncArray[Any]]:
    """Create a group and its arrays ``name: (shape, dtype, chunks, attributes)``, all at
    once (a layer has 14 arrays; each synchronous zarr call costs milliseconds)."""
    group = await root._async_group.create_group(name, attributes=attributes)

    async def create(array: str, spec: _ArrayShape) -> AsyncArray[Any]:
        shape, dtype, chunks, attrs = spec
        is_str = dtype.kind == "U"
        return await group.create_array(
            array,
            shape=shape,
            dtype=str if is_str else dtype,
            chunks=tuple(max(c, 1) for c in chunks),
            compressors=None if is_str else _COMPRESSOR,
            dimension_names=dims[array],
            fill_value="" if is_str else 0,
            attributes=attrs,
            # Skips zarr's scan of every chunk for all-zero content: a sketch's chunks
            # rarely are, and the scan costs as much as compressing them.
            config={"write_empty_chunks": True},
            # Chunk files side by side ("c.0.0.0") rather than nested folders: a checkpoint
            # makes and flushes three times fewer folders.
            chunk_key_encoding={"name": "default", "separator": "."},
        )

    created = await asyncio.gather(*(create(array, spec) for array, spec in specs.items()))
    return dict(zip(specs, created, strict=True))


async def _gather(coroutines: Iterable[Awaitable[Any]]) -> None:
    await asyncio.gather(*coroutines)
