"""Write finalized sketches to a Zarr v3 store, one atomic checkpoint at a time.

Each checkpoint is a whole Zarr store written into a new snapshot folder and committed by
one atomic rename (see :mod:`ndstream.store.snapshots`), so the store path holds either the
previous checkpoint or the new one, never a half-written mix. The documents and chunks are
made by :mod:`ndstream.store.zarr_v3` and compressed and written on a pool of threads; the
size and checksum of every file go into the snapshot's manifest
(:mod:`ndstream.store.integrity`), written last.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import StoreError
from ..sketch import LayerSketch, Summary
from . import format as fmt
from . import snapshots, zarr_v3
from .instances import InstanceTable
from .integrity import MANIFEST, Manifest

__all__ = ["check_replaceable", "write_checkpoint", "write_store", "write_threads"]

#: Threads that compress and write a checkpoint's files; ``None``: one per CPU. Ingest sets
#: it for its own thread from its thread budget (see ``ndstream.ingestion.worker.ThreadBudget``).
write_threads: ContextVar[int | None] = ContextVar("write_threads", default=None)


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

    Raises
    ------
    StoreError
        If the path exists (see ``overwrite``), or an ingest is writing it.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise StoreError(f"{path} already exists; pass overwrite=True (--overwrite) to replace it")
    with snapshots.StoreLock(path):  # one writer at a time, as for an ingest
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
    try:
        tmp = snapshots.new_snapshot(path)
        documents: dict[str, dict[str, Any]] = {}  # node path -> its zarr.json document
        with _Files(tmp) as files:
            for layer, src in _prepared(meta.layers, summaries):
                values = instances.values[layer.name] if instances is not None else None
                documents.update(_write_layer(files, layer, src, meta, values))
                files.wait()  # one layer's counts in flight at a time: memory stays bounded
            groups = [layer.node for layer in meta.layers]
            if instances is not None:
                documents.update(_write_instances(files, instances))
                groups.append(fmt.INSTANCES)
            # Each group lists its arrays, and the root every node, as consolidated metadata:
            # xarray then opens a layer in one read. It cannot go stale, because a store is
            # never modified in place; readers that do not know it may ignore it.
            # Innermost first: a layer lists its pooled group's consolidated document.
            pooled = [f"{node}/{fmt.POOLED}" for node in groups]
            for group in [p for p in pooled if p in documents] + groups:
                inside = {
                    node[len(group) + 1 :]: doc
                    for node, doc in documents.items()
                    if node.startswith(group + "/")
                }
                documents[group] = zarr_v3.group_document(documents[group]["attributes"], inside)
            root = zarr_v3.group_document({fmt.ROOT_ATTR: meta.to_dict()}, documents)
            for node, doc in documents.items():
                files.put(f"{node}/zarr.json", zarr_v3.to_json(doc))
            files.put("zarr.json", zarr_v3.to_json(root))
            files.wait()
            # Last: a snapshot without its manifest is one whose writing did not finish.
            (tmp / MANIFEST).write_bytes(Manifest(files.written).to_bytes())
        entries = ["zarr.json", MANIFEST, *groups]
        committed = snapshots.commit(path, tmp, entries, final=meta.complete)
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
    if not path.exists():
        return
    if not path.is_dir():
        raise StoreError(f"{path} exists and is not a folder; choose another store path")
    if not any(p.name != snapshots.LOCK for p in path.iterdir()):
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


class _Source:
    """What the writer needs of a layer, from a finalized :class:`Summary` or a live
    :class:`LayerSketch` (finalized a block of groups at a time, never densely at once).

    Made on the preparing thread (see :func:`_prepared`): the bin axes and the first block
    of counts are computed there, while the previous layer is compressed.
    """

    def __init__(self, source: Summary | LayerSketch) -> None:
        self._source = source
        # The pooled sketch a layer keeps beside its groups, if it keeps one; otherwise its
        # pooled summary is the first grouping's groups added up, and readers add them.
        self.pooled: Summary | None = None
        if isinstance(source, LayerSketch):
            self.lower, self.upper = source.bin_edges()
            self.count_dtype = source.count_dtype
            self.resolution = source.res
            if source.pooled is not None:
                self.pooled = source.pooled_summary()
            self.fine = source.fine_counts()
        else:
            self.lower, self.upper = source.lower, source.upper
            self.count_dtype = source.counts.dtype
            self.resolution = source.resolution
            self.fine = source.fine
        self.atom = _atoms_of(source.atom, self.lower.shape[0])
        self.has_data = np.asarray(source.totals > 0)  # per group
        n_groups = self.has_data.size
        n, n_bins = self.lower.shape
        self.neuron_chunk = min(n, fmt.NEURON_CHUNK)
        # Few groups per chunk, so a view of a few groups reads little; but not one chunk per
        # group, because each chunk is a file and 1,000 small files cost more than they save.
        per_group = self.neuron_chunk * n_bins * np.dtype(self.count_dtype).itemsize
        self.group_chunk = max(1, min(n_groups, fmt.CHUNK_BYTES // max(1, per_group)))
        # Blocks of whole chunks of groups, near 64 MB however many groups there are.
        self.block = self.group_chunk * max(
            1, (64 << 20) // max(1, n * n_bins * 8 * self.group_chunk)
        )
        self._rest = self._finalized()
        self._first = next(self._rest, None)

    def blocks(self) -> Iterator[tuple[int, Summary]]:
        """Finalized blocks of groups; blocks whose groups saw no data are skipped."""
        if self._first is not None:
            first, self._first = self._first, None
            yield first
            yield from self._rest

    def _finalized(self) -> Iterator[tuple[int, Summary]]:
        n_groups = self.has_data.size
        for g0 in range(0, n_groups, self.block):
            if not self.has_data[g0 : g0 + self.block].any():
                continue  # nothing to write: missing chunks read as the fill value, zero
            groups = list(range(g0, min(g0 + self.block, n_groups)))
            if isinstance(self._source, LayerSketch):
                yield g0, self._source.finalize(groups)
            else:
                yield g0, self._source.select(groups)


def _prepared(
    layers: Iterable[fmt.LayerMeta],
    summaries: Mapping[str, Summary | LayerSketch],
) -> Iterator[tuple[fmt.LayerMeta, _Source]]:
    """Each layer with its :class:`_Source`, the next one prepared while this one is written.

    Preparing a sketch computes its bin axes and its first block of counts (Numba and
    numpy, which release the GIL), and writing compresses on the writer's threads: overlapped,
    they use both of a small machine's cores. One layer ahead keeps at most two layers'
    axes and first blocks in memory.
    """
    layers = list(layers)
    with ThreadPoolExecutor(1, thread_name_prefix="ndstream-finalize") as ahead:
        upcoming = [ahead.submit(_Source, summaries[layer.name]) for layer in layers[:1]]
        for i, layer in enumerate(layers):
            src = upcoming.pop().result()
            if i + 1 < len(layers):
                upcoming.append(ahead.submit(_Source, summaries[layers[i + 1].name]))
            yield layer, src


def _write_instances(files: _Files, table: InstanceTable) -> dict[str, dict[str, Any]]:
    """Write the instances group's arrays (one chunk each); returns its documents."""
    attrs = {"attacks": table.attacks} if table.attacks else {}
    documents = {fmt.INSTANCES: zarr_v3.group_document(attrs)}
    for name, dims in fmt.INSTANCE_DIMS.items():
        data = np.asarray(getattr(table, name))
        documents[f"{fmt.INSTANCES}/{name}"] = files.array(
            f"{fmt.INSTANCES}/{name}", data, data.shape, dims
        )
    return documents


