"""Reduce one output tensor to per-neuron values, over real tokens only where a mask says.

:func:`reduce_output` runs in torch on the output's device; only the result goes to host.
``"max"`` and ``"mean"`` give ``[batch, 1, neurons]``; ``"none"`` keeps every position as
one more value of its neuron, ``[batch, positions, neurons]`` (neuron axis moved last,
positions in row-major order), or, where a token mask applies, :class:`TokenRows`: one row
per real position, since samples then hold different numbers of them. ``"mean"``
accumulates in float64, so the mean of finite values is finite even where their float32
sum would overflow. NaN and Inf propagate, except from masked positions, which never enter;
a sample without a single real position gets NaN from ``max`` and ``mean`` (it is counted,
not dropped).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "Reduced",
    "TokenMask",
    "TokenRows",
    "per_sample",
    "reduce_output",
    "samples_of",
    "sketch_rows",
]

# The float64 copy a mean is taken of, at most this many bytes at a time: a copy of a whole
# large output would double its memory, and on CPU a fresh large buffer costs more in page
# faults than the reduction itself. The CUDA caching allocator reuses blocks, so there larger
# slices only save kernel launches.
_MEAN_SLICE_BYTES = {"cpu": 16 << 20}
_MEAN_SLICE_BYTES_DEFAULT = 256 << 20


@dataclass(frozen=True)
class TokenRows:
    """A layer's values under ``reduction="none"`` with a token mask: one row per real token.

    Attributes
    ----------
    values : np.ndarray
        float32 ``[rows, neurons]``, C-contiguous.
    sample : np.ndarray
        int64 ``[rows]``: the sample (row of the batch) each row belongs to.
    n_samples : int
        Samples in the batch, those without a real token included.
    """

    values: np.ndarray
    sample: np.ndarray
    n_samples: int

    @property
    def nbytes(self) -> int:
        """Bytes held."""
        return int(self.values.nbytes + self.sample.nbytes)

    @property
    def n_neurons(self) -> int:
        """Neurons of the layer."""
        return int(self.values.shape[1])

    @staticmethod
    def stack(parts: Sequence[TokenRows]) -> TokenRows:
        """Batches one after another: sample numbers of each part follow the last one's."""
        offsets = np.cumsum([0, *(p.n_samples for p in parts[:-1])])
        return TokenRows(
            np.ascontiguousarray(np.concatenate([p.values for p in parts]), np.float32),
            np.concatenate([p.sample + o for p, o in zip(parts, offsets, strict=True)]),
            int(sum(p.n_samples for p in parts)),
        )

    @staticmethod
    def pool(parts: Sequence[TokenRows]) -> TokenRows:
        """Several calls on the same batch: each sample holds the rows of every call."""
        return TokenRows(
            np.ascontiguousarray(np.concatenate([p.values for p in parts]), np.float32),
            np.concatenate([p.sample for p in parts]),
            parts[0].n_samples,
        )

    def largest(self, rows: np.ndarray | None = None) -> np.ndarray:
        """``[len(rows), 1, neurons]``: each selected sample's largest value per neuron.

        NaN where a sample holds NaN or no real token, as the channel ``max`` would give.
        """
        rows = np.arange(self.n_samples) if rows is None else np.asarray(rows, np.int64)
        out = np.full((rows.size, self.n_neurons), -np.inf, dtype=np.float32)
        where = np.full(self.n_samples, -1, dtype=np.int64)
        where[rows] = np.arange(rows.size)
        slot = where[self.sample]
        keep = slot >= 0
        np.fmax.at(out, slot[keep], self.values[keep])  # fmax: NaN is put back below
        nan = np.zeros_like(out, dtype=bool)
        np.logical_or.at(nan, slot[keep], np.isnan(self.values[keep]))
        empty = np.bincount(slot[keep], minlength=rows.size) == 0
        out[nan | empty[:, None]] = np.nan
        return out[:, None, :]


Reduced = np.ndarray | TokenRows


@dataclass(frozen=True)
class TokenMask:
    """A batch's ``[batch, tokens]`` mask, read once for every layer of a forward pass.

    Attributes
    ----------
    real : torch.Tensor
        bool ``[batch, tokens]``, True on real tokens.
    spans : tuple of (int, int), or None
        Each sample's real tokens as one run ``start:stop``, where every sample's are one
        run (right or left padding): reductions then read those slices in place instead of
        copying the whole output to mask it, four times faster on a transformer's layers.
    """

    real: torch.Tensor
    spans: tuple[tuple[int, int], ...] | None

    @classmethod
    def of(cls, mask: torch.Tensor) -> TokenMask:
        """Read a mask (nonzero on real tokens)."""
        real = mask.detach().to(torch.bool)
        host = real.cpu()
        counts = host.sum(dim=1)
        starts = host.to(torch.uint8).argmax(dim=1)
        stops = starts + counts
        positions = torch.arange(host.shape[1])
        runs = (positions >= starts[:, None]) & (positions < stops[:, None])
        spans = None
        if bool((runs == host).all()):
            spans = tuple(zip(starts.tolist(), stops.tolist(), strict=True))
        return cls(real, spans)

    @property
    def length(self) -> int:
        """Tokens per sample, padding included."""
        return int(self.real.shape[1])

    @property
    def rows(self) -> int:
        """Samples in the batch."""
        return int(self.real.shape[0])


