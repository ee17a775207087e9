"""Start-up: ``--help`` and ``info`` import neither torch nor Numba, public names import lazily,
and a cold kernel cache is compiled up front, and said so, before an ingest.

The import checks run real interpreters with ``python -X importtime``, which lists every module
a process imports, so a heavy import slipping back in anywhere fails them.
"""

from __future__ import annotations

import dataclasses
import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ndstream
from ndstream.sketch import GridSpec, LayerSketch, SketchSpec, _kernels, summary, warmup
from ndstream.store import LayerMeta, StoreMeta, write_store

HEAVY = ("torch", "numba")


def imported(*args: str, env: dict[str, str] | None = None) -> tuple[set[str], str]:
    """Modules that ``python -X importtime ARGS`` imports, and its stdout."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", *args],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    names = {
        line.rsplit("|", 1)[-1].strip()
        for line in proc.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    names.discard("imported package")  # the header line
    return names, proc.stdout


def heavy(names: set[str]) -> list[str]:
    return sorted(n for n in names if n.split(".")[0] in HEAVY)


@pytest.fixture(scope="module")
def unpooled_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store whose layer keeps no pooled subgroup (a fixed bin budget), on the grid."""
    grid = GridSpec(max_bins=16, exact_values=8)  # few bins and values kept: folded, coarse
    groups = ("a", "b", "c")
    spec = SketchSpec(6, groups, grid, ("g",) * 3)
    assert not spec.keeps_pooled
    rng = np.random.default_rng(7)
    x = (rng.lognormal(0, 2, (400, 6)) * rng.choice([-1, 1], (400, 6))).astype(np.float32)
    x[::5] = 0.0
    sketch = LayerSketch(spec)
    sketch.update(x, rng.integers(0, 3, 400))
    layer = LayerMeta(
        name="fc", module_type="Linear", n_neurons=6, channel_dim=1, output_shape=(6,),
        values_per_sample=1,
    )  # fmt: skip
    meta = StoreMeta(
        layers=(layer,), groups=groups, groupings=("g",) * 3, reduction="max",
        grid=grid.to_dict(), model_fingerprint="m" * 32, dataset_fingerprint="",
        samples_done=400, samples_total=400, complete=True,
    )  # fmt: skip
    path = tmp_path_factory.mktemp("unpooled") / "s.zarr"
    write_store(path, meta, {"fc": sketch})
    return path


def test_help_imports_neither_torch_nor_numba() -> None:
    names, out = imported("-m", "ndstream", "--help")
    assert "ndstream.cli" in names  # the list was read
    assert "ingest" in out and "info" in out
    assert heavy(names) == []


@pytest.mark.slow
def test_info_imports_neither_torch_nor_numba(digits_store_path: Path) -> None:
    names, out = imported("-m", "ndstream", "info", str(digits_store_path))
    assert "ndstream.store.reader" in names
    assert out.startswith("store") and "rank error ≤" in out
    assert heavy(names) == []


def test_info_of_a_store_without_pooled_subgroups(unpooled_store: Path) -> None:
    """The pooled rank bound, not stored for such a layer, is computed without a kernel."""
    store = ndstream.open_store(unpooled_store)
    assert not store._has_pooled("fc")
    names, out = imported("-m", "ndstream", "info", str(unpooled_store))
    assert "rank error ≤" in out
    assert heavy(names) == []
    # and it is what the kernels' rule gives: the pooled summary's widest grid bin; the
    # queries, which read the fine counts in place of the bins they cover, are never wider
    bound = store.rank_bound("fc")
    pooled = store.summary("fc")
    expected = dataclasses.replace(pooled, fine=None).rank_bound().astype(np.float32)
    assert bound.dtype == np.float32
    assert np.all(bound > 0)  # on the grid, coarse: every neuron has a bin of several values
    np.testing.assert_array_equal(bound, expected)
    assert np.all(pooled.rank_bound().astype(np.float32) <= bound)


