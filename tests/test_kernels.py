"""The Numba kernels of ``ndstream.sketch._kernels`` alone, on tiny hand-computed arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest
from strategies import ref_raw_keys

from ndstream.errors import ConfigError
from ndstream.sketch import GridSpec
from ndstream.sketch import _kernels as k
from ndstream.sketch import grid as grid_module
from ndstream.sketch.grid import FINE_BINS

F32_BIAS = 127  # IEEE 754 single precision exponent bias
M3 = 3  # the resolution the hand-computed update tests use: 8 bins per octave
F32_MAX = float(np.finfo(np.float32).max)  # 2**128 - 2**104, bits 0x7F7FFFFF


def hand_key(v: float, grid: GridSpec, m: int) -> int:
    """Rebased grid key of ``|v|`` at resolution ``m`` from first principles, without bit tricks.

    A normal ``|v| = 2**e * (1 + f)`` with ``0 <= f < 1`` has the raw key ``(e + 127) * 2**m``
    plus the top ``m`` bits of ``f``, i.e. ``floor(f * 2**m)``. A subnormal
    ``|v| = 2**-126 * f`` with ``0 < f < 1`` has the biased exponent 0: its raw key is
    ``floor(f * 2**m)``. Nothing is clamped; the key is rebased by ``- key_base(m)``, which is
    ``-(-1) = +1`` at every ``m`` (see ``test_grid_constants_by_hand``). ``grid`` is kept for the
    signature: every grid bins the same way.
    """
    a = abs(float(np.float32(v)))
    if a < 2.0**-126:  # subnormal: no implicit leading 1
        f = a / 2.0**-126  # exact: a power-of-two scaling in float64
        raw = math.floor(f * 2**m)
    else:
        _, exp2 = math.frexp(a)  # a = frac * 2**exp2 with 0.5 <= frac < 1
        e = exp2 - 1
        f = a / 2.0**e - 1.0
        raw = (e + F32_BIAS) * 2**m + math.floor(f * 2**m)
    return raw + 1


def kernel_keys(values: np.ndarray, grid: GridSpec, m) -> np.ndarray:
    """Key ranges reported by ``batch_key_ranges`` at resolution ``m`` (an int, or one per
    value), one value per neuron."""
    x = np.asarray(values, dtype=np.float32)[None, :]
    neurons = np.arange(x.shape[1], dtype=np.intp)
    res = np.broadcast_to(np.asarray(m, dtype=np.int32), (x.shape[1],)).copy()
    out = np.empty((x.shape[1], 4), dtype=np.int32)
    k.batch_key_ranges(x, neurons, res, grid.exp_lo, grid.exp_hi, out)
    return out


# -- keys -------------------------------------------------------------------------------------


def test_grid_constants_by_hand():
    g = GridSpec()  # finest m = 23 (exact float32); no exponent window
    assert (g.mantissa_bits, g.min_mantissa_bits, g.max_bins, g.exact_values) == (23, 1, None, None)
    # the grid spans every biased float32 exponent: 0 (the subnormals) up to 255 (the
    # infinities, never binned), whatever the other settings
    assert (g.exp_lo, g.exp_hi) == (0, 255)
    for other in (GridSpec(mantissa_bits=5), GridSpec(mantissa_bits=9, min_mantissa_bits=4)):
        assert (other.exp_lo, other.exp_hi) == (0, 255)
    # key_base(m) = (0 << m) - 1 = -1 at every m: one below raw key 0, so rebased = raw + 1
    for m in (1, 3, 4, 5, 10, 23):
        assert g.key_base(m) == (0 << m) - 1 == -1
    # key_top(m) = 255 << m, the raw key of +Inf (one past the last finite bin)
    assert g.key_top(1) == 255 * 2 == 510
    assert g.key_top(3) == 255 * 8 == 2040
    assert g.key_top(10) == 255 * 1024 == 261120
    # m = 23: the raw key is the float32 bit pattern itself (sign dropped); +Inf has the bits
    # 255 << 23 = 0x7F800000 = 2139095040
    assert g.key_top(23) == 255 * 2**23 == 0x7F800000 == 2139095040
    assert np.float32(np.inf).view(np.int32) == g.key_top(23)
    # ... and per neuron: an array of resolutions gives an array of keys
    ms = np.array([1, 3, 10, 23])
    np.testing.assert_array_equal(g.key_base(ms), [-1, -1, -1, -1])
    np.testing.assert_array_equal(g.key_top(ms), [510, 2040, 261120, 2139095040])
    # the kernels' key_limits: (shift 23 - m, key_base, key_top)
    assert k.key_limits(3, g.exp_lo, g.exp_hi) == (20, -1, 2040)
    assert k.key_limits(3, 0, 255) == (20, -1, 2040)
    assert k.key_limits(1, g.exp_lo, g.exp_hi) == (22, -1, 510)
    assert k.key_limits(10, g.exp_lo, g.exp_hi) == (13, -1, 261120)
    assert k.key_limits(23, g.exp_lo, g.exp_hi) == (0, -1, 2139095040)
    # 2**-126, the smallest normal, has the bits 1 << 23 (biased exponent 1, mantissa 0): raw
    # key (1 << 23) >> (23 - m) = 1 << m, rebased (1 << m) + 1
    assert np.float32(2.0**-126).view(np.int32) == 1 << 23 == 8388608
    # float32 max has the bits 0x7F7FFFFF = (255 << 23) - 1: raw key
    # ((255 << 23) - 1) >> (23 - m) = (255 << m) - 1, rebased 255 << m, the last finite key
    assert np.float32(F32_MAX).view(np.int32) == 0x7F7FFFFF == (255 << 23) - 1
    for m in (1, 3, 10, 23):
        raw = ref_raw_keys(np.array([2.0**-126, F32_MAX]), g, m)
        np.testing.assert_array_equal(raw, [1 << m, (255 << m) - 1])
        want = [(1 << m) + 1, 255 << m]
        np.testing.assert_array_equal(g.keys(np.array([2.0**-126, F32_MAX], np.float32), m), want)
        np.testing.assert_array_equal(kernel_keys(np.array([2.0**-126, F32_MAX]), g, m)[:, 0], want)
    # the exponent window is gone: its fields are no GridSpec arguments any more
    for field in ("min_exponent", "max_exponent"):
        with pytest.raises(TypeError, match=field):
            GridSpec(**{field: 0})
        assert not hasattr(g, field)
        assert field not in g.to_dict()
    with pytest.raises(TypeError):
        GridSpec(mantissa_bits=5, min_exponent=-126, max_exponent=128)  # type: ignore[call-arg]


def _floor_pow2(share: int) -> int:
    """The largest power of two at most ``share`` (1 for 0), by doubling."""
    p = 1
    while 2 * p <= share:
        p *= 2
    return p


def test_bins_budget_by_hand():
    g = GridSpec()
    # a fixed number S of counters per layer and sign (a tuning constant, a power of two of
    # at least 2**20), split over (neuron, group) pairs, rounded down to a power of two and
    # clipped to 64..1024
    slots = grid_module._SLOT_BUDGET
    assert slots >= 2**20 and slots & (slots - 1) == 0
    assert g.bins_budget(1, 1) == 1024  # clipped from above
    assert g.bins_budget(0, 5) == 1024  # no pairs: as if one
    assert g.bins_budget(slots // 1024, 1) == 1024  # exactly the cap
    assert g.bins_budget(slots // 2048, 4) == 512
    assert g.bins_budget(slots // 2048, 8) == 256
    assert g.bins_budget(slots // 128, 1) == 128
    assert g.bins_budget(slots // 128, 2) == 64  # exactly the floor
    assert g.bins_budget(slots // 128, 4) == 64  # clipped from below
    assert g.bins_budget(10**6, 10**4) == 64  # S // 10**10 == 0: the floor
    # not a power of two: integer division, then rounded down to a power of two, e.g.
    # S // (S // 100) == 100 for S >= 2**20, and 64 <= 100 < 128
    assert slots // (slots // 100) == 100
    assert g.bins_budget(slots // 100, 1) == 64
    # S // (S // 200) == 200 -> 128; S // (S // 1000) == 1000 -> 512
    assert slots // (slots // 200) == 200 and g.bins_budget(slots // 200, 1) == 128
    assert slots // (slots // 1000) == 1000 and g.bins_budget(slots // 1000, 1) == 512
    # one pair short of a power of two rounds down a whole step: S // (S // 512 + 1) < 512
    assert g.bins_budget(slots // 512 + 1, 1) == 256
    pairs = [(1, 1), (7, 3), (300, 22), (1000, 1000), (4096, 10), (10_000, 1000), (1000, 30)]
    pairs += [(2000, 10), (5000, 7), (100, 100), (300, 80)]
    for n, groups in pairs:
        got = g.bins_budget(n, groups)
        assert got == min(1024, max(64, _floor_pow2(slots // (n * groups)))), (n, groups)
        assert got & (got - 1) == 0  # always a power of two
    # at S = 2**24 by hand: 2**24 // (1000 * 30) = 559 -> 512; // (4096 * 10) = 409 -> 256;
    # // (5000 * 7) = 479 -> 256; // (300 * 80) = 699 -> 512; // (100 * 100) = 1677 -> 1024
    if slots == 2**24:
        by_hand = {(1000, 30): 512, (4096, 10): 256, (5000, 7): 256, (300, 80): 512}
        by_hand[100, 100] = 1024
        assert {pair: g.bins_budget(*pair) for pair in by_hand} == by_hand
    # more groups holding data never give more bins
    budgets = [g.bins_budget(500, c) for c in range(1, 600)]
    assert np.all(np.diff(budgets) <= 0)
    assert sorted(set(budgets)) == [64, 128, 256, 512, 1024]
    # a fixed budget ignores the layer's size, and is not rounded
    assert GridSpec(max_bins=16).bins_budget(1, 1) == 16
    assert GridSpec(max_bins=16).bins_budget(10_000, 1000) == 16
    assert GridSpec(max_bins=100).bins_budget(1, 1) == 100


def test_exact_budget_by_hand():
    g = GridSpec()
    for n, groups in ((1, 1), (512, 10), (4096, 10), (10**6, 10**4)):
        assert g.exact_budget(n, groups) == 4 * g.bins_budget(n, groups)
    assert g.exact_budget(512, 1) == 4096  # 4 * 1024
    assert g.exact_budget(10**6, 10**4) == 256  # 4 * 64
    # S // (S // 1000) == 1000 rounds down to 512 bins: 4 * 512 kept values
    assert g.exact_budget(grid_module._SLOT_BUDGET // 1000, 1) == 4 * 512 == 2048
    assert GridSpec(max_bins=16).exact_budget(1, 1) == 64
    assert GridSpec(exact_values=0).exact_budget(1, 1) == 0
    assert GridSpec(max_bins=16, exact_values=5).exact_budget(10**6, 10**4) == 5
    assert GridSpec(exact_values=2**28).exact_budget(1, 1) == 2**28 == k.MAX_ENTRIES
    for bad in (-1, 2**28 + 1):
        with pytest.raises(ConfigError, match=r"exact_values must lie in \[0, 2\*\*28\]"):
            GridSpec(exact_values=bad)


# Magnitudes far from 1 (once lumped into an underflow or overflow bin), each now in its own
# bin: 1e-30 and 1e-31, 1e30 and 1e31 lie in different octaves, so their keys differ at every m.
#   1e-30 -> float32 bits 0x0DA24260: biased exponent 27 (2**-100), mantissa 2245216
#   1e-31 -> bits 0x0C01CEB3: biased exponent 24 (2**-103)
#   1e30 -> bits 0x7149F2CA: biased exponent 226 (2**99)
#   1e31 -> bits 0x72FC6F7C: biased exponent 229 (2**102)
#   1e-40 -> bits 0x000116C2: a subnormal (biased exponent 0), 71362 * 2**-149
#   1e-45 -> bits 0x00000001: the smallest subnormal, 2**-149
#   1.1754942e-38 -> bits 0x007FFFFF: the largest subnormal
#   3e38 -> bits 0x7F61B1E6: biased exponent 254 (2**127)
FAR = [1e-30, 1e-31, 1e30, 1e31, 1e-40, 1e-45, 1.1754942e-38, 2.0**-126, 3e38, F32_MAX]


@pytest.mark.parametrize(
    "grid",
    [
        GridSpec(),
        GridSpec(mantissa_bits=5),
        GridSpec(mantissa_bits=9, min_mantissa_bits=4),
        GridSpec(mantissa_bits=1),
    ],
)
def test_float32_keys_match_hand_computation(grid):
    values = [1.0, 1.125, 1.24, 2.0, 0.75, -1.0, 3.0e-3, 2.0**-24, 2.0**48, *FAR]
    values += [-v for v in FAR]
    for m in range(grid.min_mantissa_bits, grid.mantissa_bits + 1):
        out = kernel_keys(np.array(values), grid, m)
        # GridSpec.keys gives the same rebased keys, with no kernel involved
        np.testing.assert_array_equal(
            grid.keys(np.array(values, dtype=np.float32), m),
            [hand_key(v, grid, m) for v in values],
            err_msg=f"m={m}",
        )
        for v, (pmin, pmax, nmin, nmax) in zip(values, out, strict=True):
            want = hand_key(v, grid, m)
            # no clamp: every finite nonzero value lies between the smallest subnormal's key
            # and the last finite key, 255 << m (raw (255 << m) - 1, plus 1)
            assert 1 <= want <= 255 << m, (m, v)
            if v > 0:
                assert pmin == pmax == want, (m, v)
                assert (nmin, nmax) == (k.EMPTY_LO, -1), (m, v)
            else:
                assert nmin == nmax == want, (m, v)
                assert (pmin, pmax) == (k.EMPTY_LO, -1), (m, v)
            lower, upper = grid.magnitude_edges(np.array([want]), m)
            a = abs(float(np.float32(v)))
            # the last bin is closed at float32 max
            assert lower[0] <= a < upper[0] or a == upper[0] == F32_MAX, (m, v)
        # far values are not lumped: different octaves, different keys
        for small, big in ((1e-30, 1e-31), (1e30, 1e31), (1e-30, 1e30), (1e-40, 2.0**-126)):
            assert hand_key(small, grid, m) != hand_key(big, grid, m), (m, small, big)
            assert out[values.index(small), 0] != out[values.index(big), 0], (m, small, big)
        # the float32 extremes: the smallest subnormal has raw key 1 >> (23 - m), i.e. 1 at
        # m = 23 and 0 below; float32 max has the last finite key
        assert out[values.index(1e-45), 0] == (1 if m == 23 else 0) + 1, m
        assert out[values.index(F32_MAX), 0] == 255 << m, m
        assert out[values.index(3e38), 0] <= 255 << m


def test_keys_at_per_neuron_resolutions():
    # one call, each neuron (here: each value) at its own resolution
    g = GridSpec()
    values = np.array([1.125, 1.125, 1.125, -1.125, 3.0, 1e-30, 1e-40], dtype=np.float32)
    res = np.array([1, 3, 23, 2, 10, 23, 10])
    # rebased key = raw key - key_base(m) = raw + 1 at every m
    # 1.125 = 2**0 * (1 + 1/8): mantissa bits 0010...0
    #   m = 1: raw 127 * 2 + 0 = 254, rebased 255
    #   m = 3: raw 127 * 8 + 1 = 1017, rebased 1018
    #   m = 23: raw = the bits 0x3F900000 = 1066401792, rebased 1066401793
    # -1.125, m = 2: raw 127 * 4 + 0 = 508, rebased 509 (negative)
    # 3.0 = 2**1 * (1 + 1/2), m = 10: raw 128 * 1024 + 512 = 131584, rebased 131585
    # 1e-30, m = 23: raw = the bits 0x0DA24260 = 27 * 2**23 + 2245216 = 228737632, rebased
    #   228737633: its own bin, no longer the underflow bin
    # 1e-40, m = 10: a subnormal, bits 0x000116C2 = 71362; raw 71362 >> 13 = 8 (8 * 8192 =
    #   65536 <= 71362 < 73728), rebased 9: the subnormal bin [8, 9) * 2**-136
    want = [255, 1018, 1066401793, 509, 131585, 228737633, 9]
    out = kernel_keys(values, g, res)
    for i, w in enumerate(want):
        if values[i] > 0:
            assert tuple(out[i]) == (w, w, k.EMPTY_LO, -1), i
        else:
            assert tuple(out[i]) == (k.EMPTY_LO, -1, w, w), i
    np.testing.assert_array_equal(g.keys(values, res), want)
    for i in range(values.size):
        assert hand_key(float(values[i]), g, int(res[i])) == want[i]
    # magnitude_edges broadcasts the resolutions too: at m = 23 a bin is one float32 wide;
    # 1e-30 as float32 is 2**-100 * (1 + 2245216 * 2**-23); the subnormal bins at m = 10 are
    # 2**-126 / 2**10 = 2**-136 wide
    f30 = 2.0**-100 * (1 + 2245216 * 2.0**-23)
    assert f30 == float(np.float32(1e-30))
    lower, upper = g.magnitude_edges(np.array(want), res)
    np.testing.assert_array_equal(lower, [1.0, 1.125, 1.125, 1.0, 3.0, f30, 8 * 2.0**-136])
    np.testing.assert_array_equal(
        upper,
        [1.5, 1.25, 1.125 + 2.0**-23, 1.25, 3.0 + 2.0**-9, f30 + 2.0**-123, 9 * 2.0**-136],
    )


def test_default_grid_keys_by_hand():
    g = GridSpec()
    values = np.array([1.0, 1.125, 1.24, 2.0, 0.75, -1.0])
    # m = 3, 8 bins per octave:
    # 1.0 = 2**0 * (1 + 0): raw key (0 + 127) * 8 + 0 = 1016
    # 1.125 = 2**0 * (1 + 1/8): mantissa bits 001 -> raw 1017
    # 1.24 = 2**0 * (1 + 0.24): floor(0.24 * 8) = 1 -> raw 1017 (same bin as 1.125)
    # 2.0 = 2**1: raw (1 + 127) * 8 = 1024
    # 0.75 = 2**-1 * (1 + 0.5): raw (126) * 8 + 4 = 1012
    # rebased: raw - key_base(3) = raw + 1
    want = np.array([1016, 1017, 1017, 1024, 1012, 1016]) + 1
    out = kernel_keys(values, g, 3)
    np.testing.assert_array_equal(out[:5, 0], want[:5])
    np.testing.assert_array_equal(out[5, 2], want[5])
    lower, upper = g.magnitude_edges(want, 3)
    np.testing.assert_array_equal(lower, [1.0, 1.125, 1.125, 2.0, 0.75, 1.0])
    np.testing.assert_array_equal(upper, [1.125, 1.25, 1.25, 2.25, 0.8125, 1.125])
    # m = 10, 1024 bins per octave:
    # 1.0 -> 127 * 1024 = 130048; 1.125 -> + 0.125 * 1024 = 130176;
    # float32(1.24) = 1.2400000095...: floor(0.2400000095 * 1024) = floor(245.76) = 245 -> 130293;
    # 2.0 -> 128 * 1024 = 131072; 0.75 -> 126 * 1024 + 512 = 129536
    want = np.array([130048, 130176, 130293, 131072, 129536, 130048]) + 1  # rebased
    out = kernel_keys(values, g, 10)
    np.testing.assert_array_equal(out[:5, 0], want[:5])
    np.testing.assert_array_equal(out[5, 2], want[5])
    lower, upper = g.magnitude_edges(want, 10)
    step = 1.0 / 1024
    np.testing.assert_array_equal(lower, [1.0, 1.125, 1.0 + 245 * step, 2.0, 0.75, 1.0])
    np.testing.assert_array_equal(
        upper,
        [1.0 + step, 1.125 + step, 1.0 + 246 * step, 2.0 + 2 * step, 0.75 + step / 2, 1.0 + step],
    )
    # m = 23 (the finest default: exact float32), 2**23 bins per octave; the raw key is the
    # float32 bit pattern:
    # 1.0 -> 127 * 2**23 = 1065353216 (0x3F800000); 1.125 -> + 2**20 = 1066401792;
    # float32(1.24): 0.24 * 2**23 = 2013265.92 rounds to 2013266 -> 1067366482 (0x3F9EB852);
    # 2.0 -> 128 * 2**23 = 1073741824; 0.75 -> 126 * 2**23 + 2**22 = 1061158912
    raw = np.array([1065353216, 1066401792, 1067366482, 1073741824, 1061158912, 1065353216])
    np.testing.assert_array_equal(raw, np.abs(values.astype(np.float32)).view(np.int32))
    want = raw + 1  # rebased
    out = kernel_keys(values, g, 23)
    np.testing.assert_array_equal(out[:5, 0], want[:5])
    np.testing.assert_array_equal(out[5, 2], want[5])
    # every float32 is its own bin: the lower edge is the value, the upper the next float32
    lower, upper = g.magnitude_edges(want, 23)
    f32 = np.abs(values.astype(np.float32)).astype(np.float64)
    np.testing.assert_array_equal(lower, f32)
    np.testing.assert_array_equal(upper, np.nextafter(f32.astype(np.float32), np.inf))
    ulp = 2.0**-23
    np.testing.assert_array_equal(
        upper, [1 + ulp, 1.125 + ulp, 1.0 + 2013267 * ulp, 2 + 2 * ulp, 0.75 + ulp / 2, 1 + ulp]
    )


@pytest.mark.parametrize("m", [1, 3, 10, 23])
def test_magnitude_edges_of_the_subnormal_octave_and_the_top_bin(m):
    g = GridSpec()
    per = 2**m  # bins per octave
    sub = 2.0**-126 / per  # width of a subnormal bin: 2**(-126 - m)
    # rebased key r is raw key r - 1 (key_base is -1):
    #   key 1 = raw 0: the first subnormal bin [0, 2**-126 / 2**m)
    #   key 2 = raw 1: [1, 2) * 2**-126 / 2**m (at m = 23: the smallest subnormal, 2**-149)
    #   key 2**m = raw 2**m - 1: the last subnormal bin [2**-126 - 2**-126 / 2**m, 2**-126)
    #   key 2**m + 1 = raw 1 << m: the first normal bin [2**-126, 2**-126 * (1 + 2**-m))
    #   key 255 * 2**m = raw (255 << m) - 1, the last finite bin: from 2**127 * (2 - 2**-m)
    #     = 2**128 - 2**(127 - m) up to float32 max (2**128 - 2**104), not 2**128; at m = 23
    #     both edges are float32 max (a bin of the one value)
    keys = np.array([1, 2, per, per + 1, 255 * per])
    want_lower = [0.0, sub, 2.0**-126 - sub, 2.0**-126, 2.0**128 - 2.0 ** (127 - m)]
    want_upper = [sub, 2 * sub, 2.0**-126, 2.0**-126 * (1 + 2.0**-m), F32_MAX]
    assert F32_MAX == 2.0**128 - 2.0**104
    lower, upper = g.magnitude_edges(keys, m)
    np.testing.assert_array_equal(lower, want_lower)
    np.testing.assert_array_equal(upper, want_upper)
    # the kernels' rule is the same, and every edge is a float32
    for i, key in enumerate(keys):
        assert k._magnitude_edges(int(key), m, g.exp_lo, g.exp_hi) == (want_lower[i], want_upper[i])
    assert np.all(np.array(want_lower, np.float32) == want_lower)
    assert np.all(np.array(want_upper, np.float32) == want_upper)
    if m == 23:  # one subnormal a bin: the lower edge is the value, the upper the next float32
        assert lower[1] == float(np.float32(1e-45)) == 2.0**-149 and upper[1] == 2.0**-148
        assert lower[4] == upper[4] == F32_MAX
    # 2**-24 (biased exponent 103) and 2**48 (175), the old window's edges, are ordinary bins:
    # 2**-24 is the lower edge of key (103 << m) + 1, and the bin below it, key 103 << m (raw
    # (103 << m) - 1, the last bin of the octave [2**-25, 2**-24)), is no underflow bin
    keys = np.array([103 * per + 1, 103 * per, 175 * per + 1, 175 * per])
    lower, upper = g.magnitude_edges(keys, m)
    want_lower = [2.0**-24, 2.0**-24 - 2.0 ** (-25 - m), 2.0**48, 2.0**48 - 2.0 ** (47 - m)]
    want_upper = [2.0**-24 * (1 + 2.0**-m), 2.0**-24, 2.0**48 * (1 + 2.0**-m), 2.0**48]
    np.testing.assert_array_equal(lower, want_lower)
    np.testing.assert_array_equal(upper, want_upper)
    np.testing.assert_array_equal(
        g.keys(np.array([2.0**-24, 2.0**48], np.float32), m), keys[[0, 2]]
    )


def test_zero_and_nonfinite_have_no_key():
    g = GridSpec()
    for m in (1, 10, 23):
        out = kernel_keys(np.array([0.0, -0.0, np.nan, np.inf, -np.inf]), g, m)
        for row in out:
            assert tuple(row) == (k.EMPTY_LO, -1, k.EMPTY_LO, -1)


@pytest.mark.parametrize(
    "grid",
    [
        pytest.param(GridSpec(), marks=pytest.mark.slow),  # every pair of 24 resolutions
        GridSpec(mantissa_bits=7, min_mantissa_bits=2),
        GridSpec(mantissa_bits=4),
    ],
)
def test_coarsen_equals_keys_computed_at_the_coarser_resolution(grid):
    rng = np.random.default_rng(21)
    bits = rng.integers(0, 2**31, size=20000, dtype=np.int64).astype(np.uint32)
    x = bits.view(np.float32)
    # random bit patterns are mostly huge or tiny: add the interesting middle, bin edges,
    # subnormals, the smallest normal and the float32 extremes
    extra = np.concatenate(
        [
            rng.lognormal(0.0, 4.0, 5000),
            2.0 ** np.arange(-30, 50, dtype=np.float64),
            2.0 ** np.arange(-30, 50, dtype=np.float64) * (1 + 2.0**-grid.mantissa_bits),
            [1e-45, 1e-40, 1.1754942e-38, 2.0**-126, 1e-30, 2.0**-24, 2.0**48, 2.0**127, 3.4e38],
            [F32_MAX],
        ]
    ).astype(np.float32)
    x = np.concatenate([x, extra])
    x = x[np.isfinite(x) & (x != 0)]
    resolutions = range(grid.min_mantissa_bits, grid.mantissa_bits + 1)
    # the reference's keys at each resolution, once (each is the target of many coarsenings)
    direct = {m: ref_raw_keys(x, grid, m) + 1 for m in resolutions}  # rebased: + 1
    for m in resolutions:
        keys = direct[m]
        # the kernel's keys and GridSpec.keys are the reference's (kernel: one neuron per value)
        ranges = kernel_keys(x[:300], grid, m)
        np.testing.assert_array_equal(ranges[:, 0], keys[:300])
        np.testing.assert_array_equal(grid.keys(x, m), keys)
        fine_lo, fine_hi = grid.magnitude_edges(keys, m)
        for to in range(grid.min_mantissa_bits, m + 1):
            got = grid.coarsen(keys, m, to)
            assert got.dtype == np.int64
            np.testing.assert_array_equal(got, direct[to], err_msg=f"{m} -> {to}")
            # bins nest: each coarse bin contains the fine bin
            coarse_lo, coarse_hi = grid.magnitude_edges(got, to)
            assert np.all((coarse_lo <= fine_lo) & (fine_hi <= coarse_hi)), (m, to)
    # per-value resolutions (arrays for m and to) give the same as one resolution at a time
    m = rng.integers(grid.min_mantissa_bits, grid.mantissa_bits + 1, x.size)
    to = rng.integers(grid.min_mantissa_bits, m + 1)
    keys = grid.keys(x, m)
    np.testing.assert_array_equal(keys, ref_raw_keys(x, grid, m) + 1)
    np.testing.assert_array_equal(ranges_at(x, grid, m), keys)
    got = grid.coarsen(keys, m, to)
    np.testing.assert_array_equal(got, ref_raw_keys(x, grid, to) + 1)
    fine_lo, fine_hi = grid.magnitude_edges(keys, m)
    coarse_lo, coarse_hi = grid.magnitude_edges(got, to)
    assert np.all((coarse_lo <= fine_lo) & (fine_hi <= coarse_hi))
    for i in rng.choice(x.size, 50, replace=False):  # and edges one at a time
        lo_i, hi_i = grid.magnitude_edges(keys[i : i + 1], int(m[i]))
        assert (lo_i[0], hi_i[0]) == (fine_lo[i], fine_hi[i])


def ranges_at(x: np.ndarray, grid: GridSpec, m: np.ndarray) -> np.ndarray:
    """Rebased keys of positive or negative ``x`` from ``batch_key_ranges``, ``m`` per value."""
    out = kernel_keys(x, grid, m)
    return np.where(x > 0, out[:, 0], out[:, 2])


# -- plan_groups ------------------------------------------------------------------------------


def test_plan_groups_by_hand():
    gids = np.array([[2, 0], [0, 0], [2, 1], [1, 3], [0, 0]], dtype=np.intp)
    row_group, seg_group = k.plan_groups(gids, 4)
    # grouping 0: groups 0, 1, 2 are present (3 is not); rows 0..4 are in 2, 0, 2, 1, 0
    np.testing.assert_array_equal(seg_group[0], [0, 1, 2, -1, -1])
    np.testing.assert_array_equal(row_group[0], [2, 0, 2, 1, 0])
    # grouping 1: groups 0, 1, 3; rows are in 0, 0, 1, 3, 0, the third of which is index 2
    np.testing.assert_array_equal(seg_group[1], [0, 1, 3, -1, -1])
    np.testing.assert_array_equal(row_group[1], [0, 0, 1, 2, 0])


def test_plan_groups_against_numpy():
    rng = np.random.default_rng(0)
    gids = rng.integers(0, 7, size=(50, 3)).astype(np.intp)
    row_group, seg_group = k.plan_groups(gids, 9)
    for p in range(3):
        present, index = np.unique(gids[:, p], return_inverse=True)
        n_seg = present.size
        np.testing.assert_array_equal(seg_group[p, :n_seg], present)
        assert np.all(seg_group[p, n_seg:] == -1)
        np.testing.assert_array_equal(row_group[p], index)
        np.testing.assert_array_equal(seg_group[p, row_group[p]], gids[:, p])


# -- update_counts ----------------------------------------------------------------------------


def _run_update(x, gids, n_groups, pos_off, neg_off, wp, wn, grid, m=M3, budget=2**30):
    """Call ``update_counts`` at resolution ``m`` (an int, or one per neuron) on a fresh paged
    state, with a bin budget that limits neurons finer than ``grid.min_mantissa_bits``;
    returns the dense view of the pages."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = x.shape[1]
    res = np.broadcast_to(np.asarray(m, dtype=np.int32), (n,)).copy()
    row_group, seg_group = k.plan_groups(gids, n_groups)
    pool = np.zeros((n * n_groups, k.N_SPECIAL + wp + wn), dtype=np.uint16)
    page = np.full((n, n_groups), -1, dtype=np.int32)
    n_pages = k.assign_pages(page, seg_group, 0)
    assert n_pages <= k.new_pages_needed(np.full_like(page, -1), seg_group)  # a bound
    mins = np.full((n, n_groups), np.inf, dtype=np.float32)
    maxs = np.full((n, n_groups), -np.inf, dtype=np.float32)
    extremes = np.zeros((2, n, n_groups), dtype=np.uint16)  # values at the min, at the max
    fine = np.zeros((n, 2 * FINE_BINS), dtype=np.uint16)
    neuron_min = np.full(n, np.inf, dtype=np.float32)
    neuron_max = np.full(n, -np.inf, dtype=np.float32)
    missed = np.zeros(n, dtype=np.bool_)
    n_missed = k.update_counts(
        x, row_group, seg_group, np.arange(n, dtype=np.intp), pool, page, mins, maxs,
        extremes[0], extremes[1], np.zeros(n, np.int32), np.zeros((n, n_groups), np.uint16),
        fine, neuron_min, neuron_max, np.asarray(pos_off, dtype=np.int32), np.asarray(neg_off, dtype=np.int32), wp, res,
        grid.exp_lo, grid.exp_hi, budget, grid.min_mantissa_bits, missed,
    )  # fmt: skip
    # every allocated page belongs to exactly one (neuron, group), numbered 0, 1, ...
    used = page[page >= 0]
    assert sorted(used.tolist()) == list(range(n_pages))
    assert not pool[n_pages:].any()  # unallocated pages stay untouched
    counts = np.zeros((n, n_groups, pool.shape[1]), dtype=pool.dtype)
    for nn, gg in zip(*np.nonzero(page >= 0), strict=True):
        counts[nn, gg] = pool[page[nn, gg]]
    _run_update.extremes = extremes  # type: ignore[attr-defined]  # for the tests that look
    _run_update.fine = (fine, page)  # type: ignore[attr-defined]
    return n_missed, counts, mins, maxs, missed, page


