"""Small helpers shared by the benchmark scripts (timing, memory, table printing).

The machines these run on are noisy, so every benchmark measures its baseline in the same run,
interleaves candidate and baseline repeats (A B A B ...) and reports medians and ratios.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path


def parse_args(
    description: str, extra: Callable[[argparse.ArgumentParser], None] | None = None
) -> argparse.Namespace:
    """The command line every benchmark accepts: ``--quick`` for a small smoke-test variant.

    ``extra`` may add a benchmark's own options.
    """
    parser = argparse.ArgumentParser(description=description.strip().splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small, fast variant for smoke runs")
    if extra is not None:
        extra(parser)
    return parser.parse_args()


def time_once(fn: Callable[[], object]) -> float:
    """Wall-clock seconds of one call of ``fn``."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(cases: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Time each case ``repeats`` times, in rounds (A B A B ...), so drift hits all alike."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            times[name].append(time_once(fn))
    return times


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (``ru_maxrss`` is KiB on Linux)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


def current_rss_bytes() -> int:
    """Current resident set size, from /proc where available (else the peak)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return peak_rss_bytes()


def du_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes allocated on disk under ``path`` (like ``du -s``), falling back to file sizes."""
    total = 0
    for p in Path(path).rglob("*"):
        if p.is_file():
            st = p.stat()
            blocks = getattr(st, "st_blocks", None)
            total += blocks * 512 if blocks is not None else st.st_size
    return total


def apparent_bytes(path: str | os.PathLike[str]) -> int:
    """Sum of the sizes of the files under ``path``."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A plain fixed-width table: first column left-aligned, the rest right-aligned."""
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for j, row in enumerate(cells):
        parts = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        print("  ".join(parts))
        if j == 0:
            print("  ".join("-" * w for w in widths))


def _fmt(x: object) -> str:
    if isinstance(x, float):
        if x == 0 or 0.01 <= abs(x) < 1e5:
            return f"{x:.3g}" if abs(x) < 100 else f"{x:.0f}"
        return f"{x:.2e}"
    return str(x)


def gib(n: float) -> float:
    return n / 2**30
