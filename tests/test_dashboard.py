"""The dashboard's Python side, without a browser: view state, sorting, paging, search, links,
live mode, exports, colours and compositing.

Expected neuron orders and values are computed here with numpy (and plain Python sorting) from
``ndstream.open_store``, never from the dashboard's own ordering code. The browser tests
(``test_dashboard_browser.py``) check what a page shows; these check the state behind it.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qsl, urlencode

import numpy as np
import panel as pn
import pytest
import torch
from PIL import Image
from runs import cli, run_cli, write_config
from torch import nn

import ndstream
from ndstream.views.activation import row_of
from ndstream.views.dashboard import URL_PARAMS, NeuralDivergence, dashboard
from ndstream.views.layer_page import composite
from ndstream.views.palette import GROUP_COLOURS, group_colours, instance_colours

ATTACKED, BENIGN = "#D62728", "#000000"
SORT_KINDS = ["index", "median", "instance", "difference", "divergence", "iqr"]

# -- independent references -----------------------------------------------------------------


def expected_order(key: np.ndarray, descending: bool, exclude: Any = ()) -> list[int]:
    """Neuron ids by ``key``, largest first if ``descending``, ties by id, NaN last."""
    key = np.asarray(key, dtype=np.float64)
    drop = {int(x) for x in exclude}

    def rank(n: int) -> tuple[bool, float, int]:
        v = float(key[n])
        if math.isnan(v):
            return (True, 0.0, n)
        return (False, -v if descending else v, n)

    return [n for n in sorted(range(key.shape[0]), key=rank) if n not in drop]


def instance_id(store: ndstream.Store, row: int) -> str:
    """The id the dashboard gives the instance in row ``row`` of the store's table."""
    table = store.instances()
    index, condition = int(table.index[row]), str(table.condition[row])
    return f"{index}-{condition}" if condition else str(index)


def instance_row(store: ndstream.Store, iid: str) -> int:
    """Row in the store's instance table of an instance id (its dataset index first)."""
    table = store.instances()
    index, _, condition = iid.partition("-")
    conditions = np.array([str(c) for c in table.condition.tolist()])
    hits = np.flatnonzero((table.index == int(index)) & (conditions == condition))
    assert hits.size == 1, iid
    return int(hits[0])


def item_values(store: ndstream.Store, layer: str, item: str) -> np.ndarray:
    """``[neuron]`` values of a sort item: a group's median or an instance's activation."""
    kind, _, name = item.partition(":")
    if kind == "group":
        return store.quantile(layer, 0.5, name)
    assert kind == "instance", item
    return store.instance_values(layer)[instance_row(store, name), 0].astype(np.float64)


def expected_key(store: ndstream.Store, layer: str, sort: str, a: str, b: str) -> np.ndarray:
    """``[neuron]`` key of a sort, from the store's public API alone."""
    if sort == "index":
        return np.arange(store.n_neurons(layer), dtype=np.float64)
    if sort in ("median", "instance"):
        return item_values(store, layer, a)
    if sort == "difference":
        return item_values(store, layer, a) - item_values(store, layer, b)
    if sort == "iqr":
        q = store.quantile(layer, [0.25, 0.75], a.partition(":")[2])
        return q[:, 1] - q[:, 0]
    assert sort == "divergence"
    values = item_values(store, layer, a)
    scored = store.divergence({layer: values[None]}, group=b.partition(":")[2], layers=[layer])
    return scored.contribution(layer)[0]


def first_grouping(store: ndstream.Store) -> list[str]:
    first = store.groupings[0]
    return [g for g, k in zip(store.groups, store.groupings, strict=True) if k == first]


def _table_rows(app: NeuralDivergence, layer: str) -> list[tuple[dict[str, str], list[str]]]:
    """The rows of the order table the page gets for ``layer``: attributes and cells."""
    out = []
    for attrs, cells in re.findall(r"<tr ([^>]*)>(.*?)</tr>", app._tables[layer].object, re.S):
        out.append(
            (dict(re.findall(r'([\w-]+)="([^"]*)"', attrs)), re.findall(r"<td>(.*?)</td>", cells))
        )
    return out


def table_neurons(app: NeuralDivergence, layer: str) -> list[int]:
    """Neuron ids of the order table of ``layer``, top to bottom."""
    return [int(a["data-neuron"]) for a, _ in _table_rows(app, layer)]


def table_ranks(app: NeuralDivergence, layer: str) -> list[int]:
    return [int(cells[0]) for _, cells in _table_rows(app, layer)]


def marked_in_table(app: NeuralDivergence, layer: str) -> list[int]:
    return [int(a["data-neuron"]) for a, _ in _table_rows(app, layer) if a["data-marked"] == "1"]


def message(app: NeuralDivergence) -> str | None:
    """The message the status line shows, if any."""
    found = re.search(r'<div class="nd-message">(.*?)</div>', app._status.object, re.S)
    return found.group(1) if found else None


def progress(app: NeuralDivergence) -> tuple[int, bool]:
    found = re.search(r'data-samples="(\d+)" data-complete="(true|false)"', app._status.object)
    assert found, app._status.object
    return int(found.group(1)), found.group(2) == "true"


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture
def store(reference: Path) -> ndstream.Store:
    return ndstream.open_store(reference)


@pytest.fixture
def app(reference: Path) -> NeuralDivergence:
    """A fresh dashboard over the reference store (state changes stay in one test)."""
    return NeuralDivergence(reference)


@pytest.fixture
def two_instances(store: ndstream.Store) -> list[str]:
    """Ids of two recorded instances: the first and the last of the store's table."""
    n = len(store.instances().index)
    assert n >= 2
    return [instance_id(store, 0), instance_id(store, n - 1)]


# -- defaults -------------------------------------------------------------------------------


