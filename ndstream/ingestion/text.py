"""Text inputs: Hugging Face models, tokenizers and datasets from local folders, and the
collate function that turns text samples into padded batches with a token mask.

Nothing is downloaded: every ``from_pretrained`` call is ``local_files_only``. The
``transformers`` and ``datasets`` packages are imported only here, and only when a config
names them (``pip install 'ndstream[text]'``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..config import HuggingFaceData, HuggingFaceModel, TokenizerConfig

__all__ = ["HFTextDataset", "TextCollate", "build_hf_model", "load_tokenizer", "local_folder"]

_INSTALL = "install the text extra: pip install 'ndstream[text]'"


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as exc:
        raise ConfigError(
            f"Hugging Face models and tokenizers need transformers; {_INSTALL}"
        ) from exc
    return transformers


def local_folder(path: str | None, path_from: str | None, field: str) -> Path:
    """The folder a ``path`` or ``path_from`` (``module:function``) setting names.

    Raises
    ------
    ConfigError
        If the folder does not exist, or the function cannot be imported or fails.
    """
    if path_from is not None:
        from .sources import import_target

        getter = import_target(path_from)
        try:
            found = getter() if callable(getter) else getter
        except Exception as exc:
            raise ConfigError(
                f"{field}.path_from {path_from!r} raised {type(exc).__name__}: {exc}"
            ) from exc
        folder = Path(str(found)).expanduser()
    else:
        assert path is not None
        folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ConfigError(
            f"{field}: {str(folder)!r} is not a folder. ndstream never downloads models: save "
            "one there with save_pretrained(), or name a package that ships it with path_from"
        )
    return folder


def build_hf_model(cfg: HuggingFaceModel) -> torch.nn.Module:
    """A ``transformers`` model from a local folder, in eval mode.

    Raises
    ------
    ConfigError
        If transformers is missing, the auto class does not exist, or loading fails.
    """
    transformers = _transformers()
    folder = local_folder(cfg.path, cfg.path_from, "model")
    auto = getattr(transformers, cfg.auto_class, None)
    if auto is None or not hasattr(auto, "from_pretrained"):
        raise ConfigError(
            f"model.auto_class: transformers has no {cfg.auto_class!r}; e.g. AutoModel, "
            "AutoModelForSequenceClassification"
        )
    from .sources import seeded

    try:
        with seeded(cfg.seed):  # a head missing from the folder is initialised at random
            model = auto.from_pretrained(str(folder), local_files_only=True, **cfg.kwargs)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"model: cannot load {cfg.auto_class} from {folder}: {exc}") from exc
    return model.eval()


def load_tokenizer(cfg: TokenizerConfig) -> Any:
    """The tokenizer of a local folder, with the configured padding side."""
    transformers = _transformers()
    folder = local_folder(cfg.path, cfg.path_from, "data.tokenizer")
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"data.tokenizer: cannot load a tokenizer from {folder}: {exc}") from exc
    if cfg.padding_side is not None:
        tokenizer.padding_side = cfg.padding_side
    return tokenizer


class TextCollate:
    """Turns a list of text samples into one batch, as a Hugging Face model takes it.

    Parameters
    ----------
    tokenizer
        A Hugging Face tokenizer.
    max_length, padding, truncation
        As the tokenizer takes them (``padding="longest"`` pads to the batch's longest).

    A sample is a string, a ``(text, label)`` pair, or a mapping with ``text`` and
    ``labels`` (or ``label``). The batch is a dict of the tokenizer's tensors
    (``input_ids``, ``attention_mask``, ...), ``labels`` (when the samples have them) and
    ``text``, the list of strings, which instances keep and the model never sees.
    """

    def __init__(
        self, tokenizer: Any, *, max_length: int = 128, padding: str = "longest",
        truncation: bool = True,
    ) -> None:  # fmt: skip
        self.tokenizer = tokenizer
        self.max_length, self.padding, self.truncation = max_length, padding, truncation

    def __call__(self, samples: Sequence[Any]) -> dict[str, Any]:
        texts, labels = zip(*(_text_and_label(s) for s in samples), strict=True)
        batch = dict(
            self.tokenizer(
                list(texts),
                padding=self.padding,
                truncation=self.truncation,
                max_length=self.max_length,
                return_tensors="pt",
            )
        )
        if all(label is not None for label in labels):
            batch["labels"] = torch.as_tensor(labels, dtype=torch.long)
        batch["text"] = list(texts)
        return batch


def _text_and_label(sample: Any) -> tuple[str, int | None]:
    if isinstance(sample, str):
        return sample, None
    if isinstance(sample, Mapping):
        text = sample.get("text")
        label = sample.get("labels", sample.get("label"))
    elif isinstance(sample, tuple | list) and len(sample) == 2:
        text, label = sample
    else:
        text, label = None, None
    if not isinstance(text, str):
        raise ConfigError(
            f"a text sample is a string, a (text, label) pair or a mapping with a 'text' "
            f"string, got {type(sample).__name__}; make the dataset yield one of those"
        )
    return text, None if label is None else int(label)


class HFTextDataset(torch.utils.data.Dataset[dict[str, Any]]):
    """A Hugging Face ``datasets`` dataset as text samples ``{"text", "labels"}``.

    ``classes`` come from the label feature's names (a ``ClassLabel``), where it has them.
    """

    def __init__(self, data: Any, text_field: str, label_field: str) -> None:
        columns = list(getattr(data, "column_names", []))
        if text_field not in columns:
            raise ConfigError(
                f"data.text_field: the dataset has no column {text_field!r}; its columns are "
                f"{columns}"
            )
        self.data, self.text_field = data, text_field
        self.label_field = label_field if label_field in columns else None
        feature = data.features.get(label_field) if self.label_field else None
        names = getattr(feature, "names", None)
        if names:
            self.classes = list(names)
        if self.label_field is not None:
            self.targets = list(data[self.label_field])

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.data[int(index)]
        out = {"text": row[self.text_field]}
        if self.label_field is not None:
            out["labels"] = row[self.label_field]
        return out


def load_hf_dataset(cfg: HuggingFaceData) -> HFTextDataset:
    """A dataset saved with ``save_to_disk`` (a split of a ``DatasetDict`` by ``split``)."""
    try:
        import datasets
    except ImportError as exc:
        raise ConfigError(f"data.kind huggingface needs the datasets package; {_INSTALL}") from exc
    folder = Path(cfg.path).expanduser()
    if not folder.is_dir():
        raise ConfigError(
            f"data.path: {str(folder)!r} is not a folder; save a dataset there with "
            "save_to_disk() (ndstream never downloads data)"
        )
    data = datasets.load_from_disk(str(folder))
    if isinstance(data, datasets.DatasetDict):
        if cfg.split is None or cfg.split not in data:
            raise ConfigError(f"data.split: choose one of the saved splits {list(data)}")
        data = data[cfg.split]
    return HFTextDataset(data, cfg.text_field, cfg.label_field)