def test_info_into_a_closed_pipe_stops_quietly(unpooled_store: Path) -> None:
    """`ndstream info STORE | head -1`: the reader leaves early; no traceback follows."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first byte: every write meets EPIPE
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "ndstream", "info", str(unpooled_store)],
            stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120,
        )  # fmt: skip
    finally:
        os.close(write_end)
    assert proc.stderr == ""
    assert proc.returncode == 128 + signal.SIGPIPE


def test_widest_ranges_in_numpy_matches_the_kernel() -> None:
    rng = np.random.default_rng(3)
    n, g, b = 40, 5, 30
    counts = rng.integers(0, 9, (n, g, b)).astype(np.uint32)
    lower = np.sort(rng.normal(size=(n, b)), axis=1).astype(np.float32)
    upper = (lower + rng.uniform(0, 0.2, (n, b))).astype(np.float32)
    lower[:, -3:] = upper[:, -3:] = np.nan  # padding
    zero_bin = rng.integers(0, b - 3, n)
    fine = rng.random(n) < 0.2
    mins = rng.normal(size=(n, g)).astype(np.float32) - 1
    maxs = mins + rng.uniform(0, 2, (n, g)).astype(np.float32)
    mins[0, 0] = maxs[0, 0] = np.nan  # a group without values
    maxs[1, 1] = mins[1, 1]  # one distinct value
    min_count = rng.integers(0, 4, (n, g))  # values at the min and max, off their bins
    max_count = rng.integers(0, 4, (n, g))
    args = (counts, lower, upper, zero_bin, fine, mins, maxs, min_count, max_count)
    got = summary._widest_ranges(*args)
    np.testing.assert_array_equal(got, _kernels.widest_ranges(*args))
    assert got.dtype == np.float64 and got.any()


def test_reading_a_store_imports_no_torch(tmp_path: Path, unpooled_store: Path) -> None:
    code = (
        "import sys, ndstream\n"
        f"s = ndstream.open_store({str(unpooled_store)!r})\n"
        "s.counts('fc'); s.rank_bound('fc'); s.summary('fc'); s.instances()\n"
        "from ndstream.store.instances import InstanceSpec, InstanceTable\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'numba')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    assert out.strip() == "[]"


def test_public_names_import_lazily() -> None:
    code = (
        "import sys, ndstream\n"
        "assert 'torch' not in sys.modules and 'numba' not in sys.modules\n"
        "import ndstream.ingestion.run  # the run loop's module: ndstream.ingest is its function\n"
        "assert callable(ndstream.ingest) and ndstream.ingest.__module__ == 'ndstream.ingestion.run'\n"
        "from ndstream import ingest, open_store, LayerSketch, GridSpec, SketchSpec, Summary\n"
        "assert ndstream.LayerSketch is LayerSketch and LayerSketch.__name__ == 'LayerSketch'\n"
        "missing = [n for n in ndstream.__all__ if getattr(ndstream, n, None) is None]\n"
        "assert not missing, missing\n"
        "assert set(ndstream.__all__) <= set(dir(ndstream))\n"
        "print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "ok"


def test_unknown_names_raise_attribute_error() -> None:
    with pytest.raises(AttributeError, match="nope"):
        _ = ndstream.nope  # type: ignore[attr-defined]
    with pytest.raises(AttributeError, match="nope"):
        _ = ndstream.sketch.nope  # type: ignore[attr-defined]
    with pytest.raises(AttributeError, match="nope"):
        _ = ndstream.store.instances.nope  # type: ignore[attr-defined]
    assert ndstream.store.Store is ndstream.Store  # submodules still reachable as attributes


def test_a_fresh_kernel_cache_is_seen_as_cold(tmp_path: Path) -> None:
    code = (
        "from ndstream.sketch.warmup import kernel_cache, INGEST_KERNELS\n"
        "s = kernel_cache()\n"
        "print(s.known, len(s.cold) == len(INGEST_KERNELS), len(s.cached))\n"
    )
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120,
        check=True,
    ).stdout  # fmt: skip
    assert out.split() == ["True", "True", "0"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("exercise", "kernels"),
    [("_exercise", "INGEST_KERNELS"), ("_exercise_queries", "QUERY_KERNELS")],
)
def test_warm_up_calls_exactly_its_kernels(exercise: str, kernels: str) -> None:
    """The warm-up's child fills the cache with INGEST_KERNELS (QUERY_KERNELS for the
    queries), and runs no other kernel.

    It uses the cache of the source tree, so it compiles (seconds) only if the kernels
    changed. The second child loads every kernel from the cache, which, unlike a compile,
    leaves the helpers compiled into the kernels without signatures of their own: what ran
    is then exactly the kernels called from Python.
    """
    code = (
        "from numba.core.registry import CPUDispatcher\n"
        "from ndstream.sketch import _kernels, warmup\n"
        f"warmup.{exercise}()\n"
        "ran = [n for n, d in vars(_kernels).items()\n"
        "       if isinstance(d, CPUDispatcher) and d.signatures]\n"
        "print(' '.join(sorted(ran)))\n"
        f"print(warmup.kernel_cache(warmup.{kernels}).is_cold)\n"
    )
    for _ in range(2):
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
            check=True,
        ).stdout.splitlines()  # fmt: skip
        assert out[1] == "False"  # cached now
    assert sorted(out[0].split()) == sorted(getattr(warmup, kernels))


def test_warm_up_of_the_query_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    cold = warmup.KernelCache(cached=(), cold=("quantiles", "ranks"))
    warm = warmup.KernelCache(cached=("quantiles", "ranks"), cold=())
    looked: list[tuple[str, ...]] = []
    states = iter([cold, warm])

    def cache(names: tuple[str, ...] = warmup.INGEST_KERNELS) -> warmup.KernelCache:
        looked.append(tuple(names))
        return next(states)

    children: list[list[str]] = []

    def child(cmd: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        children.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(warmup, "kernel_cache", cache)
    monkeypatch.setattr(warmup.subprocess, "run", child)
    stream = io.StringIO()
    warmup.warm_up(stream=stream, queries=True)
    assert looked == [warmup.QUERY_KERNELS] * 2
    assert children == [[sys.executable, "-m", "ndstream.sketch.warmup", "queries"]]
    assert "compiling the query kernels" in stream.getvalue()


def test_warm_up_says_it_compiles_only_when_cold(monkeypatch: pytest.MonkeyPatch) -> None:
    cold = warmup.KernelCache(cached=(), cold=("a", "b", "c", "d", "e"))
    warm = warmup.KernelCache(cached=("a", "b", "c", "d", "e"), cold=())
    states = iter([cold, warm])
    children: list[list[str]] = []

    def child(cmd: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        children.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(warmup, "kernel_cache", lambda *_: next(states))
    monkeypatch.setattr(warmup.subprocess, "run", child)
    stream = io.StringIO()
    warmup.warm_up(stream=stream)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert "compiling the sketch kernels (first run on this machine, about 4 s)" in lines[0]
    assert lines[1].startswith("ndstream: compiled in ")
    assert children == [[sys.executable, "-m", "ndstream.sketch.warmup"]]

    # warm: nothing is run, nothing is said
    monkeypatch.setattr(warmup, "kernel_cache", lambda *_: warm)
    stream = io.StringIO()
    assert warmup.warm_up(stream=stream) == 0.0
    assert stream.getvalue() == "" and len(children) == 1

    # cold but quiet: compiled, not said
    monkeypatch.setattr(warmup, "kernel_cache", lambda *_: cold)
    assert warmup.warm_up(stream=None) >= 0.0
    assert len(children) == 2
