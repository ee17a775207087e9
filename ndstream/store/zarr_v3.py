"""Plain Zarr v3 nodes as documents and encoded chunks, for the writer to put in files.

A checkpoint holds about fifteen arrays per layer. zarr-python spends milliseconds on each
array it creates or writes (validation, its event loop, buffer wrappers), which for VGG16's
16 layers was over half of a checkpoint; the documents and chunks themselves are simple.
This module makes exactly what zarr-python 3 writes for the arrays of an ndstream store
(``tests/test_store.py`` checks both, byte for byte): numeric arrays with the ``bytes``
(little-endian) and ``blosc`` codecs, string arrays with ``vlen-utf8``, each followed by
the ``crc32c`` codec, regular chunks named ``c.i.j`` and padded with the fill value at the
edges, and inline consolidated metadata in the group documents. Reading stays with
zarr-python and xarray.

Every chunk ends in the CRC-32C of its encoded bytes: Blosc/lz4 decodes flipped bytes
without complaint, so without a checksum a damaged chunk reads as wrong numbers. Zarr
readers check it on every read (zarr-python raises on a mismatch).
"""

from __future__ import annotations

import functools
import itertools
import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import google_crc32c
import numpy as np
from numcodecs import Blosc, VLenUTF8

__all__ = [
    "array_document",
    "checksum",
    "chunk_parts",
    "encode_chunk",
    "group_document",
    "to_json",
]

# Byte-shuffled lz4: most counters are small or zero, so their high bytes compress to nothing,
# at several GB/s; zstd with bit shuffle packs a quarter tighter but writes six times slower.
_CNAME, _CLEVEL = "lz4", 5
_BLOSC = Blosc(cname=_CNAME, clevel=_CLEVEL, shuffle=Blosc.SHUFFLE, blocksize=0)
_VLEN_UTF8 = VLenUTF8()
# Each kind's zero, as zarr-python writes it (strings: the empty string).
_FILL: dict[str, Any] = {"U": "", "T": "", "O": "", "b": False, "f": 0.0}


