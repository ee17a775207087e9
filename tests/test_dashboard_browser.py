"""The dashboard in a real browser: Debian chromium (Playwright) against a real ``panel serve``
on loopback, over the demo store (``configs/digits.yaml``, written by the real CLI).

Expected neuron orders are computed here from ``ndstream.open_store`` with numpy, never from
the dashboard's own code. Each test saves screenshots out of the repository (see
``tests/browser.py``).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest
from browser import CHROMIUM, CHROMIUM_ARGS, REPO, Page, panel_serve, require_browser
from runs import cli, ingest_cli, write_config

import ndstream
from ndstream.explore import instance_ids
from ndstream.views.palette import ATTACKED, BENIGN

pytestmark = pytest.mark.slow

DEFAULT_LAYERS = ["fc1", "relu3", "fc2"]  # the demo store's last three layers


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory: pytest.TempPathFactory, env: dict[str, str]) -> Path:
    """The README's demo run (configs/digits.yaml) into a fresh folder (the command line, in
    this process)."""
    store = tmp_path_factory.mktemp("demo") / "digits.zarr"
    code, _, err = ingest_cli(REPO / "configs" / "digits.yaml", store)
    assert code == 0, err
    return store


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def server(demo_store: Path, tmp_path_factory: pytest.TempPathFactory, env: dict[str, str]):
    log = tmp_path_factory.mktemp("server") / "panel.log"
    with panel_serve(demo_store, log, env) as url:
        yield url


@pytest.fixture
def page(browser: Any) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1500, "height": 1000}, accept_downloads=True)
    p = Page(context.new_page())
    yield p
    context.close()


def instance_row(store: ndstream.Store, legend_id: str) -> int:
    """Row in the store's instance table of the dataset index an instance id starts with."""
    index = int(legend_id.split("-")[0])
    return int(np.flatnonzero(store.instances().index == index)[0])


def expected_order(values: np.ndarray, descending: bool) -> list[int]:
    """Neuron ids by ``values`` (ties by id), computed with numpy alone."""
    ids = np.arange(values.shape[0])
    return np.lexsort((ids, -values if descending else values)).tolist()


def selected_instances(page: Page) -> list[str]:
    return page.page.locator(".nd-instance").evaluate_all("es => es.map(e => e.dataset.instance)")


def test_page_loads_and_shows_every_view(page: Page, server: str, demo_store: Path) -> None:
    page.open(server, DEFAULT_LAYERS)
    store = ndstream.open_store(demo_store)
    first = store.groups[0]
    assert page.plot_titles() == sorted(
        f"{layer} · {store.n_neurons(layer)} neurons\nsorted by median of {first}, largest first"
        for layer in DEFAULT_LAYERS
    )
    # A first-time user sees how to read the view; every group toggle carries its colour.
    assert "Each row is one neuron" in (page.page.locator(".nd-help li").first.text_content() or "")
    labels = page.page.locator(".nd-groups label span")
    swatch = "e => getComputedStyle(e, '::before').backgroundColor"
    assert labels.nth(0).evaluate(swatch) == "rgb(230, 159, 0)"  # the first group's colour
    assert labels.nth(1).evaluate(swatch) == "rgb(86, 180, 233)"
    assert labels.nth(2).evaluate(swatch) == "rgba(0, 0, 0, 0)"  # not drawn: an empty box
    # Two label groups and one instance are selected by default, with their counts.
    groups = page.page.locator(".nd-group").evaluate_all("es => es.map(e => e.textContent)")
    assert groups == [f"{g} (n={store.count('fc1', g)})" for g in store.groups[:2]]
    assert len(selected_instances(page)) == 1
    assert page.page.locator(".nd-thumbs img").count() == 1
    status = page.page.locator(".nd-progress")
    assert status.get_attribute("data-samples") == str(store.meta.samples_done)
    assert status.get_attribute("data-complete") == "true"
    page.screenshot("dashboard-full")
    for view in ("layers", "groups", "instances", "sort", "neurons", "activation"):
        page.screenshot(f"view-{view}", page.page.locator(f".nd-view-{view}"))
    assert page.errors == []


