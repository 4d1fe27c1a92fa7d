"""The benchmark's pure helpers (bench/bench_pipeline.py): percentiles, rates, CPU shares, the
profile summary, the results table and the goals."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.unit.bench.loader import load

bp = load("bench_pipeline")


def test_parse_rates() -> None:
    assert bp.parse_rates("1000, 5k,10k,max") == [1000, 5000, 10000, 0]
    assert [bp.rate_label(r) for r in (1000, 20000, 0, 2500)] == ["1k", "20k", "max", "2500"]
    with pytest.raises(ValueError):
        bp.parse_rates("-5")


def test_percentile_nearest_rank() -> None:
    values = list(range(1, 101))  # 1..100
    assert bp.percentile(values, 50) == 50
    assert bp.percentile(values, 99) == 99
    assert bp.percentile(values, 100) == 100
    assert bp.percentile(values, 0) == 1
    assert bp.percentile([], 50) is None
    assert bp.percentile([7.0], 99) == 7.0
    summary = bp.latency_summary([5, 1, 3, 2, 4])
    assert summary == {"n": 5, "p50": 3, "p95": 5, "p99": 5, "max": 5}


@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=200), st.floats(0, 100))
def test_percentile_is_a_value_with_q_percent_at_or_below(values: list[float],
                                                          q: float) -> None:
    ordered = sorted(values)
    p = bp.percentile(ordered, q)
    assert p in ordered
    at_or_below = sum(1 for v in ordered if v <= p)
    assert at_or_below >= q / 100 * len(ordered) - 1e-9
    # the previous distinct value would not have enough below it
    below = sum(1 for v in ordered if v < p)
    assert below < q / 100 * len(ordered) + 1e-9 or below == 0


def test_rates_between_samples() -> None:
    assert bp.window_rate([0.5, 1.0, 1.5, 2.0, 9.0], 1.0, 3.0) == 1.5
    assert bp.window_rate([1.0], 2.0, 2.0) == 0.0
    samples = [(0.0, 0.0), (10.0, 100.0), (20.0, 300.0)]
    assert bp.rate_between(samples, 0.0, 10.0) == 10.0
    assert bp.rate_between(samples, 5.0, 15.0) == pytest.approx(15.0)  # 50 -> 200
    assert bp.rate_between(samples, 15.0, 30.0) == pytest.approx((300 - 200) / 15)
    assert bp.cpu_between([(0.0, 1.0), (4.0, 3.0)], 0.0, 4.0) == 0.5
    assert bp.rate_between([], 0, 1) == 0.0


def test_profile_summary() -> None:
    lines = ["main (a.py:1);work (b/c.py:5);dumps (d.py:9) 30",
             "main (a.py:1);work (b/c.py:6) 50",
             "main (a.py:1);idle (e.py:2) 20", ""]
    summary = bp.profile_summary(lines)
    assert summary["samples"] == [[100]]
    assert summary["self"][0] == ["work (b/c.py)", 50.0]
    assert ["dumps (d.py)", 30.0] in summary["self"]
    # "main" is an entry frame every sample has: left out of the inclusive ranking
    assert summary["inclusive"][0] == ["work (b/c.py)", 80.0]
    assert all(not name.startswith("main ") for name, _ in summary["inclusive"])


def test_table_and_doc(tmp_path: Path) -> None:
    pipe = bp.Case("pipeline", 5000, "5k", processed_rate=4000.0, produce_rate=5000.0,
                   latency_ms={"p50": 10.0, "p95": 20.0, "p99": 30.0, "max": 40.0})
    base = bp.Case("passthrough", 5000, "5k", processed_rate=5000.0, produce_rate=5000.0)
    text = bp.table([pipe, base])
    assert "| 5k | pipeline | 5,000 | 4,000 |" in text and "80%" in text
    doc = tmp_path / "b.md"
    doc.write_text("# B\n\nintro\n")
    bp.write_doc("first", doc)
    bp.write_doc("second", doc)
    content = doc.read_text()
    assert "intro" in content and "second" in content and "first" not in content
    assert content.count(bp.TABLE_START) == 1


def test_goals_lines() -> None:
    cases = [bp.Case("pipeline", 5000, "5k", processed_rate=5000.0,
                     latency_ms={"p50": 20.0, "p99": 45.0}),
             bp.Case("pipeline", 10000, "10k", processed_rate=9990.0, stored_rate=9000.0),
             bp.Case("pipeline", 0, "max", processed_rate=6000.0, cpu={"worker": 1.0}),
             bp.Case("passthrough", 0, "max", processed_rate=10000.0)]
    text = bp.goals(cases)
    assert "10k transactions/s end to end: **no**" in text  # stored 9,000 < 9,500
    assert "p99 < 50 ms at 5k/s: **yes**" in text
    assert "**yes** (60%" in text
    assert "CPU at max" in text
