"""Building what a config names: seeded random models, user factories that fail, and devices.

The command line runs in process (``ndstream.cli.main`` returns the exit status); a bad
input must give exit 2 and a message that says what to do, never a traceback.
"""

from __future__ import annotations

import importlib
import itertools
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

import ndstream
from ndstream.cli import main
from ndstream.config import FactoryModel, TorchvisionModel, load_config
from ndstream.ingestion.fingerprint import model_fingerprint
from ndstream.ingestion.sources import build_model

_modules = itertools.count()

USER_CODE = """
import torch
from torch import nn


def model(width=3):
    return nn.Sequential(nn.Flatten(), nn.Linear(4, width))


def broken_model():
    raise RuntimeError("no such variant 'tiny-v9'")


def data(n=24):
    gen = torch.Generator().manual_seed(5)
    return torch.utils.data.TensorDataset(
        torch.randn(n, 1, 2, 2, generator=gen), torch.randint(0, 3, (n,), generator=gen)
    )


def images(n=8):
    gen = torch.Generator().manual_seed(5)
    return torch.utils.data.TensorDataset(
        torch.randn(n, 3, 16, 16, generator=gen), torch.randint(0, 3, (n,), generator=gen)
    )


def loader(batch_size=6):
    return torch.utils.data.DataLoader(data(), batch_size=batch_size)


def pairs_as_dicts(samples):
    x, y = torch.utils.data.default_collate(samples)
    return {"pixels": x, "target": y}


class Pixels(nn.Module):
    def __init__(self):
        super().__init__()
        self.flat, self.fc = nn.Flatten(), nn.Linear(4, 3)

    def forward(self, pixels):
        return self.fc(self.flat(pixels))


def keyword_model():
    return Pixels()


def no_data():
    return None


def a_path():
    return "~/data/my-images"


def broken_data():
    raise FileNotFoundError("~/data/my-images/labels.csv")
"""


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The name of a freshly written module of user factories, importable for this test."""
    name = f"ndstream_user_code_{next(_modules)}"
    folder = tmp_path / "user"
    folder.mkdir()
    (folder / f"{name}.py").write_text(textwrap.dedent(USER_CODE))
    monkeypatch.syspath_prepend(str(folder))
    return name


def write_config(tmp_path: Path, user_module: str, **changes: Any) -> Path:
    raw: dict[str, Any] = {
        "model": {"kind": "factory", "target": f"{user_module}:model"},
        "data": {"kind": "factory", "target": f"{user_module}:data"},
        "layers": ["1"],
        "group_by": ["label"],
        "loader": {"batch_size": 8},
        "store": str(tmp_path / "s.zarr"),
    }
    raw.update(changes)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def run_cli(capsys: pytest.CaptureFixture[str], config: Path, *extra: str) -> tuple[int, str]:
    code = main(["ingest", str(config), "--quiet", *extra])
    return code, capsys.readouterr().err


# -- seeded random models (item 13) -------------------------------------------------------------


def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_random_torchvision_weights_are_seeded() -> None:
    cfg = TorchvisionModel(kind="torchvision", name="resnet18", weights="random", num_classes=10)
    assert cfg.seed == 0
    state = torch.get_rng_state()
    first, second = build_model(cfg), build_model(cfg)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is left as it was
    assert _same_state(first, second)
    assert model_fingerprint(first) == model_fingerprint(second)
    other = build_model(cfg.model_copy(update={"seed": 1}))
    assert not _same_state(first, other)
    assert model_fingerprint(other) != model_fingerprint(first)


def test_factory_models_are_built_under_a_seed(user_module: str) -> None:
    cfg = FactoryModel(kind="factory", target=f"{user_module}:model")
    assert cfg.seed == 0
    state = torch.get_rng_state()
    first, second = build_model(cfg), build_model(cfg)
    assert torch.equal(torch.get_rng_state(), state)
    assert model_fingerprint(first) == model_fingerprint(second)
    assert model_fingerprint(build_model(cfg.model_copy(update={"seed": 7}))) != (
        model_fingerprint(first)
    )


def test_seed_is_read_from_the_yaml(tmp_path: Path, user_module: str) -> None:
    model = {"kind": "torchvision", "name": "resnet18", "weights": "random", "seed": 3}
    cfg = load_config(write_config(tmp_path, user_module, model=model))
    assert isinstance(cfg.model, TorchvisionModel) and cfg.model.seed == 3
    bad = write_config(tmp_path, user_module, model=model | {"seed": -1})
    with pytest.raises(ndstream.ConfigError, match=r"model\.torchvision\.seed"):
        load_config(bad)


@pytest.mark.slow
def test_rerunning_a_random_weights_command_finds_its_own_store(
    tmp_path: Path, user_module: str, capsys: pytest.CaptureFixture[str]
) -> None:
    model = {"kind": "torchvision", "name": "resnet18", "weights": "random", "num_classes": 3}
    data = {"kind": "factory", "target": f"{user_module}:images"}
    config = write_config(tmp_path, user_module, model=model, data=data, layers=["fc"])
    assert run_cli(capsys, config) == (0, "")
    store = ndstream.open_store(tmp_path / "s.zarr")
    assert store.complete and store.layers == ["fc"] and store.count("fc") == 8
    code, err = run_cli(capsys, config)  # the same command again: same model, nothing to do
    assert code == 0, err


# -- user factories that fail (item 15) ---------------------------------------------------------


def test_model_factory_that_raises(
    tmp_path: Path, user_module: str, capsys: pytest.CaptureFixture[str]
) -> None:
    model = {"kind": "factory", "target": f"{user_module}:broken_model"}
    code, err = run_cli(capsys, write_config(tmp_path, user_module, model=model))
    assert code == 2
    assert f"{user_module}:broken_model" in err and "no such variant 'tiny-v9'" in err
    assert "RuntimeError" in err and "model.kwargs" in err
    assert "Traceback" not in err
    assert not (tmp_path / "s.zarr").exists()


@pytest.mark.parametrize(
    ("target", "expected"),
    [("no_data", "NoneType"), ("a_path", "str"), ("broken_data", "FileNotFoundError")],
)
def test_data_factory_that_gives_no_dataset(
    target: str, expected: str, tmp_path: Path, user_module: str, capsys: pytest.CaptureFixture[str]
) -> None:
    data = {"kind": "factory", "target": f"{user_module}:{target}"}
    code, err = run_cli(capsys, write_config(tmp_path, user_module, data=data))
    assert code == 2
    assert f"{user_module}:{target}" in err and expected in err and "data." in err
    assert "Traceback" not in err
    assert not (tmp_path / "s.zarr").exists()


# -- devices (item 18) --------------------------------------------------------------------------


def _no_accelerators(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


def _gpus(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "", "CUDA"])
def test_device_that_torch_does_not_know(
    device: str, tmp_path: Path, user_module: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, user_module, device=device)
    with pytest.raises(ndstream.ConfigError) as info:
        load_config(config)
    message = str(info.value)
    assert "device" in message and repr(device) in message and "cuda:N" in message
    code, err = run_cli(capsys, config)
    assert code == 2 and repr(device) in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("device", "gpus", "expected"),
    [
        ("cuda", 0, "torch.cuda.is_available() is False"),
        ("cuda:0", 0, "torch.cuda.is_available() is False"),
        ("cuda:3", 1, "1 CUDA device"),
        ("mps", 0, "torch.backends.mps.is_available() is False"),
        # Types torch names but has no module for, or was built without.
        ("xla", 0, "torch cannot place a tensor there"),
        ("hpu", 0, "torch cannot place a tensor there"),
    ],
)
def test_device_this_machine_does_not_have(
    device: str,
    gpus: int,
    expected: str,
    tmp_path: Path,
    user_module: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if gpus:
        _gpus(monkeypatch, gpus)
    else:
        _no_accelerators(monkeypatch)
    config = write_config(tmp_path, user_module, device=device)
    with pytest.raises(ndstream.ConfigError) as info:
        load_config(config)
    message = str(info.value)
    assert f"device {device!r} is not available on this machine" in message
    assert expected in message
    assert "available: cpu" + (", cuda:0" if gpus else "") in message
    code, err = run_cli(capsys, config)
    assert code == 2 and expected in err and "Traceback" not in err
    assert not (tmp_path / "s.zarr").exists()
    # What the machine has passes.
    for device in ["cpu", *(f"cuda:{i}" for i in range(gpus)), *(["cuda"] if gpus else [])]:
        assert load_config(write_config(tmp_path, user_module, device=device)).device == device


def test_device_of_a_torchrun_rank(
    tmp_path: Path, user_module: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _gpus(monkeypatch, 2)
    config = write_config(tmp_path, user_module, device="cuda")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert load_config(config).device == "cuda"  # this rank takes cuda:1, which exists
    monkeypatch.setenv("LOCAL_RANK", "2")
    with pytest.raises(ndstream.ConfigError, match=r"cuda:2.*LOCAL_RANK=2.*2 CUDA devices"):
        load_config(config)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_on_this_machine_without_it_is_a_clear_error(
    tmp_path: Path, user_module: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same as above, with nothing patched: this machine really has no CUDA."""
    config = write_config(tmp_path, user_module, device="cuda")
    code, err = run_cli(capsys, config)
    assert code == 2 and "Traceback" not in err
    assert "device 'cuda' is not available on this machine" in err and "available: cpu" in err


