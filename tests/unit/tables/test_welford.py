"""Property tests of the pure statistics (tables/welford.py) against exact references."""

from __future__ import annotations

import math
import statistics
from fractions import Fraction

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from tables import welford
from tables.welford import EMPTY, from_values, is_anomaly, merge, update, z_score

REL = 1e-9

cents = st.integers(min_value=1, max_value=100_000_000)
#: Any valid amount (two decimals, in (0, 10^6]).
amounts = cents.map(lambda c: c / 100)


@st.composite
def clustered(draw: st.DrawFn) -> list[float]:
    """Amounts around one base (up to 10^6) with a spread of a few cents: the hard case."""
    base = draw(st.integers(min_value=1_000, max_value=100_000_000 - 1_000))
    offsets = draw(st.lists(st.integers(min_value=-500, max_value=500), min_size=2,
                            max_size=200))
    return [(base + o) / 100 for o in offsets]


amount_lists = st.one_of(st.lists(amounts, min_size=2, max_size=200), clustered())


def exact_var(values: list[float]) -> float:
    xs = [Fraction(x) for x in values]
    m = sum(xs) / len(xs)
    return float(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=REL, abs_tol=0.0)


@given(amount_lists)
def test_welford_matches_statistics_and_numpy(values: list[float]) -> None:
    s = from_values(values)
    assert s.count == len(values)
    assert close(s.mean, statistics.fmean(values))
    assert close(s.mean, float(np.mean(values)))
    assert close(s.variance, statistics.variance(values))
    assert close(s.variance, exact_var(values))
    assert close(s.variance, float(np.var(values, ddof=1))) or s.variance == 0 == exact_var(
        values)
    assert close(s.std, statistics.stdev(values))


def test_textbook_welford_would_fail_here() -> None:
    """The reason for the shift: the plain update is off by ~1e-8 on this input."""
    values = [995_237.68, 995_237.69]
    n, mean, m2 = 0, 0.0, 0.0
    for x in values:
        n += 1
        delta = x - mean
        mean += delta / n
        m2 += delta * (x - mean)
    exact = exact_var(values)
    assert not close(m2 / (n - 1), exact)
    assert close(from_values(values).variance, exact)


def test_small_counts() -> None:
    assert EMPTY.mean == 0 and EMPTY.variance == 0 and EMPTY.std == 0
    one = update(EMPTY, 12.5)
    assert (one.count, one.mean, one.std) == (1, 12.5, 0.0)
    two = update(one, 14.5)
    assert (two.count, two.mean, two.variance) == (2, 13.5, 2.0)


@given(amount_lists, st.data())
def test_merge_of_any_split_equals_the_whole(values: list[float], data: st.DataObject) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(values)), max_size=4)))
    parts = [values[i:j] for i, j in zip([0, *cuts], [*cuts, len(values)], strict=True)]
    merged = EMPTY
    for part in parts:
        merged = merge(merged, from_values(part))
    whole = from_values(values)
    assert merged.count == whole.count
    assert close(merged.mean, whole.mean)
    assert close(merged.variance, exact_var(values))
    assert close(merged.variance, whole.variance)


@given(amount_lists)
def test_merge_identities(values: list[float]) -> None:
    s = from_values(values)
    assert merge(s, EMPTY) == s
    assert merge(EMPTY, s) == s


@given(st.lists(amounts, min_size=0, max_size=12), amounts, st.integers(2, 10))
def test_z_is_none_below_the_minimum_history(history: list[float], amount: float,
                                              min_history: int) -> None:
    prev = from_values(history)
    z = z_score(prev, amount, min_history)
    if len(history) < min_history:
        assert z is None
        assert not is_anomaly(z, 0.0)
    elif prev.std > 0:
        assert z is not None
        assert close(z, (amount - statistics.fmean(history)) / statistics.stdev(history)) or \
            abs(z) < 1e-6


@given(amounts, st.integers(5, 50), amounts)
def test_z_is_none_when_the_history_has_no_spread(x: float, n: int, amount: float) -> None:
    prev = from_values([x] * n)
    assert prev.std == 0
    assert z_score(prev, amount, 5) is None


def test_threshold_is_strict() -> None:
    assert not is_anomaly(3.0, 3.0)
    assert is_anomaly(math.nextafter(3.0, 4.0), 3.0)
    assert not is_anomaly(None, 3.0)
    assert not is_anomaly(-10.0, 3.0)  # only amounts far above the mean


def test_z_exactly_at_the_threshold_is_not_an_anomaly() -> None:
    prev = from_values([1.0, 3.0, 1.0, 3.0, 2.0])  # mean 2, M2 4, sample std exactly 1
    assert (prev.mean, prev.std) == (2.0, 1.0)
    assert z_score(prev, 5.0, 5) == 3.0
    assert not is_anomaly(z_score(prev, 5.0, 5), 3.0)
    assert is_anomaly(z_score(prev, 5.01, 5), 3.0)
    assert z_score(prev, 5.0, 6) is None  # one short of the minimum history
    assert z_score(from_values([1.0, 3.0, 1.0, 3.0]), 5.0, 5) is None


def test_module_exports() -> None:
    assert set(welford.__all__) <= set(dir(welford))
