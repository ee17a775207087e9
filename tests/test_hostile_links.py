"""Links and stores written by someone else: nothing they hold runs in the page or breaks it.

A link is anyone's to write, and a store's group and layer names are data, so both are fed
script payloads here. In process, Hypothesis writes hundreds of links (every field, broken
JSON, wrong types, huge numbers, unicode) and a Bokeh document is built for each, as a server
session builds it: no exception escapes, the page is the dashboard (not an error page), every
HTML fragment holds only the markup the dashboard writes (no payload's tag or attribute), and
the address bar is rewritten to a link that applies whole. In Chromium (``slow``): a link with
a payload in every field, on a store whose group and layer names are payloads too, opens no
dialog, runs nothing, shows no traceback and no folder of the server, and still draws.

Every payload carries the marker ``ndpwn``; in the browser it sets ``window.__pwned``.
"""

from __future__ import annotations

import html
import json
import logging
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qsl, quote, urlencode

import panel as pn
import param
import pytest
import torch
from bokeh.document import Document
from bokeh.models import MultiChoice, Plot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from panel.io.state import set_curdoc
from torch import nn

import ndstream
from ndstream.views.activation import row_of
from ndstream.views.dashboard import URL_PARAMS, NeuralDivergence, dashboard

MARK = "ndpwn"
PAYLOADS = [
    f"<img src=x onerror={MARK}()>",
    f"<script>{MARK}()</script>",
    f'"><{MARK} a=1>',
    f"'><svg onload={MARK}()>",
    f"</table><{MARK}>",
    f"&lt;{MARK}&gt;",  # shows as text; unescaped twice, it would be a tag
    f"javascript:{MARK}()",
    f"$$\\{MARK}$$",
    f"{MARK}\u202e\u0000😀",
]
# A layer (module) name and group names that are payloads themselves; module names may not
# hold dots.
LAYER = f"<img src=x onerror={MARK}()>"
GROUPS = ["plain", PAYLOADS[0], PAYLOADS[1], f"a&b \"q\" 'é' {MARK}"]
ROWS = [32, 64, 128, 256, 512]

# What the dashboard's own fragments write; anything else came from data.
TAGS = {"h3", "code", "span", "div", "i", "b", "p", "strong", "table", "tr", "td", "th",
        "figure", "img", "figcaption", "ul", "li"}  # fmt: skip
ATTRIBUTES = {"class", "style", "src", "width", "height", "role"}


class Markup(HTMLParser):
    """Collects what in an HTML text is markup rather than text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.bad: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in TAGS:
            self.bad.append(f"tag <{tag}>")
        for name, value in attrs:
            if not (name in ATTRIBUTES or name.startswith("data-")):
                self.bad.append(f"attribute {name} of <{tag}>")
            if name == "src" and not (value or "").startswith("data:image/png;base64,"):
                self.bad.append(f"src {value!r}")
            if name == "style" and re.search(r"url\(|expression|" + MARK, value or "", re.I):
                self.bad.append(f"style {value!r}")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)


def markup_problems(text: str) -> list[str]:
    """Markup in ``text`` that the dashboard does not write (an injected tag or attribute)."""
    parser = Markup()
    parser.feed(text)
    parser.close()
    return parser.bad


def check_document(doc: Document) -> None:
    """Every text of the document that the browser treats as HTML holds only our markup."""
    seen = 0
    for model in doc.models:
        kind = type(model).__module__ + "." + type(model).__name__
        if kind.startswith("panel.models.markup."):
            # Panel escapes an HTML pane's text once on the way; the page decodes it and sets
            # it as innerHTML.
            inner = html.unescape(model.text)
            assert markup_problems(inner) == [], (kind, inner[:300])
            seen += 1
        if isinstance(model, MultiChoice):
            # Choices.js sets option labels as innerHTML: they must hold no markup at all.
            for option in model.options:
                label = option if isinstance(option, str) else option[1]
                assert "<" not in label and ">" not in label, label
            for label in model.value:
                assert "<" not in label and ">" not in label, label
    assert seen, "no HTML in the document"


def build(path: Path, search: str) -> tuple[Any, Document, str]:
    """The page a server session builds for ``search``: the view, its document and the
    address bar after it."""
    doc = Document()
    with set_curdoc(doc):
        # As a server session's Location gets the request's query: set, with no watcher run
        # (Panel's own would parse it with its rules, which raise on some values).
        with param.parameterized.discard_events(pn.state.location):
            pn.state.location.search = search
        view = dashboard(path)
        doc.add_root(view.get_root(doc))
        return view, doc, pn.state.location.search


def is_error_page(view: Any) -> bool:
    return bool(view.select(lambda o: "nd-error" in (getattr(o, "css_classes", None) or [])))


def status_message(view: Any) -> str:
    """The text of the status line's message, unescaped."""
    for pane in view.select(pn.pane.HTML):
        found = re.search(r'<div class="nd-message">(.*?)</div>', pane.object or "", re.S)
        if found:
            return html.unescape(found.group(1))
    return ""


