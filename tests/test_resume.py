"""Checkpoints, resume and readers during writes, with real processes, signals and files.

The reference is always an uninterrupted run of the same config; "identical" means every
array of every layer (counts, min, max, non-finite counts, totals, bin edges, resolutions)
is equal bit for bit.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import copy_store
from runs import NO_CHECKPOINTS, arrays, assert_identical, cli, ingest_cli, write_config
from torch import nn

import ndstream
from ndstream.errors import DataError, StoreError
from ndstream.store import snapshots

# -- kill -9 at random moments, then resume ----------------------------------------------------


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_is_identical(
    tmp_path: Path, env: dict[str, str], reference: Path
) -> None:
    # A checkpoint every third step: 19 in a run, so that kills land between, during and
    # before checkpoints (one every step cost most of the time of each run).
    config = write_config(tmp_path, checkpoint={"every_steps": 3, "every_seconds": None})
    store = tmp_path / "killed.zarr"
    rng = random.Random(20261130)
    # Time a whole run: start-up to its first checkpoint, then the rest.
    timed = tmp_path / "timed.zarr"
    start = time.monotonic()
    proc = subprocess.Popen(cli(config, timed), env=env)
    while not (timed / snapshots.CURRENT).is_symlink() and proc.poll() is None:
        time.sleep(0.01)
    first = time.monotonic() - start
    assert proc.wait(timeout=300) == 0
    rest = time.monotonic() - start - first

    def committed() -> str | None:
        link = store / snapshots.CURRENT
        return os.readlink(link) if link.is_symlink() else None

    progress = [0]
    for attempt in range(6):
        left = 1 - progress[-1] / 1797
        before = committed()
        proc = subprocess.Popen(cli(config, store), env=env)
        if attempt in (0, 3):
            # In start-up (of a fresh run, then of a resume): mostly before it commits.
            time.sleep(rng.uniform(0.1, first))
        else:
            # While it streams: once it has committed a checkpoint of its own, a moment
            # anywhere in most of what is left to do (a checkpoint half written, or not).
            while committed() == before and proc.poll() is None:
                time.sleep(0.005)
            time.sleep(rng.uniform(0, 0.7 * rest * left))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        done = 0
        if (store / snapshots.CURRENT).is_symlink():
            s = ndstream.open_store(store)
            done = s.meta.samples_done
            assert s.count("fc2") == done  # a whole checkpoint, never a mix
        assert done >= progress[-1]
        progress.append(done)
    code, _, err = ingest_cli(config, store)  # the resume: no process of its own needed
    assert code == 0, err

    mid_run = [n for n in progress[1:] if 0 < n < 1797]
    assert len(set(mid_run)) >= 2, f"too few kills landed mid-run to test resume: {progress}"
    assert ndstream.open_store(store).complete
    assert_identical(store, reference)


@pytest.mark.slow
def test_ctrl_c_commits_what_was_counted_then_resume_is_identical(
    tmp_path: Path, env: dict[str, str], reference: Path
) -> None:
    # Ctrl-C as soon as the first checkpoint (after 10 of 57 steps) shows the run streaming.
    config = write_config(tmp_path, checkpoint={"every_steps": 10, "every_seconds": None})
    store = tmp_path / "interrupted.zarr"
    proc = subprocess.Popen(cli(config, store), env=env, stderr=subprocess.PIPE, text=True)
    while not (store / snapshots.CURRENT).is_symlink():
        assert proc.poll() is None
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "re-run the same command to resume" in stderr
    s = ndstream.open_store(store)
    assert not s.complete and 0 < s.meta.samples_done < 1797
    assert s.meta.samples_done % 32 == 0 and s.count("fc2") == s.meta.samples_done
    code, _, err = ingest_cli(config, store)  # the resume, in this process
    assert code == 0, err
    assert_identical(store, reference)


# -- readers during writes ---------------------------------------------------------------------


@pytest.mark.slow
def test_reader_polling_during_ingest_never_errors_nor_goes_back(
    tmp_path: Path, env: dict[str, str]
) -> None:
    import xarray as xr

    store = tmp_path / "live.zarr"
    proc = subprocess.Popen(cli(write_config(tmp_path), store), env=env)  # 57 checkpoints
    try:
        while not (store / snapshots.CURRENT).is_symlink():
            assert proc.poll() is None, "the ingest ended before its first checkpoint"
            time.sleep(0.01)
        last, polls, states, vanished = 0, 0, set(), 0

        def gone_by_the_rule(s: ndstream.Store) -> bool:
            """Whether the checkpoint ``s`` reads went as snapshots.py prunes: while the run
            goes on, only with at least KEEP newer ones (MOST, or KEEP and a grace period;
            a reader slower than that, as under load, loses its checkpoint); at the end,
            only with 2 newer, once the final checkpoint is committed."""
            newer = int((store / snapshots.CURRENT).resolve().name) - int(s.snapshot.name)
            return newer >= snapshots.KEEP or (newer >= 2 and ndstream.open_store(store).complete)

        while True:
            finished = proc.poll() is not None
            s = ndstream.open_store(store)
            done = s.meta.samples_done
            assert done >= last, f"samples went back from {last} to {done}"
            try:
                for layer in s.layers:
                    assert s.count(layer) == done  # every layer of the same checkpoint
                    assert s.summary(layer).totals.tolist() == [done]  # and its pooled summary
            except StoreError as exc:
                # The run commits checkpoints faster than a slow reader reads them, and prunes
                # the old ones: a vanished checkpoint is a clear error, never a wrong number.
                assert "is gone" in str(exc), exc
                assert gone_by_the_rule(s), (s.snapshot.name, exc)
                vanished += 1
                continue
            # xarray on the pinned checkpoint sees the same whole checkpoint, as long as the
            # checkpoint is still there after the read: the end of the run keeps only the
            # last two, and zarr reads a deleted chunk as its fill value. Store checks that
            # itself (StoreError); with xarray the reader must, as docs/checkpoints.md says.
            ds = xr.open_zarr(s.snapshot, group="fc2")
            count = int(ds["count"].values[:10].sum())
            if (s.snapshot / "zarr.json").is_file():
                assert count == done
                assert ds["counts"].shape[2] == ds["bin_lower"].shape[1]
            else:
                assert gone_by_the_rule(s), s.snapshot.name
                vanished += 1
            last, polls = done, polls + 1
            states.add(s.complete)
            if finished:
                break
        assert proc.returncode == 0
    finally:
        proc.kill()
        proc.wait()
    assert last == 1797 and states == {False, True}, (last, states)
    # Each vanished checkpoint went by the rule above; how many went depends on how far the
    # reader fell behind (at most 2 on a quiet machine, 3 of 33 polls beside three test
    # workers on two cores), so most reads must still see their checkpoint.
    assert vanished < polls / 2 and polls > 3, (vanished, polls)


def test_store_deleted_under_a_reader_is_a_clear_error(
    tmp_path: Path, digits_store_path: Path
) -> None:
    import shutil

    copy = tmp_path / "copy.zarr"
    shutil.copytree(digits_store_path, copy, symlinks=True)
    store = ndstream.open_store(copy)
    assert store.count("fc2") == 1797
    shutil.rmtree(copy)
    with pytest.raises(StoreError, match="open it again"):
        store.quantile("fc2", 0.5)  # not zeros from missing chunk files


def test_corrupted_chunk_is_a_clear_error(tmp_path: Path, digits_store_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy.zarr"
    shutil.copytree(digits_store_path, copy, symlinks=True)
    store = ndstream.open_store(copy)
    chunk = next((store.snapshot / "fc2" / "counts").glob("c.*"))
    chunk.write_bytes(b"not a blosc frame")
    for group in (store.groups[0], None):  # one group; all of them, pooled
        with pytest.raises(StoreError, match="damaged"):
            store.quantile("fc2", 0.5, group)


# -- what is resumed, and what is refused --------------------------------------------------------


class FailingData(torch.utils.data.Dataset):
    """Digits whose loading fails at one index while ``fail`` is set, like a broken file."""

    def __init__(self, base: torch.utils.data.Dataset, fail_at: int | None) -> None:
        self.base, self.fail_at = base, fail_at
        self.classes = base.classes

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        if i == self.fail_at:
            raise OSError(f"cannot read sample {i}")
        return self.base[i]


def ingest_digits(model, data, path: Path, **kwargs):
    options = dict(layers=["conv1", "relu2", "fc2"], group_by=["label", "predicted"],
                   batch_size=64, seed=0, checkpoint_every=3, progress=False)  # fmt: skip
    options.update(kwargs)
    return ndstream.ingest(model, data, path, **options)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory, digits_model, digits_dataset) -> Path:
    """The store of :func:`ingest_digits`' run, uninterrupted (tests must not change it)."""
    path = tmp_path_factory.mktemp("uninterrupted") / "ref.zarr"
    store = ingest_digits(digits_model, digits_dataset, path, checkpoint_every=None)
    assert store.complete and store.count("fc2") == 1797
    return path