def _write_layer(
    files: _Files,
    layer: fmt.LayerMeta,
    src: _Source,
    meta: fmt.StoreMeta,
    instance_values: np.ndarray | None,
) -> dict[str, dict[str, Any]]:
    """Write a layer group's arrays; returns its documents (node path -> document).

    A layer's counts go a block of whole chunks of groups at a time (see :class:`_Source`),
    so a block stays near 64 MB however many groups there are; the per-group arrays are
    filled from the same blocks and written once at the end.
    """
    n, n_groups = layer.n_neurons, len(meta.groups)
    n_bins = src.lower.shape[1]
    neuron_chunk, group_chunk = src.neuron_chunk, src.group_chunk
    name = layer.node
    data: dict[str, np.ndarray] = {
        "neuron": np.arange(n, dtype=np.int64),
        "group": np.array(meta.groups, dtype=str),
        "grouping": np.array(meta.groupings, dtype=str),
        "bin": np.arange(n_bins, dtype=np.int64),
        "bin_lower": src.lower,
        "bin_upper": src.upper,
        "resolution": src.resolution.astype(np.int8),
        "count": np.zeros(n_groups, dtype=np.int64),
        # NaN is what min and max hold for a group without data.
        "min": np.full((n, n_groups), np.nan, dtype=np.float32),
        "max": np.full((n, n_groups), np.nan, dtype=np.float32),
        "min_count": np.zeros((n, n_groups), dtype=np.int64),
        "max_count": np.zeros((n, n_groups), dtype=np.int64),
        "atom": src.atom,
        "atom_count": np.zeros((n, n_groups), dtype=np.int64),
        "nan_count": np.zeros((n, n_groups), dtype=np.int64),
        "posinf_count": np.zeros((n, n_groups), dtype=np.int64),
        "neginf_count": np.zeros((n, n_groups), dtype=np.int64),
        "rank_bound": np.full((n, n_groups), np.nan, dtype=np.float32),
    }
    counts_chunks = (neuron_chunk, group_chunk, n_bins)
    counts_dtype = np.dtype(src.count_dtype)
    for g0, s in src.blocks():
        sel = (slice(None), slice(g0, g0 + len(s.groups)))
        files.chunks(f"{name}/{fmt.COUNTS}", s.counts, counts_chunks, (0, g0, 0))
        data["min"][sel] = s.mins
        data["max"][sel] = s.maxs
        data["min_count"][sel] = s.min_count
        data["max_count"][sel] = s.max_count
        if s.atom_count is not None:
            data["atom_count"][sel] = s.atom_count
        data["nan_count"][sel] = s.nan
        data["posinf_count"][sel] = s.posinf
        data["neginf_count"][sel] = s.neginf
        data["rank_bound"][sel] = s.group_rank_bounds()
        data["count"][g0 : g0 + len(s.groups)] = s.totals
    documents = {
        name: zarr_v3.group_document({fmt.ROOT_ATTR: {"layer": layer.to_dict()}}),
        # xarray reads the CF "coordinates" attribute to attach the extra coordinates.
        f"{name}/{fmt.COUNTS}": zarr_v3.array_document(
            (n, n_groups, n_bins), counts_dtype, counts_chunks, fmt.DIMS[fmt.COUNTS],
            {"coordinates": "grouping bin_lower bin_upper"},
        ),
    }  # fmt: skip
    if src.fine is not None:
        data[fmt.FINE] = src.fine
    if instance_values is not None:
        data["instance_values"] = instance_values.astype(np.float32, copy=False)
    for array, values in data.items():
        documents[f"{name}/{array}"] = files.array(
            f"{name}/{array}", values, _chunks(array, values, neuron_chunk), fmt.DIMS[array]
        )
    if src.pooled is not None:
        node = f"{name}/{fmt.POOLED}"
        documents.update(_write_pooled(files, node, src.pooled, neuron_chunk))
    return documents


