"""The binning rule: a log-linear grid read straight from the float32 bits.

At resolution ``m``, a magnitude ``|x| = 2**e * (1 + f)`` falls in the bin given by its exponent
``e`` and the top ``m`` bits of its mantissa ``f``: ``2**m`` equal-width bins per octave, so a
bin is at most ``2**-m`` of its lower edge wide. The grid covers every float32: each octave
from the smallest normal (``2**-126``) to float32 max has its own bins, so no shared bin
swallows a distribution of tiny or huge values, and the subnormals below ``2**-126`` form one
more octave of ``2**m`` equal bins (at ``m = 23``, one per subnormal). Negative values use the
same bins, mirrored; exact zeros, NaN, +Inf and -Inf are counted apart.

Resolutions nest: dropping the last mantissa bit merges bins in exact pairs. Each neuron starts
at the finest resolution, ``mantissa_bits`` (23: every float32 its own bin), and coarsens one
bit at a time while its values of one sign would span more than ``max_bins`` bins. A neuron's
resolution is thus the finest at which its data fits the budget: a function of the data alone,
whatever its order or split, so merging stays exact integer addition once both sides are
brought to the coarser resolution.

Accuracy: the rank error of a quantile is at most the mass of the bin it falls in (every
answer can report that interval, see ``summary.py``), and in practice much less, because the
queries spread a bin's values over it by the shape its neighbours suggest (a monotone cubic;
near a neuron's exact min or max, a power law of the distance to it). Activations after a
channel max are often concentrated in a narrow range; a fixed grid would put most of a neuron
in a few bins, while here a neuron gets about ``max_bins`` bins across whatever range it spans.
Many samples on one exact value are read as that value where it is a neuron's min or max (a
clipped activation, a bias reached whenever a unit's input is dead): the sketch counts the
values equal to each extreme. A pile-up against an extreme that is not one value (GELU's
minimum) is read, pooled, from fine counts next to the min and max (:data:`FINE_BITS`). An
atom inside the range (a bias that is not an extreme) is counted exactly where the run's
first samples show it (``atoms.py``); one that appears only later stays spread over its bin.
See ``benchmarks/bench_accuracy.py`` for measured errors.

Memory: a neuron costs one counter for each bin between the smallest and the largest key it
has seen, per sign (see ``accumulator.py``): at most ``max_bins`` per sign unless the data spans
more octaves than even the coarsest resolution fits.

Few values: with a handful of values in each bin, any shape assumed inside a bin is far
from the truth (ten values in a bin may all sit in its lower half), and that sampling noise,
not the bin width, sets the rank error. So a layer keeps every value, exactly, until each of
its neurons has seen more than ``exact_values`` of them (over all groups); only then does it
fold them onto the grid. Exact summaries use the finest resolution and list only the bins
that hold values. Which form a summary takes depends on the number of values alone, so it is
the same for any split of the data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError

__all__ = [
    "FINE_BINS",
    "FINE_BITS",
    "GridSpec",
    "bin_edges_of",
    "fine_keys",
    "key_limits",
    "rebased_key",
]

_FLOAT32_BIAS = 127
_EXP_LO, _EXP_HI = 0, 255  # biased exponents: the subnormal octave up to float32 max
_SLOT_BUDGET = 1 << 24  # counters per layer and sign: 32 MB of uint16
_MIN_BINS, _MAX_BINS = 64, 1024
_MAX_EXACT = 1 << 28  # entries an exact summary can number (see _kernels.exact_codes)

# Fine counts at the extremes: next to each neuron's min and max over every row, the sketch also
# counts the values in FINE_BINS bins at 2**FINE_BITS bins per octave, wherever the grid is
# coarser (see accumulator.py). A pile-up against an extreme (GELU's and SiLU's minimum
# holds a tenth of the values within 1/64 of an octave) is then read from exact counts at
# the resolution it needs, not from the power law fitted to a coarse bin's count, whose
# sampling noise cost ViT-B/16's GELU layers 0.6-0.9 % in rank. 512 bins at 2**12 (1/8 of an
# octave) measured 0.33 % there; 256 at 2**12 0.48 %, 256 at 2**11 0.62 %.
FINE_BITS = 12
FINE_BINS = 512
FINE_SHIFT = 23 - FINE_BITS


def fine_keys(values: np.ndarray) -> np.ndarray:
    """The fine key (int64) of each float32 value: its bits as an integer that orders like
    the value (-0.0 as +0.0), with the last :data:`FINE_SHIFT` bits dropped.

    The update kernel computes the same from the same bits (``_kernels.update``); at
    resolution :data:`FINE_BITS`, a fine key ``k >= 0`` is the magnitude key ``k`` and
    ``k < 0`` the magnitude key ``-1 - k`` of a negative value.
    """
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.int32).astype(np.int64)
    mag = bits & 0x7FFFFFFF
    ordered = np.where((bits < 0) & (mag > 0), -1 - mag, mag)
    return ordered >> FINE_SHIFT


def key_limits(m: Any, exp_lo: Any, exp_hi: Any) -> tuple[Any, Any, Any]:
    """Shift, base and top of the keys at resolution ``m``: the binning rule, written once.

    A finite nonzero float32 whose bits without the sign are ``mag`` has the raw key
    ``mag >> shift`` (its exponent and the top ``m`` bits of its mantissa), and the rebased key
    ``min(max(raw, base), top) - base`` (see :func:`rebased_key`); ``exp_lo`` and ``exp_hi``
    are the biased exponents of the grid's ends. Plain integer arithmetic, so that the Numba
    kernels compile this very function, and numpy arrays broadcast through it. (Numba's
    on-disk cache keys on the kernels' own files alone: after editing the rule here, clear the
    ``__pycache__`` of ``sketch/_kernels``, or the kernels keep the old rule. A change of the rule is a
    change of the store format anyway.)
    """
    return 23 - m, (exp_lo << m) - 1, exp_hi << m


def rebased_key(mag: Any, shift: Any, base: Any, top: Any) -> Any:
    """The rebased key of a float32 magnitude ``mag`` (its bits without the sign), given
    :func:`key_limits`; the Numba kernels compile this very function. The clamp only gives
    zeros and non-finite values, which are counted apart, a harmless key."""
    return min(max(mag >> shift, base), top) - base


# 2**e for every float32 exponent: a table read, not a libm call per bin.
_POW2_BIAS = 160
_POW2 = np.ldexp(1.0, np.arange(-_POW2_BIAS, _POW2_BIAS + 1))
_F32_MAX = float(np.finfo(np.float32).max)


def bin_edges_of(key: Any, m: Any, exp_lo: Any, exp_hi: Any) -> tuple[float, float]:
    """Lower and upper magnitude edges of the bin of rebased key ``key`` at resolution ``m``:
    the rule for a bin's edges, written once (the Numba kernels compile this very function).

    Octave 0 holds the subnormals, in bins ``2**-126 / 2**m`` wide from 0; the last bin ends
    at float32 max, not ``2**128``: every finite value in it is at most float32 max.
    """
    raw = key + (exp_lo << m) - 1
    per_octave = 1 << m
    octave = raw >> m
    mantissa = raw & (per_octave - 1)
    scale = _POW2[_POW2_BIAS + max(octave, 1) - 127]
    lead = 0.0 if octave == 0 else 1.0  # subnormals have no implicit leading 1
    lower = scale * (lead + mantissa / per_octave)
    return lower, min(scale * (lead + (mantissa + 1) / per_octave), _F32_MAX)


@dataclass(frozen=True)
class GridSpec:
    """Parameters of the log-linear grid; two sketches merge only if their specs are equal.

    Parameters
    ----------
    mantissa_bits
        Finest resolution ``m``: ``2**m`` bins per octave (1 to 23; 23 is exact float32).
    min_mantissa_bits
        Coarsest resolution a layer may fall back to (1 to ``mantissa_bits``).
    max_bins
        Bins per sign a neuron may span before the layer coarsens; ``None`` sizes it from the
        layer (see :meth:`bins_budget`).
    exact_values
        Values per neuron (over all groups) a layer keeps exactly before it folds them onto
        the grid; ``None`` is four times the layer's bin budget (see :meth:`exact_budget`),
        0 folds from the first value.
    """

    mantissa_bits: int = 23
    min_mantissa_bits: int = 1
    max_bins: int | None = None
    exact_values: int | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.min_mantissa_bits <= self.mantissa_bits <= 23:
            raise ConfigError(
                "need 1 <= min_mantissa_bits <= mantissa_bits <= 23, got "
                f"min_mantissa_bits={self.min_mantissa_bits}, mantissa_bits={self.mantissa_bits}"
            )
        if self.max_bins is not None and self.max_bins < 2:
            raise ConfigError(f"max_bins must be at least 2, got {self.max_bins}")
        if self.exact_values is not None and not 0 <= self.exact_values <= _MAX_EXACT:
            raise ConfigError(
                f"exact_values must lie in [0, 2**28], got {self.exact_values}; a layer keeps "
                "that many values per neuron in memory"
            )

    def bins_budget(self, n_neurons: int, n_groups: int) -> int:
        """Bins per sign a neuron may span in a layer of this size before coarsening.

        Unless ``max_bins`` fixes it, a layer's counters get about 32 MB per sign, split over
        its (neuron, group) pairs, and each pair between 64 and 1,024 bins, rounded down to a
        power of two.

        Parameters
        ----------
        n_neurons
            Width of the layer.
        n_groups
            Groups that hold data: a sketch sizes its budget from the groups it has seen, so
            groups that never see a value cost no resolution. The budget shrinks as groups
            arrive, in at most five steps (a power of two from 1,024 down to 64).
        """
        if self.max_bins is not None:
            return self.max_bins
        share = _SLOT_BUDGET // max(1, n_neurons * n_groups)
        return int(np.clip(1 << max(0, share.bit_length() - 1), _MIN_BINS, _MAX_BINS))

    def exact_budget(self, n_neurons: int, n_groups: int) -> int:
        """Values per neuron a layer of this size keeps exactly before folding them.

        Unless ``exact_values`` fixes it, four times :meth:`bins_budget` (with the same
        arguments): an exact summary then has at most four times the bins of a grid summary of
        one sign, and a neuron's kept values (4 bytes each, at most 16 KB) cost as much memory
        as the counters of four groups spanning the full budget in both signs.
        """
        if self.exact_values is not None:
            return self.exact_values
        return 4 * self.bins_budget(n_neurons, n_groups)

    @property
    def exp_lo(self) -> int:
        """Lowest biased float32 exponent on the grid: 0, the subnormals."""
        return _EXP_LO

    @property
    def exp_hi(self) -> int:
        """Biased float32 exponent just past the grid: 255, the infinities (never binned)."""
        return _EXP_HI

    def key_base(self, m: Any) -> Any:
        """Raw key one below the grid's first bin at resolution ``m``: rebased keys start at 1.

        No finite nonzero float32 has this key; the kernels clamp to it (and to
        :meth:`key_top`) only so that zeros and non-finite values, which are counted apart,
        compute a harmless key.
        """
        return key_limits(np.asarray(m), self.exp_lo, self.exp_hi)[1]

    def key_top(self, m: Any) -> Any:
        """Raw key of +Inf at resolution ``m``: one past the last finite bin."""
        return key_limits(np.asarray(m), self.exp_lo, self.exp_hi)[2]

    def keys(self, values: np.ndarray, m: Any) -> np.ndarray:
        """Rebased magnitude keys of float32 ``values`` at resolution ``m`` (zero/non-finite: any)."""
        mag = np.asarray(values, dtype=np.float32).view(np.int32).astype(np.int64) & 0x7FFFFFFF
        limits = key_limits(np.asarray(m, dtype=np.int64), self.exp_lo, self.exp_hi)
        return np.vectorize(rebased_key, otypes=[np.int64])(mag, *limits)

    def coarsen(self, keys: np.ndarray, m: Any, to: Any) -> np.ndarray:
        """Rebased keys at resolution ``m`` mapped to resolution ``to <= m`` (exact: bins nest)."""
        keys = np.asarray(keys, dtype=np.int64)
        m, to = np.asarray(m, dtype=np.int64), np.asarray(to, dtype=np.int64)
        return np.right_shift(keys + self.key_base(m), m - to) - self.key_base(to)

    def magnitude_edges(self, keys: np.ndarray, m: Any) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper magnitude edges (float64) of rebased keys at resolution ``m``
        (:func:`bin_edges_of` over arrays; ``m`` may broadcast against ``keys``)."""
        edges = np.vectorize(bin_edges_of, otypes=[np.float64, np.float64])
        return edges(np.asarray(keys, np.int64), np.asarray(m, np.int64), self.exp_lo, self.exp_hi)

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain JSON types, for store attributes."""
        return {"kind": "log-linear-float32", **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GridSpec:
        """Inverse of :meth:`to_dict`."""
        kind = data.get("kind", "log-linear-float32")
        if kind != "log-linear-float32":
            raise ConfigError(
                f"unknown grid kind {kind!r}; this ndstream reads 'log-linear-float32'"
            )
        fields = {k: v for k, v in data.items() if k != "kind"}
        try:
            return cls(**fields)
        except TypeError as exc:
            raise ConfigError(
                f"grid attributes {sorted(fields)} are not a GridSpec: {exc}"
            ) from exc
