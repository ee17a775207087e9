"""Write what ``ndstream evaluate`` measured: a printed table, CSV, Markdown and ROC curves.

Files in the output folder:

- ``results.csv`` / ``results.md``: AUROC and TPR at 5 % FPR per attack, subset and detector;
- ``attacks.csv``: success rate, mean queries and time of each attack;
- ``scores.csv``: every detector's score of every benign and attacked input, from which the
  metrics can be recomputed;
- ``roc.png``: ROC curves, one panel per attack and subset.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from .metrics import FPR_AT
from .run import DETECTORS, Evaluation

__all__ = ["table", "write_report"]


def table(report: Evaluation) -> str:
    """The metrics as a Markdown table, one row per attack and subset."""
    head = ["attack", "subset", "attacked / benign"]
    for det in DETECTORS:
        head += [f"{det} AUROC", f"TPR@{FPR_AT:.0%}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for r in report.results:
        rows.setdefault((r["attack"], r["subset"]), {"n": f"{r['attacked']} / {r['benign']}"})[
            r["detector"]
        ] = r
    for (attack, subset), cells in rows.items():
        line = [attack, subset, cells["n"]]
        for det in DETECTORS:
            line += [_fmt(cells[det]["auroc"]), _fmt(cells[det]["tpr_at_5fpr"])]
        lines.append("| " + " | ".join(line) + " |")
    return "\n".join(lines)


def attack_table(report: Evaluation) -> str:
    """Success rate, mean queries and time of each attack, as a Markdown table."""
    lines = ["| attack | inputs | success rate | mean queries | seconds |", "|---|---|---|---|---|"]
    for a in report.attacks:
        lines.append(
            f"| {a['attack']} | {a['inputs']} | {a['success_rate']:.3f} | "
            f"{a['mean_queries']:.0f} | {a['seconds']:.1f} |"
        )
    return "\n".join(lines)


def write_report(report: Evaluation, out: str | Path) -> list[Path]:
    """Write the report's files into ``out``; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [
        _csv(out / "results.csv", report.results),
        _csv(
            out / "attacks.csv",
            [
                {k: v for k, v in a.items() if k != "params"} | {"params": str(a["params"])}
                for a in report.attacks
            ],
        ),
        _csv(out / "scores.csv", report.scores),
    ]
    md = out / "results.md"
    md.write_text(
        f"# Detecting adversarial inputs: {report.config}\n\n"
        f"Reference store: {report.reference} inputs. Held out: {report.held_out}, of which "
        f"{report.attacked} classified correctly were attacked. Mahalanobis layer: "
        f"`{report.mahalanobis_layer}`.\n\n## Attacks\n\n{attack_table(report)}\n\n"
        f"## Detection (benign vs attacked)\n\n{table(report)}\n"
    )
    paths.append(md)
    paths.append(_roc_png(report, out / "roc.png"))
    return paths


def _fmt(value: float) -> str:
    return "n/a" if np.isnan(value) else f"{value:.3f}"


def _csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    with path.open("w", newline="") as f:
        if rows:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return path


def _roc_png(report: Evaluation, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # no display: write the file only
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    attacks = [a["attack"] for a in report.attacks]
    fig, axes = plt.subplots(
        2, len(attacks), figsize=(4 * len(attacks), 8), squeeze=False, sharex=True, sharey=True
    )
    benign = [s for s in report.scores if s["condition"] == "benign"]
    for col, attack in enumerate(attacks):
        attacked = [s for s in report.scores if s["condition"] == attack]
        for row, subset in enumerate(("successful", "all")):
            ax = axes[row, col]
            chosen = [s for s in attacked if s["success"] or subset == "all"]
            for det in DETECTORS:
                if not chosen:
                    continue
                y = np.r_[np.zeros(len(benign)), np.ones(len(chosen))]
                score = np.nan_to_num([s[det] for s in benign + chosen], nan=-np.inf)
                fpr, tpr, _ = roc_curve(y, np.clip(score, -1e300, 1e300))
                ax.plot(fpr, tpr, label=det)
            ax.plot([0, 1], [0, 1], color="0.8", linewidth=0.8)
            ax.axvline(FPR_AT, color="0.8", linestyle=":", linewidth=0.8)
            ax.set_title(f"{attack}, {subset} ({len(chosen)})")
            ax.set_xlabel("false-positive rate")
            ax.set_ylabel("true-positive rate")
            ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
