"""The producer against the real local Kafka broker: what `txn produce` sends is what the
factory says (count, keys, partitions, timestamps, ids), the truth file lists exactly the injected
anomalies, Ctrl-C flushes, bad messages arrive as sent and delivery failures are counted."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import orjson
import pytest
from kafka import KafkaConsumer
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.partitioner.default import murmur2

from app import contract
from app.producer import ALL_KINDS, TIME_KINDS, TransactionFactory, send, step_us_for
from app.settings import settings
from tests.procs import ROOT, TXN, pipeline_env

pytestmark = pytest.mark.integration

START = "2026-11-20T23:59:30+00:00"  # 20k at 3 ms event steps: crosses a UTC midnight
START_MS = int(datetime.fromisoformat(START).timestamp() * 1000)


@pytest.fixture
def topics(bootstrap: str) -> Iterator[list[str]]:
    """Topic names the test creates; deleted afterwards."""
    created: list[str] = []
    yield created
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        existing = set(admin.list_topics())
        gone = [t for t in created if t in existing]
        if gone:
            admin.delete_topics(gone)
    finally:
        admin.close()


def consume(bootstrap: str, topic: str, expected: int, timeout: float = 60) -> list:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             consumer_timeout_ms=3000)
    records: list = []
    deadline = time.monotonic() + timeout
    try:
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=1000, max_records=50_000).values():
                records.extend(batch)
        # Nothing more than expected arrives either.
        for batch in consumer.poll(timeout_ms=1500).values():
            records.extend(batch)
    finally:
        consumer.close()
    return records


def test_txn_produce_20k_round_trip(tmp_path: Path, unique: str, bootstrap: str,
                                    topics: list[str]) -> None:
    prefix = f"prod-{unique}"
    topic = f"{prefix}-{contract.TRANSACTIONS}"
    topics.append(topic)
    truth = tmp_path / "truth.jsonl"
    cmd = [TXN, "produce", "--count", "20000", "--rate", "0", "--seed", "7", "--users", "2000",
           "--merchants", "300", "--anomaly-rate", "0.005", "--start", START,
           "--time-scale", "3", "--truth", str(truth), "--quiet"]
    done = subprocess.run(cmd, cwd=ROOT, env=pipeline_env(prefix, TARGET_TPS=1000),
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"^sent=20000 rate=[\d.]+ errors=0 ", done.stdout, re.M), done.stdout
    assert "[produce] sent=" not in done.stderr  # --quiet: no progress lines

    factory = TransactionFactory(seed=7, users=2000, merchants=300, anomaly_rate=0.005,
                                 start_ms=START_MS, step_us=step_us_for(1000, 3))
    expected = {m.txn_id: m for m in factory.messages(0, 20_000)}
    records = consume(bootstrap, topic, 20_000)
    assert len(records) == 20_000
    partitions = len({r.partition for r in records})
    assert partitions == settings.topic_partitions  # the producer created the topic
    seen_days: set[str] = set()
    last_seq: dict[int, int] = {}
    for record in records:
        txn = contract.validate(record.value)
        msg = expected[txn["txn_id"]]
        assert record.value == msg.value
        assert record.key == msg.key == txn["user_id"].encode()
        assert record.timestamp == msg.timestamp_ms
        assert record.timestamp == contract.parse_timestamp(txn["timestamp"]).timestamp() * 1000
        assert record.partition == (murmur2(record.key) & 0x7FFFFFFF) % partitions
        assert msg.seq > last_seq.get(record.partition, -1)  # in order within a partition
        last_seq[record.partition] = msg.seq
        seen_days.add(txn["timestamp"][:10])
    assert {r.value for r in records} == {m.value for m in expected.values()}
    assert seen_days == {"2026-11-20", "2026-11-21"}

    lines = [orjson.loads(line) for line in truth.read_bytes().splitlines()]
    injected = sorted(m.seq for m in expected.values() if m.anomaly)
    assert sorted(line["seq"] for line in lines) == injected and len(injected) > 50
    for line in lines:
        assert expected[line["txn_id"]].anomaly == line
        assert orjson.loads(expected[line["txn_id"]].value)["amount"] == line["amount"]


def test_bad_messages_arrive_as_sent(unique: str, bootstrap: str, topics: list[str]) -> None:
    topic = f"prod-{unique}-bad"
    topics.append(topic)
    factory = TransactionFactory(seed=3, users=300, merchants=50, bad_rate=0.1,
                                 start_ms=START_MS, bad_kinds=ALL_KINDS)
    summary = send(factory, topic, bootstrap=bootstrap, rate=0, count=3000, partitions=4)
    assert summary.sent == 3000 and summary.errors == 0 and 200 < summary.bad < 400
    by_value = {m.value: m for m in factory.messages(0, 3000)}
    records = consume(bootstrap, topic, 3000)
    assert len(records) == 3000
    bad: set[str] = set()
    for record in records:
        msg = by_value[record.value]
        assert record.timestamp == msg.timestamp_ms
        if msg.bad in TIME_KINDS:  # valid, at a time the worker refuses (a day ahead: kept)
            txn = contract.validate(record.value)
            assert record.timestamp == contract.parse_timestamp(
                txn["timestamp"]).timestamp() * 1000
        elif msg.bad:
            with pytest.raises(contract.InvalidTransaction):
                contract.validate(record.value)
        else:
            contract.validate(record.value)
        bad.add(msg.bad or "")
    assert bad == {"", *ALL_KINDS}
    assert sum(1 for m in by_value.values() if m.bad) == summary.bad


def test_ctrl_c_flushes_and_summarises(tmp_path: Path, unique: str, bootstrap: str,
                                       topics: list[str]) -> None:
    prefix = f"prodint-{unique}"
    topics.append(f"{prefix}-{contract.TRANSACTIONS}")
    err = tmp_path / "stderr.txt"
    with open(err, "w") as stderr:
        proc = subprocess.Popen([TXN, "produce", "--rate", "500", "--seed", "5"], cwd=ROOT,
                                env=pipeline_env(prefix), stdout=subprocess.PIPE,
                                stderr=stderr, text=True)
        try:
            deadline = time.monotonic() + 90
            while "[produce] sent=" not in err.read_text() and time.monotonic() < deadline:
                assert proc.poll() is None, err.read_text()
                time.sleep(0.2)
            time.sleep(1.5)
            proc.send_signal(signal.SIGINT)
            out, _ = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, err.read_text()[-3000:]
    progress = re.findall(r"\[produce\] sent=(\d+) rate=(\d+)/s errors=0 queue=(\d+)",
                          err.read_text())
    assert progress, err.read_text()
    found = re.search(r"^sent=(\d+) rate=([\d.]+) errors=0 ", out, re.M)
    assert found, out
    sent = int(found.group(1))
    assert sent >= 500
    records = consume(bootstrap, f"{prefix}-{contract.TRANSACTIONS}", sent)
    assert len(records) == sent
    assert len({r.value for r in records}) == sent


def test_delivery_failures_are_counted(unique: str, bootstrap: str, topics: list[str]) -> None:
    topic = f"prod-{unique}-tiny"
    topics.append(topic)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topic, 1, 1, topic_configs={"max.message.bytes": "120"})])
    finally:
        admin.close()
    factory = TransactionFactory(seed=1, users=20, merchants=5, start_ms=START_MS)
    summary = send(factory, topic, bootstrap=bootstrap, rate=0, count=40)
    assert summary.sent == 0 and summary.errors == 40
    assert "Error" in summary.last_error
    assert "errors=40" in str(summary)


def test_parallel_processes_send_each_message_once_in_order(unique: str, bootstrap: str,
                                                            topics: list[str]) -> None:
    topic = f"prod-{unique}-par"
    topics.append(topic)
    factory = TransactionFactory(seed=4, users=500, merchants=50, start_ms=START_MS)
    summary = send(factory, topic, bootstrap=bootstrap, rate=0, count=6000, processes=2)
    assert summary.sent == 6000 and summary.errors == 0 and summary.next_seq == 6000
    expected = {m.value: m.seq for m in factory.messages(0, 6000)}
    assert summary.anomalies == sum(1 for m in factory.messages(0, 6000) if m.anomaly)
    records = consume(bootstrap, topic, 6000)
    assert sorted(expected[r.value] for r in records) == list(range(6000))
    last: dict[int, int] = {}
    for record in records:
        assert expected[record.value] > last.get(record.partition, -1)
        last[record.partition] = expected[record.value]
