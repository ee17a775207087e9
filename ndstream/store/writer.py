"""Write finalized sketches to a Zarr v3 store.

A store is written into a fresh sibling folder and renamed into place, so the path holds
either the previous store or the new one, never a half-written mix.
"""

from __future__ import annotations

import os
import shutil
import uuid
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from ..errors import StoreError
from ..sketch import LayerSketch, Summary
from . import format as fmt

__all__ = ["write_store"]

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
    """Write a complete store at ``path``, replacing it atomically.

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
        Replace an existing store; without it an existing path raises :class:`StoreError`.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise StoreError(f"{path} already exists; pass overwrite=True (--overwrite) to replace it")
    missing = [name for name in meta.layer_names if name not in summaries]
    if missing:
        raise StoreError(f"no summary for layers {missing}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        root = zarr.open_group(tmp, mode="w-", zarr_format=3)
        root.attrs[fmt.ROOT_ATTR] = meta.to_dict()
        for layer in meta.layers:
            _write_layer(root, layer, summaries[layer.name], meta)
        _consolidate(tmp, [layer.name for layer in meta.layers])
        _replace(tmp, path)
    except OSError as exc:
        raise StoreError(f"could not write store {path}: {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def _consolidate(path: Path, layers: list[str]) -> None:
    """Consolidate the metadata of the root and of each layer group.

    xarray then opens a layer in one read and without warnings. It cannot go stale, because
    a store is never modified in place. zarr-python marks it ``must_understand: false``, so
    other readers may ignore it; zarr-python warns that it is not in the v3 spec, which we know.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        for name in layers:
            zarr.consolidate_metadata(path, path=name, zarr_format=3)
        zarr.consolidate_metadata(path, zarr_format=3)


def _replace(tmp: Path, path: Path) -> None:
    if not path.exists():
        os.replace(tmp, path)
        return
    # A folder cannot be atomically replaced by another: move the old one aside first.
    old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
    os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


class _Source:
    """What the writer needs of a layer, from a finalized :class:`Summary` or a live
    :class:`LayerSketch` (finalized a block of groups at a time, never densely at once)."""

    def __init__(self, source: Summary | LayerSketch) -> None:
        self._source = source
        if isinstance(source, LayerSketch):
            self.lower, self.upper = source.bin_edges()
            self.count_dtype = source.count_dtype
            self.resolution = source.res
            self.has_data = np.asarray((source.page >= 0).any(axis=0))
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


def _write_layer(
    root: zarr.Group, layer: fmt.LayerMeta, source: Summary | LayerSketch, meta: fmt.StoreMeta
) -> None:
    g = root.create_group(layer.name)
    g.attrs[fmt.ROOT_ATTR] = {"layer": layer.to_dict()}
    src = _Source(source)
    lower, upper, count_dtype = src.lower, src.upper, src.count_dtype
    n, n_groups = layer.n_neurons, len(meta.groups)
    n_bins = lower.shape[1]
    neuron_chunk = min(n, fmt.NEURON_CHUNK)
    # Few groups per chunk, so a view of a few groups reads little; but not one chunk per
    # group, because each chunk is a file and 1,000 small files cost more than they save.
    per_group = neuron_chunk * n_bins * np.dtype(count_dtype).itemsize
    group_chunk = max(1, min(n_groups, fmt.CHUNK_BYTES // max(1, per_group)))
    specs: dict[str, tuple[np.dtype[Any], tuple[int, ...]]] = {
        "counts": (count_dtype, (neuron_chunk, group_chunk, n_bins)),
        "min": (np.dtype(np.float32), (neuron_chunk, n_groups)),
        "max": (np.dtype(np.float32), (neuron_chunk, n_groups)),
        "nan_count": (np.dtype(np.int64), (neuron_chunk, n_groups)),
        "posinf_count": (np.dtype(np.int64), (neuron_chunk, n_groups)),
        "neginf_count": (np.dtype(np.int64), (neuron_chunk, n_groups)),
        "count": (np.dtype(np.int64), (n_groups,)),
    }
    shapes = {"counts": (n, n_groups, n_bins), "count": (n_groups,)}
    arrays = {
        name: _create(g, name, shapes.get(name, (n, n_groups)), dtype, chunks)
        for name, (dtype, chunks) in specs.items()
    }
    coords: dict[str, np.ndarray] = {
        "neuron": np.arange(n, dtype=np.int64),
        "group": np.array(meta.groups, dtype=str),
        "grouping": np.array(meta.groupings, dtype=str),
        "bin": np.arange(n_bins, dtype=np.int64),
        "bin_lower": lower,
        "bin_upper": upper,
        "resolution": src.resolution.astype(np.int8),
    }
    for name, data in coords.items():
        dtype = np.dtype(str) if data.dtype.kind == "U" else data.dtype
        chunks = (neuron_chunk, n_bins) if data.ndim == 2 else (max(data.shape[0], 1),)
        _create(g, name, data.shape, dtype, chunks)[...] = data
    # xarray reads this CF attribute to attach the extra coordinates.
    arrays["counts"].attrs["coordinates"] = "grouping bin_lower bin_upper"

    # A block of whole chunks of groups at a time, so a block of counts stays near 64 MB.
    # The [neuron, group] arrays are small: gather them and write each once, because
    # rewriting their chunks block by block would recompress them every time.
    block = group_chunk * max(1, (64 << 20) // max(1, n * n_bins * 8 * group_chunk))
    small = {
        name: np.zeros(a.shape, dtype=a.dtype) for name, a in arrays.items() if name != "counts"
    }
    small["min"][...] = small["max"][...] = np.nan  # what a group without data has
    for g0, s in src.blocks(block):
        sel = (slice(None), slice(g0, g0 + len(s.groups)))
        if n_bins:
            arrays["counts"][sel] = s.counts
        small["min"][sel] = s.mins
        small["max"][sel] = s.maxs
        small["nan_count"][sel] = s.nan
        small["posinf_count"][sel] = s.posinf
        small["neginf_count"][sel] = s.neginf
        small["count"][g0 : g0 + len(s.groups)] = s.totals
    for name, data in small.items():
        arrays[name][...] = data


def _create(
    g: zarr.Group, name: str, shape: tuple[int, ...], dtype: np.dtype[Any], chunks: tuple[int, ...]
) -> zarr.Array:
    is_str = dtype.kind == "U"
    return g.create_array(
        name,
        shape=shape,
        dtype=str if is_str else dtype,
        chunks=tuple(max(c, 1) for c in chunks),
        compressors=None if is_str else _COMPRESSOR,
        dimension_names=fmt.DIMS[name],
        fill_value="" if is_str else 0,
    )
