"""The Activation view's plan: display axes, tracks, row labels, edge marks, the sort-key
strip, two stores side by side, the hidden-neuron list and the PNG caption.

Stores are real (``ndstream.ingest`` of small models); what the views draw is checked against
numpy on the raw activations (taken by the model itself, not through ndstream).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import ndstream
from ndstream.errors import StoreError
from ndstream.explore import LayerFrame, SortSpec
from ndstream.explore.display_axis import AXES, DisplayAxis, nice_ticks
from ndstream.views.dashboard import NeuralDivergence
from ndstream.views.layer_page import (
    beyond,
    composite,
    key_fractions,
    layer_page,
    page_image,
    row_labels,
    row_pixels,
)
from ndstream.views.links import parse_link

N_INPUTS, WIDTH = 4_000, 16


class Exp(nn.Module):
    """Lognormal activations: ``exp`` of Gaussian inputs, scaled per neuron."""

    def __init__(self) -> None:
        super().__init__()
        self.act = nn.Identity()
        self.register_buffer("scale", torch.linspace(0.5, 1.5, WIDTH))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(torch.exp(x * self.scale))


def _inputs(seed: int, n_groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N_INPUTS, WIDTH, generator=g), torch.arange(N_INPUTS) % n_groups


def _store(path: Path, seed: int, n_groups: int) -> Path:
    x, y = _inputs(seed, n_groups)
    data = torch.utils.data.TensorDataset(x, y)
    data.classes = [f"c{i}" for i in range(n_groups)]  # type: ignore[attr-defined]
    ndstream.ingest(
        Exp(), torch.utils.data.DataLoader(data, batch_size=500), path, layers=["act"],
        group_by="label", progress=False,
    )  # fmt: skip
    return path


def _raw(seed: int, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """The activations as the model computes them, and each input's group."""
    x, y = _inputs(seed, n_groups)
    with torch.no_grad():
        return Exp()(x).numpy(), y.numpy()