def test_defaults(app: NeuralDivergence, store: ndstream.Store) -> None:
    assert store.layers == ["conv1", "relu1", "conv2", "relu2", "fc1", "relu3", "fc2"]
    assert app.layers == store.layers[-3:]
    first = first_grouping(store)
    assert len(first) >= 3 and len(first) < len(store.groups)
    assert app.groups == first[:2]
    assert app.instances == [instance_id(store, 0)]
    assert (app.sort, app.sort_a, app.descending) == ("median", f"group:{first[0]}", True)
    assert (app.page, app.rows, app.click, app.hidden, app.marked) == (0, 64, "hide", {}, {})

    # relu3 has many tied medians (zeros): ties must go by id, ascending.
    relu3 = store.quantile("relu3", 0.5, first[0])
    assert len(np.unique(relu3)) < len(relu3)
    for layer in app.layers:
        want = expected_order(store.quantile(layer, 0.5, first[0]), descending=True)
        assert app.order(layer).tolist() == want, layer
        assert table_neurons(app, layer) == want[: app.rows], layer

    assert progress(app) == (store.meta.samples_done, True)
    assert store.meta.samples_done == 1797
    assert message(app) is None


def test_dashboard_returns_the_layout_for_a_store(reference: Path) -> None:
    view = dashboard(reference)
    assert not view.select(lambda o: "nd-error" in (getattr(o, "css_classes", None) or []))
    assert isinstance(view, pn.viewable.Viewable)


# -- hiding and marking ---------------------------------------------------------------------


def test_hiding_removes_a_neuron_and_show_hidden_restores_it(app: NeuralDivergence) -> None:
    before = {layer: app.order(layer).tolist() for layer in app.layers}
    gone = before["fc2"][2]
    app.toggle_neuron("fc2", gone)
    assert app.hidden == {"fc2": [gone]}
    assert app.order("fc2").tolist() == [n for n in before["fc2"] if n != gone]
    assert gone not in table_neurons(app, "fc2")
    assert app.order("fc1").tolist() == before["fc1"]  # other layers untouched

    app.toggle_neuron("fc1", before["fc1"][0])
    app.toggle_neuron("conv1", 3)  # a layer not shown
    app.show_hidden()
    assert app.hidden == {"conv1": [3]}  # hidden neurons of layers not shown stay hidden
    for layer in app.layers:
        assert app.order(layer).tolist() == before[layer], layer
    assert table_neurons(app, "fc2") == before["fc2"]


def test_marking_toggles_and_does_not_change_the_order(app: NeuralDivergence) -> None:
    app.click = "mark"
    before = app.order("fc2").tolist()
    n = before[0]
    app.toggle_neuron("fc2", n)
    assert app.marked == {"fc2": [n]}
    assert app.hidden == {}
    assert app.order("fc2").tolist() == before
    assert marked_in_table(app, "fc2") == [n]

    app.toggle_neuron("fc2", n)  # a second click unmarks
    assert app.marked == {}  # and a layer without marks leaves the link
    assert "marked=%7B%7D" in app.link()
    assert marked_in_table(app, "fc2") == []

    app.toggle_neuron("fc2", before[1])
    app.toggle_neuron("fc2", before[3])
    app.toggle_neuron("conv1", 5)  # a layer not shown
    assert app.marked["fc2"] == sorted([before[1], before[3]])
    assert sorted(marked_in_table(app, "fc2")) == sorted([before[1], before[3]])
    app.clear_marks()
    assert app.marked == {"conv1": [5]}
    assert marked_in_table(app, "fc2") == []
    assert app.order("fc2").tolist() == before


# -- paging and search ----------------------------------------------------------------------


def test_pages_split_the_order(app: NeuralDivergence, store: ndstream.Store) -> None:
    app.rows = 32
    assert store.n_neurons("fc1") == 64
    want = expected_order(store.quantile("fc1", 0.5, app.groups[0]), descending=True)
    assert app.order("fc1").tolist() == want
    app.page = 0
    first = app.page_rows("fc1").tolist()
    assert table_neurons(app, "fc1") == first
    app.page = 1
    second = app.page_rows("fc1").tolist()
    assert table_neurons(app, "fc1") == second
    assert table_ranks(app, "fc1") == list(range(33, 65))
    assert (len(first), len(second)) == (32, 32)
    assert first + second == want
    # fc2 has 10 neurons: on page 1 it shows its last (only) page.
    assert app.page_rows("fc2").tolist() == app.order("fc2").tolist()

    app.page = 5  # past the end
    assert app.page_rows("fc1").tolist() == want[32:]

    app.toggle_neuron("fc1", want[0])
    app.page = 1
    assert app.page_rows("fc1").tolist() == want[33:]


def test_fewer_pages_move_the_page_and_its_link(app: NeuralDivergence) -> None:
    """More rows a page leave fewer pages: the page (and the link that holds it) moves to the
    last one, so that the address bar still applies whole."""
    app.rows = 32
    app.page = 1
    assert "page=1" in app.link()
    app.rows = 512
    assert app.page == 0
    assert "page=1" not in app.link()
    assert app._w_page.value == 0