def per_sample(values: Reduced, rows: np.ndarray | None = None) -> np.ndarray:
    """``[samples, values_per_sample, neurons]`` for the selected samples (all by default).

    :class:`TokenRows` give each sample's largest value per neuron, what an instance records.
    """
    if isinstance(values, TokenRows):
        return values.largest(rows)
    return values if rows is None else values[rows]


def samples_of(values: Reduced) -> int:
    """How many samples ``values`` hold: the batch axis, or the samples of token rows."""
    return values.n_samples if isinstance(values, TokenRows) else int(values.shape[0])


def sketch_rows(values: Reduced, gids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(values [rows, neurons], group ids [rows, groupings])`` to fold into a sketch."""
    if isinstance(values, TokenRows):
        return values.values, gids[values.sample]
    b, per_sample_, n = values.shape
    rows = np.repeat(gids, per_sample_, axis=0) if per_sample_ > 1 else gids
    return values.reshape(b * per_sample_, n), rows


def token_axes(shape: Sequence[int], axis: int, mask: TokenMask | None) -> tuple[int, ...]:
    """The non-batch, non-neuron axes of an output that a ``[batch, tokens]`` mask covers."""
    if mask is None or shape[0] != mask.rows:
        return ()
    return tuple(i for i in range(1, len(shape)) if i != axis and shape[i] == mask.length)


def reduce_output(
    x: torch.Tensor, axis: int, reduction: str, mask: TokenMask | None = None
) -> Reduced:
    """Reduce a detached output ``x`` (ndim >= 2, neurons on ``axis`` > 0) to host values.

    Parameters
    ----------
    x : torch.Tensor
        The output, batch first.
    axis : int
        Its non-negative neuron axis.
    reduction : {"max", "mean", "none"}
        See the module docstring.
    mask : TokenMask, optional
        Which tokens are real, on ``x``'s device.

    Returns
    -------
    np.ndarray or TokenRows
        float32 ``[batch, values_per_sample, neurons]``, or :class:`TokenRows` for ``"none"``
        where the mask covers an axis.
    """
    # Not every backend reduces bool/integer tensors, and their means are fractional.
    x = x if x.is_floating_point() else x.to(torch.float32)
    batch, n_neurons = x.shape[0], x.shape[axis]
    spatial = tuple(i for i in range(1, x.ndim) if i != axis)
    tokens = token_axes(tuple(x.shape), axis, mask)
    one_run = mask is not None and mask.spans is not None and len(tokens) == 1
    if one_run and spatial == tokens and reduction in ("max", "mean"):
        assert mask is not None and mask.spans is not None
        return _host(_over_spans(x, tokens[0], reduction, mask.spans).unsqueeze(1), x)
    real = _broadcast_mask(mask.real, x.ndim, tokens) if mask is not None and tokens else None
    if reduction == "none" or not spatial:
        # [batch, positions, neurons], positions in row-major order of the other axes.
        positions = math.prod(x.shape[i] for i in spatial)
        flat = x.movedim(axis, -1).reshape(batch, positions, n_neurons)
        if real is None:
            return _host(flat, x)
        keep = real.expand(*x.shape[:axis], 1, *x.shape[axis + 1 :]).movedim(axis, -1)
        keep = keep.reshape(batch, positions)
        sample = torch.arange(batch, device=x.device).unsqueeze(1).expand(batch, positions)
        return TokenRows(
            _host(flat[keep], x), sample[keep].cpu().numpy().astype(np.int64), int(batch)
        )
    if reduction == "max":
        if real is not None:
            x = x.masked_fill(~real, -math.inf)
        # Reduced over the other axes where they lie: moving the neuron axis last would copy
        # the whole output. amax propagates NaN (nanmax-like ops would not).
        out = x.amax(dim=spatial)
        if real is not None:
            out = out.masked_fill(_real_count(real) == 0, math.nan)
        return _host(out.unsqueeze(1), x)
    if real is None:
        return _host(_mean(x, spatial).unsqueeze(1), x)
    others = math.prod(x.shape[i] for i in spatial if i not in tokens)
    counts = _real_count(real) * others
    total = _sum64(x.masked_fill(~real, 0.0), spatial)
    return _host((total / counts).unsqueeze(1), x)  # 0 / 0: NaN for a sample without tokens


def _over_spans(
    x: torch.Tensor, axis: int, reduction: str, spans: Sequence[tuple[int, int]]
) -> torch.Tensor:
    """``[batch, neurons]``: each sample's max or mean over its run of real tokens on
    ``axis`` (the output's one axis besides batch and neurons), read in place."""
    if x.device.type == "cpu" and x.dtype == torch.float32 and axis == 1 and x.is_contiguous():
        # [batch, tokens, neurons], a transformer's layout: one kernel call for the batch.
        from ..sketch._kernels import span_maxima, span_sums

        starts = np.array([a for a, _ in spans], dtype=np.int64)
        stops = np.array([b for _, b in spans], dtype=np.int64)
        values = x.numpy()
        if reduction == "max":
            out = np.empty((x.shape[0], x.shape[2]), dtype=np.float32)
            span_maxima(values, starts, stops, out)
            return torch.from_numpy(out)
        sums = np.empty((x.shape[0], x.shape[2]), dtype=np.float64)
        span_sums(values, starts, stops, sums)
        with np.errstate(invalid="ignore", divide="ignore"):  # 0 / 0: NaN, no real token
            return torch.from_numpy(sums / (stops - starts)[:, None])
    rows = []
    for i, (start, stop) in enumerate(spans):
        part = x[i].narrow(axis - 1, start, stop - start)
        if stop == start:  # no real token: NaN, counted like any NaN
            n = x.shape[1 if axis != 1 else 2]
            rows.append(torch.full((n,), math.nan, dtype=torch.float64, device=x.device))
        elif reduction == "max":
            rows.append(part.amax(dim=axis - 1).to(torch.float64))
        else:
            rows.append(part.sum(dim=axis - 1, dtype=torch.float64) / (stop - start))
    return torch.stack(rows)


def _broadcast_mask(mask: torch.Tensor, ndim: int, tokens: tuple[int, ...]) -> torch.Tensor:
    """The mask as a bool tensor that broadcasts against the output: real on every token axis."""
    real = mask.to(torch.bool)
    out: torch.Tensor | None = None
    for i in tokens:
        shape = [real.shape[0]] + [1] * (ndim - 1)
        shape[i] = real.shape[1]
        one = real.reshape(shape)
        out = one if out is None else out & one
    assert out is not None
    return out


def _real_count(real: torch.Tensor) -> torch.Tensor:
    """``[batch, 1]``: how many combinations of token positions of each sample are real."""
    return real.reshape(real.shape[0], -1).sum(dim=1, keepdim=True, dtype=torch.float64)


def _host(out: torch.Tensor, source: torch.Tensor) -> np.ndarray:
    out = out.to(torch.float32).cpu()
    if out.untyped_storage().data_ptr() == source.untyped_storage().data_ptr():
        # Still a view of the output (CPU, "none"): a later in-place op such as
        # ReLU(inplace=True) would rewrite it, and it would keep the whole output alive.
        out = out.clone()
    return np.ascontiguousarray(out.numpy())


def _sum64(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """The float64 sum over ``dims``, a slice of rows at a time (see ``_MEAN_SLICE_BYTES``)."""
    return _sliced(x, dims, lambda part: part.sum(dim=dims, dtype=torch.float64))


def _mean(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """The mean over ``dims``, accumulated in float64, of a floating-point tensor.

    A float32 sum overflows where the mean does not (a map of values near 3e38 would give
    +Inf); no sum of float32 values leaves the float64 range, and the mean of finite float32
    values is a finite float32 again. The float64 copy is made a slice of rows at a time.
    """
    if x.device.type == "mps":
        # MPS has no float64: scaling each value first keeps the float32 sum in range.
        return (x.to(torch.float32) / math.prod(x.shape[d] for d in dims)).sum(dim=dims)
    return _sliced(x, dims, lambda part: part.mean(dim=dims, dtype=torch.float64))


def _sliced(
    x: torch.Tensor, dims: tuple[int, ...], op: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    row_bytes = max(1, math.prod(x.shape[1:])) * 8
    limit = _MEAN_SLICE_BYTES.get(x.device.type, _MEAN_SLICE_BYTES_DEFAULT)
    rows = max(1, limit // row_bytes)
    if rows >= x.shape[0]:
        return op(x)
    return torch.cat([op(x[i : i + rows]) for i in range(0, x.shape[0], rows)])
