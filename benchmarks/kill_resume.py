"""Kill and resume: ``ndstream ingest`` killed with SIGKILL at random moments, then re-run.

What is measured
    Whether a store that was killed (``kill -9``, no chance to clean up) and resumed by
    re-running the same command is bit for bit the store of an uninterrupted run, over K runs
    (``--runs``, default 100) at random kill moments.

    Everything runs the command line, ``python -m ndstream ingest CONFIG --store PATH
    --quiet``, as a subprocess, on the demo config ``configs/digits.yaml`` (the digits CNN
    over all 1,797 images). ``NDSTREAM_CACHE_DIR`` points every subprocess at one temporary
    folder, so the CNN is trained once, by the reference run.

    1. Reference: one uninterrupted run of ``configs/digits.yaml`` as it is.
    2. The killed runs use a copy of the config with ``checkpoint: {every_steps: 4}`` (a
       checkpoint every 4 batches) and ``loader: {batch_size: 16}`` (113 steps, so the run
       lasts long enough to be hit anywhere). Both are runtime settings, not part of the
       run's identity, so the stores must be identical to the reference. One uninterrupted
       run of this config is timed (and compared with the reference too); its wall time D
       sets the kill moments.
    3. Each run i starts the ingest into its own store, sleeps, sends SIGKILL and waits for
       the process; it does that 1 to ``--max-kills`` times (drawn uniformly; every start
       after the first resumes the store), then re-runs the same command to completion. The
       first delay is drawn uniformly from [0, D], each later one uniformly from [0, D times
       the share of samples the store still lacks] (``numpy.random.default_rng(--seed)``);
       no kill follows once the store is complete. A kill can land anywhere: during start-up
       before any checkpoint, mid-batch, mid-checkpoint, after the final commit, or after the
       process exited (a miss, when the run went faster than D).
    4. The finished store is compared with the reference: the layer, group and grouping lists,
       each layer's metadata, fingerprints, sample order and counts done, and for every layer
       every array of ``store.summary(layer, group=all groups)`` and of the pooled
       ``store.summary(layer)`` (counts, bin edges, min, max, NaN/+Inf/-Inf counts, totals,
       resolution) byte for byte, with the same dtype and shape (byte equality makes NaN
       match NaN). The store is then deleted.

    Each run prints one line: the kill moments in seconds after each start, the samples the
    store held after each kill (read with ``ndstream.open_store``; ``-`` when no checkpoint
    was committed yet), and whether the finished store is identical. At the end: where the
    kills landed, and how many runs at least one kill interrupted (missed kills test nothing).

Run: ``python benchmarks/kill_resume.py [--quick] [--runs K] [--max-kills M] [--seed S]``.
``--quick`` does 5 runs. A run takes about 1 to 2 times D, and D is about 30 s on a 2-core
machine (28 checkpoints), so the default 100 runs take about an hour. The last line
is ``identical: K/N``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from _common import parse_args, print_table

import ndstream
from ndstream.errors import NdstreamError

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "digits.yaml"
SUMMARY_FIELDS = (
    "counts",
    "lower",
    "upper",
    "mins",
    "maxs",
    "nan",
    "posinf",
    "neginf",
    "totals",
    "resolution",
)
META_FIELDS = (
    "layers",
    "groups",
    "groupings",
    "reduction",
    "grid",
    "model_fingerprint",
    "dataset_fingerprint",
    "samples_done",
    "samples_total",
    "complete",
    "order",
)


class Ingest:
    """The ``ndstream ingest`` command line, run as a subprocess with a shared weight cache."""

    def __init__(self, cache: Path) -> None:
        self.env = {**os.environ, "NDSTREAM_CACHE_DIR": str(cache)}

    def command(self, config: Path, store: Path) -> list[str]:
        return [
            sys.executable, "-m", "ndstream", "ingest", str(config), "--store", str(store),
            "--quiet",
        ]  # fmt: skip

    def start(self, config: Path, store: Path) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            self.command(config, store),
            env=self.env,
            cwd=CONFIG.parent.parent,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def run(self, config: Path, store: Path) -> tuple[int, str]:
        """Run to the end; the exit status and the tail of stderr."""
        done = subprocess.run(
            self.command(config, store),
            env=self.env,
            cwd=CONFIG.parent.parent,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            check=False,
        )
        return done.returncode, done.stderr.decode(errors="replace")[-2000:]


def write_kill_config(path: Path) -> None:
    """The demo config with a checkpoint every 4 batches of 16 (runtime settings only)."""
    raw: dict[str, Any] = yaml.safe_load(CONFIG.read_text())
    raw["checkpoint"] = {"every_steps": 4}
    raw["loader"] = {**raw.get("loader", {}), "batch_size": 16}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


def samples_held(store: Path) -> tuple[int, int] | None:
    """``(done, total)`` samples of the last committed checkpoint; ``None`` when there is none."""
    try:
        meta = ndstream.open_store(store).meta
    except NdstreamError:
        return None
    return meta.samples_done, meta.samples_total or 0


def differences(ref: ndstream.Store, got: ndstream.Store) -> list[str]:
    """What differs between two stores (empty when identical); see the module docstring."""
    out = [
        f"meta.{name}" for name in META_FIELDS if getattr(ref.meta, name) != getattr(got.meta, name)
    ]
    if ref.layers != got.layers or ref.groups != got.groups:
        return out or ["layers or groups"]
    everything = range(len(ref.groups))
    for layer in ref.layers:
        for part, group in (("", everything), ("pooled.", None)):
            a, b = ref.summary(layer, group=group), got.summary(layer, group=group)
            for name in SUMMARY_FIELDS:
                x, y = np.asarray(getattr(a, name)), np.asarray(getattr(b, name))
                if x.dtype != y.dtype or x.shape != y.shape or x.tobytes() != y.tobytes():
                    out.append(f"{layer}.{part}{name}")
            if a.groups != b.groups or a.grid != b.grid:
                out.append(f"{layer}.{part}groups/grid")
    return out


@dataclass
class Kill:
    """One start of the ingest that was to be killed, and what the store held afterwards."""

    delay: float
    killed: bool  # False: the process had exited before the delay ran out
    held: tuple[int, int] | None

    @property
    def landed(self) -> str:
        if not self.killed:
            return "missed (the run had finished)"
        if self.held is None:
            return "before the first checkpoint"
        done, total = self.held
        return "after the final commit" if done == total else "mid-run"

    def __str__(self) -> str:
        if not self.killed:
            return f"{self.delay:5.1f} s -> (had finished)"
        held = "-" if self.held is None else f"{self.held[0]}/{self.held[1]}"
        return f"{self.delay:5.1f} s -> {held}"


def kill_and_resume(
    ingest: Ingest, config: Path, store: Path, fractions: list[float], duration: float
) -> tuple[list[Kill], int, str]:
    """Start and kill once per fraction, then run to the end.

    Each kill comes ``fraction`` of the expected time left after the start: ``duration``
    times the share of samples the store still lacks. Kills stop once the store is complete.
    Returns the kills, and the exit status and stderr of the final run.
    """
    kills: list[Kill] = []
    held = samples_held(store)
    for fraction in fractions:
        if held is not None and held[0] == held[1]:
            break
        left = 1.0 if held is None else 1.0 - held[0] / max(held[1], 1)
        delay = fraction * duration * left
        proc = ingest.start(config, store)
        try:
            proc.wait(timeout=delay)
            killed = False
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            killed = True
        assert proc.stderr is not None
        proc.stderr.close()
        held = samples_held(store)
        kills.append(Kill(delay, killed, held))
    rc, err = ingest.run(config, store)
    return kills, rc, err


def main() -> None:
    def options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--runs", type=int, help="kill-and-resume runs (default 100)")
        parser.add_argument(
            "--max-kills", type=int, default=3, help="kills per run, 1 to this (default 3)"
        )
        parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")

    args = parse_args(__doc__, options)
    runs = args.runs or (5 if args.quick else 100)
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory(prefix="ndstream-kill-") as tmp_name:
        tmp = Path(tmp_name)
        ingest = Ingest(tmp / "cache")

        ref_path = tmp / "ref.zarr"
        t0 = time.perf_counter()
        rc, err = ingest.run(CONFIG, ref_path)
        if rc != 0:
            sys.exit(f"the reference ingest failed (exit status {rc}):\n{err}")
        ref = ndstream.open_store(ref_path)
        print(
            f"reference: {CONFIG.name} uninterrupted, {ref.meta.samples_done} samples, "
            f"{len(ref.layers)} layers x {len(ref.groups)} groups, "
            f"{time.perf_counter() - t0:.1f} s (includes training the CNN on first use)"
        )

        config = tmp / "digits-checkpoint-every-step.yaml"
        write_kill_config(config)
        timing = tmp / "timing.zarr"
        t0 = time.perf_counter()
        rc, err = ingest.run(config, timing)
        duration = time.perf_counter() - t0
        if rc != 0:
            sys.exit(f"the uninterrupted ingest of the kill config failed ({rc}):\n{err}")
        diff = differences(ref, ndstream.open_store(timing))
        shutil.rmtree(timing)
        print(
            f"kill config (batch 16, checkpoint every 4 steps): uninterrupted run {duration:.1f} s, "
            f"identical to the reference: {'yes' if not diff else 'NO ' + ', '.join(diff)}"
        )
        print(
            f"{runs} runs, 1-{args.max_kills} SIGKILLs each, the first at a uniform moment in "
            f"[0, {duration:.1f}] s after the start, the next ones in the expected time left; "
            f"then a resume to the end (seed {args.seed})"
        )
        print()

        identical = interrupted = 0
        landed: Counter[str] = Counter()
        for i in range(runs):
            n_kills = int(rng.integers(1, args.max_kills + 1))
            fractions = [float(u) for u in rng.uniform(0.0, 1.0, n_kills)]
            store = tmp / f"run-{i}.zarr"
            t0 = time.perf_counter()
            kills, rc, err = kill_and_resume(ingest, config, store, fractions, duration)
            wall = time.perf_counter() - t0
            if rc == 0:
                diff = differences(ref, ndstream.open_store(store))
                verdict = "yes" if not diff else "NO (" + ", ".join(diff[:6]) + ")"
            else:
                diff, verdict = ["exit status"], f"NO (resume exited {rc})"
            identical += not diff
            interrupted += any(k.landed != "missed (the run had finished)" for k in kills)
            landed.update(k.landed for k in kills)
            print(
                f"run {i + 1:>3}/{runs}  kills at {'; '.join(map(str, kills))}  |  "
                f"{wall:.0f} s in all, identical: {verdict}",
                flush=True,
            )
            if rc != 0:
                print(err.rstrip(), flush=True)
            shutil.rmtree(store, ignore_errors=True)

    print()
    print_table(["where the kills landed", "kills"], sorted(landed.items()))
    print()
    print(f"runs that at least one kill interrupted: {interrupted}/{runs}")
    print(f"identical: {identical}/{runs}")


if __name__ == "__main__":
    main()
