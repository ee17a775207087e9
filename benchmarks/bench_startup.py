"""Start-up: how long the command line takes before it does anything.

What is measured
    * ``ndstream --help``: wall time of the whole process (the console script next to this
      interpreter), median of 5 (3 with ``--quick``).
    * The demo ingest, ``ndstream ingest configs/digits.yaml --overwrite`` (its store goes to
      a temporary folder, ``--store``): seconds from starting the process to the first
      progress tick, i.e. the first time the bar on stderr counts more than 0 images, and to
      the end of the process.

      - cold: with an empty Numba cache, so that the sketch kernels are compiled (the
        command says so on stderr). Each cold run gets a new empty ``NUMBA_CACHE_DIR``; the
        cache in the source tree, which other processes use, is left alone. 1 run (and 1
        with ``--quick``): a compile takes 15 s or more;
      - warm: ``NUMBA_CACHE_DIR`` holding the kernels the cold run compiled, median of 5
        (2 with ``--quick``). A warm run that reports compiling is flagged: the kernels
        changed under it.

    The digits CNN is trained once (into the usual weights cache) by one untimed ingest before
    anything is timed.

Baseline in the same run
    ``python -c "import torch"`` with this interpreter, interleaved with the warm runs and the
    ``--help`` runs (A B A B ...): the least any command that runs a model must spend. The
    warm first tick is reported as a ratio of it; ``--help``, which imports no torch, too.

Run: ``python benchmarks/bench_startup.py [--quick]``. The last line is the summary.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import median, parse_args, print_table

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "configs" / "digits.yaml"
SCRIPT = Path(sys.executable).parent / "ndstream"
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "ndstream"]
#: tqdm's bar on stderr: "ingest:  57%|█████▋    | 1024/1797 [...]".
TICK = re.compile(rb"ingest:\s*\d+%\|[^|]*\|\s*(\d+)/\d+")
COMPILED = re.compile(rb"ndstream: compiled in ([0-9.]+) s")


def run_help() -> float:
    """Seconds of ``ndstream --help``."""
    start = time.perf_counter()
    subprocess.run([*COMMAND, "--help"], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def run_import_torch() -> float:
    """Seconds of ``python -c "import torch"``: the baseline."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch"], check=True)
    return time.perf_counter() - start


def run_ingest(store: Path, cache: Path) -> tuple[float, float, float | None]:
    """Seconds to the first progress tick and to the end, and the compile it reported."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache)}
    cmd = [*COMMAND, "ingest", str(CONFIG), "--store", str(store), "--overwrite"]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    seen, first = b"", None
    while chunk := proc.stderr.read1(4096):
        seen += chunk
        if first is None and any(int(n) > 0 for n in TICK.findall(seen)):
            first = time.perf_counter() - start
    if proc.wait() != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{seen.decode(errors='replace')}")
    total = time.perf_counter() - start
    if first is None:
        raise RuntimeError(f"no progress tick on stderr:\n{seen.decode(errors='replace')}")
    said = COMPILED.search(seen)
    return first, total, float(said.group(1)) if said else None


def main() -> None:
    args = parse_args(__doc__)
    n_warm, n_help = (2, 3) if args.quick else (5, 5)
    shown = "ndstream" if len(COMMAND) == 1 else "python -m ndstream"
    print(f"command: {shown} ingest {CONFIG.relative_to(REPO)} --overwrite (--store: a temp dir)")
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        root = Path(tmp)
        store = root / "digits.zarr"
        cache = root / "numba-cache"
        subprocess.run(  # train the digits CNN once, untimed (and the OS file cache)
            [*COMMAND, "ingest", str(CONFIG), "--store", str(store), "--overwrite", "--quiet"],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip

        cold_first, cold_total, compiled = run_ingest(store, cache)  # an empty cache
        if compiled is None:
            print("warning: the cold run did not say it compiled the kernels")

        warm_first, warm_total, torch_s, help_s = [], [], [], []
        recompiled = 0
        for i in range(max(n_warm, n_help)):  # interleaved: A B A B ...
            if i < n_warm:
                first, total, again = run_ingest(store, cache)
                warm_first.append(first)
                warm_total.append(total)
                recompiled += again is not None
            torch_s.append(run_import_torch())
            if i < n_help:
                help_s.append(run_help())

    base = median(torch_s)
    print_table(
        ["case", "first tick (s)", "process (s)", "runs"],
        [
            ["ingest, cold Numba cache", cold_first, cold_total, 1],
            ["ingest, warm", median(warm_first), median(warm_total), n_warm],
            ["ndstream --help", "", median(help_s), n_help],
            ['python -c "import torch"', "", base, len(torch_s)],
        ],
    )
    print(f"warm first ticks: {', '.join(f'{t:.2f}' for t in warm_first)} s")
    print(f"cold run: compiled the kernels in {compiled} s (as it reported) before its bar")
    if recompiled:
        print(f"warning: {recompiled} warm run(s) compiled kernels (their source changed?)")
    print(
        f"start-up: first tick cold {cold_first:.1f} s, warm {median(warm_first):.2f} s "
        f"({median(warm_first) / base:.2f}x import torch, {base:.2f} s); "
        f"--help {median(help_s):.2f} s ({median(help_s) / base:.2f}x)"
    )


if __name__ == "__main__":
    main()
