"""Fault injection: damaged stores give a clear error or a correct fallback, never a number.

For every array of a layer and of ``instances``, a chunk of the last checkpoint is deleted,
truncated or has bytes flipped; ``.current`` is deleted or pointed elsewhere. Then ``info``,
``open_store(...).quantile``, the dashboard (what ``serve`` runs) and a resume must each
either fail with a clear :class:`~ndstream.errors.StoreError` or read an intact checkpoint
and give exactly that checkpoint's numbers; a resume must finish identical to an
uninterrupted run. ``test_writers.py`` does the same beside a running ingest.
"""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import digits_loader
from runs import arrays, assert_identical

import ndstream
from ndstream import cli
from ndstream.errors import StoreDamageWarning, StoreError
from ndstream.store import Store, snapshots
from ndstream.store.instances import InstanceSpec
from ndstream.store.integrity import MANIFEST, check_contents

LAYERS = ["fc1", "fc2"]
DAMAGED_LAYER = "fc1"
QS = [0.1, 0.5, 0.9]


def run(model, dataset, path: Path, **changes):
    """The run under test: 640 samples in steps of 64, a checkpoint every three steps (the one before the last counts 576)."""
    kwargs = dict(
        layers=LAYERS, group_by=["label", "predicted"], progress=False, limit=640,
        checkpoint_every=3, checkpoint_seconds=None, instances=InstanceSpec(per_class=1),
    )  # fmt: skip
    kwargs.update(changes)
    return ndstream.ingest(model, digits_loader(dataset), path, **kwargs)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, digits_model, digits_dataset) -> Path:
    """A finished store with two checkpoints kept (the last, and the one before)."""
    path = tmp_path_factory.mktemp("pristine") / "run.zarr"
    run(digits_model, digits_dataset, path)
    assert len(snapshots.snapshot_folders(path)) == 2
    return path


@pytest.fixture(scope="module")
def pristine_arrays(pristine: Path) -> dict[str, np.ndarray]:
    """Every array of the pristine store, read once (what each resume must end with)."""
    return arrays(pristine)


@pytest.fixture(scope="module")
def truth(pristine: Path) -> dict[str, dict[str, object]]:
    """What each checkpoint of the pristine store reads as, by snapshot folder name."""
    out = {}
    for folder in snapshots.snapshot_folders(pristine):
        store = Store(pristine, pinned=snapshots.Pinned(folder, folder))
        out[folder.name] = {
            "quantile": store.quantile(DAMAGED_LAYER, QS),
            "group quantile": store.quantile(DAMAGED_LAYER, QS, group=store.groups[0]),
            "samples": store.meta.samples_done,
            "instances": store.instances(),
        }
    return out


def _files(pristine: Path) -> list[str]:
    """Every chunk file of the damaged layer and of the instances, in the last checkpoint."""
    current = snapshots.current(pristine)
    out = []
    for node in (DAMAGED_LAYER, "instances"):
        for array in sorted((current / node).iterdir()):
            if array.is_dir():
                chunks = sorted(p.name for p in array.iterdir() if p.name.startswith("c"))
                assert chunks, array
                out.append(f"{node}/{array.name}/{chunks[0]}")
    return out


def _delete(file: Path) -> None:
    file.unlink()