# -- the store ------------------------------------------------------------------------------


class Labelled(torch.utils.data.TensorDataset):
    classes: ClassVar[list[str]] = ["zero", "one", "two"]


def hostile_store(path: Path, groups: list[str], layers: int = 1) -> Path:
    """A small store whose group names and (first) layer name are payloads.

    Layers: ``LAYER`` (a ReLU of 12 neurons) and, if ``layers`` is 2, ``fc`` before it. Groups:
    ``groups`` by a custom grouping (sample i in group i mod len), then the labels.
    """
    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("fc", nn.Linear(4, 12))
    model.add_module(LAYER, nn.ReLU())
    n = 120
    data = Labelled(torch.randn(n, 4), torch.arange(n) % 3)

    def by_index(inputs: Any, targets: Any, outputs: Any) -> torch.Tensor:
        return torch.arange(len(targets)) % len(groups)

    grouping = ndstream.custom(by_index, groups, name="hostile")
    ndstream.ingest(
        model, data, path, layers=["fc", LAYER][-layers:], group_by=[grouping, "label"],
        progress=False, instances=ndstream.InstanceSpec(per_class=1),
    )  # fmt: skip
    return path


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return hostile_store(tmp_path_factory.mktemp("hostile") / "hostile.zarr", GROUPS)


@pytest.fixture(scope="module")
def store(store_path: Path) -> ndstream.Store:
    return ndstream.open_store(store_path)


# -- links written by Hypothesis ------------------------------------------------------------

hostile_text = st.one_of(
    st.sampled_from(PAYLOADS), st.text(max_size=12), st.sampled_from([*GROUPS, LAYER, "fc"])
)
json_value = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | hostile_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(hostile_text, inner, max_size=3),
    max_leaves=8,
)  # fmt: skip
broken = st.sampled_from(
    ['[', '{', '["', '{"a":', '[1,]', "NaN", "-Infinity", "1e999", "9" * 5000, "-0",
     "0x10", "[" * 5000, '{"' + "a" * 300, "\ufeff[]", "true false", "1" + "0" * 400]
)  # fmt: skip
neuron_id = st.one_of(
    st.integers(min_value=-3, max_value=14),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.booleans(), st.floats(allow_nan=True), hostile_text,
)  # fmt: skip


