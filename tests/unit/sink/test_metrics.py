"""``agents.sink.metrics``: what the sink counts, and its small HTTP server (``/metrics`` in
Prometheus text, ``/health`` and ``/ready`` for the Kubernetes probes)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from http.server import ThreadingHTTPServer

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agents.sink import metrics
from agents.sink.mongo import InsertResult
from tests.procs import free_port


@pytest.fixture
def server() -> Iterator[str]:
    port = free_port()
    srv: ThreadingHTTPServer = metrics.serve("127.0.0.1", port)
    yield f"http://127.0.0.1:{port}"
    srv.shutdown()
    srv.server_close()


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(metrics.REGISTRY).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_a_batch_counts_documents_dead_letters_and_its_duration() -> None:
    before = samples()
    result = InsertResult(inserted=7, duplicates=2,
                          dead_letters=Counter({"conversion": 1, "rejected": 2}))
    metrics.batch_written("transactions", result, 0.03)
    metrics.rollup_written({"merchant_minute": 4, "volume_minute": 1}, 0.2)
    after = samples()

    def grew(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after[key] - before.get(key, 0.0)

    assert grew("sink_documents_written_total", collection="transactions") == 7
    assert grew("sink_documents_written_total", collection="merchant_minute") == 4
    assert grew("sink_duplicates_total", collection="transactions") == 2
    assert grew("sink_dead_letters_total", reason="conversion") == 1
    assert grew("sink_dead_letters_total", reason="rejected") == 2
    assert grew("sink_dead_letters_total", reason="encoding") == 0  # exported, 0
    assert grew("sink_batches_total", collection="transactions") == 1
    assert grew("sink_batch_write_seconds_count", collection="transactions") == 1
    assert grew("sink_batch_write_seconds_bucket", collection="transactions", le="0.05") == 1
    assert grew("sink_rollup_write_seconds_count") == 1
    metrics.set_lag({"p-transactions_enriched": 12})
    assert samples()[("sink_consumer_lag", (("topic", "p-transactions_enriched"),))] == 12
    reasons = {labels for name, labels in after if name == "sink_dead_letters_total"}
    assert {dict(r)["reason"] for r in reasons} == set(metrics.DEAD_LETTER_KINDS)


def test_the_server_answers_metrics_health_and_ready(server: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics._State, "ready", False)
    metrics.beat()
    status, body = get(f"{server}/metrics")
    assert status == 200 and b"# TYPE sink_documents_written_total counter" in body
    assert get(f"{server}/health")[0] == 200
    status, body = get(f"{server}/ready")
    assert status == 503 and json.loads(body) == {"status": "unavailable", "alive": True,
                                                  "ready": False}
    metrics.ready()
    assert get(f"{server}/ready")[0] == 200
    assert get(f"{server}/nothing")[0] == 404
    # the event loop stopped running (no beat): not alive, not ready
    monkeypatch.setattr(metrics._State, "beat", metrics._State.beat - metrics.LIVE_SECONDS - 1)
    assert get(f"{server}/health")[0] == 503 and get(f"{server}/ready")[0] == 503


def test_event_lag_is_the_worst_batch_of_the_window(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """``sink_event_lag_seconds``: the worst lag of the last EVENT_LAG_WINDOW seconds, so a
    scrape every few seconds sees every batch's; 0 once they are all older."""
    now = [1000.0]
    monkeypatch.setattr(metrics.time, "monotonic", lambda: now[0])
    key = ("sink_event_lag_seconds", (("collection", "lagtest"),))
    metrics.event_lag("lagtest", 0.8)
    now[0] += 1
    metrics.event_lag("lagtest", 3.5)
    now[0] += 1
    metrics.event_lag("lagtest", 1.2)
    assert samples()[key] == 3.5
    now[0] += metrics.EVENT_LAG_WINDOW - 1.5  # the 3.5 s batch is 14.5 s old: still in
    assert samples()[key] == 3.5
    now[0] += 1
    assert samples()[key] == 1.2
    now[0] += metrics.EVENT_LAG_WINDOW
    assert samples()[key] == 0.0