# A 4x2 batch, rows in groups [0, 1, 0, 1]:
#   neuron 0: 1.0 (g0), 1.125 (g1), -1.0 (g0), 0.0 (g1)
#   neuron 1: -0.0 (g0), NaN (g1), +Inf (g0), -Inf (g1)
X42 = np.array([[1.0, -0.0], [1.125, np.nan], [-1.0, np.inf], [0.0, -np.inf]], dtype=np.float32)
G42 = np.array([[0], [1], [0], [1]], dtype=np.intp)


def test_update_counts_by_hand():
    g = GridSpec()
    # 8 bins per octave; rebased = raw - key_base(3) = raw + 1
    key_1 = (0 + F32_BIAS) * 8 + 0 + 1  # 1.0 and -1.0: raw 1016, rebased 1017
    key_1125 = (0 + F32_BIAS) * 8 + 1 + 1  # 1.125: raw 1017, rebased 1018
    assert (key_1, key_1125) == (1017, 1018)
    wp, wn = 2, 1
    # neuron 0: positive window holds keys [key_1, key_1 + 1], negative window key_1
    n_missed, counts, mins, maxs, missed, page = _run_update(
        X42, G42, 2, [key_1, 0], [key_1, 0], wp, wn, g
    )
    assert n_missed == 0 and not missed.any()
    # pages are handed out before the update, neuron by neuron, group by group
    np.testing.assert_array_equal(page, [[0, 1], [2, 3]])
    pos0 = k.N_SPECIAL  # first positive slot
    neg0 = k.N_SPECIAL + wp  # first negative slot
    want = np.zeros((2, 2, k.N_SPECIAL + wp + wn), dtype=np.uint16)
    want[0, 0, pos0 + 0] = 1  # 1.0 in group 0
    want[0, 0, neg0 + 0] = 1  # -1.0 in group 0
    want[0, 1, pos0 + (key_1125 - key_1)] = 1  # 1.125 in group 1
    want[0, 1, k.ZERO] = 1  # 0.0 in group 1
    want[1, 0, k.ZERO] = 1  # -0.0 in group 0 is an exact zero
    want[1, 0, k.POSINF] = 1
    want[1, 1, k.NAN] = 1
    want[1, 1, k.NEGINF] = 1
    np.testing.assert_array_equal(counts, want)

    np.testing.assert_array_equal(mins[0], [-1.0, 0.0])
    np.testing.assert_array_equal(maxs[0], [1.0, 1.125])
    # neuron 1, group 0 saw only -0.0 and +Inf: min = max = +0.0 (sign dropped)
    assert mins[1, 0] == 0.0 and maxs[1, 0] == 0.0
    assert not np.signbit(mins[1, 0]) and not np.signbit(maxs[1, 0])
    # neuron 1, group 1 saw no finite value: min/max stay at their identities
    assert mins[1, 1] == np.inf and maxs[1, 1] == -np.inf
    # one value at each extreme (-0.0 is +0.0); none where no finite value came
    at_min, at_max = _run_update.extremes  # type: ignore[attr-defined]
    np.testing.assert_array_equal(at_min, [[1, 1], [1, 0]])
    np.testing.assert_array_equal(at_max, [[1, 1], [1, 0]])