def test_toggling_a_layer_and_a_group_changes_the_plots(page: Page, server: str) -> None:
    page.open(server, DEFAULT_LAYERS)
    page.check("conv2 (32)")
    page.table("conv2").wait_for()
    page.wait_for_title("conv2", "conv2 · 32 neurons")
    page.check("relu3 (64)")  # off again
    page.table("relu3").wait_for(state="detached")
    assert "relu3" not in page.plots()

    before = page.plot_png("fc1")
    page.check("2 (n=")
    page.page.locator('.nd-group[data-group="2"]').wait_for()
    deadline = time.monotonic() + 20
    after = page.plot_png("fc1")
    while after == before and time.monotonic() < deadline:
        page.page.wait_for_timeout(200)
        after = page.plot_png("fc1")
    assert after != before, "adding a group did not change the fc1 plot"
    page.screenshot("toggled-layer-and-group")
    assert page.errors == []


@pytest.mark.parametrize("layer", ["fc1", "fc2"])
def test_sort_by_instance_matches_the_store(
    page: Page, server: str, demo_store: Path, layer: str
) -> None:
    page.open(server, DEFAULT_LAYERS)
    page.select("nd-sort", "an instance's activation")
    store = ndstream.open_store(demo_store)
    (iid,) = selected_instances(page)
    values = store.instance_values(layer)[instance_row(store, iid), 0].astype(np.float64)
    page.wait_for_order(layer, expected_order(values, descending=True)[:64])
    page.page.locator(".nd-desc input").click()  # ascending
    page.wait_for_order(layer, expected_order(values, descending=False)[:64])
    page.screenshot(f"sorted-by-instance-{layer}")
    assert page.errors == []


def test_contrast_sorts_match_the_stores_scores(page: Page, server: str, demo_store: Path) -> None:
    page.open(server, DEFAULT_LAYERS)
    groups = page.page.locator(".nd-group").evaluate_all("es => es.map(e => e.dataset.group)")
    assert len(groups) >= 2
    a, b = groups[:2]
    store = ndstream.open_store(demo_store)
    sorts = [("KS distance, A against B", "ks", False),
             ("size of the effect, A against B", "effect", True),
             ("AUROC, A against B", "auroc", False)]  # fmt: skip
    for label, metric, size in sorts:
        page.select("nd-sort", label)
        page.select("nd-sort-a", f"group {a}")
        page.select("nd-sort-b", f"group {b}")
        for layer in DEFAULT_LAYERS:
            score = store.contrast(layer, a, b, metric, order="neuron").score.values
            key = np.abs(score - (0.5 if metric == "auroc" else 0.0)) if size else score
            page.wait_for_order(layer, expected_order(key, descending=True)[:64])
        page.screenshot(f"sorted-by-{metric}")
    assert page.errors == []


def test_clicking_a_neuron_hides_it_and_show_hidden_brings_it_back(page: Page, server: str) -> None:
    page.open(server, DEFAULT_LAYERS)
    before = page.order("fc2")
    page.click_row("fc2", 2, len(before))
    expected = [n for n in before if n != before[2]]
    page.wait_for_order("fc2", expected)
    page.wait_for_title("fc2", "1 hidden")
    page.screenshot("hidden-neuron")
    page.page.locator(".nd-show-hidden button").click()
    page.wait_for_order("fc2", before)
    # Hide two; the list above the plots names both, and its x brings back one of them.
    page.click_row("fc2", 2, len(before))
    page.wait_for_order("fc2", expected)
    page.click_row("fc2", 0, len(expected))
    page.wait_for_order("fc2", expected[1:])
    items = page.page.locator(".nd-hidden .choices__item.choices__item--selectable")
    names = sorted(items.evaluate_all("es => es.map(e => e.dataset.value)"))
    assert names == sorted([f"fc2 #{before[2]}", f"fc2 #{before[0]}"])
    page.screenshot("hidden-list")
    items.filter(has_text=f"fc2 #{before[2]}").locator("button").click()
    page.wait_for_order("fc2", [n for n in before if n != before[0]])
    page.wait_for_title("fc2", "1 hidden")
    assert page.errors == []


