"""The soak's pure helpers (bench/soak.py): its exact offline recomputation of the statistics
and the comparison with what the worker published."""

from __future__ import annotations

import math
import statistics

import pytest

from tests.unit.bench.loader import load

soak = load("soak")


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