def test_update_counts_flags_narrow_windows():
    g = GridSpec()
    key_1 = F32_BIAS * 8 + 1  # 1.0: raw 1016, rebased 1017
    # positive window of width 1 holds 1.0 but not 1.125: neuron 0 must be skipped entirely
    n_missed, counts, mins, maxs, missed, _ = _run_update(
        X42, G42, 2, [key_1, 0], [key_1, 0], 1, 1, g
    )
    assert n_missed == 1
    np.testing.assert_array_equal(missed, [True, False])
    assert not counts[0].any()  # its pages (given before the update) stay untouched
    assert np.all(mins[0] == np.inf) and np.all(maxs[0] == -np.inf)
    # neuron 1 holds only zeros and non-finite values, so it never misses and is counted
    assert counts[1, 0, k.ZERO] == 1 and counts[1, 0, k.POSINF] == 1
    assert counts[1, 1, k.NAN] == 1 and counts[1, 1, k.NEGINF] == 1

    # windows of width zero: every nonzero finite value misses
    n_missed, *_, missed, _ = _run_update(X42, G42, 2, [0, 0], [0, 0], 0, 0, g)
    assert n_missed == 1 and missed[0] and not missed[1]
    # a negative value outside an otherwise sufficient window also misses
    n_missed, *_, missed, _ = _run_update(X42, G42, 2, [key_1, 0], [key_1 + 1, 0], 2, 1, g)
    assert n_missed == 1 and missed[0]


