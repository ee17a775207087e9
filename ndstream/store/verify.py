"""Check a whole store against what its writer wrote: ``ndstream verify STORE``.

Every committed snapshot is checked file by file against its manifest (presence, size and
CRC-32C; see :mod:`ndstream.store.integrity`), and the store folder's links against the
checkpoint they lead to. The report says whether the last checkpoint is intact, and if not,
which earlier one a reader or a resumed ingest falls back to.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import StoreError
from . import format as fmt
from . import snapshots
from .integrity import check_contents

__all__ = ["SnapshotReport", "StoreReport", "verify"]


@dataclass(frozen=True)
class SnapshotReport:
    """One checkpoint's state.

    Attributes
    ----------
    folder
        The snapshot folder.
    current
        Whether ``.current`` names it (it is the last committed checkpoint).
    samples_done
        Samples it counts, if its metadata can be read.
    problems
        What does not match the manifest (empty: intact).
    """

    folder: Path
    current: bool
    samples_done: int | None
    problems: tuple[str, ...]

    @property
    def intact(self) -> bool:
        """Whether every file is what the writer wrote."""
        return not self.problems


@dataclass(frozen=True)
class StoreReport:
    """The result of :func:`verify`.

    Attributes
    ----------
    path
        The store folder.
    snapshots
        Every checkpoint, newest first.
    problems
        Damage outside the checkpoints: a missing ``.current`` link, or top-level links
        that do not lead into the current checkpoint (``xarray.open_zarr(path)`` follows
        them).
    """

    path: Path
    snapshots: tuple[SnapshotReport, ...]
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """Whether the last checkpoint, and the links to it, are intact."""
        current = [s for s in self.snapshots if s.current]
        return not self.problems and bool(current) and current[0].intact

    @property
    def fallback(self) -> SnapshotReport | None:
        """The newest intact checkpoint, when the last one is not."""
        if self.ok:
            return None
        return next((s for s in self.snapshots if s.intact), None)

    def __str__(self) -> str:
        lines = [f"store      {self.path}"]
        for s in self.snapshots:
            done = "?" if s.samples_done is None else f"{s.samples_done}"
            state = "intact" if s.intact else f"DAMAGED: {len(s.problems)} problem(s)"
            mark = " (current)" if s.current else ""
            lines.append(f"checkpoint {s.folder.name}{mark}: {done} samples, {state}")
            lines += [f"  - {p}" for p in s.problems[:20]]
            if len(s.problems) > 20:
                lines.append(f"  - ... and {len(s.problems) - 20} more")
        lines += [f"store: {p}" for p in self.problems]
        if self.ok:
            lines.append("verdict    intact")
        elif self.fallback is not None:
            lines.append(
                f"verdict    DAMAGED; the newest intact checkpoint is {self.fallback.folder.name} "
                f"({self.fallback.samples_done} samples): re-running the same ingest resumes "
                "from it, and readers fall back to it (where only bytes changed in place, "
                "those that open the store with deep=True)"
            )
        else:
            lines.append(
                "verdict    DAMAGED, with no intact checkpoint; re-run the ingest with --overwrite"
            )
        return "\n".join(lines)


def verify(path: str | os.PathLike[str]) -> StoreReport:
    """Check every checkpoint of the store at ``path``, reading all of its bytes.

    Parameters
    ----------
    path
        A store folder (or a snapshot copied out of one).

    Returns
    -------
    StoreReport
        What is intact and what is not; ``report.ok`` is whether the last checkpoint is.

    Raises
    ------
    StoreError
        If ``path`` is not a store folder at all.
    """
    root = Path(path)
    if not root.exists():
        raise StoreError(f"no store at {root}: the path does not exist")
    if not root.is_dir():
        raise StoreError(
            f"{root} is a file, not a store; point at the folder `ndstream ingest` wrote"
        )
    if not (root / snapshots.CURRENT).is_symlink() and not (root / snapshots.SNAPSHOTS).is_dir():
        if not (root / "zarr.json").is_file():
            raise StoreError(f"{root} is not an ndstream store (it has no zarr.json)")
        return StoreReport(root, (_report(root, current=True),), ())
    committed = snapshots.current(root) if (root / snapshots.CURRENT).is_symlink() else None
    folders = snapshots.snapshot_folders(root)
    if committed is not None and committed not in folders:
        folders.insert(0, committed)  # .current names something else: report it too
    reports = tuple(_report(f, current=f == committed) for f in folders)
    problems = []
    if committed is None:
        problems.append(f"the {snapshots.CURRENT} link is missing")
    elif not committed.is_dir():
        problems.append(f"{snapshots.CURRENT} names {committed.name}, which does not exist")
    else:
        for entry in sorted(p.name for p in committed.iterdir() if not p.name.startswith(".")):
            link = root / entry
            want = Path(snapshots.CURRENT) / entry
            if not link.is_symlink() or Path(os.readlink(link)) != want:
                problems.append(f"{entry} is not a link to {want}")
    return StoreReport(root, reports, tuple(problems))


def _report(folder: Path, *, current: bool) -> SnapshotReport:
    if not folder.is_dir():
        return SnapshotReport(folder, current, None, (f"{folder.name} does not exist",))
    problems = []
    try:
        attrs = json.loads((folder / "zarr.json").read_bytes())["attributes"][fmt.ROOT_ATTR]
        fmt.check_version(attrs)
        done: int | None = int(attrs["samples_done"])
    except StoreError as exc:
        problems.append(str(exc))
        done = None
    except (OSError, ValueError, KeyError, TypeError):
        done = None  # the contents check says what is wrong with the root document
    problems += check_contents(folder)
    return SnapshotReport(folder, current, done, tuple(problems))