def array_document(
    shape: Sequence[int],
    dtype: np.dtype[Any],
    chunks: Sequence[int],
    dimension_names: Sequence[str],
    attributes: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``zarr.json`` document of an array; its fill value is zero (for strings ``""``).

    Parameters
    ----------
    shape, chunks
        Array and chunk shape (a chunk dimension of 0 counts as 1).
    dtype
        A numeric dtype, or a string dtype (numpy unicode or ``StringDType``, or object
        holding strings) for an array of strings.
    dimension_names
        One name per axis (xarray's dimensions).
    attributes
        The array's attributes.
    """
    is_str = _is_string(dtype)
    if is_str:
        codecs: list[dict[str, Any]] = [{"name": "vlen-utf8", "configuration": {}}]
    else:
        blosc = {
            "typesize": dtype.itemsize, "cname": _CNAME, "clevel": _CLEVEL,
            "shuffle": "shuffle", "blocksize": 0,
        }  # fmt: skip
        # One-byte types have no byte order, and zarr-python then writes none.
        endian = {"configuration": {"endian": "little"}} if dtype.itemsize > 1 else {}
        codecs = [{"name": "bytes", **endian}, {"name": "blosc", "configuration": blosc}]
    codecs.append({"name": "crc32c"})
    return {
        "shape": [int(s) for s in shape],
        "data_type": "string" if is_str else dtype.name,
        "chunk_grid": {
            "name": "regular",
            "configuration": {"chunk_shape": [max(int(c), 1) for c in chunks]},
        },
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "."}},
        "fill_value": _FILL.get(dtype.kind, 0),
        "codecs": codecs,
        "attributes": dict(attributes or {}),
        "dimension_names": list(dimension_names),
        "zarr_format": 3,
        "node_type": "array",
        "storage_transformers": [],
    }


def group_document(
    attributes: Mapping[str, Any], members: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, Any]:
    """The ``zarr.json`` document of a group, with ``members`` (path below the group to
    document) as its inline consolidated metadata; ``None`` for none.

    A member group's own document keeps its consolidated metadata; listed here it has an
    empty one, as zarr-python writes it.
    """
    doc: dict[str, Any] = {"attributes": dict(attributes), "zarr_format": 3}
    if members is not None:
        listed = {
            path: {**d, "consolidated_metadata": _consolidated({})}
            if d["node_type"] == "group"
            else d
            for path, d in sorted(members.items())
        }
        doc["consolidated_metadata"] = _consolidated(listed)
    doc["node_type"] = "group"
    return doc


def _is_string(dtype: np.dtype[Any]) -> bool:
    # "T" is numpy's StringDType, which zarr-python reads string arrays back as.
    return dtype.kind in "UTO"


def _consolidated(metadata: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "inline", "must_understand": False, "metadata": metadata}


def to_json(doc: Mapping[str, Any]) -> bytes:
    """A document as the bytes of its ``zarr.json``: indented, as zarr-python writes them,
    except a group's with inline consolidated metadata, which lists every node below it
    (1.8 MB at the root of a 54-layer store) and which Python's ``json`` indents only in
    pure Python, ten times slower than its C encoder writes it compact."""
    compact = json.dumps(doc, separators=(",", ":"))
    if "consolidated_metadata" in doc:
        return compact.encode()
    return _indented(compact)


# Each checkpoint writes the same array documents as the one before (the shapes change only
# as bins are added): indenting each anew was a sixth of a checkpoint of the digits demo.
@functools.lru_cache(maxsize=4096)
def _indented(compact: str) -> bytes:
    return json.dumps(json.loads(compact), indent=2).encode()


def chunk_parts(
    data: np.ndarray, chunks: Sequence[int], origin: Sequence[int] | None = None
) -> Iterator[tuple[str, np.ndarray]]:
    """The chunks of ``data`` as (key below the array, part of ``data``), to encode with
    :func:`encode_chunk`.

    ``data`` is the whole array, or, with ``origin``, a part of it that starts on chunk
    boundaries at ``origin`` and covers whole chunks or reaches the array's end. A string
    array is one chunk.
    """
    chunks = [max(int(c), 1) for c in chunks]
    origin = [0] * data.ndim if origin is None else [int(o) for o in origin]
    if any(o % c for o, c in zip(origin, chunks, strict=True)):
        raise ValueError(f"origin {origin} is not on the chunk grid {chunks}")
    if data.size == 0:
        return
    if _is_string(data.dtype) and any(s > c for s, c in zip(data.shape, chunks, strict=True)):
        raise ValueError("string arrays are written as one chunk")
    starts = [range(0, s, c) for s, c in zip(data.shape, chunks, strict=True)]
    for corner in itertools.product(*starts):
        part = data[tuple(slice(a, a + c) for a, c in zip(corner, chunks, strict=True))]
        index = ((o + a) // c for o, a, c in zip(origin, corner, chunks, strict=True))
        yield "c." + ".".join(map(str, index)), part


def encode_chunk(part: np.ndarray, chunks: Sequence[int]) -> bytes:
    """The bytes of a chunk file; a part smaller than ``chunks`` (at the array's edge) is
    padded with the fill value, as Zarr requires."""
    if _is_string(part.dtype):
        encoded = bytes(_VLEN_UTF8.encode(np.asarray(part, dtype=object)))
    else:
        shape = tuple(max(int(c), 1) for c in chunks)
        if part.shape != shape:
            padded = np.zeros(shape, dtype=part.dtype)
            padded[tuple(slice(0, s) for s in part.shape)] = part
            part = padded
        little = np.ascontiguousarray(part, dtype=part.dtype.newbyteorder("<"))
        encoded = bytes(_BLOSC.encode(little))
    return encoded + checksum(encoded).to_bytes(4, "little")


def checksum(data: bytes) -> int:
    """CRC-32C (Castagnoli) of ``data``: what Zarr's ``crc32c`` codec appends to a chunk."""
    return int(google_crc32c.value(data))