def test_marking_a_neuron_survives_a_sort(page: Page, server: str) -> None:
    page.open(server, DEFAULT_LAYERS)
    page.page.locator(".nd-click button", has_text="mark").click()
    # The page sends a widget's change after a short debounce, and a click on a plot at
    # once. A sort drawn after the mode was chosen shows that the mode reached the server.
    page.select("nd-sort", "neuron index")
    before = list(range(10))[::-1]  # descending is on by default
    page.wait_for_order("fc2", before)
    page.click_row("fc2", 0, len(before))
    marked = page.table("fc2").locator('tr[data-marked="1"]')
    marked.wait_for()
    assert marked.get_attribute("data-neuron") == str(before[0])
    page.page.locator(".nd-desc input").click()  # ascending: the marked row moves last
    page.wait_for_order("fc2", before[::-1])
    assert page.table("fc2").locator('tr[data-marked="1"]').get_attribute("data-neuron") == str(
        before[0]
    )
    search = page.page.evaluate("() => location.search")
    assert json.loads(_query(search)["marked"]) == {"fc2": [before[0]]}, search
    page.screenshot("marked-neuron")
    assert page.errors == []


def test_tooltip_shows_the_quantiles_of_each_group(
    page: Page, server: str, demo_store: Path
) -> None:
    page.open(server, DEFAULT_LAYERS)
    order = page.order("fc2")
    box = page.plots()["fc2"]
    page.page.evaluate("() => window.scrollTo(0, 0)")
    page.page.mouse.move(box["x"] + 5, box["y"] + 0.5 * box["height"] / len(order))
    tooltip = page.page.locator("div.bk-tooltip-content").first
    tooltip.wait_for()
    text = tooltip.evaluate("e => e.textContent")
    store = ndstream.open_store(demo_store)
    assert f"neuron: {order[0]}" in text
    for group in store.groups[:2]:
        q = store.quantile("fc2", [0.05, 0.5, 0.95], group)[order[0]]
        assert f"n={store.count('fc2', group)} p5={q[0]:.4g}" in text
        assert f"p50={q[1]:.4g}" in text and f"p95={q[2]:.4g}" in text
        # and how far in rank those quantiles may be off, from the store's own bound
        bound = float(store.summary("fc2", group).rank_bound()[order[0]])
        assert bound == pytest.approx(float(store.rank_bound("fc2", group)[order[0]]))
        assert bound > 0  # fc2 is on the grid, not kept exactly
        shown = f"{bound:.1%}" if bound >= 0.001 else "<0.1%"
        assert f"p95={q[2]:.4g} (rank ±{shown})" in text, text
    page.screenshot("tooltip")


def test_pages_and_jump_to_a_neuron(page: Page, server: str, demo_store: Path) -> None:
    page.open(server, DEFAULT_LAYERS)
    page.select("nd-rows", "32")
    store = ndstream.open_store(demo_store)
    median = store.quantile("fc1", 0.5, store.groups[0])
    full = expected_order(median, descending=True)
    page.wait_for_order("fc1", full[:32])
    target = full[40]  # on the second page
    find = page.page.locator(".nd-find input")
    find.fill(str(target))
    find.press("Enter")
    page.wait_for_order("fc1", full[32:64])
    located = page.table("fc1").locator('tr[data-located="1"]')
    assert located.get_attribute("data-neuron") == str(target)
    page.screenshot("jumped-to-neuron")
    assert page.errors == []


def _query(search: str) -> dict[str, str]:
    from urllib.parse import parse_qsl

    return dict(parse_qsl(search.lstrip("?")))


def test_a_url_restores_the_view(page: Page, server: str, demo_store: Path, browser: Any) -> None:
    store = ndstream.open_store(demo_store)
    state = {
        "layers": ["conv2", "fc2"], "groups": ["7", "3"], "sort": "iqr", "a": "group:7",
        "desc": False, "hidden": {"fc2": [4]},
    }  # fmt: skip
    # As Panel writes them: strings as they are, everything else as JSON.
    search = "&".join(
        f"{k}={quote(v if isinstance(v, str) else json.dumps(v))}" for k, v in state.items()
    )
    page.open(f"{server}?{search}", ["conv2", "fc2"])
    q = store.quantile("conv2", [0.25, 0.75], "7")
    page.wait_for_order("conv2", expected_order(q[:, 1] - q[:, 0], descending=False))
    q = store.quantile("fc2", [0.25, 0.75], "7")
    page.wait_for_order("fc2", [n for n in expected_order(q[:, 1] - q[:, 0], False) if n != 4])
    assert sorted(page.plots()) == ["conv2", "fc2"]
    groups = page.page.locator(".nd-group").evaluate_all("es => es.map(e => e.dataset.group)")
    assert groups == ["7", "3"]

    # The URL the page shows now reproduces the same view in a fresh page.
    url = page.page.url
    other = Page(browser.new_page(viewport={"width": 1500, "height": 1000}))
    other.open(url, ["conv2", "fc2"])
    for layer in ("conv2", "fc2"):
        other.wait_for_order(layer, page.order(layer))
    other.page.close()
    page.screenshot("restored-from-url")
    assert page.errors == [] and other.errors == []