def test_a_link_too_long_to_open_again_leaves_the_neuron_lists_out(tmp_path: Path) -> None:
    """Thousands of hidden neurons make a link the server would refuse (Tornado drops a
    request past 64 KiB): the address bar then leaves the hidden and marked neurons out, says
    so, and still opens the rest of the view."""
    from ndstream.views.links import MAX_LINK

    width = 6000
    data = torch.utils.data.TensorDataset(torch.randn(40, width), torch.zeros(40, dtype=torch.long))
    path = tmp_path / "wide.zarr"
    model = nn.Sequential(nn.Identity())
    ndstream.ingest(model, data, path, layers=["0"], group_by="all", progress=False)
    app = NeuralDivergence(path)
    layer = app.layers[0]
    app.hidden = {layer: list(range(100))}
    assert "hidden=" in app.link() and len(app.link()) < MAX_LINK
    location = SimpleNamespace(search="")
    app._write_link(location)
    assert json.loads(dict(parse_qsl(location.search[1:]))["hidden"]) == {layer: list(range(100))}
    app.hidden = {layer: list(range(width - 10))}
    app._write_link(location)
    assert len(location.search) <= MAX_LINK
    fields = dict(parse_qsl(location.search[1:]))
    assert json.loads(fields["hidden"]) == {} and json.loads(fields["layers"]) == [layer]
    assert "leaves out the hidden and marked neurons" in (message(app) or "")
    # The shortened link opens the view it names, whole.
    other = NeuralDivergence(path)
    assert other.apply_link(location.search) == []
    assert other.layers == [layer] and other.hidden == {}


def test_locate_jumps_to_the_page_of_a_neuron(app: NeuralDivergence, store: ndstream.Store) -> None:
    app.rows = 32
    want = expected_order(store.quantile("fc1", 0.5, app.groups[0]), descending=True)
    page = want.index(17) // 32
    app.page = 1 - page
    app.locate("17")
    assert app.page == page
    assert 17 in app.page_rows("fc1").tolist()
    assert 17 in table_neurons(app, "fc1")
    assert app._located == 17
    assert message(app) is None

    # The first shown layer that has the neuron decides: fc2 (10 neurons) first, then fc1.
    late = [n for n in range(10) if want.index(n) >= 32]
    assert late, "no neuron id below 10 on fc1's second page"
    app.layers = ["fc1", "fc2"]
    app.page = 0
    app.locate(str(late[0]))
    assert app.page == 1
    app.layers = ["fc2", "fc1"]
    app.page = 1
    app.locate(str(late[0]))
    assert app.page == 0


def test_locate_reports_what_it_cannot_find(app: NeuralDivergence) -> None:
    app.rows = 32
    app.layers = ["fc1"]
    app.page = 1
    app.locate("x")
    assert app.page == 1
    assert "not a neuron id" in (message(app) or "")

    app.locate("999")
    assert app.page == 1
    assert "999" in (message(app) or "") and "not shown" in (message(app) or "")

    hidden = int(app.order("fc1")[0])  # on page 0, so a jump would change the page
    app.toggle_neuron("fc1", hidden)
    app.page = 1
    app.locate(f" {hidden} ")
    assert app.page == 1
    assert str(hidden) in (message(app) or "") and "not shown" in (message(app) or "")

    app.locate("17")
    assert app._located == 17
    app.locate("")
    assert app._located is None
    assert message(app) is None


# -- sorting --------------------------------------------------------------------------------


def sort_cases(groups: list[str], insts: list[str]) -> list[tuple[str, str, str]]:
    g, i = [f"group:{x}" for x in groups], [f"instance:{x}" for x in insts]
    return [
        ("index", "", ""),
        ("median", g[1], ""),
        ("instance", i[1], ""),
        ("difference", i[0], g[1]),
        ("difference", g[1], g[0]),
        ("divergence", i[1], g[0]),
        ("iqr", g[1], ""),
    ]


CASE_IDS = ["index", "median", "instance", "difference-i-g", "difference-g-g", "divergence", "iqr"]


@pytest.mark.parametrize("descending", [True, False], ids=["desc", "asc"])
@pytest.mark.parametrize("case", range(len(CASE_IDS)), ids=CASE_IDS)
def test_each_sort_matches_the_store(
    app: NeuralDivergence,
    store: ndstream.Store,
    two_instances: list[str],
    case: int,
    descending: bool,
) -> None:
    app.layers = ["conv2", "fc1", "relu3", "fc2"]
    app.groups = ["3", "7"]
    app.instances = two_instances
    sort, a, b = sort_cases(app.groups, app.instances)[case]
    app.sort = sort
    if a:
        app.sort_a = a
    if b:
        app.sort_b = b
    app.descending = descending
    assert (app.sort, app.sort_a if a else a, app.sort_b if b else b) == (sort, a, b)
    assert app.sort_spec() is not None
    for layer in app.layers:
        key = expected_key(store, layer, sort, a, b)
        assert np.isfinite(key).all()
        want = expected_order(key, descending)
        assert app.order(layer).tolist() == want, layer
        assert table_neurons(app, layer) == want[: app.rows], layer


def test_sort_keys_differ_between_kinds(store: ndstream.Store, two_instances: list[str]) -> None:
    """The sort cases above are not all the same order (else they would test little)."""
    orders = {
        tuple(expected_order(expected_key(store, "fc1", *c), True))
        for c in sort_cases(["3", "7"], two_instances)
    }
    assert len(orders) == len(CASE_IDS)


def test_changing_the_sort_offers_valid_items(
    app: NeuralDivergence, store: ndstream.Store, two_instances: list[str]
) -> None:
    app.instances = two_instances
    groups = {f"group:{g}" for g in app.groups}
    insts = {f"instance:{i}" for i in app.instances}

    app.sort = "instance"
    assert app.sort_a.startswith("instance:") and app.sort_a in insts
    assert set(app._w_a.options.values()) == insts
    app.sort = "divergence"
    assert app.sort_a in insts and app.sort_b in groups
    assert set(app._w_b.options.values()) == groups
    app.sort = "difference"
    assert app.sort_a in groups | insts and app.sort_b in groups | insts
    assert app.sort_a != app.sort_b
    app.sort = "iqr"
    assert app.sort_a in groups
    app.sort = "median"
    assert app.sort_a in groups
    for sort in SORT_KINDS:
        app.sort = sort
        assert app.sort_spec() is not None, sort
        for layer in app.layers:
            key = expected_key(store, layer, sort, app.sort_a, app.sort_b)
            assert app.order(layer).tolist() == expected_order(key, True), (sort, layer)

    # Deselecting the group a sort uses moves the sort to a group still selected.
    app.sort = "median"
    app.sort_a = "group:0"
    app.groups = ["2", "3"]
    assert app.sort_a in {"group:2", "group:3"}
    key = expected_key(store, "fc1", "median", app.sort_a, "")
    assert app.order("fc1").tolist() == expected_order(key, True)


