"""Which neurons differ: every contrast metric against scipy and numpy on the raw values, inside
the interval the sketches guarantee, for groups, two stores and inputs kept exactly; and the
command line's ``compare``."""

from __future__ import annotations

import csv
import io
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from sklearn.metrics import roc_auc_score
from torch import nn

import ndstream
from ndstream.cli import main
from ndstream.sketch import LayerSketch, SketchSpec
from ndstream.sketch.contrast import METRICS, contrast
from ndstream.sketch.summary import Pooled

WIDTH = 6


def exact(x: np.ndarray, y: np.ndarray, metric: str) -> float:
    """The metric on the raw values, by scipy, scikit-learn and numpy (float64)."""
    x, y = x[~np.isnan(x)].astype(np.float64), y[~np.isnan(y)].astype(np.float64)
    if metric == "median":
        return float(np.median(x) - np.median(y))
    if metric == "effect":
        d = np.median(x) - np.median(y)
        iqr = [np.subtract(*np.quantile(v, [0.75, 0.25])) for v in (x, y)]
        s = 0.5 * (iqr[0] + iqr[1])
        return 0.0 if d == 0 and s == 0 else float(d / s)
    if metric == "ks":
        return float(stats.ks_2samp(x, y).statistic)
    if metric == "wasserstein":
        return float(stats.wasserstein_distance(x, y))
    ys = np.sort(y)  # P(A > B) + P(A = B) / 2 over every pair, ±Inf included
    below = np.searchsorted(ys, x, "left")
    ties = np.searchsorted(ys, x, "right") - below
    auc = float((below + 0.5 * ties).sum() / (x.size * y.size))
    if np.isfinite(x).all() and np.isfinite(y).all():  # scikit-learn's, where it can
        labels = np.r_[np.ones(x.size), np.zeros(y.size)]
        assert np.isclose(auc, roc_auc_score(labels, np.r_[x, y]), rtol=1e-12)
    return auc


def columns(rng: np.random.Generator, n: int, shift: float) -> np.ndarray:
    """``[n, WIDTH]``: Gaussian, ReLU (exact zeros), lognormal, Cauchy, a near-constant
    neuron and a two-valued one, ``shift`` apart between the sides."""
    z = rng.standard_normal((n, WIDTH)) + shift
    out = np.empty((n, WIDTH))
    out[:, 0] = z[:, 0]
    out[:, 1] = np.maximum(z[:, 1], 0)
    out[:, 2] = np.exp(2 * z[:, 2])
    out[:, 3] = rng.standard_cauchy(n) + shift
    out[:, 4] = 1000 + 1e-3 * z[:, 4]
    out[:, 5] = (z[:, 5] > 0.5).astype(np.float64)
    return out.astype(np.float32)


def two_groups(a: np.ndarray, b: np.ndarray) -> tuple[Pooled, Pooled]:
    sketch = LayerSketch(SketchSpec(a.shape[1], ("a", "b")))
    sketch.update(np.r_[a, b], np.r_[np.zeros(len(a), np.int64), np.ones(len(b), np.int64)])
    summary = sketch.finalize()
    return summary.select([0]).pooled(), summary.select([1]).pooled()


def assert_inside(result: object, truth: np.ndarray) -> None:
    lower, upper = np.asarray(result.lower), np.asarray(result.upper)  # type: ignore[attr-defined]
    slack = 1e-9 * np.maximum(1.0, np.abs(truth))  # float64 rounding of the two computations
    assert np.all(lower <= truth + slack), (lower, truth)
    assert np.all(truth <= upper + slack), (truth, upper)