# -- batches from the config: a factory's DataLoader, a collate function, label keys ---------------


def test_a_factory_dataloader_keeps_its_batch_size_and_says_so(
    tmp_path: Path, user_module: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(
        tmp_path, user_module, data={"kind": "factory", "target": f"{user_module}:loader"}
    )
    with pytest.warns(UserWarning, match=r"batch size 6.*loader.batch_size \(8\) is not used"):
        code, err = run_cli(capsys, config)
    assert code == 0, err
    store = ndstream.open_store(tmp_path / "s.zarr")
    assert store.meta.samples_done == 24


def test_collate_and_label_key_feed_a_keyword_model(
    tmp_path: Path, user_module: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A collate function that yields dicts: the model gets the tensors as keyword arguments
    and the labels come from the named key."""
    data = {
        "kind": "factory", "target": f"{user_module}:data",
        "collate": f"{user_module}:pairs_as_dicts", "label_key": "target",
    }  # fmt: skip
    model = {"kind": "factory", "target": f"{user_module}:keyword_model"}
    config = write_config(tmp_path, user_module, data=data, model=model, layers=["fc"])
    code, err = run_cli(capsys, config)
    assert code == 0, err
    store = ndstream.open_store(tmp_path / "s.zarr")
    _, labels = importlib.import_module(user_module).data().tensors
    assert store.group_counts("fc") == {str(k): int((labels == k).sum()) for k in range(3)}
    wrong = write_config(
        tmp_path, user_module, data={**data, "label_key": "y"}, model=model, layers=["fc"]
    )
    code, err = run_cli(capsys, wrong, "--overwrite")
    assert code == 2 and "no 'y' entry" in err and "'target'" in err
