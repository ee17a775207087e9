"""Write finalized sketches to a Zarr v3 store.

A store is written into a fresh sibling folder and renamed into place, so the path holds
either the previous store or the new one, never a half-written mix.
"""

from __future__ import annotations

import os
import shutil
import uuid
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from ..errors import StoreError
from ..sketch import Summary
from . import format as fmt

__all__ = ["write_store"]

# Bit-shuffled zstd: most counters are small or zero, so their high bits compress to nothing.
_COMPRESSOR = BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle")


def write_store(
    path: str | os.PathLike[str],
    meta: fmt.StoreMeta,
    summaries: Mapping[str, Summary],
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
        Finalized sketch of each layer.
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


def _write_layer(root: zarr.Group, layer: fmt.LayerMeta, s: Summary, meta: fmt.StoreMeta) -> None:
    g = root.create_group(layer.name)
    g.attrs[fmt.ROOT_ATTR] = {"layer": layer.to_dict()}
    n, n_groups, n_bins = s.counts.shape
    neuron_chunk = min(n, fmt.NEURON_CHUNK)
    arrays: dict[str, tuple[np.ndarray, tuple[int, ...]]] = {
        "counts": (s.counts, (neuron_chunk, 1, max(n_bins, 1))),
        "min": (s.mins, (neuron_chunk, n_groups)),
        "max": (s.maxs, (neuron_chunk, n_groups)),
        "nan_count": (s.nan, (neuron_chunk, n_groups)),
        "posinf_count": (s.posinf, (neuron_chunk, n_groups)),
        "neginf_count": (s.neginf, (neuron_chunk, n_groups)),
        "count": (s.totals, (n_groups,)),
        "neuron": (np.arange(n, dtype=np.int64), (n,)),
        "group": (np.array(meta.groups, dtype=str), (n_groups,)),
        "grouping": (np.array(meta.groupings, dtype=str), (n_groups,)),
        "bin": (np.arange(n_bins, dtype=np.int64), (max(n_bins, 1),)),
        "bin_lower": (s.lower, (max(n_bins, 1),)),
        "bin_upper": (s.upper, (max(n_bins, 1),)),
    }
    for name, (data, chunks) in arrays.items():
        is_str = data.dtype.kind == "U"
        a = g.create_array(
            name,
            shape=data.shape,
            dtype=str if is_str else data.dtype,
            chunks=chunks,
            compressors=None if is_str else _COMPRESSOR,
            dimension_names=fmt.DIMS[name],
            fill_value="" if is_str else 0,
        )
        if name == "counts":
            # xarray reads this CF attribute to attach the extra coordinates.
            a.attrs["coordinates"] = "grouping bin_lower bin_upper"
        if data.size:
            a[...] = data