def field_value(key: str, store: ndstream.Store, ids: list[str]) -> st.SearchStrategy[str]:
    """What a link may hold for ``key``: plausible values, hostile ones, broken JSON; ``ids``
    are the store's instance ids."""
    layers = st.sampled_from([*store.layers, "nope"]) | hostile_text
    groups = st.sampled_from(store.groups) | hostile_text
    insts = st.sampled_from(ids) | hostile_text
    item = st.one_of(
        st.builds("group:{}".format, groups), st.builds("instance:{}".format, insts),
        st.just(""), hostile_text,
    )  # fmt: skip
    plausible: dict[str, st.SearchStrategy[Any]] = {
        "layers": st.lists(layers, max_size=4),
        "groups": st.lists(groups, max_size=5),
        "instances": st.lists(insts, max_size=3),
        "desc": st.booleans() | json_value,
        "hidden": st.dictionaries(layers, st.lists(neuron_id, max_size=5), max_size=3),
        "marked": st.dictionaries(layers, st.lists(neuron_id, max_size=5), max_size=3),
        "page": st.integers(min_value=-2, max_value=3) | st.integers() | json_value,
        "rows": st.sampled_from(ROWS) | st.integers() | json_value,
    }
    if key == "sort":
        return st.sampled_from(["index", "median", "instance", "difference", "divergence",
                                "iqr"]) | hostile_text  # fmt: skip
    if key in ("a", "b"):
        return item | st.builds("compared:{}".format, groups)
    if key in ("axis", "layout"):
        return st.sampled_from(["robust", "full", "symlog", "overlay", "rows"]) | hostile_text
    encoded = st.one_of(plausible[key], json_value).map(lambda v: json.dumps(v))
    return st.one_of(encoded, broken, hostile_text)


@st.composite
def links(draw: st.DrawFn, store: ndstream.Store, ids: list[str]) -> str:
    """A query string: some fields of a link, maybe unknown or repeated ones, or garbage."""
    if draw(st.integers(0, 19)) == 0:
        return "?" + draw(st.text(max_size=40))  # not even key=value pairs
    pairs = []
    for key in URL_PARAMS.values():
        if key == "layers" and draw(st.integers(0, 2)) > 0:
            # No layer: the page without a plot, whose drawing is most of a build's time
            # (this keeps 200 builds within a test's time; the other fields apply the same).
            pairs.append((key, "[]"))
        elif draw(st.booleans()):
            pairs.append((key, draw(field_value(key, store, ids))))
    if draw(st.integers(0, 4)) == 0:
        pairs.append((draw(hostile_text), draw(hostile_text)))
    if pairs and draw(st.integers(0, 4)) == 0:
        pairs.append(draw(st.sampled_from(pairs)))  # a field given twice
    return "?" + urlencode(draw(st.permutations(pairs)))


@pytest.mark.slow  # 200 documents built
def test_hostile_links_never_break_or_inject(store_path: Path, store: ndstream.Store) -> None:
    logging.getLogger("ndstream.views").setLevel(logging.CRITICAL)  # hundreds of messages
    checker = NeuralDivergence(store_path)

    @settings(
        max_examples=200, deadline=None, derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )  # fmt: skip
    @given(search=links(store, [str(i) for i in store.instances().index.tolist()]))
    def check(search: str) -> None:
        view, doc, address = build(store_path, search)
        assert not is_error_page(view), (search, view)
        check_document(doc)
        # As many plots as tables of rows (one per layer shown).
        plots = [m for m in doc.models if isinstance(m, Plot)]
        tables = sum(
            (m.text or "").count("nd-order-table")
            for m in doc.models
            if type(m).__module__.startswith("panel.models.markup")
        )
        assert len(plots) == tables
        # The address bar holds a link that applies whole, to the same state.
        problems = checker.apply_link(address)
        assert problems == [], (search, address, problems)
        if parse_qsl(address.lstrip("?"), keep_blank_values=True):  # else left as it came
            assert checker.link() == address
        if status_message(view):  # a message names what was left out, as text
            assert "left out" in status_message(view).lower()

    try:
        check()
    finally:
        logging.getLogger("ndstream.views").setLevel(logging.NOTSET)


# -- links checked field by field -----------------------------------------------------------