def _truncate(file: Path) -> None:
    with open(file, "r+b") as f:
        f.truncate(max(1, file.stat().st_size // 2))


def _flip(file: Path) -> None:
    data = bytearray(file.read_bytes())
    for i in (0, len(data) // 2, len(data) - 5):  # header, body and (for small chunks) data
        data[i] ^= 0x5A
    file.write_bytes(bytes(data))


DAMAGE: dict[str, Callable[[Path], None]] = {
    "delete": _delete,
    "truncate": _truncate,
    "flip": _flip,
}


def _damaged_copy(pristine: Path, tmp_path: Path) -> Path:
    path = tmp_path / "run.zarr"
    shutil.copytree(pristine, path, symlinks=True)
    return path


def _check_readers(path: Path, truth: dict[str, dict[str, object]]) -> None:
    """info, quantile and the dashboard: a clear error, or exactly an intact checkpoint."""
    # The API: quantiles of the damaged layer, and the instances.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StoreDamageWarning)
        try:
            store = ndstream.open_store(path)
            read = truth[store.snapshot.name]
            np.testing.assert_array_equal(store.quantile(DAMAGED_LAYER, QS), read["quantile"])
            np.testing.assert_array_equal(
                store.quantile(DAMAGED_LAYER, QS, group=store.groups[0]), read["group quantile"]
            )
            assert store.meta.samples_done == read["samples"]
            table, want = store.instances(), read["instances"]
            for field in ("index", "label", "predicted", "thumbnail"):
                np.testing.assert_array_equal(getattr(table, field), getattr(want, field))
            for layer in LAYERS:
                np.testing.assert_array_equal(table.values[layer], want.values[layer])
        except StoreError as exc:
            assert "verify" in str(exc) or "damaged" in str(exc), exc
    # `ndstream info`: exit 0 with the numbers of an intact checkpoint, or 2 and a message.
    code, out, err = _cli("info", path)
    if code == 0:
        shown = int(out.split("progress")[1].split("/")[0])
        assert shown in {t["samples"] for t in truth.values()}
    else:
        assert code == 2 and "error:" in err and "Traceback" not in err, err
    # The dashboard `serve` runs: built, or an error page; never an exception.
    from ndstream.views.dashboard import dashboard

    view = dashboard(path)
    assert view is not None


def _cli(*args: object) -> tuple[int, str, str]:
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


@pytest.mark.slow
@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_chunk_of_every_array_is_an_error_or_a_correct_fallback(
    damage: str,
    pristine: Path,
    pristine_arrays: dict[str, np.ndarray],
    truth,
    tmp_path: Path,
    digits_model,
    digits_dataset,
) -> None:
    files = _files(pristine)
    assert len(files) >= 22  # 16 arrays of a layer, 7 of the instances
    for i, name in enumerate(files):
        path = _damaged_copy(pristine, tmp_path / f"{i}")
        DAMAGE[damage](snapshots.current(path) / name)
        assert check_contents(snapshots.current(path)), f"{damage} {name} went unnoticed"
        report = ndstream.verify(path)
        assert not report.ok and report.fallback is not None
        assert report.fallback.folder.name == snapshots.snapshot_folders(pristine)[1].name
        _check_readers(path, truth)
        # A resume builds on the intact checkpoint and finishes as if nothing had happened.
        resumed = run(digits_model, digits_dataset, path)
        assert resumed.complete and resumed.snapshot.name not in truth
        assert_identical(path, pristine_arrays)


@pytest.mark.parametrize(
    "change",
    ["delete", "missing target", "unfinished target", "older snapshot", "manifest", "root"],
)
def test_damaged_current_checkpoint_falls_back_and_resume_is_identical(
    change: str,
    pristine: Path,
    pristine_arrays: dict[str, np.ndarray],
    truth,
    tmp_path: Path,
    digits_model,
    digits_dataset,
) -> None:
    path = _damaged_copy(pristine, tmp_path)
    current, older = snapshots.snapshot_folders(path)
    link = path / snapshots.CURRENT
    if change == "delete":
        link.unlink()
    elif change == "missing target":
        link.unlink()
        link.symlink_to(".snapshots/000099")
    elif change == "unfinished target":  # a folder a writer never finished: no manifest
        tmp = path / snapshots.SNAPSHOTS / "000099"
        shutil.copytree(current, tmp)
        (tmp / MANIFEST).unlink()
        link.unlink()
        link.symlink_to(".snapshots/000099")
    elif change == "older snapshot":  # a valid checkpoint, only older: read as it is
        link.unlink()
        link.symlink_to(f".snapshots/{older.name}")
    elif change == "manifest":
        _flip(current / MANIFEST)
    else:
        _flip(current / "zarr.json")
    _check_readers(path, truth)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        store = ndstream.open_store(path)
    # With no (whole) folder named, the newest whole one is read; else the one before.
    named_missing = change in ("delete", "missing target", "unfinished target")
    expected = current if named_missing else older
    assert store.snapshot.name == expected.name
    np.testing.assert_array_equal(
        store.quantile(DAMAGED_LAYER, QS), truth[expected.name]["quantile"]
    )
    code, out, _ = _cli("info", path)
    assert code == 0
    if change != "older snapshot":
        assert any(issubclass(w.category, StoreDamageWarning) for w in caught)
        assert store.pinned.fallback and store.fallback_note()
        # info says so, and which checkpoint it describes instead.
        assert "DAMAGED" in out and f"reading checkpoint {expected.name}" in out
    else:
        assert "DAMAGED" not in out
    resumed = run(digits_model, digits_dataset, path)
    assert resumed.complete
    assert_identical(path, pristine_arrays)


def test_no_intact_checkpoint_is_a_clear_error(pristine: Path, tmp_path: Path) -> None:
    path = _damaged_copy(pristine, tmp_path)
    for folder in snapshots.snapshot_folders(path):
        _delete(folder / DAMAGED_LAYER / "count" / "c.0")
    with pytest.raises(StoreError, match=r"no intact checkpoint.*ndstream verify"):
        ndstream.open_store(path)
    code, _, err = _cli("info", path)
    assert code == 2 and "no intact checkpoint" in err
    code, out, _ = _cli("verify", path)
    assert code == 1 and "with no intact checkpoint" in out
    assert out.count("is missing") == 2


def test_verify_reads_every_byte_and_says_intact(pristine: Path) -> None:
    code, out, _ = _cli("verify", pristine)
    assert code == 0 and out.rstrip().endswith("intact")
    report = ndstream.verify(pristine)
    assert report.ok and all(s.intact for s in report.snapshots)
    assert [s.current for s in report.snapshots] == [True, False]


def test_a_chunk_that_was_not_written_is_damage(pristine: Path, tmp_path: Path) -> None:
    """A chunk that is absent on purpose (a group without data) reads as zero; a file put
    in its place is not what the writer wrote."""
    path = _damaged_copy(pristine, tmp_path)
    counts = snapshots.current(path) / DAMAGED_LAYER / "counts"
    (counts / "c.9.9.9").write_bytes((counts / "c.0.0.0").read_bytes())
    report = ndstream.verify(path)
    assert not report.ok
    assert any("c.9.9.9 was not written by ndstream" in p for p in report.snapshots[0].problems)


def test_legacy_store_is_refused_with_rerun_advice(pristine: Path, tmp_path: Path) -> None:
    path = _damaged_copy(pristine, tmp_path)
    for folder in snapshots.snapshot_folders(path):
        root = folder / "zarr.json"
        doc = json.loads(root.read_text())
        assert doc["attributes"]["ndstream"]["format_version"] == 8
        # version 7: the previous format, without atoms
        doc["attributes"]["ndstream"]["format_version"] = 7
        root.write_text(json.dumps(doc))
    with pytest.raises(StoreError, match=r"version 7 is not supported.*re-run the ingest"):
        ndstream.open_store(path)
    for folder in snapshots.snapshot_folders(path):
        root = folder / "zarr.json"
        doc = json.loads(root.read_text())
        doc["attributes"]["ndstream"]["format_version"] = "8"
        root.write_text(json.dumps(doc))
    with pytest.raises(StoreError, match="'8', not a version number"):
        ndstream.open_store(path)


def test_a_file_is_not_a_store(tmp_path: Path) -> None:
    file = tmp_path / "a.zarr"
    file.write_text("x")
    for command in ("info", "verify"):
        code, _, err = _cli(command, file)
        assert code == 2 and "is a file, not a store" in err, err
    with pytest.raises(StoreError, match="is a file, not a store"):
        ndstream.open_store(file)


def test_bytes_changed_in_place_are_named_and_a_deep_open_falls_back(
    pristine: Path, truth: dict[str, dict[str, object]], tmp_path: Path
) -> None:
    """A chunk whose bytes changed but not its size passes the check at open; its read is a
    clear error that says how to read the intact checkpoint, and ``deep=True`` does."""
    path = _damaged_copy(pristine, tmp_path)
    current = snapshots.current(path)
    _flip(current / DAMAGED_LAYER / "counts" / "c.0.0.0")
    store = ndstream.open_store(path)
    assert store.snapshot.name == current.name  # sizes match: not seen at open
    with pytest.raises(StoreError, match=r"damaged.*checksum.*deep=True") as caught:
        store.quantile(DAMAGED_LAYER, QS, group=store.groups[0])
    assert "b'" not in str(caught.value)  # no raw bytes in the message
    with pytest.warns(StoreDamageWarning, match="reading checkpoint"):
        deep = ndstream.open_store(path, deep=True)
    assert deep.snapshot.name != current.name
    read = truth[deep.snapshot.name]
    np.testing.assert_array_equal(
        deep.quantile(DAMAGED_LAYER, QS, group=deep.groups[0]), read["group quantile"]
    )
    code, out, _ = _cli("verify", path)
    assert code == 1 and "deep=True" in out


def test_compare_says_a_fallback_in_one_line(pristine: Path, tmp_path: Path) -> None:
    """``ndstream compare`` on a store read from an earlier checkpoint says so in its output,
    as ``info`` does, and raises no Python warning (which would print source lines)."""
    path = _damaged_copy(pristine, tmp_path)
    _truncate(snapshots.current(path) / DAMAGED_LAYER / "counts" / "c.0.0.0")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        code, out, err = _cli(
            "compare", pristine, path, "--layers", DAMAGED_LAYER, "--csv", tmp_path / "c.csv"
        )
    assert code == 0, err
    assert [w for w in seen if issubclass(w.category, StoreDamageWarning)] == []
    damaged = [line for line in out.splitlines() if line.startswith("DAMAGED")]
    assert (
        len(damaged) == 1
        and damaged[0].startswith("DAMAGED B")
        and "reading checkpoint" in damaged[0]
    )
