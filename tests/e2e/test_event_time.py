"""End to end on the real broker: events a day ahead, dated 9999 and 40 days late are dead
letters with their reason and change nothing else; a worker rebuilt from the changelogs (an
empty data directory) judges lateness by the same stream time, so expiry survives a restart.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaProducer

from app.contract import DLQ, DLQ_REASON, ENRICHED, TRANSACTIONS
from app.producer import ensure_topic
from app.settings import settings
from tests.browser.seed import message
from tests.e2e.test_processing import (
    PARTITIONS,
    committed_everything,
    get_json,
    read_topic,
    wait_ready,
)
from tests.procs import TXN, Proc, free_port, pipeline_env, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

USER = "late-and-early"
HISTORY = 12


def send(topic: str, txns: list[dict[str, Any]]) -> None:
    """Each with its event time as Kafka timestamp, as the contract asks."""
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all")
    for txn in txns:
        when = datetime.fromisoformat(txn["timestamp"]).timestamp()
        producer.send(topic, key=txn["user_id"].encode(), value=orjson.dumps(txn),
                      timestamp_ms=round(when * 1000))
    producer.flush()
    producer.close()


def reasons(prefix: str) -> list[str]:
    return [dict(r.headers)[DLQ_REASON].decode() for r in read_topic(f"{prefix}-{DLQ}")]


def test_late_and_future_events_survive_a_restart(tmp_path: Path, unique: str) -> None:
    prefix = f"evtime-{unique}"
    topic = f"{prefix}-{TRANSACTIONS}"
    group = f"{prefix}-txn-analytics"
    ensure_topic(settings.kafka_bootstrap_servers, topic, PARTITIONS)
    now = datetime.now(UTC).replace(microsecond=0)
    history = [message(USER, 20.0 + i, now - timedelta(hours=HISTORY - i), "m-1", "grocery")
               for i in range(HISTORY)]
    odd = [message(USER, 30.0, now + timedelta(days=1), "m-1", "grocery"),
           message(USER, 31.0, datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC), "m-1", "grocery"),
           message(USER, 32.0, now - timedelta(days=40), "m-1", "grocery")]

    def worker(name: str) -> tuple[Proc, int]:
        port = free_port()
        env = pipeline_env(prefix, TOPIC_PARTITIONS=PARTITIONS, WEB_PORT=port,
                           WEB_HOST="localhost", DATA_DIR=tmp_path / f"data-{name}")
        return Proc(name, [TXN, "worker", "-l", "info"], env, tmp_path), port

    first, port = worker("first")
    with first:
        wait_ready(first, port, PARTITIONS)
        send(topic, history + odd)
        wait_for(lambda: committed_everything(group, topic), timeout=120, interval=1,
                 message="the worker to commit every message")
        stats = get_json(f"http://localhost:{port}/users/{USER}/stats")
    assert [r.split(":")[0] for r in reasons(prefix)] == ["future event", "future event",
                                                           "late event"]
    enriched = [orjson.loads(r.value) for r in read_topic(f"{prefix}-{ENRICHED}")]
    assert [e["txn_id"] for e in enriched] == [t["txn_id"] for t in history]
    assert stats["count"] == HISTORY and stats["currency"] == settings.reporting_currency
    assert stats["mean"] == pytest.approx(sum(e["amount_reporting"] for e in enriched) / HISTORY)

    # A worker with an empty data directory recovers the stream time from the changelog: an
    # event older than the grace is still late, one inside it is folded.
    grace = settings.late_event_grace_days
    rebuilt, port = worker("rebuilt")
    with rebuilt:
        wait_ready(rebuilt, port, PARTITIONS)
        late = message(USER, 40.0, now - timedelta(days=grace, hours=2), "m-1", "grocery")
        inside = message(USER, 41.0, now - timedelta(days=grace - 1), "m-1", "grocery")
        send(topic, [late, inside])
        wait_for(lambda: committed_everything(group, topic), timeout=120, interval=1,
                 message="the rebuilt worker to commit every message")
        stats = get_json(f"http://localhost:{port}/users/{USER}/stats")
    assert [r.split(":")[0] for r in reasons(prefix)][3:] == ["late event"]
    assert stats["count"] == HISTORY + 1
    enriched = [orjson.loads(r.value) for r in read_topic(f"{prefix}-{ENRICHED}")]
    assert enriched[-1]["txn_id"] == inside["txn_id"]
    assert enriched[-1]["user_daily_spend"] == enriched[-1]["amount_reporting"]
