"""One-pixel attacks per second: ndstream's batched differential evolution against
torchattacks' ``OnePixel`` on the same images, in the same run.

What is measured
    The digits demo CNN (``configs/digits.yaml``'s model, trained offline on first use) and
    the first 32 test-split images it classifies correctly (16 with ``--quick``). Both attacks
    run untargeted with one pixel, a population of 100 candidates and at most 20 generations
    (10 with ``--quick``), and stop an image at its first success:

    * ndstream: :func:`ndstream.attacks.one_pixel`, every image's population evaluated in
      shared forward passes;
    * torchattacks: ``OnePixel(model, pixels=1, steps=S, popsize=100)``, which runs SciPy's
      differential evolution image by image and writes each candidate into its image in a
      Python loop (its population is ``popsize // 3 * 3`` = 99 for a one-channel image).

    After one warm-up call of each, they run in interleaved repeats (3, 2 with ``--quick``),
    timed with ``time.perf_counter``; the medians give attacked images per second. Success
    rates are printed beside them, so that speed is not bought with a weaker search. Default
    threads (torch picks its own intra-op count).

Run: ``python benchmarks/bench_one_pixel.py [--quick]``. The last line is the summary.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import interleaved, median, parse_args

from ndstream.attacks import one_pixel
from ndstream.demo import DigitsDataset, load_digits_cnn

POPULATION = 100


def main() -> None:
    args = parse_args(__doc__ or "")
    n_images, steps, repeats = (16, 10, 2) if args.quick else (32, 20, 3)
    import torchattacks

    model = load_digits_cnn().eval()
    data = DigitsDataset("test")
    x, y = data.images[:200], torch.as_tensor(data.targets[:200])
    with torch.no_grad():
        keep = model(x).argmax(1) == y
    x, y = x[keep][:n_images], y[keep][:n_images]
    rates: dict[str, float] = {}

    def ours() -> None:
        result = one_pixel(model, x, y, pixels=1, population=POPULATION, iterations=steps)
        rates["ndstream"] = result.success_rate

    def theirs() -> None:
        attack = torchattacks.OnePixel(model, pixels=1, steps=steps, popsize=POPULATION)
        adversarial = attack(x, y)
        with torch.no_grad():
            rates["torchattacks"] = float((model(adversarial).argmax(1) != y).float().mean())

    ours(), theirs()  # warm-up
    times = interleaved({"ndstream": ours, "torchattacks": theirs}, repeats)
    print(f"{len(y)} images, 1 pixel, population {POPULATION}, at most {steps} generations")
    print(f"{'attack':<14} {'median s':>9} {'images/s':>9} {'success':>8}")
    rate = {}
    for name, ts in times.items():
        rate[name] = len(y) / median(ts)
        print(f"{name:<14} {median(ts):>9.2f} {rate[name]:>9.1f} {rates[name]:>8.0%}")
    print(
        f"one-pixel attacks: {rate['ndstream']:.1f} images/s vs torchattacks "
        f"{rate['torchattacks']:.1f}: {rate['ndstream'] / rate['torchattacks']:.1f}x faster "
        f"(success {rates['ndstream']:.0%} vs {rates['torchattacks']:.0%})"
    )


if __name__ == "__main__":
    main()
