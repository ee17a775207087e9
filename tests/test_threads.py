"""The thread budget of an ingest: applied during the run, the caller's settings restored."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numba
import pytest
import torch
import yaml
from torch import nn

import ndstream
from ndstream.config import ThreadsConfig, parse_config
from ndstream.errors import ConfigError
from ndstream.ingestion.worker import ThreadBudget, available_cores

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


class Recorder(nn.Module):
    """Identity that records torch's intra-op thread count at each call (and may be slow)."""

    def __init__(self, delay: float = 0.0, fail_at: int | None = None) -> None:
        super().__init__()
        self.seen: list[int] = []
        self.delay, self.fail_at = delay, fail_at

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(torch.get_num_threads())
        if self.fail_at is not None and len(self.seen) > self.fail_at:
            raise RuntimeError("the model failed")
        if self.delay:
            time.sleep(self.delay)
        return x


def batches(n: int = 4, rows: int = 16, width: int = 8) -> Any:
    g = torch.Generator().manual_seed(0)
    data = [
        (torch.rand(rows, width, generator=g), torch.randint(0, 2, (rows,), generator=g))
        for _ in range(n)
    ]
    return iter(data)  # an iterator: taken batch by batch, as it comes


def run(tmp_path: Path, model: nn.Module, **kwargs: Any) -> ndstream.Store:
    return ndstream.ingest(
        nn.Sequential(model),
        kwargs.pop("data", None) or batches(),
        tmp_path / "s.zarr",
        layers=["0"],
        reduction="none",
        group_by="all",
        progress=False,
        checkpoint_seconds=None,
        **kwargs,
    )


@pytest.fixture
def caller_threads():
    """The caller's own settings, unlike any budget below; put back after the test."""
    torch_before, numba_before = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(3)
    numba.set_num_threads(1)
    yield 3, 1
    torch.set_num_threads(torch_before)
    numba.set_num_threads(numba_before)


def test_budget_is_applied_during_the_run_and_restored(tmp_path, caller_threads) -> None:
    model = Recorder()
    store = run(tmp_path, model, threads={"forward": 2, "sketch": 1, "write": 1})
    assert store.meta.samples_done == 64
    assert model.seen == [2, 2, 2, 2]
    assert (torch.get_num_threads(), numba.get_num_threads()) == caller_threads


def test_settings_are_restored_after_an_ingest_that_raises(tmp_path, caller_threads) -> None:
    model = Recorder(fail_at=2)
    with pytest.raises(RuntimeError, match="the model failed"):
        run(tmp_path, model, threads={"forward": 2})
    assert model.seen == [2, 2, 2]
    assert (torch.get_num_threads(), numba.get_num_threads()) == caller_threads


def test_a_number_of_cores_splits_them_between_sketch_and_forward(tmp_path, caller_threads) -> None:
    model = Recorder()
    run(tmp_path, model, threads=4)
    assert model.seen == [3, 3, 3, 3]  # 4 cores: one for the sketch, three for the forward
    assert (torch.get_num_threads(), numba.get_num_threads()) == caller_threads


def test_by_default_the_forward_pass_and_the_sketch_share_the_cores(tmp_path) -> None:
    # On a CPU the forward pass gets the cores the sketch worker does not use, so that
    # torch's OpenMP team never spins on the worker's core.
    model = Recorder()
    run(tmp_path, model)
    budget = ThreadBudget.default("cpu")
    assert budget.forward + budget.sketch == max(2, available_cores())
    assert model.seen == [budget.forward] * 4


class Heavy(Recorder):
    """A Recorder with a million parameters: a model whose forward pass is the run."""

    def __init__(self) -> None:
        super().__init__()
        self.weights = nn.Parameter(torch.zeros(1000, 1000))


def test_a_heavy_model_keeps_the_callers_threads(tmp_path, caller_threads) -> None:
    model = Heavy()
    run(tmp_path, model)
    assert model.seen == [caller_threads[0]] * 4
    assert ThreadBudget.default("cpu", 2, parameters=10**6).forward == caller_threads[0]
    assert ThreadBudget.default("cpu", 2, parameters=10**6 - 1).forward == 1


def test_the_default_budget_fits_small_and_large_machines() -> None:
    two, many = ThreadBudget.default("cpu", 2), ThreadBudget.default("cpu", 64)
    assert (two.forward, two.sketch, two.write) == (1, 1, 2)
    assert (many.forward, many.sketch, many.write) == (56, 8, 64)
    assert ThreadBudget.default("cpu", 1) == ThreadBudget(forward=1, sketch=1, write=1)
    # beside a GPU the host's threads feed it: the caller's torch threads stay
    gpu = ThreadBudget.default("cuda", 64, 3)
    assert (gpu.forward, gpu.sketch) == (3, 16)
    assert ThreadBudget.resolve(2, "cpu") == two
    assert ThreadBudget.resolve(64, "cpu") == many


@pytest.mark.parametrize(
    ("threads", "message"),
    [
        (0, "threads must be a positive number of cores, got 0"),
        ({"forward": 0}, "threads.forward must be a positive integer, got 0"),
        ({"cores": 2}, "threads has unknown keys ['cores']"),
        ("many", "threads must be a number of cores, or a mapping"),
    ],
)
def test_ingest_refuses_a_bad_budget_before_it_starts(tmp_path, threads, message) -> None:
    with pytest.raises(ConfigError) as info:
        run(tmp_path, Recorder(), threads=threads)
    assert message in str(info.value)
    assert not (tmp_path / "s.zarr").exists()


@pytest.mark.parametrize(
    ("threads", "message"),
    [
        (0, "  threads: Value error, threads must be a positive number of cores, got 0"),
        (True, "  threads: Value error, threads must be a positive number of cores, or a"),
        ("many", "  threads: Value error, threads must be a positive number of cores, or a"),
        ({"forward": 0}, "  threads.parts.forward: Input should be greater than 0"),
        ({"cores": 2}, "  threads.parts.cores: Extra inputs are not permitted"),
    ],
)
def test_the_config_key_is_validated(threads, message) -> None:
    raw = yaml.safe_load((CONFIGS / "digits.yaml").read_text()) | {"threads": threads}
    with pytest.raises(ConfigError) as info:
        parse_config(raw, source="digits.yaml")
    assert message in str(info.value)


def test_the_config_key_takes_a_count_or_parts() -> None:
    raw = yaml.safe_load((CONFIGS / "digits.yaml").read_text())
    assert parse_config(raw | {"threads": 6}).threads == 6
    parts = parse_config(raw | {"threads": {"sketch": 2}}).threads
    assert parts == ThreadsConfig(sketch=2)
    resolved = ThreadBudget.resolve(dict(parts), "cpu")
    assert resolved.sketch == 2
    assert resolved.forward == ThreadBudget.default("cpu").forward
