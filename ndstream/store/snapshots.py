"""Atomic checkpoints: a store folder whose content flips from one snapshot to the next.

Layout of a store at ``run.zarr``::

    run.zarr/
    ├── zarr.json -> .current/zarr.json      one link per top-level entry of the Zarr store
    ├── conv1     -> .current/conv1
    ├── .current  -> .snapshots/000012       the last committed checkpoint
    ├── .lock                                held (flock) by the ingest writing the store
    └── .snapshots/
        ├── 000011/                          the previous checkpoint, kept for slow readers
        └── 000012/                          a complete Zarr v3 store

A checkpoint is written in full into a new folder under ``.snapshots``, flushed to disk, and
committed by one ``rename(2)`` of a new ``.current`` link over the old one: POSIX makes that
replacement atomic, so whenever the process dies, ``.current`` names either the previous
snapshot or the new one, and every path through the top-level links resolves into one whole
snapshot. Readers that must see one checkpoint across many reads (:class:`ndstream.Store`)
resolve ``.current`` once and read that snapshot's folder directly. Superseded snapshots are
renamed away before they are deleted, so such a reader can tell that its snapshot is gone
instead of reading missing chunks as zeros.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import time
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO

from ..errors import StoreError

__all__ = [
    "StoreLock",
    "commit",
    "current",
    "never_committed",
    "new_snapshot",
    "remove_unfinished",
    "sync_tree",
]

CURRENT = ".current"
SNAPSHOTS = ".snapshots"
LOCK = ".lock"
KEEP = 3  # the current snapshot and two before it, for readers still on them...
GRACE_SECONDS = 10.0  # ...and any superseded less than this long ago
_SEQ_DIGITS = 6
# fsync waits on the disk with the GIL released, so flushes on several threads overlap: a
# checkpoint has hundreds of files, and flushing them one by one took a tenth of its write time.
_SYNC_THREADS = 8


def current(path: Path) -> Path:
    """The folder holding the last committed checkpoint of the store at ``path``.

    A store written before checkpoints existed (a plain Zarr folder) is its own snapshot.
    """
    link = path / CURRENT
    try:
        target = os.readlink(link)
    except FileNotFoundError:
        return path
    except OSError as exc:
        if exc.errno == errno.EINVAL:  # not a link: a plain folder
            return path
        raise
    return path / target


def never_committed(path: Path) -> bool:
    """Whether ``path`` holds nothing but what an ingest that died before its first commit
    leaves: the lock, and an empty snapshot folder (see :func:`remove_unfinished`)."""
    entries = {p.name for p in path.iterdir()}
    if not entries <= {LOCK, SNAPSHOTS}:
        return False
    return not (path / SNAPSHOTS).is_dir() or not any((path / SNAPSHOTS).iterdir())


def new_snapshot(path: Path) -> Path:
    """A new, empty folder to write the next checkpoint of ``path`` into (see :func:`commit`)."""
    folder = path / SNAPSHOTS
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"tmp-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    return tmp


def commit(path: Path, snapshot: Path, entries: Iterable[str], *, final: bool = False) -> Path:
    """Make ``snapshot`` (from :func:`new_snapshot`, fully written) the store's checkpoint.

    Parameters
    ----------
    path
        The store folder.
    snapshot
        The written folder; it is renamed to the next sequence number.
    entries
        The top-level names of the Zarr store (``zarr.json`` and one per layer); each gets a
        link through ``.current``, and links of names no longer present are removed.

    Returns
    -------
    Path
        The committed snapshot folder.
    """
    entries = list(entries)
    if (path / "zarr.json").is_file() and not (path / "zarr.json").is_symlink():
        _clear_plain_store(path)
    sync_tree(snapshot)
    committed = snapshot.with_name(f"{_last_sequence(path) + 1:0{_SEQ_DIGITS}d}")
    os.rename(snapshot, committed)
    _fsync_dir(committed.parent)
    for name in entries:
        link = path / name
        if not link.is_symlink():
            if link.exists():
                shutil.rmtree(link) if link.is_dir() else link.unlink()
            link.symlink_to(Path(CURRENT) / name)
    flip = path / f".current.tmp-{uuid.uuid4().hex[:12]}"
    flip.symlink_to(Path(SNAPSHOTS) / committed.name)
    os.replace(flip, path / CURRENT)  # the commit point
    _fsync_dir(path)
    _remove_stale_links(path, set(entries))
    _prune(path, keep=2, grace=0.0) if final else _prune(path)
    return committed


def sync_tree(folder: Path) -> None:
    """Flush every file and folder under ``folder`` to disk, so a commit survives power loss."""
    files: list[str] = []
    folders: list[str] = []
    for dirpath, _, names in os.walk(folder):
        files.extend(os.path.join(dirpath, name) for name in names)
        folders.append(dirpath)
    with ThreadPoolExecutor(_SYNC_THREADS, thread_name_prefix="ndstream-fsync") as pool:
        list(pool.map(_fsync_file, files))  # list(): re-raises the first error
    for dirpath in folders:  # a folder after its files, so its entries point at flushed data
        _fsync_dir(Path(dirpath))


def _fsync_file(file: str) -> None:
    fd = os.open(file, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sequences(path: Path) -> list[int]:
    folder = path / SNAPSHOTS
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


def _last_sequence(path: Path) -> int:
    seqs = _sequences(path)
    return seqs[-1] if seqs else 0


def _remove_stale_links(path: Path, entries: set[str]) -> None:
    for p in path.iterdir():
        if p.is_symlink() and not p.name.startswith(".") and p.name not in entries:
            p.unlink()


def _prune(path: Path, keep: int = KEEP, grace: float = GRACE_SECONDS) -> None:
    """Delete old snapshots that no reader should still be on.

    A snapshot goes once ``keep`` newer ones exist and the one that superseded it was
    committed over ``grace`` seconds ago: a reader that opened it has had that long.
    """
    folder = path / SNAPSHOTS
    seqs = _sequences(path)
    now = time.time()
    old_enough = seqs[: len(seqs) - keep] if len(seqs) > keep else []
    for seq, successor in zip(old_enough, seqs[1:], strict=False):
        old = folder / f"{seq:0{_SEQ_DIGITS}d}"
        try:
            superseded = (folder / f"{successor:0{_SEQ_DIGITS}d}" / "zarr.json").stat().st_mtime
        except FileNotFoundError:
            superseded = now
        if now - superseded < grace:
            break  # later ones were superseded later still
        # Renamed first, so a reader on it sees it vanish at once, not file by file.
        os.rename(old, folder / f"trash-{uuid.uuid4().hex[:12]}")
    for p in folder.iterdir():
        if p.name.startswith("trash-"):
            shutil.rmtree(p, ignore_errors=True)


def remove_unfinished(path: Path) -> None:
    """Delete snapshot folders that a writer started but never committed (it died)."""
    folder = path / SNAPSHOTS
    if folder.is_dir():
        for p in folder.iterdir():
            if p.name.startswith(("tmp-", "trash-")):
                shutil.rmtree(p, ignore_errors=True)
    for p in path.glob(".current.tmp-*"):
        p.unlink(missing_ok=True)


def _clear_plain_store(path: Path) -> None:
    """Remove a plain (pre-checkpoint) Zarr store's entries, keeping ndstream's own."""
    for p in path.iterdir():
        if p.name in (SNAPSHOTS, CURRENT, LOCK):
            continue
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()


class StoreLock:
    """An exclusive lock on a store folder for the length of one ingest.

    ``flock`` locks die with their process, even on ``kill -9``, so a crashed ingest never
    leaves a store locked; a second ingest into the same store fails at once.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] | None = None

    def __enter__(self) -> StoreLock:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            file = open(self.path / LOCK, "a+")  # held until __exit__
        except OSError as exc:
            raise StoreError(
                f"cannot create the store at {self.path} ({exc}); choose a writable store path"
            ) from exc
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.close()
            raise StoreError(
                f"another ingest is writing to {self.path}; wait for it to finish, or write "
                "to another --store path"
            ) from None
        self._file = file
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
