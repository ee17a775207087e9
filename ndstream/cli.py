"""The ``ndstream`` command line: a thin face over the library.

``ndstream ingest CONFIG.yaml [--store PATH] [--limit N] [--overwrite]``,
``ndstream attack CONFIG.yaml [STORE]``, ``ndstream evaluate CONFIG.yaml [--out DIR]``, ``ndstream info STORE``, ``ndstream verify STORE`` and
``ndstream serve STORE [--compare STORE_B] [--port] [--address]``; also ``python -m ndstream ...``.

Each subcommand imports what it needs when it runs: ``--help``, ``info`` and ``verify`` import
neither torch nor Numba.

Exit status: 0 on success, 2 with a message on any error ndstream can name (a bad config, a
damaged store, ...), 130 after Ctrl-C; ``verify`` exits 1 when it finds damage.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from ._version import __version__
from .errors import ConfigError, IngestInterrupted, NdstreamError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ndstream",
        description="Summarise a model's activation distributions per layer, neuron and group.",
    )
    parser.add_argument("--version", action="version", version=f"ndstream {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ing = sub.add_parser(
        "ingest",
        help="stream a dataset through a model into a store",
        description="Stream the dataset of CONFIG through its model and write a store. "
        "Checkpoints are committed as it goes; re-running the same command resumes an "
        "interrupted run. Under torchrun (torchrun --nproc-per-node N -m ndstream ingest ...) "
        "the ranks split the samples and rank 0 writes the store.",
    )
    ing.add_argument("config", help="YAML config, e.g. configs/digits.yaml")
    ing.add_argument("--store", help="store folder (overrides `store:` in the config)")
    ing.add_argument("--limit", type=int, help="count only the first N samples of the order")
    ing.add_argument(
        "--overwrite",
        action="store_true",
        help="start over, replacing an existing store (without it, an incomplete store of "
        "the same run is resumed)",
    )
    ing.add_argument("--quiet", action="store_true", help="no progress bar")

    att = sub.add_parser(
        "attack",
        help="add attacked and benign pairs of inputs to a finished store",
        description="Attack the inputs that `attacks.pairs` of CONFIG selects with each of "
        "`attacks.methods`, and add each benign input and its attacked versions to STORE as "
        "instances sharing a pair id. The distributions stay bit for bit as they are; "
        "pairs made before are replaced.",
    )
    att.add_argument("config", help="the YAML config that made STORE, with an attacks section")
    att.add_argument("store", nargs="?", help="store folder (default: `store:` of the config)")
    att.add_argument("--quiet", action="store_true", help="no progress bar")

    ev = sub.add_parser(
        "evaluate",
        help="attack held-out inputs and measure how well divergence detects them",
        description="Split the sample order of CONFIG: ingest the first part into a reference "
        "store, attack the held-out rest with the config's attacks (one-pixel, FGSM, PGD by "
        "default), and report the AUROC and TPR at 5%% FPR of the divergence score, feature "
        "squeezing and the Mahalanobis detector, as a table, CSV, Markdown and ROC curves.",
    )
    ev.add_argument("config", help="YAML config, e.g. configs/digits.yaml")
    ev.add_argument(
        "--out", help="output folder (default reports/<config name>); holds the reference store"
    )
    ev.add_argument(
        "--held-out", type=float, default=0.2,
        help="share of the sample order held out of the reference store (default 0.2)",
    )  # fmt: skip
    ev.add_argument(
        "--max-inputs", type=int, default=2000,
        help="attack at most N held-out inputs (default 2,000; they are held in memory)",
    )  # fmt: skip
    ev.add_argument(
        "--overwrite", action="store_true", help="rebuild the reference store from scratch"
    )
    ev.add_argument("--quiet", action="store_true", help="no progress bars")

    info = sub.add_parser("info", help="describe a store", description="Print what a store holds.")
    info.add_argument("store", help="store folder")

    ver = sub.add_parser(
        "verify",
        help="check every file of a store against its checksums",
        description="Read every checkpoint of STORE and check each file against the size and "
        "checksum its writer recorded. Exits 0 if the last checkpoint is intact, 1 if "
        "anything is damaged (the report says which checkpoint readers and a resumed ingest "
        "fall back to), 2 if STORE is not a store.",
    )
    ver.add_argument("store", help="store folder")

    cmp = sub.add_parser(
        "compare",
        help="which neurons moved between two stores",
        description="Score every neuron of each layer by how its distribution differs "
        "between store A and store B (a model before and after fine-tuning, two datasets), "
        "print the neurons that moved most per layer, and write every score with its "
        "guaranteed interval to a CSV. Both stores must hold the same layers of the same "
        "widths, unless --layers says which layer of B goes with which of A.",
    )
    cmp.add_argument("store_a", metavar="A", help="store folder")
    cmp.add_argument("store_b", metavar="B", help="store folder")
    cmp.add_argument(
        "--layers", nargs="+", metavar="LAYER[:LAYER_B]",
        help="layers to compare (default: all); LAYER:LAYER_B names B's layer where it differs",
    )  # fmt: skip
    cmp.add_argument(
        "--groups", nargs="+", metavar="GROUP",
        help="compare these groups, each present in both stores (default: every sample, pooled)",
    )  # fmt: skip
    cmp.add_argument(
        "--metric", default="effect", choices=["median", "effect", "ks", "wasserstein", "auroc"],
        help="effect: median difference over the mean IQR (default); median; ks: "
        "Kolmogorov-Smirnov distance; wasserstein: Wasserstein-1; auroc: P(A > B)",
    )  # fmt: skip
    cmp.add_argument("--top", type=int, default=10, help="neurons printed per layer (default 10)")
    cmp.add_argument(
        "--csv", metavar="PATH",
        help="where to write every score (default: A-vs-B.csv in the current folder)",
    )  # fmt: skip

    srv = sub.add_parser(
        "serve",
        help="open the NeuralDivergence dashboard on a store",
        description="Serve the dashboard of STORE on a local Panel server. It follows an "
        "ingest that is still writing the store (live mode).",
    )
    srv.add_argument("store", help="store folder")
    srv.add_argument(
        "--compare", metavar="STORE_B",
        help="a second store of the same model and layers (e.g. before fine-tuning), drawn "
        "under STORE's distributions in every neuron's row, in the same neuron order",
    )  # fmt: skip
    srv.add_argument("--port", type=int, default=5006, help="port (default 5006)")
    srv.add_argument(
        "--address", default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only; any other address "
        "prints a warning naming who can reach the page)",
    )  # fmt: skip
    srv.add_argument("--show", action="store_true", help="open a browser tab")
    srv.add_argument(
        "--allow-websocket-origin", action="append", default=[], metavar="HOST:PORT",
        help="also serve browsers under HOST:PORT (a proxy, or another name of this "
        "machine); repeatable",
    )  # fmt: skip
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        status = _dispatch(args)
        # Inside the guard: a reader that went away shows here, not as a traceback at exit.
        sys.stdout.flush()
        return status
    except BrokenPipeError:
        # `ndstream info STORE | head`: the reader has what it wanted. Stop quietly, as other
        # tools do; stdout goes to devnull so that the interpreter's last flush cannot fail.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except IngestInterrupted as exc:
        print(f"ndstream {args.command}: {exc}", file=sys.stderr)
        return 130
    except NdstreamError as exc:
        print(f"ndstream {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ndstream {args.command}: interrupted", file=sys.stderr)
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    commands = {
        "ingest": _ingest,
        "attack": _attack,
        "evaluate": _evaluate,
        "serve": _serve,
        "verify": _verify,
        "compare": _compare,
    }
    return commands.get(args.command, _info)(args)


def _ingest(args: argparse.Namespace) -> int:
    from .config import load_config
    from .ingestion.from_config import run_config
    from .ingestion.ranks import init_from_env
    from .sketch.warmup import warm_up

    cfg = load_config(args.config, store=args.store, limit=args.limit)
    ranks = init_from_env(cfg.device)  # under torchrun: join the other ranks
    # A cold kernel cache costs seconds that would otherwise pass in silence mid-run.
    warm_up(stream=sys.stderr if ranks.is_main and not args.quiet else None)
    store = run_config(cfg, overwrite=args.overwrite, progress=not args.quiet)
    if ranks.is_main:
        print(describe(store))
    return 0


def _attack(args: argparse.Namespace) -> int:
    from .config import load_config
    from .ingestion.from_config import build_sources
    from .ingestion.pairs import add_pairs

    cfg = load_config(args.config, store=args.store)
    if cfg.attacks is None:
        raise ConfigError(
            f"{args.config} has no attacks section: add one with `pairs:` (e.g. "
            "{per_class: 1}) and `methods:`; see the README's Attacks section"
        )
    model, dataset, device = build_sources(cfg)
    store = add_pairs(cfg.store, cfg, model, dataset, device=device, progress=not args.quiet)
    print(_pairs_line(store.instances()))
    print(f"pairs added to {store.path}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .config import load_config
    from .evaluation.report import attack_table, table, write_report
    from .evaluation.run import evaluate
    from .sketch.warmup import warm_up

    if args.max_inputs is not None and args.max_inputs < 1:
        raise ConfigError(f"--max-inputs must be at least 1, got {args.max_inputs}")
    cfg = load_config(args.config)
    out = Path(args.out or Path("reports") / Path(args.config).stem)
    warm_up(stream=None if args.quiet else sys.stderr)
    report = evaluate(
        cfg, out, held_out=args.held_out, max_inputs=args.max_inputs,
        overwrite=args.overwrite, progress=not args.quiet, name=Path(args.config).name,
    )  # fmt: skip
    paths = write_report(report, out)
    print(attack_table(report), table(report), sep="\n\n")
    print("\nwritten: " + ", ".join(str(p) for p in paths))
    return 0


def _info(args: argparse.Namespace) -> int:
    from .store import open_store

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a fallback is described in the output instead
        store = open_store(args.store)
    print(describe(store))
    return 0


def _verify(args: argparse.Namespace) -> int:
    from .store.verify import verify

    report = verify(args.store)
    print(report)
    return 0 if report.ok else 1


def _compare(args: argparse.Namespace) -> int:
    import csv
    from pathlib import Path

    import numpy as np

    from .explore.contrast import compare_stores
    from .store import open_store

    if args.top < 0:
        raise ConfigError(f"--top must be 0 or more, got {args.top}")
    layers = None
    if args.layers:
        layers = {}
        for item in args.layers:
            name, colon, name_b = item.partition(":")
            if not name or (colon and not name_b):
                raise ConfigError(
                    f"--layers takes LAYER or LAYER:LAYER_B, got {item!r}: name the layer of A, "
                    "and after a colon the layer of B where its name differs"
                )
            layers[name] = name_b or name
    out = Path(args.csv or f"{Path(args.store_a).stem}-vs-{Path(args.store_b).stem}.csv")
    _check_writable(out)  # before the stores are read: the scores may take a while
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a fallback is said in one line of the output instead
        a, b = open_store(args.store_a), open_store(args.store_b)
    results = compare_stores(a, b, layers, args.groups, args.metric)
    try:
        with out.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["layer", "group", "rank", "neuron", "score", "lower", "upper"])
            for layer, group, result in results:
                rows = zip(
                    result.neuron.values, result.score.values, result.lower.values,
                    result.upper.values, strict=True,
                )  # fmt: skip
                for rank, (neuron, score, lo, hi) in enumerate(rows):
                    writer.writerow([layer, group, rank, int(neuron), score, lo, hi])
    except OSError as exc:
        raise ConfigError(_unwritable(out, exc)) from exc
    print(f"{args.metric} of each neuron, A = {a.path}, B = {b.path}")
    for side, store in (("A", a), ("B", b)):
        if store.pinned.fallback:
            print(f"DAMAGED {side}  {store.fallback_note()}")
    for layer, group, result in results:
        print(f"\nlayer {layer}, group {group}: the {min(args.top, result.sizes['neuron'])} "
              "neurons that moved most (score, and the interval it is sure to lie in)")  # fmt: skip
        shown = list(
            zip(result.neuron.values, result.score.values, result.lower.values,
                result.upper.values, strict=True)
        )[: args.top]  # fmt: skip
        for neuron, score, lo, hi in shown:
            print(f"  neuron {int(neuron):>6}  {score:>+10.4g}  [{lo:.4g}, {hi:.4g}]")
        if any(np.isnan(score) for _, score, _, _ in shown):
            layer_b = (layers or {}).get(layer, layer)
            print("  " + _nan_note(a, b, layer, layer_b, args.groups and group))
    print(f"\nevery neuron's score: {out}")
    return 0


def _check_writable(out: Any) -> None:
    """Refuse a CSV path that cannot be written, leaving no file behind."""
    existed = out.exists()
    try:
        with out.open("a"):
            pass
    except OSError as exc:
        raise ConfigError(_unwritable(out, exc)) from exc
    if not existed:
        out.unlink(missing_ok=True)


def _unwritable(out: Any, exc: OSError) -> str:
    reason = exc.strerror or type(exc).__name__
    return (
        f"cannot write --csv {out} ({reason}); give a file path in an existing folder you can "
        "write to"
    )


def _nan_note(a: Any, b: Any, layer: str, layer_b: str, group: str | None) -> str:
    """Why some scores are ``nan``: a side without values."""
    for name, store, layer_name in (("A", a, layer), ("B", b, layer_b)):
        if store.count(layer_name, group) == 0:
            what = f"group {group}" if group else "the store"
            return f"nan: {what} of {name} holds no values in layer {layer_name}, so nothing scores"
    return (
        "nan: no score for that neuron: a side holds no value but NaN in it, or its values "
        "at ±Inf leave the difference undefined (Inf - Inf)"
    )


def _serve(args: argparse.Namespace) -> int:
    from .views.serve import serve

    serve(
        args.store, compare=args.compare, port=args.port, address=args.address,
        show=args.show, origins=args.allow_websocket_origin,
    )  # fmt: skip
    return 0


def _bins_per_octave(res: Any, finest: int) -> str:
    # Neurons whose values span few bins (dead ReLUs: zeros and a handful of values) never
    # coarsen: counted apart, so that the range describes the others.
    full = int((res >= finest).sum())
    res = res[res < finest]
    if res.size == 0:
        return "every value its own bin (full float32 resolution)"
    lo, hi = 2 ** int(res.min()), 2 ** int(res.max())
    text = f"{lo}" if lo == hi else f"{lo}-{hi}"
    return (
        text + " bins/octave" + (f", {full} neuron(s) at full float32 resolution" if full else "")
    )


def _worst_bounds(store: Any, layer: str) -> str:
    """The layer's widest rank interval of any answer: pooled, and in the worst group."""
    pooled, group = store.worst_rank_bound(layer)
    return f"rank error ≤ {pooled:.2%} pooled, ≤ {group:.2%} per group"