def test_update_counts_holds_a_fine_neuron_to_the_budget():
    # Windows of 2 slots hold 1.0 and 1.125 (keys 1017 and 1018 at m = 3: raw 127 * 8 + 0 and
    # + 1, rebased + 1, on every grid). With a budget of one
    # bin, a neuron at m = 3 may use only the first slot, so it misses and must coarsen; at
    # the coarsest resolution nothing is left to coarsen, and it may use the whole window.
    x = np.array([[1.0], [1.125]], dtype=np.float32)
    gids = np.zeros((2, 1), dtype=np.intp)
    for coarsest, want_missed in ((1, True), (3, False)):
        g = GridSpec(mantissa_bits=3, min_mantissa_bits=coarsest)
        key_1 = F32_BIAS * 8 + 1
        n_missed, counts, *_ = _run_update(x, gids, 1, [key_1], [0], 2, 0, g, budget=1)
        assert n_missed == int(want_missed)
        assert counts[0, 0, k.N_SPECIAL : k.N_SPECIAL + 2].tolist() == (
            [0, 0] if want_missed else [1, 1]
        )
    # A budget as wide as the window changes nothing.
    g = GridSpec(mantissa_bits=3)
    key_1 = F32_BIAS * 8 + 1
    n_missed, counts, *_ = _run_update(x, gids, 1, [key_1], [0], 2, 0, g, budget=2)
    assert n_missed == 0 and counts[0, 0, k.N_SPECIAL : k.N_SPECIAL + 2].tolist() == [1, 1]


def test_update_counts_counts_each_grouping():
    g = GridSpec()
    key_1 = F32_BIAS * 8 + 1  # 1.0 at m = 3: raw 1016, rebased 1017
    x = np.array([[1.0], [1.0], [0.0]], dtype=np.float32)
    gids = np.array([[0, 2], [1, 2], [0, 0]], dtype=np.intp)
    n_missed, counts, mins, maxs, _, _ = _run_update(x, gids, 3, [key_1], [0], 1, 0, g)
    assert n_missed == 0
    # group 0 <- rows 0, 2 (grouping 0) and row 2 (grouping 1); group 1 <- row 1;
    # group 2 <- rows 0, 1 (grouping 1)
    np.testing.assert_array_equal(counts[0, :, k.ZERO], [2, 0, 0])
    np.testing.assert_array_equal(counts[0, :, k.N_SPECIAL], [1, 1, 2])
    np.testing.assert_array_equal(mins[0], [0.0, 1.0, 1.0])
    np.testing.assert_array_equal(maxs[0], [1.0, 1.0, 1.0])


def test_update_counts_min_max_of_extreme_values():
    # Min and max follow the float order of the finite values in every grouping, whatever
    # their magnitude: float32's extremes, subnormals, and -0.0 (kept as +0.0); NaN and the
    # infinities never count.
    big, tiny = np.finfo(np.float32).max, np.float32(1e-45)
    col = np.array([-big, big, tiny, -tiny, -0.0, np.nan, np.inf, -np.inf, 3.5, -2.25], np.float32)
    gids = np.stack([np.arange(col.size) % 2, np.full(col.size, 2)], axis=1).astype(np.intp)
    g = GridSpec()
    # every finite key at 8 bins per octave: 1 (raw 0, the smallest subnormals) to 255 * 8 =
    # 2040 (raw 2039, up to float32 max); windows from key 0 need 2041 slots
    wide = 255 * 8 + 1
    n_missed, counts, mins, maxs, _, _ = _run_update(col[:, None], gids, 3, [0], [0], wide, wide, g)
    assert n_missed == 0
    for group, rows in ((0, col[0::2]), (1, col[1::2]), (2, col)):
        finite = rows[np.isfinite(rows)]
        assert mins[0, group] == finite.min() and maxs[0, group] == finite.max()
        assert counts[0, group].sum() == rows.size
    assert mins[0, 0] == -big and maxs[0, 1] == big and maxs[0, 0] == np.float32(3.5)
    # a lone -0.0: min and max are +0.0
    zero_only = _run_update(np.array([[-0.0]], np.float32), gids[:1], 3, [0], [0], 1, 1, g)
    assert zero_only[2][0, 0] == 0.0 and not np.signbit(zero_only[2][0, 0])
    assert not np.signbit(zero_only[3][0, 0])


def test_new_pages_needed():
    page = np.array([[0, -1, -1], [-1, 1, -1]], dtype=np.int32)
    # batch touches groups 1 and 2 (grouping 0) and group 0 (grouping 1)
    seg_group = np.array([[1, 2, -1], [0, -1, -1]], dtype=np.intp)
    # group 1: neuron 0 lacks one; group 2: both lack one; group 0: neuron 1 lacks one
    assert k.new_pages_needed(page, seg_group) == 1 + 2 + 1


def test_update_counts_at_a_fine_resolution():
    g = GridSpec()
    m = 10
    # rebased keys at m = 10 (raw + 1):
    #   1.0 -> raw 127 * 1024 = 130048 -> 130049; 1.125 -> 128 bins further, 130177
    #   1e-30 = 2**-100 * 1.2676506 (bits 0x0DA24260: biased exponent 27, mantissa 2245216):
    #     raw 27 * 1024 + floor(0.2676506 * 1024) = 27648 + 274 = 27922 (2245216 >> 13 = 274)
    #     -> 27923: its own bin, no underflow bin
    #   2**60 (biased exponent 60 + 127 = 187) -> raw 187 * 1024 = 191488 -> 191489: its own
    #     bin, no overflow bin
    #   -1.0 -> 130049 on the negative side
    key_1 = F32_BIAS * 1024 + 1
    key_tiny, key_huge = 27 * 1024 + 274 + 1, 187 * 1024 + 1
    assert (key_1, key_tiny, key_huge) == (130049, 27923, 191489)
    x = np.array([[1.0], [1.125], [1e-30], [2.0**60], [-1.0]], dtype=np.float32)
    gids = np.zeros((5, 1), dtype=np.intp)
    # a positive window from the key of 1e-30 to that of 2**60, both ends included
    wp = key_huge - key_tiny + 1
    n_missed, counts, mins, maxs, _, _ = _run_update(x, gids, 1, [key_tiny], [key_1], wp, 1, g, m)
    assert n_missed == 0
    want = np.zeros(k.N_SPECIAL + wp + 1, dtype=np.uint16)
    want[k.N_SPECIAL + key_1 - key_tiny] = 1
    want[k.N_SPECIAL + key_1 + 128 - key_tiny] = 1
    want[k.N_SPECIAL + 0] = 1  # 1e-30, the first slot
    want[k.N_SPECIAL + wp - 1] = 1  # 2**60, the last slot
    want[k.N_SPECIAL + wp + 0] = 1  # -1.0: negative window starts at key_1
    np.testing.assert_array_equal(counts[0, 0], want)
    assert mins[0, 0] == -1.0 and maxs[0, 0] == np.float32(2.0**60)
    # neither far value is lumped with a neighbour: one slot less at either end misses
    n_missed, *_ = _run_update(x, gids, 1, [key_tiny], [key_1], wp - 1, 1, g, m)
    assert n_missed == 1  # 2**60 past the window
    n_missed, *_ = _run_update(x, gids, 1, [key_tiny + 1], [key_1], wp - 1, 1, g, m)
    assert n_missed == 1  # 1e-30 before the window
    # a window of width 2 starting at 1.0 holds 1.125 at m = 3 (the next key of 8 per octave)
    # but not at m = 10, where 1.125 is 128 keys further
    key_1_m3 = F32_BIAS * 8 + 1  # raw 1016, rebased 1017
    n_missed, *_ = _run_update(x[:2], gids[:2], 1, [key_1_m3], [0], 2, 0, g, M3)
    assert n_missed == 0
    n_missed, *_ = _run_update(x[:2], gids[:2], 1, [key_1], [0], 2, 0, g, m)
    assert n_missed == 1  # 128 keys apart at m = 10


def test_update_counts_at_per_neuron_resolutions():
    # three neurons see the same values, 1.0, its float32 successor 1 + 2**-23, 1.125 and -1.0,
    # each at its own resolution: m = 23 (exact), m = 3 and m = 1
    g = GridSpec()
    one_up = float(np.nextafter(np.float32(1.0), np.float32(2.0)))
    assert one_up == 1.0 + 2.0**-23
    col = np.array([1.0, one_up, 1.125, -1.0], dtype=np.float32)
    x = np.repeat(col[:, None], 3, axis=1)
    gids = np.array([[0], [1], [0], [1]], dtype=np.intp)
    # keys of 1.0 (and -1.0), raw + 1: the bits 127 * 2**23 = 1065353216, rebased 1065353217,
    # at m = 23; 127 * 8 + 1 = 1017 at m = 3; 127 * 2 + 1 = 255 at m = 1
    k23, k3, k1 = 127 * 2**23 + 1, 1017, 255
    assert (k23, k3, k1) == (1065353217, 127 * 8 + 1, 127 * 2 + 1)
    # at m = 23: 1.0, 1 + 2**-23 and 1.125 are keys k23, k23 + 1, k23 + 2**20: a positive
    # window of width 3 from k23 misses 1.125, so first a window wide enough
    wp, wn = 2**20 + 1, 1
    res = [23, 3, 1]
    n_missed, counts, mins, maxs, missed, _ = _run_update(
        x, gids, 2, [k23, k3, k1], [k23, k3, k1], wp, wn, g, res
    )
    assert n_missed == 0 and not missed.any()
    pos, neg = k.N_SPECIAL, k.N_SPECIAL + wp
    # neuron 0 (m = 23): every value its own key
    assert counts[0, 0, pos + 0] == 1  # 1.0, group 0
    assert counts[0, 1, pos + 1] == 1  # 1 + 2**-23, group 1
    assert counts[0, 0, pos + 2**20] == 1  # 1.125 = 1 + 2**20 * 2**-23, group 0
    assert counts[0, 1, neg + 0] == 1  # -1.0, group 1
    assert counts[0].sum() == 4
    # neuron 1 (m = 3): 1.0 and its successor share key 1017, 1.125 is key 1018
    assert counts[1, 0, pos + 0] == 1 and counts[1, 1, pos + 0] == 1
    assert counts[1, 0, pos + 1] == 1
    assert counts[1, 1, neg + 0] == 1
    assert counts[1].sum() == 4
    # neuron 2 (m = 1): 1.0, its successor and 1.125 all in [1, 1.5), key 255
    assert counts[2, 0, pos + 0] == 2 and counts[2, 1, pos + 0] == 1
    assert counts[2, 1, neg + 0] == 1
    assert counts[2].sum() == 4
    np.testing.assert_array_equal(mins, [[1.0, -1.0]] * 3)
    np.testing.assert_array_equal(maxs, [[1.125, one_up]] * 3)
    # a window of width 2 from the key of 1.0 holds all positive values at m = 1 and m = 3 but
    # not 1.125 at m = 23: only neuron 0 misses
    n_missed, counts, _, _, missed, _ = _run_update(
        x, gids, 2, [k23, k3, k1], [k23, k3, k1], 2, 1, g, res
    )
    assert n_missed == 1
    np.testing.assert_array_equal(missed, [True, False, False])
    assert not counts[0].any()
    assert counts[1, 0, pos + 1] == 1 and counts[2, 0, pos + 0] == 2
    # the same windows with neuron 0 at m = 3 too: no miss
    n_missed, *_ = _run_update(x, gids, 2, [k3, k3, k1], [k3, k3, k1], 2, 1, g, [3, 3, 1])
    assert n_missed == 0


