"""Helpers for the browser tests: a real ``panel serve`` on loopback, Debian's chromium driven
by Playwright, and ways to read the dashboard's state back from the page.

The browser is ``/usr/bin/chromium`` (Debian's package), never a Playwright download. Without
it the browser tests skip, unless ``NDSTREAM_REQUIRE_BROWSER=1`` (CI) makes that a failure.
Screenshots go to ``$NDSTREAM_SCREENSHOTS`` (default: a folder in the system's temp dir), out
of the repository.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
SCREENSHOTS = Path(
    os.environ.get("NDSTREAM_SCREENSHOTS", Path(tempfile.gettempdir()) / "ndstream-screenshots")
)
APP = "neuraldivergence"

# Every Bokeh plot on the page: its title, its element's box on the page, and its frame (the
# data area) inside that element, from Bokeh's own view tree.
_PLOTS_JS = """() => {
  const out = [];
  const visit = (v) => {
    if (v.frame && v.model && v.model.title) {
      const r = v.el.getBoundingClientRect();
      const f = v.frame.bbox;
      out.push({title: v.model.title.text, x: r.left + f.left, y: r.top + f.top,
                width: f.width, height: f.height});
    }
    for (const c of (v.child_views || [])) visit(c);
  };
  for (const root of Object.values(window.Bokeh ? Bokeh.index : {})) visit(root);
  return out;
}"""


def require_browser() -> None:
    """Skip (or, in CI, fail) when Debian's chromium or Playwright is missing."""
    missing = []
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} (apt-get install -y chromium)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        missing.append("Python Playwright (pip install -e '.[dev]')")
    if missing:
        message = "browser tests need " + " and ".join(missing)
        if os.environ.get("NDSTREAM_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"nothing listened on port {port} within {timeout} s")


@contextmanager
def panel_serve(
    store: Path, log: Path, env: dict[str, str] | None = None, compare: Path | None = None
) -> Iterator[str]:
    """``panel serve dashboards/neuraldivergence.py --args STORE [COMPARE]`` on loopback;
    yields its URL."""
    port = free_port()
    cmd = [
        sys.executable, "-m", "panel", "serve", str(REPO / "dashboards" / f"{APP}.py"),
        "--address", "127.0.0.1", "--port", str(port),
        "--allow-websocket-origin", f"127.0.0.1:{port}", "--args", str(store),
        *([str(compare)] if compare is not None else []),
    ]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    try:
        wait_for_port(port, proc)
        yield f"http://127.0.0.1:{port}/{APP}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def public_ip() -> str | None:
    """A non-loopback IPv4 address of this machine (to open a page by another name than
    localhost), or ``None`` if it has none."""
    candidates = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe, suppress(OSError):
        probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks a route
        candidates.append(probe.getsockname()[0])
    with suppress(OSError):
        candidates += [
            i[4][0] for i in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
        ]
    for ip in candidates:
        if not ip.startswith("127.") and ip != "0.0.0.0":
            return str(ip)
    return None


@contextmanager
def ndstream_serve(
    store: Path, log: Path, *args: str, port: int | None = None, env: dict[str, str] | None = None
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """``python -m ndstream serve STORE --port PORT ARGS...`` (a free port unless given);
    yields the port and the process (its output, stdout and stderr together, goes to
    ``log``)."""
    port = port or free_port()
    cmd = [sys.executable, "-m", "ndstream", "serve", str(store), "--port", str(port), *args]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    try:
        wait_for_port(port, proc)
        yield port, proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


class Page:
    """A dashboard page, with the console errors it logged."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))

    def open(self, url: str, layers: list[str] | None = None) -> None:
        """Go to ``url`` and wait until the tables of ``layers`` (or any table) are drawn."""
        self.page.goto(url)
        for layer in layers or []:
            self.table(layer).wait_for(timeout=60_000)
        if not layers:
            self.page.locator("table.nd-order-table").first.wait_for(timeout=60_000)
        self.wait_for_plots()

    def table(self, layer: str) -> Any:
        return self.page.locator(f'table.nd-order-table[data-layer="{layer}"]')

    def order(self, layer: str) -> list[int]:
        """Neuron ids of ``layer``'s table, top to bottom (the page of rows drawn)."""
        rows = self.table(layer).locator("tr[data-neuron]")
        return [int(x) for x in rows.evaluate_all("rs => rs.map(r => r.dataset.neuron)")]

    def wait_for_order(self, layer: str, expected: list[int], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.table(layer).count() and self.order(layer) == expected:
                return
            self.page.wait_for_timeout(200)
        got = self.order(layer) if self.table(layer).count() else None
        raise AssertionError(f"{layer}: table order {got}, expected {expected}")

    def plots(self) -> dict[str, dict[str, float]]:
        """Each plot's frame on the page, by layer (the title's first word)."""
        return {p["title"].split(" ")[0]: p for p in self.page.evaluate(_PLOTS_JS)}

    def plot_titles(self) -> list[str]:
        return sorted(p["title"] for p in self.page.evaluate(_PLOTS_JS))

    def wait_for_plots(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.page.evaluate(_PLOTS_JS):
            self.page.wait_for_timeout(200)

    def wait_for_title(self, layer: str, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            plot = self.plots().get(layer)
            if plot and text in plot["title"]:
                return
            self.page.wait_for_timeout(200)
        raise AssertionError(f"{layer}: plot title {self.plots().get(layer)} lacks {text!r}")

    def click_row(self, layer: str, row: int, n_rows: int) -> None:
        """Click the middle of row ``row`` of ``n_rows`` in ``layer``'s plot."""
        self.page.evaluate("() => window.scrollTo(0, 0)")  # boxes are viewport coordinates
        box = self.plots()[layer]
        x = box["x"] + box["width"] / 2
        y = box["y"] + (row + 0.5) * box["height"] / n_rows
        self.page.mouse.click(x, y)

    def plot_png(self, layer: str) -> bytes:
        self.page.evaluate("() => window.scrollTo(0, 0)")
        box = self.plots()[layer]
        clip = {k: box[k] for k in ("x", "y", "width", "height")}
        return bytes(self.page.screenshot(clip=clip))

    def check(self, label: str) -> None:
        """Click the checkbox whose label reads ``label``."""
        self.page.locator("label", has_text=label).first.click()

    def select(self, css_class: str, label: str) -> None:
        """Choose option ``label`` in the select of the widget with ``css_class``."""
        self.page.locator(f".{css_class} select").select_option(label=label)

    def screenshot(self, name: str, locator: Any = None) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        if locator is None:
            self.page.evaluate("() => window.scrollTo(0, 0)")
            self.page.screenshot(path=str(path), full_page=True)
        else:
            locator.screenshot(path=str(path))
        return path