def test_failed_loading_keeps_progress_and_resume_is_identical(
    tmp_path: Path, digits_model, digits_dataset, uninterrupted: Path
) -> None:
    path = tmp_path / "broken.zarr"
    # Position 700 of the seeded order fails to load.
    bad = int(np.random.RandomState(0).permutation(len(digits_dataset))[700])
    with pytest.raises(DataError, match="re-run the same command"):
        ingest_digits(digits_model, FailingData(digits_dataset, bad), path)
    partial = ndstream.open_store(path)
    assert not partial.complete
    assert partial.meta.samples_done == 640  # every whole batch before the failing one
    assert partial.count("fc2") == 640
    # The same run, with the data fixed, resumes.
    ingest_digits(digits_model, FailingData(digits_dataset, None), path)
    assert_identical(path, uninterrupted)


def test_dataloader_worker_crash_is_a_clear_error_and_resume_is_identical(
    tmp_path: Path, digits_model, digits_dataset, uninterrupted: Path
) -> None:
    path = tmp_path / "crash.zarr"
    crash_at = int(np.random.RandomState(0).permutation(len(digits_dataset))[900])
    loader = torch.utils.data.DataLoader(
        CrashingData(digits_dataset, crash_at), batch_size=64, num_workers=2
    )
    with pytest.raises(DataError, match="DataLoader worker"):
        ingest_digits(digits_model, loader, path, checkpoint_every=2)
    partial = ndstream.open_store(path)
    assert 0 < partial.meta.samples_done < 1797
    assert partial.count("fc2") == partial.meta.samples_done
    # What was committed before the crash is what the uninterrupted run had counted by then:
    # the resume (workers that no longer crash) finishes as if nothing had happened.
    loader = torch.utils.data.DataLoader(CrashingData(digits_dataset, -1), batch_size=64)
    ingest_digits(digits_model, loader, path, checkpoint_every=2)
    assert_identical(path, uninterrupted)


