"""The benchmark's and the soak's pure helpers: percentiles, rates, CPU shares, the profile
summary and the soak's exact offline recomputation of the statistics."""

from __future__ import annotations

import importlib.util
import math
import statistics
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _load(name: str):
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


bp = _load("bench_pipeline")
soak = _load("soak")


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


def test_expected_stats_match_the_definition() -> None:
    amounts = [10.0, 12.5, 11.0, 9.99, 10.01, 10.5, 250.0, 10.2]
    rows = [(f"t{i}", "u", a, f"2026-11-2{5 + i // 7}T10:00:00.000+00:00")
            for i, a in enumerate(amounts)]
    rows.insert(3, ("x", "other", 99.0, "2026-11-25T10:00:00.000+00:00"))
    out = soak.expected_stats(iter(rows), min_history=5, threshold=3.0)
    assert out["x"]["user_txn_count"] == 1 and out["x"]["user_running_std"] == 0.0
    for i in range(len(amounts)):
        e = out[f"t{i}"]
        seen = amounts[: i + 1]
        assert e["user_txn_count"] == i + 1
        assert e["user_running_mean"] == pytest.approx(statistics.fmean(seen), rel=1e-12)
        if i >= 1:
            assert e["user_running_std"] == pytest.approx(statistics.stdev(seen), rel=1e-9)
        prev = amounts[:i]
        if i >= 5:
            z = (amounts[i] - statistics.fmean(prev)) / statistics.stdev(prev)
            assert e["z_score"] == pytest.approx(z, rel=1e-9)
            assert e["is_anomaly"] == (z > 3.0)
        else:
            assert e["z_score"] is None and e["is_anomaly"] is False
    assert out["t6"]["is_anomaly"] is True  # 250 among ~10s
    assert out["t6"]["daily_cents"] == 1000 + 1250 + 1100 + 999 + 1001 + 1050 + 25000
    assert out["t7"]["daily_cents"] == 1020  # the next UTC day starts again


def test_mismatch_names_the_wrong_field() -> None:
    exp = {"user_txn_count": 3, "user_running_mean": 2.0, "user_running_std": 1.0,
           "z_score": None, "is_anomaly": False, "daily_cents": 600}
    good = {"user_txn_count": 3, "user_running_mean": 2.0 + 1e-13, "user_running_std": 1.0,
            "z_score": None, "is_anomaly": False, "user_daily_spend": 6.0}
    assert soak.mismatch(exp, good) is None
    assert "count" in soak.mismatch(exp, {**good, "user_txn_count": 4})
    assert "mean" in soak.mismatch(exp, {**good, "user_running_mean": 2.001})
    assert "z_score" in soak.mismatch(exp, {**good, "z_score": 0.5})
    assert "daily" in soak.mismatch(exp, {**good, "user_daily_spend": 6.01})
    assert soak.close(None, None) and not soak.close(1.0, None)
    assert soak.close(0.0, 1e-12) and not soak.close(1.0, 1.0 + 1e-6)
    assert math.isclose(1.0, 1.0)


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