def test_a_partly_invalid_link_applies_what_fits_and_says_so(
    page: Page, server: str, demo_store: Path
) -> None:
    """Of each field, what fits the store applies; the page names the rest (as text), and the
    address bar then holds the state applied."""
    payload = "<img src=x onerror=window.__pwned=1>"
    link = {
        "layers": ["fc2", "nope"], "groups": ["3", payload], "hidden": {"fc2": [4, 2000]},
        "rows": 7,
    }  # fmt: skip
    search = "&".join(f"{k}={quote(json.dumps(v))}" for k, v in link.items())
    page.open(f"{server}?{search}", ["fc2"])
    page.wait_for_title("fc2", "fc2 · 10 neurons · 1 hidden")
    assert sorted(page.plots()) == ["fc2"]
    groups = page.page.locator(".nd-group").evaluate_all("es => es.map(e => e.dataset.group)")
    assert groups == ["3"]
    assert 4 not in page.order("fc2") and len(page.order("fc2")) == 9
    message = page.page.locator(".nd-message").evaluate("e => e.textContent")
    for named in ("'nope'", payload, "2000", "rows: 7"):
        assert named in message, (named, message)
    assert page.page.evaluate("() => window.__pwned") is None
    deadline = time.monotonic() + 20
    applied: dict[str, str] = {}
    while time.monotonic() < deadline:
        applied = _query(page.page.evaluate("() => location.search"))
        if "nope" not in applied.get("layers", "nope"):
            break
        page.page.wait_for_timeout(200)
    assert json.loads(applied["layers"]) == ["fc2"], applied
    assert json.loads(applied["groups"]) == ["3"]
    assert json.loads(applied["hidden"]) == {"fc2": [4]}
    assert applied["rows"] == "64"
    page.screenshot("partly-invalid-link")
    assert page.errors == []