def test_occupied_key_ranges_by_hand():
    # 3 neurons, 3 groups; windows wp = 4, wn = 3. Pages, via the page table:
    #   (neuron 0, group 2) -> page 0: pos keys 11, 13; neg key 6
    #   (neuron 2, group 1) -> page 1: only exact zeros and NaN, no binned value
    #   (neuron 0, group 0) -> page 2: pos key 10; neg key 7
    # neuron 1 has no page at all
    wp, wn = 4, 3
    pool = np.zeros((3, k.N_SPECIAL + wp + wn), dtype=np.uint16)
    pool[0, k.N_SPECIAL + 1] = 2  # pos key 10 + 1
    pool[0, k.N_SPECIAL + 3] = 3  # pos key 10 + 3
    pool[0, k.N_SPECIAL + wp + 1] = 1  # neg key 5 + 1
    pool[1, k.ZERO] = 5
    pool[1, k.NAN] = 1
    pool[2, k.N_SPECIAL + 0] = 1  # pos key 10
    pool[2, k.N_SPECIAL + wp + 2] = 4  # neg key 5 + 2
    page = np.array([[2, -1, 0], [-1, -1, -1], [-1, 1, -1]], dtype=np.int32)
    pos_off = np.array([10, 0, 100], np.int32)
    neg_off = np.array([5, 0, 50], np.int32)
    empty = [k.EMPTY_LO, -1, k.EMPTY_LO, -1]
    # neuron 0 over both its groups: pos [10, 13], neg [6, 7]; the others have no binned key
    out = np.full((3, 4), 777, dtype=np.int32)  # no prefill needed
    neurons = np.array([2, 0, 1], dtype=np.intp)  # any order: rows follow the list
    k.occupied_key_ranges(pool, page, neurons, pos_off, neg_off, wp, out)
    np.testing.assert_array_equal(out, [empty, [10, 13, 6, 7], empty])
    out = np.full((1, 4), 777, dtype=np.int32)
    k.occupied_key_ranges(pool, page, np.array([0], np.intp), pos_off, neg_off, wp, out)
    np.testing.assert_array_equal(out, [[10, 13, 6, 7]])
    # a count at the very edges of the windows
    pool[2, k.N_SPECIAL + wp - 1] = 1  # pos key 13 in group 0 too
    pool[2, k.N_SPECIAL + wp + wn - 1] = 1  # neg key 7, the last slot
    pool[0, k.N_SPECIAL + wp + 0] = 1  # neg key 5, the first slot
    k.occupied_key_ranges(pool, page, np.array([0], np.intp), pos_off, neg_off, wp, out)
    np.testing.assert_array_equal(out, [[10, 13, 5, 7]])


def test_add_pages_by_hand():
    # 2 neurons, 2 groups; only (neuron 0, group 1) has a page in src (page 0).
    # src windows of neuron 0: pos keys [10, 13), neg keys [5, 7)
    src = np.zeros((1, k.N_SPECIAL + 3 + 2), dtype=np.uint16)
    src[0, k.ZERO] = 4
    src[0, k.NAN] = 1
    src[0, k.N_SPECIAL + 1] = 2  # pos key 11
    src[0, k.N_SPECIAL + 3 + 1] = 3  # neg key 6
    src_page = np.array([[-1, 0], [-1, -1]], dtype=np.int32)
    src_pos, src_neg = np.array([10, 0], np.int32), np.array([5, 0], np.int32)
    out = np.empty((2, 4), dtype=np.int32)
    k.occupied_key_ranges(src, src_page, np.arange(2, dtype=np.intp), src_pos, src_neg, 3, out)
    np.testing.assert_array_equal(out, [[11, 11, 6, 6], [k.EMPTY_LO, -1, k.EMPTY_LO, -1]])

    # dst windows of neuron 0: pos keys [9, 13), neg keys [6, 9); dst page of (0, 1) is 1 and
    # already holds 5 at pos key 11; page 0 belongs to (1, 0) and must not change.
    # Same resolution (m = 3 on both sides): keys are only re-windowed.
    g = GridSpec()
    res = np.array([M3, M3], np.int32)
    dst = np.zeros((2, k.N_SPECIAL + 4 + 3), dtype=np.uint32)
    dst[1, k.N_SPECIAL + 2] = 5
    dst[0, k.ZERO] = 9
    dst_page = np.array([[-1, 1], [0, -1]], dtype=np.int32)
    k.add_pages(
        src, src_page, src_pos, src_neg, 3, res,
        dst, dst_page, np.array([9, 0], np.int32), np.array([6, 0], np.int32), 4, res, g.exp_lo,
    )  # fmt: skip
    want = np.zeros_like(dst)
    want[0, k.ZERO] = 9
    want[1, k.ZERO] = 4
    want[1, k.NAN] = 1
    want[1, k.N_SPECIAL + 2] = 5 + 2  # pos key 11 = 9 + 2
    want[1, k.N_SPECIAL + 4 + 0] = 3  # neg key 6 = 6 + 0
    np.testing.assert_array_equal(dst, want)


def test_add_pages_coarsens_by_hand():
    # Default grid; rebased key r is raw key r - 1 at every resolution (key_base is -1).
    # Neuron 0 goes from m = 3 to m = 1 (2 bits), across the subnormal/normal boundary:
    # src pos keys 8..13 are raw 7..12:
    #   7 = 0 * 8 + 7 (the subnormal octave, mantissa 111: [7/8, 1) * 2**-126) -> m = 1:
    #     0 * 2 + 1 = 1 -> rebased 2
    #   8..11 = 1 * 8 + 0..3 (the octave [2**-126, 2**-125), mantissa 0xx) -> 1 * 2 + 0 = 2
    #     -> rebased 3
    #   12 = 1 * 8 + 4 (mantissa 100) -> 1 * 2 + 1 = 3 -> rebased 4
    # src neg keys 4..6 are raw 3..5 (subnormal mantissas 011, 100, 101):
    #   3 -> 0 * 2 + 0 = 0 -> rebased 1; 4, 5 -> 0 * 2 + 1 = 1 -> rebased 2
    # Neuron 1 goes from m = 5 to m = 4 (1 bit), at the top of the grid: the last finite key
    # is 255 * 32 = 8160 at m = 5 (raw 8159 = 254 * 32 + 31, [2**127 * 63/32, float32 max])
    # and 255 * 16 = 4080 at m = 4:
    #   src pos keys 8157..8160 are raw 8156..8159 = 254 * 32 + 28..31 -> >> 1:
    #     4078, 4078, 4079, 4079 (254 * 16 + 14, 15) -> rebased 4079, 4079, 4080, 4080
    #   src neg keys 8150..8152 are raw 8149..8151 = 254 * 32 + 21..23 -> >> 1:
    #     4074, 4075, 4075 (254 * 16 + 10, 11) -> rebased 4075, 4076, 4076
    g = GridSpec()
    assert (g.key_base(3), g.key_base(1), g.key_base(5), g.key_base(4)) == (-1, -1, -1, -1)
    np.testing.assert_array_equal(g.coarsen(np.arange(8, 14), 3, 1), [2, 3, 3, 3, 3, 4])
    np.testing.assert_array_equal(g.coarsen(np.arange(4, 7), 3, 1), [1, 2, 2])
    np.testing.assert_array_equal(g.coarsen(np.arange(8157, 8161), 5, 4), [4079, 4079, 4080, 4080])
    np.testing.assert_array_equal(g.coarsen(np.arange(8150, 8153), 5, 4), [4075, 4076, 4076])
    # both at once, resolutions per key
    np.testing.assert_array_equal(
        g.coarsen([8, 13, 8157, 8152], [3, 3, 5, 5], [1, 1, 4, 4]), [2, 4, 4079, 4076]
    )
    # the coarse bins hold the fine ones: float32 max stays in the last finite bin
    lo, hi = g.magnitude_edges([8160, 4080], [5, 4])
    np.testing.assert_array_equal(lo, [2.0**127 * (1 + 31 / 32), 2.0**127 * (1 + 15 / 16)])
    np.testing.assert_array_equal(hi, [F32_MAX, F32_MAX])
    wp, wn = 6, 3
    src = np.zeros((2, k.N_SPECIAL + wp + wn), dtype=np.uint16)
    src[0, : k.N_SPECIAL] = [9, 1, 2, 3]  # zero, NaN, +Inf, -Inf
    src[0, k.N_SPECIAL : k.N_SPECIAL + wp] = [1, 2, 0, 3, 4, 5]  # pos keys 8..13
    src[0, k.N_SPECIAL + wp :] = [6, 7, 8]  # neg keys 4..6
    src[1, : k.N_SPECIAL] = [0, 0, 0, 17]
    src[1, k.N_SPECIAL : k.N_SPECIAL + wp] = [0, 0, 10, 11, 12, 13]  # pos keys 8155..8160
    src[1, k.N_SPECIAL + wp :] = [14, 15, 16]  # neg keys 8150..8152
    src_page = np.array([[0], [1]], dtype=np.int32)
    # dst: pos windows of 3 keys, neg windows of 2; neuron 0 (m = 1) from pos key 2 and neg
    # key 1, already 100 at pos key 3; neuron 1 (m = 4) from pos key 4078 and neg key 4075.
    # The dst pages are numbered the other way round.
    dst = np.zeros((2, k.N_SPECIAL + 3 + 2), dtype=np.uint32)
    dst[1, k.N_SPECIAL + 1] = 100
    dst_page = np.array([[1], [0]], dtype=np.int32)
    k.add_pages(
        src, src_page, np.array([8, 8155], np.int32), np.array([4, 8150], np.int32), wp,
        np.array([3, 5], np.int32),
        dst, dst_page, np.array([2, 4078], np.int32), np.array([1, 4075], np.int32), 3,
        np.array([1, 4], np.int32), g.exp_lo,
    )  # fmt: skip
    # neuron 0: specials carried over; pos keys 2, 3, 4; neg keys 1, 2
    np.testing.assert_array_equal(dst[1], [9, 1, 2, 3, 1, 100 + 2 + 0 + 3 + 4, 5, 6, 7 + 8])
    # neuron 1: pos keys 4078 (nothing), 4079, 4080; neg keys 4075, 4076
    np.testing.assert_array_equal(dst[0], [0, 0, 0, 17, 0, 10 + 11, 12 + 13, 14, 15 + 16])
    assert dst.sum() == src.sum(dtype=np.int64) + 100  # no count lost or invented


def test_move_windows_by_hand():
    # In place, same window widths (wp = 6, wn = 3); 3 neurons, 2 groups:
    #   neuron 0, m = 3 -> 1, pages 0 (group 0) and 3 (group 1), windows pos 8.., neg 4..
    #     -> pos from key 2, neg from key 1 (the keys as in test_add_pages_coarsens_by_hand)
    #   neuron 1, m = 23 -> 23, page 1 (group 0), windows pos 1000.., neg 2.. -> pos 998..,
    #     neg 2.. (keys of subnormals: key 2 is raw 1, 2**-149, the smallest one)
    #   neuron 2, page 2 (group 1): not listed, so untouched whatever the new arrays say
    wp, wn = 6, 3
    pool = np.zeros((4, k.N_SPECIAL + wp + wn), dtype=np.uint32)
    pool[0] = [9, 1, 2, 3, 1, 2, 0, 3, 4, 5, 6, 7, 8]
    pool[3] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 7, 1, 0, 0]  # pos key 13, neg key 4
    pool[1] = [1, 0, 0, 0, 1, 2, 3, 0, 0, 0, 4, 0, 0]  # pos keys 1000..1002, neg key 2
    pool[2] = [2, 2, 2, 2, 5, 5, 5, 5, 5, 5, 6, 6, 6]
    untouched = pool[2].copy()
    page = np.array([[0, 3], [1, -1], [-1, 2]], dtype=np.int32)
    pos_off = np.array([8, 1000, 5], np.int32)
    neg_off = np.array([4, 2, 5], np.int32)
    res = np.array([3, 23, 7], np.int32)
    new_pos = np.array([2, 998, 0], np.int32)
    new_neg = np.array([1, 2, 0], np.int32)
    new_res = np.array([1, 23, 2], np.int32)
    k.move_windows(
        pool, page, np.array([1, 0], np.intp), pos_off, neg_off, res, new_pos, new_neg,
        new_res, wp, GridSpec().exp_lo,
    )  # fmt: skip
    # neuron 0: pos keys 8..13 (m = 3) -> 2, 3, 3, 3, 3, 4 (m = 1); neg keys 4..6 -> 1, 2, 2
    np.testing.assert_array_equal(pool[0], [9, 1, 2, 3, 1, 2 + 0 + 3 + 4, 5, 0, 0, 0, 6, 15, 0])
    np.testing.assert_array_equal(pool[3], [0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 1, 0, 0])
    # neuron 1: the same keys, two slots further into the window
    np.testing.assert_array_equal(pool[1], [1, 0, 0, 0, 0, 0, 1, 2, 3, 0, 4, 0, 0])
    np.testing.assert_array_equal(pool[2], untouched)
    # the offset arrays are inputs only
    np.testing.assert_array_equal(pos_off, [8, 1000, 5])
    np.testing.assert_array_equal(neg_off, [4, 2, 5])
    np.testing.assert_array_equal(res, [3, 23, 7])