def test_a_reset_connection_to_a_worker_is_named_as_a_dead_worker() -> None:
    # A worker that dies while it sends a batch reaches the main process as a reset pipe
    # now and then, not as torch's "DataLoader worker ... exited unexpectedly".
    from ndstream.ingestion.batches import _next

    def reset():
        raise ConnectionResetError(104, "Connection reset by peer")
        yield

    with pytest.raises(DataError, match="DataLoader worker that dies mid-batch"):
        _next(reset())


class CrashingData(FailingData):
    """A worker process that loads ``crash_at`` dies on the spot, as on a segfault."""

    def __init__(self, base: torch.utils.data.Dataset, crash_at: int) -> None:
        super().__init__(base, None)
        self.crash_at = crash_at

    def __getitem__(self, i: int):
        if i == self.crash_at and torch.utils.data.get_worker_info() is not None:
            os._exit(3)
        return self.base[i]


@pytest.fixture(scope="module")
def partial_source(tmp_path_factory: pytest.TempPathFactory, digits_model, digits_dataset) -> Path:
    """An incomplete store: the loading failed after 640 samples (written once; tests get
    copies)."""
    path = tmp_path_factory.mktemp("partial") / "partial.zarr"
    bad = int(np.random.RandomState(0).permutation(len(digits_dataset))[700])
    with pytest.raises(DataError):
        ingest_digits(digits_model, FailingData(digits_dataset, bad), path)
    return path


@pytest.fixture
def partial_store(tmp_path: Path, partial_source: Path) -> Path:
    """A test's own copy of :func:`partial_source`."""
    return copy_store(partial_source, tmp_path / "partial.zarr")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"reduction": "mean"}, "config 'reduction'"),
        ({"layers": ["conv1", "fc2"]}, "config 'layers'"),
        ({"group_by": ["label"]}, "config 'group_by'"),
        ({"seed": 1}, "sample order"),
        ({"limit": 1000}, "sample order"),
    ],
)
def test_resume_with_changed_config_is_refused(
    change, expected, partial_store: Path, digits_model, digits_dataset
) -> None:
    before = snapshots.current(partial_store)
    with pytest.raises(StoreError, match=expected) as info:
        ingest_digits(digits_model, digits_dataset, partial_store, **change)
    assert "--overwrite" in str(info.value)
    assert snapshots.current(partial_store) == before  # untouched
    assert ndstream.open_store(partial_store).meta.samples_done == 640


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"grid": ndstream.GridSpec(max_bins=64)}, "grid"),
        ({"grid": ndstream.GridSpec(exact_values=0)}, "grid"),
        ({"channel_dim": {"conv1": 2}}, "channel_dim"),
        ({"calls": "pool"}, "calls"),
    ],
)
def test_api_resume_with_another_sketch_setting_is_refused(
    change, expected, partial_store: Path, digits_model, digits_dataset
) -> None:
    """Settings the Python API does not put in its recorded config still shape the sketches:
    a resume that changes them would build on sketches of another kind."""
    before = snapshots.current(partial_store)
    with pytest.raises(StoreError, match=f"{expected} .* in the store") as info:
        ingest_digits(digits_model, digits_dataset, partial_store, **change)
    assert "--overwrite" in str(info.value)
    assert snapshots.current(partial_store) == before