def _atoms_of(atom: np.ndarray | None, n: int) -> np.ndarray:
    """A layer's ``atom`` array: each neuron's atom inside its range, NaN for none."""
    return np.full(n, np.nan, np.float32) if atom is None else np.asarray(atom, np.float32)


def _chunks(array: str, values: np.ndarray, neuron_chunk: int) -> tuple[int, ...]:
    """Chunks of one of a layer's arrays: runs of ``neuron_chunk`` neurons, all of each one's
    groups, bins or extremes together, where neurons come first and there is more; else one
    chunk (the coordinates, the counts per group, the instances' values)."""
    if fmt.DIMS[array][0] == "neuron" and values.ndim >= 2:
        return (neuron_chunk, *values.shape[1:])
    return tuple(values.shape)


def _write_pooled(
    files: _Files, node: str, pooled: Summary, neuron_chunk: int
) -> dict[str, dict[str, Any]]:
    """Write a layer's pooled summary (every sample once) as a group of the same arrays."""
    n, _, n_bins = pooled.counts.shape
    data: dict[str, np.ndarray] = {
        "neuron": np.arange(n, dtype=np.int64),
        "group": np.array(pooled.groups, dtype=str),
        "bin": np.arange(n_bins, dtype=np.int64),
        "bin_lower": pooled.lower,
        "bin_upper": pooled.upper,
        "resolution": pooled.resolution.astype(np.int8),
        "count": pooled.totals.astype(np.int64),
        "min": pooled.mins.astype(np.float32),
        "max": pooled.maxs.astype(np.float32),
        "min_count": pooled.min_count.astype(np.int64),
        "max_count": pooled.max_count.astype(np.int64),
        "atom": _atoms_of(pooled.atom, n),
        "atom_count": (
            pooled.atom_count.astype(np.int64)
            if pooled.atom_count is not None
            else np.zeros((n, 1), dtype=np.int64)
        ),
        "nan_count": pooled.nan.astype(np.int64),
        "posinf_count": pooled.posinf.astype(np.int64),
        "neginf_count": pooled.neginf.astype(np.int64),
        "rank_bound": pooled.group_rank_bounds(),
        fmt.COUNTS: pooled.counts,
    }
    if pooled.fine is not None:
        data[fmt.FINE] = pooled.fine
    documents = {node: zarr_v3.group_document({})}
    for array, values in data.items():
        attrs = {"coordinates": "bin_lower bin_upper"} if array == fmt.COUNTS else None
        documents[f"{node}/{array}"] = files.array(
            f"{node}/{array}", values, _chunks(array, values, neuron_chunk), fmt.DIMS[array],
            attrs,
        )  # fmt: skip
    return documents