def test_bin_edges_by_hand():
    # Default grid, 4 neurons on an axis of 4 bins [negative bins, zero, positive bins, padding];
    # rebased keys are raw + 1:
    #   neuron 0, m = 3: negative key 1017 (1.0), zero, positive keys 1017, 1018 (1.0, 1.125)
    #   neuron 1, m = 23: zero, positive key of 1.0 (one float32 wide), then padding
    #   neuron 2, m = 1: negative keys 510 (raw 509 = 254 * 2 + 1: [1.5 * 2**127, float32
    #     max], the last finite bin) and 509 (raw 508 = 254 * 2: [2**127, 1.5 * 2**127)), zero,
    #     positive key 1 (raw 0: [0, 2**-127), the lower half of the subnormal octave)
    #   neuron 3, m = 10: negative key 191489 (2**60: raw 187 * 1024, [2**60, 2**60 * (1 +
    #     2**-10))), zero, positive key 27923 (1e-30: raw 27 * 1024 + 274, [2**-100 * (1 +
    #     274 / 1024), 2**-100 * (1 + 275 / 1024))), then padding
    g = GridSpec()
    k23 = 127 * 2**23 + 1
    res = np.array([3, 23, 1, 10], np.int32)
    pos_lo = np.array([1017, k23, 1, 27923], np.int64)
    neg_hi = np.array([1017, -1, 510, 191489], np.int64)
    n_neg = np.array([1, 0, 2, 1], np.int64)
    n_pos = np.array([2, 1, 1, 1], np.int64)
    lower = np.full((4, 4), np.nan, np.float32)
    upper = np.full((4, 4), np.nan, np.float32)
    k.bin_edges(res, pos_lo, neg_hi, n_neg, n_pos, g.exp_lo, g.exp_hi, lower, upper)
    nan, top = np.nan, F32_MAX
    f30_lo, f30_hi = 2.0**-100 * (1 + 274 / 1024), 2.0**-100 * (1 + 275 / 1024)
    assert f30_lo <= float(np.float32(1e-30)) < f30_hi
    want_lower = [
        [-1.125, 0.0, 1.0, 1.125],
        [0.0, 1.0, nan, nan],
        [-top, -1.5 * 2.0**127, 0.0, 0.0],
        [-(2.0**60) * (1 + 2.0**-10), 0.0, f30_lo, nan],
    ]
    want_upper = [
        [-1.0, 0.0, 1.125, 1.25],
        [0.0, 1.0 + 2.0**-23, nan, nan],
        [-1.5 * 2.0**127, -(2.0**127), 0.0, 2.0**-127],
        [-(2.0**60), 0.0, f30_hi, nan],
    ]
    np.testing.assert_array_equal(lower, np.array(want_lower, np.float32))
    np.testing.assert_array_equal(upper, np.array(want_upper, np.float32))
    # the float32 edges are the float64 values above, exactly
    np.testing.assert_array_equal(lower.astype(np.float64), want_lower)
    np.testing.assert_array_equal(upper.astype(np.float64), want_upper)


@pytest.mark.parametrize(
    "grid", [GridSpec(), GridSpec(mantissa_bits=9, min_mantissa_bits=3), GridSpec(mantissa_bits=1)]
)
def test_bin_edges_match_magnitude_edges(grid):
    # random resolutions and key ranges: the kernel's edges are GridSpec.magnitude_edges',
    # mirrored for the negative bins, and exact in float32 (the last bin ends at float32 max)
    rng = np.random.default_rng(5)
    n = 200
    res = rng.integers(grid.min_mantissa_bits, grid.mantissa_bits + 1, n).astype(np.int32)
    # finite keys run from 1 (raw 0) to 255 << m (raw (255 << m) - 1, up to float32 max)
    last = np.left_shift(255, res.astype(np.int64))
    n_pos = rng.integers(0, 6, n)
    n_neg = rng.integers(0, 6, n)
    pos_lo = np.array([rng.integers(1, t - p + 2) for t, p in zip(last, n_pos, strict=True)])
    neg_hi = np.array([rng.integers(q, t + 1) for t, q in zip(last, n_neg, strict=True)])
    # and the ends of the grid: the first subnormal bins, the last finite bins
    pos_lo[:10], neg_hi[:10] = 1, last[:10]
    pos_lo[10:20], neg_hi[10:20] = last[10:20] - n_pos[10:20] + 1, n_neg[10:20]
    pos_lo[n_pos == 0], neg_hi[n_neg == 0] = 0, -1
    width = int((n_neg + 1 + n_pos).max())
    lower = np.full((n, width), np.nan, np.float32)
    upper = np.full((n, width), np.nan, np.float32)
    k.bin_edges(res, pos_lo, neg_hi, n_neg, n_pos, grid.exp_lo, grid.exp_hi, lower, upper)
    for i in range(n):
        neg_keys = neg_hi[i] - np.arange(n_neg[i])
        pos_keys = pos_lo[i] + np.arange(n_pos[i])
        n_lo, n_hi = grid.magnitude_edges(neg_keys, int(res[i]))
        p_lo, p_hi = grid.magnitude_edges(pos_keys, int(res[i]))
        want_lo = np.concatenate([-n_hi, [0.0], p_lo])
        want_hi = np.concatenate([-n_lo, [0.0], p_hi])
        m = want_lo.size
        np.testing.assert_array_equal(lower[i, :m].astype(np.float64), want_lo, err_msg=str(i))
        np.testing.assert_array_equal(upper[i, :m].astype(np.float64), want_hi, err_msg=str(i))
        assert np.isnan(lower[i, m:]).all() and np.isnan(upper[i, m:]).all()
        assert np.all(lower[i, :m] <= upper[i, :m]) and np.all(lower[i, 1:m] >= upper[i, : m - 1])


def test_densify_gives_each_neuron_its_own_axis():
    # 2 neurons, 2 groups, windows of width wp = 3 (positive) and wn = 2 (negative).
    # page 0 = (neuron 0, group 1): pos keys [2, 5) with counts at keys 2, 3; neg keys [1, 3)
    #          with counts at keys 1, 2; plus zero, NaN, +Inf and -Inf counts
    # page 1 = (neuron 1, group 0): pos keys [5, 8) with counts at keys 5 and 7; no negatives
    pool = np.zeros((2, k.N_SPECIAL + 3 + 2), dtype=np.uint16)
    pool[0, : k.N_SPECIAL] = [7, 8, 9, 10]
    pool[0, k.N_SPECIAL + 0] = 1  # +key 2
    pool[0, k.N_SPECIAL + 1] = 2  # +key 3
    pool[0, k.N_SPECIAL + 3 + 0] = 3  # -key 1
    pool[0, k.N_SPECIAL + 3 + 1] = 4  # -key 2
    pool[1, : k.N_SPECIAL] = [13, 14, 0, 15]
    pool[1, k.N_SPECIAL + 0] = 11  # +key 5
    pool[1, k.N_SPECIAL + 2] = 12  # +key 7
    page = np.array([[-1, 0], [1, -1]], dtype=np.int32)
    # neuron 0's axis: [-key 2, -key 1, zero, +key 2, +key 3]: 2 negative bins
    # neuron 1's axis: [zero, +key 5, +key 6, +key 7, padding]: no negative bins
    pos_lo = np.array([2, 5], np.int64)
    neg_hi = np.array([2, -1], np.int64)
    n_neg = np.array([2, 0], np.int64)
    n_pos = np.array([2, 3], np.int64)
    dst = np.zeros((2, 2, 5), dtype=np.uint64)
    specials = np.zeros((2, 2, 3), dtype=np.int64)
    k.densify(
        pool, page, np.array([2, 5], np.int32), np.array([1, 0], np.int32), 3,
        pos_lo, neg_hi, n_neg, n_pos, dst, specials,
    )  # fmt: skip
    np.testing.assert_array_equal(dst[0, 1], [4, 3, 7, 1, 2])
    np.testing.assert_array_equal(dst[0, 0], [0, 0, 0, 0, 0])
    np.testing.assert_array_equal(dst[1, 0], [13, 11, 0, 12, 0])
    np.testing.assert_array_equal(dst[1, 1], [0, 0, 0, 0, 0])
    np.testing.assert_array_equal(specials[0], [[0, 0, 0], [8, 9, 10]])
    np.testing.assert_array_equal(specials[1], [[14, 0, 15], [0, 0, 0]])


# -- queries: per-neuron bins [neuron, bin] -------------------------------------------------------
# neuron 0: three bins [0, 1), [1, 2), [2, 4) with counts [2, 0, 2], min 0.5, max 3.5
# neuron 1: every edge and value of neuron 0 doubled (bins [0, 2), [2, 4), [4, 8), min 1, max
# 7), plus one -Inf and one +Inf. Doubling is exact in floating point, so neuron 1's finite
# answers are neuron 0's doubled: this checks that each neuron is read on its own edges.

LOWER = np.array([[0.0, 1.0, 2.0], [0.0, 2.0, 4.0]])
UPPER = np.array([[1.0, 2.0, 4.0], [2.0, 4.0, 8.0]])
COUNTS = np.array([[2.0, 0.0, 2.0], [2.0, 0.0, 2.0]])
MINS = np.array([0.5, 1.0])
MAXS = np.array([3.5, 7.0])
NEGINF = np.array([0.0, 1.0])
POSINF = np.array([0.0, 1.0])


def _quantiles(qs):
    out = np.empty((2, len(qs)))
    k.quantiles(COUNTS, LOWER, UPPER, MINS, MAXS, NEGINF, POSINF, np.asarray(qs, float), out)
    return out


# Inside a bin, values spread by a shape read from the neighbours (see _kernels._bin_shape).
# Here both occupied bins hold an extreme and border the empty bin 1, whose density 0 makes
# the slope at that edge 0: bin 0 ([0.5, 1] after clipping to the min) spreads its values as
# t ** 0.5 from the min (the exponent clamped up from 0 to 0.5), bin 2 ([2, 3.5] after
# clipping to the max) as 1 - (1 - t) ** 0.5 from the max. So the k-th value of a bin holding
# c values is at t = p ** 2 in bin 0 and t = 1 - (1 - p) ** 2 in bin 2, p = (k + 0.5) / c.


def test_quantiles_by_hand():
    # neuron 0: N = 4, cum = [2, 2, 4]; quantile q is order statistic h = q * (N - 1)
    # k = 0 -> the exact min 0.5; k = 3 = N - 1 -> the exact max 3.5
    # k = 1 -> bin 0, p = (1 - 0 + 0.5) / 2 = 0.75, t = 0.5625: 0.5 + 0.5625 * 0.5 = 0.78125
    # k = 2 -> bin 2 (cum[1] = 2 <= 2 < cum[2] = 4), p = 0.25, t = 1 - 0.75 ** 2 = 0.4375:
    #          2 + 0.4375 * 1.5 = 2.65625
    # q = 1/6 -> h = 0.5: 0.5 + 0.5 * (0.78125 - 0.5) = 0.640625
    # q = 1/2 -> h = 1.5: 0.78125 + 0.5 * (2.65625 - 0.78125) = 1.71875
    out = _quantiles([0.0, 1 / 3, 2 / 3, 1.0, 1 / 6, 0.5])
    np.testing.assert_allclose(out[0], [0.5, 0.78125, 2.65625, 3.5, 0.640625, 1.71875], rtol=1e-12)
    # neuron 1: N = 6 with one -Inf first and one +Inf last; h = q * 5; finite values doubled
    # q = 0 -> -Inf; q = 1 -> +Inf; q = 0.2 -> k = 1 -> finite k = 0 -> min 1.0
    # q = 0.4 -> finite k = 1 -> 2 * 0.78125 = 1.5625; q = 0.8 -> finite k = 3 -> max 7.0
    # q = 0.5 -> h = 2.5 -> 1.5625 + 0.5 * (2 * 2.65625 - 1.5625) = 3.4375
    out = _quantiles([0.0, 1.0, 0.2, 0.4, 0.8, 0.5])
    np.testing.assert_allclose(out[1], [-np.inf, np.inf, 1.0, 1.5625, 7.0, 3.4375], rtol=1e-12)