def test_resume_with_changed_model_or_data_is_refused(
    partial_store: Path, digits_model, digits_dataset
) -> None:
    import copy

    other = copy.deepcopy(digits_model)
    with torch.no_grad():
        other.fc2.bias.add_(1e-3)
    with pytest.raises(StoreError, match="model parameters"):
        ingest_digits(other, digits_dataset, partial_store)
    subset = torch.utils.data.Subset(digits_dataset, range(1000))
    subset.classes = digits_dataset.classes  # type: ignore[attr-defined]
    with pytest.raises(StoreError, match="dataset"):
        ingest_digits(digits_model, subset, partial_store)


def test_cli_resume_refusal_says_what_differs(tmp_path: Path, env: dict[str, str]) -> None:
    store = tmp_path / "s.zarr"
    config = write_config(tmp_path, checkpoint=NO_CHECKPOINTS)
    assert ingest_cli(config, store, "--limit", "100")[0] == 0
    before = snapshots.current(store)
    changed = write_config(tmp_path, "changed.yaml", checkpoint=NO_CHECKPOINTS, reduction="mean")
    code, _, err = ingest_cli(changed, store, "--limit", "100")
    assert code == 2
    assert "config 'reduction' ('max' in the store, 'mean' now)" in err
    assert "--overwrite" in err
    assert snapshots.current(store) == before  # refused: untouched
    code, _, err = ingest_cli(changed, store, "--limit", "100", "--overwrite")
    assert code == 0, err
    assert ndstream.open_store(store).meta.reduction == "mean"


def test_run_killed_before_its_first_checkpoint_starts_afresh(
    tmp_path: Path, digits_model, digits_dataset, uninterrupted: Path
) -> None:
    # What a run killed while writing its first checkpoint leaves behind.
    path = tmp_path / "early.zarr"
    (path / snapshots.SNAPSHOTS / "tmp-0123456789ab" / "fc2").mkdir(parents=True)
    (path / snapshots.LOCK).touch()
    with pytest.raises(StoreError, match="stopped before its first one"):
        ndstream.open_store(path)
    with snapshots.StoreLock(path), pytest.raises(StoreError, match="no checkpoint yet"):
        ndstream.open_store(path)  # while an ingest holds the lock, it is still writing
    store = ingest_digits(digits_model, digits_dataset, path, checkpoint_every=None)
    assert store.complete and store.count("fc2") == 1797
    assert not list((path / snapshots.SNAPSHOTS).glob("tmp-*"))
    assert_identical(path, uninterrupted)  # nothing of the leftovers counted


@pytest.mark.slow
def test_fast_checkpoints_keep_disk_use_bounded(tmp_path: Path, env: dict[str, str]) -> None:
    """A checkpoint every step, then Ctrl-C: at no time more than a few whole snapshots."""
    config = write_config(tmp_path)  # a checkpoint after every one of 57 steps
    store = tmp_path / "fast.zarr"
    proc = subprocess.Popen(cli(config, store), env=env, stderr=subprocess.PIPE, text=True)
    most = 0
    folder = store / snapshots.SNAPSHOTS
    while True:
        assert proc.poll() is None, "the run ended before 12 checkpoints"
        seqs = [p.name for p in folder.iterdir() if p.name.isdigit()] if folder.is_dir() else []
        most = max(most, len(seqs))
        if seqs and int(max(seqs)) >= 12:
            break
        time.sleep(0.002)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)
    assert proc.returncode == 130
    left = [p.name for p in folder.iterdir() if p.name.isdigit()]
    assert int(max(left)) >= 12
    # The newest is numbered just before the oldest beyond the bound is pruned.
    assert most <= snapshots.MOST + 1 and len(left) <= snapshots.MOST, (most, left)