# Files smaller than this go to the pool _SMALL_BATCH to a task: a task of its own costs more
# than such a file's work. A checkpoint is mostly small files (the MiniLM example's: about 500,
# most of a few KB), and with a task each it took longer on the pool than on one thread.
_SMALL_BYTES = 64 << 10
_SMALL_BATCH = 32
# O_BINARY: on Windows a file opened without it turns each "\n" written into "\r\n".
_CREATE = (
    os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
)


class _Files:
    """Chunks compressed and written into a snapshot folder on a pool of threads, small ones
    several to a task.

    Blosc and file writes release the GIL, so the pool keeps every core busy while the
    caller finalizes the next block. :meth:`wait` re-raises a failed write. :attr:`written`
    holds the size and checksum of every file written, for the manifest.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        threads = write_threads.get() or os.cpu_count() or 2
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="ndstream-write")
        self._pending: list[Future[None]] = []
        self.written: dict[str, tuple[int, int]] = {}
        self._folders: set[str] = {""}
        self._small: list[tuple[Any, tuple[Any, ...]]] = []

    def array(
        self,
        node: str,
        data: np.ndarray,
        chunks: tuple[int, ...],
        dims: tuple[str, ...],
        attributes: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Write a whole array's chunks; returns its document."""
        self.chunks(node, data, chunks)
        return zarr_v3.array_document(data.shape, data.dtype, chunks, dims, attributes)

    def chunks(
        self,
        node: str,
        data: np.ndarray,
        chunks: tuple[int, ...],
        origin: tuple[int, ...] | None = None,
    ) -> None:
        """Write the chunks of ``data`` (see :func:`zarr_v3.chunk_parts`), in the pool."""
        for key, part in zarr_v3.chunk_parts(data, chunks, origin):
            if part.nbytes < _SMALL_BYTES:
                self._queue(self._write_chunk, node, key, part, chunks)
            else:
                self._submit(self._write_chunk, node, key, part, chunks)

    def put(self, name: str, content: bytes) -> None:
        """Write one file (a document), in the pool."""
        self._queue(self._write, name, content)

    def wait(self) -> None:
        """Block until everything submitted is written; raise the first failure."""
        self._flush()
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()

    def _queue(self, fn: Any, *args: Any) -> None:
        """Write a small file in the pool, in a task with the next few."""
        self._small.append((fn, args))
        if len(self._small) >= _SMALL_BATCH:
            self._flush()

    def _flush(self) -> None:
        if self._small:
            batch, self._small = self._small, []
            self._submit(_run_all, batch)

    def _submit(self, fn: Any, *args: Any) -> None:
        self._pending.append(self._pool.submit(fn, *args))

    def _write_chunk(self, node: str, key: str, part: np.ndarray, chunks: tuple[int, ...]) -> None:
        self._write(f"{node}/{key}", zarr_v3.encode_chunk(part, chunks))

    def _write(self, name: str, content: bytes) -> None:
        folder, _, _ = name.rpartition("/")
        if folder not in self._folders:  # each array's folder once, before its first file
            os.makedirs(os.path.join(self.folder, folder), exist_ok=True)
            self._folders.add(folder)
        # os.open and os.write: three system calls a file, against six through open(); a
        # checkpoint writes hundreds of small files, and each call hands the GIL over.
        fd = os.open(os.path.join(self.folder, name), _CREATE, 0o666)  # as open(): less the umask
        try:
            view = memoryview(content)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        self.written[name] = (len(content), zarr_v3.checksum(content))  # one key per thread

    def __enter__(self) -> _Files:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                self.wait()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)


def _run_all(calls: list[tuple[Any, tuple[Any, ...]]]) -> None:
    for fn, args in calls:
        fn(*args)