def test_a_bin_between_neighbours_spreads_by_the_monotone_cubic():
    # bins [0, 1), [1, 2), [2, 3) with 1, 4, 16 values, min 0 and max 3 (no clipping), so
    # densities 1, 4, 16. The middle bin's edge slopes (Fritsch-Butland, equal widths: the
    # harmonic mean): 2 / (1/1 + 1/4) = 1.6 at 1 and 2 / (1/4 + 1/16) = 6.4 at 2; over its
    # density 4: s0 = 0.4, s1 = 1.6. Its share below t is the Hermite cubic
    # H(t) = (t^3 - 2t^2 + t) s0 + (3t^2 - 2t^3) + (t^3 - t^2) s1; H(0.5) = 0.05 + 0.5 - 0.2
    # = 0.35, so the rank of 1.5 is (1 + 4 * 0.35) / 21
    counts, lower, upper = (
        np.array([[1.0, 4.0, 16.0]]),
        np.array([[0.0, 1, 2]]),
        np.array([[1.0, 2, 3]]),
    )
    z, one = np.zeros(1), np.ones(1)
    out = np.empty(1)
    k.ranks(counts, lower, upper, z, 3 * one, z, z, np.array([[1.5]]), out[:, None])
    assert out[0] == pytest.approx((1 + 4 * 0.35) / 21, rel=1e-12)
    # and an order statistic inverts the cubic: q = 0.1 is h = 0.1 * 20 = 2, the second of
    # the bin's 4 values (k - 1 = 1), p = (1 + 0.5) / 4 = 0.375, at 1 + t with H(t) = 0.375
    q = np.empty((1, 1))
    k.quantiles(counts, lower, upper, z, 3 * one, z, z, np.array([0.1]), q)
    t = q[0, 0] - 1.0
    h = (t**3 - 2 * t**2 + t) * 0.4 + (3 * t**2 - 2 * t**3) + (t**3 - t**2) * 1.6
    assert 0 < t < 1 and h == pytest.approx(0.375, rel=1e-9)
    # an even spread where the neighbours agree: densities 4, 4, 4
    flat = np.array([[4.0, 4.0, 4.0]])
    k.ranks(flat, lower, upper, z, 3 * one, z, z, np.array([[1.25]]), out[:, None])
    assert out[0] == pytest.approx((4 + 1) / 12, rel=1e-12)


@pytest.mark.parametrize("mirror", [False, True])
def test_bins_near_an_exact_extreme_follow_its_power_law(mirror):
    # Values with F(v) = sqrt((v - 0.1) / 0.9) on [0.1, 1]: a pile-up at the min, as at
    # GELU's minimum. Bins [0, 0.2), [0.2, 0.6), [0.6, 1.0] hold exactly their mass. Bin 0
    # ends at the min (share t ** a, a fitted to both bins' counts: ln(1 + c1 / c0) /
    # ln(1 + 0.4 / 0.1) = ln(sqrt 5) / ln 5 = 0.5); bin 1 is nearer the min than its width,
    # so it follows the power law anchored at the min through its edge counts: exponent 0.5
    # too. Both read every rank and quantile exactly. Mirrored (v -> -v), the same at the max.
    cdf = lambda v: np.sqrt((v - 0.1) / 0.9)  # noqa: E731
    n = 1000.0
    counts = np.array([[cdf(0.2), cdf(0.6) - cdf(0.2), 1.0 - cdf(0.6)]]) * n
    lower, upper = np.array([[0.0, 0.2, 0.6]]), np.array([[0.2, 0.6, 1.0]])
    vmin, vmax = np.array([0.1]), np.array([1.0])
    probe = np.array([0.11, 0.15, 0.2, 0.3, 0.45, 0.59])
    want = cdf(probe)
    if mirror:
        counts, lower, upper = counts[:, ::-1].copy(), -upper[:, ::-1], -lower[:, ::-1]
        vmin, vmax, probe, want = -vmax, -vmin, -probe, 1.0 - want
    z, out = np.zeros(1), np.empty(1)
    for v, w in zip(probe, want, strict=True):
        k.ranks(counts, lower, upper, vmin, vmax, z, z, np.array([[v]]), out[:, None])
        assert out[0] == pytest.approx(w, rel=1e-9), v
    qs = np.array([0.05, 0.2, 0.4, 0.6])  # in bins 0 and 1
    # the k-th value (0-based) sits at share (k + 0.5) / N; quantile q interpolates the
    # values k and k + 1 around h = q (N - 1), as numpy's linear rule does
    h = qs * (n - 1)
    at = lambda p: 0.1 + 0.9 * p**2  # noqa: E731  (the inverse of cdf)
    lo_v, hi_v = at((np.floor(h) + 0.5) / n), at((np.floor(h) + 1.5) / n)
    want_q = lo_v + (h - np.floor(h)) * (hi_v - lo_v)
    if mirror:  # the rule is symmetric: quantile 1 - q of -v is minus quantile q of v
        qs, want_q = 1.0 - qs, -want_q
    q = np.empty((1, qs.size))
    k.quantiles(counts, lower, upper, vmin, vmax, z, z, qs, q)
    np.testing.assert_allclose(q[0], want_q, rtol=1e-9)


def test_quantiles_empty_neuron_is_nan():
    out = np.empty((1, 2))
    z = np.zeros(1)
    k.quantiles(
        np.zeros((1, 3)), LOWER[:1], UPPER[:1], z + np.nan, z + np.nan, z, z,
        np.array([0, 1.0]), out,
    )  # fmt: skip
    assert np.isnan(out).all()


@pytest.mark.parametrize(
    ("v0", "v1", "want0", "want1"),
    [
        # below the min: nothing below (neuron 1: the -Inf is below: 1 / 6)
        (0.25, 0.25, 0.0, 1 / 6),
        # inside bin 0 ([0.5, 1] after clipping): t = 0.5, share 0.5 ** 0.5 of 2 values
        (0.75, 0.75, 2 * 0.5**0.5 / 4, (1 + 2 * 0.5**0.5) / 6),
        # in the empty bin: bin 0 fully below
        (1.5, 1.5, 2 / 4, (1 + 2) / 6),
        # inside bin 2 ([2, 3.5]): t = 2 / 3, share 1 - (1 / 3) ** 0.5 of 2 values
        (3.0, 3.0, (2 + 2 * (1 - 3**-0.5)) / 4, (1 + 2 + 2 * (1 - 3**-0.5)) / 6),
        # above the max: everything finite below (neuron 1: not the +Inf)
        (5.0, 5.0, 1.0, 5 / 6),
        # +Inf: all but half the +Inf; -Inf: half the -Inf
        (np.inf, -np.inf, 1.0, 0.5 / 6),
    ],
)
def test_ranks_by_hand(v0, v1, want0, want1):
    # neuron 1's values and edges are neuron 0's doubled: probe it at 2 * v1
    out = np.empty(2)
    k.ranks(
        COUNTS, LOWER, UPPER, MINS, MAXS, NEGINF, POSINF, np.array([[v0], [2 * v1]]), out[:, None]
    )
    np.testing.assert_allclose(out, [want0, want1], rtol=1e-12, atol=0)


def test_ranks_nan_and_point_mass():
    out = np.empty(2)
    k.ranks(
        COUNTS, LOWER, UPPER, MINS, MAXS, NEGINF, POSINF, np.array([[np.nan], [1.0]]), out[:, None]
    )
    assert np.isnan(out[0])
    # point mass: the zero bin [0, 0] with 4 values, one bin [1, 2) with 2 values
    lower, upper = np.array([[0.0, 1.0]]), np.array([[0.0, 2.0]])
    counts = np.array([[4.0, 2.0]])
    one = np.ones(1)
    for v, want in [(-1.0, 0.0), (0.0, 2 / 6), (0.5, 4 / 6), (1.25, (4 + 2 * 0.25 / 0.5) / 6)]:
        # values in [1, 2) are clipped to [1, max 1.5]: width 0.5
        k.ranks(
            counts,
            lower,
            upper,
            0 * one,
            1.5 * one,
            0 * one,
            0 * one,
            (v * one)[:, None],
            out[:1][:, None],
        )
        assert out[0] == pytest.approx(want, rel=1e-12, abs=0), v


def _rebin(counts, mins, maxs, edges, neuron=0):
    """``rebin`` of one neuron whose bins are those of ``LOWER[neuron]``, ``UPPER[neuron]``."""
    counts = np.atleast_2d(np.asarray(counts, float))
    out = np.zeros((counts.shape[0], len(edges) - 1))
    k.rebin(
        counts,
        LOWER[neuron : neuron + 1],
        UPPER[neuron : neuron + 1],
        np.atleast_1d(mins),
        np.atleast_1d(maxs),
        np.asarray(edges, float),
        out,
    )
    return out


def test_rebin_by_hand():
    # bin 0 spans [0.5, 1] after clipping: all 2 in display [0, 1)
    # bin 2 spans [2, 3.5]: display [2, 3) gets 2 * 1 / 1.5 = 4/3, [3, 4] gets 2 * 0.5 / 1.5 = 2/3
    out = _rebin([2, 0, 2], 0.5, 3.5, [0, 1, 2, 3, 4])
    np.testing.assert_allclose(out[0], [2, 0, 4 / 3, 2 / 3], rtol=1e-12)
    # one display bin [0.75, 3]: bin 0 overlaps 0.25 of 0.5 -> 1; bin 2 overlaps 1 of 1.5 -> 4/3
    out = _rebin([2, 0, 2], 0.5, 3.5, [0.75, 3])
    np.testing.assert_allclose(out[0], [1 + 4 / 3], rtol=1e-12)
    # display edges outside the data: nothing
    out = _rebin([2, 0, 2], 0.5, 3.5, [5, 6, 7])
    np.testing.assert_array_equal(out[0], [0, 0])
    # neuron 1's bins (doubled) and doubled display edges: the same answer
    out = _rebin([2, 0, 2], 1.0, 7.0, [0, 2, 4, 6, 8], neuron=1)
    np.testing.assert_allclose(out[0], [2, 0, 4 / 3, 2 / 3], rtol=1e-12)
    # both neurons at once, each on its own bins
    out = np.zeros((2, 4))
    k.rebin(COUNTS, LOWER, UPPER, MINS, MAXS, np.array([0.0, 1, 2, 3, 4]), out)
    # neuron 1 on [0, 4]: bin [1, 2] (clipped from [0, 2)) -> display [1, 2): 2;
    # bin [4, 7] lies beyond the last edge: left out
    np.testing.assert_allclose(out, [[2, 0, 4 / 3, 2 / 3], [0, 2, 0, 0]], rtol=1e-12)


