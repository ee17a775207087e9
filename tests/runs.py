"""Helpers for tests that run ingests (as real processes, or the command line in this process)
and compare the stores they write."""

from __future__ import annotations

import io
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import yaml

import ndstream

REPO = Path(__file__).resolve().parents[1]

#: Only the final commit: for runs whose checkpoints are not what a test is about (the stores'
#: arrays are the same whatever the checkpoints, as the resume tests check).
NO_CHECKPOINTS = {"every_steps": None, "every_seconds": None}


def write_config(folder: Path, name: str = "run.yaml", **changes: object) -> Path:
    """configs/digits.yaml with small batches, a checkpoint after every step, instances and no
    attacked pairs."""
    cfg = yaml.safe_load((REPO / "configs" / "digits.yaml").read_text())
    cfg["loader"] = {"batch_size": 32}
    cfg["checkpoint"] = {"every_steps": 1, "every_seconds": None}
    cfg["instances"] = {"indices": [5, 1000], "per_class": 2}
    cfg.pop("attacks", None)  # no pairs unless asked: they are tests/test_pairs.py's
    cfg.update(changes)
    path = folder / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def cli(config: Path, store: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "ndstream", "ingest", str(config), "--store", str(store),
            "--quiet", *extra]  # fmt: skip


def run_cli(*args: object) -> tuple[int, str, str]:
    """``ndstream ARGS`` in this process (``ndstream.cli.main``): exit status, stdout, stderr.

    For tests of what the command line does, where no real process is the point: it spares
    each one an interpreter start and the whole import.
    """
    from ndstream.cli import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse: --help, --version and usage errors
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    return code, out.getvalue(), err.getvalue()


def ingest_cli(config: Path, store: Path, *extra: str) -> tuple[int, str, str]:
    """What :func:`cli`'s command does, run in this process."""
    return run_cli("ingest", config, "--store", store, "--quiet", *extra)


def arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of every layer of a store, read through the public API."""
    store = ndstream.open_store(path)
    everything = range(len(store.groups))
    out: dict[str, np.ndarray] = {"groups": np.array(store.groups)}
    for layer in store.layers:
        # the groups, and the pooled summary (every sample once)
        for part, s in (("", store.summary(layer, group=everything)),
                        ("pooled/", store.summary(layer))):  # fmt: skip
            for field in ("counts", "lower", "upper", "mins", "maxs", "nan", "posinf", "neginf",
                          "totals", "resolution"):  # fmt: skip
                out[f"{layer}/{part}{field}"] = np.asarray(getattr(s, field))
        out[f"{layer}/rank_bound"] = store.rank_bound(layer, list(everything))
        out[f"{layer}/pooled/rank_bound"] = store.rank_bound(layer)
    instances = store.instances()
    if instances is not None:
        for field in ("index", "position", "label", "predicted", "condition", "pair",
                      "thumbnail", "success"):  # fmt: skip
            out[f"instances/{field}"] = np.asarray(getattr(instances, field))
        for layer, values in instances.values.items():
            out[f"instances/{layer}"] = values
    return out


def assert_identical(a: Path, b: Path | dict[str, np.ndarray]) -> None:
    """Every array of store ``a`` equals store ``b``'s, or ``b``'s arrays read once before
    (:func:`arrays`, for a store compared many times)."""
    x, y = arrays(a), (b if isinstance(b, dict) else arrays(b))
    assert x.keys() == y.keys()
    for key in x:
        assert x[key].dtype == y[key].dtype, key
        np.testing.assert_array_equal(x[key], y[key], err_msg=key, strict=True)
