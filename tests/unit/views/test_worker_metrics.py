"""The worker's ``GET /metrics`` body (views/worker.py): prometheus_client's text from a registry
of the worker's own, built here from given counters and lag. Every metric name of before is
kept, with its unlabelled ``name value`` line (the e2e tests, bench/processing.py and
scripts/demo.py parse those)."""

from __future__ import annotations

from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agents.counters import DLQ_KINDS, Counters
from views import worker

NAMES = ("txn_processed_total", "txn_replayed_total", "txn_duplicates_total",
         "txn_enriched_total", "txn_anomalies_total", "txn_dlq_total", "txn_errors_total",
         "txn_batches_total", "txn_consumer_lag_total")


def render(counters: Counters, lag: dict[int, int]) -> str:
    return generate_latest(worker.build_registry(lambda: counters, lambda: lag)).decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_every_metric_of_before_with_its_value() -> None:
    c = Counters(processed=20_196, replayed=3, duplicates=4, enriched=20_190, anomalies=41,
                 dlq=7, batches=12, dlq_kinds={"not_json": 5, "bad_amount": 2})
    text = render(c, {0: 5, 3: 0, 1: 2})
    got = samples(text)
    for name, value in [("txn_processed_total", 20_196), ("txn_replayed_total", 3),
                        ("txn_duplicates_total", 4), ("txn_enriched_total", 20_190),
                        ("txn_anomalies_total", 41), ("txn_dlq_total", 7),
                        ("txn_errors_total", 0), ("txn_batches_total", 12),
                        ("txn_consumer_lag_total", 7)]:
        assert got[name, ()] == value, name
    lines = dict(line.split() for line in text.splitlines()
                 if line and not line.startswith("#") and "{" not in line)
    assert set(NAMES) <= set(lines)
    assert int(float(lines["txn_processed_total"])) == 20_196
    assert {p: got["txn_consumer_lag", (("partition", p),)] for p in "013"} == {
        "0": 5, "1": 2, "3": 0}


def test_dead_letters_by_kind_of_reason() -> None:
    got = samples(render(Counters(dlq=7, dlq_kinds={"not_json": 5, "bad_amount": 2}), {}))
    by_kind = {dict(labels)["reason"]: v for (name, labels), v in got.items()
               if name == "txn_dlq_by_reason_total"}
    assert set(by_kind) == set(DLQ_KINDS)  # a fixed set of label values
    assert by_kind["not_json"] == 5 and by_kind["bad_amount"] == 2
    assert sum(by_kind.values()) == 7


def test_batch_durations_are_a_histogram() -> None:
    c = Counters()
    for seconds in (0.002, 0.004, 0.3):
        c.batch_seconds.observe(seconds)
    got = samples(render(c, {}))
    assert got["txn_batch_duration_seconds_count", ()] == 3
    assert got["txn_batch_duration_seconds_bucket", (("le", "0.005"),)] == 2
    assert abs(got["txn_batch_duration_seconds_sum", ()] - 0.306) < 1e-9


def test_the_registry_is_the_workers_own() -> None:
    """Building it again (as every test here does) registers nothing globally."""
    assert worker.registry is not REGISTRY
    assert "txn_processed_total" not in generate_latest(REGISTRY).decode()
    assert worker.build_registry() is not worker.build_registry()
