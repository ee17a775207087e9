"""The notebooks run top to bottom on two different stores, and compute what they say they do.

Each runs on the demo's store (the digits CNN, groups named by digit) and on a store of another
model whose groups have other names, so that nothing in them hard-codes the demo. What they
compute is checked against numpy on the raw activations (plain hooks) where the store is the
demo's, and against the read API otherwise, never against the notebook's own calls alone.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import holoviews as hv
import numpy as np
import pytest
import torch
from conftest import per_neuron
from test_contrast import exact
from torch import nn

import ndstream
from ndstream.demo import train_digits_cnn

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))
Results = list[tuple[dict[str, Any], Any]]


def run_notebook(path: Path) -> Results:
    """Run the code cells in order in one namespace, as Jupyter does; after each cell, the
    namespace and the value of its last line (when that is an expression, as Jupyter shows)."""
    notebook = json.loads(path.read_text())
    cells = notebook["cells"]
    assert all(not c.get("outputs") for c in cells), f"{path.name}: strip its outputs"
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


class Other(torch.utils.data.Dataset[tuple[torch.Tensor, int]]):
    """Three classes with names unlike the digits', for a small MLP."""

    classes = ("alpha", "beta", "gamma")

    def __init__(self) -> None:
        gen = torch.Generator().manual_seed(0)
        self.y = torch.arange(240) % 3
        self.x = torch.randn(240, 5, generator=gen) + self.y[:, None].float()

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.x[i], int(self.y[i])