def test_a_partly_invalid_link_applies_what_fits(store_path: Path, store: ndstream.Store) -> None:
    hidden = {LAYER: [3, 12, 2000, -1, "x"], "nope": [1]}
    search = "?" + urlencode({
        "layers": json.dumps([LAYER, "nope"]), "groups": json.dumps(["plain", PAYLOADS[3]]),
        "hidden": json.dumps(hidden), "rows": "7", "desc": "[broken", "page": "3",
        "sort": "iqr", "a": "group:plain", "zzz": "1",
    })  # fmt: skip
    view, doc, address = build(store_path, search)
    assert not is_error_page(view)
    check_document(doc)
    applied = dict(parse_qsl(address.lstrip("?")))
    assert json.loads(applied["layers"]) == [LAYER]
    assert json.loads(applied["groups"]) == ["plain"]
    assert json.loads(applied["hidden"]) == {LAYER: [3]}
    assert (applied["sort"], applied["a"]) == ("iqr", "group:plain")
    assert (applied["rows"], applied["desc"], applied["page"]) == ("64", "true", "0")
    assert "zzz" not in applied
    text = status_message(view)
    for named in ("nope", PAYLOADS[3], "2000", "-1", "'x'", "rows: 7", "desc", "page: 3", "zzz"):
        assert named in text, (named, text)
    assert "<svg" not in next(
        p.object for p in view.select(pn.pane.HTML) if "nd-message" in (p.object or "")
    )
    # The title counts the neurons hidden, not the ids the link named.
    app = NeuralDivergence(store_path)
    app.apply_link(address)
    assert app.order(LAYER).size == store.n_neurons(LAYER) - 1