def test_the_drawn_view_follows_every_sort_change(
    app: NeuralDivergence, store: ndstream.Store, two_instances: list[str]
) -> None:
    from bokeh.document import Document

    app.panel().get_root(Document())  # as a server session: widgets have Bokeh models
    app.instances = two_instances
    g = app.groups[0]
    app.param.update(sort="median", sort_a=f"group:{g}")
    # Same item, another kind of sort: the table must follow (no item change to trigger it).
    app.sort = "iqr"
    q = store.quantile("fc1", [0.25, 0.75], g)
    assert table_neurons(app, "fc1") == expected_order(q[:, 1] - q[:, 0], True)
    # Kind and item changed together keep the item asked for, not the first one offered.
    app.param.update(sort="instance", sort_a=f"instance:{two_instances[1]}")
    assert app.sort_a == f"instance:{two_instances[1]}"
    key = item_values(store, "fc1", app.sort_a)
    assert table_neurons(app, "fc1") == expected_order(key, True)
    app.param.update(sort="median", sort_a=f"group:{app.groups[1]}")
    assert app.sort_a == f"group:{app.groups[1]}"


# -- links ----------------------------------------------------------------------------------

GOOD_LINK: dict[str, Any] = {
    "layers": ["conv2", "fc2"], "groups": ["7", "3"], "sort": "iqr", "sort_a": "group:7",
    "descending": False, "rows": 32, "hidden": {"fc2": [4]},
}  # fmt: skip
BAD_VALUES = [
    ("layers", ["nope"], "layers"),
    ("groups", ["nope"], "groups"),
    ("instances", ["nope"], "instances"),
    ("sort", "nope", "sort"),
    ("rows", 7, "rows"),
    ("page", -1, "page"),
]