def test_rebin_point_mass():
    # bin 2 holds 3 copies of 2.5 (min = max = 2.5): a point mass
    out = _rebin([0, 0, 3], 2.5, 2.5, [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(out[0], [0, 0, 3, 0])
    # a point mass on the last edge lands in the last bin (closed on the right)
    out = _rebin([0, 0, 3], 2.5, 2.5, [0, 1, 2, 2.5])
    np.testing.assert_array_equal(out[0], [0, 0, 3])
    # a point mass on an inner edge lands in the bin to its right
    out = _rebin([0, 0, 3], 2.5, 2.5, [0, 2.5, 3])
    np.testing.assert_array_equal(out[0], [0, 3])
    # a point mass outside the edges is left out
    out = _rebin([0, 0, 3], 2.5, 2.5, [0, 1, 2])
    np.testing.assert_array_equal(out[0], [0, 0])


def test_queries_ignore_nan_padding_bins():
    # neuron 0 has three bins; neuron 1 only its first, padded with two NaN-edged empty bins,
    # as in a Summary whose neurons have axes of different lengths
    lower = np.array([[0.0, 1.0, 2.0], [0.0, np.nan, np.nan]])
    upper = np.array([[1.0, 2.0, 4.0], [1.0, np.nan, np.nan]])
    counts = np.array([[2.0, 0.0, 2.0], [4.0, 0.0, 0.0]])
    mins, maxs, z = np.array([0.5, 0.25]), np.array([3.5, 0.75]), np.zeros(2)
    # neuron 1 alone, without padding: 4 values spread over [0.25, 0.75]
    alone = dict(counts=counts[1:, :1], lower=lower[1:, :1], upper=upper[1:, :1])
    qs = np.array([0.0, 0.2, 0.5, 0.9, 1.0])
    got, want = np.empty((2, qs.size)), np.empty((1, qs.size))
    k.quantiles(counts, lower, upper, mins, maxs, z, z, qs, got)
    k.quantiles(alone["counts"], alone["lower"], alone["upper"], mins[1:], maxs[1:], z[:1],
                z[:1], qs, want)  # fmt: skip
    assert not np.isnan(got).any()
    np.testing.assert_array_equal(got[1], want[0])
    np.testing.assert_allclose(got[0], _quantiles(qs)[0], rtol=1e-12)
    # h = q * 3: k = 1 -> 0.25 + 1.5 / 4 * 0.5 = 0.4375; k = 2 -> 0.25 + 2.5 / 4 * 0.5 = 0.5625
    np.testing.assert_allclose(want[0, 2], 0.5 * (0.4375 + 0.5625), rtol=1e-12)
    r = np.empty(2)
    k.ranks(counts, lower, upper, mins, maxs, z, z, np.array([[3.0], [0.5]]), r[:, None])
    # neuron 0 as test_ranks_by_hand; neuron 1's one bin holds its min and max and has no
    # neighbour: an even spread, 4 * 0.5 below 0.5
    np.testing.assert_allclose(r, [(2 + 2 * (1 - 3**-0.5)) / 4, 0.5], rtol=1e-12)
    h = np.zeros((2, 2))
    k.rebin(counts, lower, upper, mins, maxs, np.array([0.0, 0.5, 4.0]), h)
    np.testing.assert_allclose(h, [[0, 4], [2, 2]], rtol=1e-12)


# -- exact mode ---------------------------------------------------------------------------------


def test_exact_kernels_by_hand():
    # At m = 1 (2 bins per octave) the rebased keys are 255 for 1.0, 256 for 1.5, 257 for 2.0
    # and 258 for 3.0: raw key (biased exponent << 1 | top mantissa bit), e.g. 127 * 2 + 0 =
    # 254 for 1.0, minus key_base(1) = (0 << 1) - 1 = -1. A negative value's code is -2 - key:
    # -2.0 has -2 - 257 = -259.
    g = GridSpec()
    x = np.array(
        [[1.0, -0.0], [-2.0, np.nan], [1.0, np.inf], [0.0, -np.inf], [1.5, 3.0]], dtype=np.float32
    )
    packed = np.empty((2, 5), dtype=np.int64)
    k.exact_codes(x, 1, g.exp_lo, g.exp_hi, packed)
    codes, entries = packed >> k.ENTRY_BITS, packed & (k.MAX_ENTRIES - 1)
    np.testing.assert_array_equal(entries, [[0, 1, 2, 3, 4]] * 2)
    np.testing.assert_array_equal(codes[0], [255, -259, 255, k.ZERO_CODE, 256])
    np.testing.assert_array_equal(
        codes[1], [k.ZERO_CODE, k.NAN_CODE, k.POSINF_CODE, k.NEGINF_CODE, 258]
    )
    packed.sort(axis=1)
    uniq = np.full((2, 6), 99, dtype=np.int64)
    n_neg, n_pos = np.empty(2, np.int64), np.empty(2, np.int64)
    bins = np.empty((2, 5), dtype=np.int32)
    k.exact_axes(packed, uniq, n_neg, n_pos, bins)
    # neuron 0: bins -2.0 | zero | 1.0 | 1.5; neuron 1: zero | 3.0 (non-finite values apart)
    np.testing.assert_array_equal(n_neg, [1, 0])
    np.testing.assert_array_equal(n_pos, [2, 1])
    np.testing.assert_array_equal(uniq[0, :4], [-259, k.ZERO_CODE, 255, 256])
    np.testing.assert_array_equal(uniq[1, :2], [k.ZERO_CODE, 258])
    np.testing.assert_array_equal(bins, [[2, 0, 2, 1, 3], [0, -1, -2, -3, 1]])
    # edges: each bin one half-octave; negatives mirrored; the zero bin [0, 0]
    lower, upper = np.full((2, 4), np.nan, np.float32), np.full((2, 4), np.nan, np.float32)
    k.exact_edges(uniq, n_neg + 1 + n_pos, 1, g.exp_lo, g.exp_hi, lower, upper)
    np.testing.assert_array_equal(lower[0], [-3.0, 0.0, 1.0, 1.5])
    np.testing.assert_array_equal(upper[0], [-2.0, 0.0, 1.5, 2.0])
    np.testing.assert_array_equal(lower[1], [0.0, 3.0, np.nan, np.nan])
    np.testing.assert_array_equal(upper[1], [0.0, 4.0, np.nan, np.nan])
    # counts of groups [0, 1, 0, 1, 0]; only group 1 selected, into slot 0
    gids = np.array([0, 1, 0, 1, 0], dtype=np.intp)
    dst = np.zeros((2, 2, 4), dtype=np.uint16)
    special = np.zeros((2, 2, 3), dtype=np.int64)
    k.exact_counts(bins, gids, np.array([0, 1]), dst, special)
    np.testing.assert_array_equal(dst[0], [[0, 0, 2, 1], [1, 1, 0, 0]])
    np.testing.assert_array_equal(dst[1], [[1, 1, 0, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(special[1], [[0, 1, 0], [1, 0, 1]])  # (nan, +inf, -inf)
    assert not special[0].any()
    one = np.zeros((2, 1, 4), dtype=np.uint16)
    one_special = np.zeros((2, 1, 3), dtype=np.int64)
    k.exact_counts(bins, gids, np.array([-1, 0]), one, one_special)
    np.testing.assert_array_equal(one[:, 0], dst[:, 1])
    np.testing.assert_array_equal(one_special[:, 0], special[:, 1])


def test_exact_codes_of_far_values_by_hand():
    # Magnitudes once lumped into the underflow or overflow bin get their own codes. At m = 1
    # (2 bins per octave), rebased key = raw + 1, raw = biased exponent * 2 + top mantissa bit:
    #   1e-30 = 2**-100 * 1.27: raw 27 * 2 + 0 = 54 -> 55, [2**-100, 1.5 * 2**-100)
    #   1e-31 = 2**-103 * 1.014: raw 24 * 2 + 0 = 48 -> 49, [2**-103, 1.5 * 2**-103)
    #   1e-40 = 2**-126 * 0.0085 (subnormal): raw 0 -> 1, [0, 2**-127); 1e-45 (2**-149) too
    #   1e30 = 2**99 * 1.578: raw 226 * 2 + 1 = 453 -> 454, [1.5 * 2**99, 2**100)
    #   1e31 = 2**102 * 1.972: raw 229 * 2 + 1 = 459 -> 460, [1.5 * 2**102, 2**103)
    #   3e38 = 2**127 * 1.763 and float32 max: raw 254 * 2 + 1 = 509 -> 510, [1.5 * 2**127,
    #     float32 max]
    # A negative value's code is -2 - key.
    g = GridSpec()
    x = np.array(
        [[1e-30, -1e-30], [1e-31, 1e30], [1e-40, -1e31], [1e-45, 3e38], [-1e-45, F32_MAX]],
        dtype=np.float32,
    )
    packed = np.empty((2, 5), dtype=np.int64)
    k.exact_codes(x, 1, g.exp_lo, g.exp_hi, packed)
    codes = packed >> k.ENTRY_BITS
    np.testing.assert_array_equal(codes[0], [55, 49, 1, 1, -2 - 1])
    np.testing.assert_array_equal(codes[1], [-2 - 55, 454, -2 - 460, 510, 510])
    packed.sort(axis=1)
    uniq = np.full((2, 6), 99, dtype=np.int64)
    n_neg, n_pos = np.empty(2, np.int64), np.empty(2, np.int64)
    bins = np.empty((2, 5), dtype=np.int32)
    k.exact_axes(packed, uniq, n_neg, n_pos, bins)
    # neuron 0: -1e-45 | zero | the subnormals | 1e-31 | 1e-30
    # neuron 1: -1e31 | -1e-30 | zero | 1e30 | 3e38 and float32 max
    np.testing.assert_array_equal(n_neg, [1, 2])
    np.testing.assert_array_equal(n_pos, [3, 2])
    np.testing.assert_array_equal(uniq[0, :5], [-3, k.ZERO_CODE, 1, 49, 55])
    np.testing.assert_array_equal(uniq[1, :5], [-462, -57, k.ZERO_CODE, 454, 510])
    np.testing.assert_array_equal(bins, [[4, 3, 2, 2, 0], [1, 3, 0, 4, 4]])
    lower, upper = np.full((2, 5), np.nan, np.float32), np.full((2, 5), np.nan, np.float32)
    k.exact_edges(uniq, n_neg + 1 + n_pos, 1, g.exp_lo, g.exp_hi, lower, upper)
    want_lower = [
        [-(2.0**-127), 0.0, 0.0, 2.0**-103, 2.0**-100],
        [-(2.0**103), -1.5 * 2.0**-100, 0.0, 1.5 * 2.0**99, 1.5 * 2.0**127],
    ]
    want_upper = [
        [-0.0, 0.0, 2.0**-127, 1.5 * 2.0**-103, 1.5 * 2.0**-100],
        [-1.5 * 2.0**102, -(2.0**-100), 0.0, 2.0**100, F32_MAX],
    ]
    np.testing.assert_array_equal(lower.astype(np.float64), want_lower)
    np.testing.assert_array_equal(upper.astype(np.float64), want_upper)
    # at m = 23 every float32 is its own code: the bits plus one (1e-30: 0x0DA24260 + 1;
    # 1e-45: 1 + 1; float32 max: 0x7F7FFFFF + 1 = 0x7F800000)
    packed23 = np.empty((2, 5), dtype=np.int64)
    k.exact_codes(x, 23, g.exp_lo, g.exp_hi, packed23)
    codes23 = packed23 >> k.ENTRY_BITS
    assert codes23[0, 0] == 0x0DA24260 + 1 == 228737633
    assert codes23[0, 3] == 2 and codes23[0, 4] == -2 - 2
    assert codes23[1, 4] == 0x7F800000 and codes23[1, 0] == -2 - 228737633
    assert len({int(c) for c in codes23.ravel()}) == 10  # all distinct, 1e-40 included


def test_fold_min_max_by_hand():
    x = np.array([[1.0, -0.0], [-2.0, np.nan], [5.0, np.inf]], dtype=np.float32)
    gids = np.array([[0, 2], [1, 2], [0, 0]], dtype=np.intp)  # two groupings per row
    mins = np.full((2, 3), np.inf, np.float32)
    maxs = np.full((2, 3), -np.inf, np.float32)
    at_min, at_max = np.zeros((2, 2, 3), dtype=np.uint16)
    k.fold_min_max(x, gids, mins, maxs, at_min, at_max)
    # group 0: rows 0 and 2 (twice); group 1: row 1; group 2: rows 0 and 1
    np.testing.assert_array_equal(mins, [[1.0, -2.0, -2.0], [0.0, np.inf, 0.0]])
    np.testing.assert_array_equal(maxs, [[5.0, -2.0, 1.0], [0.0, -np.inf, 0.0]])
    # values equal to them: row 2 counts twice in group 0
    np.testing.assert_array_equal(at_min, [[1, 1, 1], [1, 0, 1]])
    np.testing.assert_array_equal(at_max, [[2, 1, 1], [1, 0, 1]])
    assert not np.signbit(mins[1, 0]) and not np.signbit(maxs[1, 2])  # -0.0 counts as +0.0