def describe(store: object) -> str:
    """A human-readable description of a store: provenance, progress, layers and groups."""
    from .store import Store

    assert isinstance(store, Store)
    m = store.meta
    total = m.samples_total if m.samples_total is not None else "?"
    state = "complete" if m.complete else "incomplete"
    lines = [f"store      {store.path}"]
    if store.pinned.fallback:
        lines.append(f"DAMAGED    {store.fallback_note()}")
    lines += [
        f"format     ndstream v{m.format_version} (written by ndstream {m.ndstream_version})",
        f"progress   {m.samples_done} / {total} samples, {state}; last checkpoint {m.updated}",
        f"reduction  {m.reduction}",
        f"grid       {m.grid.get('kind')}, up to 2^{m.grid.get('mantissa_bits')} bins/octave, "
        "every float32 magnitude",
        f"model      {m.model_fingerprint}",
        f"dataset    {m.dataset_fingerprint or '-'}",
        f"layers     {len(m.layers)}",
    ]
    width = max(len(layer.name) for layer in m.layers)
    for layer in m.layers:
        # Token axes (-1) vary from batch to batch: their length is not the layer's.
        shape = "x".join("tokens" if s < 0 else str(s) for s in layer.output_shape) or "scalar"
        axis = f"axis {layer.channel_dim}" + (f" ({layer.axis_rule})" if layer.axis_rule else "")
        per_sample = (
            "a value per token" if layer.values_per_sample == 0
            else f"{layer.values_per_sample} value(s)/sample"
        )  # fmt: skip
        per_group = store.group_counts(layer.name)
        active = sum(1 for c in per_group.values() if c)  # budgets count groups with data
        if sum(per_group.values()) <= store.grid.exact_budget(layer.n_neurons, max(1, active)):
            form = "every value kept exactly"
        else:
            form = _bins_per_octave(store.resolution(layer.name), store.grid.mantissa_bits)
        lines.append(
            f"  {layer.name:<{width}}  {layer.module_type:<14} {layer.n_neurons:>6} neurons"
            f"  output {shape}, neurons on {axis}  {per_sample}  {form}"
            f"  {_worst_bounds(store, layer.name)}"
        )
    counts = list(store.group_counts(m.layers[0].name).values())  # one read, however many groups
    lines.append(f"groups     {len(m.groups)}")
    for grouping in dict.fromkeys(m.groupings):
        members = [
            (g, int(c))
            for g, gg, c in zip(m.groups, m.groupings, counts, strict=True)
            if gg == grouping
        ]
        shown = ", ".join(f"{g} ({c})" for g, c in members[:20])
        more = f", ... {len(members) - 20} more" if len(members) > 20 else ""
        lines.append(f"  {grouping}: {shown}{more}")
    instances = store.instances()
    if instances is not None:
        if (instances.text != "").any():
            kept = "with their texts"
        else:
            kept = f"{'with' if len(instances.thumbnail) else 'without'} thumbnails"
        lines.append(f"instances  {len(instances)} ({kept})")
        if (instances.pair >= 0).any():
            lines.append(_pairs_line(instances))
    return "\n".join(lines)


def _pairs_line(instances: Any) -> str:
    """``pairs  10 inputs, attacked by fgsm (20% succeeded, 1 queries), ...``."""
    import numpy as np

    paired = instances.pair >= 0
    attacks = []
    for condition in dict.fromkeys(instances.condition[paired].tolist()):
        if condition.startswith("attacked:"):
            name = condition.partition(":")[2]
            rate = float(instances.success[instances.condition == condition].mean())
            queries = instances.attacks.get("results", {}).get(name, {})
            spent = f", {queries['mean_queries']:.0f} queries" if queries else ""
            attacks.append(f"{name} ({rate:.0%} succeeded{spent})")
    n_pairs = len(np.unique(instances.pair[paired]))
    return f"pairs      {n_pairs} inputs, attacked by " + ", ".join(attacks)