@pytest.mark.parametrize(("name", "bad", "url_name"), BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_a_link_with_a_bad_value_applies_the_rest(
    reference: Path, store: ndstream.Store, name: str, bad: Any, url_name: str
) -> None:
    app = NeuralDivergence(reference)
    default = getattr(app, name)
    values = {**GOOD_LINK, name: bad}
    # As a link writes them: strings as they are, everything else as JSON.
    query = {URL_PARAMS[k]: v if isinstance(v, str) else json.dumps(v) for k, v in values.items()}
    problems = app.apply_link("?" + urlencode(query))
    # Each bad value is named; with group 7 gone, so is the sort's item group:7.
    assert len(problems) == (2 if name == "groups" else 1), problems
    assert getattr(app, name) == default, f"{name} took the bad value"
    for key, value in values.items():
        if key == name or (name == "groups" and key == "sort_a"):  # group:7 needs group 7
            continue
        assert getattr(app, key) == value, key
    text = message(app)
    assert text is not None, "no message in the status"
    assert url_name in text and str(bad).strip("[]'") in text, text
    sort, a = app.sort, app.sort_a
    assert a.startswith("group:")
    for layer in app.layers:
        key = expected_key(store, layer, sort, a, "")
        want = expected_order(key, app.descending, app.hidden.get(layer, []))
        assert app.order(layer).tolist() == want, layer


# -- live mode ------------------------------------------------------------------------------


@pytest.mark.slow
def test_live_mode_follows_a_running_ingest(tmp_path: Path, env: dict[str, str]) -> None:
    path = tmp_path / "live.zarr"
    config = write_config(tmp_path, checkpoint={"every_steps": 2, "every_seconds": None})
    ingest = subprocess.Popen(cli(config, path), env=env, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while True:
            assert time.monotonic() < deadline, "no checkpoint within 240 s"
            assert ingest.poll() in (None, 0), f"ingest exited with {ingest.returncode}"
            try:
                ndstream.open_store(path)
                break
            except ndstream.StoreError:
                time.sleep(0.1)
        while True:
            # Checkpoints come every two steps, so the one the page opened may go before
            # this first read: open the page again (a redraw would read through it).
            try:
                app = NeuralDivergence(path)
                first_count = app.frame("fc1").group("3").count
                break
            except ndstream.StoreError:
                assert time.monotonic() < deadline, "every checkpoint went before a read"
        first_done = app.store.meta.samples_done
        assert not app.store.meta.complete
        assert progress(app) == (first_done, False)
        # A selection the user made, which every reload must keep.
        app.layers = ["conv2", "fc1"]
        app.groups = ["3", "7"]
        app.sort, app.sort_a, app.descending = "iqr", "group:7", False
        app.toggle_neuron("fc1", 5)
        reloaded, seen = 0, [first_done]
        while True:
            assert time.monotonic() < deadline, f"not complete within 240 s: {seen}"
            if app.reload():
                reloaded += 1
                seen.append(app.store.meta.samples_done)
                assert progress(app) == (app.store.meta.samples_done, app.store.meta.complete)
            if app.store.meta.complete:
                break
            time.sleep(0.2)
        assert ingest.wait(60) == 0
    finally:
        if ingest.poll() is None:
            ingest.kill()
            ingest.wait()

    final = ndstream.open_store(path)
    assert final.complete
    assert reloaded >= 1
    assert seen == sorted(seen) and seen[-1] > seen[0], seen
    assert app.store.meta.samples_done == 1797 == final.meta.samples_done
    assert progress(app) == (1797, True)
    # The frames were rebuilt from the final checkpoint.
    assert app.frame("fc1").group("3").count == final.count("fc1", "3")
    assert first_count < final.count("fc1", "3")
    # The selection survived.
    assert app.layers == ["conv2", "fc1"]
    assert app.groups == ["3", "7"]
    assert (app.sort, app.sort_a, app.descending) == ("iqr", "group:7", False)
    assert app.hidden == {"fc1": [5]}
    for layer in app.layers:
        key = expected_key(final, layer, "iqr", "group:7", "")
        want = expected_order(key, False, app.hidden.get(layer, []))
        assert app.order(layer).tolist() == want, layer
        assert table_neurons(app, layer) == want[: app.rows], layer


def _move_on(path: Path) -> str:
    """Commit a copy of the store's checkpoint as the next one and delete the old one, as a
    running ingest does with the checkpoints before its last two; the new folder's name."""
    import os
    import shutil

    old = (path / ".current").resolve()
    new = old.with_name(f"{int(old.name) + 1:06d}")
    shutil.copytree(old, new, symlinks=True)
    link = path / ".current.next"
    os.symlink(f".snapshots/{new.name}", link)
    os.replace(link, path / ".current")
    shutil.rmtree(old)
    return new.name


@pytest.mark.parametrize("drawn", [False, True], ids=["state", "document"])
def test_a_view_whose_checkpoint_is_gone_reads_the_latest(
    reference: Path, store: ndstream.Store, tmp_path: Path, drawn: bool
) -> None:
    """A page that draws while an ingest deletes its checkpoint reopens the store instead of
    failing (live mode's first page under load, where checkpoints come every second)."""
    import shutil

    from bokeh.document import Document

    path = tmp_path / "moving.zarr"
    shutil.copytree(reference, path, symlinks=True)
    app = NeuralDivergence(path)
    if drawn:  # the plots draw (and read) first, in the refresh
        app.panel().get_root(Document())
    newest = _move_on(path)
    app.layers = ["conv2", "fc2"]  # conv2 was never read from the checkpoint that went
    assert message(app) is None, message(app)
    assert app.store.snapshot.name == newest
    want = expected_order(store.quantile("conv2", 0.5, app.groups[0]), descending=True)
    assert table_neurons(app, "conv2") == want[: app.rows]
    # Reopened in a draw, the status line and choices follow at the next poll.
    assert app.reload() is drawn
    assert app.reload() is False
    assert progress(app) == (store.meta.samples_done, True)


def test_a_draw_reads_through_checkpoints_that_go_one_after_another(
    reference: Path, store: ndstream.Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plots draw while an ingest commits faster than they read: each checkpoint the
    page reopens is gone before it reads it, three times over. The page draws from the
    latest, as a redraw does, instead of showing the error page."""
    import shutil

    from bokeh.document import Document

    import ndstream.views.dashboard as dashboard_module

    path = tmp_path / "racing.zarr"
    shutil.copytree(reference, path, symlinks=True)
    app = NeuralDivergence(path)
    layout = app.panel()  # the tables read the first checkpoint; the plots are not drawn
    opened, races = dashboard_module.open_store, [3]

    def open_then_lose(where: Path) -> ndstream.Store:
        reopened = opened(where)
        if races[0]:
            races[0] -= 1
            _move_on(path)
        return reopened

    monkeypatch.setattr(dashboard_module, "open_store", open_then_lose)
    _move_on(path)
    root = layout.get_root(Document())  # the plots draw here, and read the store
    assert races == [0]
    assert "nd-error" not in (root.css_classes or [])
    latest = (path / ".current").resolve().name
    assert app.store.snapshot.name == latest
    drawn = app._shown
    assert set(drawn) == set(app.layers)
    want = expected_order(store.quantile("fc2", 0.5, app.groups[0]), descending=True)
    assert list(drawn["fc2"]) == want[: app.rows]


def test_the_live_poll_reads_through_a_checkpoint_that_goes_as_it_opens(
    reference: Path, store: ndstream.Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The live poll finds a new checkpoint, and it goes before the poll has read it (an
    ingest committing every step), twice over: the poll opens the latest instead of putting
    an error on the status line."""
    import shutil

    import ndstream.views.dashboard as dashboard_module

    path = tmp_path / "polled.zarr"
    shutil.copytree(reference, path, symlinks=True)
    app = NeuralDivergence(path)
    app.live = True
    opened, races = dashboard_module.open_store, [2]

    def lose_then_open(where: Path) -> ndstream.Store:
        if races[0]:  # the checkpoint .current names goes while it is opened
            races[0] -= 1
            _move_on(path)
            raise ndstream.StoreError(f"the checkpoint of {where} is gone")
        return opened(where)

    _move_on(path)
    monkeypatch.setattr(dashboard_module, "open_store", lose_then_open)
    app._poll()
    assert races == [0]
    assert message(app) is None, message(app)
    assert app.store.snapshot.name == (path / ".current").resolve().name
    assert progress(app) == (store.meta.samples_done, True)


def test_reload_without_a_new_checkpoint_does_nothing(app: NeuralDivergence) -> None:
    store = app.store
    assert app.reload() is False
    assert app.store is store


# -- exports --------------------------------------------------------------------------------


def test_csv_lists_the_sorted_neurons(
    app: NeuralDivergence, store: ndstream.Store, two_instances: list[str]
) -> None:
    app.instances = two_instances
    app.toggle_neuron("fc2", 4)
    app.toggle_neuron("relu3", 0)
    app.click = "mark"
    app.toggle_neuron("fc1", 9)
    rows = list(csv.reader(io.StringIO(app._csv().getvalue())))
    header, body = rows[0], rows[1:]
    assert header[:5] == ["layer", "rank", "neuron", "key", "marked"]
    for g in app.groups:
        assert f"median {g}" in header and f"iqr {g}" in header
    for i in app.instances:
        assert f"instance {i}" in header
    col = {name: j for j, name in enumerate(header)}
    assert all(len(r) == len(header) for r in body)

    layers = [r[0] for r in body]
    assert layers == [x for x in app.layers for _ in range(layers.count(x))]
    g0 = app.groups[0]
    for layer in app.layers:
        mine = [r for r in body if r[0] == layer]
        hidden = app.hidden.get(layer, [])
        key = np.asarray(store.quantile(layer, 0.5, g0))
        want = expected_order(key, True, hidden)
        assert len(mine) == store.n_neurons(layer) - len(hidden)
        assert [int(r[col["neuron"]]) for r in mine] == want, layer
        assert [int(r[col["rank"]]) for r in mine] == list(range(1, len(want) + 1))
        assert [float(r[col["key"]]) for r in mine] == key[want].tolist()
        marked = [int(r[col["neuron"]]) for r in mine if r[col["marked"]] == "1"]
        assert marked == ([9] if layer == "fc1" else [])
        for g in app.groups:
            median = store.quantile(layer, 0.5, g).values
            q = store.quantile(layer, [0.25, 0.75], g).values
            assert [float(r[col[f"median {g}"]]) for r in mine] == median[want].tolist()
            assert [float(r[col[f"iqr {g}"]]) for r in mine] == (q[:, 1] - q[:, 0])[want].tolist()
        for i in app.instances:
            values = item_values(store, layer, f"instance:{i}")
            assert [float(r[col[f"instance {i}"]]) for r in mine] == values[want].tolist()


def test_png_shows_every_selected_layer(app: NeuralDivergence) -> None:
    sizes = []
    for layers in (["fc2"], ["fc1", "fc2"], ["conv2", "fc1", "fc2"]):
        app.layers = layers
        image = Image.open(io.BytesIO(app._png().getvalue()))
        assert image.format == "PNG"
        image.load()
        sizes.append(image.size)
        colours = {c for _, c in image.convert("RGB").getcolors(1 << 20)}
        for colour in group_colours(app.groups).values():
            rgb = tuple(int(colour[k : k + 2], 16) for k in (1, 3, 5))
            assert rgb in colours, (layers, colour)
    widths = [w for w, _ in sizes]
    assert widths[0] < widths[1] < widths[2], sizes
    assert sizes[0][1] < sizes[1][1]  # 10 rows of fc2, then 64 rows of fc1


# -- colours --------------------------------------------------------------------------------


def test_group_colours_are_unique_and_limited() -> None:
    names = [f"g{i}" for i in range(len(GROUP_COLOURS))]
    colours = group_colours(names)
    assert list(colours) == names
    assert len(set(colours.values())) == len(names)
    assert all(re.fullmatch(r"#[0-9A-Fa-f]{6}", c) for c in colours.values())
    assert group_colours(names[:3]) == {n: colours[n] for n in names[:3]}  # by selection order
    assert ATTACKED not in colours.values() and BENIGN not in colours.values()
    with pytest.raises(ValueError, match="deselect"):
        group_colours([*names, "one more"])


def test_instance_colours() -> None:
    selected = [("a", "attacked"), ("b", "benign"), ("c", ""), ("d", ""), ("e", "")]
    colours = instance_colours(selected)
    assert colours["a"] == ATTACKED
    assert colours["b"] == BENIGN
    assert len(set(colours.values())) == len(selected)
    others = instance_colours([("c", ""), ("d", ""), ("e", ""), ("f", "")])
    assert len(set(others.values())) == 4
    for cond, colour in (
        ("ADVERSARIAL", ATTACKED), ("Clean", BENIGN), ("original", BENIGN),
        ("attacked:one_pixel", ATTACKED), ("attacked:fgsm", ATTACKED),
    ):  # fmt: skip
        assert instance_colours([("x", cond)]) == {"x": colour}
    # Red and black mean attacked and benign: instances without a condition get neither.
    assert not {ATTACKED, BENIGN} & set(others.values())


def test_selecting_more_groups_than_colours_keeps_those_that_can_be_told_apart(
    app: NeuralDivergence, store: ndstream.Store
) -> None:
    app.groups = store.groups[: len(GROUP_COLOURS) + 1]
    assert app.groups == store.groups[: len(GROUP_COLOURS)]
    assert f"at most {len(GROUP_COLOURS)} groups" in (message(app) or "")
    assert app.order("fc2").size == 10  # the view still draws


# -- compositing ----------------------------------------------------------------------------


def test_composite_of_one_group() -> None:
    density = np.array([[0.0, 0.0, 0.0, 0.0], [0.0, 0.25, 0.5, 1.0], [1.0, 0.0, 0.1, 0.0]])
    colour = "#56B4E9"
    rgb = (0x56, 0xB4, 0xE9)
    image = composite([(density, colour)])
    assert image.shape == (3, 4, 4) and image.dtype == np.uint8
    alpha = image[..., 3].astype(int)
    assert (alpha[density == 0] == 0).all()
    assert (alpha[density > 0] > 0).all()
    assert (image[density > 0][:, :3] == rgb).all()
    assert alpha[1, 1] < alpha[1, 2] < alpha[1, 3] == 255  # opacity grows with density
    assert alpha[2, 2] < alpha[1, 1]
    # Rows are taken in the order given.
    flipped = composite([(density[[2, 0, 1]], colour)])
    np.testing.assert_array_equal(flipped, image[[2, 0, 1]])


def test_composite_layers_groups_in_order() -> None:
    under = np.array([[1.0, 1.0, 0.0, 0.0]])
    over = np.array([[1.0, 0.0, 1.0, 0.0]])
    colours = {"under": "#E69F00", "over": "#0072B2"}
    image = composite([(under, colours["under"]), (over, colours["over"])])
    assert tuple(image[0, 0]) == (0x00, 0x72, 0xB2, 255)  # the last group is on top
    assert tuple(image[0, 1]) == (0xE6, 0x9F, 0x00, 255)
    assert tuple(image[0, 2]) == (0x00, 0x72, 0xB2, 255)
    assert image[0, 3, 3] == 0
    swapped = composite([(over, colours["over"]), (under, colours["under"])])
    assert tuple(swapped[0, 0]) == (0xE6, 0x9F, 0x00, 255)


def test_composite_of_a_store_layer(app: NeuralDivergence, store: ndstream.Store) -> None:
    frame = app.frame("fc1")
    rows = np.arange(store.n_neurons("fc1"))
    groups = ["0", "1"]
    colours = group_colours(groups)
    image = composite([(frame.density(g).bars[rows], colours[g]) for g in groups])
    counts = sum(np.asarray(store.histogram("fc1", g, bins=frame.edges)) for g in groups)
    assert image.shape == (len(rows), len(frame.edges) - 1, 4)
    assert ((image[..., 3] == 0) == (counts == 0)).all()
    assert (image[..., 3] == 0).any() and (image[..., 3] > 0).any()


def test_row_of_maps_a_click_to_a_row() -> None:
    assert [row_of(-float(i), 5) for i in range(5)] == [0, 1, 2, 3, 4]
    assert row_of(0.4, 5) == 0 and row_of(-0.4, 5) == 0 and row_of(-2.3, 5) == 2
    assert row_of(-1.6, 5) == 2
    assert row_of(0.6, 5) is None
    assert row_of(-4.6, 5) is None and row_of(-5.0, 5) is None
    assert row_of(0.0, 0) is None


# -- bad stores -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["missing", "plain folder"])
def test_dashboard_explains_a_bad_store(tmp_path: Path, kind: str) -> None:
    if kind == "missing":
        path, reason = tmp_path / "nonexistent", "does not exist"
    else:
        path, reason = tmp_path / "plain", "not a"
        path.mkdir()
        (path / "notes.txt").write_text("not a store")
    view = dashboard(path)
    # HTML built from escaped text (an Alert renders Markdown, which lets HTML through).
    assert isinstance(view, pn.pane.HTML) and not isinstance(view, pn.pane.Markdown)
    assert "nd-error" in view.css_classes
    text = view.object
    assert f"cannot show {path.name}" in text and reason in text
    assert str(tmp_path) not in text  # the server's folders stay out of the page
    assert "ndstream serve" in text


def test_serve_refuses_a_missing_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In this process: the refusal comes before any server (one that started fails here)."""
    missing = tmp_path / "nonexistent"
    with socket.socket() as s:  # a free port, in case a server did start
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def started(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the server started")

    monkeypatch.setattr(pn, "serve", started)
    code, out, err = run_cli("serve", missing, "--port", port)
    assert code == 2, (out, err)
    assert "ndstream serve" in err and "does not exist" in err
    assert str(missing) in err
    assert "Traceback" not in err
    assert "dashboard of" not in out  # the server never started


@pytest.mark.slow
def test_serve_refuses_a_port_in_use(reference: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "ndstream", "serve", str(reference), "--port", str(port)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "--port" in result.stderr


@pytest.mark.parametrize("port", ["99999", "-1", "0"])
def test_serve_refuses_a_port_out_of_range(reference: Path, port: str) -> None:
    # bind() raises OverflowError for these, which went out as a traceback.
    from runs import run_cli

    code, _, err = run_cli("serve", reference, "--port", port)
    assert code == 2 and "Traceback" not in err
    assert f"cannot listen on port {port}: pass a --port from 1 to 65535" in err


def _get(port: int, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], str]:
    """A raw GET to the server on this machine, with the headers given (Host among them)."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read().decode("utf-8")
    finally:
        conn.close()


@pytest.mark.slow
def test_serve_warns_off_loopback_and_keeps_to_its_origins(reference: Path, tmp_path: Path) -> None:
    """On 0.0.0.0 the server says who can reach it, and serves browsers only under the origins
    of the address served and this machine's loopback names: a page opened by another name
    (another address of this machine, or a site whose name resolves here) gets a 403, its
    websocket too, unless --allow-websocket-origin names it."""
    import base64

    from browser import free_port, ndstream_serve

    other = "192.0.2.7"  # another name for this machine, as a browser would send it
    log = tmp_path / "serve.log"
    with ndstream_serve(reference, log, "--address", "0.0.0.0") as (port, _):
        text = log.read_text()
        assert f"listening on 0.0.0.0: every host that can reach this machine on port {port}" in (
            text
        ), text
        assert "--allow-websocket-origin" in text and f"at http://127.0.0.1:{port}/" in text
        for name in (f"127.0.0.1:{port}", f"localhost:{port}"):
            status, _, body = _get(port, "/", {"Host": name})
            assert status == 200, (name, status)
        # Links whose "digits" int() refuses ("²", "①", 5,000 digits) once failed the session
        # in Panel's own query parsing: a bare HTTP 500 instead of the page.
        for query in ("?x=%C2%B2", "?page=%E2%91%A0", "?page=" + "9" * 5000):
            status, _, body = _get(port, "/" + query, {"Host": f"127.0.0.1:{port}"})
            assert status == 200 and "Internal Server Error" not in body, (query[:20], status)
        # A failed request is logged by its path and its query's length, not its query.
        status, _, _ = _get(port, "/nothing-here?x=" + "7" * 20_000, {"Host": f"127.0.0.1:{port}"})
        assert status == 404
        deadline = time.monotonic() + 10
        while "nothing-here" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "GET /nothing-here?<query of 20002 characters>" in log.read_text()
        assert "7" * 100 not in log.read_text()
        for name in (f"{other}:{port}", f"evil.example:{port}", "evil.example"):
            status, headers, _ = _get(port, "/", {"Host": name})
            assert status in (302, 403), (name, status)
            if status == 302:  # Bokeh's authentication hook sends the page to the refusal
                status, _, body = _get(port, headers["Location"].lstrip("."), {"Host": name})
                assert status == 403 and "served only under" in body, body
        key = base64.b64encode(b"0123456789abcdef").decode()
        upgrade = {
            "Host": f"{other}:{port}", "Origin": f"http://{other}:{port}",
            "Sec-Fetch-Site": "same-origin", "Upgrade": "websocket", "Connection": "Upgrade",
            "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": key,
            "Sec-WebSocket-Protocol": "bokeh",
        }  # fmt: skip
        assert _get(port, "/ws", upgrade)[0] == 403
        # A page of another site may not open a websocket to this one either.
        upgrade |= {"Host": f"127.0.0.1:{port}", "Origin": "http://evil.example"}
        assert _get(port, "/ws", upgrade)[0] == 403

    port = free_port()
    allow = ("--allow-websocket-origin", f"{other}:{port}")
    with ndstream_serve(reference, log, "--address", "0.0.0.0", *allow, port=port):
        assert f"{other}:{port}" in log.read_text()
        assert _get(port, "/", {"Host": f"{other}:{port}"})[0] == 200
        assert _get(port, "/", {"Host": f"evil.example:{port}"})[0] in (302, 403)


def test_serve_on_loopback_does_not_warn() -> None:
    from ndstream.views.serve import exposure_warning

    assert exposure_warning("127.0.0.1", 5006) is None
    assert exposure_warning("localhost", 5006) is None
    assert exposure_warning("::1", 5006) is None
    warning = exposure_warning("192.0.2.7", 5006, ["proxy.example:443"])
    assert warning and "every host that can reach 192.0.2.7 on port 5006" in warning
    assert "proxy.example:443" in warning


def test_many_groups_get_a_searchable_choice(tmp_path: Path) -> None:
    """Checkboxes for a few groups; past 40 (ImageNet has 1,000), a multi-choice."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    n_classes = 50
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, n_classes)).eval()
    data = torch.utils.data.TensorDataset(
        torch.randn(200, 4), torch.arange(200) % n_classes
    )  # fmt: skip
    path = tmp_path / "many.zarr"
    ndstream.ingest(
        model, torch.utils.data.DataLoader(data, batch_size=50), path,
        layers=["1"], group_by="label", progress=False,
    )  # fmt: skip
    store = ndstream.open_store(path)
    assert len(store.groups) == n_classes
    app = NeuralDivergence(path)
    assert isinstance(app._w_groups, pn.widgets.MultiChoice)
    assert app.groups == store.groups[:2]
    assert app._group_counts == {g: store.count("1", g) for g in store.groups}


def test_axes_hook_keeps_a_zoom_until_the_axis_changes() -> None:
    from bokeh.plotting import figure

    from ndstream.views.activation import Axes

    plot = SimpleNamespace(state=figure())
    first = Axes("fc2", (-20.0, 20.0), (-9.5, 0.5), [(0, "3"), (-1, "7")])
    first.apply(plot)
    fig = plot.state
    assert (fig.x_range.start, fig.x_range.end, fig.y_range.start) == (-20.0, 20.0, -9.5)
    assert fig.yaxis[0].major_label_overrides == {0: "3", -1: "7"}
    fig.x_range.start, fig.x_range.end = -5.0, 5.0  # the user zooms in
    Axes("fc2 · 1 hidden", (-20.0, 20.0), (-9.5, 0.5), [(0, "7")]).apply(plot)
    assert (fig.x_range.start, fig.x_range.end) == (-5.0, 5.0)  # same axis: zoom kept
    assert fig.title.text == "fc2 · 1 hidden"
    assert fig.yaxis[0].major_label_overrides == {0: "7"}
    Axes("fc2", (-30.0, 25.0), (-8.5, 0.5), [(0, "7")]).apply(plot)  # a wider axis: reset
    assert (fig.x_range.start, fig.x_range.end, fig.y_range.start) == (-30.0, 25.0, -8.5)


def test_csv_export_does_not_hand_formulas_to_a_spreadsheet() -> None:
    """Group names come from the data; one that starts like a formula is written as text."""
    import csv
    import io

    from ndstream.views.export import csv_text

    text = csv_text(["layer", "median =cmd"], [['=HYPERLINK("x")', 1.5], ["-2+3", -1.0]])
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[1] == ['\'=HYPERLINK("x")', "1.5"] and rows[2] == ["'-2+3", "-1.0"]
    assert rows[0] == ["layer", "median =cmd"]


def test_the_access_log_keeps_a_path_and_the_length_of_its_query() -> None:
    from ndstream.views.access_log import short_summary

    assert short_summary("GET /x?" + "a" * 70_000 + " (127.0.0.1)") == (
        "GET /x?<query of 70000 characters> (127.0.0.1)"
    )
    assert short_summary("GET /" + "p" * 500 + " (::1)") == "GET /" + "p" * 199 + "... (::1)"
    assert short_summary("GET /a\\x1b[2Jb\x1b[31m?q (10.0.0.1)").count("\x1b") == 0
    assert short_summary("PROPFIND /") == "PROPFIND /"  # no address: as it came, shortened


def test_a_checkpoint_without_a_selected_instance_draws_without_its_dot(
    app: NeuralDivergence, two_instances: list[str], digits_store_path: Path
) -> None:
    # Live mode can read a checkpoint that lacks an instance the selection holds (a catch-up,
    # or the older intact checkpoint a damaged one falls back to): the page drew nothing
    # then, "no instance ... in this store", found by a fresh-clone run of the browser test.
    app.instances = two_instances
    assert [d.instance for d in app.layer_page("fc2").dots] == two_instances
    app.store = ndstream.open_store(digits_store_path)  # the same layers, no instances
    app._frames.clear()
    page = app.layer_page("fc2")
    assert page.dots == [] and len(page.rows) > 0
