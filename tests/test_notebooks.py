"""The notebooks run top to bottom against a real store, and compute what they say they do.

Each notebook's results are checked against the store's read API (and the digits' labels),
never against the code the notebook itself calls to get them.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ndstream

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))


def run_notebook(path: Path) -> list[tuple[dict[str, Any], Any]]:
    """Run the code cells in order in one namespace, as Jupyter does; after each cell, the
    namespace and the value of its last line (when that is an expression, as Jupyter shows)."""
    cells = json.loads(path.read_text())["cells"]
    code = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    assert code, f"{path.name} has no code cells"
    namespace: dict[str, Any] = {}
    results = []
    for source in code:
        tree = ast.parse(source, str(path))
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        exec(compile(tree, str(path), "exec"), namespace)
        shown = None
        if last is not None:
            shown = eval(compile(ast.Expression(last.value), str(path), "eval"), namespace)
        results.append((namespace, shown))
    return results


def expected_order(key: np.ndarray) -> list[int]:
    """Neuron ids by ``key``, largest first, ties by id."""
    return sorted(range(key.shape[0]), key=lambda n: (-float(key[n]), n))


def check_explore_store(
    results: list[tuple[dict[str, Any], Any]], store: ndstream.Store, targets: np.ndarray
) -> None:
    ns, panel = results[-1]
    assert ns["store"].snapshot == store.snapshot  # the store under test
    layer = ns["layer"]
    assert layer == "relu3"
    assert store.count(layer, group="3") == int((targets == 3).sum())
    # Per-class medians, and the neurons whose medians differ most.
    med3, med8 = store.quantile(layer, 0.5, group="3"), store.quantile(layer, 0.5, group="8")
    np.testing.assert_array_equal(ns["med3"], med3)
    np.testing.assert_array_equal(ns["med8"], med8)
    difference = med3 - med8
    assert np.all(np.diff(difference[ns["order"]]) <= 0)  # largest difference first
    assert sorted(ns["order"].tolist()) == list(range(store.n_neurons(layer)))
    # Quartiles, ranks and histograms.
    q = store.quantile(layer, [0.25, 0.5, 0.75])
    np.testing.assert_array_equal(ns["q"], q)
    np.testing.assert_array_equal(ns["iqr"], q[:, 2] - q[:, 0])
    np.testing.assert_array_equal(ns["ranks"], store.cdf(layer, med3, group="8"))
    counts, edges = ns["counts"], ns["edges"]
    assert counts.shape == (store.n_neurons(layer), 32) and edges.shape == (33,)
    # every digit-3 and digit-8 value of every neuron once (relu3 has no NaN nor Inf)
    both = int(np.isin(targets, [3, 8]).sum())
    np.testing.assert_allclose(counts.sum(axis=1), both, rtol=1e-9)
    # one axis over the finite range of the two digits' values
    of_both = store.summary(layer, group=["3", "8"])
    assert (edges[0], edges[-1]) == (of_both.mins.min(), of_both.maxs.max())
    # The most divergent instance, and its neurons furthest from its predicted class.
    scored = store.divergence(store.instances())
    assert ns["worst"] == int(np.nanargmax(scored.overall))
    furthest = expected_order(np.abs(scored.neurons[layer][ns["worst"]]))[:5]
    assert ns["top"].tolist() == furthest
    # The same layer through xarray alone: every digit-3 sample once per neuron.
    digit3 = ns["digit3"]
    np.testing.assert_array_equal(digit3.sum("bin").values, (targets == 3).sum())
    # The Activation view: the 32 neurons of largest difference, with the first instance.
    rows = expected_order(difference)[:32]
    assert ns["rows"].tolist() == rows
    (first,) = ns["dots"]
    assert first == str(int(store.instances().index[0]))
    points = panel.Points.I
    assert points.dimension_values("neuron").tolist() == rows
    assert set(points.dimension_values("instance").tolist()) == {first}
    assert set(panel.Rectangles.I.dimension_values("neuron").tolist()) == set(rows)


#: What each notebook computes, checked: a new notebook needs its own check here.
CHECKS: dict[str, Callable[..., None]] = {"explore-store.ipynb": check_explore_store}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_and_computes_what_it_says(
    path: Path, reference: Path, digits_targets: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the store of the demo's command (with instances), as the notebooks' text says."""
    assert path.name in CHECKS, f"{path.name}: say in CHECKS what it computes"
    monkeypatch.setenv("NDSTREAM_STORE", str(reference))
    CHECKS[path.name](run_notebook(path), ndstream.open_store(reference), digits_targets)