def test_complete_store_is_not_ingested_again(
    tmp_path: Path, digits_model, digits_dataset, uninterrupted: Path
) -> None:
    path = copy_store(uninterrupted, tmp_path / "done.zarr")
    committed = snapshots.current(path)
    again = ingest_digits(digits_model, digits_dataset, path)
    assert again.complete and snapshots.current(path) == committed


def test_overwrite_refuses_a_folder_that_is_not_a_store(
    tmp_path: Path, digits_model, digits_dataset
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(StoreError, match="not an ndstream store"):
        ingest_digits(digits_model, digits_dataset, folder, overwrite=True)
    assert (folder / "holiday.jpg").read_bytes() == b"precious"


def test_second_writer_is_refused(tmp_path: Path, digits_model, digits_dataset) -> None:
    path = tmp_path / "locked.zarr"
    with snapshots.StoreLock(path), pytest.raises(StoreError, match="another ingest"):
        ingest_digits(digits_model, digits_dataset, path)


def test_unwritable_store_path_is_a_clear_error(
    tmp_path: Path, digits_model, digits_dataset
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(StoreError, match="a-file"):
        ingest_digits(digits_model, digits_dataset, blocker / "store.zarr")


@pytest.mark.slow
def test_disk_full_keeps_the_last_checkpoint(tmp_path: Path, env: dict[str, str]) -> None:
    """A file-size limit makes every checkpoint write fail, as a full disk would."""
    config = write_config(tmp_path)
    store = tmp_path / "full.zarr"
    proc = subprocess.Popen(cli(config, store), env=env)
    while not (store / snapshots.CURRENT).is_symlink():
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = arrays(store)
    done = ndstream.open_store(store).meta.samples_done

    def limit_file_size() -> None:
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write instead of dying
        resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))

    result = subprocess.run(cli(config, store), env=env, capture_output=True, text=True,
                            preexec_fn=limit_file_size)  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "could not write a checkpoint" in result.stderr
    assert "previous checkpoint" in result.stderr
    assert ndstream.open_store(store).meta.samples_done == done
    after = arrays(store)
    for key in before:
        np.testing.assert_array_equal(before[key], after[key], err_msg=key, strict=True)
    assert not list((store / snapshots.SNAPSHOTS).glob("tmp-*"))


# -- NaN and Inf through checkpoints --------------------------------------------------------------


class WithNonFinite(torch.utils.data.Dataset):
    """Random vectors, some with NaN, +Inf or -Inf entries."""

    classes = ("a", "b")

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(300, 6, generator=g)
        self.x[::7, 0] = float("nan")
        self.x[::11, 1] = float("inf")
        self.x[::13, 2] = float("-inf")
        self.y = torch.arange(300) % 2

    def __len__(self) -> int:
        return 300

    def __getitem__(self, i: int):
        return self.x[i], int(self.y[i])


def test_nan_and_inf_are_counted_across_checkpoints(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Identity())
    data = WithNonFinite()
    opts = dict(layers=["0"], batch_size=32, seed=0, checkpoint_every=1, progress=False)
    ref = ndstream.ingest(model, data, tmp_path / "ref.zarr", **opts)
    path = tmp_path / "nf.zarr"
    # Past the samples the atoms are chosen from (ATOM_SAMPLES), which come before any checkpoint.
    bad = int(np.random.RandomState(0).permutation(300)[270])
    with pytest.raises(DataError):
        ndstream.ingest(model, FailingData(data, bad), path, **opts)
    assert ndstream.open_store(path).meta.samples_done == 256
    ndstream.ingest(model, FailingData(data, None), path, **opts)
    assert_identical(path, ref.path)
    # Within them, nothing is committed: the re-run starts over, and ends the same.
    early = tmp_path / "early.zarr"
    with pytest.raises(DataError):
        ndstream.ingest(
            model,
            FailingData(data, int(np.random.RandomState(0).permutation(300)[100])),
            early,
            **opts,
        )
    with pytest.raises(ndstream.StoreError):
        ndstream.open_store(early)
    ndstream.ingest(model, FailingData(data, None), early, **opts)
    assert_identical(early, ref.path)
    s = ref.summary("0", group=[0, 1])
    x = data.x.numpy()
    np.testing.assert_array_equal(s.nan.sum(axis=1), np.isnan(x).sum(axis=0))
    np.testing.assert_array_equal(s.posinf.sum(axis=1), np.isposinf(x).sum(axis=0))
    np.testing.assert_array_equal(s.neginf.sum(axis=1), np.isneginf(x).sum(axis=0))
