"""One writer, always: real ingest processes racing for one store, at every phase of a run.

A first ingest, a real process, is frozen (SIGSTOP) before its first checkpoint, in the
middle of one, and after its last; other writers (the same run, another run, ``--overwrite``)
start meanwhile, in this process. They are refused and touch nothing, not even the lock file;
the first run then finishes with the store an undisturbed run writes. Damage beside a running ingest is tested
here too: readers fall back while the writer goes on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from runs import NO_CHECKPOINTS, assert_identical, cli, ingest_cli, write_config

import ndstream
from ndstream.errors import StoreDamageWarning
from ndstream.store import snapshots
from ndstream.store.integrity import check_contents

pytestmark = pytest.mark.slow

# 1,797 digits in steps of 32, so that a run lasts long enough to be caught at each phase.
SLOW = {"loader": {"batch_size": 32}, "instances": {"per_class": 1}}
# A checkpoint every fourth step: 14 in a run, each long enough to be caught half written.
EVERY_4 = {"every_steps": 4, "every_seconds": None}


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("writers")


@pytest.fixture(scope="module")
def undisturbed(folder: Path, env: dict[str, str]) -> Path:
    """The store of the run under test, written with nothing else going on (in this process,
    committed at the end only: its arrays are those of any checkpointing)."""
    config = write_config(folder, "undisturbed.yaml", **SLOW, checkpoint=NO_CHECKPOINTS)
    store = folder / "undisturbed.zarr"
    code, _, err = ingest_cli(config, store)
    assert code == 0, err
    return store


def _others(config: Path, other: Path, store: Path) -> None:
    """A second, a third and a fourth writer (the same run, another run, ``--overwrite``)
    must be refused, touching nothing. They run in this process, one after the other: the
    first writer is a real process, and its lock is what refuses them."""
    lock = store / snapshots.LOCK
    before = os.stat(lock).st_ino, sorted(os.listdir(store)), _snapshots(store)
    for args in ((config, store), (other, store), (config, store, "--overwrite")):
        code, _, err = ingest_cli(*args)
        assert code == 2, err
        assert "another ingest is writing" in err and "Traceback" not in err, err
    after = os.stat(lock).st_ino, sorted(os.listdir(store)), _snapshots(store)
    assert after == before


def _snapshots(store: Path) -> list[str]:
    folder = store / snapshots.SNAPSHOTS
    return sorted(os.listdir(folder)) if folder.is_dir() else []


def _freeze_when(proc: subprocess.Popen, ready, timeout: float = 120) -> None:
    """SIGSTOP ``proc`` as soon as ``ready()``; fail if it exits first."""
    end = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, "the first writer finished before the phase under test"
        assert time.monotonic() < end
        time.sleep(0.001)
    proc.send_signal(signal.SIGSTOP)


def _finish(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGCONT)
    assert proc.wait(timeout=300) == 0


def test_writers_before_the_first_checkpoint_are_refused(
    folder: Path, env: dict[str, str], undisturbed: Path, tmp_path: Path
) -> None:
    config = write_config(tmp_path, **SLOW, checkpoint={"every_steps": None, "every_seconds": 3600})
    other = write_config(tmp_path, "other.yaml", **SLOW, reduction="mean")
    store = tmp_path / "run.zarr"
    first = subprocess.Popen(cli(config, store), env=env)
    try:
        _freeze_when(first, lambda: snapshots.StoreLock.held(store))
        assert not (store / snapshots.CURRENT).exists()  # no checkpoint yet
        _others(config, other, store)
    finally:
        _finish(first)
    assert_identical(store, undisturbed)


def test_writers_during_a_checkpoint_are_refused(
    env: dict[str, str], undisturbed: Path, tmp_path: Path
) -> None:
    config = write_config(tmp_path, **SLOW, checkpoint=EVERY_4)
    other = write_config(tmp_path, "other.yaml", **SLOW, reduction="mean")
    store = tmp_path / "run.zarr"
    first = subprocess.Popen(cli(config, store), env=env)
    try:
        # Frozen with a checkpoint half written (its folder there, not yet committed).
        _freeze_when(first, lambda: any(n.startswith("tmp-") for n in _snapshots(store)))
        assert any(n.startswith("tmp-") for n in _snapshots(store))
        _others(config, other, store)
    finally:
        _finish(first)
    assert_identical(store, undisturbed)


def test_writers_after_the_last_checkpoint_do_not_change_the_store(
    env: dict[str, str], undisturbed: Path, tmp_path: Path
) -> None:
    # Only the final commit: the phase under test comes after it.
    config = write_config(tmp_path, **SLOW, checkpoint=NO_CHECKPOINTS)
    other = write_config(tmp_path, "other.yaml", **SLOW, reduction="mean")
    store = tmp_path / "run.zarr"
    first = subprocess.Popen(cli(config, store), env=env)

    def complete() -> bool:
        try:
            root = json.loads((store / "zarr.json").read_bytes())
        except (OSError, ValueError):
            return False
        return bool(root["attributes"]["ndstream"]["complete"])

    end = time.monotonic() + 300
    while not complete():  # the first run's final commit ...
        assert time.monotonic() < end
        time.sleep(0.001)
    first.send_signal(signal.SIGSTOP)  # ... and, if it has not exited yet, held there
    try:
        if first.poll() is None and snapshots.StoreLock.held(store):
            _others(config, other, store)
    finally:
        _finish(first)
    committed = snapshots.current(store)
    # The same run again finds nothing to do; another run is refused; neither writes.
    code, _, err = ingest_cli(config, store)
    assert code == 0, err
    code, _, err = ingest_cli(other, store)
    assert code == 2 and "different run" in err
    assert snapshots.current(store) == committed
    assert_identical(store, undisturbed)


def test_damage_beside_a_running_ingest(
    env: dict[str, str], undisturbed: Path, tmp_path: Path
) -> None:
    """Readers of a store whose last checkpoint is damaged while an ingest writes it fall
    back; the ingest goes on unharmed; killed, it resumes from an intact checkpoint."""
    config = write_config(tmp_path, **SLOW, checkpoint=EVERY_4)
    store = tmp_path / "run.zarr"
    first = subprocess.Popen(cli(config, store), env=env)
    try:
        _freeze_when(first, lambda: len(snapshots.snapshot_folders(store)) >= 3)
        current = snapshots.current(store)
        (current / "fc1" / "count" / "c.0").unlink()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            reader = ndstream.open_store(store)
        # The newest intact checkpoint (frozen mid-commit, the writer may have one newer
        # than .current's ready): whole, and read as it is.
        assert reader.snapshot != current and not check_contents(reader.snapshot)
        assert any(issubclass(w.category, StoreDamageWarning) for w in caught)
        assert reader.count("fc1") == reader.meta.samples_done
        alone = ndstream.open_store(reader.snapshot)
        assert reader.group_counts("fc1") == alone.group_counts("fc1")
        np.testing.assert_array_equal(reader.quantile("fc1", 0.5), alone.quantile("fc1", 0.5))
    finally:
        _finish(first)
    assert_identical(store, undisturbed)  # the writer never reads what it wrote

    # Damage, then a kill: the resume starts from the newest intact checkpoint.
    killed = tmp_path / "killed.zarr"
    second = subprocess.Popen(cli(config, killed), env=env)
    _freeze_when(second, lambda: len(snapshots.snapshot_folders(killed)) >= 3)
    second.send_signal(signal.SIGKILL)
    second.wait(timeout=60)
    current = snapshots.current(killed)
    data = bytearray((current / "fc2" / "min" / "c.0.0").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (current / "fc2" / "min" / "c.0.0").write_bytes(bytes(data))
    code, _, err = ingest_cli(config, killed)  # the resume, in this process
    assert code == 0, err
    assert f"checkpoint {current.name} is damaged" in err
    assert "resum" in err or "goes on from sample" in err
    assert_identical(killed, undisturbed)
