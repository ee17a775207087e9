"""Custom groupings that give bad group ids: each batch is checked, and the error names the
grouping and says what to do (exit 2 from the command line, never a traceback)."""

from __future__ import annotations

import itertools
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from torch import nn

import ndstream
from ndstream.cli import main
from ndstream.errors import NdstreamError

N, BATCH = 64, 32


def _data() -> torch.utils.data.TensorDataset:
    gen = torch.Generator().manual_seed(0)
    return torch.utils.data.TensorDataset(
        torch.randn(N, 4, generator=gen), torch.randint(0, 3, (N,), generator=gen)
    )


def _ingest(path: Path, grouping: ndstream.Grouping) -> ndstream.Store:
    torch.manual_seed(0)
    return ndstream.ingest(
        nn.Sequential(nn.Linear(4, 3)), _data(), path, layers=["0"], group_by=[grouping],
        batch_size=BATCH, progress=False,
    )  # fmt: skip


def test_ids_of_the_right_total_but_wrong_batches_are_refused(tmp_path: Path) -> None:
    # 33 ids for the first batch of 32, then 31 for the second: 64 in all, as many as the
    # samples, but every sample of the second batch would be counted in its neighbour's group.
    lengths = iter([BATCH + 1, BATCH - 1])

    def shifty(inputs: Any, targets: Any, outputs: Any) -> np.ndarray:
        return np.zeros(next(lengths), dtype=np.int64)

    with pytest.raises(NdstreamError) as info:
        _ingest(tmp_path / "s.zarr", ndstream.custom(shifty, ["a", "b"], name="shifty"))
    message = str(info.value)
    assert "grouping 'shifty'" in message and "33" in message and "32" in message
    assert "one group id per sample" in message

    # The check does not get in the way of right ids: those count exactly.
    def sign(inputs: Any, targets: Any, outputs: Any) -> torch.Tensor:
        return (inputs[:, 0] > 0).long()

    store = _ingest(tmp_path / "t.zarr", ndstream.custom(sign, ["neg", "pos"], name="sign"))
    positive = int((_data().tensors[0][:, 0] > 0).sum())
    assert 0 < positive < N
    assert store.group_counts("0") == {"neg": N - positive, "pos": positive}


def test_ids_of_a_consistently_wrong_length_name_the_grouping(tmp_path: Path) -> None:
    def extra(inputs: Any, targets: Any, outputs: Any) -> torch.Tensor:
        return torch.zeros(inputs.shape[0] + 1, dtype=torch.long)

    with pytest.raises(NdstreamError, match="grouping 'extra'"):
        _ingest(tmp_path / "s.zarr", ndstream.custom(extra, ["a"], name="extra"))
    assert not (tmp_path / "s.zarr").exists()


# -- through the command line -------------------------------------------------------------------

_modules = itertools.count()

GROUPINGS = """
import torch


def data():
    gen = torch.Generator().manual_seed(0)
    return torch.utils.data.TensorDataset(
        torch.randn(64, 4, generator=gen), torch.randint(0, 3, (64,), generator=gen)
    )


def model():
    return torch.nn.Sequential(torch.nn.Linear(4, 3))


def too_big(inputs, targets, outputs):
    return torch.full((inputs.shape[0],), 2)


def negative(inputs, targets, outputs):
    return torch.full((inputs.shape[0],), -1)


def floats(inputs, targets, outputs):
    return torch.zeros(inputs.shape[0])


def two_d(inputs, targets, outputs):
    return torch.zeros(inputs.shape[0], 1, dtype=torch.long)


def short(inputs, targets, outputs):
    return torch.zeros(inputs.shape[0] - 1, dtype=torch.long)
"""


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("too_big", ["group id 2", "only 2 groups", "'x', 'y'"]),
        ("negative", ["group id -1", "only 2 groups"]),
        ("floats", ["integer", "float32"]),
        ("two_d", ["one group id per sample", "[32, 1]"]),
        ("short", ["31 group ids", "32 samples"]),
    ],
)
def test_cli_bad_group_ids_exit_2(
    target: str,
    expected: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    name = f"ndstream_user_groupings_{next(_modules)}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(GROUPINGS))
    monkeypatch.syspath_prepend(str(tmp_path))
    raw = {
        "model": {"kind": "factory", "target": f"{name}:model"},
        "data": {"kind": "factory", "target": f"{name}:data"},
        "layers": ["0"],
        "group_by": [{"target": f"{name}:{target}", "names": ["x", "y"], "name": "mine"}],
        "loader": {"batch_size": BATCH},
        "store": str(tmp_path / "s.zarr"),
    }
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(raw))
    code = main(["ingest", str(config), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "grouping 'mine'" in err and f"{name}:{target}" in err
    for part in expected:
        assert part in err, (part, err)
    assert "Traceback" not in err