@pytest.fixture(scope="module")
def lognormal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1,000 groups of lognormal activations: the issue's squashed-axis case."""
    return _store(tmp_path_factory.mktemp("lognormal") / "a.zarr", 0, 1_000)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two stores of the same layer and groups, of different inputs."""
    folder = tmp_path_factory.mktemp("pair")
    return _store(folder / "a.zarr", 1, 3), _store(folder / "b.zarr", 2, 3)


# -- the display axis -----------------------------------------------------------------------


@pytest.mark.parametrize("lo, hi", [(-3.0, 500.0), (1e-6, 1e-3), (-1e30, -1e20), (-2.0, 2.0)])
def test_a_symlog_axis_round_trips_and_its_edges_rise(lo: float, hi: float) -> None:
    axis = DisplayAxis.choose("symlog", (lo, hi), (lo / 2, hi / 2))
    values = np.linspace(lo, hi, 101)
    np.testing.assert_allclose(axis.from_display(axis.to_display(values)), values, rtol=1e-9)
    edges = axis.edges
    assert edges[0] == lo and edges[-1] == hi and np.all(np.diff(edges) > 0)
    ticks = axis.ticks()
    assert ticks and all(axis.display_range[0] <= t <= axis.display_range[1] for t, _ in ticks)


def test_an_axis_refuses_what_it_cannot_draw() -> None:
    with pytest.raises(ValueError, match="finite lo < hi"):
        DisplayAxis(1.0, 1.0)
    with pytest.raises(ValueError, match="unknown axis 'log'; choose one of robust, full"):
        DisplayAxis.choose("log", (0.0, 1.0), (0.0, 1.0))


def test_nice_ticks_are_round_and_inside() -> None:
    assert nice_ticks(0.0, 10.0, 6) == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
    ticks = nice_ticks(-0.013, 0.042)
    assert all(-0.013 <= t <= 0.042 for t in ticks) and 0.0 in ticks


def test_the_robust_axis_shows_a_heavy_tailed_layer(lognormal: Path) -> None:
    """On the full axis every bar sits in the first few percent (the issue); on the robust
    and symlog axes the medians are well inside, and what lies beyond is marked."""
    store = ndstream.open_store(lognormal)
    raw, labels = _raw(0, 1_000)
    frame = LayerFrame(store, "act")
    medians, p99 = np.median(raw, axis=0), np.quantile(raw, 0.99, axis=0)
    median_at, p99_at = {}, {}
    for kind in AXES:
        axis = frame.axis(kind)
        lo, hi = axis.display_range
        median_at[kind] = (axis.to_display(medians) - lo) / (hi - lo)
        p99_at[kind] = (axis.to_display(p99) - lo) / (hi - lo)
    assert frame.axis("full").hi == raw.max() and frame.axis("full").lo == raw.min()
    # Full: the bulk of every neuron is squashed into the first fifth of the axis.
    assert np.max(p99_at["full"]) < 0.2 and np.max(median_at["full"]) < 0.01
    # Robust: the widest neuron's bulk fills the axis; symlog: the bulk spreads over it.
    assert 0.9 < np.max(p99_at["robust"]) <= 1.01
    assert np.min(median_at["robust"]) > 3 * np.max(median_at["full"])
    assert np.min(median_at["symlog"]) > 0.15 and np.max(p99_at["symlog"]) > 0.5
    # The robust axis spans the neurons' 1st to 99th percentiles (within the sketch's rank
    # bound of numpy's), so between 1 % and 2 % of each neuron's values lie beyond it.
    robust = frame.axis("robust")
    beyond_hi = (raw > robust.hi).mean(axis=0)
    assert robust.hi <= np.quantile(raw, 0.995, axis=0).max()
    assert robust.hi >= np.quantile(raw, 0.985, axis=0).max()
    assert np.all(beyond_hi <= 0.02)
    # Every group's values beyond each end, counted exactly (each group is small enough for
    # the sketch to keep every value), and the rows the view marks.
    for g in ("c0", "c7", "c999"):
        density = frame.density(g, robust)
        mine = raw[labels == int(g[1:])]
        np.testing.assert_allclose(density.above, (mine > robust.hi).sum(axis=0))
        np.testing.assert_allclose(density.below, (mine < robust.lo).sum(axis=0))
        page = layer_page(frame, np.arange(WIDTH), [g], {g: "#E69F00"}, title="t", axis="robust")
        below, above = beyond(page)
        np.testing.assert_array_equal(above, (mine > robust.hi).any(axis=0))
        np.testing.assert_array_equal(below, (mine < robust.lo).any(axis=0))
        # The bars hold the values inside the axis: a bin is drawn where numpy counts values.
        counts = np.stack(
            [np.histogram(mine[:, j], robust.edges)[0] for j in range(WIDTH)]
        )  # fmt: skip
        assert ((density.bars > 0) == (counts > 0)).all()


def test_symlog_bins_are_equal_on_the_axis_drawn(lognormal: Path) -> None:
    store = ndstream.open_store(lognormal)
    raw, _ = _raw(0, 1_000)
    frame = LayerFrame(store, "act")
    axis = frame.axis("symlog")
    np.testing.assert_allclose(
        np.diff(axis.to_display(axis.edges)), np.diff(axis.display_range)[0] / axis.bins
    )
    pooled = store.summary("act").histogram(axis.edges)
    exact = np.stack([np.histogram(raw[:, j], axis.edges)[0] for j in range(WIDTH)])
    # Every value is on the axis, and the sketch's counts are numpy's to within its bins.
    assert pooled.sum() == pytest.approx(raw.size)
    assert np.abs(pooled - exact).sum() / raw.size < 0.02


# -- tracks, labels and the key strip --------------------------------------------------------


def test_tracks_overlay_or_one_sub_row_per_group_and_per_store(pair: tuple[Path, Path]) -> None:
    a, b = (LayerFrame(ndstream.open_store(p), "act") for p in pair)
    groups, colours = ["c0", "c1", "c2"], {"c0": "#E69F00", "c1": "#56B4E9", "c2": "#009E73"}
    rows = np.array([5, 0, 9])
    overlay = layer_page(a, rows, groups, colours, title="t")
    assert [[x.group for x in t] for t in overlay.tracks] == [groups]
    split = layer_page(a, rows, groups, colours, title="t", layout="rows")
    assert [[x.group for x in t] for t in split.tracks] == [["c0"], ["c1"], ["c2"]]
    both = layer_page(a, rows, groups, colours, title="t", layout="rows", other=b)
    assert [(x.frame is b, x.group) for t in both.tracks for x in t] == [
        (False, "c0"), (True, "c0"), (False, "c1"), (True, "c1"), (False, "c2"), (True, "c2")
    ]  # fmt: skip
    assert [x.label for x in both.tracks[1]] == ["B: c0"]
    # One image row per track of each neuron, each the composite of its own bands on the
    # axis both stores share (it spans both).
    image = page_image(both)
    assert image.shape == (len(rows) * 6, both.axis.bins, 4)
    assert both.axis.hi == max(a.extent[1], b.extent[1]) or both.axis.kind == "robust"
    for j, track in enumerate(both.tracks):
        alone = composite(
            [(x.frame.density(x.group, both.axis).bars[rows], x.colour) for x in track]
        )
        np.testing.assert_array_equal(image[j::6], alone)
    with pytest.raises(ValueError, match="unknown layout 'stacked'; choose one of overlay, rows"):
        layer_page(a, rows, groups, colours, title="t", layout="stacked")


@pytest.mark.parametrize("n_rows", [10, 64, 128, 256, 512])
def test_labels_are_readable_at_any_page_size(n_rows: int) -> None:
    rng = np.random.default_rng(n_rows)
    rows = rng.permutation(4096)[:n_rows]
    px = row_pixels(n_rows)
    located, marked = int(rows[n_rows // 2 + 1]), [int(rows[n_rows // 2]), int(rows[-1])]
    labels = row_labels(rows.tolist(), marked, located, px)
    ys = sorted(-y for y, _ in labels)
    assert np.min(np.diff(ys)) * px >= 10  # no two labels closer than 10 px
    text = {int(-y): t for y, t in labels}
    assert text[n_rows // 2 + 1] == str(located)  # the row jumped to is always labelled
    assert text[n_rows - 1] == f"* {rows[-1]}"
    assert px >= 4 and len(labels) >= n_rows * px // 20  # and most of the rows are


def test_the_key_strip_scales_over_the_whole_layer(pair: tuple[Path, Path]) -> None:
    frame = LayerFrame(ndstream.open_store(pair[0]), "act")
    key = np.arange(WIDTH, dtype=np.float64)
    key[3] = np.nan
    page = layer_page(frame, np.array([15, 3, 0]), ["c0"], {"c0": "#E69F00"}, title="t", key=key)
    frac = key_fractions(page)
    assert frac[0] == 1.0 and np.isnan(frac[1]) and frac[2] == 0.0


# -- the dashboard with a second store ------------------------------------------------------


def test_serve_compare_sorts_by_the_stores_contrast(pair: tuple[Path, Path]) -> None:
    a, b = pair
    app = NeuralDivergence(a, compare=b)
    app.param.update(groups=["c0", "c1"], sort="ks", sort_a="group:c0", sort_b="compared:c0")
    key, order = app.sorted_layer("act")
    expected = ndstream.open_store(a).contrast(
        "act", "c0", (ndstream.open_store(b), "c0"), "ks", order="neuron"
    )
    np.testing.assert_allclose(key, np.asarray(expected["score"]))
    assert order.tolist() == np.argsort(-key, kind="stable").tolist()
    page = app.layer_page("act")
    assert "sorted by KS distance of c0 vs B: c0, largest first" in page.title
    assert (
        len(page.tracks) == 2 and page.tracks[1][0].frame.store.path == ndstream.open_store(b).path
    )
    assert app._w_b.options["B: group c0"] == "compared:c0"
    assert app._w_a.options["A: group c0"] == "group:c0"
    caption = app._png_caption()
    assert "A: a.zarr (upper sub-row) vs B: b.zarr (lower)" in caption
    assert "sorted by KS distance" in caption and "page 1 of 1" in caption


def test_serve_compare_refuses_stores_of_other_layers(
    pair: tuple[Path, Path], tmp_path: Path
) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    data = torch.utils.data.TensorDataset(torch.randn(60, 4), torch.arange(60) % 3)
    other = tmp_path / "other.zarr"
    ndstream.ingest(model, torch.utils.data.DataLoader(data, batch_size=30), other,
                    layers=["1"], progress=False)  # fmt: skip
    with pytest.raises(StoreError, match=r"other\.zarr has no layer 'act'.*same model and layers"):
        NeuralDivergence(pair[0], compare=other)


def test_the_hidden_list_brings_neurons_back_one_at_a_time(pair: tuple[Path, Path]) -> None:
    app = NeuralDivergence(pair[0])
    for n in (3, 7, 11):
        app.toggle_neuron("act", n)
    assert app._w_hidden.options == {"act #3": "act:3", "act #7": "act:7", "act #11": "act:11"}
    assert 7 not in app.order("act").tolist()
    app._w_hidden.value = ["act:3", "act:11"]  # the x of "act #7" was clicked
    assert app.hidden == {"act": [3, 11]}
    assert 7 in app.order("act").tolist() and 3 not in app.order("act").tolist()
    assert app._w_hidden.options == {"act #3": "act:3", "act #11": "act:11"}


def test_axis_and_layout_live_in_the_link(pair: tuple[Path, Path]) -> None:
    app = NeuralDivergence(pair[0])
    app.param.update(axis="symlog", layout="rows")
    link = app.link()
    assert "axis=symlog" in link and "layout=rows" in link
    fresh = NeuralDivergence(pair[0])
    assert fresh.apply_link(link) == []
    assert (fresh.axis, fresh.layout) == ("symlog", "rows")
    assert fresh.layer_page("act").axis.kind == "symlog"
    problems = fresh.apply_link("?axis=log&layout=stacked&a=compared:c0")
    assert any("axis: 'log' is not one of robust, full, symlog" in p for p in problems)
    assert any("layout: 'stacked'" in p for p in problems)
    assert any("compared:<a group> of the store beside it" in p for p in problems)
    choices = app.link_choices()
    link = parse_link("?sort=ks&groups=[\"c0\"]&a=group:c0&b=compared:c0", choices, {
        name: getattr(app, name) for name in ("layers", "groups", "instances", "sort", "sort_a",
                                              "sort_b", "descending", "hidden", "marked",
                                              "page", "rows", "axis", "layout")})  # fmt: skip
    assert "sort_b" not in link.values  # no store beside this one: no compared item


def test_the_png_names_the_sort_the_page_and_the_axis(pair: tuple[Path, Path]) -> None:
    from PIL import Image

    app = NeuralDivergence(pair[0])
    app.param.update(groups=["c0", "c1"], sort="effect", sort_a="group:c0", sort_b="group:c1",
                     rows=32, axis="full")  # fmt: skip
    caption = app._png_caption()
    assert "sorted by effect size of c0 vs c1, largest first" in caption
    assert "page 1 of 1, 32 rows a page" in caption
    assert "activation axis: every value, linear" in caption
    image = Image.open(app._png())
    # Title, 16 rows of 10 px, the axis, then the caption's lines and the legend's.
    assert image.height >= 16 * 10 + 18 * (len(caption.splitlines()) + 2)
    plain = Image.open(app._png()).convert("RGB")
    assert plain.getcolors(1 << 20) is not None and len(plain.getcolors(1 << 20) or []) > 4
    spec = app.sort_spec()
    assert spec == SortSpec("effect", "group:c0", "group:c1", True)
