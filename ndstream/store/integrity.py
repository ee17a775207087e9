"""Integrity of a snapshot: the manifest of what it must hold, and the checks against it.

Every checkpoint writes ``ndstream-manifest.json`` beside its root ``zarr.json``: the size and
CRC-32C of every file it wrote, and a checksum of that list. Zarr reads a missing chunk as
its fill value, so without such a list a deleted chunk would read as zeros; and each chunk
also ends in its own CRC-32C (Zarr's ``crc32c`` codec), which zarr-python checks on every
read, so a flipped byte is an error and never a number.

Two depths of check:

* :func:`check_structure` (every open): the manifest is whole, every file it lists exists
  with its size, no array folder holds a chunk it does not list, and every ``zarr.json``
  document (the metadata, a few KB each) matches its checksum. One directory listing per
  array: milliseconds, whatever the store's size.
* :func:`check_contents` (resume, ``ndstream verify``): the above, and the CRC-32C of every
  file's bytes. It reads the whole snapshot.

Chunks of groups that saw no data are not written and not listed: an array folder's
unlisted chunk keys are empty by design, and read as the fill value, zero.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .zarr_v3 import checksum

__all__ = ["MANIFEST", "Manifest", "check_contents", "check_structure"]

MANIFEST = "ndstream-manifest.json"
_KIND, _VERSION = "ndstream-manifest", 1


@dataclass(frozen=True)
class Manifest:
    """The files of one snapshot: relative path -> (size in bytes, CRC-32C of the bytes)."""

    files: Mapping[str, tuple[int, int]]

    def to_bytes(self) -> bytes:
        """The manifest file's content, with the checksum of its list of files."""
        files = {name: list(entry) for name, entry in sorted(self.files.items())}
        doc = {"format": _KIND, "version": _VERSION, "files": files, "checksum": _sum(files)}
        return json.dumps(doc, indent=0).encode()

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        """The manifest of the snapshot in ``folder``.

        Raises
        ------
        ValueError
            If it is missing, unreadable, or its checksum does not match its content (the
            message says which).
        """
        try:
            doc = json.loads((folder / MANIFEST).read_bytes())
        except FileNotFoundError:
            raise ValueError(f"{MANIFEST} is missing") from None
        except (OSError, ValueError) as exc:
            raise ValueError(f"{MANIFEST} is unreadable ({exc})") from None
        if not isinstance(doc, dict) or doc.get("format") != _KIND:
            raise ValueError(f"{MANIFEST} is not an ndstream manifest")
        if doc.get("version") != _VERSION:
            raise ValueError(f"{MANIFEST} has version {doc.get('version')!r}, not {_VERSION}")
        files = doc.get("files")
        if not isinstance(files, dict) or doc.get("checksum") != _sum(files):
            raise ValueError(f"{MANIFEST} does not match its checksum")
        try:
            return cls({name: (int(size), int(crc)) for name, (size, crc) in files.items()})
        except (TypeError, ValueError):
            raise ValueError(f"{MANIFEST} lists malformed entries") from None


def _sum(files: Mapping[str, Any]) -> int:
    return checksum(json.dumps(files, sort_keys=True, separators=(",", ":")).encode())


def check_structure(folder: Path) -> list[str]:
    """Problems with the snapshot in ``folder`` short of reading its bytes (empty: none).

    Checks that the manifest is whole, that every file it lists exists with the listed
    size, that no folder holding listed chunks holds an unlisted chunk (which Zarr would
    read in place of the fill value), and the checksums of the ``zarr.json`` documents,
    which every reader reads whole.
    """
    try:
        manifest = Manifest.read(folder)
    except ValueError as exc:
        return [str(exc)]
    by_folder: dict[str, dict[str, int]] = {}
    for name, (size, _) in manifest.files.items():
        parent, _, base = name.rpartition("/")
        by_folder.setdefault(parent, {})[base] = size
    problems = []
    for parent, listed in sorted(by_folder.items()):
        try:
            with os.scandir(folder / parent if parent else folder) as entries:
                present = {e.name: e.stat().st_size for e in entries if e.is_file()}
        except OSError:
            present = {}
        for base, size in sorted(listed.items()):
            name = f"{parent}/{base}" if parent else base
            if base not in present:
                problems.append(f"{name} is missing")
            elif present[base] != size:
                problems.append(f"{name} has {present[base]} bytes where {size} were written")
        if parent:  # an array or group folder: nothing may be there that was not written
            extra = sorted(set(present) - set(listed))
            problems += [f"{parent}/{base} was not written by ndstream" for base in extra]
    if problems:
        return problems
    documents = {n: e for n, e in manifest.files.items() if n.rpartition("/")[2] == "zarr.json"}
    return _checksums(folder, documents)


def _checksums(folder: Path, files: Mapping[str, tuple[int, int]]) -> list[str]:
    problems = []
    for name, (_, crc) in sorted(files.items()):
        try:
            data = (folder / name).read_bytes()
        except OSError as exc:
            problems.append(f"{name} is unreadable ({exc.strerror or exc})")
            continue
        if checksum(data) != crc:
            problems.append(f"{name} does not match its checksum (its bytes changed)")
    return problems


def check_contents(folder: Path) -> list[str]:
    """:func:`check_structure`, then the CRC-32C of every listed file's bytes."""
    problems = check_structure(folder)
    if problems:
        return problems
    return _checksums(folder, Manifest.read(folder).files)
