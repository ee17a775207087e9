"""Scale-out with real ``torchrun`` processes on loopback (gloo on CPU)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from runs import assert_identical, cli, write_config

import ndstream
from ndstream.store import snapshots

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is missing"),
]


def torchrun(config: Path, store: Path, nproc: int = 2) -> list[str]:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc-per-node", str(nproc), "-m"]  # fmt: skip
    return launcher + cli(config, store)[2:]  # drop "python -m"


def test_two_process_torchrun_is_identical_to_one_process(
    tmp_path: Path, env: dict[str, str], reference: Path
) -> None:
    store = tmp_path / "two.zarr"
    # Checkpoints of both ranks' steps on the way (7), not after every step: the killed run
    # below is the test of what they hold.
    config = write_config(tmp_path, checkpoint={"every_steps": 4, "every_seconds": None})
    subprocess.run(torchrun(config, store), env=env, check=True, timeout=300)
    s = ndstream.open_store(store)
    assert s.complete and s.meta.samples_done == 1797
    assert s.count("fc2") == 1797  # every sample once: no padding duplicates, none skipped
    assert_identical(store, reference)


def test_killing_one_rank_then_rerunning_is_identical(
    tmp_path: Path, env: dict[str, str], reference: Path
) -> None:
    config = write_config(tmp_path, checkpoint={"every_steps": 2, "every_seconds": None})
    store = tmp_path / "killed.zarr"
    launcher = subprocess.Popen(torchrun(config, store), env=env)
    try:
        while not (store / snapshots.CURRENT).is_symlink():
            assert launcher.poll() is None, "torchrun ended before the first checkpoint"
            time.sleep(0.01)
        ranks = _children(launcher.pid)
        assert len(ranks) == 2, ranks
        os.kill(ranks[1], signal.SIGKILL)
        assert launcher.wait(timeout=120) != 0  # torchrun stops the surviving rank too
    finally:
        launcher.kill()
        launcher.wait()
    # What the dead run left is a whole checkpoint of an unfinished run: every rank's
    # batches of the same steps, counted once in every layer and every grouping.
    partial = ndstream.open_store(store)
    done = partial.meta.samples_done
    assert not partial.complete and 0 < done < 1797, done
    assert done % (2 * 32 * 2) == 0, done  # whole checkpoints: 2 steps of 2 ranks' 32 samples
    for layer in partial.layers:
        assert partial.count(layer) == done, layer
    labels = sum(partial.count("fc2", str(c)) for c in range(10))
    predicted = sum(partial.count("fc2", f"pred:{c}") for c in range(10))
    assert labels == predicted == done
    assert partial.count("fc2", "correct") + partial.count("fc2", "incorrect") == done
    subprocess.run(torchrun(config, store), env=env, check=True, timeout=300)
    assert_identical(store, reference)


def _children(pid: int) -> list[int]:
    """Child processes of ``pid`` (the ranks that torchrun started), from /proc."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        kids = [
            int(c)
            for task in Path(f"/proc/{pid}/task").iterdir()
            for c in (task / "children").read_text().split()
        ]
        if len(kids) >= 2:
            return sorted(kids)
        time.sleep(0.05)
    return []
