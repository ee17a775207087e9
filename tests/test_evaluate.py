"""``ndstream evaluate``: held-out pairs, three detectors, and metrics that scikit-learn agrees
with, from the files it writes."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import yaml
from runs import REPO, run_cli
from sklearn.metrics import roc_auc_score, roc_curve

import ndstream
from ndstream.ingestion.sample_order import SampleOrder

ATTACKS = {
    "methods": [
        {"kind": "one_pixel", "pixels": 3, "population": 24, "iterations": 6},
        {"kind": "fgsm", "eps": 0.15},
        {"kind": "pgd", "eps": 0.15, "steps": 4},
    ]
}


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory, ndstream_cache_dir: Path) -> Path:
    folder = tmp_path_factory.mktemp("evaluate")
    cfg = yaml.safe_load((REPO / "configs" / "digits.yaml").read_text())
    cfg["attacks"] = ATTACKS
    config = folder / "small.yaml"
    config.write_text(yaml.safe_dump(cfg))
    code, out, err = run_cli(
        "evaluate", config, "--out", folder / "out", "--max-inputs", 60, "--quiet"
    )
    assert code == 0, err
    assert "one_pixel" in out and "AUROC" in out and "written:" in out
    return folder / "out"


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_metrics_equal_scikit_learn_on_the_written_scores(evaluated: Path) -> None:
    scores = _rows(evaluated / "scores.csv")
    results = _rows(evaluated / "results.csv")
    benign = [s for s in scores if s["condition"] == "benign"]
    assert len(results) == 3 * 2 * 3  # attacks x subsets x detectors
    checked = 0
    for r in results:
        attacked = [
            s for s in scores
            if s["condition"] == r["attack"] and (r["subset"] == "all" or s["success"] == "True")
        ]  # fmt: skip
        assert int(r["attacked"]) == len(attacked) and int(r["benign"]) == len(benign)
        if not attacked:
            assert r["auroc"] == "nan"
            continue
        y = np.r_[np.zeros(len(benign)), np.ones(len(attacked))]
        s = np.array([float(x[r["detector"]]) for x in benign + attacked])
        assert np.isfinite(s).all()
        assert float(r["auroc"]) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        fpr, tpr, _ = roc_curve(y, s)
        assert float(r["tpr_at_5fpr"]) == pytest.approx(tpr[fpr <= 0.05].max(), abs=1e-12)
        checked += 1
    assert checked >= 12


def test_pairs_are_held_out_and_attacks_reported(evaluated: Path) -> None:
    store = ndstream.open_store(evaluated / "reference.zarr")
    n = 1797
    order = SampleOrder(n, 0).indices()
    n_ref = n - round(0.2 * n)
    assert store.meta.samples_done == n_ref and store.complete
    scores = _rows(evaluated / "scores.csv")
    used = {int(s["index"]) for s in scores}
    assert used <= set(order[n_ref:].tolist()), "an attacked input was in the reference store"
    assert len({s["index"] for s in scores if s["condition"] == "benign"}) <= 60
    attacks = {a["attack"]: a for a in _rows(evaluated / "attacks.csv")}
    assert set(attacks) == {"one_pixel", "fgsm", "pgd"}
    assert float(attacks["pgd"]["mean_queries"]) == 4
    assert 0 < float(attacks["pgd"]["success_rate"]) <= 1
    assert (evaluated / "roc.png").stat().st_size > 10_000
    md = (evaluated / "results.md").read_text()
    assert "| fgsm | successful |" in md and "Mahalanobis layer: `relu3`" in md


def test_the_same_config_gives_the_same_scores(evaluated: Path) -> None:
    """Seeded: a second run, reusing the reference store, writes the same scores."""
    first = _rows(evaluated / "scores.csv")
    reference = (evaluated / "reference.zarr" / "zarr.json").resolve()
    config = evaluated.parent / "small.yaml"
    code, _, err = run_cli("evaluate", config, "--out", evaluated, "--max-inputs", 60, "--quiet")
    assert code == 0, err
    assert _rows(evaluated / "scores.csv") == first
    assert (evaluated / "reference.zarr" / "zarr.json").resolve() == reference  # reused


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--held-out", "1.5"], "held_out must lie strictly between 0 and 1"),
        (["--max-inputs", "0"], "--max-inputs must be at least 1"),
    ],
)
def test_bad_arguments_say_what_to_do(tmp_path: Path, args: list[str], message: str) -> None:
    code, _, err = run_cli("evaluate", REPO / "configs" / "digits.yaml", "--out", tmp_path, *args)
    assert code == 2 and message in err
