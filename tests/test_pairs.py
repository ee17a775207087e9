"""Attacked and benign pairs: added to a finished store without touching a distribution,
round-tripped exactly, replaced when made again, and made by an ingest that was killed."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import copy_store, per_neuron, raw_activations
from runs import NO_CHECKPOINTS, arrays, cli, ingest_cli, run_cli, write_config
from torch import nn

import ndstream
from ndstream.attacks import attack
from ndstream.config import AttacksConfig
from ndstream.demo import DigitsCNN, DigitsDataset
from ndstream.store import snapshots

ATTACKS = {
    "methods": [
        {"kind": "one_pixel", "pixels": 3, "population": 30, "iterations": 10},
        {"kind": "fgsm", "eps": 0.15},
    ],
    "pairs": {"indices": [5], "per_class": 1, "misclassified": 2},
    "seed": 4,
}
LAYERS = ["conv1", "relu1", "conv2", "relu2", "fc1", "relu3", "fc2"]


def _distributions(path: Path) -> dict[str, np.ndarray]:
    return {k: v for k, v in arrays(path).items() if not k.startswith("instances/")}


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key, strict=True)


@pytest.fixture(scope="module")
def attacked(tmp_path_factory: pytest.TempPathFactory, reference: Path) -> Path:
    folder = tmp_path_factory.mktemp("pairs")
    store = copy_store(reference, folder / "s.zarr")
    config = write_config(folder, checkpoint=NO_CHECKPOINTS, attacks=ATTACKS)
    code, out, err = run_cli("attack", config, store, "--quiet")
    assert code == 0, err
    assert "fgsm (" in out and "pairs added" in out
    return store


def test_pairs_leave_every_distribution_bit_identical(attacked: Path, reference: Path) -> None:
    _same(_distributions(attacked), _distributions(reference))
    before = ndstream.open_store(reference).instances()
    after = ndstream.open_store(attacked).instances()
    assert before is not None and after is not None
    kept = after.take(np.flatnonzero(after.pair < 0))  # the run's own instances, unchanged
    for field in ("index", "position", "label", "predicted", "condition", "thumbnail"):
        np.testing.assert_array_equal(getattr(kept, field), getattr(before, field))
    for layer in LAYERS:
        np.testing.assert_array_equal(kept.values[layer], before.values[layer])


def test_pairs_round_trip_exactly(
    attacked: Path, digits_model: DigitsCNN, digits_dataset: DigitsDataset
) -> None:
    table = ndstream.open_store(attacked).instances()
    assert table is not None
    benign = np.flatnonzero(table.condition == "benign")
    labels, preds = table.label[benign], table.predicted[benign]
    assert table.index[benign][0] == 5  # listed indices first
    assert (preds != labels).sum() >= 2  # the misclassified ones
    assert len(set(labels[preds == labels].tolist())) == 10  # one correct input per class
    assert table.attacks["methods"]["fgsm"]["eps"] == 0.15
    assert table.attacks["pairs"]["misclassified"] == 2 and table.attacks["seed"] == 4
    x = digits_dataset.images[table.index[benign]]
    y = torch.as_tensor(labels)
    spec = AttacksConfig.model_validate(ATTACKS)
    for name, method in zip(("one_pixel", "fgsm"), spec.methods, strict=True):
        rows = np.flatnonzero(table.condition == f"attacked:{name}")
        assert len(rows) == len(benign)
        np.testing.assert_array_equal(table.pair[rows], table.pair[benign])
        np.testing.assert_array_equal(table.index[rows], table.index[benign])
        np.testing.assert_array_equal(table.success[rows], table.predicted[rows] != labels)
        assert table.success[rows].any()
        reported = table.attacks["results"][name]
        assert reported["success_rate"] == pytest.approx(table.success[rows].mean())
        assert reported["mean_queries"] >= 1
        # Seeded: attacking again gives the stored inputs; their activations, from plain
        # hooks, are the stored ones.
        again = attack(method, digits_model, x, y, seed=4)
        np.testing.assert_array_equal(again.predicted.numpy(), table.predicted[rows])
        raw, _ = raw_activations(digits_model, again.adversarial, LAYERS)
        for layer in LAYERS:
            want = per_neuron(raw[layer], "max")
            np.testing.assert_array_equal(table.values[layer][rows, 0, :], want, err_msg=layer)
    raw, _ = raw_activations(digits_model, x, LAYERS)
    for layer in LAYERS:
        np.testing.assert_array_equal(table.values[layer][benign, 0], per_neuron(raw[layer], "max"))
    assert not table.success[table.condition == "benign"].any()


def test_making_pairs_again_replaces_them(attacked: Path, tmp_path: Path) -> None:
    store = copy_store(attacked, tmp_path / "again.zarr")
    fewer = {**ATTACKS, "methods": ATTACKS["methods"][1:], "pairs": {"indices": [7, 9]}}
    config = write_config(tmp_path, checkpoint=NO_CHECKPOINTS, attacks=fewer)
    code, _, err = run_cli("attack", config, store, "--quiet")
    assert code == 0, err
    table = ndstream.open_store(store).instances()
    assert table is not None
    paired = table.pair >= 0
    assert sorted(set(table.condition[paired].tolist())) == ["attacked:fgsm", "benign"]
    assert table.index[paired].tolist() == [7, 9, 7, 9]
    assert list(table.attacks["methods"]) == ["fgsm"]
    _same(_distributions(store), _distributions(attacked))


@pytest.mark.slow
def test_an_ingest_asking_for_pairs_makes_them_after_a_kill(
    tmp_path: Path, env: dict[str, str], reference: Path
) -> None:
    """Killed mid-run, the same command resumes, finishes the distributions exactly, and
    then makes the pairs; a further re-run leaves the store as it is."""
    config = write_config(
        tmp_path, checkpoint={"every_steps": 4, "every_seconds": None}, attacks=ATTACKS
    )
    store = tmp_path / "killed.zarr"
    proc = subprocess.Popen(cli(config, store), env=env)
    while not (store / snapshots.CURRENT).is_symlink() and proc.poll() is None:
        time.sleep(0.01)
    proc.kill()
    proc.wait(timeout=60)
    assert not ndstream.open_store(store).complete
    code, _, err = ingest_cli(config, store)
    assert code == 0, err
    _same(_distributions(store), _distributions(reference))
    table = ndstream.open_store(store).instances()
    assert table is not None and (table.condition == "attacked:fgsm").sum() >= 11
    current = (store / snapshots.CURRENT).readlink()
    code, _, err = ingest_cli(config, store)
    assert code == 0, err
    assert (store / snapshots.CURRENT).readlink() == current  # nothing made twice


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"attacks": None}, "has no attacks section"),
        ({"attacks": {**ATTACKS, "pairs": {"indices": [99999]}}}, "not indices of the dataset"),
        ({"attacks": {**ATTACKS, "pairs": {}}}, "selects no input"),
        (
            {
                "attacks": ATTACKS,
                "model": {
                    "kind": "torchvision",
                    "name": "resnet18",
                    "weights": "random",
                    "num_classes": 10,
                },
            },
            "made with another model",
        ),
    ],
)
def test_bad_requests_say_what_to_do(
    tmp_path: Path, reference: Path, change: dict, message: str
) -> None:
    store = copy_store(reference, tmp_path / "s.zarr")
    before = _distributions(store)
    config = write_config(tmp_path, **change)
    code, _, err = run_cli("attack", config, store, "--quiet")
    assert code == 2
    assert message in err and "Traceback" not in err
    _same(_distributions(store), before)


class Failing(torch.utils.data.Dataset):
    """The digits, failing at one index: the ingest stops after its first checkpoints."""

    def __init__(self, data: DigitsDataset, at: int) -> None:
        self.data, self.at = data, at

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if i == self.at:
            raise RuntimeError("disk gone")
        return self.data[i]


def test_an_incomplete_store_is_refused(
    tmp_path: Path, digits_model: DigitsCNN, digits_dataset: DigitsDataset
) -> None:
    from ndstream.config import parse_config
    from ndstream.ingestion.pairs import add_pairs

    store = tmp_path / "part.zarr"
    with pytest.raises(RuntimeError, match="disk gone"):
        ndstream.ingest(
            digits_model, Failing(digits_dataset, 700), store, layers=LAYERS, seed=None,
            checkpoint_every=1, batch_size=64, progress=False,
        )  # fmt: skip
    before = _distributions(store)
    assert not ndstream.open_store(store).complete
    cfg = parse_config(
        {"model": {"kind": "builtin"}, "data": {"kind": "builtin"}, "layers": LAYERS,
         "store": str(store), "seed": None, "attacks": ATTACKS}
    )  # fmt: skip
    with pytest.raises(ndstream.StoreError, match=r"not complete.*Re-run `ndstream ingest`"):
        add_pairs(store, cfg, digits_model, digits_dataset, progress=False)
    _same(_distributions(store), before)


class TwiceRelu(nn.Module):
    """One ReLU module called twice per forward pass: the layers ``relu@1`` and ``relu@2``."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu(self.conv(x))
        return self.fc(self.relu(h - 0.1).mean(dim=(2, 3)))


def test_new_inputs_are_captured_as_the_store_was(
    tmp_path: Path, digits_dataset: DigitsDataset
) -> None:
    """Per-call layers and the ``none`` reduction, repeated from the store's metadata."""
    from ndstream.ingestion.recapture import recapture

    model = TwiceRelu().eval()
    store = ndstream.ingest(
        model, digits_dataset, tmp_path / "s.zarr", layers=["relu", "fc"], reduction="none",
        limit=128, progress=False,
    )  # fmt: skip
    assert store.layers == ["relu@1", "relu@2", "fc"]
    x = digits_dataset.images[:5]
    got, predicted = recapture(store, model, x)
    with torch.no_grad():
        np.testing.assert_array_equal(predicted, model(x).argmax(1).numpy())
    h1 = torch.relu(model.conv(x))
    h2 = torch.relu(h1 - 0.1)
    for name, h in (("relu@1", h1), ("relu@2", h2)):
        want = h.detach().numpy().transpose(0, 2, 3, 1).reshape(5, -1, 4)
        np.testing.assert_array_equal(got[name], want)
    div = store.divergence(got, group="0")
    assert div.per_layer.shape == (5, 3) and np.isfinite(div.overall).all()