def test_the_issues_link_is_applied_without_its_payload(store_path: Path) -> None:
    payload = "<img src=x onerror=alert(document.domain)>"
    search = "?" + urlencode({"hidden": json.dumps({LAYER: [payload]}), "layers": f'["{LAYER}"]'})
    view, doc, address = build(store_path, search)
    assert not is_error_page(view)
    check_document(doc)
    assert payload not in address
    assert payload in status_message(view)  # named, as text


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["regular file", "missing", "plain folder", "hostile name"])
def test_a_bad_store_gives_an_escaped_error_page(
    tmp_path: Path, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = {
        "regular file": tmp_path / "file.zarr", "missing": tmp_path / "missing.zarr",
        "plain folder": tmp_path / "plain", "hostile name": tmp_path / f"{PAYLOADS[0]}.zarr",
    }[kind]  # fmt: skip
    if kind == "regular file":
        path.write_text("not a store")
    elif kind == "plain folder":
        path.mkdir()
    with caplog.at_level(logging.ERROR, logger="ndstream.views"):
        view, doc, _ = build(path, "")
    assert is_error_page(view)
    check_document(doc)
    shown = "".join(html.unescape(m.text) for m in doc.models if hasattr(m, "text"))
    assert f"cannot show {path.name}" in html.unescape(shown)
    assert "ndstream serve" in shown
    assert str(tmp_path) not in shown  # the server's folders stay on the server
    assert "Traceback" not in shown
    assert any(r.exc_info for r in caplog.records), "no traceback in the server log"


def test_a_failing_callback_is_reported_escaped_and_logged(
    store_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = NeuralDivergence(store_path)
    app.panel().get_root(Document())
    with caplog.at_level(logging.ERROR, logger="ndstream.views"):
        app.hidden = {LAYER: [PAYLOADS[0]]}  # not a neuron id: the sort cannot leave it out
    text = app._status.object
    assert markup_problems(text) == [], text
    assert "failed" in html.unescape(text) and "server log" in text
    assert any(r.exc_info for r in caplog.records), "no traceback in the server log"
    assert row_of(float("nan"), 5) is None and row_of(float("inf"), 5) is None


def test_downloads_that_fail_give_an_empty_file_and_a_message(store_path: Path) -> None:
    app = NeuralDivergence(store_path)
    app.panel().get_root(Document())
    app.hidden = {LAYER: [PAYLOADS[1]]}  # set behind the dashboard's back: the CSV breaks
    data = app._w_csv.callback()
    assert data.read() in ("", b"")
    assert "CSV export failed" in html.unescape(app._status.object)
    assert markup_problems(app._status.object) == []


# -- in Chromium ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from browser import CHROMIUM, CHROMIUM_ARGS, require_browser

    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


# Every text of the page, shadow roots included (Panel draws in shadow DOM).
_ALL_TEXT_JS = """() => {
  const out = [];
  const visit = (root) => {
    for (const el of root.querySelectorAll('*')) {
      if (el.shadowRoot) visit(el.shadowRoot);
    }
    out.push(root.textContent || '');
  };
  visit(document);
  return out.join('\\n');
}"""


def payload_link(store: ndstream.Store) -> str:
    """A query with a script payload in every field, and the store's own payload names."""
    js = "<img src=x onerror=window.__pwned=1>"
    fields = {
        "layers": json.dumps([store.layers[-1], js]),
        "groups": json.dumps([store.groups[1], store.groups[2], js]),
        "instances": json.dumps([js]), "sort": js, "a": f"group:{js}", "b": js,
        "desc": js, "hidden": json.dumps({store.layers[-1]: [js, 1], js: [1]}),
        "marked": json.dumps({store.layers[-1]: [js]}), "page": js, "rows": js,
    }  # fmt: skip
    return "?" + "&".join(f"{k}={quote(v)}" for k, v in fields.items())


@pytest.mark.slow
def test_script_payloads_in_a_link_and_a_store_do_not_run(
    browser: Any, tmp_path: Path, env: dict[str, str]
) -> None:
    """The store's group names are payloads, past 40 groups (a searchable multi-choice, which
    shows labels as HTML), and so is its layer's name; every field of the link too."""
    from browser import Page, panel_serve

    js = ["<img src=x onerror=window.__pwned=1>", "<script>window.__pwned=2</script>"]
    names = [*js, *(f"g{i}" for i in range(42))]
    path = hostile_store(tmp_path / "hostile.zarr", names, layers=2)
    store = ndstream.open_store(path)
    with panel_serve(path, tmp_path / "panel.log", env) as url:
        for search in ("", payload_link(store)):
            page = Page(browser.new_page(viewport={"width": 1500, "height": 1000}))
            dialogs: list[str] = []

            def dialog(d: Any, dialogs: list[str] = dialogs) -> None:
                dialogs.append(d.message)
                d.dismiss()

            page.page.on("dialog", dialog)
            page.page.goto(url + search)
            page.page.locator("table.nd-order-table").first.wait_for(timeout=60_000)
            page.wait_for_plots()
            page.page.wait_for_timeout(1000)  # time for an injected handler to run
            assert page.plots(), "no activation plot"
            assert dialogs == []
            pwned = page.page.evaluate("() => [window.__pwned, window.window__pwned]")
            assert pwned == [None, None], pwned
            text = page.page.evaluate(_ALL_TEXT_JS)
            assert "Traceback" not in text and str(tmp_path) not in text
            assert js[0] in text  # the group's name, shown as text
            if search:
                message = page.page.locator(".nd-message").first.evaluate("e => e.textContent")
                assert "left out" in message and js[0] in message, message
            page.screenshot(f"hostile-{'link' if search else 'store'}")
            page.page.close()


@pytest.mark.slow
def test_a_bad_store_path_shows_an_escaped_page_in_the_browser(
    browser: Any, tmp_path: Path
) -> None:
    from browser import Page, panel_serve

    regular = tmp_path / "file.zarr"
    regular.write_text("not a store")
    hostile = tmp_path / "<img src=x onerror=window.__pwned=1>.zarr"
    for path in (regular, hostile):
        with panel_serve(path, tmp_path / "panel.log") as url:
            page = Page(browser.new_page())
            page.page.goto(url)
            alert = page.page.locator(".nd-error")
            alert.wait_for(timeout=60_000)
            text = page.page.evaluate(_ALL_TEXT_JS)
            assert f"cannot show {path.name}" in text and "ndstream serve" in text
            assert "Traceback" not in text and str(tmp_path) not in text
            assert page.page.evaluate("() => window.__pwned") is None
            page.page.close()
        assert "Traceback" in (tmp_path / "panel.log").read_text()  # the details: in the log