@pytest.fixture(scope="module")
def other_stores(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two stores of one small MLP, before and after a change of its weights."""
    folder = tmp_path_factory.mktemp("other")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    paths = []
    for name in ("before", "after"):
        path = folder / f"{name}.zarr"
        ndstream.ingest(
            model, Other(), path, layers=["0", "1", "2"], group_by=["label", "predicted"],
            instances=ndstream.InstanceSpec(per_class=1), batch_size=64, progress=False,
        )  # fmt: skip
        paths.append(path)
        with torch.no_grad():
            model[2].weight.mul_(2)
    return paths[0], paths[1]


@pytest.fixture(scope="module")
def one_epoch(
    tmp_path_factory: pytest.TempPathFactory, reference: Path, digits_dataset: Any
) -> Path:
    """The digits CNN after one epoch, over the reference store's images and layers."""
    path = tmp_path_factory.mktemp("one-epoch") / "one.zarr"
    store = ndstream.open_store(reference)
    ndstream.ingest(
        train_digits_cnn(epochs=1), digits_dataset, path, layers=store.layers,
        group_by=["label", "predicted", "correct"], batch_size=256, progress=False,
    )  # fmt: skip
    return path


def check_quickstart(results: Results, store: ndstream.Store, raw: Any) -> None:
    ns = results[-1][0]
    layer, group = ns["layer"], ns["group"]
    assert layer == store.layers[-1] and group == store.groups[0]
    assert dict(ns["counts"].to_series()) == store.group_counts(layer)
    q = store.summary(layer, group).quantile([0.25, 0.5, 0.75])
    np.testing.assert_array_equal(ns["q"], q)
    iqr = q[:, 2] - q[:, 0]
    assert ns["widest"].tolist() == np.argsort(-iqr, kind="stable")[:5].tolist()
    assert ns["medians"].dims == ("neuron", "group") and ns["medians"].sizes["group"] == len(
        store.groups
    )
    hist = ns["hist"]
    np.testing.assert_allclose(hist.sum("bin"), store.count(layer, group), rtol=1e-9)
    assert int(ns["first"].isel(neuron=0).sum()) == store.count(layer, group)
    if raw is not None:  # the demo: quantiles against numpy on the raw activations
        values = raw[layer][raw["targets"] == int(group)]
        assert float(np.max(ns["ranks"].upper - ns["ranks"].lower)) < 0.05
        # The median's exact rank among the raw values lies in the interval it reports.
        b = store.quantile(layer, 0.5, group=group, bounds=True)
        est = b.estimate.values
        below, at = (values < est).mean(axis=0), (values <= est).mean(axis=0)
        assert np.all(b.lower.values - 1e-12 <= below) and np.all(at <= b.upper.values + 1e-12)
    view = results[-1][1]
    assert isinstance(view, hv.Overlay)
    assert len(set(view.Rectangles.I.dimension_values("neuron"))) == min(32, store.n_neurons(layer))


def check_classes(results: Results, store: ndstream.Store, raw: Any) -> None:
    ns = results[-1][0]
    first = store.groupings[0]
    sizes = store.group_counts(store.layers[0])
    ranked = sorted(
        (g for g, k in zip(store.groups, store.groupings, strict=True) if k == first),
        key=lambda g: -sizes[g],
    )
    assert [ns["A"], ns["B"]] == ranked[:2]
    layer, effect = ns["layer"], ns["effect"]
    assert effect.attrs["metric"] == "effect" and effect.sizes["neuron"] == store.n_neurons(layer)
    key = np.abs(effect.score.values)
    assert np.all(np.diff(key) <= 1e-12), "largest effect first"
    if raw is not None:  # the exact effect of the raw activations lies in every interval
        a = raw[layer][raw["targets"] == int(ns["A"])]
        b = raw[layer][raw["targets"] == int(ns["B"])]
        for metric, result in (("effect", effect), ("auroc", ns["auroc"])):
            truth = np.array([exact(a[:, j], b[:, j], metric) for j in result.neuron.values])
            slack = 1e-9 * np.maximum(1, np.abs(truth))
            assert np.all(result.lower.values <= truth + slack)
            assert np.all(truth <= result.upper.values + slack)
    for name, (mid, top) in ns["per_layer"].items():
        ks = store.contrast(name, ns["A"], ns["B"], metric="ks").score.values
        assert (mid, top) == (float(np.median(ks)), float(ks.max()))
    assert ns["png"][:8] == b"\x89PNG\r\n\x1a\n"


def check_two_stores(results: Results, before: ndstream.Store, after: ndstream.Store) -> None:
    ns = results[-1][0]
    assert set(ns["moved"]) == set(before.layers)
    for layer, ks in ns["moved"].items():
        assert ks.attrs["metric"] == "ks" and ks.sizes["neuron"] == before.n_neurons(layer)
        pooled_a, pooled_b = before.summary(layer).pooled(), after.summary(layer).pooled()
        from ndstream.sketch.contrast import contrast

        want = contrast(pooled_a, pooled_b, "ks").score[ks.neuron.values]
        np.testing.assert_array_equal(ks.score.values, want)
    shift = ns["shift"]
    med = np.asarray(before.quantile(ns["layer"], 0.5, ns["group"])) - np.asarray(
        after.quantile(ns["layer"], 0.5, ns["group"])
    )
    np.testing.assert_allclose(shift.score.values, med[shift.neuron.values], rtol=1e-12)
    assert np.all(np.diff(shift.score.values) <= 0)


def check_attacks(results: Results, store: ndstream.Store, raw: Any) -> None:
    ns = results[-1][0]
    table = store.instances()
    assert table is not None
    scored = store.divergence(table)
    assert ns["worst"] == int(np.nanargmax(scored.overall))
    assert ns["dots"] and isinstance(results[-1][1], hv.Overlay)


CHECKS: dict[str, Callable[..., None]] = {
    "01-quickstart.ipynb": check_quickstart,
    "02-classes-and-layers.ipynb": check_classes,
    "04-attacks-and-divergence.ipynb": check_attacks,
}


def _raw(digits_raw: Any, digits_targets: np.ndarray) -> dict[str, np.ndarray]:
    raw = {name: per_neuron(values, "max") for name, values in digits_raw[0].items()}
    return raw | {"targets": digits_targets}


@pytest.mark.slow  # the demo's reference run, its raw activations, a one-epoch model
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_on_the_demo_store(
    path: Path,
    reference: Path,
    one_epoch: Path,
    digits_raw: Any,
    digits_targets: np.ndarray,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert path.name in CHECKS or path.name == "03-two-stores.ipynb", f"check {path.name}"
    if path.name == "03-two-stores.ipynb":
        monkeypatch.setenv("NDSTREAM_STORE", str(one_epoch))
        monkeypatch.setenv("NDSTREAM_STORE_B", str(reference))
        check_two_stores(
            run_notebook(path), ndstream.open_store(one_epoch), ndstream.open_store(reference)
        )
        return
    monkeypatch.setenv("NDSTREAM_STORE", str(reference))
    raw = _raw(digits_raw, digits_targets)
    CHECKS[path.name](run_notebook(path), ndstream.open_store(reference), raw)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_on_a_store_with_other_groups(
    path: Path, other_stores: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    before, after = other_stores
    monkeypatch.setenv("NDSTREAM_STORE", str(before))
    monkeypatch.setenv("NDSTREAM_STORE_B", str(after))
    results = run_notebook(path)
    if path.name == "03-two-stores.ipynb":
        check_two_stores(results, ndstream.open_store(before), ndstream.open_store(after))
    else:
        CHECKS[path.name](results, ndstream.open_store(before), None)