def test_ndstream_serve_on_a_public_address_serves_only_its_origins(
    browser: Any, demo_store: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    """Bound to 0.0.0.0, ``ndstream serve`` warns, and a page opened under this machine's
    other address does not draw (Tornado would let its same-origin websocket past Bokeh's
    origin list) unless --allow-websocket-origin names it."""
    from browser import free_port, ndstream_serve, public_ip

    ip = public_ip()
    if ip is None:
        pytest.skip("this machine has no address but loopback")
    log = tmp_path / "serve.log"
    with ndstream_serve(demo_store, log, "--address", "0.0.0.0", env=env) as (port, _):
        assert f"every host that can reach this machine on port {port}" in log.read_text()
        page = Page(browser.new_page(viewport={"width": 1500, "height": 1000}))
        response = page.page.goto(f"http://{ip}:{port}/")
        assert response is not None and response.status == 403
        assert "served only under" in page.page.content()
        page.page.wait_for_timeout(2000)
        assert page.page.locator("table.nd-order-table").count() == 0 and not page.plots()
        page.page.close()
        page = Page(browser.new_page(viewport={"width": 1500, "height": 1000}))
        page.open(f"http://127.0.0.1:{port}/", DEFAULT_LAYERS)
        assert page.errors == []
        page.page.close()

    port = free_port()
    allow = ("--allow-websocket-origin", f"{ip}:{port}")
    with ndstream_serve(demo_store, log, "--address", "0.0.0.0", *allow, port=port, env=env):
        page = Page(browser.new_page(viewport={"width": 1500, "height": 1000}))
        page.open(f"http://{ip}:{port}/", DEFAULT_LAYERS)
        assert sorted(page.plots()) == sorted(DEFAULT_LAYERS)
        assert page.errors == []
        page.page.close()


def test_downloads_png_and_csv_of_the_view(page: Page, server: str) -> None:
    from PIL import Image

    page.open(server, DEFAULT_LAYERS)
    with page.page.expect_download() as png:
        page.page.locator(".nd-png button, .nd-png a").first.click()
    image = Image.open(io.BytesIO(Path(png.value.path()).read_bytes()))
    assert image.format == "PNG" and image.width > 300 and image.height > 300
    with page.page.expect_download() as csv:
        page.page.locator(".nd-csv button, .nd-csv a").first.click()
    lines = Path(csv.value.path()).read_text().splitlines()
    header, rows = lines[0].split(","), [line.split(",") for line in lines[1:]]
    assert header[:3] == ["layer", "rank", "neuron"]
    fc1 = [int(r[2]) for r in rows if r[0] == "fc1"]
    assert sorted(fc1) == list(range(64))
    assert fc1 == page.order("fc1")  # same order as the page, all 64 on one page
    assert page.errors == []


def test_live_mode_follows_a_running_ingest(
    browser: Any, tmp_path: Path, env: dict[str, str]
) -> None:
    # A checkpoint after every step of 8 samples (125 of the first 1,000): the run must outlast
    # the page's first draw, which took 8 s under the suite's load, and 57 quicker checkpoints
    # (batches of 32) ended it by then. The oldest of more than five are deleted, so each
    # lasts under a second, less than the page takes to draw, which catches up until one
    # stays. 1,000 samples, not the 1,797: the whole run made it the suite's slowest test (115 s).
    config = write_config(tmp_path, loader={"batch_size": 8})
    store, limit = tmp_path / "live.zarr", 1000
    ingest = subprocess.Popen(cli(config, store, "--limit", str(limit)), env=env, cwd=REPO)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:  # the dashboard needs a first checkpoint
            try:
                ndstream.open_store(store)
                break
            except ndstream.StoreError:
                time.sleep(0.2)
        with panel_serve(store, tmp_path / "panel.log", env) as url:
            page = Page(browser.new_page(viewport={"width": 1500, "height": 1000}))
            page.open(url)
            status = page.page.locator(".nd-progress")
            # Both attributes in one read: two reads could straddle an update of the line.
            read = "e => [Number(e.dataset.samples), e.dataset.complete === 'true']"
            seen: set[int] = set()
            complete = False
            while time.monotonic() < deadline and not complete:
                samples, complete = status.evaluate(read)
                seen.add(samples)
                if not complete:
                    page.page.wait_for_timeout(250)
            assert complete, f"live mode never showed the run's end; saw {sorted(seen)}"
            # The plots follow too: the final order is that of the finished store.
            final = ndstream.open_store(store)
            median = final.quantile("fc2", 0.5, final.groups[0])
            page.wait_for_order("fc2", expected_order(median, descending=True))
            page.page.wait_for_timeout(500)
            page.screenshot("live-mode-complete")
            assert max(seen) == limit
            assert len(seen) >= 3, f"live mode showed only {sorted(seen)}"
            assert page.errors == []
    finally:
        ingest.kill()
        ingest.wait()


def test_a_bad_store_path_gets_a_clear_page(browser: Any, tmp_path: Path) -> None:
    not_a_store = tmp_path / "plain-folder"
    not_a_store.mkdir()
    regular = tmp_path / "file.zarr"
    regular.write_text("not a store")
    cases = ((tmp_path / "missing.zarr", "does not exist"), (not_a_store, "not a"),
             (regular, "file.zarr"))  # fmt: skip
    for path, words in cases:
        with panel_serve(path, tmp_path / "panel.log") as url:
            page = Page(browser.new_page())
            page.page.goto(url)
            alert = page.page.locator(".nd-error")
            alert.wait_for(timeout=60_000)
            text = alert.evaluate("e => (e.shadowRoot || e).textContent")
            assert "cannot show" in text and words in text and "ndstream serve" in text
            assert "Traceback" not in text and str(tmp_path) not in text
            page.page.close()


def test_ndstream_serve_listens_on_localhost_only(
    browser: Any, demo_store: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    from browser import free_port, wait_for_port

    port = free_port()
    cmd = [sys.executable, "-m", "ndstream", "serve", str(demo_store), "--port", str(port)]
    with open(tmp_path / "serve.log", "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        wait_for_port(port, proc)
        listening = _listening_addresses(port)
        assert listening and all(a == "127.0.0.1" for a in listening), listening
        page = Page(browser.new_page(viewport={"width": 1500, "height": 1000}))
        page.open(f"http://127.0.0.1:{port}/", DEFAULT_LAYERS)
        assert page.errors == []
    finally:
        proc.terminate()
        proc.wait(10)


def _listening_addresses(port: int) -> list[str]:
    """Local IPv4/IPv6 addresses listening on ``port``, from /proc/net/tcp{,6}."""
    out = []
    for name, width in (("tcp", 8), ("tcp6", 32)):
        path = Path("/proc/net") / name
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                if width == 8:
                    out.append(".".join(str(int(addr[i : i + 2], 16)) for i in (6, 4, 2, 0)))
                else:
                    out.append("::" if int(addr, 16) == 0 else addr)
    return out


def test_the_papers_scenario_an_attacked_and_benign_pair(
    page: Page, server: str, demo_store: Path
) -> None:
    """Select a pair (one click), with the two classes; sort by the attacked instance's
    activations, then by its divergence from its true class: both as the API says."""
    store = ndstream.open_store(demo_store)
    table = store.instances()
    assert table is not None
    is_attack = np.array([c.startswith("attacked:") for c in table.condition.tolist()])
    attacked = np.flatnonzero(is_attack & table.success)
    assert attacked.size, "the demo store holds no successful attack"
    row = int(attacked[0])
    pair = int(table.pair[row])
    members = np.flatnonzero(table.pair == pair)
    ids = instance_ids(table)
    page.open(server, DEFAULT_LAYERS)
    label = page.page.locator(".nd-pair select option", has_text=f"pair {pair}:").first
    page.select("nd-pair", label.text_content())
    want = sorted(ids[m] for m in members)
    deadline = time.monotonic() + 20
    while sorted(selected_instances(page)) != want and time.monotonic() < deadline:
        page.page.wait_for_timeout(200)
    assert sorted(selected_instances(page)) == want
    true, pred = str(table.label[row]), str(table.predicted[row])
    groups = page.page.locator(".nd-group").evaluate_all("es => es.map(e => e.dataset.group)")
    assert sorted(groups) == sorted({true, pred}) and true != pred
    # Red for the attacked inputs, black for the benign one.
    colours = page.page.locator(".nd-instance").evaluate_all(
        "es => Object.fromEntries(es.map(e => [e.dataset.instance, e.dataset.colour]))"
    )
    benign = ids[int(members[table.condition[members] == "benign"][0])]
    assert (colours[benign], colours[ids[row]]) == (BENIGN, ATTACKED)

    page.select("nd-sort", "an instance's activation")
    page.select("nd-sort-a", f"instance {ids[row]}")
    for layer in DEFAULT_LAYERS:
        values = table.values[layer][row, 0].astype(np.float64)
        page.wait_for_order(layer, expected_order(values, descending=True)[:64])
    page.select("nd-sort", "divergence of an instance from a group")
    page.select("nd-sort-a", f"instance {ids[row]}")
    page.select("nd-sort-b", f"median of {true}")
    for layer in DEFAULT_LAYERS:
        scored = store.divergence(
            {layer: table.values[layer][row : row + 1]}, group=true, layers=[layer]
        )
        page.wait_for_order(
            layer, expected_order(scored.contribution(layer)[0], descending=True)[:64]
        )
    page.screenshot("paper-scenario-pair")
    assert page.errors == []


# -- a wide layer, and two stores side by side -----------------------------------------------

_Y_AXIS_JS = """(title) => {
  let out = null;
  const visit = (v) => {
    const text = v.model && v.model.title && v.model.title.text;
    if (typeof text === "string" && text.startsWith(title) && v.frame) {
      const axis = v.model.left[0];
      const labels = axis.major_label_overrides;
      out = {ticks: Array.from(axis.ticker.ticks), height: v.frame.bbox.height,
             labels: labels instanceof Map ? Object.fromEntries(labels) : labels,
             start: v.model.y_range.start, end: v.model.y_range.end};
    }
    for (const c of (v.child_views || [])) visit(c);
  };
  for (const root of Object.values(window.Bokeh ? Bokeh.index : {})) visit(root);
  return out;
}"""


def _wide_store(path: Path, seed: int, env: dict[str, str]) -> Path:
    """A 600-neuron layer (and three label groups) written by ndstream.ingest in a
    subprocess, so that torch's threads stay out of this one."""
    code = f"""
import torch, ndstream
from torch import nn
torch.manual_seed({seed})
model = nn.Sequential(nn.Linear(8, 600), nn.ReLU()).eval()
data = torch.utils.data.TensorDataset(torch.randn(300, 8), torch.arange(300) % 3)
data.classes = ["red", "green", "blue"]
ndstream.ingest(model, torch.utils.data.DataLoader(data, batch_size=100), {str(path)!r},
                layers=["0"], progress=False)
"""
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=REPO, timeout=300)
    return path


@pytest.fixture(scope="module")
def wide_pair(tmp_path_factory: pytest.TempPathFactory, env: dict[str, str]) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("wide")
    return _wide_store(folder / "before.zarr", 0, env), _wide_store(folder / "after.zarr", 1, env)


@pytest.fixture(scope="module")
def compare_server(
    wide_pair: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory, env: dict[str, str]
) -> Iterator[str]:
    """``ndstream serve BEFORE --compare AFTER``, the command a user types."""
    from browser import ndstream_serve

    log = tmp_path_factory.mktemp("compare") / "serve.log"
    with ndstream_serve(wide_pair[0], log, "--compare", str(wide_pair[1]), env=env) as (port, _):
        yield f"http://127.0.0.1:{port}/"


def test_serve_compare_draws_both_stores_in_one_order(
    page: Page, compare_server: str, wide_pair: tuple[Path, Path]
) -> None:
    before, after = (ndstream.open_store(p) for p in wide_pair)
    query = (
        '?layers=["0"]&groups=["red","green"]&sort=wasserstein&a=group:red&b=compared:red'
        "&rows=32&layout=rows"
    )
    page.open(compare_server + query, ["0"])
    page.wait_for_title("0", "sorted by Wasserstein-1 of red vs B: red, largest first")
    score = np.asarray(before.contrast("0", "red", (after, "red"), "wasserstein",
                                       order="neuron")["score"])  # fmt: skip
    page.wait_for_order("0", expected_order(score, descending=True)[:32])
    legend = page.page.locator(".nd-stores").inner_text()
    assert "A = before.zarr" in legend and "B = after.zarr" in legend
    # Four sub-rows a neuron (two groups, two stores): the plot is at least 16 px a row.
    axis = page.page.evaluate(_Y_AXIS_JS, "0 ·")
    assert axis["height"] / 32 >= 16
    page.screenshot("serve-compare")
    assert page.errors == []


@pytest.mark.parametrize("jump", [333])
def test_labels_stay_readable_at_512_rows(page: Page, compare_server: str, jump: int) -> None:
    page.open(compare_server + '?layers=["0"]&rows=512&sort=index&desc=false', ["0"])
    page.page.locator(".nd-find input").fill(str(jump))
    page.page.locator(".nd-find input").press("Enter")
    deadline = time.monotonic() + 30
    axis = page.page.evaluate(_Y_AXIS_JS, "0 ·")
    while time.monotonic() < deadline and str(jump) not in (axis["labels"] or {}).values():
        page.page.wait_for_timeout(200)
        axis = page.page.evaluate(_Y_AXIS_JS, "0 ·")
    px_per_row = axis["height"] / (axis["end"] - axis["start"])
    ticks = sorted(axis["ticks"])
    assert px_per_row >= 4
    assert min(np.diff(ticks)) * px_per_row >= 10, "labels closer than 10 px"
    assert str(jump) in axis["labels"].values(), "the row jumped to has no label"
    assert len(ticks) >= 150  # most rows are labelled, not every sixth
    page.screenshot("labels-at-512-rows")
    assert page.errors == []
