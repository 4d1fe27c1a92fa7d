"""The long-run benchmark's pure parts: per-minute aggregation, percentiles, histogram
quantiles, the verdicts, and the seed's enrichment against the worker's rule."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest

from app.contract import cents
from app.rates import reporting_cents
from app.settings import settings
from tables.welford import from_values, is_anomaly, z_score
from tests.unit.bench.loader import load

stats = load("longrun_stats")
probe = load("longrun_probe")
report = load("longrun_report")
seed_history = load("seed_history")


@pytest.mark.parametrize("q", [0, 1, 50, 90, 99, 100])
def test_percentile_is_numpys(q: float) -> None:
    values = [3.0, 1.0, 7.5, 2.25, 9.0, 4.0, 4.0, 11.0]
    assert math.isclose(stats.percentile(values, q), float(np.percentile(values, q)))
    assert stats.percentile([], q) is None


def test_latency_minutes_groups_by_endpoint_and_minute() -> None:
    samples = [(1.0, "health", 2.0, 200), (59.9, "health", 4.0, 200), (60.0, "health", 8.0, 503),
               (61.0, "trends", 10.0, 200), (62.0, "trends", 0.0, 0)]
    rows = stats.latency_minutes(samples)
    assert [r["minute"] for r in rows["health"]] == [0, 1]
    assert rows["health"][0]["requests"] == 2 and rows["health"][0]["p50_ms"] == 3.0
    assert rows["health"][1]["5xx"] == 1
    assert rows["trends"][0]["failed"] == 1 and rows["trends"][0]["p99_ms"] == 10.0


def test_max_per_minute() -> None:
    assert stats.max_per_minute([(5, 1.0), (30, 3.0), (70, 2.0)]) == [
        {"minute": 0, "max": 3.0}, {"minute": 1, "max": 2.0}]


def test_bucket_quantile_interpolates_like_prometheus() -> None:
    buckets = [(0.01, 50.0), (0.05, 90.0), (0.1, 100.0), (math.inf, 100.0)]
    assert math.isclose(stats.bucket_quantile(0.5, buckets), 0.01)
    assert math.isclose(stats.bucket_quantile(0.99, buckets), 0.05 + 0.05 * 0.9)
    assert stats.bucket_quantile(0.5, [(0.01, 0.0), (math.inf, 0.0)]) is None


def test_server_minutes_diff_the_cumulative_histograms() -> None:
    route = "/volume"
    snaps = [(10.0, {route: [(0.01, 10.0), (0.05, 10.0), (math.inf, 10.0)]}),
             (70.0, {route: [(0.01, 10.0), (0.05, 30.0), (math.inf, 30.0)]})]
    rows = report.server_minutes(snaps)["volume"]
    assert rows[0]["requests"] == 10 and rows[0]["p99_ms"] <= 10.0
    assert rows[1]["requests"] == 20 and 10.0 < rows[1]["p99_ms"] <= 50.0


def _report(p99: float = 20.0, lag: float = 1.0, errors: int = 0, late_p99: float | None = None,
            minutes: int = 60) -> dict:
    late = minutes - stats.windows(minutes)[0]
    rows = [{"minute": m, "requests": 300, "p50_ms": 5.0,
             "p99_ms": late_p99 if late_p99 is not None and m >= late else p99,
             "5xx": errors if m == 3 else 0, "failed": 0} for m in range(minutes)]
    return {"client": {"health": rows}, "server": {"health": rows[:1]},
            "sink_lag_s": [{"minute": m, "max": lag} for m in range(minutes)],
            "dbt_build_s": [{"minute": m, "max": 30.0} for m in range(0, minutes, 2)],
            "rss_mb": {"sink": [{"minute": m, "max": 200.0} for m in range(minutes)]}}


def test_a_healthy_run_passes() -> None:
    v = stats.verdicts(_report(), 60)
    assert v["pass"] and v["stability"]["windows"] == "first and last 15 minutes"


@pytest.mark.parametrize("kwargs, failed", [
    ({"p99": 100.0}, "client_p99"), ({"lag": 5.0}, "sink_lag"), ({"errors": 1}, "no_5xx"),
    ({"late_p99": 20.0 * 1.2 + 5.0 + 0.1}, "stability")])
def test_each_criterion_fails_alone(kwargs: dict, failed: str) -> None:
    v = stats.verdicts(_report(**kwargs), 60)
    assert not v["pass"] and not v[failed]["pass"]
    assert all(v[k]["pass"] for k in ("client_p99", "sink_lag", "no_5xx", "stability")
               if k != failed)


def test_within_twenty_percent_plus_the_noise_floor_passes() -> None:
    assert stats.verdicts(_report(late_p99=20.0 * 1.2 + 5.0), 60)["stability"]["pass"]
    assert stats.verdicts(_report(late_p99=2.0), 60)["stability"]["pass"]  # faster is fine


def test_short_runs_compare_quarters() -> None:
    assert stats.windows(8) == (2, "first and last quarter of the run (shorter than 60 "
                                   "minutes)")
    assert stats.windows(3)[0] == 1
    v = stats.verdicts(_report(minutes=8, late_p99=60.0), 8)
    assert not v["stability"]["pass"]


def test_process_groups() -> None:
    assert probe.group_of(["/x/.venv/bin/txn", "worker", "-l", "info"]) == "worker"
    assert probe.group_of(["java", "-cp", "x", "kafka.Kafka", "s.properties"]) == "kafka"
    assert probe.group_of(["python", "-m", "uvicorn", "views.api:app"]) == "api"
    assert probe.group_of(["bash", "-c", "sleep 1"]) is None


def test_seed_enrichment_is_the_workers_rule() -> None:
    """For a sample of the history, the seed's enriched values equal the contract's rule
    recomputed from each user's earlier amounts (in the reporting currency)."""
    history = seed_history.History(3000, days=1, end_ms=1_790_000_000_000, users=50)
    enricher = seed_history.Enricher(settings.topic_partitions)
    amounts: dict[str, list[float]] = {}
    day_spend: dict[tuple[str, int], int] = {}
    anomalies = 0
    for msg in history.factory().messages(0, 3000):
        partition, raw, anomaly = enricher.one(msg.value, msg.key, msg.timestamp_ms)
        txn, value = orjson.loads(msg.value), orjson.loads(raw)
        converted = reporting_cents(cents(txn["amount"]), txn["currency"]) / 100
        earlier = amounts.setdefault(txn["user_id"], [])
        z = z_score(from_values(earlier), converted, settings.anomaly_min_history)
        earlier.append(converted)
        day = (txn["user_id"], msg.timestamp_ms // 86_400_000)
        day_spend[day] = day_spend.get(day, 0) + round(converted * 100)
        assert value["amount_reporting"] == converted
        assert value["user_txn_count"] == len(earlier)
        assert (value["z_score"] is None) == (z is None)
        if z is not None:
            assert math.isclose(value["z_score"], z, rel_tol=1e-9)
        assert value["is_anomaly"] == is_anomaly(z, settings.anomaly_z_threshold)
        assert (anomaly is not None) == value["is_anomaly"]
        assert value["user_daily_spend"] == day_spend[day] / 100
        assert 0 <= partition < settings.topic_partitions
        anomalies += anomaly is not None
    assert anomalies > 0
