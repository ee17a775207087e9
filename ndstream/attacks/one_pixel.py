"""The one-pixel attack (Su et al. 2019) by differential evolution, batched on the device.

A candidate changes ``pixels`` pixels: for each, a row, a column and a value per channel, all
coded in [0, 1]. DE/rand/1 with ``F = 0.5`` and no crossover, as in the paper: each
iteration, every member ``p`` of the population proposes ``a + F (b - c)`` from three others
and keeps it if it lowers the fitness (the true class's probability, or one minus the
target's). An input stops as soon as one candidate succeeds.

torchattacks' ``OnePixel`` runs SciPy's optimiser per image and builds every candidate
image in a Python loop. Here the populations of many inputs are evaluated together, in
forward passes of up to ``max_batch`` images, and candidates are written into their images
by one indexed assignment; ``benchmarks/bench_one_pixel.py`` measures the difference.
"""

from __future__ import annotations

import torch
from torch import nn

from .result import AttackResult

__all__ = ["one_pixel"]

_F = 0.5  # differential weight, as in Su et al.


def one_pixel(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    *,
    pixels: int = 1,
    target: torch.Tensor | None = None,
    population: int = 400,
    iterations: int = 100,
    seed: int = 0,
    max_batch: int = 8192,
) -> AttackResult:
    """Attack unit-space images by changing at most ``pixels`` pixels each.

    Parameters
    ----------
    model
        Classifier of unit-space inputs (see :class:`~ndstream.attacks.UnitModel`).
    inputs
        ``[batch, channels, height, width]`` images in [0, 1].
    labels
        ``[batch]`` true labels.
    pixels
        Pixels an attack may change (1, 3 and 5 in the paper).
    target
        ``[batch]`` target classes for a targeted attack; ``None`` for untargeted.
    population
        Candidates per input (400 in the paper).
    iterations
        Most generations of differential evolution (100 in the paper).
    seed
        Seed of the random draws: the same arguments give the same result.
    max_batch
        Most candidate images in one forward pass (bounds memory).

    Returns
    -------
    AttackResult
        The best candidate of each input, in unit space. ``queries`` counts the candidate
        images evaluated for it (``population`` per generation it took part in).
    """
    if inputs.ndim != 4:
        raise ValueError(f"one_pixel needs images [batch, C, H, W], got {list(inputs.shape)}")
    if pixels < 1 or population < 4 or iterations < 0:
        raise ValueError(
            f"one_pixel needs pixels >= 1, population >= 4 and iterations >= 0; got {pixels}, "
            f"{population} and {iterations}"
        )
    gen = torch.Generator().manual_seed(seed)
    per_block = max(1, max_batch // population)
    parts = []
    for start in range(0, inputs.shape[0], per_block):
        block = slice(start, start + per_block)
        parts.append(
            _evolve(
                model, inputs[block], labels[block], None if target is None else target[block],
                pixels, population, iterations, gen,
            )
        )  # fmt: skip
    if not parts:
        empty = torch.zeros(0, dtype=torch.long, device=inputs.device)
        return AttackResult(inputs.clone(), empty.bool(), empty, empty)
    return AttackResult.concat(parts)


def _evolve(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    target: torch.Tensor | None,
    pixels: int,
    population: int,
    iterations: int,
    gen: torch.Generator,
) -> AttackResult:
    """Differential evolution for one block of inputs, all populations at once."""
    n, channels = x.shape[:2]
    dim = pixels * (2 + channels)
    device = x.device
    goal = (y if target is None else target).to(device)

    def fitness(cands: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(fitness, success) of ``cands[i, p]`` applied to input ``rows[i]``."""
        images = _apply(x[rows], cands)
        with torch.no_grad():
            logits = model(images.flatten(0, 1)).view(len(rows), cands.shape[1], -1)
        size = cands.shape[1]
        prob = logits.float().softmax(-1).gather(-1, goal[rows, None, None].expand(-1, size, 1))
        prob = prob[..., 0]
        hit = logits.argmax(-1) == goal[rows, None]
        if target is None:
            return prob, ~hit
        return 1.0 - prob, hit

    pop = torch.rand(n, population, dim, generator=gen).to(device)
    active = torch.arange(n, device=device)  # inputs still evolving; rows of pop and fit
    fit, won = fitness(pop, active)
    queries = torch.full((n,), population, dtype=torch.long, device=device)
    best = torch.zeros(n, dim, device=device)
    done = torch.zeros(n, dtype=torch.bool, device=device)
    for _ in range(iterations):
        _record_wins(won, fit, pop, active, best, done)
        going = ~won.any(1)
        active, pop, fit, won = active[going], pop[going], fit[going], won[going]
        if active.numel() == 0:
            break
        trial = _mutate(pop, gen)
        trial_fit, won = fitness(trial, active)
        queries[active] += population
        # A successful trial replaces its parent even when it is less fit: it ends the search.
        take = (trial_fit <= fit) | won
        pop = torch.where(take[..., None], trial, pop)
        fit = torch.where(take, trial_fit, fit)
    _record_wins(won, fit, pop, active, best, done)
    rest = ~done[active]  # never succeeded: keep the fittest candidate
    if rest.any():
        best[active[rest]] = pop[rest, fit[rest].argmin(1)]
    adversarial = _apply(x, best[:, None])[:, 0]
    with torch.no_grad():
        predicted = model(adversarial).argmax(-1)
    success = predicted != y.to(device) if target is None else predicted == goal
    return AttackResult(adversarial, success, predicted, queries)


def _record_wins(
    won: torch.Tensor,
    fit: torch.Tensor,
    pop: torch.Tensor,
    active: torch.Tensor,
    best: torch.Tensor,
    done: torch.Tensor,
) -> None:
    """For each active input with a successful candidate, keep the fittest such one."""
    rows = won.any(1)
    if not rows.any():
        return
    pick = torch.where(won, fit, torch.inf).argmin(1)
    best[active[rows]] = pop[rows, pick[rows]]
    done[active[rows]] = True


def _mutate(pop: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """DE/rand/1 proposals ``a + F (b - c)``, coordinates outside [0, 1] drawn afresh.

    ``a``, ``b`` and ``c`` are other members than the proposer (random offsets 1..P-1 from
    it); they may coincide with each other, rarely (about 2/P), which only makes that
    proposal a copy of ``a``: cheaper than drawing distinct triples.
    """
    n, size, dim = pop.shape
    offsets = torch.randint(1, size, (n, size, 3), generator=gen).to(pop.device)
    idx = (torch.arange(size, device=pop.device)[None, :, None] + offsets) % size
    a, b, c = (pop.gather(1, idx[..., j, None].expand(-1, -1, dim)) for j in range(3))
    trial = a + _F * (b - c)
    fresh = torch.rand(trial.shape, generator=gen).to(pop.device)
    outside = (trial < 0) | (trial >= 1)
    return torch.where(outside, fresh, trial)


def _apply(x: torch.Tensor, cands: torch.Tensor) -> torch.Tensor:
    """``[n, P, C, H, W]``: each input ``x[i]`` with candidate ``cands[i, p]`` written in."""
    n, size, _ = cands.shape
    channels, height, width = x.shape[1:]
    c = cands.view(n, size, -1, 2 + channels)
    rows = (c[..., 0] * height).long().clamp_(max=height - 1)
    cols = (c[..., 1] * width).long().clamp_(max=width - 1)
    images = x[:, None].expand(n, size, channels, height, width).clone()
    i = torch.arange(n, device=x.device)[:, None, None].expand_as(rows)
    p = torch.arange(size, device=x.device)[None, :, None].expand_as(rows)
    images[i, p, :, rows, cols] = c[..., 2:].to(images.dtype)
    return images
