"""YAML configs (validation and error messages) and the command line (in process, and once as
real processes)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from runs import run_cli

import ndstream
from ndstream.config import IngestConfig, load_config
from ndstream.ingestion.sources import build_dataset, build_model
from ndstream.sketch import GridSpec

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
CONSOLE_SCRIPT = Path(sys.executable).parent / "ndstream"
DIGITS_LAYERS = ["conv1", "relu1", "conv2", "relu2", "fc1", "relu3", "fc2"]  # as in digits.yaml


def _digits_config() -> dict:
    return yaml.safe_load((CONFIGS / "digits.yaml").read_text())


def _write(tmp_path: Path, raw: object, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw))
    return path


# -- the shipped configs ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["digits.yaml", "cifar10-vgg16.yaml", "imagenet-resnet50.yaml"])
def test_shipped_configs_validate(name) -> None:
    cfg = load_config(CONFIGS / name)
    assert isinstance(cfg, IngestConfig)
    raw = yaml.safe_load((CONFIGS / name).read_text())
    assert cfg.layers == raw["layers"]
    assert cfg.model.kind == raw["model"]["kind"]
    assert cfg.data.kind == raw["data"]["kind"]
    assert cfg.store == raw["store"]


def test_digits_config_contents() -> None:
    cfg = load_config(CONFIGS / "digits.yaml")
    assert cfg.layers == DIGITS_LAYERS
    assert cfg.reduction == "max"
    assert cfg.group_by == ["label", "predicted", "correct"]
    assert cfg.loader.batch_size == 256


def test_overrides_replace_top_level_fields() -> None:
    cfg = load_config(CONFIGS / "digits.yaml", store="elsewhere.zarr", limit=10)
    assert cfg.store == "elsewhere.zarr" and cfg.limit == 10
    assert load_config(CONFIGS / "digits.yaml", limit=None).limit is None


def test_grid_config_defaults_and_range_are_grid_specs(tmp_path) -> None:
    # the defaults are GridSpec's ...
    default = load_config(CONFIGS / "digits.yaml")
    assert GridSpec(**default.grid.model_dump()) == GridSpec()
    # ... and so is the range: up to 23 bits (exact float32)
    raw = _digits_config() | {"grid": {"mantissa_bits": 23, "min_mantissa_bits": 23}}
    cfg = load_config(_write(tmp_path, raw))
    assert GridSpec(**cfg.grid.model_dump()) == GridSpec(mantissa_bits=23, min_mantissa_bits=23)


def test_grid_config_builds_the_grid_spec(tmp_path) -> None:
    # every GridSpec field can be set from YAML
    raw = _digits_config() | {"grid": {"mantissa_bits": 6, "min_mantissa_bits": 2, "max_bins": 40}}
    cfg = load_config(_write(tmp_path, raw))
    assert GridSpec(**cfg.grid.model_dump()) == GridSpec(
        mantissa_bits=6, min_mantissa_bits=2, max_bins=40
    )
    for bad, field in (({"max_bins": 1}, "max_bins"), ({"bins": 8}, "bins")):
        with pytest.raises(ndstream.ConfigError, match=field):
            load_config(_write(tmp_path, _digits_config() | {"grid": bad}))


# -- bad configs ------------------------------------------------------------------------------------


def _remove(key: str):
    def edit(raw: dict) -> dict:
        raw.pop(key)
        return raw

    return edit


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            lambda raw: raw | {"model": {"kind": "keras"}},
            ["model", "'keras'", "'builtin'", "'torchvision'", "'factory'"],
        ),
        (_remove("layers"), ["layers", "required"]),
        (lambda raw: raw | {"layers": []}, ["layers", "at least 1"]),
        (
            lambda raw: raw | {"reduction": "median"},
            ["reduction", "'max'", "'mean'", "'none'", "median"],
        ),
        (lambda raw: raw | {"loader": {"batch_size": -4}}, ["loader.batch_size", "greater than 0"]),
        (lambda raw: raw | {"colour": "blue"}, ["colour", "not permitted"]),
        (lambda raw: raw | {"group_by": ["label", "size"]}, ["group_by", "'predicted'", "size"]),
        (lambda raw: raw | {"limit": 0}, ["limit", "greater than 0"]),
        (lambda raw: raw | {"data": {"kind": "builtin", "split": "val"}}, ["data", "'test'"]),
        (
            lambda raw: raw | {"instances": {"indices": [3, -1]}},
            ["instances.indices.1", "greater than or equal to 0", "-1"],
        ),
        (
            lambda raw: raw | {"attacks": raw["attacks"] | {"pairs": {"indices": [-2]}}},
            ["attacks.pairs.indices.0", "greater than or equal to 0"],
        ),
    ],
    ids=[
        "model-kind",
        "missing-layers",
        "empty-layers",
        "reduction",
        "batch-size",
        "unknown-key",
        "group-by",
        "limit",
        "split",
        "instance-index",
        "pair-index",
    ],
)
def test_bad_config_names_field_and_accepted_values(tmp_path, edit, expected) -> None:
    path = _write(tmp_path, edit(_digits_config()))
    with pytest.raises(ndstream.ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    for part in expected:
        assert part in message, (part, message)


def test_not_a_mapping(tmp_path) -> None:
    for text in ("- just\n- a list\n", "42\n", ""):
        path = _write(tmp_path, text)
        with pytest.raises(ndstream.ConfigError, match="mapping"):
            load_config(path)


def test_invalid_yaml(tmp_path) -> None:
    path = _write(tmp_path, "model: [kind: builtin\nlayers: [conv1\n")
    with pytest.raises(ndstream.ConfigError) as info:
        load_config(path)
    assert "not valid YAML" in str(info.value) and str(path) in str(info.value)


def test_missing_config_file(tmp_path) -> None:
    with pytest.raises(ndstream.ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def _cifar_config(tmp_path: Path, **model) -> Path:
    raw = yaml.safe_load((CONFIGS / "cifar10-vgg16.yaml").read_text())
    raw["data"]["root"] = str(tmp_path / "no-cifar-here")
    raw["model"].update(model)
    raw["store"] = str(tmp_path / "cifar.zarr")
    return _write(tmp_path, raw, "cifar.yaml")


def test_cifar_missing_data_root_says_nothing_is_downloaded(tmp_path) -> None:
    cfg = load_config(_cifar_config(tmp_path, weights="random"))
    with pytest.raises(ndstream.ConfigError) as info:
        build_dataset(cfg.data)
    message = str(info.value)
    assert "data.root" in message and "no-cifar-here" in message
    assert "never downloads" in message and "cifar-10-batches-py" in message
    assert not (tmp_path / "no-cifar-here").exists()


def test_cifar_missing_weights_says_nothing_is_downloaded(tmp_path) -> None:
    missing = tmp_path / "weights" / "vgg16.pt"
    cfg = load_config(_cifar_config(tmp_path, weights=str(missing)))
    with pytest.raises(ndstream.ConfigError) as info:
        build_model(cfg.model)
    message = str(info.value)
    assert "model.weights" in message and str(missing) in message
    assert "never downloads" in message and "weights: random" in message
    assert not missing.parent.exists()


# -- the command line -------------------------------------------------------------------------------
#
# ``ndstream.cli.main`` runs in this process (``runs.run_cli``): what the command line does
# does not need an interpreter of its own. Only test_the_commands_run_as_processes starts real
# ones, for what only a process shows: the console script, ``python -m ndstream`` and the
# exit status that main's return value becomes.


@pytest.fixture(scope="module")
def cli_env(ndstream_cache_dir, digits_model) -> dict[str, str]:
    """Environment of CLI subprocesses: the session cache already holds the trained model."""
    assert (ndstream_cache_dir / "digits_cnn-v1.pt").is_file()
    return {**os.environ, "NDSTREAM_CACHE_DIR": str(ndstream_cache_dir)}


def run_process(args: list[str], env: dict[str, str], console_script: bool = False):
    cmd = [str(CONSOLE_SCRIPT)] if console_script else [sys.executable, "-m", "ndstream"]
    return subprocess.run(
        [*cmd, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def cli_store(tmp_path_factory, cli_env) -> tuple[Path, tuple[int, str, str]]:
    path = tmp_path_factory.mktemp("cli") / "digits.zarr"
    digits = CONFIGS / "digits.yaml"
    return path, run_cli("ingest", digits, "--store", path, "--limit", 300, "--quiet")


def test_cli_ingest(cli_store, digits_targets) -> None:
    path, (code, out, err) = cli_store
    assert code == 0, err
    store = ndstream.open_store(path)
    assert store.meta.samples_done == 300
    assert store.meta.complete
    assert store.layers == DIGITS_LAYERS
    for layer in store.layers:
        assert store.count(layer) == 300
    assert store.count("fc2", "correct") + store.count("fc2", "incorrect") == 300
    # The first 300 samples of the seeded order (configs/digits.yaml keeps the default seed).
    visited = np.random.RandomState(0).permutation(len(digits_targets))[:300]
    assert [store.count("fc2", str(c)) for c in range(10)] == [
        int((digits_targets[visited] == c).sum()) for c in range(10)
    ]
    assert store.meta.order == {"kind": "permutation", "seed": 0, "n_dataset": 1797, "total": 300}
    # The validated YAML is recorded, with the command-line overrides applied.
    assert store.meta.config["store"] == str(path)
    assert store.meta.config["limit"] == 300
    assert store.meta.config["layers"] == DIGITS_LAYERS
    assert str(path) in out  # it describes the store it wrote


def test_cli_info(cli_store) -> None:
    path, _ = cli_store
    code, out, err = run_cli("info", path)
    assert code == 0, err
    store = ndstream.open_store(path)
    lines = out.splitlines()
    forms = []
    for layer in store.layers:
        (line,) = [line for line in lines if line.split()[:1] == [layer]]
        res = store.resolution(layer)
        counts = store.group_counts(layer)
        n_values = sum(counts.values())  # per neuron, over all groups
        active = sum(1 for c in counts.values() if c)  # only groups with data set a budget
        if n_values <= store.grid.exact_budget(store.n_neurons(layer), max(1, active)):
            # kept exactly: every neuron at the finest resolution
            assert np.all(res == store.grid.mantissa_bits), layer
            want = "every value kept exactly"
        else:
            # each layer's bins per octave: 2**resolution, a range when its neurons differ;
            # neurons still at full float32 resolution (too few values to coarsen) apart
            full = res == store.grid.mantissa_bits
            if full.all():
                want = "every value its own bin (full float32 resolution)"
            else:
                lo, hi = 2 ** int(res[~full].min()), 2 ** int(res[~full].max())
                want = f"{lo} bins/octave" if lo == hi else f"{lo}-{hi} bins/octave"
                if full.any():
                    want += f", {int(full.sum())} neuron(s) at full float32 resolution"
        forms.append(want == "every value kept exactly")
        # then the widest rank interval of any answer, recomputed from the summaries
        pooled = float(np.nanmax(store.summary(layer).rank_bound()))
        groups = max(
            float(np.nanmax(store.summary(layer, group=g).rank_bound()))
            for g in store.groups
            if store.count(layer, g)
        )
        want += f"  rank error ≤ {pooled:.2%} pooled, ≤ {groups:.2%} per group"
        assert line.endswith(want), (line, want)
    assert any(forms)  # 300 samples in 3 groupings: 900 values per neuron, kept exactly
    for group in store.groups:
        assert f"{group} (" in out, group
    assert "300 / 300 samples" in out
    assert re.search(rf"^groups\s+{len(store.groups)}$", out, re.MULTILINE)
    assert re.search(rf"^layers\s+{len(store.layers)}$", out, re.MULTILINE)


def test_cli_ingest_existing_store_without_overwrite(cli_store) -> None:
    path, _ = cli_store
    args = ["ingest", CONFIGS / "digits.yaml", "--store", path, "--limit", "10", "--quiet"]
    code, _, err = run_cli(*args)
    assert code == 2
    assert "complete store of a different run" in err
    assert "config 'limit' (300 in the store, 10 now)" in err
    assert "--overwrite" in err
    assert "Traceback" not in err
    assert ndstream.open_store(path).meta.samples_done == 300


def test_cli_wrong_layer_name(tmp_path, cli_env) -> None:
    raw = _digits_config()
    raw["layers"] = ["conv1", "relu_2"]
    store = tmp_path / "s.zarr"
    raw["store"] = str(store)
    code, _, err = run_cli("ingest", _write(tmp_path, raw), "--quiet")
    assert code == 2
    assert "'relu2'" in err and "relu_2" in err
    assert "Traceback" not in err
    assert not store.exists()


def test_cli_bad_config_exits_2(tmp_path) -> None:
    path = _write(tmp_path, _digits_config() | {"reduction": "median"})
    code, _, err = run_cli("ingest", path, "--store", tmp_path / "s.zarr")
    assert code == 2
    assert "reduction" in err and "'mean'" in err
    assert "Traceback" not in err


def test_cli_cifar_missing_weights(tmp_path) -> None:
    missing = tmp_path / "vgg16.pt"
    # the data folder is checked first (it is cheaper than building a model): with both
    # missing, the CLI names the data root
    config = _cifar_config(tmp_path, weights=str(missing))
    code, _, err = run_cli("ingest", config)
    assert code == 2
    assert "never downloads" in err and "no-cifar-here" in err
    assert "data.root" in err
    assert "Traceback" not in err
    assert not (tmp_path / "cifar.zarr").exists()
    # with data that exists (the builtin digits), the missing weights are named
    raw = yaml.safe_load(config.read_text())
    raw["data"] = {"kind": "builtin", "name": "digits", "split": "all"}
    code, _, err = run_cli("ingest", _write(tmp_path, raw, "cifar-model.yaml"))
    assert code == 2
    assert "never downloads" in err and str(missing) in err
    assert "model.weights" in err
    assert "Traceback" not in err
    assert not (tmp_path / "cifar.zarr").exists()


def test_cli_info_missing_path(tmp_path) -> None:
    missing = tmp_path / "nothing.zarr"
    code, out, err = run_cli("info", missing)
    assert code == 2
    assert str(missing) in err and "does not exist" in err
    assert "Traceback" not in err
    assert out == ""


def test_cli_help() -> None:
    code, out, _ = run_cli("--help")
    assert code == 0
    assert "ingest" in out and "info" in out
    code, out, _ = run_cli("ingest", "--help")
    assert code == 0
    for option in ("--store", "--limit", "--overwrite", "config"):
        assert option in out
    code, out, _ = run_cli("--version")
    assert code == 0 and ndstream.__version__ in out
    code, _, err = run_cli()
    assert code == 2 and "COMMAND" in err


def test_the_commands_run_as_processes(cli_store, cli_env, tmp_path) -> None:
    """The console script and ``python -m ndstream`` are the command line run in process:
    the same output, and main's return value as the exit status (0, and 2 on an error)."""
    path, _ = cli_store
    assert CONSOLE_SCRIPT.is_file()
    info = run_process(["info", str(path)], cli_env, console_script=True)
    assert info.returncode == 0, info.stderr
    assert info.stdout == run_cli("info", path)[1]
    missing = tmp_path / "nothing.zarr"
    result = run_process(["info", str(missing)], cli_env, console_script=True)
    assert result.returncode == 2
    assert str(missing) in result.stderr and "does not exist" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    version = run_process(["--version"], cli_env)
    assert version.returncode == 0 and ndstream.__version__ in version.stdout
    bare = run_process([], cli_env)
    assert bare.returncode == 2 and "COMMAND" in bare.stderr