@pytest.mark.parametrize("size", [300, 20_000])  # kept exactly; on the grid's bins
@pytest.mark.parametrize("metric", METRICS)
def test_every_metric_lies_inside_its_bound_and_near_the_exact_score(
    metric: str, size: int
) -> None:
    rng = np.random.default_rng(size)
    a, b = columns(rng, size, 0.0), columns(rng, size, 0.2)
    truth = np.array([exact(a[:, j], b[:, j], metric) for j in range(WIDTH)])
    result = contrast(*two_groups(a, b), metric)
    assert_inside(result, truth)
    err = np.abs(result.score - truth)
    if size == 300:  # every value kept: the score is the exact one, the interval a point
        np.testing.assert_allclose(result.score, truth, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(result.lower, result.upper, rtol=1e-9, atol=1e-12)
    else:
        scale = {"median": 1e-3, "effect": 1e-3, "ks": 2e-3, "wasserstein": 1e-3, "auroc": 1e-4}
        spread = np.abs(np.subtract(*np.quantile(np.r_[a, b], [0.9, 0.1], axis=0)))
        limit = scale[metric] * (spread if metric in ("median", "wasserstein") else 1.0)
        assert np.all(err <= np.maximum(limit, 1e-6)), (metric, err, limit)
    # Exact inputs on both sides agree with the same numbers.
    kept = contrast(Pooled.from_values(a), Pooled.from_values(b), metric)
    np.testing.assert_allclose(kept.score, truth, rtol=1e-9, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(
    data=st.lists(
        st.one_of(
            st.floats(-1e6, 1e6, width=32),
            st.sampled_from([0.0, -0.0, 1.0, np.inf, -np.inf, np.nan, 1e-40, -3e38]),
        ),
        min_size=2,
        max_size=400,
    ),
    split=st.integers(1, 399),
    metric=st.sampled_from(METRICS),
    coarse=st.booleans(),
)
def test_the_exact_score_always_lies_inside_the_interval(
    data: list[float], split: int, metric: str, coarse: bool
) -> None:
    values = np.array(data, dtype=np.float32)
    split = 1 + split % (values.size - 1)
    a, b = values[:split, None], values[split:, None]
    if np.isnan(a).all() or np.isnan(b).all():
        return
    if coarse:  # few bins, no exact form: the interval must still hold the exact score
        from ndstream.sketch import GridSpec

        grid = GridSpec(max_bins=64, min_mantissa_bits=1, exact_values=0)
        sketch = LayerSketch(SketchSpec(1, ("a", "b"), grid))
        sketch.update(np.r_[a, b], np.r_[np.zeros(len(a), np.int64), np.ones(len(b), np.int64)])
        summary = sketch.finalize()
        sides = summary.select([0]).pooled(), summary.select([1]).pooled()
    else:
        sides = two_groups(a, b)
    result = contrast(*sides, metric)
    finite = np.isfinite(a).all() and np.isfinite(b).all()
    if metric in ("ks", "auroc") or finite:  # scipy takes no infinities in the others
        with np.errstate(all="ignore"):
            truth = np.array([exact(a[:, 0], b[:, 0], metric)])
        if np.isfinite(truth).all():
            assert_inside(result, truth)


def test_groups_of_a_store_match_the_raw_values(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = np.r_[columns(rng, 400, 0.0), columns(rng, 400, 0.5)]
    labels = np.r_[np.zeros(400, np.int64), np.ones(400, np.int64)]
    store = _identity_store(tmp_path / "s.zarr", x, labels)
    for metric in METRICS:
        result = store.contrast("0", "0", "1", metric)
        order = np.asarray(result.neuron)
        truth = np.array([exact(x[labels == 0, j], x[labels == 1, j], metric) for j in order])
        assert_inside(result, truth)
        np.testing.assert_allclose(result.score, truth, rtol=1e-9, atol=1e-12)
        key = np.abs(np.asarray(result.score) - (0.5 if metric == "auroc" else 0.0))
        assert np.all(np.diff(key) <= 1e-12), "largest difference first"
        assert result.attrs["a"] == "0" and result.attrs["b"] == "1"
    signed = store.contrast("0", "0", "1", "median", order="signed")
    assert np.all(np.diff(np.asarray(signed.score)) <= 0)
    in_order = store.contrast("0", "0", "1", "ks", order="neuron")
    assert list(np.asarray(in_order.neuron)) == list(range(WIDTH))


def test_a_store_against_itself_scores_nothing_and_halves_score_little(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = columns(rng, 6000, 0.0)
    labels = rng.integers(0, 2, 6000)
    whole = _identity_store(tmp_path / "whole.zarr", x, labels)
    first = _identity_store(tmp_path / "first.zarr", x[:3000], labels[:3000])
    second = _identity_store(tmp_path / "second.zarr", x[3000:], labels[3000:])
    for metric in METRICS:
        same = whole.contrast("0", None, whole, metric)
        neutral = 0.5 if metric == "auroc" else 0.0
        np.testing.assert_allclose(same.score, neutral, atol=1e-12)
        halves = first.contrast("0", "1", second, metric)  # group "1" of each half
        truth = np.array(
            [
                exact(x[:3000][labels[:3000] == 1, j], x[3000:][labels[3000:] == 1, j], metric)
                for j in np.asarray(halves.neuron)
            ]
        )
        assert_inside(halves, truth)
        # Disjoint halves of one distribution differ by sampling noise only.
        bound = {"ks": 0.06, "auroc": 0.04, "effect": 0.15}
        if metric in bound:
            assert np.abs(np.asarray(halves.score) - neutral).max() < bound[metric]


def test_inputs_kept_exactly_against_a_group(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    x = columns(rng, 500, 0.0)
    store = _identity_store(tmp_path / "s.zarr", x, np.zeros(500, np.int64))
    probe = columns(rng, 3, 1.0)
    for metric in ("median", "ks", "auroc"):
        result = store.contrast("0", probe, "0", metric, order="neuron")
        truth = np.array([exact(probe[:, j], x[:, j], metric) for j in range(WIDTH)])
        np.testing.assert_allclose(result.score, truth, rtol=1e-9, atol=1e-12)
        assert result.attrs["a"] == "3 input(s)"


def test_mismatched_sides_are_refused_with_what_to_do(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    store = _identity_store(tmp_path / "s.zarr", columns(rng, 100, 0), np.zeros(100, np.int64))
    narrow = _identity_store(
        tmp_path / "n.zarr", columns(rng, 100, 0)[:, :4], np.zeros(100, np.int64)
    )
    with pytest.raises(ValueError, match="align="):
        store.contrast("0", "0", narrow)
    # Told how: each neuron of the first store's layer, its neuron in the other.
    aligned = store.contrast("0", "0", narrow, "ks", align=[0, 1, 2, 3, 3, 3], order="neuron")
    assert aligned.sizes["neuron"] == WIDTH
    with pytest.raises(ndstream.LayerNotFoundError, match="layer_b="):
        store.contrast("0", "0", narrow, layer_b="missing")
    with pytest.raises(ValueError, match="unknown metric"):
        store.contrast("0", "0", "0", "t-test")
    with pytest.raises(ValueError, match=r"\[neuron\] or \[input, neuron\]"):
        store.contrast("0", np.zeros((2, 2, WIDTH)), "0")
    with pytest.raises(ValueError, match="hold no input"):
        store.contrast("0", "0", np.zeros((0, WIDTH)))


def test_compare_prints_the_neurons_that_moved_and_writes_a_csv(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    before = columns(rng, 800, 0.0)
    after = before.copy()
    after[:, 2] *= 3  # one neuron moves a lot
    labels = rng.integers(0, 2, 800)
    a = _identity_store(tmp_path / "a.zarr", before, labels)
    b = _identity_store(tmp_path / "b.zarr", after, labels)
    out_csv = tmp_path / "moved.csv"
    stdout = io.StringIO()
    with redirect_stdout(stdout):
        code = main(["compare", str(a.path), str(b.path), "--metric", "ks", "--csv", str(out_csv)])
    assert code == 0
    text = stdout.getvalue()
    assert "layer 0" in text and "ks" in text and str(out_csv) in text
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == WIDTH
    top = rows[0]
    assert top["neuron"] == "2" and top["layer"] == "0" and top["group"] == "all"
    truth = exact(before[:, 2], after[:, 2], "ks")
    assert float(top["lower"]) - 1e-9 <= truth <= float(top["upper"]) + 1e-9
    moved = [float(r["score"]) for r in rows if r["neuron"] != "2"]
    assert max(moved) == 0.0  # the other neurons did not move at all
    # Per group, both groups present in both stores.
    with redirect_stdout(io.StringIO()):
        code = main(["compare", str(a.path), str(b.path), "--groups", "0", "1",
                     "--csv", str(out_csv)])  # fmt: skip
    assert code == 0
    assert {r["group"] for r in csv.DictReader(out_csv.open())} == {"0", "1"}


def test_compare_refuses_stores_of_other_layers_and_says_how(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    x, labels = columns(rng, 100, 0.0), np.zeros(100, np.int64)
    a = _identity_store(tmp_path / "a.zarr", x, labels)
    b = _identity_store(tmp_path / "b.zarr", x, labels, name="block")
    err = io.StringIO()
    from contextlib import redirect_stderr

    with redirect_stderr(err):
        code = main(["compare", str(a.path), str(b.path), "--csv", str(tmp_path / "c.csv")])
    assert code == 2 and "--layers" in err.getvalue() and "Traceback" not in err.getvalue()
    with redirect_stdout(io.StringIO()):
        code = main(["compare", str(a.path), str(b.path), "--layers", "0:block.0",
                     "--csv", str(tmp_path / "c.csv")])  # fmt: skip
    assert code == 0
    assert float(next(csv.DictReader((tmp_path / "c.csv").open()))["score"]) == 0.0


def _identity_store(
    path: Path, x: np.ndarray, labels: np.ndarray, name: str | None = None
) -> ndstream.Store:
    """A store whose layer's values are ``x`` itself (an identity layer), grouped by label."""
    model: nn.Module = nn.Sequential(nn.Identity())
    if name is not None:
        model = nn.Sequential()
        model.add_module(name, nn.Sequential(nn.Identity()))
    data = torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(labels))
    layer = "0" if name is None else f"{name}.0"
    return ndstream.ingest(model, data, path, layers=[layer], batch_size=256, progress=False)


def test_the_dashboards_contrast_sorts_are_the_stores_scores(tmp_path: Path) -> None:
    from ndstream.explore import LayerFrame, SortSpec, neuron_order, sort_key

    rng = np.random.default_rng(6)
    x = np.r_[columns(rng, 300, 0.0), columns(rng, 300, 0.4)]
    labels = np.r_[np.zeros(300, np.int64), np.ones(300, np.int64)]
    store = _identity_store(tmp_path / "s.zarr", x, labels)
    frame = LayerFrame(store, "0")
    for metric in METRICS:
        by = "difference" if metric == "median" else metric
        key = sort_key(frame, SortSpec(by, "group:0", "group:1", descending=True))
        want = store.contrast("0", "0", "1", metric, order="neuron").score.values
        if metric == "median":  # the dashboard's difference is of the frame's medians
            np.testing.assert_allclose(key, want, rtol=1e-12)
        else:
            np.testing.assert_array_equal(key, want)
        if metric in ("effect", "auroc") or metric == "median":
            name = "abs_difference" if metric == "median" else f"abs_{metric}"
            size = sort_key(frame, SortSpec(name, "group:0", "group:1", descending=True))
            ranked = store.contrast("0", "0", "1", metric)  # by size, largest first
            np.testing.assert_array_equal(neuron_order(size, descending=True), ranked.neuron.values)


# -- refusals: each says what went wrong and what to do -------------------------------------


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ndstream.Store]:
    """``wide``: groups 0 and 1; ``other``: groups 0, 1 (empty) and 2; ``narrow``: a layer
    ``block.0`` four neurons wide."""
    rng = np.random.default_rng(7)
    root = tmp_path_factory.mktemp("refusals")
    x = columns(rng, 200, 0.0)
    return {
        "wide": _identity_store(root / "wide.zarr", x, np.arange(200) % 2),
        "other": _identity_store(root / "other.zarr", x + 1, (np.arange(200) % 2) * 2),
        "narrow": _identity_store(root / "narrow.zarr", x[:, :4], np.arange(200) % 2, name="block"),
    }


def _run(argv: list[str]) -> tuple[int, str]:
    from contextlib import redirect_stderr

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue() + err.getvalue()


def test_compare_refuses_a_csv_it_cannot_write_before_computing(
    stores: dict[str, ndstream.Store], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ndstream.explore.contrast as module

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("computed before the CSV path was checked")

    monkeypatch.setattr(module, "compare_stores", never)
    a, b = str(stores["wide"].path), str(stores["other"].path)
    for csv_path in (tmp_path / "missing" / "x.csv", tmp_path):
        code, text = _run(["compare", a, b, "--csv", str(csv_path)])
        assert code == 2, text
        assert "cannot write --csv" in text and "existing folder" in text
        assert "Traceback" not in text
    assert not (tmp_path / "missing").exists()


def test_a_width_mismatch_names_the_side_and_layer_and_what_applies(
    stores: dict[str, ndstream.Store],
) -> None:
    wide, narrow = stores["wide"], stores["narrow"]
    with pytest.raises(ndstream.SpecMismatchError) as b_side:
        wide.contrast("0", "0", (narrow, "0"), layer_b="block.0")
    text = str(b_side.value)
    assert text.startswith("b (") and "'block.0'" in text and str(narrow.path) in text
    assert "align=" in text  # side b: align= maps it
    with pytest.raises(ndstream.SpecMismatchError) as a_side:
        wide.contrast("0", (narrow, "0"), "0", layer_b="block.0", align=[0] * WIDTH)
    text = str(a_side.value)
    assert text.startswith("a (") and "'block.0'" in text
    assert "pass that store as b" in text  # align= cannot map side a
    with pytest.raises(ndstream.SpecMismatchError, match=r"activations of that layer") as inputs:
        wide.contrast("0", np.zeros(4), "0")
    assert "align=" not in str(inputs.value)
    # The command line has no align=: it says what it can do.
    code, text = _run(["compare", str(wide.path), str(narrow.path), "--layers", "0:block.0"])
    assert code == 2 and "--layers LAYER:LAYER_B" in text and "'block.0'" in text
    assert "Traceback" not in text and "pass align" not in text
    # A name near none of a store's layers gets its layers, not an empty list of close ones.
    code, text = _run(["compare", str(wide.path), str(narrow.path), "--layers", "zzz"])
    assert code == 2 and f"{wide.path} has no layer 'zzz' (its layers: '0')" in text, text
    assert "[]" not in text


def test_a_missing_group_names_the_store_that_lacks_it_and_its_groups(
    stores: dict[str, ndstream.Store], tmp_path: Path
) -> None:
    wide, other = stores["wide"], stores["other"]
    with pytest.raises(ndstream.GroupNotFoundError) as missing:
        other.contrast("0", "2", wide)  # wide has no group "2"
    text = str(missing.value)
    assert f"{wide.path} has no group '2'" in text and "its groups: '0', '1'" in text
    assert "(store_b, group)" in text
    code, text = _run(["compare", str(other.path), str(wide.path), "--groups", "2",
                       "--csv", str(tmp_path / "c.csv")])  # fmt: skip
    assert code == 2 and f"{wide.path} has no group '2'" in text and "--groups" in text


def test_a_store_takes_the_groups_the_other_side_names_on_either_side(
    stores: dict[str, ndstream.Store],
) -> None:
    wide, other = stores["wide"], stores["other"]
    forward = wide.contrast("0", "0", other, "median", order="neuron")
    backward = wide.contrast("0", other, "0", "median", order="neuron")
    assert forward.attrs["b"] == backward.attrs["a"] == f"0 of {other.path}"
    np.testing.assert_array_equal(backward.score, -forward.score)
    # A (store, group) partner names the group for a bare store on either side too.
    left = wide.contrast("0", other, (wide, "1"), "ks", order="neuron")
    right = wide.contrast("0", (wide, "1"), other, "ks", order="neuron")
    assert left.attrs["a"] == right.attrs["b"] == f"1 of {other.path}"
    np.testing.assert_array_equal(left.score, right.score)


def test_what_is_no_side_is_refused_with_what_to_pass(stores: dict[str, ndstream.Store]) -> None:
    wide = stores["wide"]
    with pytest.raises(TypeError, match=r"a list names groups.*np\.asarray"):
        wide.contrast("0", [0.5] * WIDTH, "0")
    with pytest.raises(TypeError, match=r"tensor\.detach\(\)\.cpu\(\)\.numpy\(\)"):
        wide.contrast("0", torch.zeros(WIDTH), "0")
    for group in (1.0, True):  # a bool is no group index
        with pytest.raises(TypeError, match=r"a is a (float|bool) .*a group \(a name, an index"):
            wide.contrast("0", group, "0")
    with pytest.raises(TypeError, match=r"ds\['estimate'\]"):
        wide.contrast("0", wide.quantile("0", 0.5, "0", bounds=True), "0")
    with pytest.raises(ValueError, match="neither a nor b is one"):
        wide.contrast("0", "0", "1", layer_b="0")
    assert wide.contrast("0", ["0", 1], "0").attrs["a"] == "0 + 1"  # a list: groups, pooled


def test_compare_refuses_a_layer_pair_without_a_name(
    stores: dict[str, ndstream.Store], tmp_path: Path
) -> None:
    a, b = str(stores["wide"].path), str(stores["other"].path)
    for item in ("0:", ":0"):
        code, text = _run(["compare", a, b, "--layers", item, "--csv", str(tmp_path / "c.csv")])
        assert code == 2 and "LAYER or LAYER:LAYER_B" in text and "Traceback" not in text


def test_compare_explains_the_nan_scores_it_prints(
    stores: dict[str, ndstream.Store], tmp_path: Path
) -> None:
    wide, other = stores["wide"], stores["other"]
    code, text = _run(["compare", str(wide.path), str(other.path), "--groups", "1",
                       "--top", "2", "--csv", str(tmp_path / "c.csv")])  # fmt: skip
    assert code == 0, text
    assert "nan" in text and "nan: group 1 of B holds no values" in text


def test_activations_are_rounded_to_float32_as_documented(
    stores: dict[str, ndstream.Store],
) -> None:
    # 1e8 and 1e8 + 1 are one float32: the sides do not differ.
    result = stores["wide"].contrast("0", np.full(WIDTH, 1e8 + 1), np.full(WIDTH, 1e8), "median")
    np.testing.assert_array_equal(result.score, 0.0)
    assert "float32" in (Pooled.from_values.__doc__ or "")
    assert "float32" in (ndstream.Store.contrast.__doc__ or "")
    assert "float32" in (Path(__file__).parents[1] / "docs" / "contrast.md").read_text()
